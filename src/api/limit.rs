//! A token bucket per API key, and one per source address for failed key attempts. Time is
//! passed in.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
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

/// Failed API key attempts (401) per source: an IPv4 address or an IPv6 /64. A source may
/// fail [`FAILURE_BURST`] times at once and then once every [`FAILURE_REFILL`]; beyond that
/// every `/v1/` request from it is answered 429 before its key is looked at, so that guessing
/// keys is slowed to a few a minute without telling a right guess from a wrong one. At most
/// [`MAX_SOURCES`] sources are tracked; a source whose budget has refilled is forgotten, and
/// while the table is still full new sources share one more budget (an attacker cycling
/// addresses cannot push out its own debt).
#[derive(Debug, Default)]
pub(super) struct FailureLimiter {
    sources: BTreeMap<IpAddr, Bucket>,
    overflow: Option<Bucket>,
}

impl FailureLimiter {
    /// Returns `Err(seconds to wait)` when `ip` has no failed attempt left at `now`.
    pub(super) fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let key = source(ip);
        let full = self.sources.len() >= MAX_SOURCES;
        let b = if self.sources.contains_key(&key) {
            self.sources.get_mut(&key)
        } else if full {
            self.overflow.as_mut()
        } else {
            None
        };
        let Some(b) = b else {
            return Ok(());
        };
        refill(b, now);
        if b.tokens >= 1.0 {
            Ok(())
        } else {
            let wait = FAILURE_REFILL.mul_f64(1.0 - b.tokens);
            Err(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        }
    }

    /// Counts a failed attempt from `ip` at `now`.
    pub(super) fn fail(&mut self, ip: IpAddr, now: Instant) {
        let key = source(ip);
        if !self.sources.contains_key(&key) && self.sources.len() >= MAX_SOURCES {
            self.sources.retain(|_, b| {
                refill(b, now);
                b.tokens < f64::from(FAILURE_BURST)
            });
        }
        let full = Bucket {
            tokens: f64::from(FAILURE_BURST),
            last: now,
        };
        let b = if self.sources.contains_key(&key) || self.sources.len() < MAX_SOURCES {
            self.sources.entry(key).or_insert(full)
        } else {
            self.overflow.get_or_insert(full)
        };
        refill(b, now);
        b.tokens = (b.tokens - 1.0).max(0.0);
    }

    /// How many sources are tracked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.sources.len()
    }
}

fn refill(b: &mut Bucket, now: Instant) {
    let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
    b.tokens = (b.tokens + elapsed / FAILURE_REFILL.as_secs_f64()).min(f64::from(FAILURE_BURST));
    b.last = b.last.max(now);
}

/// The source `ip` counts under: the IPv4 address, or the IPv6 /64.
fn source(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
    }
}

/// Failed key attempts a source may make at once.
pub(super) const FAILURE_BURST: u32 = 10;
/// One more failed attempt is allowed this long after the last.
pub(super) const FAILURE_REFILL: Duration = Duration::from_secs(6);
/// Sources tracked at most (about 100 bytes each).
const MAX_SOURCES: usize = 4096;

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

    #[test]
    #[expect(
        clippy::disallowed_methods,
        reason = "any instant will do as the origin"
    )]
    fn failed_attempts_are_throttled_per_source() {
        let mut f = FailureLimiter::default();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap_or(IpAddr::V4([0; 4].into()));
        for _ in 0..FAILURE_BURST {
            assert_eq!(f.check(a, t0), Ok(()));
            f.fail(a, t0);
        }
        assert_eq!(f.check(a, t0), Err(6), "one more attempt in 6 s");
        let other: IpAddr = "192.0.2.2".parse().unwrap_or(a);
        assert_eq!(
            f.check(other, t0),
            Ok(()),
            "another address is not affected"
        );
        let same_64: IpAddr = "2001:db8::1".parse().unwrap_or(a);
        let also: IpAddr = "2001:db8::ffff:2".parse().unwrap_or(a);
        for _ in 0..FAILURE_BURST {
            f.fail(same_64, t0);
        }
        assert!(f.check(also, t0).is_err(), "one IPv6 /64 is one source");
        assert_eq!(f.check(a, t0 + FAILURE_REFILL), Ok(()));
        f.fail(a, t0 + FAILURE_REFILL);
        assert!(f.check(a, t0 + FAILURE_REFILL).is_err());
    }

    #[test]
    #[expect(
        clippy::disallowed_methods,
        reason = "any instant will do as the origin"
    )]
    fn the_failure_table_is_bounded() {
        let mut f = FailureLimiter::default();
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 100) {
            let ip = IpAddr::V4(i.to_be_bytes().into());
            for _ in 0..FAILURE_BURST {
                f.fail(ip, t0);
            }
        }
        assert_eq!(f.len(), MAX_SOURCES);
        // The sources beyond the table share one budget, used up by now.
        let late = IpAddr::V4((MAX_SOURCES as u32 + 50).to_be_bytes().into());
        assert!(f.check(late, t0).is_err());
        // An hour later every budget has refilled: the table makes room again.
        let t1 = t0 + Duration::from_secs(3600);
        f.fail(late, t1);
        assert!(f.len() <= 1);
    }
}
