//! The miner's Prometheus metrics, served as text on `--metrics ADDR` (any path answers).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Metrics {
    windows_trained: AtomicU64,
    /// Training tokens per second of the last window, in thousandths.
    tokens_per_second_milli: AtomicU64,
    last_window: AtomicU64,
    gradients_served: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    pub fn window_trained(&self, window: u64, tokens_per_second: f64) {
        self.windows_trained.fetch_add(1, Ordering::Relaxed);
        self.last_window.store(window, Ordering::Relaxed);
        self.tokens_per_second_milli
            .store((tokens_per_second * 1000.0) as u64, Ordering::Relaxed);
    }

    pub fn gradient_served(&self) {
        self.gradients_served.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self, reason: &'static str) {
        *self
            .rejected
            .lock()
            .expect("metrics lock")
            .entry(reason)
            .or_default() += 1;
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            &mut out,
            "miner_windows_trained_total",
            "Windows trained and served.",
            self.windows_trained.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP miner_last_window The latest window trained.\n# TYPE miner_last_window gauge\nminer_last_window {}",
            self.last_window.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP miner_tokens_per_second Training throughput of the latest window.\n# TYPE miner_tokens_per_second gauge\nminer_tokens_per_second {:.3}",
            self.tokens_per_second_milli.load(Ordering::Relaxed) as f64 / 1000.0
        );
        counter(
            &mut out,
            "miner_gradients_served_total",
            "Gradient streams sent to validators.",
            self.gradients_served.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP miner_requests_rejected_total Requests refused, by reason.\n# TYPE miner_requests_rejected_total counter"
        );
        for (reason, n) in self.rejected.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "miner_requests_rejected_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out
    }
}
