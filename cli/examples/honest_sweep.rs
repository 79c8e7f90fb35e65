//! A seeded sweep of localnets: for each chain seed, honest miners beside the given adversaries, two
//! validators, and the verdicts every honest miner got in every window from every validator. An
//! honest miner must never be accused (refused, fraud, banned, oversized, or not trained on its
//! pages); a window in which its gradient did not help (`harmful`, as every gradient of a window that
//! overshoots) or added nothing to the others' (`no_contribution`) is no accusation and is counted
//! apart, and so are the honest miners a failed assignment check sent to an audit that cleared them.
//!
//! cargo run --release -p subnet-cli --example honest_sweep -- SEEDS WINDOWS [ADVERSARY,...]

use scoring::Verdict;
use std::collections::BTreeMap;
use subnet_cli::localnet::{self, LocalnetConfig, MinerKind};
use task::TaskSpec;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let seeds: u64 = args.get(1).map_or(Ok(4), |s| s.parse())?;
    let windows: u64 = args.get(2).map_or(Ok(4), |s| s.parse())?;
    let adversaries = args
        .get(3)
        .map(|list| {
            list.split(',')
                .map(str::parse)
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()
        .map_err(|e: String| anyhow::anyhow!(e))?
        .unwrap_or_default();
    let task = TaskSpec::from_toml_str(subnet_cli::LOCALNET_TASK)?;
    let mut totals: BTreeMap<&'static str, usize> = BTreeMap::new();
    let (mut suspected, mut accused) = (0, Vec::new());
    for seed in 1..=seeds {
        let config = LocalnetConfig {
            adversaries: adversaries.clone(),
            seed,
            ..LocalnetConfig::honest(task.clone(), 4, 2, windows)
        };
        let report = localnet::run(config, |_| {}).await?;
        let honest: Vec<u16> = report
            .miner_uids
            .iter()
            .zip(&report.miner_kinds)
            .filter(|(_, k)| **k == MinerKind::Honest)
            .map(|(u, _)| *u)
            .collect();
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for outcome in report.outcomes.iter().flatten() {
            for r in outcome.results.iter().filter(|r| honest.contains(&r.uid)) {
                *counts.entry(r.verdict.kind()).or_default() += 1;
                let threshold = task.scoring.assignment_p_value;
                if r.assignment.as_ref().is_some_and(|a| a.p_value > threshold) && r.audited {
                    suspected += 1;
                }
                if !matches!(
                    r.verdict,
                    Verdict::Earned | Verdict::NoContribution { .. } | Verdict::Harmful { .. }
                ) {
                    accused.push(format!(
                        "seed {seed} window {} uid {}: {}",
                        outcome.window, r.uid, r.verdict
                    ));
                }
            }
        }
        let last = report.windows.last().map_or(f64::NAN, |w| w.heldout_loss);
        println!("seed {seed}: {counts:?}, held-out loss {last:.4}");
        for (k, v) in counts {
            *totals.entry(k).or_default() += v;
        }
    }
    println!(
        "all seeds: {totals:?}; honest miners audited after a failed assignment check and cleared: {suspected}"
    );
    if accused.is_empty() {
        println!("no honest miner was accused");
    } else {
        println!("honest miners accused:\n{}", accused.join("\n"));
    }
    Ok(())
}
