//! `subnet yuma`: Yuma consensus epochs from a JSON file, printed.

use anyhow::Context;
use std::path::PathBuf;

/// Run Yuma consensus epochs from a JSON file (or - for stdin) and print the results.
#[derive(clap::Args)]
pub struct Args {
    /// Input: {"hyperparameters": {...}, "stake": [...], "block_at_registration": [...],
    /// "epochs": [{"block", "emission", "weights": [[[uid, u16], ...], ...], "last_update"}]}.
    pub file: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (file, json) = (args.file.as_path(), args.json);
    use std::io::Read;
    let mut text = String::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read stdin")?;
    } else {
        text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
    }
    let input: scoring::simulate::SimulationInput = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid yuma input", file.display()))?;
    let output = scoring::simulate::simulate(&input)
        .map_err(|e| anyhow::anyhow!("{}:\n{e}", file.display()))?;
    if json {
        println!("{}", serde_json::to_string(&output)?);
        return Ok(());
    }
    let p = |x: u16| x as f64 / 65535.0;
    for (k, (spec, e)) in input.epochs.iter().zip(&output.epochs).enumerate() {
        println!(
            "epoch {k} at block {} (emission {})",
            spec.block, spec.emission
        );
        println!(
            "{:>5} {:>14} {:>6} {:>9} {:>9} {:>9} {:>9} {:>14}",
            "uid", "stake", "permit", "consensus", "incentive", "dividends", "trust", "emission"
        );
        for uid in 0..input.stake.len() {
            println!(
                "{uid:>5} {:>14} {:>6} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>14}",
                input.stake[uid],
                if e.validator_permit[uid] { "yes" } else { "no" },
                p(e.consensus[uid]),
                p(e.incentive[uid]),
                p(e.dividends[uid]),
                p(e.validator_trust[uid]),
                e.emission[uid]
            );
        }
    }
    Ok(())
}
