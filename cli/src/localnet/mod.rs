//! `subnet localnet`: a whole subnet in one process tree. An embedded local chain in a directory,
//! validators and miners registered and staked on it, each a real gRPC server on 127.0.0.1 (ports
//! chosen by the OS), and a number of windows run end to end: miners sync the lead validator's
//! checkpoint and train (or misbehave, for the adversaries asked for), validators collect their
//! commitments, the window closes on chain, validators fetch the work, score it, set weights and
//! aggregate, and the chain runs Yuma at each tempo boundary.
//!
//! `prepare` and `run` are longer than most: each is the localnet's script for its part (the
//! chain's set-up, then the windows), read top to bottom.

mod lines;
mod nodes;
mod page;

pub(crate) use lines::window_line;
pub use lines::{MinerLine, WindowLine, format_line, format_table};
pub(crate) use nodes::LOCAL_AUDIT_BUDGET;
use nodes::{Crowd, Net, start_miners, start_validators, train_round};
pub(crate) use page::Watch;

use crate::chain_admin::RAO_PER_TOKEN;
use anyhow::{Context, bail};
use chain_client::{AccountId, BlockClock, Chain, LocalChain, SubnetParams, window_seed};
use miner::adversary::{self, Adversary, Peers};
use miner::{Miner, MinerService};
use std::path::PathBuf;
use std::sync::Arc;
use subxt_signer::sr25519::Keypair;
use task::{CpuBackend, TaskEngine, TaskSpec};
use tokio::net::TcpListener;
use tokio::sync::watch;
use validator::{Validator, ValidatorService, WindowOutcome};

#[derive(Clone, Debug)]
pub struct LocalnetConfig {
    pub miners: usize,
    pub validators: usize,
    pub windows: u64,
    /// Where the chain file goes; a fresh temporary directory when None.
    pub dir: Option<PathBuf>,
    pub task: TaskSpec,
    /// Commit-reveal v2: weights are committed in a window and revealed in the next.
    pub commit_reveal: bool,
    /// Misbehaving miners registered after the honest ones (test-only modes of the miner).
    pub adversaries: Vec<Adversary>,
    /// Overrides the task's audit period for every validator (`Some(1)`: audit every miner every
    /// window).
    pub audit_period: Option<u64>,
    /// Seed of the local chain's block hashes, hence of every window's seed and assignment.
    pub seed: u64,
    /// The most parameters of a group each honest miner holds, in order (0 or missing: any).
    /// Where the task cuts the model into parameter groups, a miner is only given groups that fit.
    pub group_capacities: Vec<u64>,
    /// A live page to show each window on.
    pub dashboard: Option<Arc<validator::dashboard::Dashboard>>,
}

impl LocalnetConfig {
    /// `miners` honest miners and `validators` validators on `task`, nothing else.
    pub fn honest(task: TaskSpec, miners: usize, validators: usize, windows: u64) -> Self {
        Self {
            miners,
            validators,
            windows,
            dir: None,
            task,
            commit_reveal: false,
            adversaries: Vec::new(),
            audit_period: None,
            seed: DEFAULT_SEED,
            group_capacities: Vec::new(),
            dashboard: None,
        }
    }
}

/// The localnet's chain seed unless `--seed` says otherwise.
pub const DEFAULT_SEED: u64 = 0x5EED;

/// What a miner of the localnet is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MinerKind {
    Honest,
    Adversary(Adversary),
}

impl std::fmt::Display for MinerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            MinerKind::Honest => "honest",
            MinerKind::Adversary(a) => a.name(),
        })
    }
}

/// Validator `i`'s data directory (its replay log and blobs) in the localnet directory `dir`.
pub fn validator_dir(dir: &std::path::Path, i: usize) -> PathBuf {
    dir.join(format!("validator-{i}"))
}

#[derive(Clone, Debug)]
pub struct LocalnetReport {
    pub initial_loss: f64,
    /// Known for the synthetic corpus only.
    pub loss_floor: Option<f64>,
    pub entropy_rate: Option<f64>,
    pub windows: Vec<WindowLine>,
    /// The chain file; the validators' data directories are beside it (`validator_dir`).
    pub chain_path: PathBuf,
    pub netuid: u16,
    pub miner_uids: Vec<u16>,
    pub miner_kinds: Vec<MinerKind>,
    pub validator_uids: Vec<u16>,
    /// Every validator's outcome of every window.
    pub outcomes: Vec<Vec<WindowOutcome>>,
}

impl LocalnetReport {
    /// The chain's block at the last window's line (0 before the first).
    pub(crate) fn last_block(&self) -> u64 {
        self.windows.last().map_or(0, |l| l.block)
    }

    /// Every validator's result for miner `uid` in `window`.
    pub fn results(&self, uid: u16, window: u64) -> impl Iterator<Item = &validator::MinerResult> {
        self.outcomes
            .iter()
            .flatten()
            .filter(move |o| o.window == window)
            .filter_map(move |o| o.result(uid))
    }

    /// Adds a window: its line and every validator's outcome, in the validators' order.
    pub(crate) fn push(&mut self, line: WindowLine, outcomes: Vec<WindowOutcome>) {
        self.windows.push(line);
        for (all, outcome) in self.outcomes.iter_mut().zip(outcomes) {
            all.push(outcome);
        }
    }

    /// The stake each miner holds at the end (rao), by uid.
    pub fn final_stakes(&self) -> Vec<(u16, MinerKind, u64)> {
        let last = self.windows.last();
        self.miner_uids
            .iter()
            .zip(&self.miner_kinds)
            .map(|(&uid, &kind)| {
                let stake = last
                    .and_then(|w| w.miners.iter().find(|m| m.uid == uid))
                    .map_or(0, |m| m.stake);
                (uid, kind, stake)
            })
            .collect()
    }
}

fn dev_key(path: &str) -> anyhow::Result<Keypair> {
    Ok(chain_client::keypair_from_uri(path)?)
}

/// A subnet ready to run: the chain with its subnet, every participant registered (validators
/// staked), and the validators' permits granted.
pub(crate) struct Prepared {
    pub chain: LocalChain,
    pub chain_path: PathBuf,
    pub netuid: u16,
    pub engine: Arc<TaskEngine>,
    /// Hotkeys and uids, the validators in decreasing stake.
    pub validators: Vec<(Keypair, u16)>,
    pub miners: Vec<(Keypair, u16)>,
    pub kinds: Vec<MinerKind>,
    pub first_window: u64,
}

impl Prepared {
    /// A report of this subnet with no window in it yet.
    pub fn report(&self, initial_loss: f64) -> LocalnetReport {
        LocalnetReport {
            initial_loss,
            loss_floor: self.engine.loss_floor(),
            entropy_rate: self.engine.markov().map(|c| c.entropy_rate()),
            windows: Vec::new(),
            chain_path: self.chain_path.clone(),
            netuid: self.netuid,
            miner_uids: self.miner_uids(),
            miner_kinds: self.kinds.clone(),
            validator_uids: self.validator_uids(),
            outcomes: vec![Vec::new(); self.validators.len()],
        }
    }

    pub fn miner_uids(&self) -> Vec<u16> {
        self.miners.iter().map(|k| k.1).collect()
    }

    pub fn validator_uids(&self) -> Vec<u16> {
        self.validators.iter().map(|k| k.1).collect()
    }
}

/// Checks the configuration and makes the run directory: `config.dir`, or a temporary one (the
/// second value, removed when dropped).
pub(crate) fn run_dir(
    config: &LocalnetConfig,
) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    if config.miners + config.adversaries.len() == 0 || config.validators == 0 {
        bail!(
            "a localnet needs at least one miner and one validator (got --miners {} --validators {})",
            config.miners,
            config.validators
        );
    }
    let (dir, temp) = match &config.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            (dir.clone(), None)
        }
        None => {
            let temp = tempfile::tempdir().context("cannot create a temporary directory")?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    if dir.join("chain.sqlite").exists() {
        bail!(
            "{} already holds a chain; pass another --dir or remove it",
            dir.join("chain.sqlite").display()
        );
    }
    Ok((dir, temp))
}

/// Creates the chain in `dir` and the subnet on it, registers every participant with the
/// (coldkey, hotkey) `keys` gives for its role and index, stakes the validators and runs the epoch
/// that grants their permits.
pub(crate) async fn prepare(
    config: &LocalnetConfig,
    dir: &std::path::Path,
    keys: impl Fn(&str, usize) -> anyhow::Result<(Keypair, Keypair)>,
) -> anyhow::Result<Prepared> {
    let chain_path = dir.join("chain.sqlite");
    let chain = LocalChain::open_or_create(&chain_path, BlockClock::Manual, config.seed)?;
    let engine = Arc::new(TaskEngine::new(config.task.clone()));
    let spec = engine.spec().clone();
    let blocks = spec.window.blocks;

    // The subnet: the parameters `subnet chain create-subnet` gives the task, with a permit for
    // each validator; validators need 100 tokens of stake for a permit, which miners do not reach
    // by earning.
    let owner = dev_key("//localnet//owner")?;
    let params = SubnetParams {
        max_allowed_validators: config.validators as u16,
        ..crate::chain_admin::params_for_window(blocks, spec.task.version, config.commit_reveal)
    };
    let netuid = chain.create_subnet(AccountId::from(&owner), params)?;

    let register = |role: &str, i: usize, stake: u64| -> anyhow::Result<(Keypair, u16)> {
        let (coldkey, hotkey) = keys(role, i)?;
        chain.fund(AccountId::from(&coldkey), 10_000 * RAO_PER_TOKEN)?;
        let uid =
            chain.burned_register(AccountId::from(&coldkey), netuid, AccountId::from(&hotkey))?;
        if stake > 0 {
            chain.add_stake(
                AccountId::from(&coldkey),
                AccountId::from(&hotkey),
                netuid,
                stake,
            )?;
        }
        Ok((hotkey, uid))
    };
    let mut validators = Vec::new();
    for i in 0..config.validators {
        validators.push(register(
            "validator",
            i,
            (1000 - 100 * i as u64 % 900) * RAO_PER_TOKEN,
        )?);
    }
    let kinds: Vec<MinerKind> = std::iter::repeat_n(MinerKind::Honest, config.miners)
        .chain(config.adversaries.iter().map(|a| MinerKind::Adversary(*a)))
        .collect();
    let mut miners = Vec::new();
    for i in 0..kinds.len() {
        miners.push(register("miner", i, 0)?);
    }
    // Permits are granted at an epoch: run one before the first window.
    chain.advance_blocks(blocks)?;
    chain.metagraph(netuid).await?;
    let first_window = spec.window.of_block(chain.current_block().await?);
    Ok(Prepared {
        chain,
        chain_path,
        netuid,
        engine,
        validators,
        miners,
        kinds,
        first_window,
    })
}

/// The dev keys of the in-process localnet: `//localnet//ROLE-I` and its `//hotkey`.
fn dev_keys(role: &str, i: usize) -> anyhow::Result<(Keypair, Keypair)> {
    Ok((
        dev_key(&format!("//localnet//{role}-{i}"))?,
        dev_key(&format!("//localnet//{role}-{i}//hotkey"))?,
    ))
}

/// The loss curve's yardstick: a fixed held-out set, separate from the validators' secret eval
/// batches.
#[derive(Clone)]
pub(crate) struct ReportLoss {
    engine: Arc<TaskEngine>,
    batches: Arc<Vec<task::Batch>>,
}

impl ReportLoss {
    pub fn new(engine: Arc<TaskEngine>) -> Self {
        let batches = Arc::new(engine.heldout_batches(0xC0FFEE, 8));
        Self { engine, batches }
    }

    /// Mean loss of `params` on the set.
    pub async fn of(&self, params: Arc<Vec<f32>>) -> anyhow::Result<f64> {
        let (engine, batches) = (self.engine.clone(), self.batches.clone());
        let losses = tokio::task::spawn_blocking(move || {
            engine.losses::<CpuBackend>(&Default::default(), &params, &batches)
        })
        .await?;
        Ok(losses.iter().map(|&l| l as f64).sum::<f64>() / losses.len() as f64)
    }
}

/// Runs the localnet; `on_window` sees each window's line as soon as it is done.
pub async fn run(
    config: LocalnetConfig,
    mut on_window: impl FnMut(&WindowLine),
) -> anyhow::Result<LocalnetReport> {
    let (dir, _temp) = run_dir(&config)?;
    let prepared = prepare(&config, &dir, dev_keys).await?;
    let report_loss = ReportLoss::new(prepared.engine.clone());
    let genesis = prepared.engine.genesis();
    let mut report = prepared.report(report_loss.of(genesis.params.clone()).await?);
    let Prepared {
        chain,
        netuid,
        engine,
        validators: validator_keys,
        miners: miner_keys,
        kinds,
        first_window,
        ..
    } = prepared;
    let spec = engine.spec().clone();

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown = || {
        let mut rx = shutdown_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let net = Net {
        chain: &chain,
        netuid,
        engine: &engine,
        shutdown: &shutdown,
    };
    let (validators, mut servers) =
        start_validators(&net, &validator_keys, &dir, &genesis, first_window, &config).await?;
    let (miners, miner_servers) = start_miners(&net, &miner_keys, &kinds, &config).await?;
    servers.extend(miner_servers);
    let miner_uids = report.miner_uids.clone();
    let crowd = Crowd::new(&miner_uids, &kinds);
    let mut watch = (config.dashboard.clone()).map(|d| Watch::new(d, &engine, &miner_uids, &kinds));
    let peers_of = |i: usize| crowd.peers_of(&miners, i);

    for window in first_window..first_window + config.windows {
        let start_block = spec.window.first_block(window);
        let seed = window_seed(&chain.block_hash(start_block).await?);
        // While the window is open: miners train (or misbehave) and commit, validators collect.
        let (tokens_per_s, groups) = train_round(&miners, &kinds, &peers_of, window, seed).await;
        futures::future::try_join_all(validators.iter().map(|v| v.collect_commitments(window)))
            .await?;
        // The window closes; now its work is served.
        chain.advance_blocks(spec.window.blocks)?;
        for (i, (m, kind)) in miners.iter().zip(&kinds).enumerate() {
            if let MinerKind::Adversary(a) = kind {
                adversary::after_close(m, *a, &peers_of(i), window);
            }
        }
        let outcomes: Vec<WindowOutcome> =
            futures::future::try_join_all(validators.iter().map(|v| v.run_window(window, seed)))
                .await?;
        let loss = report_loss.of(validators[0].checkpoint().0.params).await?;
        let line = window_line(
            &chain,
            (netuid, report.last_block()),
            (window, loss),
            &outcomes,
            (&report.miner_uids, &kinds),
            &report.validator_uids,
        )
        .await?
        .with_training(tokens_per_s, &groups);
        if let Some(watch) = &mut watch {
            watch.show(&chain, netuid, (window, loss), &outcomes[0])?;
        }
        on_window(&line);
        report.push(line, outcomes);
    }
    let _ = shutdown_tx.send(true);
    for server in servers {
        server
            .await
            .context("a server task panicked")?
            .context("a server failed")?;
    }
    Ok(report)
}
