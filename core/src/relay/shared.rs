//! State shared by the servers of one relay process.
//!
//! A relay runs one [`Server`](super::Server) per worker thread. The allocation limits hold
//! for the process, relay ports come from one pool, and a RESERVATION-TOKEN made by one worker
//! can be redeemed at another (the kernel spreads a client's sockets over the workers), so
//! those live here, behind locks taken when an allocation is created, bound or ends, never per
//! packet.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::Reservation;
use super::ports::PortPool;
use super::types::ReservationToken;
use crate::stun::attr::Family;

/// Which quota refused an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exceeded {
    /// `limits.max_allocations`.
    Total,
    /// `limits.max_allocations_per_user`.
    User,
}

/// What the servers of one process share: allocation counts, the relay port pools and the
/// port reservations.
#[derive(Debug)]
pub struct Shared {
    counts: Mutex<Counts>,
    ports: Mutex<Ports>,
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
}

impl Shared {
    /// Shared state over the relay port range `ports`.
    pub fn new(ports: RangeInclusive<u16>) -> Self {
        Self {
            counts: Mutex::default(),
            ports: Mutex::new(Ports {
                v4: PortPool::new(ports.clone()),
                v6: PortPool::new(ports),
                reservations: HashMap::new(),
            }),
        }
    }

    /// The port pools and reservations, locked.
    pub(super) fn ports(&self) -> MutexGuard<'_, Ports> {
        self.ports.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one more allocation of `user`, unless a limit is reached.
    pub(super) fn try_take(
        &self,
        user: &str,
        max_total: usize,
        max_per_user: usize,
    ) -> Result<(), Exceeded> {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if c.total >= max_total {
            return Err(Exceeded::Total);
        }
        let n = c.per_user.get(user).copied().unwrap_or(0);
        if n >= max_per_user {
            return Err(Exceeded::User);
        }
        c.total += 1;
        *c.per_user.entry(user.to_owned()).or_default() += 1;
        Ok(())
    }

    /// Counts one allocation of `user` less.
    pub(super) fn release(&self, user: &str) {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_user.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                c.per_user.remove(user);
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

    #[test]
    fn limits_hold_across_takers() {
        let q = Shared::new(1000..=1009);
        assert_eq!(q.try_take("a", 3, 2), Ok(()));
        assert_eq!(q.try_take("a", 3, 2), Ok(()));
        assert_eq!(q.try_take("a", 3, 2), Err(Exceeded::User));
        assert_eq!(q.try_take("b", 3, 2), Ok(()));
        assert_eq!(q.try_take("c", 3, 2), Err(Exceeded::Total));
        q.release("a");
        assert_eq!(q.total(), 2);
        assert_eq!(q.try_take("c", 3, 2), Ok(()));
        q.release("nobody");
        assert_eq!(q.total(), 2);
    }
}
