//! The validator's Prometheus metrics, served as text on `--metrics ADDR`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

#[derive(Default)]
struct Counts {
    windows_scored: u64,
    last_window: u64,
    checkpoint_loss: f64,
    weights_set: u64,
    weights_not_set: u64,
    weights_revealed: u64,
    reveals_failed: u64,
    fraud_reports: u64,
    collecting_window: u64,
    commitments_collected: usize,
    verdicts: BTreeMap<&'static str, u64>,
}

/// The validator's single-valued series: name, kind and help, in the order `render` fills them.
const SERIES: [(&str, &str, &str); 10] = [
    (
        "validator_windows_scored_total",
        "counter",
        "Windows scored.",
    ),
    (
        "validator_last_window",
        "gauge",
        "The latest window scored.",
    ),
    (
        "validator_checkpoint_loss",
        "gauge",
        "Held-out loss of the latest window's global checkpoint.",
    ),
    (
        "validator_weights_set_total",
        "counter",
        "Windows whose weights were set on chain (committed, under commit-reveal).",
    ),
    (
        "validator_weights_not_set_total",
        "counter",
        "Windows whose weights were not set.",
    ),
    (
        "validator_weights_revealed_total",
        "counter",
        "Committed weights revealed on chain (commit-reveal).",
    ),
    (
        "validator_weight_reveals_failed_total",
        "counter",
        "Committed weights the chain refused to reveal (expired or mismatched).",
    ),
    (
        "validator_fraud_reports_total",
        "counter",
        "Miners reported for fraud.",
    ),
    (
        "validator_collecting_window",
        "gauge",
        "The open window whose commitments are being collected.",
    ),
    (
        "validator_commitments_collected",
        "gauge",
        "Commitments held for the open window.",
    ),
];

#[derive(Default)]
pub struct Metrics {
    counts: Mutex<Counts>,
}

impl Metrics {
    /// Counts one scored window.
    pub fn window(&self, outcome: &crate::WindowOutcome) {
        let mut c = self.counts.lock().expect("metrics lock");
        c.windows_scored += 1;
        c.last_window = outcome.window;
        c.checkpoint_loss = outcome.base_loss;
        if outcome.weights_set.is_ok() {
            c.weights_set += 1;
        } else {
            c.weights_not_set += 1;
        }
        for (_, r) in &outcome.reveals {
            match r {
                Ok(()) => c.weights_revealed += 1,
                Err(_) => c.reveals_failed += 1,
            }
        }
        c.fraud_reports += outcome.fraud_reports.len() as u64;
        for r in &outcome.results {
            *c.verdicts.entry(r.verdict.kind()).or_default() += 1;
        }
    }

    /// Notes how many commitments are held for the open window `window`.
    pub fn collected(&self, window: u64, commitments: usize) {
        let mut c = self.counts.lock().expect("metrics lock");
        c.collecting_window = window;
        c.commitments_collected = commitments;
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let c = self.counts.lock().expect("metrics lock");
        let mut out = String::new();
        let values = [
            c.windows_scored.to_string(),
            c.last_window.to_string(),
            format!("{:.6}", c.checkpoint_loss),
            c.weights_set.to_string(),
            c.weights_not_set.to_string(),
            c.weights_revealed.to_string(),
            c.reveals_failed.to_string(),
            c.fraud_reports.to_string(),
            c.collecting_window.to_string(),
            c.commitments_collected.to_string(),
        ];
        for ((name, kind, help), value) in SERIES.iter().zip(values) {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP validator_miner_verdicts_total Miner outcomes per window, by verdict.\n# TYPE validator_miner_verdicts_total counter"
        );
        for (verdict, n) in &c.verdicts {
            let _ = writeln!(
                out,
                "validator_miner_verdicts_total{{verdict=\"{verdict}\"}} {n}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use task::Digest;

    #[test]
    fn a_scored_window_shows_in_the_exposition() {
        let metrics = Metrics::default();
        metrics.window(&crate::WindowOutcome {
            window: 7,
            eval_seed: 1,
            base_loss: 1.25,
            checkpoint_before: Digest([0; 32]),
            checkpoint_after: Digest([1; 32]),
            results: Vec::new(),
            aggregated: Vec::new(),
            weights_set: Err("no miner has earned weight yet".into()),
            weights_committed: false,
            reveals: vec![(6, Ok(()))],
            fraud_reports: Vec::new(),
            adopted: None,
            reference_norm: 1.0,
            timings: Vec::new(),
        });
        let text = metrics.render();
        for line in [
            "validator_windows_scored_total 1",
            "validator_last_window 7",
            "validator_checkpoint_loss 1.250000",
            "validator_weights_not_set_total 1",
            "validator_weights_revealed_total 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
