//! How long a node waits before trying a failed step again (a chain read, a window): doubling from a
//! first delay up to a ceiling, back to the first after a success.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            failures: 0,
        }
    }

    /// Counts a failure and returns the wait before the next try.
    pub fn failed(&mut self) -> Duration {
        let wait = self
            .first
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Counts a failure of `what`, logs it and waits before the next try; breaks on Ctrl-C.
    pub async fn pause(
        &mut self,
        what: &str,
        error: &dyn std::fmt::Display,
    ) -> std::ops::ControlFlow<()> {
        let wait = self.failed();
        tracing::warn!(%error, failures = self.failures, retry_in = ?wait, "{what}; trying again");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => std::ops::ControlFlow::Break(()),
            _ = tokio::time::sleep(wait) => std::ops::ControlFlow::Continue(()),
        }
    }
}

impl Default for Backoff {
    /// 500 ms, doubling up to 30 s.
    fn default() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_ceiling_and_reset_after_a_success() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..9).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(
            waits,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(b.failures(), 9);
        for _ in 0..100 {
            assert_eq!(b.failed(), Duration::from_secs(30));
        }
        b.succeeded();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.failed(), Duration::from_millis(500));
    }
}
