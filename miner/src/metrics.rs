//! The miner's Prometheus metrics, kept in prometheus-client's registry and served as OpenMetrics
//! text on `--metrics ADDR` (any path answers).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// A label set of one pair, as the metrics here use them.
type Label = [(&'static str, &'static str); 1];

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    windows_trained: Counter,
    tokens_per_second: Gauge<f64, AtomicU64>,
    last_window: Gauge,
    gradients_served: Counter,
    rejected: Family<Label, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            windows_trained: Counter::default(),
            tokens_per_second: Gauge::default(),
            last_window: Gauge::default(),
            gradients_served: Counter::default(),
            rejected: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "miner_windows_trained",
            "Windows trained and served",
            metrics.windows_trained.clone(),
        );
        registry.register(
            "miner_last_window",
            "The latest window trained",
            metrics.last_window.clone(),
        );
        registry.register(
            "miner_tokens_per_second",
            "Training throughput of the latest window",
            metrics.tokens_per_second.clone(),
        );
        registry.register(
            "miner_gradients_served",
            "Gradient streams sent to validators",
            metrics.gradients_served.clone(),
        );
        registry.register(
            "miner_requests_rejected",
            "Requests refused, by reason",
            metrics.rejected.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    pub fn window_trained(&self, window: u64, tokens_per_second: f64) {
        self.windows_trained.inc();
        self.last_window.set(window as i64);
        self.tokens_per_second.set(tokens_per_second);
    }

    pub fn gradient_served(&self) {
        self.gradients_served.inc();
    }

    pub fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&[("reason", reason)]).inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        self.render_with(&Registry::default())
    }

    /// The OpenMetrics text of every metric, and of `extra`'s (a process that runs a miner and
    /// counts more).
    pub fn render_with(&self, extra: &Registry) -> String {
        subnet_proto::metrics_http::render(&[&self.registry, extra])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_each_series_once_and_ends_once() {
        let metrics = Metrics::default();
        metrics.window_trained(7, 1234.5);
        metrics.rejected("stale");
        metrics.rejected("stale");
        let mut extra = Registry::default();
        let acted = Counter::<u64>::default();
        extra.register("adversary_windows_acted", "Windows acted in", acted.clone());
        acted.inc();
        let text = metrics.render_with(&extra);
        for line in [
            "miner_windows_trained_total 1",
            "miner_last_window 7",
            "miner_tokens_per_second 1234.5",
            "miner_requests_rejected_total{reason=\"stale\"} 2",
            "adversary_windows_acted_total 1",
        ] {
            assert_eq!(
                text.lines().filter(|l| *l == line).count(),
                1,
                "{line} in:\n{text}"
            );
        }
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(text.ends_with("# EOF\n"));
    }
}
