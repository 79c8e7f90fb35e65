//! `subnet localnet`: a whole subnet on this machine, one line per window, and its report.

use super::load_task;
use anyhow::Context;
use std::path::PathBuf;
use subnet_cli::localnet::{self, LocalnetConfig};

/// Run a whole subnet on this machine: a local chain, miners and validators over gRPC, for a
/// number of windows, printing one line per window.
#[derive(clap::Args)]
pub struct Args {
    /// Number of honest miners.
    #[arg(long, env = "SUBNET_MINERS", default_value_t = 4)]
    pub miners: usize,
    /// Number of validators (of different stake; the one with the most leads the model).
    #[arg(long, env = "SUBNET_VALIDATORS", default_value_t = 2)]
    pub validators: usize,
    /// Windows to run before exiting.
    #[arg(long, env = "SUBNET_WINDOWS", default_value_t = 20)]
    pub windows: u64,
    /// Directory for the chain file (a fresh temporary one if not given).
    #[arg(long, env = "SUBNET_DIR")]
    pub dir: Option<PathBuf>,
    /// Task file (the built-in localnet task if not given).
    #[arg(long, env = "SUBNET_TASK")]
    pub task: Option<PathBuf>,
    /// Run the subnet with commit-reveal, as subtensor does today (version 4): validators commit
    /// each window's weights encrypted to a round of the chain's randomness beacon, and the
    /// chain opens and applies them in the next epoch.
    #[arg(long, env = "SUBNET_COMMIT_REVEAL")]
    pub commit_reveal: bool,
    /// Misbehaving miners to add beside the honest ones, comma-separated (`none` for an
    /// honest-only run): random, nan, copier, noisy-copier, free-rider, stale, amplified,
    /// scaled, shrunk, lazy, silent, heldout, mixer, residual-forger, sybil, splitter, staller,
    /// dropout, launderer, group-picker, pusher, public-trainer (test-only modes of the miner;
    /// `miner run` has none of them). Default: lazy,copier (lazy,random with --processes).
    #[arg(long, env = "SUBNET_ADVERSARIES", value_parser = parse_adversaries)]
    pub adversaries: Option<Adversaries>,
    /// Keep the temporary run directory (chain, validators' records, report) when no --dir is
    /// given.
    #[arg(long)]
    pub keep: bool,
    /// Audit each miner's window with probability one in this many (the task's
    /// scoring.audit_period if not given; 1 audits every miner every window).
    #[arg(long, env = "SUBNET_AUDIT_PERIOD")]
    pub audit_period: Option<u64>,
    /// Seed of the local chain (its block hashes seed every window's assignment).
    #[arg(long, env = "SUBNET_SEED", default_value_t = localnet::DEFAULT_SEED)]
    pub seed: u64,
    /// Run every validator and miner as a separate process of the real `validator` and `miner`
    /// programs (found beside this one) on the shared chain file, with wallets in the run
    /// directory and each process's log in its `logs/`. The copier, noisy-copier and mixer
    /// modes read other miners' work inside one process and are not available here.
    #[arg(long)]
    pub processes: bool,
    /// The most parameters of a group each honest miner holds, comma-separated in miner order
    /// (0: any; miners past the list hold any). Only matters for a task with parameter groups.
    #[arg(long, value_delimiter = ',')]
    pub group_capacities: Vec<u64>,
    /// Serve a live page of the run at this address (for example 127.0.0.1:8080): the
    /// metagraph, the held-out loss and weight shares by window, rejections and chain events. It
    /// keeps serving after the last window, until Ctrl-C.
    #[arg(long)]
    pub dashboard: Option<String>,
}

/// Adversary modes from `--adversaries` (`none`: no adversary).
#[derive(Clone, Debug)]
pub struct Adversaries(Vec<miner::adversary::Adversary>);

fn parse_adversaries(list: &str) -> Result<Adversaries, String> {
    if list.trim().is_empty() || list == "none" {
        return Ok(Adversaries(Vec::new()));
    }
    list.split(',')
        .map(|a| a.trim().parse())
        .collect::<Result<_, _>>()
        .map(Adversaries)
}

/// The adversaries asked for, or the default set: lazy and copier (lazy and random with
/// --processes, where a copier cannot read the others' work).
fn adversaries_or_default(
    asked: Option<Adversaries>,
    processes: bool,
) -> Vec<miner::adversary::Adversary> {
    let Adversaries(list) = match asked {
        Some(list) => list,
        None if processes => parse_adversaries("lazy,random").expect("known modes"),
        None => parse_adversaries("lazy,copier").expect("known modes"),
    };
    list
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let adversaries = adversaries_or_default(args.adversaries, args.processes);
    let task = load_task(args.task.as_ref())?;
    let engine = ::task::TaskEngine::new(task.clone());
    let (miners, validators, windows) = (args.miners, args.validators, args.windows);
    announce(&task, &engine, miners, validators, windows, &adversaries);
    // The run directory: --dir, or a temporary one (kept with --keep).
    let temp = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("cannot create a temporary directory")?),
    };
    let run_dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.as_ref().expect("made above").path().to_path_buf());
    let task_name = task.task.name.clone();
    let dashboard = serve_dashboard(args.dashboard.as_deref()).await?;
    let config = LocalnetConfig {
        miners,
        validators,
        windows,
        dir: Some(run_dir.clone()),
        task,
        commit_reveal: args.commit_reveal,
        adversaries,
        audit_period: args.audit_period,
        seed: args.seed,
        group_capacities: args.group_capacities,
        dashboard: dashboard.as_ref().map(|d| d.0.clone()),
    };
    let print = |line: &localnet::WindowLine| {
        for row in localnet::format_table(line, engine.loss_floor()) {
            println!("{row}");
        }
    };
    let report = if args.processes {
        let bins = subnet_cli::processes::Binaries::beside_this_program()?;
        subnet_cli::processes::run(config, &bins, print).await?
    } else {
        localnet::run(config, print).await?
    };
    let run = subnet_cli::report::build(&task_name, &report)?;
    subnet_cli::report::write(&run, &report, &run_dir)?;
    for line in subnet_cli::report::summary(&run) {
        println!("{line}");
    }
    println!(
        "done; {}",
        keep_or_remove(args.dir, temp, run_dir, args.keep)
    );
    if let Some((_, at)) = dashboard {
        println!("the dashboard stays at http://{at}/ until Ctrl-C");
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}

/// The live page at `addr`, when one is asked for, and where it listens.
async fn serve_dashboard(
    addr: Option<&str>,
) -> anyhow::Result<
    Option<(
        std::sync::Arc<validator::dashboard::Dashboard>,
        std::net::SocketAddr,
    )>,
> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let (dashboard, at) = validator::dashboard::spawn(addr, Default::default())
        .await
        .with_context(|| format!("cannot serve the dashboard at {addr}"))?;
    println!("dashboard: http://{at}/");
    Ok(Some((dashboard, at)))
}

/// Removes the temporary run directory unless it is to be kept, and says what became of it.
fn keep_or_remove(
    dir: Option<PathBuf>,
    temp: Option<tempfile::TempDir>,
    run_dir: PathBuf,
    keep: bool,
) -> String {
    match (dir, temp) {
        (None, Some(temp)) if !keep => {
            drop(temp);
            "the temporary run directory is removed (--keep or --dir DIR keeps the chain, the validators' records and report.json/report.png)".to_string()
        }
        (_, temp) => {
            let kept = temp.map(|t| t.keep()).unwrap_or(run_dir);
            format!(
                "run directory {}: report.json, report.png, the chain, and each validator's records (`subnet replay {}`)",
                kept.display(),
                localnet::validator_dir(&kept, 0).display()
            )
        }
    }
}

/// The run's first lines: what runs, and the corpus's floor where it is known.
fn announce(
    task: &::task::TaskSpec,
    engine: &::task::TaskEngine,
    miners: usize,
    validators: usize,
    windows: u64,
    adversaries: &[miner::adversary::Adversary],
) {
    println!(
        "localnet: task {} ({} parameters), {miners} honest miners{}, {validators} validator(s), {windows} windows",
        task.task.name,
        engine.num_params(),
        if adversaries.is_empty() {
            String::new()
        } else {
            let names: Vec<String> = adversaries.iter().map(|a| a.to_string()).collect();
            format!(
                " and {} adversaries ({})",
                adversaries.len(),
                names.join(", ")
            )
        }
    );
    if let (Some(markov), Some(floor)) = (engine.markov(), engine.loss_floor()) {
        println!(
            "corpus entropy rate {:.4} nats/byte; lowest reachable loss on {}-byte sequences {floor:.4}",
            markov.entropy_rate(),
            task.targets_per_example(),
        );
    }
}
