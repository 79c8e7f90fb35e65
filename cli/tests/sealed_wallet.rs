//! A wallet that bittensor-wallet 4.1.1 encrypted (coldkey and hotkey, committed as test data in
//! `chain-client/tests/data/wallets`) funds, registers and stakes on a local chain and runs a
//! miner, with the password from `SUBNET_WALLET_PASSWORD`; a wrong password is a one-line error.
//! Also the owner's schedule commands on the same kind of chain (`set-tempo`, `trigger-epoch`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wallets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../chain-client/tests/data/wallets")
}

fn password() -> String {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(wallets().join("expected.json")).unwrap())
            .unwrap();
    expected["password"].as_str().unwrap().to_string()
}

fn subnet(dir: &Path, password: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_subnet"))
        .args(["chain", "--dir"])
        .arg(dir)
        .args(args)
        .env("BT_WALLET_PATH", wallets())
        .env("SUBNET_WALLET_PASSWORD", password)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("subnet runs")
}

#[test]
fn an_encrypted_bittensor_wallet_registers_stakes_and_mines() {
    let dir = tempfile::tempdir().unwrap();
    let chain = dir.path();
    let task = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tasks/localnet-lm.toml");
    let password = password();
    let ok = |args: &[&str]| {
        let out = subnet(chain, &password, args);
        assert!(
            out.status.success(),
            "subnet chain {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(&["init", "--block-time-ms", "0"]);
    ok(&["create-subnet", "--task", task.to_str().unwrap()]);
    ok(&["fund", "--wallet", "sealed", "--tokens", "100"]);

    let wrong = subnet(
        chain,
        "not it",
        &["register", "--netuid", "1", "--wallet", "sealed"],
    );
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("wrong password") && stderr.contains("coldkey"),
        "{stderr}"
    );

    ok(&["register", "--netuid", "1", "--wallet", "sealed"]);
    ok(&[
        "stake", "--netuid", "1", "--wallet", "sealed", "--tokens", "10",
    ]);

    // The miner opens its encrypted hotkey and serves.
    let miner = PathBuf::from(env!("CARGO_BIN_EXE_subnet"))
        .with_file_name(format!("miner{}", std::env::consts::EXE_SUFFIX));
    let status = Command::new(env!("CARGO"))
        .args(["build", "--bin", "miner"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = Command::new(miner)
        .args(["run", "--task", task.to_str().unwrap(), "--netuid", "1"])
        .args(["--wallet", "sealed", "--progress", "plain"])
        .arg("--chain")
        .arg(format!("local:{}", chain.join("chain.sqlite").display()))
        .env("BT_WALLET_PATH", wallets())
        .env("SUBNET_WALLET_PASSWORD", &password)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut serving = false;
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        serving |= line.contains("serving");
        seen.push(line);
        if serving {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(serving, "the miner did not serve:\n{}", seen.join("\n"));
}

#[test]
fn the_owner_sets_the_tempo_and_triggers_an_epoch_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let chain = dir.path();
    let task = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tasks/localnet-lm.toml");
    let run = |args: &[&str]| {
        let out = subnet(chain, "", args);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (
            out.status.success(),
            text,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let ok = |args: &[&str]| {
        let (success, stdout, stderr) = run(args);
        assert!(success, "subnet chain {args:?}: {stderr}");
        stdout
    };
    ok(&["init", "--block-time-ms", "0"]);
    ok(&["create-subnet", "--task", task.to_str().unwrap()]);
    ok(&["advance", "--blocks", "25"]);
    let (success, _, stderr) = run(&[
        "set-tempo",
        "--netuid",
        "1",
        "--tempo",
        "400",
        "--owner-uri",
        "//miner-1",
    ]);
    assert!(!success && stderr.contains("NotSubnetOwner"), "{stderr}");
    let (success, _, stderr) = run(&["set-tempo", "--netuid", "1", "--tempo", "100"]);
    assert!(!success && stderr.contains("TempoOutOfRange"), "{stderr}");
    let out = ok(&["set-tempo", "--netuid", "1", "--tempo", "400"]);
    assert!(out.contains("the next begins at block 420"), "{out}");
    let out = ok(&["trigger-epoch", "--netuid", "1"]);
    assert!(out.contains("the next begins at block 26"), "{out}");
    ok(&["advance", "--blocks", "1"]);
    let out = ok(&["metagraph", "--netuid", "1"]);
    assert!(
        out.contains("began at block 26, the next begins at block 426"),
        "{out}"
    );
}
