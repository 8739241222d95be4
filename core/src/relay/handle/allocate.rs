//! Allocate: parse the request, check it against the configuration, the policy and the
//! quotas, then start binding relay sockets ([`super::bind`] answers). See RFC 8656 §7.

use std::net::SocketAddr;
use std::time::Duration;

use rand::RngCore;

use super::super::auth::ResponseIntegrity;
use super::super::shared::Exceeded;
use super::super::table::{
    AllocState, Allocation, AuthState, PendingAllocate, PortRequest, Relayed, Timer,
};
use super::super::types::ReservationToken;
use super::super::{Admission, AllocationId, FiveTuple, Now, Server, Source, Stage};
use super::{Answer, Failure, parse_lifetime, secs_u32};
use crate::policy::Subject;
use crate::stun::attr::{self, Family};
use crate::stun::{ErrorCode, Message};

/// Which families an Allocate asks to relay on. See RFC 8656 §7.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestedFamily {
    /// No family attribute: IPv4.
    Default,
    /// REQUESTED-ADDRESS-FAMILY.
    One(Family),
    /// ADDITIONAL-ADDRESS-FAMILY (IPv6): both, each as far as the relay has it.
    Both,
}

/// An Allocate request, parsed. REQUESTED-TRANSPORT must be UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AllocateRequest {
    family: RequestedFamily,
    port: PortRequest,
    /// The client's LIFETIME wish.
    lifetime: Option<u32>,
}

impl AllocateRequest {
    /// Parses and checks the attributes of an Allocate on their own. Fails with 400, or with
    /// 442 for a transport other than UDP and 440 for an unknown family.
    fn parse(msg: &Message<'_>) -> Result<Self, Failure> {
        let transport = msg
            .get(attr::REQUESTED_TRANSPORT)
            .ok_or(Failure::bad_request("REQUESTED-TRANSPORT missing"))?;
        let transport = attr::decode_requested_transport(transport)
            .map_err(|_| Failure::bad_request("malformed REQUESTED-TRANSPORT"))?;
        if transport != attr::TRANSPORT_UDP {
            return Err(Failure::new(ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL));
        }
        let requested = msg
            .get(attr::REQUESTED_ADDRESS_FAMILY)
            .map(|v| {
                attr::decode_family(attr::REQUESTED_ADDRESS_FAMILY, v)
                    .map_err(|_| Failure::new(ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED))
            })
            .transpose()?;
        let additional = match msg.get(attr::ADDITIONAL_ADDRESS_FAMILY) {
            None => false,
            Some(v) => match attr::decode_family(attr::ADDITIONAL_ADDRESS_FAMILY, v) {
                Ok(Family::V6) => true,
                _ => {
                    return Err(Failure::bad_request(
                        "ADDITIONAL-ADDRESS-FAMILY must be IPv6",
                    ));
                }
            },
        };
        let even_port = msg
            .get(attr::EVEN_PORT)
            .map(|v| {
                attr::decode_even_port(v).map_err(|_| Failure::bad_request("malformed EVEN-PORT"))
            })
            .transpose()?;
        let token = msg
            .get(attr::RESERVATION_TOKEN)
            .map(|v| {
                attr::decode_reservation_token(v)
                    .map_err(|_| Failure::bad_request("malformed RESERVATION-TOKEN"))
            })
            .transpose()?;
        if additional && requested.is_some() {
            return Err(Failure::bad_request(
                "REQUESTED-ADDRESS-FAMILY with ADDITIONAL-ADDRESS-FAMILY",
            ));
        }
        if token.is_some() && (even_port.is_some() || requested.is_some() || additional) {
            return Err(Failure::bad_request(
                "RESERVATION-TOKEN with EVEN-PORT or a family",
            ));
        }
        if additional && even_port == Some(true) {
            return Err(Failure::bad_request(
                "EVEN-PORT reservation with two families",
            ));
        }
        let lifetime = parse_lifetime(msg)?;
        let family = match (requested, additional) {
            (Some(f), _) => RequestedFamily::One(f),
            (None, true) => RequestedFamily::Both,
            (None, false) => RequestedFamily::Default,
        };
        let port = match (token, even_port) {
            (Some(t), _) => PortRequest::Token(ReservationToken(t)),
            (None, Some(true)) => PortRequest::EvenReserveNext,
            (None, Some(false)) => PortRequest::Even,
            (None, None) => PortRequest::Any,
        };
        Ok(Self {
            family,
            port,
            lifetime,
        })
    }
}

impl<R: RngCore> Server<R> {
    /// Handles an Allocate from a 5-tuple without an allocation. On success the allocation
    /// exists, pending, and the answer waits for [`Server::handle_relay_bound`].
    pub(super) fn handle_allocate(
        &mut self,
        from: FiveTuple,
        msg: &Message<'_>,
        auth: AuthState,
        integrity: &ResponseIntegrity,
        now: Now,
    ) -> Result<Answer, Failure> {
        let req = AllocateRequest::parse(msg)?;
        match self.admission {
            Admission::Open => {}
            Admission::Closed(reason) => {
                return Err(Failure::with(ErrorCode::INSUFFICIENT_CAPACITY, reason));
            }
            Admission::Draining => return Err(self.draining(from)),
        }
        let lifetime = self.granted_lifetime(req.lifetime);
        let unknown_token = Failure::with(
            ErrorCode::INSUFFICIENT_CAPACITY,
            "unknown reservation token",
        );
        // The token is only looked at here; it is consumed once every check has passed, so a
        // refused request leaves the reservation to its own timer.
        let reservation = match req.port {
            PortRequest::Token(t) => Some(
                self.shared
                    .ports()
                    .reservations
                    .get(&t)
                    .copied()
                    .filter(|r| r.expires > now.mono)
                    .ok_or(unknown_token)?,
            ),
            PortRequest::Any | PortRequest::Even | PortRequest::EvenReserveNext => None,
        };

        // Which families to relay on.
        let configured = |f: Family| self.relay_ip(f).is_some();
        let mut families = Vec::with_capacity(2);
        let mut refused_family = None;
        let not_supported = || Failure::new(ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED);
        match (reservation, req.family) {
            (Some(r), _) => families.push(r.family),
            (None, RequestedFamily::Both) => {
                for f in [Family::V4, Family::V6] {
                    if configured(f) {
                        families.push(f);
                    } else {
                        refused_family = Some(f);
                    }
                }
                if families.is_empty() {
                    return Err(not_supported());
                }
            }
            (None, RequestedFamily::One(f)) if configured(f) => families.push(f),
            (None, RequestedFamily::Default) if configured(Family::V4) => {
                families.push(Family::V4);
            }
            (None, RequestedFamily::One(_) | RequestedFamily::Default) => {
                return Err(not_supported());
            }
        }

        // Residency: the client's own address.
        let client = from.client.ip();
        let decision = self.policy.check_client(client);
        let stage = Stage::Allocate {
            transport: from.transport,
            user: crate::credentials::parse_username(&auth.username)
                .map(|u| u.user.to_owned())
                .unwrap_or_default(),
        };
        let (client_rule, client_facts) =
            self.admit((None, stage), Subject::Client, client, decision, now)?;

        let relay_ip = match reservation {
            Some(r) => Some(
                self.relay_ip(r.family)
                    .ok_or(Failure::new(ErrorCode::INSUFFICIENT_CAPACITY))?,
            ),
            None => None,
        };
        // Quotas, shared with the other workers; released when the allocation is deleted.
        let source = Source::new(client, self.cfg.limits.ipv6_source_prefix);
        self.shared
            .try_take(&auth.user_key, source, &self.cfg.limits)
            .map_err(|e| match e {
                Exceeded::Total => Failure::new(ErrorCode::INSUFFICIENT_CAPACITY),
                Exceeded::User => Failure::new(ErrorCode::ALLOCATION_QUOTA_REACHED),
                Exceeded::Source => Failure::with(
                    ErrorCode::ALLOCATION_QUOTA_REACHED,
                    "allocation quota of this source address reached",
                ),
            })?;
        if let PortRequest::Token(t) = req.port {
            // Consumed: the reserved port now belongs to this allocation. Another worker may
            // have redeemed the same token a moment ago.
            if self.shared.ports().reservations.remove(&t).is_none() {
                self.shared.release(&auth.user_key, source);
                return Err(Failure::with(
                    ErrorCode::INSUFFICIENT_CAPACITY,
                    "unknown reservation token",
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
            port: req.port,
            families,
            attempts: 0,
            refused_family,
            busy: Vec::new(),
        };
        let a = Allocation {
            id,
            five_tuple: from,
            source,
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
            peers: Vec::new(),
            policy_generation: self.policy_generation,
            client_rule,
            client_facts,
            kernel_paths: Vec::new(),
            kernel_removing: 0,
        };
        let expires = a.expires;
        let slot = self.insert_alloc(a);
        self.by_five_tuple.insert(from, slot);
        self.timers.add(expires, Timer::Allocation(slot));
        if reservation.is_some() {
            self.register_and_bind(slot, None);
        } else {
            self.start_binding(slot, now);
        }
        Ok(Answer::Deferred)
    }

    /// Answers an Allocate while draining: 300 with the first alternate server of the
    /// client's family (one ALTERNATE-SERVER attribute; RFC 8489 §14.15 wants an address of
    /// the family the request came from), or 508 when none is configured.
    fn draining(&self, from: FiveTuple) -> Failure {
        let v4 = crate::policy::canonical(from.client.ip()).is_ipv4();
        self.cfg
            .alternate_servers
            .iter()
            .find(|a| a.is_ipv4() == v4)
            .map_or(
                Failure::with(ErrorCode::INSUFFICIENT_CAPACITY, "relay draining"),
                |&a| Failure::try_alternate(a),
            )
    }

    /// Computes the lifetime to grant for the client's wish `asked`. See RFC 8656 §7.2: the
    /// wish capped at the maximum, and never below the default.
    pub(super) fn granted_lifetime(&self, asked: Option<u32>) -> u32 {
        let default = secs_u32(self.cfg.limits.default_lifetime);
        let max = secs_u32(self.cfg.limits.max_lifetime);
        asked.map_or(default, |asked| asked.min(max).max(default))
    }

    /// Returns the relay's address of `family`, if it has one.
    pub(crate) fn relay_ip(&self, family: Family) -> Option<std::net::IpAddr> {
        match family {
            Family::V4 => self.cfg.relay.v4,
            Family::V6 => self.cfg.relay.v6,
        }
    }

    /// Returns what a client is told for the relay socket bound on `local`.
    pub(super) fn advertised(&self, local: SocketAddr) -> SocketAddr {
        let ext = match local {
            SocketAddr::V4(_) => self.cfg.relay.external_v4,
            SocketAddr::V6(_) => self.cfg.relay.external_v6,
        };
        SocketAddr::new(ext.unwrap_or(local.ip()), local.port())
    }
}
