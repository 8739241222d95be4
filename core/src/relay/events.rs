//! What the core reports to the shell: [`Event`]s for logs and evidence, [`Stats`] counters.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use super::table::{PeerTraffic, TrafficCounters};
use super::types::{AllocationId, Transport};
use crate::policy::{CountryCode, Facts, Rule, Subject};

/// Why an allocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndReason {
    /// The client sent Refresh with LIFETIME 0.
    Released,
    /// The lifetime ran out.
    Expired,
    /// The relay socket(s) could not be bound.
    BindFailed,
    /// The server shut down.
    Shutdown,
    /// A reloaded policy refuses the client.
    PolicyChanged,
    /// The client's TCP/TLS connection closed.
    ConnectionClosed,
    /// The relay could not keep evidence of it (the evidence store failed for too long).
    EvidenceUnavailable,
}

impl EndReason {
    /// Returns a stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Released => "released",
            Self::Expired => "expired",
            Self::BindFailed => "bind-failed",
            Self::Shutdown => "shutdown",
            Self::PolicyChanged => "policy-changed",
            Self::ConnectionClosed => "connection-closed",
            Self::EvidenceUnavailable => "evidence-unavailable",
        }
    }
}

/// Which request or step made a residency decision (evidence records name it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// An Allocate request from a client on `transport`; `user` is the REST user id (may be
    /// empty).
    Allocate {
        /// The client's transport.
        transport: Transport,
        /// The REST user id.
        user: String,
    },
    /// A TCP/TLS connection, at accept.
    Connect {
        /// The client's transport.
        transport: Transport,
    },
    /// A Refresh (a reloaded policy is applied to the allocation).
    Refresh,
    /// A CreatePermission request.
    CreatePermission,
    /// A ChannelBind request.
    ChannelBind,
}

/// A lifecycle event, carrying everything a log line or evidence record needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An allocation became usable.
    AllocationCreated {
        /// The allocation it concerns.
        id: AllocationId,
        /// The wall-clock time of the input that caused it.
        at: SystemTime,
        /// Client transport.
        transport: Transport,
        /// Client address (personal data: redact in logs).
        client: SocketAddr,
        /// The REST user id (may be empty).
        user: String,
        /// Relayed transport addresses as advertised.
        relayed: Vec<SocketAddr>,
        /// Granted lifetime.
        lifetime: Duration,
        /// The rule that admitted the client.
        rule: Rule,
        /// The facts of that decision (country, ASN, source).
        facts: Facts,
    },
    /// An allocation's lifetime was refreshed.
    AllocationRefreshed {
        /// The allocation it concerns.
        id: AllocationId,
        /// The wall-clock time of the input that caused it.
        at: SystemTime,
        /// Granted lifetime.
        lifetime: Duration,
    },
    /// An allocation ended.
    AllocationEnded {
        /// The allocation it concerns.
        id: AllocationId,
        /// The wall-clock time of the input that caused it.
        at: SystemTime,
        /// When it was created.
        started: SystemTime,
        /// Why it ended.
        reason: EndReason,
        /// Traffic relayed over its life.
        traffic: TrafficCounters,
        /// The same traffic per peer IP, one entry for every peer ever permitted (also those
        /// whose permission expired), in the order of their first permission.
        peers: Vec<PeerTraffic>,
    },
    /// A permission was installed or refreshed after the policy allowed the peer.
    PermissionAllowed {
        /// The allocation it concerns.
        id: AllocationId,
        /// The wall-clock time of the input that caused it.
        at: SystemTime,
        /// Peer IP (personal data: redact in logs).
        peer: IpAddr,
        /// The request that asked for it.
        stage: Stage,
        /// The deciding rule.
        rule: Rule,
        /// The facts of the decision.
        facts: Facts,
    },
    /// A channel was bound.
    ChannelBound {
        /// The allocation it concerns.
        id: AllocationId,
        /// The wall-clock time of the input that caused it.
        at: SystemTime,
        /// The bound channel.
        channel: crate::stun::ChannelNumber,
        /// Peer (personal data: redact in logs).
        peer: SocketAddr,
        /// The rule that allowed the peer.
        rule: Rule,
        /// The facts of that decision.
        facts: Facts,
    },
    /// The policy refused an address; the request was answered with 403.
    Denied {
        /// Allocation id, when the refusal concerns an existing allocation.
        id: Option<AllocationId>,
        /// The wall-clock time of the input that caused it.
        at: SystemTime,
        /// The request or step that was refused.
        stage: Stage,
        /// Client or peer.
        subject: Subject,
        /// The refused address (personal data: redact in logs).
        addr: IpAddr,
        /// The deciding rule.
        rule: Rule,
        /// The facts of the decision.
        facts: Facts,
    },
}

/// Why a datagram was dropped. Its [`name`](Self::name) is the key in [`Stats::dropped`] and
/// the `reason` label of the shell's metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Neither STUN nor ChannelData, or STUN/ChannelData that does not parse.
    Malformed,
    /// A response or an indication other than Send from a client.
    UnexpectedMessage,
    /// No allocation for the 5-tuple or relay address.
    NoAllocation,
    /// The allocation's relay sockets are still being bound.
    AllocationPending,
    /// No permission for the peer's address.
    NoPermission,
    /// ChannelData on a channel that is not bound.
    NoChannel,
    /// The peer is the relay host itself, on a port outside the relay range.
    RelayHostPort,
    /// A Send indication with a comprehension-required attribute this relay cannot honour.
    UnsupportedAttribute,
    /// The allocation has no relayed address of the peer's family.
    FamilyMismatch,
    /// The framed message would not fit the buffer or a STUN length field.
    TooLarge,
    /// A Binding request over UDP from a client address the residency policy refuses.
    RefusedSource,
}

impl DropReason {
    /// Returns the name used in [`Stats::dropped`] and in metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnexpectedMessage => "unexpected-message",
            Self::NoAllocation => "no-allocation",
            Self::AllocationPending => "allocation-pending",
            Self::NoPermission => "no-permission",
            Self::NoChannel => "no-channel",
            Self::RelayHostPort => "relay-host-port",
            Self::UnsupportedAttribute => "unsupported-attribute",
            Self::FamilyMismatch => "family-mismatch",
            Self::TooLarge => "too-large",
            Self::RefusedSource => "refused-source",
        }
    }
}

/// Counters of the core, read by the shell for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Allocations created.
    pub allocations_created: u64,
    /// Allocations ended, by reason.
    pub allocations_ended: BTreeMap<&'static str, u64>,
    /// Requests answered with success, by method.
    pub requests_ok: BTreeMap<&'static str, u64>,
    /// Requests answered with an error, by (method, code).
    pub requests_failed: BTreeMap<(&'static str, u16), u64>,
    /// Policy refusals, by (subject, rule id).
    pub denials: BTreeMap<(&'static str, &'static str), u64>,
    /// Packets relayed client → peer.
    pub packets_to_peer: u64,
    /// Payload bytes relayed client → peer.
    pub bytes_to_peer: u64,
    /// Packets relayed peer → client.
    pub packets_to_client: u64,
    /// Payload bytes relayed peer → client.
    pub bytes_to_client: u64,
    /// Datagrams dropped, by [`DropReason::name`].
    pub dropped: BTreeMap<&'static str, u64>,
    /// Requests refused by authentication, by reason (one of
    /// [`AUTH_FAILURE_REASONS`](super::AUTH_FAILURE_REASONS)).
    pub auth_failures: BTreeMap<&'static str, u64>,
    /// The relayed packets and bytes again, by the client's transport (indexed by
    /// [`Transport::index`]).
    pub relayed_by_transport: [RelayedTraffic; 3],
    /// The part of the relayed packets and bytes above that the kernel fast path relayed.
    pub relayed_in_kernel: TrafficCounters,
    /// Allocations created, by the client's country (`None`: the database does not know it).
    pub allocations_by_country: BTreeMap<Option<CountryCode>, u64>,
    /// Policy refusals, by (subject, the address's country; `None`: unknown or not looked up).
    pub denials_by_country: BTreeMap<(&'static str, Option<CountryCode>), u64>,
    /// Answers to unauthenticated UDP requests not sent: their source prefix had used its
    /// budget ([`AnswerLimit`](super::AnswerLimit)).
    pub answers_rate_limited: u64,
}

/// Relayed packets and payload bytes each way, for one client transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayedTraffic {
    /// Packets relayed client → peer.
    pub packets_to_peer: u64,
    /// Payload bytes relayed client → peer.
    pub bytes_to_peer: u64,
    /// Packets relayed peer → client.
    pub packets_to_client: u64,
    /// Payload bytes relayed peer → client.
    pub bytes_to_client: u64,
}

impl Stats {
    pub(crate) fn drop(&mut self, reason: DropReason) {
        *self.dropped.entry(reason.name()).or_default() += 1;
    }

    /// Adds the counters of `other` (another worker's server) to these.
    pub fn merge(&mut self, other: &Self) {
        fn add<K: Ord + Copy>(into: &mut BTreeMap<K, u64>, from: &BTreeMap<K, u64>) {
            for (k, v) in from {
                *into.entry(*k).or_default() += v;
            }
        }
        self.allocations_created += other.allocations_created;
        add(&mut self.allocations_ended, &other.allocations_ended);
        add(&mut self.requests_ok, &other.requests_ok);
        add(&mut self.requests_failed, &other.requests_failed);
        add(&mut self.denials, &other.denials);
        self.packets_to_peer += other.packets_to_peer;
        self.bytes_to_peer += other.bytes_to_peer;
        self.packets_to_client += other.packets_to_client;
        self.bytes_to_client += other.bytes_to_client;
        self.relayed_in_kernel.add(&other.relayed_in_kernel);
        add(&mut self.dropped, &other.dropped);
        add(&mut self.auth_failures, &other.auth_failures);
        add(
            &mut self.allocations_by_country,
            &other.allocations_by_country,
        );
        add(&mut self.denials_by_country, &other.denials_by_country);
        self.answers_rate_limited += other.answers_rate_limited;
        for (t, o) in self
            .relayed_by_transport
            .iter_mut()
            .zip(&other.relayed_by_transport)
        {
            t.packets_to_peer += o.packets_to_peer;
            t.bytes_to_peer += o.bytes_to_peer;
            t.packets_to_client += o.packets_to_client;
            t.bytes_to_client += o.bytes_to_client;
        }
    }

    /// Counts a packet of `len` payload bytes relayed from a client on `transport` to a peer.
    pub(crate) fn relayed_to_peer(&mut self, transport: Transport, len: u64) {
        self.packets_to_peer += 1;
        self.bytes_to_peer += len;
        let t = &mut self.relayed_by_transport[transport.index()];
        t.packets_to_peer += 1;
        t.bytes_to_peer += len;
    }

    /// Counts what the kernel relayed for a client on `transport`, both ways.
    pub(crate) fn count_kernel(&mut self, transport: Transport, traffic: &TrafficCounters) {
        self.relayed_in_kernel.add(traffic);
        self.packets_to_peer += traffic.packets_to_peer;
        self.bytes_to_peer += traffic.bytes_to_peer;
        self.packets_to_client += traffic.packets_to_client;
        self.bytes_to_client += traffic.bytes_to_client;
        let t = &mut self.relayed_by_transport[transport.index()];
        t.packets_to_peer += traffic.packets_to_peer;
        t.bytes_to_peer += traffic.bytes_to_peer;
        t.packets_to_client += traffic.packets_to_client;
        t.bytes_to_client += traffic.bytes_to_client;
    }

    /// Counts a packet of `len` payload bytes relayed from a peer to a client on `transport`.
    pub(crate) fn relayed_to_client(&mut self, transport: Transport, len: u64) {
        self.packets_to_client += 1;
        self.bytes_to_client += len;
        let t = &mut self.relayed_by_transport[transport.index()];
        t.packets_to_client += 1;
        t.bytes_to_client += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_every_counter() {
        let mut a = Stats {
            allocations_created: 2,
            packets_to_peer: 10,
            ..Stats::default()
        };
        a.drop(DropReason::Malformed);
        a.requests_ok.insert("Allocate", 2);
        let mut b = Stats {
            allocations_created: 1,
            bytes_to_client: 7,
            ..Stats::default()
        };
        b.drop(DropReason::Malformed);
        b.drop(DropReason::NoPermission);
        b.denials.insert(("peer", "outside-region"), 3);
        a.merge(&b);
        assert_eq!(a.allocations_created, 3);
        assert_eq!(a.packets_to_peer, 10);
        assert_eq!(a.bytes_to_client, 7);
        assert_eq!(a.dropped.get("malformed"), Some(&2));
        assert_eq!(a.dropped.get("no-permission"), Some(&1));
        assert_eq!(a.denials.get(&("peer", "outside-region")), Some(&3));
        assert_eq!(a.requests_ok.get("Allocate"), Some(&2));
    }

    #[test]
    fn relayed_traffic_is_counted_in_total_and_by_transport() {
        let mut a = Stats::default();
        a.relayed_to_peer(Transport::Udp, 100);
        a.relayed_to_client(Transport::Tcp, 7);
        let mut b = Stats::default();
        b.relayed_to_peer(Transport::Udp, 5);
        b.relayed_to_peer(Transport::Tls, 3);
        b.auth_failures.insert("bad-password", 2);
        let de = CountryCode::parse("DE");
        b.allocations_by_country.insert(de, 1);
        a.merge(&b);
        assert_eq!((a.packets_to_peer, a.bytes_to_peer), (3, 108));
        assert_eq!((a.packets_to_client, a.bytes_to_client), (1, 7));
        let udp = a.relayed_by_transport[Transport::Udp.index()];
        assert_eq!((udp.packets_to_peer, udp.bytes_to_peer), (2, 105));
        let tcp = a.relayed_by_transport[Transport::Tcp.index()];
        assert_eq!((tcp.packets_to_client, tcp.bytes_to_client), (1, 7));
        let tls = a.relayed_by_transport[Transport::Tls.index()];
        assert_eq!((tls.packets_to_peer, tls.bytes_to_peer), (1, 3));
        assert_eq!(a.auth_failures.get("bad-password"), Some(&2));
        assert_eq!(a.allocations_by_country.get(&de), Some(&1));
    }
}
