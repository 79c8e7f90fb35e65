//! The `validator` program killed with SIGKILL at points a seeded generator picks while it scores a
//! window, and started again on the same data directory: every record it had written is still there
//! byte for byte (at most a torn tail is cut), it resumes from the state it had saved (the same
//! window and the same miners' moving averages), scores the window it was killed in from the
//! commitments its directory kept, and goes on with the next. Real processes, a
//! real local chain file, real gRPC.

use chain_client::{AccountId, BlockClock, Chain, LocalChain, SubnetParams, keypair_from_uri};
use miner::{Miner, MinerService};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};
use subxt_signer::sr25519::Keypair;
use task::{TaskEngine, TaskSpec};
use tokio::net::TcpListener;
use validator::DataDir;

const TOKEN: u64 = 1_000_000_000;
const VALIDATOR_URI: &str = "//CrashValidator";

struct ValidatorProcess {
    child: Child,
    lines: Receiver<String>,
}

fn start_validator(task: &Path, chain: &Path, data: &Path) -> ValidatorProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_validator"))
        .args(["run", "--task"])
        .arg(task)
        .arg("--data")
        .arg(data)
        .arg("--chain")
        .arg(format!("local:{}", chain.display()))
        .args(["--netuid", "1", "--hotkey-uri", VALIDATOR_URI])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the validator binary starts");
    let (tx, lines) = channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    ValidatorProcess { child, lines }
}

impl ValidatorProcess {
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
            "no log line with {parts:?}; the validator said:\n{}",
            seen.join("\n")
        );
    }

    /// SIGKILL, then reaps the process.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

impl Drop for ValidatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every record in the directory, serialized, read as `subnet replay` reads it.
fn records(data: &Path) -> Vec<String> {
    let (dir, _) = DataDir::open_existing(data).unwrap();
    let (records, _torn) = dir.records().unwrap();
    records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect()
}

fn recorded_windows(data: &Path) -> Vec<u64> {
    let (dir, _) = DataDir::open_existing(data).unwrap();
    dir.records().unwrap().0.iter().map(|r| r.window).collect()
}

async fn wait_for_record(data: &Path, window: u64) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !recorded_windows(data).contains(&window) {
        assert!(
            Instant::now() < deadline,
            "window {window} was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// xorshift64*: the kill points of a seed.
fn kill_delays(mut seed: u64, n: usize) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            Duration::from_millis(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) % 1500)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_killed_while_scoring_loses_no_record_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = TaskSpec::from_toml_str(include_str!("../../tasks/localnet-lm.toml")).unwrap();
    spec.training.set_inner_steps(2);
    let task_path = dir.path().join("task.toml");
    std::fs::write(&task_path, spec.canonical_toml()).unwrap();
    let engine = Arc::new(TaskEngine::new(spec));
    let blocks = engine.spec().window.blocks;

    let chain_path = dir.path().join("chain.sqlite");
    let chain = LocalChain::open_or_create(&chain_path, BlockClock::Manual, 5).unwrap();
    let params = SubnetParams {
        tempo: blocks,
        weights_rate_limit: 1,
        min_allowed_weights: 1,
        commit_reveal_weights_enabled: false,
        ..SubnetParams::default()
    };
    let owner = keypair_from_uri("//CrashOwner").unwrap();
    let netuid = chain
        .create_subnet(AccountId::from(&owner), params)
        .unwrap();
    let validator_key = keypair_from_uri(VALIDATOR_URI).unwrap();
    let miner_keys: Vec<Keypair> = (0..2)
        .map(|k| keypair_from_uri(&format!("//CrashMiner{k}")).unwrap())
        .collect();
    for key in std::iter::once(&validator_key).chain(&miner_keys) {
        let id = AccountId::from(key);
        chain.fund(id, 1000 * TOKEN).unwrap();
        chain.burned_register(id, netuid, id).unwrap();
    }
    let id = AccountId::from(&validator_key);
    chain.add_stake(id, id, netuid, 200 * TOKEN).unwrap();
    chain.advance_blocks(blocks).unwrap(); // window 1; the epoch grants the permit

    let (stop, _) = tokio::sync::watch::channel(false);
    let mut miners = Vec::new();
    for key in &miner_keys {
        let miner = Miner::new(chain.clone(), netuid, key.clone(), engine.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        chain
            .serve_axon(key, netuid, listener.local_addr().unwrap())
            .await
            .unwrap();
        let mut rx = stop.subscribe();
        tokio::spawn(
            MinerService::new(miner.clone()).serve(listener, async move {
                let _ = rx.wait_for(|s| *s).await;
            }),
        );
        miners.push(miner);
    }
    // Each window the miners serve a small step from the genesis checkpoint.
    let publish = |window: u64| {
        for (k, miner) in miners.iter().enumerate() {
            let delta = vec![1e-4 * (k as f32 + 1.0); engine.num_params()];
            let served = miner.commit_work(window, engine.genesis().digest, &delta);
            miner.publish(window, served);
        }
    };

    let data = dir.path().join("validator");
    let mut process = start_validator(&task_path, &chain_path, &data);
    process.wait_for(&["serving"], Duration::from_secs(60));
    publish(1);
    tokio::time::sleep(Duration::from_millis(2500)).await; // the collector asks every second
    chain.advance_blocks(blocks).unwrap();
    wait_for_record(&data, 1).await;

    let mut window = 2;
    for delay in kill_delays(0x5EED, 3) {
        publish(window);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        chain.advance_blocks(blocks).unwrap();
        // Killed somewhere in the scoring of `window`, or just after its record.
        tokio::time::sleep(delay).await;
        process.kill();
        let before = records(&data);
        let saved = DataDir::open_existing(&data)
            .unwrap()
            .0
            .load_state()
            .unwrap()
            .expect("a state was saved after window 1");

        process = start_validator(&task_path, &chain_path, &data);
        let resumed = process.wait_for(
            &["resumed from the data directory"],
            Duration::from_secs(60),
        );
        assert!(
            resumed.contains(&format!("window={}", saved.window))
                && resumed.contains(&format!("miners={}", saved.averages.len())),
            "resumed from another state than the saved one (window {}, {} miners): {resumed}",
            saved.window,
            saved.averages.len()
        );
        process.wait_for(&["serving"], Duration::from_secs(60));
        // The window it was killed in is scored, from the commitments kept in the directory.
        wait_for_record(&data, window).await;
        let after = records(&data);
        assert!(
            after.len() >= before.len() && after[..before.len()] == before[..],
            "a record written before the kill was lost or changed (delay {delay:?})"
        );
        // The window after the kill is collected and scored as usual.
        window += 1;
        publish(window);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        chain.advance_blocks(blocks).unwrap();
        wait_for_record(&data, window).await;
        println!(
            "killed {delay:?} after window {} closed: {} records kept, resumed at window {}, windows {} and {window} scored",
            window - 1,
            before.len(),
            saved.window,
            window - 1
        );
        window += 1;
    }
    let windows = recorded_windows(&data);
    assert_eq!(
        windows,
        (1..window).collect::<Vec<_>>(),
        "every window recorded once"
    );
    let _ = stop.send(true);
}
