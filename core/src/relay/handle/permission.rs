//! CreatePermission and ChannelBind: which peers an allocation may exchange data with, and
//! on which channels. See RFC 8656 §9 and §12.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rand::RngCore;

use super::super::table::{
    CHANNEL_LIFETIME_SECS, Channel, MAX_LEDGER_PEERS, PERMISSION_LIFETIME_SECS, Permission, Slot,
    Timer,
};
use super::super::{Event, Now, Server, Stage};
use super::{Answer, Failure, canonical_addr, parse_peer};
use crate::policy::{Rule, Subject};
use crate::stun::attr::{self, Family};
use crate::stun::{ChannelNumber, Class, ErrorCode, Message};

/// A CreatePermission request, parsed: its peers' addresses, canonical and without repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CreatePermissionRequest {
    peers: Vec<IpAddr>,
}

impl CreatePermissionRequest {
    fn parse(msg: &Message<'_>) -> Result<Self, Failure> {
        let tid = msg.transaction_id();
        let mut peers: Vec<IpAddr> = Vec::new();
        for (ty, v) in msg.attributes() {
            if ty == attr::XOR_PEER_ADDRESS {
                let addr = attr::decode_xor_address(ty, v, &tid)
                    .map_err(|_| Failure::bad_request("malformed XOR-PEER-ADDRESS"))?;
                let ip = canonical_addr(addr).ip();
                if !peers.contains(&ip) {
                    peers.push(ip);
                }
            }
        }
        if peers.is_empty() {
            return Err(Failure::bad_request("XOR-PEER-ADDRESS missing"));
        }
        Ok(Self { peers })
    }
}

/// A ChannelBind request, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChannelBindRequest {
    number: ChannelNumber,
    /// XOR-PEER-ADDRESS, canonical.
    peer: SocketAddr,
}

impl ChannelBindRequest {
    fn parse(msg: &Message<'_>) -> Result<Self, Failure> {
        let number = msg
            .get(attr::CHANNEL_NUMBER)
            .and_then(|v| attr::decode_channel_number(v).ok())
            .ok_or(Failure::bad_request("CHANNEL-NUMBER missing or malformed"))?;
        // See `ChannelNumber` for why the RFC 5766 range is accepted.
        let number = ChannelNumber::new(number)
            .ok_or(Failure::bad_request("channel number outside 0x4000-0x7FFF"))?;
        let peer = msg
            .get(attr::XOR_PEER_ADDRESS)
            .and_then(|v| parse_peer(v, msg))
            .ok_or(Failure::bad_request(
                "XOR-PEER-ADDRESS missing or malformed",
            ))?;
        Ok(Self { number, peer })
    }
}

impl<R: RngCore> Server<R> {
    /// Handles a CreatePermission on an active allocation.
    pub(super) fn handle_create_permission(
        &mut self,
        slot: Slot,
        msg: &Message<'_>,
        now: Now,
    ) -> Result<Answer, Failure> {
        let parsed = CreatePermissionRequest::parse(msg);
        self.recheck(slot, Stage::CreatePermission, now)?;
        let CreatePermissionRequest { peers } = parsed?;
        let a = self
            .alloc(slot)
            .ok_or(Failure::new(ErrorCode::ALLOCATION_MISMATCH))?;
        let id = a.id;
        if peers
            .iter()
            .any(|ip| a.relayed_for(Family::of(*ip)).is_none())
        {
            return Err(Failure::new(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH));
        }
        let new = peers
            .iter()
            .filter(|ip| !a.permissions.iter().any(|p| p.ip == **ip))
            .count();
        if a.permissions.len() + new > self.cfg.limits.max_permissions_per_allocation {
            return Err(Failure::with(
                ErrorCode::INSUFFICIENT_CAPACITY,
                "too many permissions",
            ));
        }
        if a.peers.len() + a.new_ledger_peers(peers.iter().copied()) > MAX_LEDGER_PEERS {
            return Err(ledger_full());
        }
        // Every peer must pass before any permission is installed. See RFC 8656 §9.
        let mut allowed = Vec::with_capacity(peers.len());
        for &ip in &peers {
            let decision = self.policy.check_peer(ip, &self.cfg.relay);
            let asked = (Some(id), Stage::CreatePermission);
            allowed.push(self.admit(asked, Subject::Peer, ip, decision, now)?);
        }
        for (ip, (rule, facts)) in peers.into_iter().zip(allowed) {
            self.install_permission(slot, ip, rule, now);
            self.events.push_back(Event::PermissionAllowed {
                id,
                at: now.wall,
                peer: ip,
                stage: Stage::CreatePermission,
                rule,
                facts,
            });
        }
        Ok(Answer::Respond(self.response(msg, Class::Success)))
    }

    /// Handles a ChannelBind on an active allocation.
    pub(super) fn handle_channel_bind(
        &mut self,
        slot: Slot,
        msg: &Message<'_>,
        now: Now,
    ) -> Result<Answer, Failure> {
        let parsed = ChannelBindRequest::parse(msg);
        self.recheck(slot, Stage::ChannelBind, now)?;
        let ChannelBindRequest { number, peer } = parsed?;
        let a = self
            .alloc(slot)
            .ok_or(Failure::new(ErrorCode::ALLOCATION_MISMATCH))?;
        let id = a.id;
        if a.relayed_for(Family::of(peer.ip())).is_none() {
            return Err(Failure::new(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH));
        }
        let by_number = a.channels.iter().find(|c| c.number == number);
        let by_peer = a.channels.iter().find(|c| c.peer == peer);
        match (by_number, by_peer) {
            (Some(c), _) if c.peer != peer => {
                return Err(Failure::bad_request("channel bound to another peer"));
            }
            (_, Some(c)) if c.number != number => {
                return Err(Failure::bad_request("peer bound to another channel"));
            }
            _ => {}
        }
        if a.cooldowns
            .iter()
            .any(|(n, p, until)| *until > now.mono && ((*n == number) != (*p == peer)))
        {
            return Err(Failure::bad_request("channel or peer in rebind cooldown"));
        }
        let is_new = by_number.is_none();
        if is_new && a.channels.len() >= self.cfg.limits.max_channels_per_allocation {
            return Err(Failure::with(
                ErrorCode::INSUFFICIENT_CAPACITY,
                "too many channels",
            ));
        }
        let needs_permission = !a.permissions.iter().any(|p| p.ip == peer.ip());
        if needs_permission && a.permissions.len() >= self.cfg.limits.max_permissions_per_allocation
        {
            return Err(Failure::with(
                ErrorCode::INSUFFICIENT_CAPACITY,
                "too many permissions",
            ));
        }
        if a.peers.len() + a.new_ledger_peers(std::iter::once(peer.ip())) > MAX_LEDGER_PEERS {
            return Err(ledger_full());
        }
        let decision = self.policy.check_peer(peer.ip(), &self.cfg.relay);
        let asked = (Some(id), Stage::ChannelBind);
        let (rule, facts) = self.admit(asked.clone(), Subject::Peer, peer.ip(), decision, now)?;
        if !self.cfg.relay.port_allowed(peer) {
            let rule = Rule::RelayHostPort;
            return Err(self.refuse(asked, Subject::Peer, peer.ip(), rule, facts, now));
        }
        let expires = now.mono + Duration::from_secs(CHANNEL_LIFETIME_SECS);
        if let Some(a) = self.alloc_mut(slot) {
            if let Some(c) = a.channels.iter_mut().find(|c| c.number == number) {
                c.expires = expires;
            } else {
                // Most allocations hold one channel: grow one at a time (idle memory counts).
                a.channels.reserve_exact(1);
                a.channels.push(Channel {
                    number,
                    peer,
                    expires,
                });
            }
            a.cooldowns.retain(|(n, _, _)| *n != number);
        }
        self.timers.add(expires, Timer::Channel(slot, number));
        self.install_permission(slot, peer.ip(), rule, now);
        self.events.push_back(Event::PermissionAllowed {
            id,
            at: now.wall,
            peer: peer.ip(),
            stage: Stage::ChannelBind,
            rule,
            facts,
        });
        if is_new {
            self.events.push_back(Event::ChannelBound {
                id,
                at: now.wall,
                channel: number,
                peer,
                rule,
                facts,
            });
        }
        Ok(Answer::Respond(self.response(msg, Class::Success)))
    }

    /// Installs or refreshes the permission for `ip`, allowed by `rule`.
    fn install_permission(&mut self, slot: Slot, ip: IpAddr, rule: Rule, now: Now) {
        let expires = now.mono + Duration::from_secs(PERMISSION_LIFETIME_SECS);
        let generation = self.policy_generation;
        let relay_host = rule == Rule::RelayHost;
        if let Some(a) = self.alloc_mut(slot) {
            // Checked by the callers: the ledger has room for `ip`.
            let ledger = a.ledger_index(ip);
            if let Some(p) = a.permissions.iter_mut().find(|p| p.ip == ip) {
                p.expires = expires;
                p.generation = generation;
                p.relay_host = relay_host;
            } else {
                a.permissions.reserve_exact(1);
                a.permissions.push(Permission {
                    ip,
                    expires,
                    generation,
                    relay_host,
                    ledger,
                });
            }
        }
        self.timers.add(expires, Timer::Permission(slot, ip));
    }
}

/// The 508 for a permission to one peer too many over the allocation's life.
fn ledger_full() -> Failure {
    Failure::with(
        ErrorCode::INSUFFICIENT_CAPACITY,
        "too many distinct peers for this allocation",
    )
}
