//! `subnet localnet`: a whole subnet in one process tree. An embedded local chain in a directory,
//! validators and miners registered and staked on it, each a real gRPC server on 127.0.0.1 (ports
//! chosen by the OS), and a number of windows run end to end: miners sync the checkpoint and train,
//! the window closes on chain, validators probe, score, set weights and aggregate, and the chain runs
//! Yuma at each tempo boundary.

use anyhow::{Context, bail};
use chain_client::{AccountId, BlockClock, Chain, LocalChain, SubnetParams, window_seed};
use miner::{Miner, MinerService};
use std::path::PathBuf;
use std::sync::Arc;
use subxt_signer::sr25519::Keypair;
use task::{CpuBackend, TaskEngine, TaskSpec};
use tokio::net::TcpListener;
use tokio::sync::watch;
use validator::{Validator, ValidatorService, WindowOutcome};

/// One token is 1e9 rao.
pub const RAO_PER_TOKEN: u64 = 1_000_000_000;

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
}

/// One miner's line item in a window.
#[derive(Clone, Debug)]
pub struct MinerLine {
    pub uid: u16,
    /// Mean over validators of this window's usefulness score.
    pub score: f64,
    /// Mean over validators of the weight given this window.
    pub weight: f64,
    pub rejection: Option<String>,
}

#[derive(Clone, Debug)]
pub struct WindowLine {
    pub window: u64,
    /// Held-out loss of the global checkpoint after the window, on a fixed held-out set.
    pub heldout_loss: f64,
    pub miners: Vec<MinerLine>,
    /// Emissions paid so far, in rao.
    pub miner_emission: u64,
    pub validator_emission: u64,
    /// Validators that set (or, under commit-reveal, committed) weights this window.
    pub weights_set: usize,
    /// Earlier commits revealed on chain this window (commit-reveal only).
    pub weights_revealed: usize,
    pub train_tokens_per_s: f64,
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
    pub validator_uids: Vec<u16>,
}

fn dev_key(path: &str) -> anyhow::Result<Keypair> {
    Ok(chain_client::keypair_from_uri(path)?)
}

/// Runs the localnet; `on_window` sees each window's line as soon as it is done.
pub async fn run(
    config: LocalnetConfig,
    mut on_window: impl FnMut(&WindowLine),
) -> anyhow::Result<LocalnetReport> {
    if config.miners == 0 || config.validators == 0 {
        bail!(
            "a localnet needs at least one miner and one validator (got --miners {} --validators {})",
            config.miners,
            config.validators
        );
    }
    let temp;
    let dir = match &config.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir.clone()
        }
        None => {
            temp = tempfile::tempdir().context("cannot create a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let chain_path = dir.join("chain.sqlite");
    if chain_path.exists() {
        bail!(
            "{} already holds a chain; pass another --dir or remove it",
            chain_path.display()
        );
    }
    let chain = LocalChain::open_or_create(&chain_path, BlockClock::Manual, 0x5EED)?;
    let engine = Arc::new(TaskEngine::new(config.task.clone()));
    let spec = engine.spec().clone();
    let blocks = spec.window.blocks;

    // The subnet: one epoch per window, weights once per window.
    let owner = dev_key("//localnet//owner")?;
    let params = SubnetParams {
        tempo: blocks,
        weights_rate_limit: blocks,
        min_allowed_weights: 1,
        max_allowed_validators: config.validators as u16,
        commit_reveal_weights_enabled: config.commit_reveal,
        weights_version_key: spec.task.version,
        ..SubnetParams::default()
    };
    let netuid = chain.create_subnet(AccountId::from(&owner), params)?;

    let register = |role: &str, i: usize, stake: u64| -> anyhow::Result<(Keypair, u16)> {
        let coldkey = dev_key(&format!("//localnet//{role}-{i}"))?;
        let hotkey = dev_key(&format!("//localnet//{role}-{i}//hotkey"))?;
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
    let mut validator_keys = Vec::new();
    for i in 0..config.validators {
        validator_keys.push(register(
            "validator",
            i,
            (1000 - 100 * i as u64 % 900) * RAO_PER_TOKEN,
        )?);
    }
    let mut miner_keys = Vec::new();
    for i in 0..config.miners {
        miner_keys.push(register("miner", i, 0)?);
    }
    // Permits are granted at an epoch: run one before the first window.
    chain.advance_blocks(blocks)?;
    chain.metagraph(netuid).await?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shutdown = || {
        let mut rx = shutdown_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let mut servers = Vec::new();
    let genesis = engine.genesis();
    let mut validators = Vec::new();
    for (i, (hotkey, _)) in validator_keys.iter().enumerate() {
        // Each validator keeps its replay log in the directory: `subnet replay DIR/validator-I`.
        let data = validator::DataDir::open(validator_dir(&dir, i), &spec.canonical_toml())?;
        let v = Validator::with_store(
            chain.clone(),
            netuid,
            hotkey.clone(),
            engine.clone(),
            genesis.clone(),
            0,
            data,
        )?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        chain
            .serve_axon(hotkey, netuid, listener.local_addr()?)
            .await?;
        servers.push(tokio::spawn(
            ValidatorService::new(v.clone()).serve(listener, shutdown()),
        ));
        validators.push(v);
    }
    let mut miners = Vec::new();
    for (hotkey, _) in &miner_keys {
        let m = Miner::new(chain.clone(), netuid, hotkey.clone(), engine.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        chain
            .serve_axon(hotkey, netuid, listener.local_addr()?)
            .await?;
        servers.push(tokio::spawn(
            MinerService::new(m.clone()).serve(listener, shutdown()),
        ));
        miners.push(m);
    }

    // A fixed held-out set for the loss curve, separate from the validators' secret eval batches.
    let report_batches = Arc::new(engine.heldout_batches(0xC0FFEE, 8));
    let heldout_loss = |params: Arc<Vec<f32>>| {
        let (engine, batches) = (engine.clone(), report_batches.clone());
        async move {
            let losses = tokio::task::spawn_blocking(move || {
                engine.losses::<CpuBackend>(&Default::default(), &params, &batches)
            })
            .await?;
            anyhow::Ok(losses.iter().map(|&l| l as f64).sum::<f64>() / losses.len() as f64)
        }
    };
    let initial_loss = heldout_loss(genesis.params.clone()).await?;
    let miner_uids: Vec<u16> = miner_keys.iter().map(|k| k.1).collect();
    let validator_uids: Vec<u16> = validator_keys.iter().map(|k| k.1).collect();

    let mut lines = Vec::new();
    for window in 0..config.windows {
        let start_block = chain.current_block().await?;
        let seed = window_seed(&chain.block_hash(start_block).await?);
        let training = miners.iter().map(|m| async move {
            m.sync_checkpoint().await?;
            m.train_window(window, seed).await
        });
        let reports = futures::future::join_all(training).await;
        let mut tokens_per_s = 0.0;
        for report in reports {
            match report {
                Ok(r) => tokens_per_s += r.tokens_per_second(),
                Err(e) => tracing::warn!(window, error = %e, "a miner did not train this window"),
            }
        }
        chain.advance_blocks(blocks)?;
        let outcomes: Vec<WindowOutcome> =
            futures::future::try_join_all(validators.iter().map(|v| v.run_window(window, seed)))
                .await?;
        let (checkpoint, _) = validators[0].checkpoint();
        let loss = heldout_loss(checkpoint.params.clone()).await?;
        let metagraph = chain.metagraph(netuid).await?;
        let emission_of = |uids: &[u16]| {
            uids.iter()
                .filter_map(|u| metagraph.by_uid(*u))
                .map(|n| n.total_emission)
                .sum::<u64>()
        };
        let per_miner = miner_uids
            .iter()
            .map(|&uid| {
                let results: Vec<_> = outcomes
                    .iter()
                    .filter_map(|o| o.results.iter().find(|r| r.uid == uid))
                    .collect();
                let n = results.len().max(1) as f64;
                MinerLine {
                    uid,
                    score: results.iter().map(|r| r.score).sum::<f64>() / n,
                    weight: results.iter().map(|r| r.weight).sum::<f64>() / n,
                    rejection: results
                        .iter()
                        .find_map(|r| r.rejection.as_ref().map(|x| x.to_string())),
                }
            })
            .collect();
        let line = WindowLine {
            window,
            heldout_loss: loss,
            miners: per_miner,
            miner_emission: emission_of(&miner_uids),
            validator_emission: emission_of(&validator_uids),
            weights_set: outcomes.iter().filter(|o| o.weights_set.is_ok()).count(),
            weights_revealed: outcomes
                .iter()
                .flat_map(|o| &o.reveals)
                .filter(|r| r.1.is_ok())
                .count(),
            train_tokens_per_s: tokens_per_s,
        };
        on_window(&line);
        lines.push(line);
    }
    let _ = shutdown_tx.send(true);
    for server in servers {
        server
            .await
            .context("a server task panicked")?
            .context("a server failed")?;
    }
    Ok(LocalnetReport {
        initial_loss,
        loss_floor: engine.loss_floor(),
        entropy_rate: engine.markov().map(|c| c.entropy_rate()),
        windows: lines,
        chain_path,
        netuid,
        miner_uids,
        validator_uids,
    })
}

/// The line `subnet localnet` prints for a window.
pub fn format_line(line: &WindowLine) -> String {
    let miners: Vec<String> = line
        .miners
        .iter()
        .map(|m| match &m.rejection {
            Some(reason) if m.score == 0.0 => {
                format!("uid {} score 0 weight {:.3} ({reason})", m.uid, m.weight)
            }
            _ => format!("uid {} score {:.4} weight {:.3}", m.uid, m.score, m.weight),
        })
        .collect();
    let reveals = if line.weights_revealed > 0 {
        format!(" | {} earlier commit(s) revealed", line.weights_revealed)
    } else {
        String::new()
    };
    format!(
        "window {:>3} | held-out loss {:.4} | {}{reveals} | emissions: miners {:.3} τ, validators {:.3} τ",
        line.window,
        line.heldout_loss,
        miners.join(", "),
        line.miner_emission as f64 / RAO_PER_TOKEN as f64,
        line.validator_emission as f64 / RAO_PER_TOKEN as f64,
    )
}
