//! How much memory and time one validator window takes with N miners: N miner services on
//! 127.0.0.1 (in a child process, so that the figures are the validator's alone), each serving a
//! gradient for window 1 on a fresh local chain, and one validator collecting, fetching, auditing,
//! scoring and aggregating them.
//!
//! `cargo run --release -p validator --example window_memory -- MINERS [TASK_FILE [AUDIT_PERIOD]]`
//! (default: 64 miners, tasks/localnet-lm.toml). Prints this process's resident memory before the
//! window (the chain and the validator at rest) and its peak during it, and the same for the live
//! heap counted at the allocator (exact: no allocator reserve, no page noise); the last line is
//! the same as one JSON object for `bench/run.sh`.

use chain_client::{AccountId, BlockClock, Chain, LocalChain, SubnetParams, keypair_from_uri};
use miner::{Miner, MinerService};
use std::alloc::{GlobalAlloc, Layout};
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use task::allocator::MiMalloc;
use task::{Digest, TaskEngine, TaskSpec};
use tokio::net::TcpListener;
use validator::Validator;

/// The allocator the binaries use (see the `validator` binary), counting the bytes it holds live
/// so that a window's heap is measured exactly, apart from what the allocator keeps in reserve.
#[global_allocator]
static ALLOCATOR: Counting = Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

impl Counting {
    fn grew(by: usize) {
        let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

// SAFETY: every call goes to mimalloc unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { MiMalloc.alloc(layout) };
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { MiMalloc.alloc_zeroed(layout) };
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { MiMalloc.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { MiMalloc.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            Self::grew(new_size);
        }
        p
    }
}

/// Live heap bytes now, in MiB, and the peak since the last `reset_peak`.
fn heap_mib() -> (f64, f64) {
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    (
        mib(LIVE.load(Ordering::Relaxed)),
        mib(PEAK.load(Ordering::Relaxed)),
    )
}

const TOKEN: u64 = 1_000_000_000;

/// (VmRSS, VmHWM) of this process in MiB.
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Starts the peak-memory counts afresh (Linux: writing 5 to clear_refs resets VmHWM).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// A small step of a different direction for each miner and window.
fn delta(engine: &TaskEngine, miner: usize, window: u64) -> Vec<f32> {
    (0..engine.num_params())
        .map(|i| 1e-4 * (((i * 31 + miner * 17 + window as usize * 7) % 13) as f32 - 6.0))
        .collect()
}

fn miner_keys(miners: usize) -> anyhow::Result<Vec<subxt_signer::sr25519::Keypair>> {
    (0..miners)
        .map(|k| Ok(keypair_from_uri(&format!("//MemoryMiner{k}"))?))
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(SERVE_MINERS) {
        return serve_miners(&args[1..]).await;
    }
    measure(args).await
}

const SERVE_MINERS: &str = "--serve-miners";

/// The child: serves `MINERS` miners of the chain at `CHAIN` (netuid `NETUID`, task `TASK_FILE`),
/// each with its window 1 gradient, and says `ready`; then for each line `WINDOW CHECKPOINT` on
/// its input publishes every miner's gradient of that window and says `ready` again, until its
/// input closes.
async fn serve_miners(args: &[String]) -> anyhow::Result<()> {
    let [chain_path, task, netuid, miners] = args else {
        anyhow::bail!("{SERVE_MINERS} CHAIN TASK_FILE NETUID MINERS");
    };
    let engine = Arc::new(TaskEngine::new(TaskSpec::from_file(task)?));
    let chain = LocalChain::open_or_create(chain_path, BlockClock::Manual, 1)?;
    let netuid: u16 = netuid.parse()?;
    let genesis = engine.genesis();
    let (stop, _) = tokio::sync::watch::channel(false);
    let mut served = Vec::new();
    // Segment states on disk, as `miner run --data` keeps them: on tiny-lm a window's are 200 MB
    // a miner.
    let states = Path::new(chain_path).with_file_name("miner-states");
    for (k, key) in miner_keys(miners.parse()?)?.into_iter().enumerate() {
        let miner = Miner::new(chain.clone(), netuid, key.clone(), engine.clone())
            .with_state_dir(&states.join(k.to_string()))?;
        miner.publish(
            1,
            miner.commit_work(1, genesis.digest, &delta(&engine, k, 1)),
        );
        served.push(miner.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        chain
            .serve_axon(&key, netuid, listener.local_addr()?)
            .await?;
        let mut rx = stop.subscribe();
        tokio::spawn(MinerService::new(miner).serve(listener, async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
    }
    println!("ready");
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let (window, checkpoint) = line
            .split_once(' ')
            .ok_or_else(|| anyhow::anyhow!("expected `WINDOW CHECKPOINT`, got `{line}`"))?;
        let (window, checkpoint): (u64, Digest) = (window.parse()?, checkpoint.parse()?);
        for (k, miner) in served.iter().enumerate() {
            let work = delta(&engine, k, window);
            miner.publish(window, miner.commit_work(window, checkpoint, &work));
        }
        println!("ready");
    }
    let _ = stop.send(true);
    Ok(())
}

/// The miners' process, and its two pipes.
struct Miners {
    child: Child,
    input: ChildStdin,
    output: std::io::BufReader<ChildStdout>,
}

impl Miners {
    fn spawn(chain: &Path, task: &str, netuid: u16, miners: usize) -> anyhow::Result<Miners> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg(SERVE_MINERS)
            .arg(chain)
            .args([task, &netuid.to_string(), &miners.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let input = child.stdin.take().expect("piped stdin");
        let output = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut miners = Miners {
            child,
            input,
            output,
        };
        miners.ready()?;
        Ok(miners)
    }

    fn ready(&mut self) -> anyhow::Result<()> {
        let mut line = String::new();
        self.output.read_line(&mut line)?;
        anyhow::ensure!(
            line.trim() == "ready",
            "the miners' process stopped: {:?}",
            self.child.try_wait()
        );
        Ok(())
    }

    /// Every miner publishes its gradient of `window` from `checkpoint`.
    fn publish(&mut self, window: u64, checkpoint: Digest) -> anyhow::Result<()> {
        writeln!(self.input, "{window} {checkpoint}")?;
        self.ready()
    }

    fn stop(self) -> anyhow::Result<()> {
        let Miners {
            mut child, input, ..
        } = self;
        drop(input);
        child.wait()?;
        Ok(())
    }
}

async fn measure(args: Vec<String>) -> anyhow::Result<()> {
    task::allocator::hold_freed_memory();
    let mut args = args.into_iter();
    let miners: usize = args.next().map_or(Ok(64), |a| a.parse())?;
    let task = args
        .next()
        .unwrap_or_else(|| "tasks/localnet-lm.toml".into());
    // The audit period (as `validator run --audit-period`: 0 turns audits off), to tell the
    // audits' memory from the rest of the window's.
    let audit_period: Option<u64> = args.next().map(|a| a.parse()).transpose()?;
    let engine = Arc::new(TaskEngine::new(TaskSpec::from_file(&task)?));
    let blocks = engine.spec().window.blocks;
    let dir = tempfile::tempdir()?;
    let chain = LocalChain::open_or_create(dir.path().join("chain.sqlite"), BlockClock::Manual, 1)?;
    let params = SubnetParams {
        tempo: blocks,
        weights_rate_limit: 1,
        min_allowed_weights: 1,
        max_allowed_uids: (miners + 1) as u16,
        commit_reveal_weights_enabled: false,
        ..SubnetParams::default()
    };
    let netuid = chain.create_subnet(AccountId::from(&keypair_from_uri("//Owner")?), params)?;
    let validator_key = keypair_from_uri("//MemoryValidator")?;
    let miner_keys = miner_keys(miners)?;
    for key in std::iter::once(&validator_key).chain(&miner_keys) {
        let id = AccountId::from(key);
        chain.fund(id, 1000 * TOKEN)?;
        chain.burned_register(id, netuid, id)?;
    }
    let id = AccountId::from(&validator_key);
    chain.add_stake(id, id, netuid, 500 * TOKEN)?;
    chain.advance_blocks(blocks)?; // window 1; the epoch grants the permit

    let genesis = engine.genesis();
    let mut served = Miners::spawn(&dir.path().join("chain.sqlite"), &task, netuid, miners)?;
    // With a data directory, as `validator run --data` keeps one: audited artefacts go to disk
    // as they arrive.
    let store = validator::store::DataDir::open(
        dir.path().join("validator"),
        &engine.spec().canonical_toml(),
    )?;
    let validator = Validator::with_store(
        chain.clone(),
        netuid,
        validator_key,
        engine.clone(),
        genesis,
        1,
        store,
    )?;
    validator.set_audit_period(audit_period);
    // Window 1 is every miner's first: each is audited. Window 2 is the steady state: each miner
    // is audited with the task's probability (one in `scoring.audit_period`).
    let mut figures = Vec::new();
    for window in 1..=2u64 {
        if window > 1 {
            let (checkpoint, _) = validator.checkpoint();
            served.publish(window, checkpoint.digest)?;
        }
        let collected = validator.collect_commitments(window).await?;
        chain.advance_blocks(blocks)?;
        let block = chain.current_block().await?;
        let seed = chain_client::window_seed(&chain.block_hash(block).await?);

        let (before, _) = memory_mib();
        reset_peak();
        let (heap_before, _) = heap_mib();
        let started = Instant::now();
        let outcome = validator.run_window(window, seed).await?;
        let seconds = started.elapsed().as_secs_f64();
        let (_, peak) = memory_mib();
        let (_, heap_peak) = heap_mib();
        let scored = outcome
            .results
            .iter()
            .filter(|r| r.usefulness.is_some())
            .count();
        let audited = outcome.results.iter().filter(|r| r.audited).count();
        let fetched_mb = outcome.bytes_fetched as f64 / 1e6;
        println!(
            "{task}: {} parameters, window {window}, {miners} miners ({collected} commitments \
             collected, {scored} scored, {audited} audited, {fetched_mb:.1} MB fetched): window \
             {seconds:.1} s; resident before \
             the window {before:.0} MiB, peak during it {peak:.0} MiB (+{:.0} MiB); live heap before \
             {heap_before:.1} MiB, peak {heap_peak:.1} MiB (+{:.1} MiB)",
            engine.num_params(),
            peak - before,
            heap_peak - heap_before
        );
        figures.push(format!(
            "\"window_{window}\": {{\"scored\": {scored}, \"audited\": {audited}, \"window_s\": {seconds:.3}, \"fetched_mb\": {fetched_mb:.3}, \"before_mib\": {before:.1}, \"peak_mib\": {peak:.1}, \"heap_before_mib\": {heap_before:.2}, \"heap_peak_mib\": {heap_peak:.2}}}"
        ));
    }
    println!(
        "{{\"parameters\": {}, \"miners\": {miners}, {}}}",
        engine.num_params(),
        figures.join(", ")
    );
    served.stop()
}
