//! `validator run`: score every miner's gradient each window, set weights, advance the global model.

use anyhow::Context;
use chain_client::wallet::choose_hotkey;
use chain_client::{AnyChain, Chain, open_chain, window_seed};
use clap::{Parser, Subcommand};
use scoring::Verdict;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use subnet_proto::backoff::Backoff;
use subxt_signer::sr25519::Keypair;
use task::{TaskEngine, TaskSpec};
use validator::dashboard::{Dashboard, LocalFeed, View, neuron_rows};
use validator::{DataDir, Validator, ValidatorService};

#[derive(Parser)]
#[command(
    name = "validator",
    version,
    about = "Score miners' gradients, set weights, aggregate the global model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a subnet until Ctrl-C: after each window closes, probe every miner, set weights and
    /// serve the next global checkpoint. The global model starts from the task's genesis checkpoint.
    Run(Box<RunArgs>),
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long, env = "VALIDATOR_TASK")]
    task: PathBuf,
    /// The chain: `local:PATH` for a local chain file, `ws://HOST:PORT` (or `wss://`) for a
    /// subtensor node.
    #[arg(long, env = "VALIDATOR_CHAIN")]
    chain: String,
    #[arg(long, env = "VALIDATOR_NETUID")]
    netuid: u16,
    /// The subnet mechanism whose weights this validator sets (0, the subnet itself, unless the
    /// subnet declares more on subtensor).
    #[arg(long, env = "VALIDATOR_MECHANISM", default_value_t = 0)]
    mechanism: u8,
    /// Bittensor wallet holding the hotkey (`~/.bittensor/wallets/NAME`, or under --wallet-path).
    #[arg(long, env = "VALIDATOR_WALLET")]
    wallet: Option<String>,
    /// Hotkey name within the wallet (`hotkeys/NAME`).
    #[arg(long, env = "VALIDATOR_HOTKEY", default_value = "default")]
    hotkey: String,
    /// Directory of Bittensor wallets.
    #[arg(long, env = "BT_WALLET_PATH")]
    wallet_path: Option<PathBuf>,
    /// Hotkey as a secret URI instead of a wallet: a dev URI such as `//miner-1` for local
    /// chains, or a mnemonic.
    #[arg(long, env = "VALIDATOR_HOTKEY_URI", conflicts_with = "wallet")]
    hotkey_uri: Option<String>,
    /// Where to evaluate: cpu, cuda:N (a build with --features cuda) or wgpu (--features wgpu).
    /// Losses, the reference training and audits' re-execution run there; records name it, and a
    /// replay confirms their bits only on the same backend (`subnet replay --device`).
    #[arg(long, env = "VALIDATOR_DEVICE", default_value = "cpu")]
    device: task::Device,
    #[arg(long, env = "VALIDATOR_LISTEN", default_value = "127.0.0.1:0")]
    listen: String,
    /// Serve TLS with this PEM certificate chain (with --tls-key); peers must trust its issuer.
    #[arg(long, env = "VALIDATOR_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "VALIDATOR_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Reach peers over TLS, trusting the certificates this PEM authority issued (their
    /// certificates must name their axon's IP address).
    #[arg(long, env = "VALIDATOR_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Serve Prometheus metrics (windows scored, checkpoint loss, verdicts, weights set, fraud
    /// reports) on this address.
    #[arg(long, env = "VALIDATOR_METRICS")]
    metrics: Option<String>,
    /// Data directory: the state a restart resumes from (global checkpoint, moving averages),
    /// checkpoints and gradients, and the replay log that `subnet replay` checks.
    #[arg(long, env = "VALIDATOR_DATA")]
    data: Option<PathBuf>,
    /// Audit each miner's window with probability one in this many (besides its first window),
    /// instead of the task's scoring.audit_period; 0 turns audits off.
    #[arg(long, env = "VALIDATOR_AUDIT_PERIOD")]
    audit_period: Option<u64>,
    /// Seconds a window waits, for all its audits together, for the miners' artefacts; a miner
    /// that has not served them by then earns nothing from this validator until it does.
    #[arg(long, env = "VALIDATOR_AUDIT_BUDGET", default_value_t = 60)]
    audit_budget: u64,
    /// Serve a live page on this address: the metagraph with this validator's scores and
    /// verdicts, the global model's loss and the weight shares by window, recent rejections
    /// and (on a local chain) chain events.
    #[arg(long, env = "VALIDATOR_DASHBOARD")]
    dashboard: Option<String>,
}

/// mimalloc, holding freed memory through a window (`task::allocator`): training allocates and
/// frees a tensor per operation, and returning that memory to the kernel between steps cost a
/// measured 18-34% of tiny-lm's CPU training throughput (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: task::allocator::MiMalloc = task::allocator::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    task::allocator::hold_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let Command::Run(args) = Cli::parse().command;
    run(*args).await
}

/// Validates until Ctrl-C.
async fn run(args: RunArgs) -> anyhow::Result<()> {
    subnet_proto::tls::configure_from_files(
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
        args.tls_ca.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    let counters = serve_metrics(args.metrics.as_deref()).await?;
    let spec = TaskSpec::from_file(&args.task)?;
    let engine = Arc::new(TaskEngine::new(spec).on(args.device));
    let blocks = engine.spec().window.blocks;
    let chain = open_chain(&args.chain)
        .await?
        .for_mechanism(args.mechanism)?;
    let hotkey = choose_hotkey(
        args.hotkey_uri.as_deref(),
        args.wallet.as_deref(),
        &args.hotkey,
        args.wallet_path.as_deref(),
    )?;
    let first_window = chain.current_block().await? / blocks;
    let validator = open_validator(&chain, &args, &hotkey, &engine, first_window)?;
    let (stop_tx, server) = serve(&validator, &chain, &args, &hotkey, first_window).await?;
    log_backend(args.device);
    let collector = spawn_collector(validator.clone(), chain.clone(), counters.clone(), blocks);
    let next = first_to_score(&validator, first_window);
    let mut page = match &args.dashboard {
        Some(addr) => Some(Page::serve(addr, &engine).await?),
        None => None,
    };
    let watch = Watch {
        validator: &validator,
        chain: &chain,
        counters: &counters,
    };
    score_windows(&watch, page.as_mut(), blocks, next).await;
    tracing::info!("shutting down");
    collector.abort();
    let _ = stop_tx.send(true);
    server.await??;
    Ok(())
}

/// The validator's gRPC server, running.
type Server = tokio::task::JoinHandle<Result<(), tonic::transport::Error>>;

/// Announces the validator's axon on chain and serves its gRPC until `true` is sent.
async fn serve(
    validator: &Validator<AnyChain>,
    chain: &AnyChain,
    args: &RunArgs,
    hotkey: &Keypair,
    first_window: u64,
) -> anyhow::Result<(tokio::sync::watch::Sender<bool>, Server)> {
    chain_client::Membership::new(chain.clone(), args.netuid, hotkey.clone())
        .uid()
        .await?;
    let listen = &args.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    chain.serve_axon(hotkey, args.netuid, addr).await?;
    let netuid = args.netuid;
    tracing::info!(%addr, hotkey = %validator.hotkey(), netuid, first_window, "serving");
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(ValidatorService::new(validator.clone()).serve(
        listener,
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
    ));
    Ok((stop_tx, server))
}

/// Says where evaluations run and which windows' audits compare bits.
fn log_backend(device: task::Device) {
    match device {
        task::Device::Cpu => tracing::info!(
            backend = task::device::cpu_backend(),
            cpu = %task::device::cpu_arithmetic(),
            "evaluating on the CPU: audits compare bits with windows trained on this CPU backend, and use the task's tolerance otherwise"
        ),
        #[allow(unreachable_patterns)]
        device => tracing::info!(
            %device,
            "evaluating on a GPU: audits compare every window within the task's tolerance"
        ),
    }
}

/// The first window to score. While a window is open, its miners' commitments are collected
/// (again and again: miners commit when they finish training); a commitment that comes after the
/// close is not taken. A validator stopped while it scored the window that has just closed
/// scores it again, from the commitments its data directory kept; otherwise it starts at the
/// open window.
fn first_to_score(validator: &Validator<AnyChain>, first_window: u64) -> u64 {
    let (_, resumed_window) = validator.checkpoint();
    if resumed_window + 1 == first_window && validator.holds_commitments(resumed_window) {
        resumed_window
    } else {
        resumed_window.max(first_window)
    }
}

/// The validator's counters, served as Prometheus text at `addr` when one is given.
async fn serve_metrics(addr: Option<&str>) -> anyhow::Result<Arc<validator::metrics::Metrics>> {
    let counters = Arc::new(validator::metrics::Metrics::default());
    if let Some(addr) = addr {
        let counters = counters.clone();
        let addr =
            subnet_proto::metrics_http::spawn(addr, Arc::new(move || counters.render())).await?;
        tracing::info!(%addr, "metrics");
    }
    Ok(counters)
}

/// The validator, resumed from its data directory when it has one, with its audit settings.
fn open_validator(
    chain: &AnyChain,
    args: &RunArgs,
    hotkey: &Keypair,
    engine: &Arc<TaskEngine>,
    first_window: u64,
) -> anyhow::Result<Validator<AnyChain>> {
    let (chain, hotkey, genesis) = (chain.clone(), hotkey.clone(), engine.genesis());
    let netuid = args.netuid;
    let validator = match &args.data {
        Some(dir) => {
            let store = DataDir::open(dir, &engine.spec().canonical_toml())?;
            Validator::with_store(
                chain,
                netuid,
                hotkey,
                engine.clone(),
                genesis,
                first_window,
                store,
            )?
        }
        None => Validator::new(chain, netuid, hotkey, engine.clone(), genesis, first_window),
    };
    validator.set_audit_period(args.audit_period);
    validator.set_audit_budget(std::time::Duration::from_secs(args.audit_budget));
    Ok(validator)
}

/// Scores every window once it has closed, from `next` on, until the process is interrupted.
/// Window w is scored once it has closed, i.e. from block (w + 1) * blocks on. A failed chain
/// read or window is logged and tried again after a growing pause; the validator keeps going.
async fn score_windows(watch: &Watch<'_>, mut page: Option<&mut Page>, blocks: u64, mut next: u64) {
    let (validator, chain) = (watch.validator, watch.chain);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut backoff = Backoff::default();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {}
        }
        let block = match chain.current_block().await {
            Ok(block) => block,
            Err(e) => {
                if backoff.pause("cannot read the chain", &e).await.is_break() {
                    break;
                }
                continue;
            }
        };
        if block < (next + 1) * blocks {
            continue;
        }
        let outcome = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            outcome = score(validator, chain, next, blocks) => outcome,
        };
        let outcome = match outcome {
            Ok(outcome) => {
                backoff.succeeded();
                outcome
            }
            Err(e) => {
                let what = format!("window {next} failed");
                if backoff.pause(&what, &e).await.is_break() {
                    break;
                }
                // A window that closed long ago is skipped, as below.
                next = next.max((block / blocks).saturating_sub(1));
                continue;
            }
        };
        watch.counters.window(&outcome);
        log_outcome(next, &outcome);
        if let Some(page) = page.as_deref_mut() {
            page.show(chain, validator.netuid(), &outcome).await;
        }
        // A validator that fell behind skips to the last closed window.
        next = (next + 1).max(block / blocks - 1);
    }
}

/// What the scoring loop reads and counts.
struct Watch<'a> {
    validator: &'a Validator<AnyChain>,
    chain: &'a AnyChain,
    counters: &'a validator::metrics::Metrics,
}

/// The validator's live page.
struct Page {
    dashboard: Arc<Dashboard>,
    feed: LocalFeed,
}

impl Page {
    async fn serve(addr: &str, engine: &TaskEngine) -> anyhow::Result<Self> {
        let view = View {
            title: format!("{}: validator", engine.spec().task.name),
            loss_floor: engine.loss_floor(),
            ..View::default()
        };
        let (dashboard, at) = validator::dashboard::spawn(addr, view)
            .await
            .with_context(|| format!("cannot serve the dashboard at {addr}"))?;
        tracing::info!(%at, "dashboard");
        Ok(Self {
            dashboard,
            feed: LocalFeed::default(),
        })
    }

    /// Shows a scored window: the metagraph now with this validator's results, the loss of the
    /// window's starting checkpoint on its held-out batches, and on a local chain its events.
    async fn show(&mut self, chain: &AnyChain, netuid: u16, outcome: &validator::WindowOutcome) {
        let metagraph = match chain.metagraph(netuid).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "dashboard: cannot read the metagraph");
                return;
            }
        };
        let (events, slashed) = match chain {
            AnyChain::Local(local) => self.feed.read(local, netuid).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "dashboard: cannot read the local chain");
                Default::default()
            }),
            _ => Default::default(),
        };
        let rows = neuron_rows(&metagraph, Some(outcome), &Default::default(), &slashed);
        self.dashboard.update(|view| {
            view.add_window(outcome.window, outcome.base_loss, rows);
            view.add_events(events);
        });
    }
}

/// Scores closed window `window`.
async fn score<C: Chain>(
    validator: &Validator<C>,
    chain: &C,
    window: u64,
    blocks: u64,
) -> anyhow::Result<validator::WindowOutcome> {
    let seed = window_seed(&chain.block_hash(window * blocks).await?);
    Ok(validator.run_window(window, seed).await?)
}

/// Collects the open window's commitments every second, for as long as the task runs.
fn spawn_collector<C: Chain>(
    validator: Validator<C>,
    chain: C,
    counters: Arc<validator::metrics::Metrics>,
    blocks: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1000));
        loop {
            tick.tick().await;
            let window = match chain.current_block().await {
                Ok(block) => block / blocks,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the chain to collect commitments");
                    continue;
                }
            };
            match validator.collect_commitments(window).await {
                Ok(held) => counters.collected(window, held),
                Err(e) => tracing::warn!(window, error = %e, "collecting commitments failed"),
            }
        }
    })
}

/// One line per miner (its score, or why none) and one for the window.
fn log_outcome(window: u64, outcome: &validator::WindowOutcome) {
    for r in &outcome.results {
        match &r.verdict {
            Verdict::Earned => tracing::info!(
                window,
                uid = r.uid,
                score = r.score,
                standard_error = r
                    .usefulness
                    .as_ref()
                    .map(|u| u.standard_error)
                    .unwrap_or(f64::NAN),
                p_value = r
                    .usefulness
                    .as_ref()
                    .map(|u| u.p_value_helps())
                    .unwrap_or(1.0),
                assignment_p = r.assignment.as_ref().map(|a| a.p_value).unwrap_or(1.0),
                weight = r.weight,
                "earned"
            ),
            verdict => tracing::info!(window, uid = r.uid, %verdict, "no score"),
        }
    }
    match &outcome.weights_set {
        Ok((uids, _)) => tracing::info!(
            window,
            base_loss = outcome.base_loss,
            weights = uids.len(),
            committed = outcome.weights_committed,
            "window done"
        ),
        Err(e) => tracing::warn!(window, error = %e, "weights not set"),
    }
}
