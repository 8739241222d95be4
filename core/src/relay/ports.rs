//! The relay port pool: which ports of the configured range are taken, per relay address.
//! No OS calls: the shell binds what the core picks and reports failures back.

use std::ops::RangeInclusive;

use rand::RngCore;

/// A set of ports within a range, stored as a bitmap.
#[derive(Debug, Clone)]
pub(super) struct PortPool {
    start: u16,
    len: usize,
    used: Vec<u64>,
    in_use: usize,
}

impl PortPool {
    /// Creates an empty pool over `range`.
    pub(super) fn new(range: RangeInclusive<u16>) -> Self {
        let start = *range.start();
        let len = usize::from(*range.end() - start) + 1;
        Self {
            start,
            len,
            used: vec![0; len.div_ceil(64)],
            in_use: 0,
        }
    }

    /// Returns how many ports are taken.
    #[cfg(test)]
    pub(super) fn in_use(&self) -> usize {
        self.in_use
    }

    /// Returns true when `port` is in the range.
    pub(super) fn contains(&self, port: u16) -> bool {
        port >= self.start && usize::from(port - self.start) < self.len
    }

    /// Takes a free port, starting the search at a random place. With `even`, only even ports
    /// are considered; with `pair`, the next port must be free too and is taken as well.
    pub(super) fn take(&mut self, rng: &mut impl RngCore, even: bool, pair: bool) -> Option<u16> {
        let first = rng.next_u32() as usize % self.len;
        for i in 0..self.len {
            let idx = (first + i) % self.len;
            let port = self.start + idx as u16;
            if even && port % 2 != 0 {
                continue;
            }
            if self.is_used(idx) {
                continue;
            }
            if pair {
                let next = idx + 1;
                if next >= self.len || self.is_used(next) {
                    continue;
                }
                self.set(next, true);
            }
            self.set(idx, true);
            return Some(port);
        }
        None
    }

    /// Marks `port` taken; returns false when it was already taken or is out of range.
    #[cfg(test)]
    pub(super) fn take_exact(&mut self, port: u16) -> bool {
        if !self.contains(port) {
            return false;
        }
        let idx = usize::from(port - self.start);
        if self.is_used(idx) {
            return false;
        }
        self.set(idx, true);
        true
    }

    /// Returns `port` to the pool.
    pub(super) fn release(&mut self, port: u16) {
        if self.contains(port) {
            let idx = usize::from(port - self.start);
            if self.is_used(idx) {
                self.set(idx, false);
            }
        }
    }

    fn is_used(&self, idx: usize) -> bool {
        self.used[idx / 64] & (1 << (idx % 64)) != 0
    }

    fn set(&mut self, idx: usize, used: bool) {
        if used {
            self.used[idx / 64] |= 1 << (idx % 64);
            self.in_use += 1;
        } else {
            self.used[idx / 64] &= !(1 << (idx % 64));
            self.in_use -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    #[test]
    fn takes_every_port_once_then_none() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut pool = PortPool::new(50000..=50009);
        let mut got: Vec<u16> = (0..10)
            .filter_map(|_| pool.take(&mut rng, false, false))
            .collect();
        got.sort_unstable();
        assert_eq!(got, (50000..=50009).collect::<Vec<_>>());
        assert_eq!(pool.take(&mut rng, false, false), None);
        pool.release(50004);
        assert_eq!(pool.take(&mut rng, false, false), Some(50004));
    }

    #[test]
    fn even_pairs() {
        let mut rng = SmallRng::seed_from_u64(2);
        let mut pool = PortPool::new(50001..=50004);
        let p = pool.take(&mut rng, true, true).unwrap();
        assert_eq!(p, 50002);
        assert!(!pool.take_exact(50003));
        assert_eq!(pool.take(&mut rng, true, true), None);
        assert_eq!(pool.take(&mut rng, true, false), Some(50004));
        assert_eq!(pool.in_use(), 3);
    }
}
