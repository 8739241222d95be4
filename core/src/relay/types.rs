//! Newtypes and value types shared by the core and its driver.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Instant, SystemTime};

/// Both clocks, read once by the shell per loop turn and passed to every core call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for lifetimes and timers.
    pub mono: Instant,
    /// Wall-clock time, for credential expiry, nonces and event timestamps.
    pub wall: SystemTime,
}

/// The transport between client and server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP (RFC 8656 §3.7: STUN and ChannelData framed on a stream, ChannelData padded).
    Tcp,
    /// TLS over TCP (TURNS).
    Tls,
}

impl Transport {
    /// Returns a name for logs and labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }

    /// Every transport, in the order of [`Self::index`].
    pub const ALL: [Self; 3] = [Self::Udp, Self::Tcp, Self::Tls];

    /// Returns the position in [`Self::ALL`] (an array index for per-transport counters).
    pub fn index(self) -> usize {
        match self {
            Self::Udp => 0,
            Self::Tcp => 1,
            Self::Tls => 2,
        }
    }

    /// Returns true for the stream transports, where ChannelData is padded to 4 bytes.
    pub fn is_stream(self) -> bool {
        !matches!(self, Self::Udp)
    }
}

/// The 5-tuple that identifies a client's allocation: transport, client and server address.
/// See RFC 8656 §2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiveTuple {
    /// Transport protocol.
    pub transport: Transport,
    /// The client's (reflexive) address.
    pub client: SocketAddr,
    /// The server's listening address the client talks to.
    pub server: SocketAddr,
}

/// An allocation's identity in evidence and logs: random, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocationId(pub u64);

impl std::fmt::Display for AllocationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Where to send a client's relayed payload: out of relay socket `relay` to `peer`; the payload
/// is `range` of the input buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTransmit {
    /// The local address of the relay socket to send from.
    pub relay: SocketAddr,
    /// The peer to send to.
    pub peer: SocketAddr,
    /// The payload within the buffer passed to `handle_client_input`.
    pub range: Range<usize>,
}

/// Where to send a peer's data, framed by the core in the caller's buffer: to the client of
/// `to`, the bytes `range` of the buffer passed to `handle_peer_input`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTransmit {
    /// The client's 5-tuple (the server address names the listening socket to send from).
    pub to: FiveTuple,
    /// The framed message (ChannelData or Data indication) within the buffer.
    pub range: Range<usize>,
}

/// Bytes of headroom the caller must leave before a peer's payload so that the core can frame
/// it in place: the longest Data indication header (ChannelData needs less).
pub const PEER_HEADROOM: usize = crate::stun::DATA_INDICATION_MAX_HEADER_LEN;

/// Bytes of tailroom the caller must leave after a peer's payload for attribute padding.
pub const PEER_TAILROOM: usize = 4;

/// A RESERVATION-TOKEN: names a port held for a later Allocate. See RFC 8656 §18.10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ReservationToken(pub(crate) u64);

impl ReservationToken {
    /// Returns the eight bytes of the attribute value.
    pub(crate) fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}
