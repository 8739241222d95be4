//! Allocation quotas shared by the servers of one relay process.
//!
//! A relay runs one [`Server`](super::Server) per worker thread; `limits.max_allocations` and
//! `limits.max_allocations_per_user` hold for the process, so the counts live here, behind a
//! lock that is taken when an allocation is created or ends, never per packet.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// Which quota refused an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exceeded {
    /// `limits.max_allocations`.
    Total,
    /// `limits.max_allocations_per_user`.
    User,
}

/// Allocation counts, in total and per user.
#[derive(Debug, Default)]
pub struct Quotas {
    inner: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_user: HashMap<String, usize>,
}

impl Quotas {
    /// Counts one more allocation of `user`, unless a limit is reached.
    pub(super) fn try_take(
        &self,
        user: &str,
        max_total: usize,
        max_per_user: usize,
    ) -> Result<(), Exceeded> {
        let mut c = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
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
        let mut c = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
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
        self.inner
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
        let q = Quotas::default();
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
