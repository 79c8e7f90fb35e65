//! Size and rate limits shared by servers and clients.

use std::time::Duration;

/// Largest gradient payload a validator accepts (bytes).
pub const MAX_GRADIENT_BYTES: usize = 256 << 20;
/// Largest checkpoint a miner accepts (bytes).
pub const MAX_CHECKPOINT_BYTES: usize = 1 << 30;
/// Bytes per streamed chunk: what a receiver holds of a stream at once before it reaches the
/// disk (a validator's audits fetch many streams together).
pub const CHUNK_BYTES: usize = 64 << 10;
/// Largest single gRPC message either side decodes.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Largest request a server decodes: every request is a few small fields and a signature.
pub const MAX_REQUEST_BYTES: usize = 16 << 10;
/// Clock skew a receiver tolerates on signed requests.
pub const MAX_SKEW: Duration = Duration::from_secs(30);
/// Per-request timeout of clients.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Requests one caller may make per `RATE_WINDOW` to one server, before it is told to slow down.
pub const REQUESTS_PER_WINDOW: u32 = 20;
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// A token bucket per caller (keyed by hotkey): each caller may burst `capacity` requests and then
/// `capacity` per `period`, so no single caller can use up a server for the others.
pub struct RateLimiter {
    period: Duration,
    capacity: f64,
    per_second: f64,
    buckets: std::sync::Mutex<std::collections::HashMap<[u8; 32], (f64, std::time::Instant)>>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new(REQUESTS_PER_WINDOW, RATE_WINDOW)
    }
}

impl RateLimiter {
    pub fn new(capacity: u32, period: Duration) -> Self {
        Self {
            period,
            capacity: capacity as f64,
            per_second: capacity as f64 / period.as_secs_f64(),
            buckets: Default::default(),
        }
    }

    /// Callers with a bucket now.
    pub fn callers(&self) -> usize {
        self.buckets.lock().expect("rate limiter lock").len()
    }

    /// Takes one request from `caller`'s bucket, or says how long until one is available.
    pub fn check(&self, caller: &[u8; 32]) -> Result<(), Duration> {
        let now = std::time::Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() > 100_000 {
            // Forget callers whose buckets are full again (they are as if never seen).
            let (capacity, rate) = (self.capacity, self.per_second);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < capacity
            });
        }
        let (tokens, at) = buckets.entry(*caller).or_insert((self.capacity, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_second))
        }
    }

    /// Takes one request from `caller`'s bucket, or answers with `ResourceExhausted`.
    pub fn admit(&self, caller: &[u8; 32]) -> Result<(), tonic::Status> {
        self.check(caller).map_err(|retry_in| {
            tonic::Status::resource_exhausted(format!(
                "rate limit: at most {} requests per {} s per caller; retry in {} ms",
                self.capacity,
                self.period.as_secs_f64(),
                retry_in.as_millis().max(1)
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_caller_has_its_own_bucket() {
        let limiter = RateLimiter::new(3, Duration::from_secs(3600));
        for _ in 0..3 {
            assert!(limiter.check(&[1; 32]).is_ok());
        }
        let wait = limiter.check(&[1; 32]).unwrap_err();
        assert!(wait > Duration::from_secs(1000), "{wait:?}");
        // Another caller is not starved by the first.
        assert!(limiter.check(&[2; 32]).is_ok());
    }
}
