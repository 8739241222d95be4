//! The data path: ChannelData and Send indications from clients, datagrams from peers. Runs
//! per packet: no allocation, one table lookup per direction, framing in place.

use std::net::SocketAddr;
use std::ops::Range;

use rand::RngCore;

use super::super::{ClientTransmit, DropReason, FiveTuple, Now, PeerTransmit, Server};
use super::{canonical_addr, has_unknown_required};
use crate::stun::attr::{self, Family};
use crate::stun::{
    CHANNEL_DATA_HEADER_LEN, ChannelData, Message, TransactionId, write_channel_data,
    write_data_indication,
};

/// A Send indication, parsed. See RFC 8656 §11.2.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SendIndication {
    /// XOR-PEER-ADDRESS, canonical.
    peer: SocketAddr,
    /// Where DATA's value is in the message.
    data: Range<usize>,
}

impl SendIndication {
    fn parse(msg: &Message<'_>) -> Result<Self, DropReason> {
        let peer = msg
            .get(attr::XOR_PEER_ADDRESS)
            .and_then(|v| super::parse_peer(v, msg));
        let data = msg.value_range(attr::DATA);
        let (Some(peer), Some(data)) = (peer, data) else {
            return Err(DropReason::Malformed);
        };
        if has_unknown_required(msg) {
            // Includes DONT-FRAGMENT, which this relay cannot honour. See RFC 8656 §11.2.
            return Err(DropReason::UnsupportedAttribute);
        }
        Ok(Self { peer, data })
    }
}

impl<R: RngCore> Server<R> {
    /// Handles a datagram a peer sent to relay socket `relay`. The payload is
    /// `buf[payload]`; at least [`super::super::PEER_HEADROOM`] bytes before it and
    /// [`super::super::PEER_TAILROOM`] after it must be available. When the peer has a
    /// permission, the core frames the payload in place (ChannelData or Data indication) and
    /// returns the client and the framed range.
    pub fn handle_peer_input(
        &mut self,
        relay: SocketAddr,
        peer: SocketAddr,
        buf: &mut [u8],
        payload: Range<usize>,
        now: Now,
    ) -> Option<ClientTransmit> {
        let peer = canonical_addr(peer);
        let Some(&slot) = self.by_relay.get(&relay) else {
            self.stats.drop(DropReason::NoAllocation);
            return None;
        };
        let Some(a) = self.alloc(slot) else {
            self.stats.drop(DropReason::NoAllocation);
            return None;
        };
        if !a.is_active() {
            self.stats.drop(DropReason::AllocationPending);
            return None;
        }
        let permission = a
            .permission(peer.ip(), now.mono)
            .map(|p| (p.relay_host, p.ledger));
        let channel = a.channel_by_peer(peer, now.mono).map(|c| c.number);
        let to = a.five_tuple;
        let Some((relay_host, ledger)) = permission else {
            self.stats.drop(DropReason::NoPermission);
            return None;
        };
        if relay_host && !self.cfg.relay.port_allowed(peer) {
            self.stats.drop(DropReason::RelayHostPort);
            return None;
        }
        let len = payload.len();
        let framed = if let Some(number) = channel {
            write_channel_data(buf, payload, number, to.transport.is_stream())
        } else {
            // Only a Data indication needs a (random) transaction id.
            let tid = self.random_tid();
            write_data_indication(buf, payload, peer, tid)
        };
        let Some(range) = framed else {
            self.stats.drop(DropReason::TooLarge);
            return None;
        };
        let a = self.alloc_mut(slot)?;
        a.traffic.count_to_client(len as u64);
        if let Some(p) = a.peers.get_mut(ledger) {
            p.traffic.count_to_client(len as u64);
        }
        self.stats.relayed_to_client(to.transport, len as u64);
        Some(ClientTransmit { to, range })
    }

    /// Relays ChannelData from a client to the channel's peer.
    pub(super) fn handle_channel_data(
        &mut self,
        from: FiveTuple,
        bytes: &[u8],
        now: Now,
    ) -> Option<PeerTransmit> {
        let Ok(cd) = ChannelData::parse(bytes) else {
            self.stats.drop(DropReason::Malformed);
            return None;
        };
        let Some(&slot) = self.by_five_tuple.get(&from) else {
            self.stats.drop(DropReason::NoAllocation);
            return None;
        };
        let Some(a) = self.alloc_mut(slot) else {
            self.stats.drop(DropReason::NoAllocation);
            return None;
        };
        let Some(ch) = a.channel_by_number(cd.number(), now.mono).copied() else {
            self.stats.drop(DropReason::NoChannel);
            return None;
        };
        let Some(ledger) = a.permission(ch.peer.ip(), now.mono).map(|p| p.ledger) else {
            self.stats.drop(DropReason::NoPermission);
            return None;
        };
        let Some(relayed) = a.relayed_for(Family::of(ch.peer.ip())) else {
            self.stats.drop(DropReason::FamilyMismatch);
            return None;
        };
        let relay = relayed.local;
        let len = cd.data.len();
        a.traffic.count_to_peer(len as u64);
        if let Some(p) = a.peers.get_mut(ledger) {
            p.traffic.count_to_peer(len as u64);
        }
        self.stats.relayed_to_peer(from.transport, len as u64);
        Some(PeerTransmit {
            relay,
            peer: ch.peer,
            range: CHANNEL_DATA_HEADER_LEN..CHANNEL_DATA_HEADER_LEN + len,
        })
    }

    /// Relays the DATA of a Send indication to its peer.
    pub(super) fn handle_send(
        &mut self,
        from: FiveTuple,
        msg: &Message<'_>,
        now: Now,
    ) -> Option<PeerTransmit> {
        let Some(&slot) = self.by_five_tuple.get(&from) else {
            self.stats.drop(DropReason::NoAllocation);
            return None;
        };
        let send = match SendIndication::parse(msg) {
            Ok(send) => send,
            Err(reason) => {
                self.stats.drop(reason);
                return None;
            }
        };
        let Some(a) = self.alloc_mut(slot) else {
            self.stats.drop(DropReason::NoAllocation);
            return None;
        };
        if !a.is_active() {
            self.stats.drop(DropReason::AllocationPending);
            return None;
        }
        let peer = send.peer;
        let Some((relay_host, ledger)) = a
            .permission(peer.ip(), now.mono)
            .map(|p| (p.relay_host, p.ledger))
        else {
            self.stats.drop(DropReason::NoPermission);
            return None;
        };
        if relay_host && !self.cfg.relay.port_allowed(peer) {
            self.stats.drop(DropReason::RelayHostPort);
            return None;
        }
        let a = self.alloc_mut(slot)?;
        let Some(relayed) = a.relayed_for(Family::of(peer.ip())) else {
            self.stats.drop(DropReason::FamilyMismatch);
            return None;
        };
        let relay = relayed.local;
        let len = send.data.len() as u64;
        a.traffic.count_to_peer(len);
        if let Some(p) = a.peers.get_mut(ledger) {
            p.traffic.count_to_peer(len);
        }
        self.stats.relayed_to_peer(from.transport, len);
        Some(PeerTransmit {
            relay,
            peer,
            range: send.data,
        })
    }

    pub(super) fn random_tid(&mut self) -> TransactionId {
        let mut t = [0u8; 12];
        self.rng.fill_bytes(&mut t);
        TransactionId(t)
    }
}
