//! The validator's Prometheus metrics, kept in prometheus-client's registry and served as
//! OpenMetrics text on `--metrics ADDR`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    windows_scored: Counter,
    last_window: Gauge,
    checkpoint_loss: Gauge<f64, AtomicU64>,
    weights_set: Counter,
    weights_not_set: Counter,
    weights_revealed: Counter,
    reveals_failed: Counter,
    fraud_reports: Counter,
    bytes_fetched: Counter,
    collecting_window: Gauge,
    commitments_collected: Gauge,
    verdicts: Family<[(&'static str, &'static str); 1], Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Self {
            registry: Registry::default(),
            windows_scored: Counter::default(),
            last_window: Gauge::default(),
            checkpoint_loss: Gauge::default(),
            weights_set: Counter::default(),
            weights_not_set: Counter::default(),
            weights_revealed: Counter::default(),
            reveals_failed: Counter::default(),
            fraud_reports: Counter::default(),
            bytes_fetched: Counter::default(),
            collecting_window: Gauge::default(),
            commitments_collected: Gauge::default(),
            verdicts: Family::default(),
        };
        let mut registry = Registry::default();
        metrics.register_counters(&mut registry);
        metrics.register_gauges(&mut registry);
        registry.register(
            "validator_miner_verdicts",
            "Miner outcomes per window, by verdict",
            metrics.verdicts.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    fn register_counters(&self, registry: &mut Registry) {
        let metrics = self;
        let counters = [
            (
                "validator_windows_scored",
                "Windows scored",
                &metrics.windows_scored,
            ),
            (
                "validator_weights_set",
                "Windows whose weights were set on chain (committed, under commit-reveal)",
                &metrics.weights_set,
            ),
            (
                "validator_weights_not_set",
                "Windows whose weights were not set",
                &metrics.weights_not_set,
            ),
            (
                "validator_weights_revealed",
                "Committed weights revealed on chain (commit-reveal)",
                &metrics.weights_revealed,
            ),
            (
                "validator_weight_reveals_failed",
                "Committed weights the chain refused to reveal (expired or mismatched)",
                &metrics.reveals_failed,
            ),
            (
                "validator_fraud_reports",
                "Miners reported for fraud",
                &metrics.fraud_reports,
            ),
            (
                "validator_fetched_bytes",
                "Bytes of payloads and audited artefacts streamed from miners",
                &metrics.bytes_fetched,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
    }

    fn register_gauges(&self, registry: &mut Registry) {
        let metrics = self;
        let gauges = [
            (
                "validator_last_window",
                "The latest window scored",
                &metrics.last_window,
            ),
            (
                "validator_collecting_window",
                "The open window whose commitments are being collected",
                &metrics.collecting_window,
            ),
            (
                "validator_commitments_collected",
                "Commitments held for the open window",
                &metrics.commitments_collected,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
        registry.register(
            "validator_checkpoint_loss",
            "Held-out loss of the latest window's global checkpoint",
            metrics.checkpoint_loss.clone(),
        );
    }
}

impl Metrics {
    /// Counts one scored window.
    pub fn window(&self, outcome: &crate::WindowOutcome) {
        self.windows_scored.inc();
        self.last_window.set(outcome.window as i64);
        self.checkpoint_loss.set(outcome.base_loss);
        if outcome.weights_set.is_ok() {
            self.weights_set.inc();
        } else {
            self.weights_not_set.inc();
        }
        for (_, r) in &outcome.reveals {
            match r {
                Ok(()) => self.weights_revealed.inc(),
                Err(_) => self.reveals_failed.inc(),
            };
        }
        self.fraud_reports
            .inc_by(outcome.fraud_reports.len() as u64);
        self.bytes_fetched.inc_by(outcome.bytes_fetched);
        for r in &outcome.results {
            self.verdicts
                .get_or_create(&[("verdict", r.verdict.kind())])
                .inc();
        }
    }

    /// Notes how many commitments are held for the open window `window`.
    pub fn collected(&self, window: u64, commitments: usize) {
        self.collecting_window.set(window as i64);
        self.commitments_collected.set(commitments as i64);
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        subnet_proto::metrics_http::render(&[&self.registry])
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
            bytes_fetched: 52_224,
        });
        let text = metrics.render();
        for line in [
            "validator_windows_scored_total 1",
            "validator_last_window 7",
            "validator_checkpoint_loss 1.25",
            "validator_weights_not_set_total 1",
            "validator_weights_revealed_total 1",
            "validator_fetched_bytes_total 52224",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
