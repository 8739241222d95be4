//! Response rate limiting for unauthenticated answers over UDP, in the manner of DNS response
//! rate limiting: one token bucket per source prefix, counted in bytes of answer, in a table of
//! fixed capacity shared by every worker of the relay. Pure: the caller passes the time.
//!
//! Why: an unauthenticated UDP request can carry a forged source address, and the answer to it
//! (a 401 with REALM, NONCE and PASSWORD-ALGORITHMS, a Binding success) is several times larger
//! than the request. Without a limit the relay reflects and amplifies traffic at whoever the
//! forged address names. With one, the bytes sent towards any one prefix without
//! authentication are at most `burst + rate × t`, however fast the requests come.
//!
//! What a prefix is: a [`Source`], as for every per-source limit: an IPv4 address (/32), or an
//! IPv6 prefix of `limits.ipv6_source_prefix` bits (a /64 by default: one subscriber line or
//! host usually holds a whole /64). `::ffff:a.b.c.d` is the IPv4 address. IPv4 is not
//! aggregated to a /24 as DNS RRL does: a /24 would make every customer of a hosting or access
//! network share one budget, so that one flooding neighbour silences the rest; the cost is that
//! a victim network's /24 can receive up to 256 budgets, which the default rate keeps to a few
//! hundred KiB/s.
//!
//! One budget per relay, not per worker: the kernel spreads a client's source ports over the
//! workers (`SO_REUSEPORT`), so budgets per worker would give one source up to `workers` times
//! the budget. The table is split into [`SHARDS`] shards, each behind its own lock, picked by a
//! keyed hash of the prefix: a lock is taken only to answer an unauthenticated request, never on
//! the data path, and workers answering different prefixes rarely meet at one. The key comes
//! from the server's RNG, so an attacker cannot aim its prefixes at one shard without probing.
//!
//! Beyond the budget the answer is dropped, with no "slip" (answering every Nth): RRL slips a
//! truncated answer so that a real resolver retries over TCP, but STUN has no truncated answer,
//! and a real STUN client retransmits on its own (RFC 8489 §6.2.1: up to seven times over about
//! 40 s), so it is answered as soon as its prefix's bucket has refilled. A slipped full answer
//! would also put the amplification factor back at (answer / request) / N.
//!
//! The table: at most `table_size` prefixes (rounded up to a multiple of the shard count). A
//! bucket that has refilled to `burst` carries no information (it equals no entry), so such
//! entries are swept out a few at a time when a shard is full. When it is still full, a new
//! prefix shares one overflow bucket (one for the whole relay): an attacker cycling through many
//! source prefixes cannot reset its own entry or anyone else's by pushing it out, and gets at
//! most one more budget for all of them together.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use rand::RngCore;

use super::Source;
use super::config::AnswerLimit;

/// The per-prefix budgets of one relay, shared by its servers (see [`super::Shared`]).
#[derive(Debug)]
pub(crate) struct AnswerBudgets {
    limit: AnswerLimit,
    /// Leading bits of an IPv6 address that make one prefix (`limits.ipv6_source_prefix`).
    v6_prefix: u8,
    shards: Box<[Mutex<Table>]>,
    /// The bucket shared by new prefixes while their shard is full; `None` until first used.
    overflow: Mutex<Option<Bucket>>,
    /// Keys the hash that picks a prefix's shard.
    key: [u64; 2],
}

/// One shard: the buckets of the prefixes hashed to it.
#[derive(Debug)]
struct Table {
    capacity: usize,
    buckets: BTreeMap<Source, Bucket>,
    /// Where the next sweep for refilled entries starts.
    cursor: Option<Source>,
}

/// A token bucket: micro-bytes of answer it may still send, as of `at`. Micro-bytes, so that
/// refilling by elapsed microseconds loses nothing to rounding.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    micro_bytes: u64,
    at: Instant,
}

/// What a prefix's budget is drawn with: the burst in micro-bytes and the rate in bytes per
/// second.
#[derive(Debug, Clone, Copy)]
struct Refill {
    full: u64,
    rate: u64,
}

impl AnswerBudgets {
    /// Creates empty budgets of `limit`, counting IPv6 addresses by their first `v6_prefix`
    /// bits; the shard hash is keyed from `rng`.
    pub(crate) fn new<R: RngCore + ?Sized>(limit: AnswerLimit, v6_prefix: u8, rng: &mut R) -> Self {
        let key = [rng.next_u64(), rng.next_u64()];
        Self::with_shards(limit, v6_prefix, SHARDS.min(limit.table_size), key)
    }

    /// Creates empty budgets split into `shards` shards (at least one).
    fn with_shards(limit: AnswerLimit, v6_prefix: u8, shards: usize, key: [u64; 2]) -> Self {
        let shards = shards.max(1);
        let capacity = limit.table_size.div_ceil(shards);
        Self {
            limit,
            v6_prefix,
            shards: (0..shards)
                .map(|_| Mutex::new(Table::new(capacity)))
                .collect(),
            overflow: Mutex::new(None),
            key,
        }
    }

    /// Returns true when an unauthenticated answer of `bytes` bytes may go to `ip` at `now`,
    /// and takes it from the prefix's budget; false when it must be dropped.
    pub(crate) fn allow(&self, ip: IpAddr, bytes: usize, now: Instant) -> bool {
        if self.limit.rate == 0 && self.limit.burst == 0 {
            return true;
        }
        let cost = u64::try_from(bytes)
            .unwrap_or(u64::MAX)
            .saturating_mul(MICRO);
        let refill = Refill {
            full: u64::from(self.limit.burst) * MICRO,
            rate: u64::from(self.limit.rate),
        };
        let source = Source::new(ip, self.v6_prefix);
        let taken = lock(&self.shards[self.shard_of(source)]).take(source, cost, now, refill);
        // The shard lock is released before the overflow's is taken: never two at once.
        taken.unwrap_or_else(|| {
            lock(&self.overflow)
                .get_or_insert(Bucket {
                    micro_bytes: refill.full,
                    at: now,
                })
                .take(cost, now, refill)
        })
    }

    /// How many prefixes the shards hold (at most `table_size`, rounded up).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).buckets.len()).sum()
    }

    /// Picks the shard of `source`: a keyed mix of its address bits.
    fn shard_of(&self, source: Source) -> usize {
        let bits = match source.ip() {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        };
        let [hi, lo] = [(bits >> 64) as u64, bits as u64];
        let mut h = self.key[0];
        for word in [hi, lo, self.key[1]] {
            h = (h ^ word).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            h ^= h >> 31;
        }
        // The remainder is below the shard count, a usize.
        (h % self.shards.len() as u64) as usize
    }
}

impl Table {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            buckets: BTreeMap::new(),
            cursor: None,
        }
    }

    /// Takes `cost` from the bucket of `source`, making one if there is room: `Some(true)` when
    /// it was there, `Some(false)` when not, `None` when the table is full (the caller uses the
    /// overflow bucket).
    fn take(&mut self, source: Source, cost: u64, now: Instant, refill: Refill) -> Option<bool> {
        if let Some(b) = self.buckets.get_mut(&source) {
            return Some(b.take(cost, now, refill));
        }
        if self.buckets.len() >= self.capacity {
            self.sweep(now, refill);
        }
        if self.buckets.len() >= self.capacity {
            return None;
        }
        let mut b = Bucket {
            micro_bytes: refill.full,
            at: now,
        };
        let ok = b.take(cost, now, refill);
        self.buckets.insert(source, b);
        Some(ok)
    }

    /// Removes up to [`SWEEP`] entries after the cursor whose buckets have refilled to full,
    /// looking at no more than [`SWEEP`] × 4 entries: bounded work per new prefix.
    fn sweep(&mut self, now: Instant, refill: Refill) {
        let start = self.cursor.map_or(Bound::Unbounded, Bound::Excluded);
        let mut stale = Vec::new();
        let mut last = None;
        let ahead = self.buckets.range((start, Bound::Unbounded));
        for (k, b) in ahead.chain(self.buckets.range(..)).take(SWEEP * 4) {
            if stale.len() == SWEEP {
                break;
            }
            last = Some(*k);
            if b.refilled(now, refill.rate) >= refill.full {
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

    /// Refills to `now` (at most the burst), then takes `cost` if it is there. A `now` earlier
    /// than the bucket's time (another worker's clock reading, taken a moment before) refills
    /// nothing.
    fn take(&mut self, cost: u64, now: Instant, refill: Refill) -> bool {
        self.micro_bytes = self.refilled(now, refill.rate).min(refill.full);
        self.at = self.at.max(now);
        if self.micro_bytes >= cost {
            self.micro_bytes -= cost;
            true
        } else {
            false
        }
    }
}

/// Locks `m`; a poisoned lock is used as it is (a bucket is always in a usable state).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Micro-bytes per byte.
const MICRO: u64 = 1_000_000;
/// Refilled entries removed per sweep at most.
const SWEEP: usize = 8;
/// Shards of the table (fewer when `table_size` is smaller): enough that workers answering
/// different prefixes rarely wait for each other.
pub(crate) const SHARDS: usize = 16;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use rand::SeedableRng as _;

    use super::*;

    /// Budgets in one shard: the table's capacity is exactly `table_size`.
    fn limiter(rate: u32, burst: u32, table_size: usize) -> AnswerBudgets {
        let limit = AnswerLimit {
            rate,
            burst,
            table_size,
        };
        AnswerBudgets::with_shards(limit, 64, 1, [1, 2])
    }

    /// Budgets as a relay makes them, counting IPv6 by `v6_prefix` bits.
    fn sharded(rate: u32, burst: u32, table_size: usize, v6_prefix: u8) -> AnswerBudgets {
        let limit = AnswerLimit {
            rate,
            burst,
            table_size,
        };
        AnswerBudgets::new(
            limit,
            v6_prefix,
            &mut rand::rngs::SmallRng::seed_from_u64(7),
        )
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
    fn answered(l: &AnswerBudgets, ip: IpAddr, size: usize, n: usize, now: Instant) -> usize {
        (0..n).filter(|_| l.allow(ip, size, now)).count()
    }

    #[test]
    fn a_prefix_gets_its_burst_then_its_rate() {
        let l = sharded(1000, 1400, 16, 64);
        let t0 = origin();
        let a = ip("192.0.2.1");
        assert_eq!(answered(&l, a, 140, 100, t0), 10, "the burst: 1400 B");
        // 0.5 s later, 500 B have come back: three answers of 140 B.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(answered(&l, a, 140, 100, t1), 3);
        // Never more than the burst, however long the pause.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!(answered(&l, a, 140, 100, t2), 10);
    }

    #[test]
    fn prefixes_are_an_ipv4_address_or_an_ipv6_slash_64_by_default() {
        let l = sharded(0, 140, 16, 64);
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
    fn ipv6_prefixes_follow_the_configured_length() {
        let now = origin();
        let l = sharded(0, 140, 16, 56);
        assert!(l.allow(ip("2001:db8:1:200::1"), 140, now));
        assert!(
            !l.allow(ip("2001:db8:1:2ff:ffff::9"), 140, now),
            "another /64 of the same /56"
        );
        assert!(l.allow(ip("2001:db8:1:300::1"), 140, now), "the next /56");

        let l = sharded(0, 140, 16, 64);
        assert!(l.allow(ip("2001:db8:1:200::1"), 140, now));
        assert!(
            l.allow(ip("2001:db8:1:201::1"), 140, now),
            "with /64, the next /64 is another source"
        );
        assert!(!l.allow(ip("2001:db8:1:200:8000::1"), 140, now));

        let l = sharded(0, 140, 16, 128);
        assert!(l.allow(ip("2001:db8::1"), 140, now));
        assert!(
            l.allow(ip("2001:db8::2"), 140, now),
            "with /128, each address"
        );
    }

    #[test]
    fn ipv4_mapped_addresses_count_per_ipv4_address_whatever_the_ipv6_prefix() {
        // Without canonicalising first, every mapped address would fall in ::ffff:0:0/56 (or
        // /64) and share one budget; and `a.b.c.d` would escape its budget as `::ffff:a.b.c.d`.
        for v6_prefix in [32, 56, 64, 128] {
            let l = sharded(0, 140, 16, v6_prefix);
            let now = origin();
            assert!(l.allow(ip("::ffff:192.0.2.1"), 140, now), "/{v6_prefix}");
            assert!(
                !l.allow(ip("192.0.2.1"), 140, now),
                "/{v6_prefix}: the same address in both forms"
            );
            assert!(
                l.allow(ip("::ffff:192.0.2.2"), 140, now),
                "/{v6_prefix}: the next IPv4 address is another source"
            );
            assert!(!l.allow(ip("::ffff:192.0.2.2"), 140, now));
        }
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let l = sharded(1000, 140, 16, 64);
        let t0 = origin() + Duration::from_secs(10);
        let a = ip("192.0.2.1");
        assert!(l.allow(a, 140, t0));
        assert!(!l.allow(a, 140, t0 - Duration::from_secs(5)));
        assert!(!l.allow(a, 140, t0));
    }

    #[test]
    fn one_budget_serves_every_thread() {
        // Four workers answering one source at once share its budget: 7000 B is 50 answers.
        let l = sharded(0, 7000, 16, 64);
        let now = origin();
        let taken: usize = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| s.spawn(|| answered(&l, ip("2001:db8::1"), 140, 100, now)))
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(taken, 50);
    }

    #[test]
    fn the_table_is_bounded_and_new_prefixes_share_the_overflow_bucket_when_full() {
        let l = limiter(100, 280, 4);
        let now = origin();
        for i in 0..4 {
            let a = IpAddr::V4([192, 0, 2, i].into());
            assert_eq!(answered(&l, a, 140, 10, now), 2);
        }
        assert_eq!(l.len(), 4);
        // Every entry is in debt: nothing can be swept; the next 100 prefixes share one bucket.
        let mut total = 0;
        for i in 10..110 {
            total += answered(&l, IpAddr::V4([192, 0, 2, i].into()), 140, 10, now);
        }
        assert_eq!(total, 2, "one more burst for all new prefixes together");
        assert_eq!(l.len(), 4);
        // The old entries kept their debt: pushing them out was not possible.
        assert!(!l.allow(IpAddr::V4([192, 0, 2, 0].into()), 140, now));
    }

    #[test]
    fn a_sharded_table_is_bounded_and_has_one_overflow_bucket() {
        // 64 prefixes over 16 shards of 4; 1000 prefixes in debt fill every shard.
        let l = sharded(100, 280, 64, 64);
        let now = origin();
        let total: usize = (0..1000u32)
            .map(|i| answered(&l, IpAddr::V4((0xC000_0000 + i).into()), 140, 10, now))
            .sum();
        assert_eq!(l.len(), 64, "every shard full, none beyond");
        assert_eq!(
            total,
            64 * 2 + 2,
            "a burst per entry and one for the overflow"
        );
    }

    #[test]
    fn refilled_entries_are_swept_to_make_room() {
        let l = limiter(100, 280, 4);
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
        let l = sharded(0, 0, 0, 64);
        let now = origin();
        assert_eq!(answered(&l, ip("192.0.2.1"), 1000, 1000, now), 1000);
        assert_eq!(l.len(), 0);
    }
}
