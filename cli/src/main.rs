//! `subnet`: run a whole local subnet, and (as the project grows) administer the local chain.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use subnet_cli::localnet::{self, LocalnetConfig};
use task::TaskSpec;

#[derive(Parser)]
#[command(
    name = "subnet",
    version,
    about = "A Bittensor-style subnet that trains a model together"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole subnet on this machine: a local chain, miners and validators over gRPC, for a
    /// number of windows, printing one line per window.
    Localnet {
        /// Number of miners.
        #[arg(long, env = "SUBNET_MINERS", default_value_t = 3)]
        miners: usize,
        /// Number of validators.
        #[arg(long, env = "SUBNET_VALIDATORS", default_value_t = 1)]
        validators: usize,
        /// Windows to run before exiting.
        #[arg(long, env = "SUBNET_WINDOWS", default_value_t = 20)]
        windows: u64,
        /// Directory for the chain file (a fresh temporary one if not given).
        #[arg(long, env = "SUBNET_DIR")]
        dir: Option<PathBuf>,
        /// Task file (the built-in localnet task if not given).
        #[arg(long, env = "SUBNET_TASK")]
        task: Option<PathBuf>,
    },
}

fn load_task(path: Option<&PathBuf>) -> anyhow::Result<TaskSpec> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read task file {}", p.display()))?,
        None => subnet_cli::LOCALNET_TASK.to_string(),
    };
    TaskSpec::from_toml_str(&text).map_err(|e| anyhow::anyhow!("{e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Localnet {
            miners,
            validators,
            windows,
            dir,
            task,
        } => {
            let task = load_task(task.as_ref())?;
            let engine = task::TaskEngine::new(task.clone());
            println!(
                "localnet: task {} ({} parameters), {miners} miners, {validators} validator(s), {windows} windows",
                task.task.name,
                engine.num_params()
            );
            println!(
                "corpus entropy rate {:.4} nats/byte; lowest reachable loss on {}-byte sequences {:.4}",
                engine.corpus().entropy_rate(),
                task.model.seq_len,
                engine.loss_floor()
            );
            let config = LocalnetConfig {
                miners,
                validators,
                windows,
                dir,
                task,
            };
            let report =
                localnet::run(config, |line| println!("{}", localnet::format_line(line))).await?;
            let last = report
                .windows
                .last()
                .map(|w| w.heldout_loss)
                .unwrap_or(report.initial_loss);
            println!(
                "done: held-out loss {:.4} -> {:.4} (floor {:.4}); chain at {}",
                report.initial_loss,
                last,
                report.loss_floor,
                report.chain_path.display()
            );
        }
    }
    Ok(())
}
