//! Input handling: the data path (ChannelData, Send, peer data) and one function per request
//! method. See RFC 8656 §7–§12 and RFC 8489 §6–§9.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use rand::RngCore;

use super::auth::{AuthOutcome, PASSWORD_ALGORITHMS_VALUE, ResponseIntegrity};
use super::table::{
    AllocState, Allocation, AuthState, CHANNEL_LIFETIME_SECS, Channel, PERMISSION_LIFETIME_SECS,
    PendingAllocate, Permission, RESERVATION_LIFETIME_SECS, Relayed, Slot, Timer,
};
use super::{
    AllocationId, BindResult, BindToken, ClientTransmit, Command, Event, FiveTuple, Now,
    PeerTransmit, Reservation, Server,
};
use crate::policy::{Decision, Facts, Rule, Subject};
use crate::stun::attr::{self, Family};
use crate::stun::{
    CHANNEL_DATA_HEADER_LEN, ChannelData, ChannelNumber, Class, ErrorCode, Message, MessageBuilder,
    MessageType, Method, TransactionId, write_channel_data, write_data_indication,
};

/// Attributes this server understands in requests and indications. Any other
/// comprehension-required attribute is answered with 420. DONT-FRAGMENT is deliberately absent:
/// the relay cannot set DF, which RFC 8656 §7.2 says to signal exactly this way.
const UNDERSTOOD: &[u16] = &[
    attr::USERNAME,
    attr::MESSAGE_INTEGRITY,
    attr::MESSAGE_INTEGRITY_SHA256,
    attr::REALM,
    attr::NONCE,
    attr::PASSWORD_ALGORITHM,
    attr::CHANNEL_NUMBER,
    attr::LIFETIME,
    attr::XOR_PEER_ADDRESS,
    attr::DATA,
    attr::REQUESTED_ADDRESS_FAMILY,
    attr::EVEN_PORT,
    attr::REQUESTED_TRANSPORT,
    attr::RESERVATION_TOKEN,
    attr::PRIORITY,
    attr::USE_CANDIDATE,
];

/// How often a relay port is picked again after the OS says it is in use.
const MAX_BIND_ATTEMPTS: u8 = 8;

/// A request failure: error code, reason phrase, and the integrity to protect it with.
struct Failure {
    code: u16,
    reason: Cow<'static, str>,
}

fn fail(code: u16, reason: &'static str) -> Failure {
    Failure {
        code,
        reason: Cow::Borrowed(reason),
    }
}

/// A 403 whose reason phrase names the subject and the rule, never database content.
fn forbidden(subject: Subject, rule: Rule) -> Failure {
    Failure {
        code: 403,
        reason: Cow::Owned(format!(
            "Forbidden: {} address refused by rule {}",
            subject.name(),
            rule.id()
        )),
    }
}

impl<R: RngCore> Server<R> {
    /// Handles a datagram from a client on a listening socket. Returns where to relay its
    /// payload when it is ChannelData or a Send indication under a valid permission; requests
    /// produce commands instead.
    pub fn handle_client_input(
        &mut self,
        from: FiveTuple,
        bytes: &[u8],
        now: Now,
    ) -> Option<PeerTransmit> {
        match bytes.first().map(|b| b >> 6) {
            Some(0b01) => self.handle_channel_data(from, bytes, now),
            Some(0b00) => {
                let Ok(msg) = Message::parse(bytes) else {
                    self.stats.drop("malformed");
                    return None;
                };
                match msg.class() {
                    Class::Request => {
                        self.handle_request(from, &msg, now);
                        None
                    }
                    Class::Indication if msg.method() == Method::SEND => {
                        self.handle_send(from, &msg, now)
                    }
                    Class::Indication | Class::Success | Class::Error => {
                        self.stats.drop("unexpected-message");
                        None
                    }
                }
            }
            _ => {
                self.stats.drop("malformed");
                None
            }
        }
    }

    /// Handles a datagram a peer sent to relay socket `relay`. The payload is
    /// `buf[payload]`; at least [`PEER_HEADROOM`] bytes before it and
    /// [`super::PEER_TAILROOM`] after it must be available. When the peer has a permission,
    /// the core frames the payload in place (ChannelData or Data indication) and returns the
    /// client and the framed range.
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
            self.stats.drop("no-allocation");
            return None;
        };
        let a = self.alloc(slot)?;
        if !a.is_active() {
            return None;
        }
        let permission = a.permission(peer.ip(), now.mono).map(|p| p.relay_host);
        let channel = a.channel_by_peer(peer, now.mono).map(|c| c.number);
        let to = a.five_tuple;
        let Some(relay_host) = permission else {
            self.stats.drop("no-permission");
            return None;
        };
        if relay_host && !self.cfg.relay.port_allowed(peer) {
            self.stats.drop("relay-host-port");
            return None;
        }
        let len = payload.len();
        let range = if let Some(number) = channel {
            write_channel_data(buf, payload, number, to.transport.is_stream())?
        } else {
            // Only a Data indication needs a (random) transaction id.
            let tid = self.random_tid();
            write_data_indication(buf, payload, peer, tid)?
        };
        let a = self.alloc_mut(slot)?;
        a.traffic.packets_to_client += 1;
        a.traffic.bytes_to_client += len as u64;
        self.stats.packets_to_client += 1;
        self.stats.bytes_to_client += len as u64;
        Some(ClientTransmit { to, range })
    }

    /// Reports the outcome of a [`Command::BindRelay`].
    pub fn handle_relay_bound(
        &mut self,
        token: BindToken,
        addrs: &[SocketAddr],
        result: BindResult,
        now: Now,
    ) {
        let slot = token.0;
        let pending = match self.alloc(slot).map(|a| &a.state) {
            Some(AllocState::Pending(p))
                if self.alloc(slot).is_some_and(|a| {
                    a.relayed.iter().map(|r| r.local).eq(addrs.iter().copied())
                }) =>
            {
                p.clone()
            }
            _ => {
                // The allocation went away meanwhile: whatever was bound must be closed.
                if result == BindResult::Bound {
                    for &addr in addrs {
                        self.commands.push_back(Command::CloseRelay { addr });
                    }
                }
                return;
            }
        };
        match result {
            BindResult::Bound => self.complete_allocate(slot, pending, now),
            BindResult::AddrInUse
                if pending.attempts < MAX_BIND_ATTEMPTS && !pending.from_token =>
            {
                // Keep the ports the OS refused marked as taken until this Allocate is done,
                // so the retry cannot pick one of them again.
                let mut p = pending;
                if let Some(a) = self.alloc(slot) {
                    p.busy
                        .extend(a.relayed.iter().map(|r| (r.family, r.local.port())));
                }
                self.unregister_relayed(slot, false);
                p.attempts += 1;
                if let Some(a) = self.alloc_mut(slot) {
                    a.state = AllocState::Pending(p);
                }
                self.start_binding(slot, now);
            }
            BindResult::AddrInUse | BindResult::Failed => {
                let a = self.alloc(slot).map(|a| a.five_tuple);
                if let Some(to) = a {
                    self.send_error_raw(
                        to,
                        pending.tid,
                        Method::ALLOCATE,
                        508,
                        "Insufficient Capacity",
                        Some(&pending.integrity),
                    );
                }
                self.delete_allocation(slot, super::EndReason::BindFailed, now);
            }
        }
    }

    fn handle_channel_data(
        &mut self,
        from: FiveTuple,
        bytes: &[u8],
        now: Now,
    ) -> Option<PeerTransmit> {
        let Ok(cd) = ChannelData::parse(bytes) else {
            self.stats.drop("malformed");
            return None;
        };
        let Some(&slot) = self.by_five_tuple.get(&from) else {
            self.stats.drop("no-allocation");
            return None;
        };
        let a = self.alloc_mut(slot)?;
        let Some(ch) = a.channel_by_number(cd.number(), now.mono).copied() else {
            self.stats.drop("no-channel");
            return None;
        };
        if a.permission(ch.peer.ip(), now.mono).is_none() {
            self.stats.drop("no-permission");
            return None;
        }
        let relay = a.relayed_for(Family::of(ch.peer.ip()))?.local;
        let len = cd.data.len();
        a.traffic.packets_to_peer += 1;
        a.traffic.bytes_to_peer += len as u64;
        self.stats.packets_to_peer += 1;
        self.stats.bytes_to_peer += len as u64;
        Some(PeerTransmit {
            relay,
            peer: ch.peer,
            range: CHANNEL_DATA_HEADER_LEN..CHANNEL_DATA_HEADER_LEN + len,
        })
    }

    fn handle_send(
        &mut self,
        from: FiveTuple,
        msg: &Message<'_>,
        now: Now,
    ) -> Option<PeerTransmit> {
        let Some(&slot) = self.by_five_tuple.get(&from) else {
            self.stats.drop("no-allocation");
            return None;
        };
        let tid = msg.transaction_id();
        let peer = msg
            .get(attr::XOR_PEER_ADDRESS)
            .and_then(|v| attr::decode_xor_address(attr::XOR_PEER_ADDRESS, v, &tid).ok())
            .map(canonical_addr);
        let data = msg.value_range(attr::DATA);
        let unsupported = has_unknown_required(msg);
        let a = self.alloc_mut(slot)?;
        let (Some(peer), Some(data)) = (peer, data) else {
            self.stats.drop("malformed");
            return None;
        };
        if unsupported || !a.is_active() {
            // Includes DONT-FRAGMENT, which this relay cannot honour. See RFC 8656 §11.2.
            self.stats.drop("unsupported-attribute");
            return None;
        }
        let Some(relay_host) = a.permission(peer.ip(), now.mono).map(|p| p.relay_host) else {
            self.stats.drop("no-permission");
            return None;
        };
        if relay_host && !self.cfg.relay.port_allowed(peer) {
            self.stats.drop("relay-host-port");
            return None;
        }
        let a = self.alloc_mut(slot)?;
        let relay = a.relayed_for(Family::of(peer.ip()))?.local;
        a.traffic.packets_to_peer += 1;
        a.traffic.bytes_to_peer += data.len() as u64;
        self.stats.packets_to_peer += 1;
        self.stats.bytes_to_peer += data.len() as u64;
        Some(PeerTransmit {
            relay,
            peer,
            range: data,
        })
    }

    fn handle_request(&mut self, from: FiveTuple, msg: &Message<'_>, now: Now) {
        let method = msg.method();
        if method == Method::BINDING {
            self.handle_binding(from, msg);
            return;
        }
        if !matches!(
            method,
            Method::ALLOCATE | Method::REFRESH | Method::CREATE_PERMISSION | Method::CHANNEL_BIND
        ) {
            self.send_error(from, msg, 400, "Bad Request: unknown method", None);
            return;
        }
        // An Allocate retransmission is answered from the stored response, even if the nonce
        // has gone stale meanwhile. See RFC 8656 §7.2.
        if method == Method::ALLOCATE {
            if let Some(&slot) = self.by_five_tuple.get(&from) {
                match self.alloc(slot).map(|a| &a.state) {
                    Some(AllocState::Active { tid, response }) if *tid == msg.transaction_id() => {
                        let bytes = response.clone();
                        self.commands
                            .push_back(Command::SendToClient { to: from, bytes });
                        return;
                    }
                    Some(AllocState::Pending(p)) if p.tid == msg.transaction_id() => return,
                    _ => {}
                }
            }
        }
        let (username, user_key, integrity) =
            match self.auth.authenticate(msg, from.client.ip(), now.wall) {
                AuthOutcome::Ok {
                    username,
                    user_key,
                    integrity,
                } => (username, user_key, integrity),
                AuthOutcome::Reject {
                    code,
                    reason,
                    challenge,
                } => {
                    if challenge {
                        self.send_challenge(from, msg, code, reason, now);
                    } else {
                        self.send_error(from, msg, code, reason, None);
                    }
                    return;
                }
            };
        let unknown = unknown_required(msg);
        if !unknown.is_empty() {
            self.count_failure(method, 420);
            let mut b = self.response(msg, Class::Error);
            b.add_error_code(420, "Unknown Attribute");
            b.add_unknown_attributes(&unknown);
            self.finish_and_send(from, b, Some(&integrity));
            return;
        }
        let existing = self.by_five_tuple.get(&from).copied();
        if method == Method::ALLOCATE {
            if existing.is_some() {
                self.send_error(from, msg, 437, "Allocation Mismatch", Some(&integrity));
                return;
            }
            let auth = AuthState { username, user_key };
            if let Err(f) = self.handle_allocate(from, msg, auth, &integrity, now) {
                self.send_error(from, msg, f.code, &f.reason, Some(&integrity));
            }
            return;
        }
        let Some(slot) = existing else {
            self.send_error(from, msg, 437, "Allocation Mismatch", Some(&integrity));
            return;
        };
        let Some(a) = self.alloc(slot) else {
            return;
        };
        if a.auth.username != username {
            self.send_error(from, msg, 441, "Wrong Credentials", Some(&integrity));
            return;
        }
        if !a.is_active() {
            self.send_error(from, msg, 437, "Allocation Mismatch", Some(&integrity));
            return;
        }
        let result = match method {
            Method::REFRESH => self.handle_refresh(slot, from, msg, &integrity, now),
            Method::CREATE_PERMISSION => {
                self.handle_create_permission(slot, from, msg, &integrity, now)
            }
            _ => self.handle_channel_bind(slot, from, msg, &integrity, now),
        };
        if let Err(f) = result {
            self.send_error(from, msg, f.code, &f.reason, Some(&integrity));
        }
    }

    fn handle_binding(&mut self, from: FiveTuple, msg: &Message<'_>) {
        let unknown = unknown_required(msg);
        if !unknown.is_empty() {
            self.count_failure(Method::BINDING, 420);
            let mut b = self.response(msg, Class::Error);
            b.add_error_code(420, "Unknown Attribute");
            b.add_unknown_attributes(&unknown);
            self.finish_and_send(from, b, None);
            return;
        }
        let mut b = self.response(msg, Class::Success);
        b.add_xor_address(attr::XOR_MAPPED_ADDRESS, from.client);
        self.count_ok(Method::BINDING);
        self.finish_and_send(from, b, None);
    }

    fn handle_allocate(
        &mut self,
        from: FiveTuple,
        msg: &Message<'_>,
        auth: AuthState,
        integrity: &ResponseIntegrity,
        now: Now,
    ) -> Result<(), Failure> {
        let transport = msg
            .get(attr::REQUESTED_TRANSPORT)
            .ok_or(fail(400, "Bad Request: REQUESTED-TRANSPORT missing"))?;
        let transport = attr::decode_requested_transport(transport)
            .map_err(|_| fail(400, "Bad Request: malformed REQUESTED-TRANSPORT"))?;
        if transport != attr::TRANSPORT_UDP {
            return Err(fail(442, "Unsupported Transport Protocol"));
        }
        let requested_family = match msg.get(attr::REQUESTED_ADDRESS_FAMILY) {
            None => None,
            Some(v) => Some(
                attr::decode_family(attr::REQUESTED_ADDRESS_FAMILY, v)
                    .map_err(|_| fail(440, "Address Family not Supported"))?,
            ),
        };
        let additional = match msg.get(attr::ADDITIONAL_ADDRESS_FAMILY) {
            None => false,
            Some(v) => match attr::decode_family(attr::ADDITIONAL_ADDRESS_FAMILY, v) {
                Ok(Family::V6) => true,
                _ => {
                    return Err(fail(
                        400,
                        "Bad Request: ADDITIONAL-ADDRESS-FAMILY must be IPv6",
                    ));
                }
            },
        };
        let even_port = match msg.get(attr::EVEN_PORT) {
            None => None,
            Some(v) => Some(
                attr::decode_even_port(v)
                    .map_err(|_| fail(400, "Bad Request: malformed EVEN-PORT"))?,
            ),
        };
        let token = match msg.get(attr::RESERVATION_TOKEN) {
            None => None,
            Some(v) => Some(
                attr::decode_reservation_token(v)
                    .map_err(|_| fail(400, "Bad Request: malformed RESERVATION-TOKEN"))?,
            ),
        };
        if additional && requested_family.is_some() {
            return Err(fail(
                400,
                "Bad Request: REQUESTED-ADDRESS-FAMILY with ADDITIONAL-ADDRESS-FAMILY",
            ));
        }
        if token.is_some() && (even_port.is_some() || requested_family.is_some() || additional) {
            return Err(fail(
                400,
                "Bad Request: RESERVATION-TOKEN with EVEN-PORT or a family",
            ));
        }
        if additional && even_port == Some(true) {
            return Err(fail(
                400,
                "Bad Request: EVEN-PORT reservation with two families",
            ));
        }

        // Which families to relay on.
        let configured = |f: Family| match f {
            Family::V4 => self.cfg.relay.v4.is_some(),
            Family::V6 => self.cfg.relay.v6.is_some(),
        };
        let mut families = Vec::with_capacity(2);
        let mut refused_family = None;
        let lifetime = self.granted_lifetime(msg)?;
        // The token is only looked at here; it is consumed once every check has passed, so a
        // refused request leaves the reservation to its own timer.
        let reservation = match token {
            Some(t) => Some(
                self.shared
                    .ports()
                    .reservations
                    .get(&t)
                    .copied()
                    .filter(|r| r.expires > now.mono)
                    .ok_or(fail(
                        508,
                        "Insufficient Capacity: unknown reservation token",
                    ))?,
            ),
            None => None,
        };
        if let Some(r) = reservation {
            families.push(r.family);
        } else if additional {
            for f in [Family::V4, Family::V6] {
                if configured(f) {
                    families.push(f);
                } else {
                    refused_family = Some(f);
                }
            }
            if families.is_empty() {
                return Err(fail(440, "Address Family not Supported"));
            }
        } else {
            let f = requested_family.unwrap_or(Family::V4);
            if !configured(f) {
                return Err(fail(440, "Address Family not Supported"));
            }
            families.push(f);
        }

        // Residency: the client's own address.
        let client_decision = self.policy.check_client(from.client.ip());
        if let Decision::Deny { rule, facts } = client_decision {
            self.deny(None, Subject::Client, from.client.ip(), rule, facts, now);
            return Err(forbidden(Subject::Client, rule));
        }

        let relay_ip = match reservation {
            Some(r) => Some(
                self.relay_ip(r.family)
                    .ok_or(fail(508, "Insufficient Capacity"))?,
            ),
            None => None,
        };
        // Quotas, shared with the other workers; released when the allocation is deleted.
        self.shared
            .try_take(
                &auth.user_key,
                self.cfg.limits.max_allocations,
                self.cfg.limits.max_allocations_per_user,
            )
            .map_err(|e| match e {
                super::shared::Exceeded::Total => fail(508, "Insufficient Capacity"),
                super::shared::Exceeded::User => fail(486, "Allocation Quota Reached"),
            })?;
        if let Some(t) = token {
            // Consumed: the reserved port now belongs to this allocation. Another worker may
            // have redeemed the same token a moment ago.
            if self.shared.ports().reservations.remove(&t).is_none() {
                self.shared.release(&auth.user_key);
                return Err(fail(
                    508,
                    "Insufficient Capacity: unknown reservation token",
                ));
            }
        }

        let id = AllocationId(self.rng.next_u64());
        let relayed = match (reservation, relay_ip) {
            (Some(r), Some(ip)) => {
                let local = SocketAddr::new(ip, r.port);
                vec![Relayed {
                    family: r.family,
                    local,
                    advertised: self.advertised(local),
                }]
            }
            _ => Vec::new(),
        };
        let pending = PendingAllocate {
            tid: msg.transaction_id(),
            integrity: integrity.clone(),
            even_port: even_port.is_some(),
            reserve_next: even_port == Some(true),
            from_token: reservation.is_some(),
            attempts: 0,
            refused_family,
            busy: Vec::new(),
        };
        let a = Allocation {
            id,
            five_tuple: from,
            auth,
            relayed,
            state: AllocState::Pending(pending),
            expires: now.mono + Duration::from_secs(u64::from(lifetime)),
            created: now.wall,
            lifetime_secs: lifetime,
            permissions: Vec::new(),
            channels: Vec::new(),
            cooldowns: Vec::new(),
            reservation: None,
            traffic: Default::default(),
            policy_generation: self.policy_generation,
            client_rule: client_decision.rule(),
            client_facts: client_decision.facts(),
        };
        let expires = a.expires;
        let slot = self.insert_alloc(a);
        self.by_five_tuple.insert(from, slot);
        self.timers.add(expires, Timer::Allocation(slot));
        if reservation.is_some() {
            self.register_and_bind(slot, None);
        } else {
            // Remember the families to allocate in the relayed list as placeholders.
            if let Some(a) = self.alloc_mut(slot) {
                a.relayed = families
                    .iter()
                    .map(|&family| Relayed {
                        family,
                        local: SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0),
                        advertised: SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0),
                    })
                    .collect();
            }
            self.start_binding(slot, now);
        }
        Ok(())
    }

    /// Picks ports for every family of a pending allocation and asks the shell to bind them.
    fn start_binding(&mut self, slot: Slot, now: Now) {
        let Some(a) = self.alloc(slot) else {
            return;
        };
        let AllocState::Pending(p) = &a.state else {
            return;
        };
        let (even, reserve) = (p.even_port, p.reserve_next);
        let families: Vec<Family> = a.relayed.iter().map(|r| r.family).collect();
        let mut relayed = Vec::with_capacity(families.len());
        let mut reservation = None;
        let mut reserved_addr = None;
        for family in families {
            let Some(ip) = self.relay_ip(family) else {
                continue;
            };
            let port = self
                .shared
                .ports()
                .pool(family)
                .take(&mut self.rng, even, reserve);
            let Some(port) = port else {
                // Out of ports: give back what was taken and fail with 508.
                for r in &relayed {
                    let r: &Relayed = r;
                    self.release_port(r.family, r.local.port());
                }
                if let Some(a) = self.alloc(slot) {
                    let to = a.five_tuple;
                    if let AllocState::Pending(p) = &a.state {
                        let (tid, integrity) = (p.tid, p.integrity.clone());
                        self.send_error_raw(
                            to,
                            tid,
                            Method::ALLOCATE,
                            508,
                            "Insufficient Capacity",
                            Some(&integrity),
                        );
                    }
                }
                if let Some(a) = self.alloc_mut(slot) {
                    a.relayed.clear();
                }
                self.delete_allocation(slot, super::EndReason::BindFailed, now);
                return;
            };
            if reserve {
                let token = self.rng.next_u64();
                let r = Reservation {
                    family,
                    port: port + 1,
                    expires: now.mono + Duration::from_secs(RESERVATION_LIFETIME_SECS),
                };
                self.shared.ports().reservations.insert(token, r);
                self.timers.add(r.expires, Timer::Reservation(token));
                reservation = Some(token);
                reserved_addr = Some(SocketAddr::new(ip, r.port));
            }
            let local = SocketAddr::new(ip, port);
            relayed.push(Relayed {
                family,
                local,
                advertised: self.advertised(local),
            });
        }
        if let Some(a) = self.alloc_mut(slot) {
            a.relayed = relayed;
            a.reservation = reservation;
        }
        self.register_and_bind(slot, reserved_addr);
    }

    /// Asks the shell to bind the allocation's relay addresses, and `reserve` (the port of a
    /// new reservation) with them.
    fn register_and_bind(&mut self, slot: Slot, reserve: Option<SocketAddr>) {
        let Some(a) = self.alloc(slot) else {
            return;
        };
        let addrs: Vec<SocketAddr> = a.relayed.iter().map(|r| r.local).collect();
        for &addr in &addrs {
            self.by_relay.insert(addr, slot);
        }
        self.commands.push_back(Command::BindRelay {
            token: BindToken(slot),
            addrs,
            reserve,
        });
    }

    /// Forgets a pending allocation's relay addresses after a failed bind, keeping the
    /// families to retry with.
    fn unregister_relayed(&mut self, slot: Slot, release_ports: bool) {
        let Some(a) = self.alloc(slot) else {
            return;
        };
        let relayed = a.relayed.clone();
        let reservation = a.reservation;
        for r in &relayed {
            self.by_relay.remove(&r.local);
            if release_ports {
                self.release_port(r.family, r.local.port());
            }
        }
        if let Some(token) = reservation {
            // The shell closed the reserved port's socket with the others of the failed bind.
            self.shared.ports().end_reservation(token, None);
        }
        if let Some(a) = self.alloc_mut(slot) {
            a.reservation = None;
        }
    }

    fn complete_allocate(&mut self, slot: Slot, pending: PendingAllocate, now: Now) {
        for &(family, port) in &pending.busy {
            self.release_port(family, port);
        }
        let software = self.cfg.software.clone();
        let Some(a) = self.alloc(slot) else {
            return;
        };
        let mut b = MessageBuilder::new(
            MessageType::new(Method::ALLOCATE, Class::Success),
            pending.tid,
        );
        for r in &a.relayed {
            b.add_xor_address(attr::XOR_RELAYED_ADDRESS, r.advertised);
        }
        if let Some(f) = pending.refused_family {
            b.add_address_error_code(f, ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED);
        }
        b.add_u32(attr::LIFETIME, a.lifetime_secs);
        if let Some(token) = a.reservation {
            b.add_raw(attr::RESERVATION_TOKEN, &token.to_be_bytes());
        }
        b.add_xor_address(attr::XOR_MAPPED_ADDRESS, a.five_tuple.client);
        if let Some(s) = &software {
            b.add_raw(attr::SOFTWARE, s.as_bytes());
        }
        pending.integrity.apply(&mut b);
        b.add_fingerprint();
        let bytes = b.finish();
        let to = a.five_tuple;
        let event = Event::AllocationCreated {
            id: a.id,
            at: now.wall,
            transport: to.transport,
            client: to.client,
            user: crate::credentials::parse_username(&a.auth.username)
                .map(|u| u.user.to_owned())
                .unwrap_or_default(),
            relayed: a.relayed.iter().map(|r| r.advertised).collect(),
            lifetime: Duration::from_secs(u64::from(a.lifetime_secs)),
            rule: a.client_rule,
            facts: a.client_facts,
        };
        if let Some(a) = self.alloc_mut(slot) {
            a.state = AllocState::Active {
                tid: pending.tid,
                response: bytes.clone(),
            };
        }
        self.stats.allocations_created += 1;
        self.count_ok(Method::ALLOCATE);
        self.events.push_back(event);
        self.commands.push_back(Command::SendToClient { to, bytes });
    }

    fn handle_refresh(
        &mut self,
        slot: Slot,
        from: FiveTuple,
        msg: &Message<'_>,
        integrity: &ResponseIntegrity,
        now: Now,
    ) -> Result<(), Failure> {
        let releasing = msg
            .get(attr::LIFETIME)
            .is_some_and(|v| attr::decode_u32(attr::LIFETIME, v) == Ok(0));
        if !releasing {
            self.recheck(slot, now)?;
        }
        if let Some(v) = msg.get(attr::REQUESTED_ADDRESS_FAMILY) {
            let f = attr::decode_family(attr::REQUESTED_ADDRESS_FAMILY, v)
                .map_err(|_| fail(400, "Bad Request: malformed REQUESTED-ADDRESS-FAMILY"))?;
            if self.alloc(slot).is_some_and(|a| a.relayed_for(f).is_none()) {
                return Err(fail(443, "Peer Address Family Mismatch"));
            }
        }
        let requested = match msg.get(attr::LIFETIME) {
            Some(v) => Some(
                attr::decode_u32(attr::LIFETIME, v)
                    .map_err(|_| fail(400, "Bad Request: malformed LIFETIME"))?,
            ),
            None => None,
        };
        let lifetime = if requested == Some(0) {
            0
        } else {
            self.granted_lifetime(msg)?
        };
        let mut b = self.response(msg, Class::Success);
        b.add_u32(attr::LIFETIME, lifetime);
        if lifetime == 0 {
            self.delete_allocation(slot, super::EndReason::Released, now);
        } else {
            let expires = now.mono + Duration::from_secs(u64::from(lifetime));
            let id = if let Some(a) = self.alloc_mut(slot) {
                a.expires = expires;
                a.lifetime_secs = lifetime;
                a.id
            } else {
                return Ok(());
            };
            self.timers.add(expires, Timer::Allocation(slot));
            self.events.push_back(Event::AllocationRefreshed {
                id,
                at: now.wall,
                lifetime: Duration::from_secs(u64::from(lifetime)),
            });
        }
        self.count_ok(Method::REFRESH);
        self.finish_and_send(from, b, Some(integrity));
        Ok(())
    }

    fn handle_create_permission(
        &mut self,
        slot: Slot,
        from: FiveTuple,
        msg: &Message<'_>,
        integrity: &ResponseIntegrity,
        now: Now,
    ) -> Result<(), Failure> {
        self.recheck(slot, now)?;
        let tid = msg.transaction_id();
        let mut peers: Vec<IpAddr> = Vec::new();
        for (ty, v) in msg.attributes() {
            if ty == attr::XOR_PEER_ADDRESS {
                let addr = attr::decode_xor_address(ty, v, &tid)
                    .map_err(|_| fail(400, "Bad Request: malformed XOR-PEER-ADDRESS"))?;
                let ip = canonical_addr(addr).ip();
                if !peers.contains(&ip) {
                    peers.push(ip);
                }
            }
        }
        if peers.is_empty() {
            return Err(fail(400, "Bad Request: XOR-PEER-ADDRESS missing"));
        }
        let a = self.alloc(slot).ok_or(fail(437, "Allocation Mismatch"))?;
        let id = a.id;
        if peers
            .iter()
            .any(|ip| a.relayed_for(Family::of(*ip)).is_none())
        {
            return Err(fail(443, "Peer Address Family Mismatch"));
        }
        let new = peers
            .iter()
            .filter(|ip| !a.permissions.iter().any(|p| p.ip == **ip))
            .count();
        if a.permissions.len() + new > self.cfg.limits.max_permissions_per_allocation {
            return Err(fail(508, "Insufficient Capacity: too many permissions"));
        }
        // Every peer must pass before any permission is installed. See RFC 8656 §9.
        let mut allowed = Vec::with_capacity(peers.len());
        for &ip in &peers {
            match self.policy.check_peer(ip, &self.cfg.relay) {
                Decision::Allow { rule, facts } => allowed.push((rule, facts)),
                Decision::Deny { rule, facts } => {
                    self.deny(Some(id), Subject::Peer, ip, rule, facts, now);
                    return Err(forbidden(Subject::Peer, rule));
                }
            }
        }
        for (ip, (rule, facts)) in peers.into_iter().zip(allowed) {
            self.install_permission(slot, ip, rule, now);
            self.events.push_back(Event::PermissionAllowed {
                id,
                at: now.wall,
                peer: ip,
                rule,
                facts,
            });
        }
        let b = self.response(msg, Class::Success);
        self.count_ok(Method::CREATE_PERMISSION);
        self.finish_and_send(from, b, Some(integrity));
        Ok(())
    }

    fn handle_channel_bind(
        &mut self,
        slot: Slot,
        from: FiveTuple,
        msg: &Message<'_>,
        integrity: &ResponseIntegrity,
        now: Now,
    ) -> Result<(), Failure> {
        self.recheck(slot, now)?;
        let tid = msg.transaction_id();
        let number = msg
            .get(attr::CHANNEL_NUMBER)
            .and_then(|v| attr::decode_channel_number(v).ok())
            .ok_or(fail(
                400,
                "Bad Request: CHANNEL-NUMBER missing or malformed",
            ))?;
        // See `ChannelNumber` for why the RFC 5766 range is accepted.
        let number = ChannelNumber::new(number).ok_or(fail(
            400,
            "Bad Request: channel number outside 0x4000-0x7FFF",
        ))?;
        let peer = msg
            .get(attr::XOR_PEER_ADDRESS)
            .and_then(|v| attr::decode_xor_address(attr::XOR_PEER_ADDRESS, v, &tid).ok())
            .map(canonical_addr)
            .ok_or(fail(
                400,
                "Bad Request: XOR-PEER-ADDRESS missing or malformed",
            ))?;
        let a = self.alloc(slot).ok_or(fail(437, "Allocation Mismatch"))?;
        let id = a.id;
        if a.relayed_for(Family::of(peer.ip())).is_none() {
            return Err(fail(443, "Peer Address Family Mismatch"));
        }
        let by_number = a.channels.iter().find(|c| c.number == number);
        let by_peer = a.channels.iter().find(|c| c.peer == peer);
        match (by_number, by_peer) {
            (Some(c), _) if c.peer != peer => {
                return Err(fail(400, "Bad Request: channel bound to another peer"));
            }
            (_, Some(c)) if c.number != number => {
                return Err(fail(400, "Bad Request: peer bound to another channel"));
            }
            _ => {}
        }
        if a.cooldowns
            .iter()
            .any(|(n, p, until)| *until > now.mono && ((*n == number) != (*p == peer)))
        {
            return Err(fail(400, "Bad Request: channel or peer in rebind cooldown"));
        }
        let is_new = by_number.is_none();
        if is_new && a.channels.len() >= self.cfg.limits.max_channels_per_allocation {
            return Err(fail(508, "Insufficient Capacity: too many channels"));
        }
        let needs_permission = !a.permissions.iter().any(|p| p.ip == peer.ip());
        if needs_permission && a.permissions.len() >= self.cfg.limits.max_permissions_per_allocation
        {
            return Err(fail(508, "Insufficient Capacity: too many permissions"));
        }
        let (rule, facts) = match self.policy.check_peer(peer.ip(), &self.cfg.relay) {
            Decision::Allow { rule, facts } => (rule, facts),
            Decision::Deny { rule, facts } => {
                self.deny(Some(id), Subject::Peer, peer.ip(), rule, facts, now);
                return Err(forbidden(Subject::Peer, rule));
            }
        };
        if !self.cfg.relay.port_allowed(peer) {
            let rule = Rule::RelayHostPort;
            self.deny(Some(id), Subject::Peer, peer.ip(), rule, facts, now);
            return Err(forbidden(Subject::Peer, rule));
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
            rule,
            facts,
        });
        if is_new {
            self.events.push_back(Event::ChannelBound {
                id,
                at: now.wall,
                channel: number,
                peer,
            });
        }
        let b = self.response(msg, Class::Success);
        self.count_ok(Method::CHANNEL_BIND);
        self.finish_and_send(from, b, Some(integrity));
        Ok(())
    }

    fn install_permission(&mut self, slot: Slot, ip: IpAddr, rule: Rule, now: Now) {
        let expires = now.mono + Duration::from_secs(PERMISSION_LIFETIME_SECS);
        let generation = self.policy_generation;
        let relay_host = rule == Rule::RelayHost;
        if let Some(a) = self.alloc_mut(slot) {
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
                });
            }
        }
        self.timers.add(expires, Timer::Permission(slot, ip));
    }

    /// Counts a refusal and reports it as [`Event::Denied`].
    pub(super) fn deny(
        &mut self,
        id: Option<AllocationId>,
        subject: Subject,
        addr: IpAddr,
        rule: Rule,
        facts: Facts,
        now: Now,
    ) {
        *self
            .stats
            .denials
            .entry((subject.name(), rule.id()))
            .or_default() += 1;
        self.events.push_back(Event::Denied {
            id,
            at: now.wall,
            subject,
            addr,
            rule,
            facts,
        });
    }

    /// Decides again, under the policy now in force, the client and every permission of an
    /// allocation that an earlier policy allowed; refused permissions are removed with their
    /// channels. When the client itself is now refused, the allocation ends
    /// (`policy-changed`) and the 403 to answer is returned.
    fn recheck(&mut self, slot: Slot, now: Now) -> Result<(), Failure> {
        let generation = self.policy_generation;
        let Some(a) = self.alloc(slot) else {
            return Ok(());
        };
        if a.policy_generation == generation {
            return Ok(());
        }
        let id = a.id;
        let client = a.five_tuple.client.ip();
        let stale: Vec<IpAddr> = a
            .permissions
            .iter()
            .filter(|p| p.generation != generation)
            .map(|p| p.ip)
            .collect();
        if let Decision::Deny { rule, facts } = self.policy.check_client(client) {
            self.deny(Some(id), Subject::Client, client, rule, facts, now);
            self.delete_allocation(slot, super::EndReason::PolicyChanged, now);
            return Err(forbidden(Subject::Client, rule));
        }
        let mut refused = Vec::new();
        for ip in stale {
            match self.policy.check_peer(ip, &self.cfg.relay) {
                Decision::Allow { .. } => {}
                Decision::Deny { rule, facts } => {
                    self.deny(Some(id), Subject::Peer, ip, rule, facts, now);
                    refused.push(ip);
                }
            }
        }
        if let Some(a) = self.alloc_mut(slot) {
            a.policy_generation = generation;
            for p in &mut a.permissions {
                p.generation = generation;
            }
            a.permissions.retain(|p| !refused.contains(&p.ip));
            a.channels.retain(|c| !refused.contains(&c.peer.ip()));
        }
        Ok(())
    }

    /// Computes the lifetime to grant. See RFC 8656 §7.2: the client's wish capped at the
    /// maximum, and never below the default.
    fn granted_lifetime(&self, msg: &Message<'_>) -> Result<u32, Failure> {
        let default = secs_u32(self.cfg.limits.default_lifetime);
        let max = secs_u32(self.cfg.limits.max_lifetime);
        match msg.get(attr::LIFETIME) {
            None => Ok(default),
            Some(v) => {
                let asked = attr::decode_u32(attr::LIFETIME, v)
                    .map_err(|_| fail(400, "Bad Request: malformed LIFETIME"))?;
                Ok(asked.min(max).max(default))
            }
        }
    }

    pub(super) fn relay_ip(&self, family: Family) -> Option<IpAddr> {
        match family {
            Family::V4 => self.cfg.relay.v4,
            Family::V6 => self.cfg.relay.v6,
        }
    }

    fn advertised(&self, local: SocketAddr) -> SocketAddr {
        let ext = match local {
            SocketAddr::V4(_) => self.cfg.relay.external_v4,
            SocketAddr::V6(_) => self.cfg.relay.external_v6,
        };
        SocketAddr::new(ext.unwrap_or(local.ip()), local.port())
    }

    fn random_tid(&mut self) -> TransactionId {
        let mut t = [0u8; 12];
        self.rng.fill_bytes(&mut t);
        TransactionId(t)
    }

    fn response(&self, msg: &Message<'_>, class: Class) -> MessageBuilder {
        MessageBuilder::new(MessageType::new(msg.method(), class), msg.transaction_id())
    }

    fn finish_and_send(
        &mut self,
        to: FiveTuple,
        mut b: MessageBuilder,
        integrity: Option<&ResponseIntegrity>,
    ) {
        if let Some(s) = &self.cfg.software {
            b.add_raw(attr::SOFTWARE, s.as_bytes());
        }
        if let Some(i) = integrity {
            i.apply(&mut b);
        }
        b.add_fingerprint();
        self.commands.push_back(Command::SendToClient {
            to,
            bytes: b.finish(),
        });
    }

    fn send_error(
        &mut self,
        to: FiveTuple,
        msg: &Message<'_>,
        code: u16,
        reason: &str,
        integrity: Option<&ResponseIntegrity>,
    ) {
        self.send_error_raw(
            to,
            msg.transaction_id(),
            msg.method(),
            code,
            reason,
            integrity,
        );
    }

    fn send_error_raw(
        &mut self,
        to: FiveTuple,
        tid: TransactionId,
        method: Method,
        code: u16,
        reason: &str,
        integrity: Option<&ResponseIntegrity>,
    ) {
        self.count_failure(method, code);
        let mut b = MessageBuilder::new(MessageType::new(method, Class::Error), tid);
        b.add_error_code(code, reason);
        self.finish_and_send(to, b, integrity);
    }

    /// Answers 401 or 438 with REALM, a fresh NONCE and PASSWORD-ALGORITHMS.
    fn send_challenge(
        &mut self,
        to: FiveTuple,
        msg: &Message<'_>,
        code: u16,
        reason: &str,
        now: Now,
    ) {
        self.count_failure(msg.method(), code);
        let mut b = self.response(msg, Class::Error);
        b.add_error_code(code, reason);
        b.add_raw(attr::REALM, self.cfg.realm.as_bytes());
        let nonce = self.auth.nonce(to.client.ip(), now.wall);
        b.add_raw(attr::NONCE, nonce.as_bytes());
        b.add_raw(attr::PASSWORD_ALGORITHMS, &PASSWORD_ALGORITHMS_VALUE);
        self.finish_and_send(to, b, None);
    }

    fn count_ok(&mut self, method: Method) {
        *self.stats.requests_ok.entry(method.name()).or_default() += 1;
    }

    fn count_failure(&mut self, method: Method, code: u16) {
        *self
            .stats
            .requests_failed
            .entry((method.name(), code))
            .or_default() += 1;
    }
}

/// Returns true when `msg` has a comprehension-required attribute this server does not
/// understand (without allocating: the Send path calls it per packet).
fn has_unknown_required(msg: &Message<'_>) -> bool {
    msg.attributes()
        .any(|(ty, _)| attr::is_comprehension_required(ty) && !UNDERSTOOD.contains(&ty))
}

/// Returns the comprehension-required attributes of `msg` this server does not understand.
fn unknown_required(msg: &Message<'_>) -> Vec<u16> {
    let mut out = Vec::new();
    for (ty, _) in msg.attributes() {
        if attr::is_comprehension_required(ty) && !UNDERSTOOD.contains(&ty) && !out.contains(&ty) {
            out.push(ty);
        }
    }
    out
}

/// Maps `::ffff:a.b.c.d` to `a.b.c.d` so permissions and peers compare equal across forms.
fn canonical_addr(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(crate::policy::canonical(a.ip()), a.port())
}

fn secs_u32(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}
