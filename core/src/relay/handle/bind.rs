//! The bind round trip of an Allocate: pick relay ports, ask the shell to bind them
//! ([`Command::BindRelay`]), pick again when the OS says a port is in use, and answer the
//! Allocate once they are bound ([`Server::handle_relay_bound`]).

use std::net::SocketAddr;
use std::time::Duration;

use rand::RngCore;

use super::super::table::{
    AllocState, PendingAllocate, PortRequest, RESERVATION_LIFETIME_SECS, Relayed, Slot, Timer,
};
use super::super::types::ReservationToken;
use super::super::{BindResult, BindToken, Command, EndReason, Event, Now, Reservation, Server};
use super::Failure;
use crate::stun::attr;
use crate::stun::{Class, ErrorCode, MessageBuilder, MessageType, Method};

/// How often a relay port is picked again after the OS says it is in use.
const MAX_BIND_ATTEMPTS: u8 = 8;

impl PortRequest {
    /// Returns true when only even ports will do.
    fn even(self) -> bool {
        matches!(self, Self::Even | Self::EvenReserveNext)
    }

    /// Returns true when the port after the chosen one is to be reserved.
    fn reserves_next(self) -> bool {
        self == Self::EvenReserveNext
    }
}

impl<R: RngCore> Server<R> {
    /// Reports the outcome of a [`Command::BindRelay`].
    pub fn handle_relay_bound(
        &mut self,
        token: BindToken,
        addrs: &[SocketAddr],
        result: BindResult,
        now: Now,
    ) {
        let slot = token.0;
        let pending = match self.alloc(slot) {
            Some(a) if a.relayed.iter().map(|r| r.local).eq(addrs.iter().copied()) => {
                match &a.state {
                    AllocState::Pending(p) => Some(p.clone()),
                    AllocState::Active { .. } => None,
                }
            }
            _ => None,
        };
        let Some(pending) = pending else {
            // The allocation went away meanwhile: whatever was bound must be closed.
            if result == BindResult::Bound {
                for &addr in addrs {
                    self.commands.push_back(Command::CloseRelay { addr });
                }
            }
            return;
        };
        match result {
            BindResult::Bound => self.complete_allocate(slot, pending, now),
            BindResult::AddrInUse
                if pending.attempts < MAX_BIND_ATTEMPTS
                    && !matches!(pending.port, PortRequest::Token(_)) =>
            {
                // Keep the ports the OS refused marked as taken until this Allocate is done,
                // so the retry cannot pick one of them again.
                let mut p = pending;
                if let Some(a) = self.alloc(slot) {
                    p.busy
                        .extend(a.relayed.iter().map(|r| (r.family, r.local.port())));
                }
                self.unregister_relayed(slot);
                p.attempts += 1;
                if let Some(a) = self.alloc_mut(slot) {
                    a.state = AllocState::Pending(p);
                }
                self.start_binding(slot, now);
            }
            BindResult::AddrInUse | BindResult::Failed => {
                self.fail_allocate(slot, &pending, now);
            }
        }
    }

    /// Picks ports for every family of a pending allocation and asks the shell to bind them.
    pub(super) fn start_binding(&mut self, slot: Slot, now: Now) {
        let Some(a) = self.alloc(slot) else {
            return;
        };
        let AllocState::Pending(p) = &a.state else {
            return;
        };
        let (even, reserve) = (p.port.even(), p.port.reserves_next());
        let families = p.families.clone();
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
                // The ports of an earlier attempt are in `busy`, released with it.
                if let Some(a) = self.alloc_mut(slot) {
                    a.relayed.clear();
                }
                if let Some(AllocState::Pending(p)) = self.alloc(slot).map(|a| &a.state) {
                    let p = p.clone();
                    self.fail_allocate(slot, &p, now);
                }
                return;
            };
            if reserve {
                let token = ReservationToken(self.rng.next_u64());
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
    pub(super) fn register_and_bind(&mut self, slot: Slot, reserve: Option<SocketAddr>) {
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

    /// Forgets a pending allocation's relay addresses after a failed bind. Their ports stay
    /// taken (the caller keeps them in `busy`), and the families stay in the pending state for
    /// the retry.
    fn unregister_relayed(&mut self, slot: Slot) {
        let Some(a) = self.alloc(slot) else {
            return;
        };
        let reservation = a.reservation;
        for r in a.relayed.clone() {
            self.by_relay.remove(&r.local);
        }
        if let Some(token) = reservation {
            // The shell closed the reserved port's socket with the others of the failed bind.
            self.shared.ports().end_reservation(token, None);
        }
        if let Some(a) = self.alloc_mut(slot) {
            a.reservation = None;
        }
    }

    /// Answers a pending Allocate with 508 and deletes its allocation.
    fn fail_allocate(&mut self, slot: Slot, pending: &PendingAllocate, now: Now) {
        if let Some(to) = self.alloc(slot).map(|a| a.five_tuple) {
            self.send_error_to(
                to,
                pending.tid,
                Method::ALLOCATE,
                &Failure::new(ErrorCode::INSUFFICIENT_CAPACITY),
                Some(&pending.integrity),
                now,
            );
        }
        self.delete_allocation(slot, EndReason::BindFailed, now);
    }

    /// Answers a pending Allocate whose relay sockets are bound, and makes it active.
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
            b.add_raw(attr::RESERVATION_TOKEN, &token.to_bytes());
        }
        b.add_xor_address(attr::XOR_MAPPED_ADDRESS, a.five_tuple.client);
        if let Some(s) = &software {
            b.add_raw(attr::SOFTWARE, s.as_bytes());
        }
        pending.integrity.apply(&mut b);
        b.add_fingerprint();
        let bytes = b.finish();
        let to = a.five_tuple;
        let country = a.client_facts.country;
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
        *self
            .stats
            .allocations_by_country
            .entry(country)
            .or_default() += 1;
        self.count_ok(Method::ALLOCATE);
        self.events.push_back(event);
        self.commands.push_back(Command::SendToClient { to, bytes });
    }
}
