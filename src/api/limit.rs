//! A token bucket per API key. Time is passed in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One key's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The buckets of every key that made a request.
#[derive(Debug, Default)]
pub(super) struct RateLimiter {
    buckets: BTreeMap<String, Bucket>,
}

impl RateLimiter {
    /// Takes one token from `key`'s bucket (`burst` tokens at most, refilled at `per_minute`).
    /// On refusal returns how long to wait until a token is there, rounded up to whole
    /// seconds (at least 1).
    pub(super) fn take(
        &mut self,
        key: &str,
        now: Instant,
        per_minute: u32,
        burst: u32,
    ) -> Result<(), u64> {
        let burst = f64::from(burst.max(1));
        let rate = f64::from(per_minute.max(1)) / 60.0;
        let b = self.buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = Duration::from_secs_f64((1.0 - b.tokens) / rate);
            Err(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        }
    }

    /// Forgets keys that are no longer configured.
    pub(super) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.buckets.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[expect(
        clippy::disallowed_methods,
        reason = "any instant will do as the origin"
    )]
    fn burst_then_refill_at_the_rate() {
        let mut l = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.take("a", t0, 60, 3), Ok(()));
        }
        // Fourth at once: one token per second at 60/min.
        assert_eq!(l.take("a", t0, 60, 3), Err(1));
        // Another key has its own bucket.
        assert_eq!(l.take("b", t0, 60, 3), Ok(()));
        // After a second one token is back, not more.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(l.take("a", t1, 60, 3), Ok(()));
        assert_eq!(l.take("a", t1, 60, 3), Err(1));
        // Slow rate: 6 per minute means a 10 s wait.
        let mut slow = RateLimiter::default();
        assert_eq!(slow.take("a", t0, 6, 1), Ok(()));
        assert_eq!(slow.take("a", t0, 6, 1), Err(10));
        // The bucket never holds more than the burst.
        let t2 = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(l.take("a", t2, 60, 3), Ok(()));
        }
        assert!(l.take("a", t2, 60, 3).is_err());
        l.retain(|k| k == "b");
        assert_eq!(l.take("a", t2, 60, 3), Ok(()));
    }
}
