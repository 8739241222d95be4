//! State shared by the servers of one relay process.
//!
//! A relay runs one [`Server`](super::Server) per worker thread. The allocation limits hold
//! for the process, relay ports come from one pool, and a RESERVATION-TOKEN made by one worker
//! can be redeemed at another (the kernel spreads a client's sockets over the workers), so
//! those live here, behind locks taken when an allocation is created, bound or ends, never per
//! packet. The budgets of unauthenticated answers are here for the same reason (one budget per
//! source prefix, however its datagrams are spread over the workers), behind sharded locks
//! taken only to answer an unauthenticated request.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rand::RngCore;

use super::ports::PortPool;
use super::ratelimit::AnswerBudgets;
use super::types::ReservationToken;
use super::{Limits, Reservation, ServerConfig, Source};
use crate::stun::attr::Family;

/// Which quota refused an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exceeded {
    /// `limits.max_allocations`.
    Total,
    /// `limits.max_allocations_per_user`.
    User,
    /// `limits.max_allocations_per_source`.
    Source,
}

/// What the servers of one process share: allocation counts, the relay port pools, the
/// port reservations and the budgets of unauthenticated answers.
#[derive(Debug)]
pub struct Shared {
    counts: Mutex<Counts>,
    ports: Mutex<Ports>,
    answers: AnswerBudgets,
}

/// The relay ports of both families and the reservations holding some of them.
#[derive(Debug)]
pub(super) struct Ports {
    v4: PortPool,
    v6: PortPool,
    pub(super) reservations: HashMap<ReservationToken, Reservation>,
}

impl Ports {
    pub(super) fn pool(&mut self, family: Family) -> &mut PortPool {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }

    /// Ends the reservation `token` unredeemed and gives its port back to the pool; with
    /// `expired_at`, only when it has run out by then. Returns it when it ended here (another
    /// worker may have redeemed it first).
    pub(super) fn end_reservation(
        &mut self,
        token: ReservationToken,
        expired_at: Option<std::time::Instant>,
    ) -> Option<Reservation> {
        let r = *self.reservations.get(&token)?;
        if expired_at.is_some_and(|now| r.expires > now) {
            return None;
        }
        self.reservations.remove(&token);
        self.pool(r.family).release(r.port);
        Some(r)
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_user: HashMap<String, usize>,
    per_source: HashMap<Source, usize>,
}

impl Shared {
    /// Shared state for servers of `cfg`: its relay port range, its answer budget
    /// ([`ServerConfig::answer_limit`]) counted per source as its limits say
    /// ([`Limits::ipv6_source_prefix`]). `rng` keys the hash that spreads sources over the
    /// budget table's shards.
    pub fn new<R: RngCore + ?Sized>(cfg: &ServerConfig, rng: &mut R) -> Self {
        let answers = AnswerBudgets::new(cfg.answer_limit, cfg.limits.ipv6_source_prefix, rng);
        Self::with_ports(cfg.relay.ports.clone(), answers)
    }

    fn with_ports(ports: RangeInclusive<u16>, answers: AnswerBudgets) -> Self {
        Self {
            counts: Mutex::default(),
            ports: Mutex::new(Ports {
                v4: PortPool::new(ports.clone()),
                v6: PortPool::new(ports),
                reservations: HashMap::new(),
            }),
            answers,
        }
    }

    /// The budgets of unauthenticated answers.
    pub(super) fn answers(&self) -> &AnswerBudgets {
        &self.answers
    }

    /// The port pools and reservations, locked.
    pub(super) fn ports(&self) -> MutexGuard<'_, Ports> {
        self.ports.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one more allocation of `user` from `source`, unless a limit of `limits` is
    /// reached: the total first, then the user's, then the source's.
    pub(super) fn try_take(
        &self,
        user: &str,
        source: Source,
        limits: &Limits,
    ) -> Result<(), Exceeded> {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if c.total >= limits.max_allocations {
            return Err(Exceeded::Total);
        }
        if c.per_user.get(user).copied().unwrap_or(0) >= limits.max_allocations_per_user {
            return Err(Exceeded::User);
        }
        if c.per_source.get(&source).copied().unwrap_or(0) >= limits.max_allocations_per_source {
            return Err(Exceeded::Source);
        }
        c.total += 1;
        *c.per_user.entry(user.to_owned()).or_default() += 1;
        *c.per_source.entry(source).or_default() += 1;
        Ok(())
    }

    /// Counts one allocation of `user` from `source` less.
    pub(super) fn release(&self, user: &str, source: Source) {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_user.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                c.per_user.remove(user);
            }
        }
        if let Some(n) = c.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                c.per_source.remove(&source);
            }
        }
    }

    /// Allocations counted now, across every server sharing these quotas.
    pub fn total(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::AnswerLimit;

    fn shared(ports: RangeInclusive<u16>) -> Shared {
        use rand::SeedableRng as _;
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let answers = AnswerBudgets::new(AnswerLimit::OFF, 64, &mut rng);
        Shared::with_ports(ports, answers)
    }

    fn limits(total: usize, per_user: usize, per_source: usize) -> Limits {
        Limits {
            max_allocations: total,
            max_allocations_per_user: per_user,
            max_allocations_per_source: per_source,
            ipv6_source_prefix: 64,
            max_permissions_per_allocation: 1,
            max_channels_per_allocation: 1,
            default_lifetime: std::time::Duration::from_secs(600),
            max_lifetime: std::time::Duration::from_secs(600),
        }
    }

    fn src(s: &str) -> Source {
        Source::new(s.parse().expect("an IP literal"), 64)
    }

    #[test]
    fn limits_hold_across_takers() {
        let q = shared(1000..=1009);
        let l = limits(3, 2, 10);
        let s = src("192.0.2.1");
        assert_eq!(q.try_take("a", s, &l), Ok(()));
        assert_eq!(q.try_take("a", s, &l), Ok(()));
        assert_eq!(q.try_take("a", s, &l), Err(Exceeded::User));
        assert_eq!(q.try_take("b", s, &l), Ok(()));
        assert_eq!(q.try_take("c", s, &l), Err(Exceeded::Total));
        q.release("a", s);
        assert_eq!(q.total(), 2);
        assert_eq!(q.try_take("c", s, &l), Ok(()));
        q.release("nobody", src("192.0.2.99"));
        assert_eq!(q.total(), 2);
    }

    #[test]
    fn source_limit_counts_a_prefix_whatever_the_user() {
        let q = shared(1000..=1009);
        let l = limits(10, 10, 2);
        assert_eq!(q.try_take("a", src("2001:db8::1"), &l), Ok(()));
        assert_eq!(q.try_take("b", src("2001:db8::2"), &l), Ok(()));
        assert_eq!(
            q.try_take("c", src("2001:db8::3"), &l),
            Err(Exceeded::Source)
        );
        assert_eq!(q.try_take("c", src("2001:db8:0:1::3"), &l), Ok(()));
        q.release("a", src("2001:db8::1"));
        assert_eq!(q.try_take("c", src("2001:db8::3"), &l), Ok(()));
    }
}
