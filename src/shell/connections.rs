//! Admission of TCP/TLS connections, so that clients without credentials cannot use up the
//! relay's connection slots.
//!
//! - Per source: at most `limits.max_connections_per_source` connections from one IPv4
//!   address or one IPv6 prefix (`limits.ipv6_source_prefix`, a /64 by default), counted
//!   with the core's [`Source`].
//! - In total: at most `limits.max_connections`. A new connection at the limit closes the
//!   oldest connection that has not completed an authenticated Allocate ("shed"); one with an
//!   allocation is never shed for this. When every connection has one, the new one is closed.
//! - Marked: once the connection's Allocate has succeeded, its worker marks it
//!   ([`Mark::allocated`]); from then on it can no longer be shed, and its read deadline is the
//!   idle timeout instead of the setup timeout (see `stream.rs`).
//!
//! All of it is one small table behind one lock, taken at accept, at the mark and at close.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use crate::relay::Source;

/// The connection table of every TCP/TLS listener of the relay.
#[derive(Debug)]
pub(super) struct Connections {
    max_total: usize,
    max_per_source: usize,
    ipv6_prefix: u8,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    /// Every admitted connection by id (ids grow with age).
    open: HashMap<u64, Entry>,
    /// The ids of connections without an allocation, oldest first.
    unallocated: BTreeSet<u64>,
    per_source: HashMap<Source, usize>,
}

#[derive(Debug)]
struct Entry {
    source: Source,
    /// Fired when the connection is shed.
    shed: Option<oneshot::Sender<()>>,
}

/// The refusal-summary rule of a connection closed to admit a new one.
pub(super) const SHED_RULE: &str = "shed-unallocated";

/// Why a new connection is not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// `limits.max_connections_per_source`.
    PerSource,
    /// `limits.max_connections`, and every connection has an allocation.
    Total,
}

impl Refused {
    /// The rule name in the refusal summary.
    pub(super) fn rule(self) -> &'static str {
        match self {
            Self::PerSource => "limit-per-source",
            Self::Total => "limit-total",
        }
    }
}

/// An admitted connection: its slot is freed when this is dropped.
#[derive(Debug)]
pub(super) struct Admitted {
    id: u64,
    conns: Arc<Connections>,
    /// Completes when the connection is shed for a new one.
    pub(super) shed: oneshot::Receiver<()>,
    /// Set once the connection has an allocation (shared with its [`Mark`]).
    pub(super) allocated: Arc<AtomicBool>,
    /// Whether admitting it shed another connection.
    pub(super) shed_another: bool,
}

/// Handed to the connection's worker, which calls [`Mark::allocated`] once the connection's
/// Allocate has succeeded.
#[derive(Debug)]
pub(crate) struct Mark {
    id: u64,
    conns: Arc<Connections>,
    allocated: Arc<AtomicBool>,
}

impl Connections {
    pub(super) fn new(max_total: usize, max_per_source: usize, ipv6_prefix: u8) -> Self {
        Self {
            max_total,
            max_per_source,
            ipv6_prefix,
            table: Mutex::default(),
        }
    }

    /// Admits a connection from `ip`, shedding the oldest connection without an allocation
    /// when the total limit is reached.
    ///
    /// # Errors
    ///
    /// Returns why the connection must be closed at once.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refused> {
        let source = Source::new(ip, self.ipv6_prefix);
        let mut t = self.lock();
        if t.per_source.get(&source).copied().unwrap_or(0) >= self.max_per_source {
            return Err(Refused::PerSource);
        }
        let mut shed_another = false;
        if t.open.len() >= self.max_total {
            let oldest = t.unallocated.first().copied().ok_or(Refused::Total)?;
            if let Some(mut victim) = t.remove(oldest)
                && let Some(tx) = victim.shed.take()
            {
                let _ = tx.send(());
            }
            shed_another = true;
        }
        let id = t.next_id;
        t.next_id += 1;
        let (tx, rx) = oneshot::channel();
        t.open.insert(
            id,
            Entry {
                source,
                shed: Some(tx),
            },
        );
        t.unallocated.insert(id);
        *t.per_source.entry(source).or_default() += 1;
        Ok(Admitted {
            id,
            conns: self.clone(),
            shed: rx,
            allocated: Arc::default(),
            shed_another,
        })
    }

    /// Connections counted now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().open.len()
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Table {
    /// Forgets connection `id` (closed or shed); returns it if it was still counted.
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.open.remove(&id)?;
        self.unallocated.remove(&id);
        if let Some(n) = self.per_source.get_mut(&e.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&e.source);
            }
        }
        Some(e)
    }
}

impl Admitted {
    /// The worker's handle for marking this connection as allocated.
    pub(super) fn mark(&self) -> Mark {
        Mark {
            id: self.id,
            conns: self.conns.clone(),
            allocated: self.allocated.clone(),
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.conns.lock().remove(self.id);
    }
}

impl Mark {
    /// The connection has completed an authenticated Allocate: it is never shed, and its
    /// setup deadline no longer applies. Does nothing to a connection already shed.
    pub(crate) fn allocated(&self) {
        let mut t = self.conns.lock();
        if t.open.contains_key(&self.id) {
            t.unallocated.remove(&self.id);
            self.allocated.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_is_a_metric_label() {
        for rule in [Refused::PerSource.rule(), Refused::Total.rule(), SHED_RULE] {
            assert!(
                crate::metrics::CONNECTION_REFUSAL_RULES.contains(&rule),
                "{rule}"
            );
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an IP literal")
    }

    #[test]
    fn an_ipv6_prefix_is_one_source_and_ipv4_counts_per_address() {
        let c = Arc::new(Connections::new(100, 2, 64));
        let a = c.admit(ip("2001:db8:0:1::1")).expect("first of the /64");
        let _b = c
            .admit(ip("2001:db8:0:1:ffff::2"))
            .expect("second of the /64");
        assert_eq!(
            c.admit(ip("2001:db8:0:1::3")).err(),
            Some(Refused::PerSource)
        );
        let _other_prefix = c.admit(ip("2001:db8:0:2::1")).expect("another /64");
        let _v4a = c.admit(ip("192.0.2.1")).expect("IPv4");
        let _v4b = c.admit(ip("192.0.2.1")).expect("IPv4 again");
        let _v4c = c
            .admit(ip("192.0.2.2"))
            .expect("the next IPv4 address is its own source");
        assert_eq!(
            c.admit(ip("::ffff:192.0.2.1")).err(),
            Some(Refused::PerSource)
        );
        drop(a);
        let _again = c
            .admit(ip("2001:db8:0:1::3"))
            .expect("a slot of the /64 is free");
    }

    #[test]
    fn at_the_total_limit_the_oldest_unallocated_connection_is_shed() {
        let c = Arc::new(Connections::new(3, 10, 64));
        let mut first = c.admit(ip("192.0.2.1")).expect("1");
        let mut second = c.admit(ip("192.0.2.2")).expect("2");
        let mut third = c.admit(ip("192.0.2.3")).expect("3");
        first.mark().allocated();
        assert!(first.allocated.load(Ordering::Acquire));

        let fourth = c.admit(ip("192.0.2.4")).expect("admitted by shedding");

        assert!(fourth.shed_another);
        assert_eq!(
            first.shed.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        );
        assert_eq!(
            second.shed.try_recv(),
            Ok(()),
            "the oldest without an allocation"
        );
        assert_eq!(
            third.shed.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        );
        assert_eq!(c.len(), 3);
        // The shed connection's task ends later; its drop does not free a second slot.
        drop(second);
        assert_eq!(c.len(), 3);
        // A mark that comes too late does nothing.
        let late = Arc::new(Connections::new(1, 10, 64));
        let victim = late.admit(ip("192.0.2.1")).expect("1");
        let mark = victim.mark();
        let _new = late.admit(ip("192.0.2.2")).expect("sheds the first");
        mark.allocated();
        assert!(!victim.allocated.load(Ordering::Acquire));
        drop(third);
    }

    #[test]
    fn connections_with_an_allocation_are_never_shed() {
        let c = Arc::new(Connections::new(2, 10, 64));
        let a = c.admit(ip("192.0.2.1")).expect("1");
        let b = c.admit(ip("192.0.2.2")).expect("2");
        a.mark().allocated();
        b.mark().allocated();

        assert_eq!(c.admit(ip("192.0.2.3")).err(), Some(Refused::Total));

        drop(a);
        let _c = c.admit(ip("192.0.2.3")).expect("a slot is free again");
    }
}
