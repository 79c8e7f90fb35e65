//! The local chain shared by separate processes, and killed with SIGKILL mid-write. The worker
//! processes are this test binary run again with `CHAIN_WORKER` set: each runs the `worker` test,
//! which does nothing in a normal test run.

use chain_client::{AccountId, BlockClock, LocalChain, SubnetParams};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use subxt_signer::sr25519::Keypair;

const TOKEN: u64 = 1_000_000_000;
const TEMPO: u64 = 5;

fn key(name: &str) -> Keypair {
    chain_client::keypair_from_uri(&format!("//{name}")).unwrap()
}

fn id(name: &str) -> AccountId {
    AccountId::from(&key(name))
}

/// Starts this test binary as a worker of `kind` on the chain at `path`.
fn spawn_worker(kind: &str, index: usize, path: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "worker", "--nocapture", "--test-threads", "1"])
        .env("CHAIN_WORKER", kind)
        .env("CHAIN_WORKER_INDEX", index.to_string())
        .env("CHAIN_PATH", path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The worker side. `register`: funds and registers its hotkeys and moves the clock, reading the
/// metagraph in between (every call may run due epochs). `fund`: credits one rao at a time forever,
/// printing each committed total.
#[test]
fn worker() {
    let Ok(kind) = std::env::var("CHAIN_WORKER") else {
        return;
    };
    let index: usize = std::env::var("CHAIN_WORKER_INDEX")
        .unwrap()
        .parse()
        .unwrap();
    let chain = LocalChain::open(std::env::var("CHAIN_PATH").unwrap()).unwrap();
    let mut out = std::io::stdout();
    match kind.as_str() {
        "register" => {
            for j in 0..HOTKEYS_PER_WORKER {
                let coldkey = id(&format!("cold-{index}"));
                chain.fund(coldkey, 10 * TOKEN).unwrap();
                chain
                    .burned_register(coldkey, 1, id(&format!("hot-{index}-{j}")))
                    .unwrap();
                chain.advance_blocks(1).unwrap();
                chain.metagraph_sync(1).unwrap();
            }
            writeln!(out, "done").unwrap();
        }
        "fund" => {
            let coldkey = id(&format!("fund-{index}"));
            for i in 1.. {
                chain.fund(coldkey, 1).unwrap();
                writeln!(out, "committed {i}").unwrap();
                out.flush().unwrap();
            }
        }
        other => panic!("unknown worker {other}"),
    }
}

const WORKERS: usize = 4;
const HOTKEYS_PER_WORKER: usize = 6;

fn new_chain(dir: &Path) -> LocalChain {
    let chain =
        LocalChain::open_or_create(dir.join("chain.sqlite"), BlockClock::Manual, 7).unwrap();
    let netuid = chain
        .create_subnet(
            id("owner"),
            SubnetParams {
                tempo: TEMPO,
                burn: TOKEN,
                ..SubnetParams::default()
            },
        )
        .unwrap();
    assert_eq!(netuid, 1);
    chain
}

/// Four processes register six hotkeys each and move the clock concurrently: every registration
/// lands with its own uid, balances add up, and each tempo boundary ran its epoch exactly once.
#[test]
fn processes_share_one_chain_and_epochs_run_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let chain = new_chain(dir.path());
    let workers: Vec<Child> = (0..WORKERS)
        .map(|i| spawn_worker("register", i, chain.path()))
        .collect();
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "a worker failed");
        assert!(String::from_utf8_lossy(&out.stdout).contains("done"));
    }

    let metagraph = chain.metagraph_sync(1).unwrap();
    assert_eq!(metagraph.neurons.len(), WORKERS * HOTKEYS_PER_WORKER);
    let mut uids: Vec<u16> = metagraph.neurons.iter().map(|n| n.uid).collect();
    uids.sort_unstable();
    assert_eq!(
        uids,
        (0..(WORKERS * HOTKEYS_PER_WORKER) as u16).collect::<Vec<_>>()
    );
    for i in 0..WORKERS {
        for j in 0..HOTKEYS_PER_WORKER {
            let n = metagraph
                .by_hotkey(&id(&format!("hot-{i}-{j}")))
                .unwrap_or_else(|| panic!("hot-{i}-{j} missing"));
            assert_eq!(n.coldkey, id(&format!("cold-{i}")));
        }
        // Funded 10 tokens per hotkey, burned 1 per registration.
        assert_eq!(
            chain.balance(id(&format!("cold-{i}"))).unwrap(),
            9 * TOKEN * HOTKEYS_PER_WORKER as u64
        );
    }

    // 24 blocks were advanced; every multiple of the tempo up to there ran once, in order.
    let block = chain.advance_blocks(0).unwrap();
    assert_eq!(block, (WORKERS * HOTKEYS_PER_WORKER) as u64);
    let epochs: Vec<u64> = chain.epochs(1).unwrap().iter().map(|e| e.0).collect();
    let expected: Vec<u64> = (1..=block / TEMPO).map(|k| k * TEMPO).collect();
    assert_eq!(epochs, expected);
}

/// A process writing to the chain is killed with SIGKILL, five times, at arbitrary points: each time
/// every write it reported committed is there (only the one in flight, committed but not yet
/// reported, may also have landed), and the file passes SQLite's integrity check.
#[test]
fn sigkill_mid_write_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let chain = new_chain(dir.path());
    let coldkey = id("fund-0");
    for round in 0..5u64 {
        let before = chain.balance(coldkey).unwrap();
        let mut child = spawn_worker("fund", 0, chain.path());
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let start = Instant::now();
        // Let it commit for a while (a different number of writes each round), then kill it.
        let wanted = 20 + 37 * round;
        let mut last = 0u64;
        for line in lines.by_ref() {
            if let Some(n) = line.unwrap().strip_prefix("committed ") {
                last = n.parse().unwrap();
                if last >= wanted {
                    child.kill().unwrap(); // SIGKILL
                    break;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(60), "worker stalled");
        }
        child.wait().unwrap();
        // What it reported before it died is still in the pipe.
        for line in lines {
            if let Some(n) = line.unwrap().strip_prefix("committed ") {
                last = n.parse().unwrap();
            }
        }

        assert!(last >= wanted, "the worker stopped after {last} writes");
        let balance = LocalChain::open(chain.path())
            .unwrap()
            .balance(coldkey)
            .unwrap();
        assert!(
            balance >= before + last && balance <= before + last + 1,
            "round {round}: {last} writes reported committed after {before}, balance {balance}"
        );
        let check: String = rusqlite::Connection::open(chain.path())
            .unwrap()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }
}
