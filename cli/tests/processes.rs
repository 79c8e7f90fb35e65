//! `subnet localnet --processes`: the real `validator` and `miner` programs, and adversaries through
//! the hidden `subnet adversary` command, each its own process on one chain file, reach the same
//! outcome as the same subnet run in one process: the same verdict for every miner in every window
//! and the same held-out loss.

use miner::adversary::Adversary;
use std::path::PathBuf;
use subnet_cli::localnet::{self, LocalnetConfig, LocalnetReport};
use subnet_cli::processes::{self, Binaries};
use task::TaskSpec;

/// The three programs of this build: `subnet` from Cargo, `miner` and `validator` built beside it.
fn binaries() -> Binaries {
    let subnet = PathBuf::from(env!("CARGO_BIN_EXE_subnet"));
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--bin", "miner", "--bin", "validator"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "cargo build of miner and validator failed"
    );
    let dir = subnet.parent().unwrap().to_path_buf();
    Binaries {
        miner: dir.join(format!("miner{}", std::env::consts::EXE_SUFFIX)),
        validator: dir.join(format!("validator{}", std::env::consts::EXE_SUFFIX)),
        subnet,
    }
}

fn config(dir: &std::path::Path) -> LocalnetConfig {
    LocalnetConfig {
        dir: Some(dir.to_path_buf()),
        adversaries: vec![Adversary::Lazy, Adversary::Random, Adversary::Silent],
        ..LocalnetConfig::honest(
            TaskSpec::from_toml_str(subnet_cli::LOCALNET_TASK).unwrap(),
            3,
            2,
            2,
        )
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Every validator's verdict kind for every miner, window by window.
fn verdicts(report: &LocalnetReport) -> Vec<Vec<(u16, &'static str)>> {
    report
        .outcomes
        .iter()
        .flatten()
        .map(|o| {
            o.results
                .iter()
                .map(|r| (r.uid, r.verdict.kind()))
                .collect()
        })
        .collect()
}

#[test]
fn separate_processes_reach_the_same_outcome_as_one() {
    let bins = binaries();
    let (apart, together) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let separate = runtime()
        .block_on(processes::run(config(apart.path()), &bins, |line| {
            println!("{}", localnet::format_line(line))
        }))
        .unwrap();
    let one = runtime()
        .block_on(localnet::run(config(together.path()), |_| {}))
        .unwrap();

    assert_eq!(verdicts(&separate), verdicts(&one));
    // The same miners are aggregated; the clip norm is floored at each validator's own reference
    // training, whose pages its key draws (the keys differ between the runs), so the models agree
    // closely, not bit for bit (measured: 0.02% and 0.1% apart).
    for (a, b) in separate.windows.iter().zip(&one.windows) {
        let gap = (a.heldout_loss - b.heldout_loss).abs() / b.heldout_loss;
        assert!(gap < 1e-2, "window {}: {a:?} against {b:?}", a.window);
    }
    assert!(separate.windows[1].heldout_loss < separate.windows[0].heldout_loss);

    // Honest miners are paid, the adversaries are caught in their first window and slashed.
    let report = subnet_cli::report::build("localnet-lm", &separate).unwrap();
    for m in &report.miners {
        if m.kind == "honest" {
            assert!(m.emission > 0 && !m.slashed, "{m:?}");
        } else {
            assert!(m.emission == 0 && m.caught.is_some(), "{m:?}");
        }
    }
    for kind in ["lazy", "random"] {
        let m = report.miners.iter().find(|m| m.kind == kind).unwrap();
        assert!(m.slashed, "{m:?}");
    }
    // Wallets and logs are in the run directory; each validator's records replay.
    assert!(
        apart
            .path()
            .join("wallets/miner-0/hotkeys/default")
            .is_file()
    );
    assert!(apart.path().join("logs/validator-0.log").is_file());
    let replay =
        validator::replay::replay(&localnet::validator_dir(apart.path(), 1), None, |_| {}).unwrap();
    assert_eq!(replay.windows.len(), 2);
}

#[test]
fn modes_that_read_other_miners_work_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let bins = Binaries {
        miner: PathBuf::from(env!("CARGO_BIN_EXE_subnet")),
        validator: PathBuf::from(env!("CARGO_BIN_EXE_subnet")),
        subnet: PathBuf::from(env!("CARGO_BIN_EXE_subnet")),
    };
    let config = LocalnetConfig {
        adversaries: vec![Adversary::Copier],
        ..config(dir.path())
    };
    let err = runtime()
        .block_on(processes::run(config, &bins, |_| {}))
        .unwrap_err();
    assert!(err.to_string().contains("copier"), "{err}");
    assert!(!dir.path().join("chain.sqlite").exists());
}
