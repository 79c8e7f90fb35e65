//! The `miner` program killed with SIGKILL in the middle of a window and started again: it resumes at
//! the current window, and the validator accepts the gradients it serves for that window and the
//! next. Killed again between windows, it carries its compression residual over the restart. Real
//! processes, a real local chain file shared between them, real gRPC.

use chain_client::{AccountId, BlockClock, Chain, LocalChain, SubnetParams, window_seed};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};
use subxt_signer::sr25519::dev;
use task::{TaskEngine, TaskSpec};
use tokio::net::TcpListener;
use validator::{Validator, ValidatorService};

const TOKEN: u64 = 1_000_000_000;
const MINER_URI: &str = "//restart-miner";

/// The miner program with its log lines (ANSI colours stripped) arriving on a channel.
struct MinerProcess {
    child: Child,
    lines: Receiver<String>,
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn start_miner(
    task: &std::path::Path,
    chain: &std::path::Path,
    data: &std::path::Path,
) -> MinerProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_miner"))
        .args(["run", "--task"])
        .arg(task)
        .arg("--data")
        .arg(data)
        .arg("--chain")
        .arg(format!("local:{}", chain.display()))
        .args([
            "--netuid",
            "1",
            "--hotkey-uri",
            MINER_URI,
            "--listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the miner binary starts");
    let (tx, lines) = channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(strip_ansi(&line));
            }
        });
    }
    MinerProcess { child, lines }
}

impl MinerProcess {
    /// Waits for a log line containing every one of `parts`.
    fn wait_for(&self, parts: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if parts.iter().all(|p| line.contains(p)) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!(
            "no log line with {parts:?}; the miner said:\n{}",
            seen.join("\n")
        );
    }
}

impl Drop for MinerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_killed_mid_window_serves_the_next_window_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = TaskSpec::from_toml_str(include_str!("../../tasks/localnet-lm.toml")).unwrap();
    spec.scoring.audit_period = 1;
    let task_path = dir.path().join("task.toml");
    std::fs::write(&task_path, spec.canonical_toml()).unwrap();
    let engine = Arc::new(TaskEngine::new(spec));
    let blocks = engine.spec().window.blocks;

    let chain_path = dir.path().join("chain.sqlite");
    let chain = LocalChain::open_or_create(&chain_path, BlockClock::Manual, 3).unwrap();
    let params = SubnetParams {
        tempo: blocks,
        weights_rate_limit: 1,
        min_allowed_weights: 1,
        commit_reveal_weights_enabled: false,
        ..SubnetParams::default()
    };
    let netuid = chain
        .create_subnet(AccountId::from(&dev::ferdie()), params)
        .unwrap();
    let miner_key = chain_client::keypair_from_uri(MINER_URI).unwrap();
    for (key, stake) in [(dev::alice(), 200 * TOKEN), (miner_key.clone(), 0)] {
        let id = AccountId::from(&key);
        chain.fund(id, 1000 * TOKEN).unwrap();
        chain.burned_register(id, netuid, id).unwrap();
        if stake > 0 {
            chain.add_stake(id, id, netuid, stake).unwrap();
        }
    }
    chain.advance_blocks(blocks).unwrap(); // window 1; the epoch grants Alice her permit

    let validator = Validator::new(
        chain.clone(),
        netuid,
        dev::alice(),
        engine.clone(),
        engine.genesis(),
        1,
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    chain
        .serve_axon(&dev::alice(), netuid, listener.local_addr().unwrap())
        .await
        .unwrap();
    let (stop, _) = tokio::sync::watch::channel(false);
    let mut rx = stop.subscribe();
    tokio::spawn(
        ValidatorService::new(validator.clone()).serve(listener, async move {
            let _ = rx.wait_for(|s| *s).await;
        }),
    );

    // Killed while window 1 is open, once it reports its first quarter of training.
    let data = dir.path().join("miner");
    let residual_file = data.join("residual.bin");
    let read_residual = || {
        miner::residual::load(&residual_file, &engine.digest(), engine.num_params())
            .unwrap()
            .unwrap()
    };
    let first = start_miner(&task_path, &chain_path, &data);
    first.wait_for(&["serving"], Duration::from_secs(60));
    first.wait_for(&["training", "window=1"], Duration::from_secs(60));
    drop(first);

    // Restarted in the same window: it trains window 1 again and serves it.
    let second = start_miner(&task_path, &chain_path, &data);
    second.wait_for(&["window served", "window=1"], Duration::from_secs(120));
    assert_eq!(validator.collect_commitments(1).await.unwrap(), 1);
    chain.advance_blocks(blocks).unwrap();
    let seed = window_seed(&chain.block_hash(blocks).await.unwrap());
    let w1 = validator.run_window(1, seed).await.unwrap();
    let uid = w1.results[0].uid;
    let r = w1.result(uid).unwrap();
    assert!(r.rejection.is_none(), "{r:?}");
    assert!(
        r.usefulness.as_ref().unwrap().mean_relative_drop > 0.0,
        "{r:?}"
    );
    assert!(r.audited, "{r:?}");
    assert!(
        w1.fraud_reports.is_empty(),
        "the audit reproduces its training and its payload"
    );

    // The next window, from the checkpoint the validator just aggregated.
    second.wait_for(&["window served", "window=2"], Duration::from_secs(120));
    assert_eq!(validator.collect_commitments(2).await.unwrap(), 1);
    chain.advance_blocks(blocks).unwrap();
    let seed = window_seed(&chain.block_hash(2 * blocks).await.unwrap());
    let w2 = validator.run_window(2, seed).await.unwrap();
    let r = w2.result(uid).unwrap();
    assert!(r.rejection.is_none(), "{r:?}");
    assert!(r.audited && w2.fraud_reports.is_empty(), "{r:?}");

    // Killed between windows and started again: window 3 starts from the residual window 2 left.
    let after_window_2 = read_residual();
    assert_eq!(after_window_2.window, 2);
    assert!(after_window_2.after.iter().any(|&x| x != 0.0));
    drop(second);
    let third = start_miner(&task_path, &chain_path, &data);
    third.wait_for(
        &["resuming the compression residual", "window=2"],
        Duration::from_secs(60),
    );
    third.wait_for(&["window served", "window=3"], Duration::from_secs(120));
    let after_window_3 = read_residual();
    assert_eq!(after_window_3.window, 3);
    assert!(
        after_window_3.before == after_window_2.after && after_window_3.source_window == 2,
        "window 3 did not start from window 2's residual"
    );
    // Its window 3 commitment continues the residual chain the validator saw.
    assert_eq!(validator.collect_commitments(3).await.unwrap(), 1);
    chain.advance_blocks(blocks).unwrap();
    let seed = window_seed(&chain.block_hash(3 * blocks).await.unwrap());
    let w3 = validator.run_window(3, seed).await.unwrap();
    let r = w3.result(uid).unwrap();
    assert!(
        r.rejection.is_none() && r.audited && w3.fraud_reports.is_empty(),
        "{r:?}"
    );
    let _ = stop.send(true);
}
