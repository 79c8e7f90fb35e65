//! `subnet replay`: a validator's data directory re-run offline.

use std::path::PathBuf;

/// Replay a validator's data directory offline: re-run every recorded evaluation on the CPU,
/// confirm each loss bit for bit, and print per-window scores and weights.
#[derive(clap::Args)]
pub struct Args {
    /// The validator's data directory (its --data).
    pub dir: PathBuf,
    /// What-if: re-decide the same evidence with the [scoring] parameters of this TOML file
    /// (moving_average, max_weight, assignment_p_value, copy_cosine) and show the weights.
    #[arg(long)]
    pub scoring: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Also draw the held-out loss and the weight shares over windows to this PNG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    subnet_cli::replay::run(
        &args.dir,
        args.scoring.as_deref(),
        args.json,
        args.plot.as_deref(),
    )
}
