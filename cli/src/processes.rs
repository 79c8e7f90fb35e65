//! `subnet localnet --processes`: the localnet with every validator and miner a separate process of
//! the real binaries (`validator run`, `miner run`; adversaries through the hidden `subnet
//! adversary` command), on one shared chain file, with their wallets in the run directory.
//!
//! The processes find each other through the chain as they would on a real subnet. This process
//! only keeps the chain's clock: it opens a window, waits until every miner has served it (their
//! metrics say so) and every validator holds the commitments, closes it, waits for every
//! validator's record of it in its replay log, and reads the outcome from there. Each process
//! writes its log to `logs/` in the run directory.
//!
//! Longer than most, the file and its main functions (`run`, `spawn_processes`, `run_window`,
//! `run_adversary`): the program list, the processes' arguments and the run's steps are one
//! sequence that a reader follows top to bottom.

use crate::localnet::{
    LocalnetConfig, LocalnetReport, MinerKind, Prepared, ReportLoss, Watch, WindowLine, prepare,
    run_dir, validator_dir, window_line,
};
use anyhow::{Context, bail};
use chain_client::{Chain, LocalChain, wallet};
use miner::adversary::{self, Adversary, Peers};
use miner::{Miner, MinerService};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use subxt_signer::sr25519::Keypair;
use task::{TaskEngine, TaskSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use validator::{DataDir, WindowOutcome};

/// How long a window may take before the run gives up on a process.
const STEP_TIMEOUT: Duration = Duration::from_secs(600);

/// The adversary modes that need no other miner's work: the others read it inside one process.
pub fn runs_alone(adversary: Adversary) -> bool {
    !matches!(
        adversary,
        Adversary::Copier | Adversary::NoisyCopier | Adversary::Mixer
    )
}

/// Where the three programs are.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub miner: PathBuf,
    pub validator: PathBuf,
    pub subnet: PathBuf,
}

impl Binaries {
    /// The `miner` and `validator` binaries beside the running `subnet` (one `cargo build` puts
    /// them all in `target/<profile>/`).
    pub fn beside_this_program() -> anyhow::Result<Self> {
        let subnet = std::env::current_exe().context("cannot locate the running program")?;
        let dir = subnet.parent().context("the program has no directory")?;
        let bins = Self {
            miner: dir.join(format!("miner{}", std::env::consts::EXE_SUFFIX)),
            validator: dir.join(format!("validator{}", std::env::consts::EXE_SUFFIX)),
            subnet: subnet.clone(),
        };
        bins.check()?;
        Ok(bins)
    }

    pub fn check(&self) -> anyhow::Result<()> {
        for bin in [&self.miner, &self.validator, &self.subnet] {
            if !bin.is_file() {
                bail!(
                    "{} is missing: build the programs first (cargo build --release --bins)",
                    bin.display()
                );
            }
        }
        Ok(())
    }
}

/// A running child, killed when dropped.
struct Proc {
    name: String,
    child: std::sync::Mutex<Child>,
    log: PathBuf,
    metrics: String,
}

impl Proc {
    fn spawn(name: &str, program: &Path, args: &[String], logs: &Path) -> anyhow::Result<Self> {
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let metrics = free_address()?;
        let child = Command::new(program)
            .args(args)
            .args(["--metrics", &metrics])
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .env("RUST_LOG", "info")
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        Ok(Self {
            name: name.to_string(),
            child: std::sync::Mutex::new(child),
            log,
            metrics,
        })
    }

    /// An error if the process has exited, with the end of its log.
    fn alive(&self) -> anyhow::Result<()> {
        let status = self.child.lock().expect("child lock").try_wait()?;
        if let Some(status) = status {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} exited ({status}); the end of {}:\n{}",
                self.name,
                self.log.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }

    /// The process's metrics, by name (labelled series are left out).
    async fn metrics(&self) -> BTreeMap<String, f64> {
        scrape(&self.metrics).await.unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let child = self.child.get_mut().expect("child lock");
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A loopback address no one listens on now.
fn free_address() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}

/// Reads a Prometheus text endpoint.
async fn scrape(addr: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut text)).await??;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains('{'))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect())
}

/// Waits until `done` holds, checking every process is alive meanwhile.
async fn wait_until<F, Fut>(what: &str, procs: &[Proc], mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let start = Instant::now();
    loop {
        for p in procs {
            p.alive()?;
        }
        if done().await? {
            return Ok(());
        }
        if start.elapsed() > STEP_TIMEOUT {
            bail!(
                "gave up after {} s waiting for {what}",
                STEP_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the localnet as separate processes; `on_window` sees each window's line when it is done.
pub async fn run(
    config: LocalnetConfig,
    bins: &Binaries,
    mut on_window: impl FnMut(&WindowLine),
) -> anyhow::Result<LocalnetReport> {
    bins.check()?;
    if let Some(a) = config.adversaries.iter().find(|a| !runs_alone(**a)) {
        bail!(
            "--adversaries {a} reads other miners' work in one process; run it without --processes"
        );
    }
    let (dir, _temp) = run_dir(&config)?;
    let wallets = dir.join("wallets");
    let prepared = prepare(&config, &dir, |role, i| wallet_keys(&wallets, role, i)).await?;
    let report_loss = ReportLoss::new(prepared.engine.clone());
    let mut report = prepared.report(report_loss.of(prepared.engine.genesis().params).await?);
    let Prepared {
        ref chain,
        ref chain_path,
        netuid,
        ref engine,
        ref kinds,
        first_window,
        ..
    } = prepared;
    let task_file = write_task_file(&dir, engine)?;
    let common = CommonArgs {
        task_file: &task_file,
        chain_path,
        netuid,
        wallets: &wallets,
    };

    // The validators first, then the miners that answer (a silent one never starts).
    let miner_uids = &report.miner_uids;
    let (procs, running) = spawn_processes(&config, bins, &dir, &common, (kinds, miner_uids))?;

    // Every process announces its axon on chain before the first window opens.
    let answering: Vec<u16> = (report.validator_uids.iter().copied())
        .chain(running.iter().map(|r| r.1))
        .collect();
    wait_for_axons(chain, netuid, &procs, &answering).await?;

    let data_dirs: Vec<DataDir> = (0..config.validators)
        .map(|i| DataDir::open_existing(validator_dir(&dir, i)).map(|d| d.0))
        .collect::<Result<_, _>>()?;
    let nodes = Nodes {
        procs: &procs,
        running: &running,
        validators: config.validators,
        data_dirs: &data_dirs,
    };
    let blocks = engine.spec().window.blocks;
    let mut watch =
        (config.dashboard.clone()).map(|d| Watch::new(d, engine, &report.miner_uids, kinds));
    for (n, window) in (first_window..first_window + config.windows).enumerate() {
        // The window is open: every miner trains (or misbehaves) and serves it, the validators
        // collect; then it closes and they score it.
        run_window(&nodes, chain, blocks, window, n as f64 + 1.0).await?;
        let outcomes = recorded_outcomes(&data_dirs, &chain.metagraph(netuid).await?, window)?;
        let checkpoint = lead_checkpoint(&data_dirs[0], engine, &outcomes[0])?;
        let loss = report_loss.of(checkpoint.params).await?;
        let line = window_line(
            chain,
            (netuid, report.last_block()),
            (window, loss),
            &outcomes,
            (&report.miner_uids, kinds),
            &report.validator_uids,
        )
        .await?;
        if let Some(watch) = &mut watch {
            watch.show(chain, netuid, (window, loss), &outcomes[0])?;
        }
        on_window(&line);
        report.push(line, outcomes);
    }
    drop(procs);
    Ok(report)
}

/// Writes the task every process loads (and the folder for their logs); returns the task's path.
fn write_task_file(dir: &Path, engine: &TaskEngine) -> anyhow::Result<PathBuf> {
    let task_file = dir.join("task.toml");
    std::fs::write(&task_file, engine.spec().canonical_toml())
        .with_context(|| format!("cannot write {}", task_file.display()))?;
    std::fs::create_dir_all(dir.join("logs"))?;
    Ok(task_file)
}

/// A fresh wallet named after the node's role and index: its coldkey and hotkey.
fn wallet_keys(wallets: &Path, role: &str, i: usize) -> anyhow::Result<(Keypair, Keypair)> {
    let name = format!("{role}-{i}");
    wallet::create_wallet(wallets, &name, "default", None)?;
    Ok((
        wallet::read_keyfile(&wallets.join(&name).join("coldkey"))?,
        wallet::load_hotkey(wallets, &name, "default")?,
    ))
}

/// Waits until every answering uid has its axon on chain.
async fn wait_for_axons(
    chain: &LocalChain,
    netuid: u16,
    procs: &[Proc],
    answering: &[u16],
) -> anyhow::Result<()> {
    wait_until("every process to serve its axon", procs, || async {
        let metagraph = chain.metagraph(netuid).await?;
        Ok(answering
            .iter()
            .all(|u| metagraph.by_uid(*u).is_some_and(|n| n.axon.is_some())))
    })
    .await
}

/// The global model the lead validator recorded at the end of a window, checked against its digest.
fn lead_checkpoint(
    lead: &DataDir,
    engine: &TaskEngine,
    outcome: &WindowOutcome,
) -> anyhow::Result<task::Checkpoint> {
    let bytes = lead.blob(&outcome.checkpoint_after.0)?;
    task::Checkpoint::from_bytes(
        &bytes,
        &engine.digest(),
        engine.num_params(),
        Some(&outcome.checkpoint_after),
    )
    .map_err(|e| anyhow::anyhow!("the lead's checkpoint of window {}: {e}", outcome.window))
}

/// The arguments every node process takes: the task, the chain, the subnet and its wallet.
struct CommonArgs<'a> {
    task_file: &'a std::path::Path,
    chain_path: &'a std::path::Path,
    netuid: u16,
    wallets: &'a std::path::Path,
}

impl CommonArgs<'_> {
    fn args(&self, name: &str) -> Vec<String> {
        vec![
            "--task".into(),
            self.task_file.display().to_string(),
            "--chain".into(),
            format!("local:{}", self.chain_path.display()),
            "--netuid".into(),
            self.netuid.to_string(),
            "--wallet".into(),
            name.into(),
            "--wallet-path".into(),
            self.wallets.display().to_string(),
        ]
    }
}

/// A running miner: its process's index, its uid and its kind.
type Running = Vec<(usize, u16, MinerKind)>;

/// Starts the validators, then the miners that answer (a silent one never starts).
fn spawn_processes(
    config: &LocalnetConfig,
    bins: &Binaries,
    dir: &std::path::Path,
    common: &CommonArgs<'_>,
    (kinds, miner_uids): (&[MinerKind], &[u16]),
) -> anyhow::Result<(Vec<Proc>, Running)> {
    let logs = dir.join("logs");
    let mut procs = Vec::new();
    for i in 0..config.validators {
        let name = format!("validator-{i}");
        let mut args = vec!["run".to_string()];
        args.extend(common.args(&name));
        args.extend(["--data".into(), validator_dir(dir, i).display().to_string()]);
        if let Some(period) = config.audit_period {
            args.extend(["--audit-period".into(), period.to_string()]);
        }
        let budget = crate::localnet::LOCAL_AUDIT_BUDGET.as_secs();
        args.extend(["--audit-budget".into(), budget.to_string()]);
        procs.push(Proc::spawn(&name, &bins.validator, &args, &logs)?);
    }
    let sybils: Vec<u16> = kinds
        .iter()
        .zip(miner_uids)
        .filter(|(k, _)| matches!(k, MinerKind::Adversary(a) if a.pairs()))
        .map(|(_, u)| *u)
        .collect();
    // Each running miner's process index, uid and kind.
    let mut running = Vec::new();
    let mut honest = 0;
    for (i, (kind, uid)) in kinds.iter().zip(miner_uids).enumerate() {
        let name = format!("miner-{i}");
        let (program, mut args) = match kind {
            MinerKind::Honest => (&bins.miner, vec!["run".to_string()]),
            MinerKind::Adversary(Adversary::Silent) => continue,
            MinerKind::Adversary(a) => {
                let mut args = vec!["adversary".to_string(), a.to_string()];
                if let Some(p) = sybils.iter().position(|u| u == uid)
                    && let Some(partner) = sybils.get(p ^ 1)
                {
                    args.extend(["--partner".into(), partner.to_string()]);
                }
                (&bins.subnet, args)
            }
        };
        args.extend(common.args(&name));
        if *kind == MinerKind::Honest {
            args.extend([
                "--data".into(),
                dir.join(&name).display().to_string(),
                "--progress".into(),
                "plain".into(),
            ]);
            if let Some(capacity) = config.group_capacities.get(honest) {
                args.extend(["--max-group-params".into(), capacity.to_string()]);
            }
            honest += 1;
        }
        running.push((procs.len(), *uid, *kind));
        procs.push(Proc::spawn(&name, program, &args, &logs)?);
    }
    Ok((procs, running))
}

/// The processes of a run and where the validators record.
struct Nodes<'a> {
    procs: &'a [Proc],
    running: &'a Running,
    validators: usize,
    data_dirs: &'a [DataDir],
}

/// Waits until every running miner has served `window` (its `served`th) and every validator holds
/// every commitment served, closes the window, and waits until every validator has recorded it.
async fn run_window(
    nodes: &Nodes<'_>,
    chain: &chain_client::LocalChain,
    blocks: u64,
    window: u64,
    served: f64,
) -> anyhow::Result<()> {
    let Nodes {
        procs,
        running,
        validators,
        data_dirs,
    } = *nodes;
    wait_until(
        &format!("the miners to serve window {window}"),
        procs,
        || {
            let (procs, running) = (procs, &running);
            async move {
                let mut all = true;
                for (i, _, kind) in running.iter() {
                    let m = procs[*i].metrics().await;
                    let acted = match kind {
                        MinerKind::Honest => m.get("miner_windows_trained_total"),
                        MinerKind::Adversary(_) => m.get("adversary_windows_acted_total"),
                    };
                    all &= acted.is_some_and(|v| *v >= served);
                }
                Ok(all)
            }
        },
    )
    .await?;
    // ... and every validator holds every commitment served.
    let published = count_published(procs, running, window).await;
    wait_until(
        &format!("the validators to collect window {window}'s commitments"),
        procs,
        || async move {
            let mut all = true;
            for v in &procs[..validators] {
                let m = v.metrics().await;
                all &= m.get("validator_collecting_window") == Some(&(window as f64))
                    && m.get("validator_commitments_collected")
                        .is_some_and(|c| *c >= published as f64);
            }
            Ok(all)
        },
    )
    .await?;
    // The window closes; the validators score it and record it.
    chain.advance_blocks(blocks)?;
    wait_until(
        &format!("the validators to score window {window}"),
        procs,
        || async move {
            Ok(data_dirs.iter().all(|d| {
                d.records()
                    .is_ok_and(|(r, _)| r.iter().any(|r| r.window == window))
            }))
        },
    )
    .await?;
    Ok(())
}

/// Each validator's outcome of `window`, read from its record.
fn recorded_outcomes(
    data_dirs: &[DataDir],
    metagraph: &chain_client::Metagraph,
    window: u64,
) -> anyhow::Result<Vec<WindowOutcome>> {
    let mut outcomes = Vec::new();
    for d in data_dirs {
        let (records, _) = d.records()?;
        let record = records
            .iter()
            .find(|r| r.window == window)
            .context("the record was there a moment ago")?;
        outcomes.push(
            WindowOutcome::from_record(record, metagraph)
                .map_err(|e| anyhow::anyhow!("window {window} in {}: {e}", d.root().display()))?,
        );
    }
    Ok(outcomes)
}

/// How many running miners have published a gradient for `window`.
async fn count_published(
    procs: &[Proc],
    running: &[(usize, u16, MinerKind)],
    window: u64,
) -> usize {
    let mut published = 0;
    for (i, _, kind) in running {
        let m = procs[*i].metrics().await;
        let last = match kind {
            MinerKind::Honest => m.get("miner_last_window"),
            MinerKind::Adversary(_) => m.get("adversary_last_window_published"),
        };
        if last == Some(&(window as f64)) {
            published += 1;
        }
    }
    published
}

/// What `subnet adversary` runs: a miner in a test-only misbehaving mode, as its own process.
pub struct AdversaryProcess {
    pub mode: Adversary,
    pub task: PathBuf,
    pub chain: String,
    pub netuid: u16,
    pub hotkey: Keypair,
    pub metrics: Option<String>,
    /// The Sybil partner's uid.
    pub partner: Option<u16>,
}

/// Runs a misbehaving miner until Ctrl-C: it serves an axon like `miner run`, and in every window
/// does what its mode does in place of the assigned training. Its metrics count the windows it
/// acted in (`adversary_windows_acted_total`) and the last window it published a gradient for
/// (`adversary_last_window_published`).
pub async fn run_adversary(a: AdversaryProcess) -> anyhow::Result<()> {
    if !runs_alone(a.mode) {
        bail!(
            "{} reads other miners' work inside one process; run it with `subnet localnet`",
            a.mode
        );
    }
    let engine = Arc::new(TaskEngine::new(TaskSpec::from_file(&a.task)?));
    let blocks = engine.spec().window.blocks;
    let chain = chain_client::open_chain(&a.chain).await?;
    let miner = Miner::new(chain.clone(), a.netuid, a.hotkey.clone(), engine);
    let acted = Counter::<u64>::default();
    let published = Gauge::<i64>::default();
    if let Some(addr) = &a.metrics {
        let mut extra = Registry::default();
        extra.register(
            "adversary_windows_acted",
            "Windows the adversary acted in",
            acted.clone(),
        );
        extra.register(
            "adversary_last_window_published",
            "The latest window the adversary published for",
            published.clone(),
        );
        let metrics = miner.metrics().clone();
        let render = move || metrics.render_with(&extra);
        subnet_proto::metrics_http::spawn(addr, Arc::new(render)).await?;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    chain
        .serve_axon(&a.hotkey, a.netuid, listener.local_addr()?)
        .await?;
    tokio::spawn(MinerService::new(miner.clone()).serve(listener, std::future::pending()));
    tracing::info!(mode = %a.mode, hotkey = %miner.hotkey(), "serving");
    let stash = std::sync::Mutex::new(None);
    let peers = Peers {
        miners: Vec::new(),
        victim: 0,
        partner: a.partner,
        stash: &stash,
    };
    let mut next: Option<u64> = None;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
        let window = chain.current_block().await? / blocks;
        if next.is_some_and(|n| window < n) {
            continue;
        }
        match miner.sync_checkpoint().await {
            Ok(synced) if synced >= window => {}
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(window, error = %e, "cannot sync the checkpoint yet; retrying");
                continue;
            }
        }
        let seed = chain_client::window_seed(&chain.block_hash(window * blocks).await?);
        adversary::act(&miner, a.mode, &peers, window, seed).await?;
        if miner.gradient(window).is_some() {
            published.set(window as i64);
        }
        acted.inc();
        tracing::info!(window, mode = %a.mode, "acted");
        next = Some(window + 1);
    }
}
