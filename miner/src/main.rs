//! `miner run`: train the assigned shard each window and serve the signed pseudo-gradient.

use anyhow::Context;
use chain_client::wallet::choose_hotkey;
use chain_client::{AnyChain, Chain, open_chain, window_seed};
use clap::{Parser, Subcommand};
use miner::progress::TerminalBar;
use miner::{Miner, MinerService};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subnet_proto::backoff::Backoff;
use subxt_signer::sr25519::Keypair;
use task::{TaskEngine, TaskSpec};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

#[derive(Parser)]
#[command(
    name = "miner",
    version,
    about = "Train your shard of the subnet's model and serve the gradient"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Join a subnet: serve the axon, then train and serve every window until Ctrl-C.
    Run(Box<RunArgs>),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Task file shared with the validators.
    #[arg(long, env = "MINER_TASK")]
    task: PathBuf,
    /// The chain: `local:PATH` for a local chain file, `ws://HOST:PORT` (or `wss://`) for a
    /// subtensor node.
    #[arg(long, env = "MINER_CHAIN")]
    chain: String,
    #[arg(long, env = "MINER_NETUID")]
    netuid: u16,
    /// Bittensor wallet holding the hotkey (`~/.bittensor/wallets/NAME`, or under --wallet-path).
    #[arg(long, env = "MINER_WALLET")]
    wallet: Option<String>,
    /// Hotkey name within the wallet (`hotkeys/NAME`).
    #[arg(long, env = "MINER_HOTKEY", default_value = "default")]
    hotkey: String,
    /// Directory of Bittensor wallets.
    #[arg(long, env = "BT_WALLET_PATH")]
    wallet_path: Option<PathBuf>,
    /// Hotkey as a secret URI instead of a wallet: a dev URI such as `//miner-1` for local
    /// chains, or a mnemonic.
    #[arg(long, env = "MINER_HOTKEY_URI", conflicts_with = "wallet")]
    hotkey_uri: Option<String>,
    /// Where to train: cpu, cuda:N (a build with --features cuda) or wgpu (--features wgpu).
    #[arg(long, env = "MINER_DEVICE", default_value = "cpu")]
    device: task::Device,
    /// Serve Prometheus metrics (windows trained, tokens/s, gradients served, requests rejected
    /// by reason) on this address.
    #[arg(long, env = "MINER_METRICS")]
    metrics: Option<String>,
    /// Address the gRPC server listens on; its port is announced on chain.
    #[arg(long, env = "MINER_LISTEN", default_value = "127.0.0.1:0")]
    listen: String,
    /// Serve TLS with this PEM certificate chain (with --tls-key); peers must trust its issuer.
    #[arg(long, env = "MINER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "MINER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Reach peers over TLS, trusting the certificates this PEM authority issued (their
    /// certificates must name their axon's IP address).
    #[arg(long, env = "MINER_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Directory for state that outlives a restart (the compression residual), and for the
    /// segment states audits ask for (kept in memory without it).
    #[arg(long, env = "MINER_DATA")]
    data: Option<PathBuf>,
    /// Progress display: a bar on terminals (auto), or log lines (plain).
    #[arg(long, env = "MINER_PROGRESS", default_value = "auto")]
    progress: ProgressMode,
    /// The most parameters of a group this machine can train (0: any). Where the task cuts the
    /// model into parameter groups (`shards.groups`), the miner is only given groups of at most
    /// this size; `subnet task check` prints each group's size and memory need.
    #[arg(long, env = "MINER_MAX_GROUP_PARAMS", default_value_t = 0)]
    max_group_params: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ProgressMode {
    Auto,
    Plain,
}

/// Estimates when the current window ends from how fast blocks have come since the miner started.
struct BlockRate {
    first: Option<(Instant, u64)>,
}

impl BlockRate {
    fn observe(&mut self, block: u64) {
        if self.first.is_none() {
            self.first = Some((Instant::now(), block));
        }
    }

    fn window_end(&self, block: u64, end_block: u64) -> Option<Instant> {
        let (start, first) = self.first?;
        if block <= first {
            return None;
        }
        let per_block = start.elapsed().as_secs_f64() / (block - first) as f64;
        Some(
            Instant::now()
                + Duration::from_secs_f64(per_block * end_block.saturating_sub(block) as f64),
        )
    }
}

/// mimalloc, holding freed memory through a window (`task::allocator`): training allocates and
/// frees a tensor per operation, and returning that memory to the kernel between steps cost a
/// measured 18-34% of tiny-lm's CPU training throughput (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: task::allocator::MiMalloc = task::allocator::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    task::allocator::hold_freed_memory();
    let Command::Run(args) = Cli::parse().command;
    run(*args).await
}

/// Mines until Ctrl-C.
async fn run(args: RunArgs) -> anyhow::Result<()> {
    subnet_proto::tls::configure_from_files(
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
        args.tls_ca.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    let bar = (args.progress == ProgressMode::Auto && std::io::stderr().is_terminal())
        .then(TerminalBar::stderr);
    init_logging(bar.as_ref());
    let engine = Arc::new(TaskEngine::new(TaskSpec::from_file(&args.task)?));
    let blocks = engine.spec().window.blocks;
    let chain = open_chain(&args.chain).await?;
    let hotkey = choose_hotkey(
        args.hotkey_uri.as_deref(),
        args.wallet.as_deref(),
        &args.hotkey,
        args.wallet_path.as_deref(),
    )?;
    check_group_capacity(&engine, args.max_group_params)?;
    let window_end: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut miner = open_miner(&args, chain.clone(), hotkey.clone(), engine)?;
    if let Some(bar) = &bar {
        miner = miner.with_progress(draw_progress(bar.clone(), window_end.clone()));
    }
    let device = args.device;
    tracing::info!(
        %device,
        backend = %device.backend(),
        cpu = %task::device::cpu_arithmetic(),
        "training device (audits compare bits with a validator whose CPU backend is the same)"
    );
    miner.uid().await?;
    if let Some(addr) = &args.metrics {
        let metrics = miner.metrics().clone();
        let addr =
            subnet_proto::metrics_http::spawn(addr, Arc::new(move || metrics.render())).await?;
        tracing::info!(%addr, "metrics");
    }
    let (stop_tx, server) = serve(&miner, &chain, &args, &hotkey).await?;
    // A failed chain read or window is logged and tried again after a growing pause; the miner
    // keeps going.
    train_windows(&miner, &chain, blocks, bar.as_ref(), &window_end).await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    server.await??;
    Ok(())
}

/// The miner, keeping its residual and segment states under --data when given.
fn open_miner(
    args: &RunArgs,
    chain: AnyChain,
    hotkey: Keypair,
    engine: Arc<TaskEngine>,
) -> anyhow::Result<Miner<AnyChain>> {
    let mut miner = Miner::on_device(chain, args.netuid, hotkey, engine, args.device)
        .with_group_capacity(args.max_group_params);
    if let Some(dir) = &args.data {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        miner = miner
            .with_residual_file(dir.join("residual.bin"))?
            .with_state_dir(&dir.join("segments"))?;
    }
    Ok(miner)
}

/// The miner's gRPC server, running.
type Server = tokio::task::JoinHandle<Result<(), tonic::transport::Error>>;

/// Announces the miner's axon on chain and serves its gRPC until `true` is sent.
async fn serve(
    miner: &Miner<AnyChain>,
    chain: &AnyChain,
    args: &RunArgs,
    hotkey: &Keypair,
) -> anyhow::Result<(tokio::sync::watch::Sender<bool>, Server)> {
    let listen = &args.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    chain.serve_axon(hotkey, args.netuid, addr).await?;
    let netuid = args.netuid;
    tracing::info!(%addr, hotkey = %miner.hotkey(), netuid, "serving");
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(
        MinerService::new(miner.clone()).serve(listener, async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        }),
    );
    Ok((stop_tx, server))
}

/// Logs to stderr, or through the progress bar so that the two do not tear each other's lines.
fn init_logging(bar: Option<&TerminalBar>) {
    let writer = match bar {
        Some(bar) => BoxMakeWriter::new(bar.clone()),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(writer)
        .init();
}

/// Draws the training progress on the bar, with the time left before the window closes.
fn draw_progress(bar: TerminalBar, window_end: Arc<Mutex<Option<Instant>>>) -> miner::ProgressHook {
    Arc::new(move |p| {
        let left = window_end
            .lock()
            .expect("window end lock")
            .map(|end| end.saturating_duration_since(Instant::now()));
        bar.show(p, left);
    })
}

/// With `--max-group-params`, at least one of the task's parameter groups must fit.
fn check_group_capacity(engine: &TaskEngine, max_group_params: u64) -> anyhow::Result<()> {
    if max_group_params == 0 {
        return Ok(());
    }
    let fits = engine
        .groups()
        .groups()
        .iter()
        .filter(|g| g.len() as u64 <= max_group_params)
        .count();
    anyhow::ensure!(
        fits > 0,
        "--max-group-params {max_group_params}: no parameter group of task {} is that small (`subnet task check` lists them)",
        engine.spec().task.name
    );
    tracing::info!(
        max_group_params,
        groups = fits,
        "training only the parameter groups that fit"
    );
    Ok(())
}

/// What the training loop does next.
enum Next {
    Wait,
    Stop,
    Train { window: u64, seed: u64 },
}

/// Where the training loop stands: how fast blocks come, the last window trained, the pause after
/// failures, and the window's estimated end (for the progress bar).
struct Pacer<'a> {
    blocks: u64,
    rate: BlockRate,
    last_trained: Option<u64>,
    backoff: Backoff,
    window_end: &'a Mutex<Option<Instant>>,
}

impl Pacer<'_> {
    /// The window to train now, if one is ready: the open window, not yet trained, with its seed
    /// read and the checkpoint it trains from synced.
    async fn next<C: Chain>(&mut self, miner: &Miner<C>, chain: &C) -> Next {
        let block = match chain.current_block().await {
            Ok(block) => block,
            Err(e) => return self.pause("cannot read the chain", &e).await,
        };
        self.rate.observe(block);
        let window = block / self.blocks;
        *self.window_end.lock().expect("window end lock") =
            self.rate.window_end(block, (window + 1) * self.blocks);
        if self.last_trained.is_some_and(|w| w >= window) {
            return Next::Wait;
        }
        let seed = match chain.block_hash(window * self.blocks).await {
            Ok(hash) => window_seed(&hash),
            Err(e) => return self.pause("cannot read the window's block hash", &e).await,
        };
        match miner.sync_checkpoint().await {
            // The validators are still aggregating the previous window: wait for its checkpoint, or
            // the gradient would be refused as trained from the wrong checkpoint.
            Ok(synced) if synced < window => Next::Wait,
            Ok(_) => Next::Train { window, seed },
            Err(e) => {
                tracing::warn!(window, error = %e, "cannot sync the checkpoint yet; retrying");
                Next::Wait
            }
        }
    }

    async fn pause(&mut self, what: &str, error: &dyn std::fmt::Display) -> Next {
        if self.backoff.pause(what, error).await.is_break() {
            Next::Stop
        } else {
            Next::Wait
        }
    }
}

/// Trains each window once its checkpoint is synced, until ctrl-c.
async fn train_windows<C: Chain>(
    miner: &Miner<C>,
    chain: &C,
    blocks: u64,
    bar: Option<&TerminalBar>,
    window_end: &Mutex<Option<Instant>>,
) {
    let mut pacer = Pacer {
        blocks,
        rate: BlockRate { first: None },
        last_trained: None,
        backoff: Backoff::default(),
        window_end,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {}
        }
        let (window, seed) = match pacer.next(miner, chain).await {
            Next::Wait => continue,
            Next::Stop => break,
            Next::Train { window, seed } => (window, seed),
        };
        let training = miner.train_window(window, seed);
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            report = training => {
                if let Some(bar) = bar {
                    bar.clear();
                }
                let report = match report {
                    Ok(report) => report,
                    Err(e) => {
                        let what = format!("window {window} failed");
                        if pacer.backoff.pause(&what, &e).await.is_break() {
                            break;
                        }
                        continue;
                    }
                };
                pacer.backoff.succeeded();
                if chain.current_block().await.is_ok_and(|now| now / blocks > window) {
                    tracing::warn!(window, "finished after the window closed; validators may count it late");
                }
                tracing::info!(window, loss = report.last_loss, tokens_per_s = report.tokens_per_second() as u64, "window served");
            }
        }
        pacer.last_trained = Some(window);
    }
}
