//! `subnet`: run a whole local subnet, administer the local chain, replay a validator's decisions,
//! and check task files. One module per command under `cmd/`.

mod cmd;

use clap::{Parser, Subcommand};

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
    Localnet(cmd::localnet::Args),
    /// A miner in a test-only misbehaving mode, as its own process (what `subnet localnet
    /// --processes` starts for its adversaries).
    #[command(hide = true)]
    Adversary(cmd::adversary::Args),
    /// Run Yuma consensus epochs from a JSON file (or - for stdin) and print the results.
    Yuma(cmd::yuma::Args),
    /// Replay a validator's data directory offline: re-run every recorded evaluation on the CPU,
    /// confirm each loss bit for bit, and print per-window scores and weights.
    Replay(cmd::replay::Args),
    /// Training efficacy on equal tokens: one machine with AdamW against the subnet with dense
    /// gradients and with compressed ones (the task's layout and any given), from genesis. Prints the
    /// held-out loss per window and a table; writes efficacy.md, efficacy.csv and efficacy.png.
    Efficacy(cmd::efficacy::Args),
    /// Bittensor wallets: create one.
    Wallet {
        #[command(subcommand)]
        command: cmd::wallet::WalletCommand,
    },
    /// Task files: check one.
    Task {
        #[command(subcommand)]
        command: cmd::task::TaskCommand,
    },
    /// Create and administer a local chain, to run miners and validators as separate programs.
    Chain(cmd::chain::Args),
    /// The subnet's model: export a window's global model for PyTorch, or generate from it.
    Model {
        #[command(subcommand)]
        command: cmd::model::ModelCommand,
    },
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
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Localnet(args) => cmd::localnet::run(args).await,
        Command::Adversary(args) => cmd::adversary::run(args).await,
        Command::Chain(args) => cmd::chain::run(args).await,
        Command::Yuma(args) => cmd::yuma::run(args),
        Command::Wallet { command } => cmd::wallet::run(command),
        Command::Efficacy(args) => cmd::efficacy::run(args),
        Command::Replay(args) => cmd::replay::run(args).await,
        Command::Task { command } => cmd::task::run(command),
        Command::Model { command } => cmd::model::run(command),
    }
}
