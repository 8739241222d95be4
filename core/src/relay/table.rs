//! Allocation, permission and channel state, and the expiry index.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Instant, SystemTime};

use super::types::{AllocationId, FiveTuple, ReservationToken};
use crate::stun::attr::Family;
use crate::stun::{ChannelNumber, TransactionId};

/// Permission lifetime. See RFC 8656 §9.
pub(crate) const PERMISSION_LIFETIME_SECS: u64 = 300;
/// Channel binding lifetime. See RFC 8656 §12.
pub(crate) const CHANNEL_LIFETIME_SECS: u64 = 600;
/// After a channel binding expires, neither its number nor its peer may be rebound to anything
/// else for this long. See RFC 8656 §12.
pub(crate) const CHANNEL_COOLDOWN_SECS: u64 = 300;
/// How long an EVEN-PORT reservation is held. See RFC 8656 §7.2 (about 30 s).
pub(crate) const RESERVATION_LIFETIME_SECS: u64 = 30;
/// Distinct peer IPs one allocation may have had permissions for over its whole life (the
/// per-peer traffic ledger of [`PeerTraffic`]). A permission for a further peer is refused
/// with 508, so the ledger, and the `allocation-ended` evidence record, stay bounded: at most
/// about 3.5 KiB of counters per allocation. ICE uses a handful of peers per allocation.
pub const MAX_LEDGER_PEERS: usize = 64;

slotmap::new_key_type! {
    /// The key of an allocation in the server's table; a stale key (of a deleted allocation
    /// whose slot was reused) finds nothing.
    pub(crate) struct Slot;
}

/// One relayed transport address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Relayed {
    pub(crate) family: Family,
    /// Where the relay socket is bound.
    pub(crate) local: SocketAddr,
    /// What the client is told (1:1 NAT public address, or the local one).
    pub(crate) advertised: SocketAddr,
}

/// The long-term key an allocation was authenticated with and which integrity to answer with.
#[derive(Debug, Clone)]
pub(crate) struct AuthState {
    pub(crate) username: String,
    pub(crate) user_key: String,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Permission {
    pub(crate) ip: IpAddr,
    pub(crate) expires: Instant,
    /// The policy generation that allowed it.
    pub(crate) generation: u64,
    /// The peer is one of the relay's own addresses: only relay ports may be reached.
    pub(crate) relay_host: bool,
    /// The index of this peer's entry in [`Allocation::peers`]: the data path counts on it
    /// without a second lookup.
    pub(crate) ledger: usize,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Channel {
    pub(crate) number: ChannelNumber,
    pub(crate) peer: SocketAddr,
    pub(crate) expires: Instant,
}

/// Per-allocation traffic counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficCounters {
    /// Packets relayed client → peer.
    pub packets_to_peer: u64,
    /// Payload bytes relayed client → peer.
    pub bytes_to_peer: u64,
    /// Packets relayed peer → client.
    pub packets_to_client: u64,
    /// Payload bytes relayed peer → client.
    pub bytes_to_client: u64,
}

/// The traffic exchanged with one peer IP over an allocation's life, whether or not its
/// permission is still installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerTraffic {
    /// The peer's IP (personal data: redact in logs).
    pub peer: IpAddr,
    /// Packets and payload bytes each way.
    pub traffic: TrafficCounters,
}

impl TrafficCounters {
    /// Counts one packet of `bytes` payload bytes relayed client → peer.
    pub(crate) fn count_to_peer(&mut self, bytes: u64) {
        self.packets_to_peer += 1;
        self.bytes_to_peer += bytes;
    }

    /// Counts one packet of `bytes` payload bytes relayed peer → client.
    pub(crate) fn count_to_client(&mut self, bytes: u64) {
        self.packets_to_client += 1;
        self.bytes_to_client += bytes;
    }

    /// Adds `other` (traffic relayed elsewhere, e.g. in the kernel).
    pub(crate) fn add(&mut self, other: &Self) {
        self.packets_to_peer += other.packets_to_peer;
        self.bytes_to_peer += other.bytes_to_peer;
        self.packets_to_client += other.packets_to_client;
        self.bytes_to_client += other.bytes_to_client;
    }
}

/// Which relay port an Allocate asks for. See RFC 8656 §7.2 (EVEN-PORT, RESERVATION-TOKEN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortRequest {
    /// Any port of the range.
    Any,
    /// An even port (EVEN-PORT with R = 0).
    Even,
    /// An even port, and the next one reserved for a later Allocate (EVEN-PORT with R = 1).
    EvenReserveNext,
    /// The port an earlier allocation reserved (RESERVATION-TOKEN).
    Token(ReservationToken),
}

/// An Allocate whose relay sockets are being bound by the shell.
#[derive(Debug, Clone)]
pub(crate) struct PendingAllocate {
    pub(crate) tid: TransactionId,
    pub(crate) integrity: super::auth::ResponseIntegrity,
    pub(crate) port: PortRequest,
    /// The families to relay on, one relayed address each.
    pub(crate) families: Vec<Family>,
    pub(crate) attempts: u8,
    /// The family refused in a dual-stack request (ADDRESS-ERROR-CODE 440).
    pub(crate) refused_family: Option<Family>,
    /// Ports the OS refused (AddrInUse) during this Allocate, held until it completes.
    pub(crate) busy: Vec<(Family, u16)>,
}

#[derive(Debug, Clone)]
pub(crate) enum AllocState {
    Pending(PendingAllocate),
    Active {
        /// The Allocate's transaction id and success response, for retransmissions.
        tid: TransactionId,
        response: Vec<u8>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Allocation {
    pub(crate) id: AllocationId,
    pub(crate) five_tuple: FiveTuple,
    /// The client's source, as counted by `limits.max_allocations_per_source`.
    pub(crate) source: super::Source,
    pub(crate) auth: AuthState,
    pub(crate) relayed: Vec<Relayed>,
    pub(crate) state: AllocState,
    pub(crate) expires: Instant,
    pub(crate) created: SystemTime,
    pub(crate) lifetime_secs: u32,
    pub(crate) permissions: Vec<Permission>,
    pub(crate) channels: Vec<Channel>,
    /// Expired bindings (number, peer, until) in the rebind cooldown.
    pub(crate) cooldowns: Vec<(ChannelNumber, SocketAddr, Instant)>,
    /// Reservation token this allocation holds for the next port, if any.
    pub(crate) reservation: Option<ReservationToken>,
    pub(crate) traffic: TrafficCounters,
    /// The per-peer ledger: one entry per peer IP ever permitted, in the order of their first
    /// permission, at most [`MAX_LEDGER_PEERS`]. Entries outlive their permissions.
    pub(crate) peers: Vec<PeerTraffic>,
    /// The policy generation the client and permissions were last decided under.
    pub(crate) policy_generation: u64,
    /// The rule that admitted the client, and its facts.
    pub(crate) client_rule: crate::policy::Rule,
    pub(crate) client_facts: crate::policy::Facts,
    /// The kernel paths announced for it, sorted (see `relay::kernel`).
    pub(crate) kernel_paths: Vec<super::KernelPath>,
    /// Kernel paths announced removed whose last counters the shell has not reported yet.
    pub(crate) kernel_removing: usize,
}

impl Allocation {
    pub(crate) fn is_active(&self) -> bool {
        matches!(self.state, AllocState::Active { .. })
    }

    pub(crate) fn relayed_for(&self, family: Family) -> Option<&Relayed> {
        self.relayed.iter().find(|r| r.family == family)
    }

    pub(crate) fn permission(&self, ip: IpAddr, now: Instant) -> Option<&Permission> {
        self.permissions
            .iter()
            .find(|p| p.ip == ip && p.expires > now)
    }

    /// Returns how many of `ips` would need a new ledger entry.
    pub(crate) fn new_ledger_peers(&self, ips: impl Iterator<Item = IpAddr>) -> usize {
        ips.filter(|ip| !self.peers.iter().any(|p| p.peer == *ip))
            .count()
    }

    /// Returns the ledger index of `ip`, adding an entry if it has none.
    pub(crate) fn ledger_index(&mut self, ip: IpAddr) -> usize {
        if let Some(i) = self.peers.iter().position(|p| p.peer == ip) {
            return i;
        }
        self.peers.reserve_exact(1);
        self.peers.push(PeerTraffic {
            peer: ip,
            traffic: TrafficCounters::default(),
        });
        self.peers.len() - 1
    }

    pub(crate) fn channel_by_number(
        &self,
        number: ChannelNumber,
        now: Instant,
    ) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|c| c.number == number && c.expires > now)
    }

    pub(crate) fn channel_by_peer(&self, peer: SocketAddr, now: Instant) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|c| c.peer == peer && c.expires > now)
    }
}

/// Something with a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    Allocation(Slot),
    Permission(Slot, IpAddr),
    Channel(Slot, ChannelNumber),
    Cooldown(Slot),
    Reservation(ReservationToken),
}

/// Deadlines ordered by time. Entries are not removed when a deadline moves (a refresh adds a
/// new entry) or when their object goes away; a fired entry whose object has a later deadline,
/// or no object, is skipped. So that such stale entries cannot pile up (an allocation set up
/// and released a thousand times a second would otherwise leave 600,000 entries behind, one
/// per lifetime), the server drops them with [`Timers::retain`] whenever the map has doubled
/// since it last did ([`Timers::compaction_due`]): memory stays within twice the live entries
/// plus [`Timers::MIN_COMPACTION`], at an amortised O(log n) per entry. Each operation is
/// O(log n).
#[derive(Debug)]
pub(crate) struct Timers {
    map: BTreeMap<(Instant, u64), Timer>,
    seq: u64,
    /// The size at which stale entries are dropped next.
    compact_at: usize,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            map: BTreeMap::new(),
            seq: 0,
            compact_at: Self::MIN_COMPACTION,
        }
    }
}

impl Timers {
    /// Below this many entries, stale ones are left to fire.
    pub(crate) const MIN_COMPACTION: usize = 4096;

    pub(crate) fn add(&mut self, at: Instant, t: Timer) {
        self.seq += 1;
        self.map.insert((at, self.seq), t);
    }

    /// Entries in the map, stale ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The map has grown to twice its size after the last [`Timers::retain`].
    pub(crate) fn compaction_due(&self) -> bool {
        self.map.len() >= self.compact_at
    }

    /// Keeps the entries for which `keep(deadline, timer)` holds.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(Instant, Timer) -> bool) {
        self.map.retain(|&(at, _), t| keep(at, *t));
        self.compact_at = (2 * self.map.len()).max(Self::MIN_COMPACTION);
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.map.first_key_value().map(|((at, _), _)| *at)
    }

    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let (&(at, _), _) = self.map.first_key_value()?;
        if at > now {
            return None;
        }
        self.map.pop_first().map(|(_, t)| t)
    }
}
