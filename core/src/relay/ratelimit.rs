//! Response rate limiting for unauthenticated answers over UDP, in the manner of DNS response
//! rate limiting: one token bucket per source prefix, counted in bytes of answer, in a table of
//! fixed capacity. Pure: the caller passes the time.
//!
//! Why: an unauthenticated UDP request can carry a forged source address, and the answer to it
//! (a 401 with REALM, NONCE and PASSWORD-ALGORITHMS, a Binding success) is several times larger
//! than the request. Without a limit the relay reflects and amplifies traffic at whoever the
//! forged address names. With one, the bytes sent towards any one prefix without
//! authentication are at most `burst + rate × t`, however fast the requests come.
//!
//! What a prefix is: an IPv4 address (/32), or an IPv6 /64 (one subscriber line or host usually
//! holds a whole /64). `::ffff:a.b.c.d` is the IPv4 address. IPv4 is not aggregated to a /24 as
//! DNS RRL does: a /24 would make every customer of a hosting or access network share one
//! budget, so that one flooding neighbour silences the rest; the cost is that a victim network's
//! /24 can receive up to 256 budgets, which the default rate keeps to a few hundred KiB/s.
//!
//! Beyond the budget the answer is dropped, with no "slip" (answering every Nth): RRL slips a
//! truncated answer so that a real resolver retries over TCP, but STUN has no truncated answer,
//! and a real STUN client retransmits on its own (RFC 8489 §6.2.1: up to seven times over about
//! 40 s), so it is answered as soon as its prefix's bucket has refilled. A slipped full answer
//! would also put the amplification factor back at (answer / request) / N.
//!
//! The table: at most `table_size` prefixes. A bucket that has refilled to `burst` carries no
//! information (it equals no entry), so such entries are swept out a few at a time when the
//! table is full. When it is still full, a new prefix shares one overflow bucket: an attacker
//! cycling through many source prefixes cannot reset its own entry or anyone else's by pushing
//! it out, and gets at most one more budget for all of them together.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::ops::Bound;
use std::time::Instant;

use super::config::AnswerLimit;

/// The per-prefix buckets of one server.
#[derive(Debug)]
pub(crate) struct AnswerLimiter {
    cfg: AnswerLimit,
    buckets: BTreeMap<IpAddr, Bucket>,
    /// The bucket shared by new prefixes while the table is full; `None` until first used.
    overflow: Option<Bucket>,
    /// Where the next sweep for refilled entries starts.
    cursor: Option<IpAddr>,
}

/// A token bucket: micro-bytes of answer it may still send, as of `at`. Micro-bytes, so that
/// refilling by elapsed microseconds loses nothing to rounding.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    micro_bytes: u64,
    at: Instant,
}

impl AnswerLimiter {
    /// Creates an empty table.
    pub(crate) fn new(cfg: AnswerLimit) -> Self {
        Self {
            cfg,
            buckets: BTreeMap::new(),
            overflow: None,
            cursor: None,
        }
    }

    /// Returns true when an unauthenticated answer of `bytes` bytes may go to `ip` at `now`,
    /// and takes it from the prefix's budget; false when it must be dropped.
    pub(crate) fn allow(&mut self, ip: IpAddr, bytes: usize, now: Instant) -> bool {
        if self.cfg.rate == 0 && self.cfg.burst == 0 {
            return true;
        }
        let cost = u64::try_from(bytes)
            .unwrap_or(u64::MAX)
            .saturating_mul(MICRO);
        let prefix = prefix(ip);
        let full = self.full();
        let rate = u64::from(self.cfg.rate);
        if let Some(b) = self.buckets.get_mut(&prefix) {
            return b.take(cost, now, rate, full);
        }
        if self.buckets.len() >= self.cfg.table_size {
            self.sweep(now);
        }
        if self.buckets.len() < self.cfg.table_size {
            let mut b = Bucket {
                micro_bytes: full,
                at: now,
            };
            let ok = b.take(cost, now, rate, full);
            self.buckets.insert(prefix, b);
            return ok;
        }
        let b = self.overflow.get_or_insert(Bucket {
            micro_bytes: full,
            at: now,
        });
        b.take(cost, now, rate, full)
    }

    /// How many prefixes the table holds (at most `table_size`).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
    }

    /// The burst in micro-bytes.
    fn full(&self) -> u64 {
        u64::from(self.cfg.burst) * MICRO
    }

    /// Removes up to [`SWEEP`] entries after the cursor whose buckets have refilled to full,
    /// looking at no more than [`SWEEP`] × 4 entries: bounded work per new prefix.
    fn sweep(&mut self, now: Instant) {
        let (full, rate) = (self.full(), u64::from(self.cfg.rate));
        let start = self.cursor.map_or(Bound::Unbounded, Bound::Excluded);
        let mut stale = Vec::new();
        let mut last = None;
        let ahead = self.buckets.range((start, Bound::Unbounded));
        for (k, b) in ahead.chain(self.buckets.range(..)).take(SWEEP * 4) {
            if stale.len() == SWEEP {
                break;
            }
            last = Some(*k);
            if b.refilled(now, rate) >= full {
                stale.push(*k);
            }
        }
        for k in stale {
            self.buckets.remove(&k);
        }
        self.cursor = last;
    }
}

impl Bucket {
    /// Returns the tokens at `now`, refilled at `rate` bytes per second (capped by the caller).
    fn refilled(&self, now: Instant, rate: u64) -> u64 {
        let micros = now.saturating_duration_since(self.at).as_micros();
        let add = u64::try_from(micros)
            .unwrap_or(u64::MAX)
            .saturating_mul(rate);
        self.micro_bytes.saturating_add(add)
    }

    /// Refills to `now` (at most `full`), then takes `cost` if it is there.
    fn take(&mut self, cost: u64, now: Instant, rate: u64, full: u64) -> bool {
        self.micro_bytes = self.refilled(now, rate).min(full);
        self.at = self.at.max(now);
        if self.micro_bytes >= cost {
            self.micro_bytes -= cost;
            true
        } else {
            false
        }
    }
}

/// The prefix `ip` is counted under: the IPv4 address, or the IPv6 /64.
fn prefix(ip: IpAddr) -> IpAddr {
    match crate::policy::canonical(ip) {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

/// Micro-bytes per byte.
const MICRO: u64 = 1_000_000;
/// Refilled entries removed per sweep at most.
const SWEEP: usize = 8;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    fn limiter(rate: u32, burst: u32, table_size: usize) -> AnswerLimiter {
        AnswerLimiter::new(AnswerLimit {
            rate,
            burst,
            table_size,
        })
    }

    #[expect(
        clippy::disallowed_methods,
        reason = "an arbitrary origin for the test clock"
    )]
    fn origin() -> Instant {
        Instant::now()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Counts how many answers of `size` bytes `ip` gets out of `n` at one instant.
    fn answered(l: &mut AnswerLimiter, ip: IpAddr, size: usize, n: usize, now: Instant) -> usize {
        (0..n).filter(|_| l.allow(ip, size, now)).count()
    }

    #[test]
    fn a_prefix_gets_its_burst_then_its_rate() {
        let mut l = limiter(1000, 1400, 16);
        let t0 = origin();
        let a = ip("192.0.2.1");
        assert_eq!(answered(&mut l, a, 140, 100, t0), 10, "the burst: 1400 B");
        // 0.5 s later, 500 B have come back: three answers of 140 B.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(answered(&mut l, a, 140, 100, t1), 3);
        // Never more than the burst, however long the pause.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!(answered(&mut l, a, 140, 100, t2), 10);
    }

    #[test]
    fn prefixes_are_an_ipv4_address_or_an_ipv6_slash_64() {
        let mut l = limiter(0, 140, 16);
        let now = origin();
        assert!(l.allow(ip("192.0.2.1"), 140, now));
        assert!(
            !l.allow(ip("::ffff:192.0.2.1"), 140, now),
            "the same address"
        );
        assert!(
            l.allow(ip("192.0.2.2"), 140, now),
            "the next address is another"
        );
        assert!(l.allow(ip("2001:db8:1:2::1"), 140, now));
        assert!(
            !l.allow(ip("2001:db8:1:2:ffff::9"), 140, now),
            "the same /64"
        );
        assert!(l.allow(ip("2001:db8:1:3::1"), 140, now), "another /64");
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let mut l = limiter(1000, 140, 16);
        let t0 = origin() + Duration::from_secs(10);
        let a = ip("192.0.2.1");
        assert!(l.allow(a, 140, t0));
        assert!(!l.allow(a, 140, t0 - Duration::from_secs(5)));
        assert!(!l.allow(a, 140, t0));
    }

    #[test]
    fn the_table_is_bounded_and_new_prefixes_share_the_overflow_bucket_when_full() {
        let mut l = limiter(100, 280, 4);
        let now = origin();
        for i in 0..4 {
            let a = IpAddr::V4([192, 0, 2, i].into());
            assert_eq!(answered(&mut l, a, 140, 10, now), 2);
        }
        assert_eq!(l.len(), 4);
        // Every entry is in debt: nothing can be swept; the next 100 prefixes share one bucket.
        let mut total = 0;
        for i in 10..110 {
            total += answered(&mut l, IpAddr::V4([192, 0, 2, i].into()), 140, 10, now);
        }
        assert_eq!(total, 2, "one more burst for all new prefixes together");
        assert_eq!(l.len(), 4);
        // The old entries kept their debt: pushing them out was not possible.
        assert!(!l.allow(IpAddr::V4([192, 0, 2, 0].into()), 140, now));
    }

    #[test]
    fn refilled_entries_are_swept_to_make_room() {
        let mut l = limiter(100, 280, 4);
        let now = origin();
        for i in 0..4 {
            assert!(l.allow(IpAddr::V4([192, 0, 2, i].into()), 140, now));
        }
        // 1.4 s later every bucket is full again (140 B at 100 B/s): they carry no information.
        let later = now + Duration::from_millis(1400);
        for i in 10..14 {
            let a = IpAddr::V4([192, 0, 2, i].into());
            assert!(l.allow(a, 140, later), "{i}");
        }
        assert_eq!(
            l.len(),
            4,
            "four refilled entries made room for four new ones"
        );
        assert!(l.allow(IpAddr::V4([192, 0, 2, 0].into()), 140, later));
    }

    #[test]
    fn zero_rate_and_burst_turn_the_limit_off() {
        let mut l = limiter(0, 0, 0);
        let now = origin();
        assert_eq!(answered(&mut l, ip("192.0.2.1"), 1000, 1000, now), 1000);
        assert_eq!(l.len(), 0);
    }
}
