//! `subnet efficacy`: the subnet's training against one machine's, on equal tokens.

use ::task::TaskSpec;
use anyhow::Context;
use std::path::PathBuf;

/// Training efficacy on equal tokens: one machine with AdamW against the subnet with dense
/// gradients and with compressed ones (the task's layout and any given), from genesis. Prints the
/// held-out loss per window and a table; writes efficacy.md, efficacy.csv and efficacy.png.
#[derive(clap::Args)]
pub struct Args {
    /// Task file.
    #[arg(long, default_value = "tasks/tiny-lm.toml")]
    pub task: PathBuf,
    /// Honest miners.
    #[arg(long, default_value_t = 4)]
    pub miners: u16,
    /// Windows to train.
    #[arg(long, default_value_t = 10)]
    pub windows: u64,
    /// More compression layouts to compare, CHUNK:K:BITS (bits 8: byte values with 16-bit
    /// positions; 1 to 7: packed), comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = subnet_cli::efficacy::parse_layout)]
    pub layouts: Vec<pseudo_gradient::codec::Layout>,
    /// Override the task's inner steps per window.
    #[arg(long)]
    pub inner_steps: Option<usize>,
    /// Held-out batches the loss is measured on.
    #[arg(long, default_value_t = 16)]
    pub heldout_batches: usize,
    /// Where to write the table, the CSV and the plot.
    #[arg(long, default_value = "efficacy")]
    pub out: PathBuf,
    /// Run only the compressed layouts, not the two references (for sweeps).
    #[arg(long)]
    pub compressed_only: bool,
    /// Which pages and validator eval batches the runs draw: 0 is the draw BENCHMARKS.md
    /// reports; another gives the spread between runs (the held-out batches stay the same).
    #[arg(long, default_value_t = 0)]
    pub draw: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        task,
        miners,
        windows,
        layouts,
        inner_steps,
        heldout_batches,
        out,
        compressed_only,
        draw,
    } = args;
    let mut spec =
        TaskSpec::from_file(&task).with_context(|| format!("task {}", task.display()))?;
    if let Some(steps) = inner_steps {
        spec.training.set_inner_steps(steps);
    }
    let c = &spec.compression;
    let own = c.layout();
    let layouts = std::iter::once(own)
        .filter(|l| *l != pseudo_gradient::codec::Layout::DenseF32)
        .chain(layouts.into_iter().filter(|l| *l != own))
        .collect();
    let comparison = subnet_cli::efficacy::compare(
        spec,
        subnet_cli::efficacy::Setup {
            miners,
            windows,
            layouts,
            heldout_batches,
            compressed_only,
            draw,
        },
    )?;
    comparison.write(&out)?;
    println!("{}", comparison.table());
    println!("written to {}/efficacy.{{md,csv,png}}", out.display());
    Ok(())
}
