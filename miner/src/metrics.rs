//! The miner's Prometheus metrics, kept in prometheus-client's registry and served as OpenMetrics
//! text on `--metrics ADDR` (any path answers).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// A label set of one pair, as the metrics here use them.
type Label = [(&'static str, &'static str); 1];

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

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
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
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
