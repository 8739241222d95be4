//! The sans-IO TURN/STUN server: allocation, permission and channel state and the request
//! handlers. No sockets, no clock reads, no tokio: the shell feeds bytes and time in, and
//! performs the commands that come out.
//!
//! # The drive contract
//!
//! 1. Feed input: [`Server::handle_client_input`] for every datagram on a listening socket,
//!    [`Server::handle_peer_input`] for every datagram on a relay socket,
//!    [`Server::handle_relay_bound`] when a [`Command::BindRelay`] has been carried out, and
//!    [`Server::handle_timeout`] when the deadline of [`Server::poll_timeout`] has passed.
//!    The data-path calls return where to send the payload (no copy, no command).
//! 2. Drain [`Server::poll_command`] until `None` and carry out each command.
//! 3. Drain [`Server::poll_event`] until `None` and record each event.
//! 4. Wait for the next datagram or until [`Server::poll_timeout`].
//!
//! Every call takes [`Now`]; the server never reads a clock. Randomness comes from the RNG
//! passed to [`Server::new`], so a seeded RNG makes a run reproducible.

mod auth;
mod config;
mod events;
mod handle;
mod kernel;
mod ports;
mod ratelimit;
mod shared;
mod source;
mod table;
#[cfg(test)]
mod tests;
mod types;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::{RngCore, SeedableRng as _};
use ring::hmac;
use slotmap::SlotMap;

pub use auth::{AUTH_FAILURE_REASONS, AUTH_NO_CREDENTIALS};
pub use config::{AnswerLimit, Limits, ServerConfig};
pub use events::{DropReason, EndReason, Event, RelayedTraffic, Stage, Stats};
pub use kernel::KernelPath;
pub use shared::Shared;
pub use source::{DEFAULT_IPV6_SOURCE_PREFIX, Source};
pub use table::{MAX_LEDGER_PEERS, PeerTraffic, TrafficCounters};
pub use types::{
    AllocationId, ClientTransmit, FiveTuple, Now, PEER_HEADROOM, PEER_TAILROOM, PeerTransmit,
    Transport,
};

use self::auth::Authenticator;
use self::table::{Allocation, Slot, Timers};
use crate::credentials::Secrets;
use crate::policy::Policy;
use crate::stun::attr::Family;

/// An opaque handle tying a [`Command::BindRelay`] to its [`Server::handle_relay_bound`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindToken(Slot);

/// The outcome of binding relay sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindResult {
    /// All sockets are bound.
    Bound,
    /// A port was taken by another process; the core picks another.
    AddrInUse,
    /// Binding failed otherwise; the Allocate fails with 508.
    Failed,
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send `bytes` to the client of `to`, from the listening socket `to.server`.
    SendToClient {
        /// The client's 5-tuple.
        to: FiveTuple,
        /// The encoded STUN message.
        bytes: Vec<u8>,
    },
    /// Bind UDP relay sockets on `addrs` and report with [`Server::handle_relay_bound`]; if
    /// one fails, close the others before reporting. An address held for a reservation
    /// (`reserve` of an earlier `BindRelay`) is taken from where it is held, not bound again.
    BindRelay {
        /// Pass back to `handle_relay_bound`.
        token: BindToken,
        /// Local addresses to bind.
        addrs: Vec<SocketAddr>,
        /// With `addrs` (all or nothing), bind this address too and hold the socket for the
        /// EVEN-PORT reservation (RFC 8656 §7.2) that names it, so that no other process can
        /// take the port before the client redeems the RESERVATION-TOKEN. Any worker may be
        /// the one to take it.
        reserve: Option<SocketAddr>,
    },
    /// Close the relay socket bound on `addr`.
    CloseRelay {
        /// The socket's local address.
        addr: SocketAddr,
    },
    /// The reservation on `addr` expired unused: close the socket held for it, if it is still
    /// held.
    ReleaseReserved {
        /// The held socket's local address.
        addr: SocketAddr,
    },
    /// The kernel may relay this path from now on (only with
    /// [`Server::with_kernel_paths`]).
    InstallKernelPath(KernelPath),
    /// The kernel must stop relaying this path: remove it, then report its last counters
    /// with [`Server::handle_kernel_path_removed`].
    RemoveKernelPath(KernelPath),
}

/// Whether new allocations are admitted ([`Server::set_admission`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Admission {
    /// Allocate and TCP/TLS connections are served as usual.
    #[default]
    Open,
    /// Allocate is answered with 508 (Insufficient Capacity) and this reason, and new TCP/TLS
    /// connections are refused; running allocations keep relaying.
    Closed(&'static str),
    /// The relay is draining before it stops (an upgrade): Allocate is answered with 300 (Try
    /// Alternate) and the first of [`ServerConfig::alternate_servers`] of the client's address
    /// family in ALTERNATE-SERVER, or with 508 when there is none. TCP/TLS connections are
    /// still accepted, so that their Allocate gets the redirect too; running allocations keep
    /// relaying and refreshing. See RFC 8656 §10 and RFC 8489 §14.15.
    Draining,
}

/// A sans-IO TURN/STUN server (RFC 8489, RFC 8656) over UDP.
#[derive(Debug)]
pub struct Server<R> {
    cfg: ServerConfig,
    auth: Authenticator,
    policy: Policy,
    rng: R,
    allocs: SlotMap<Slot, Allocation>,
    by_five_tuple: HashMap<FiveTuple, Slot>,
    by_relay: HashMap<SocketAddr, Slot>,
    shared: Arc<Shared>,
    /// Incremented by every `replace_policy`; permissions remember the one they passed.
    policy_generation: u64,
    timers: Timers,
    commands: VecDeque<Command>,
    events: VecDeque<Event>,
    stats: Stats,
    admission: Admission,
    /// Kernel paths are announced ([`Server::with_kernel_paths`]).
    kernel_paths: bool,
    /// Ended allocations waiting for their kernel paths' last counters.
    ending: HashMap<AllocationId, kernel::Ending>,
}

/// A port held for a later Allocate with RESERVATION-TOKEN. See RFC 8656 §7.2.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reservation {
    family: Family,
    port: u16,
    expires: std::time::Instant,
}

impl<R: RngCore> Server<R> {
    /// Creates a server. `nonce_key` keys the stateless nonces; servers sharing a listening
    /// port must share it.
    pub fn new(
        cfg: ServerConfig,
        secrets: Secrets,
        policy: Policy,
        nonce_key: [u8; 32],
        rng: R,
    ) -> Self {
        let auth = Authenticator {
            realm: cfg.realm.clone(),
            secrets,
            nonce_key: hmac::Key::new(hmac::HMAC_SHA256, &nonce_key),
            nonce_lifetime: cfg.nonce_lifetime,
            max_credential_ttl: cfg.max_credential_ttl,
        };
        // Until `with_shared` replaces it, a server has shared state of its own. Its shard key
        // comes from the nonce key, not from `rng`, so that the RNG's sequence (allocation ids,
        // ports) does not depend on it.
        let mut seed = [0u8; 32];
        seed.copy_from_slice(hmac::sign(&auth.nonce_key, b"eeaturn answer budget shards").as_ref());
        let mut seed_rng = rand::rngs::StdRng::from_seed(seed);
        Self {
            shared: Arc::new(Shared::new(&cfg, &mut seed_rng)),
            cfg,
            auth,
            policy,
            rng,
            allocs: SlotMap::with_key(),
            by_five_tuple: HashMap::new(),
            by_relay: HashMap::new(),
            policy_generation: 0,
            timers: Timers::default(),
            commands: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            admission: Admission::Open,
            kernel_paths: false,
            ending: HashMap::new(),
        }
    }

    /// Makes this server share allocation counts, relay ports, reservations and the budgets
    /// of unauthenticated answers with the other servers of the process (one per worker), so
    /// that the limits hold for the whole relay and a reservation made at one can be redeemed
    /// at another. `shared` must be made from the same config ([`Shared::new`]). Call before
    /// the first input.
    #[must_use]
    pub fn with_shared(mut self, shared: Arc<Shared>) -> Self {
        self.shared = shared;
        self
    }

    /// Returns the next command for the shell.
    #[must_use]
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// Returns the next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Returns when [`Server::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<std::time::Instant> {
        self.timers.next_deadline()
    }

    /// Returns the counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Returns true when `five_tuple` has an allocation whose Allocate has succeeded (its
    /// relay sockets are bound). The shell uses it to tell connections that authenticated
    /// from those that did not.
    pub fn has_allocation(&self, five_tuple: FiveTuple) -> bool {
        self.by_five_tuple
            .get(&five_tuple)
            .and_then(|&slot| self.alloc(slot))
            .is_some_and(Allocation::is_active)
    }

    /// Returns the number of allocations (including those whose sockets are being bound).
    pub fn allocation_count(&self) -> usize {
        self.allocs.len()
    }

    /// Replaces the accepted secrets (rotation); existing allocations keep their keys until
    /// their next request.
    pub fn replace_secrets(&mut self, secrets: Secrets) {
        self.auth.secrets = secrets;
    }

    /// Replaces the policy (rules and databases). Existing allocations keep relaying; their
    /// client and permissions are decided again under the new policy at their next Refresh,
    /// CreatePermission or ChannelBind, and whatever it refuses is removed then.
    pub fn replace_policy(&mut self, policy: Policy) {
        self.policy = policy;
        self.policy_generation += 1;
    }

    /// Opens or closes admission of new allocations (the shell closes it while it cannot
    /// keep evidence, and drains before it stops). Closing ends nothing: see
    /// [`Server::end_all`].
    pub fn set_admission(&mut self, admission: Admission) {
        self.admission = admission;
    }

    /// Returns whether new allocations are admitted.
    pub fn admission(&self) -> Admission {
        self.admission
    }

    /// Returns the policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Decides whether a client may open a TCP/TLS connection at all (the residency check at
    /// accept). A refusal is counted and reported as [`Event::Denied`]; the shell closes the
    /// connection.
    /// While admission is closed every connection is refused, without an event (not while
    /// draining: see [`Admission::Draining`]).
    pub fn handle_connection_opened(&mut self, five_tuple: FiveTuple, now: Now) -> bool {
        if matches!(self.admission, Admission::Closed(_)) {
            return false;
        }
        let ip = five_tuple.client.ip();
        match self.policy.check_client(ip) {
            crate::policy::Decision::Allow { .. } => true,
            crate::policy::Decision::Deny { rule, facts } => {
                let stage = Stage::Connect {
                    transport: five_tuple.transport,
                };
                let subject = crate::policy::Subject::Client;
                self.deny((None, stage), subject, ip, rule, facts, now);
                false
            }
        }
    }

    /// Ends the allocation of a TCP/TLS connection that closed. See RFC 8656 §3.7: the
    /// allocation lives no longer than its connection.
    pub fn handle_connection_closed(&mut self, five_tuple: FiveTuple, now: Now) {
        if let Some(&slot) = self.by_five_tuple.get(&five_tuple) {
            self.delete_allocation(slot, EndReason::ConnectionClosed, now);
        }
    }

    /// Ends every allocation (on shutdown), emitting their events and close commands.
    pub fn shutdown(&mut self, now: Now) {
        self.end_all(EndReason::Shutdown, now);
    }

    /// Ends every allocation with `reason` (e.g. [`EndReason::EvidenceUnavailable`]),
    /// emitting their events and close commands. Admission is not changed.
    pub fn end_all(&mut self, reason: EndReason, now: Now) {
        let mut slots: Vec<Slot> = self.by_five_tuple.values().copied().collect();
        slots.sort_unstable();
        for slot in slots {
            self.delete_allocation(slot, reason, now);
        }
    }

    fn alloc(&self, slot: Slot) -> Option<&Allocation> {
        self.allocs.get(slot)
    }

    fn alloc_mut(&mut self, slot: Slot) -> Option<&mut Allocation> {
        self.allocs.get_mut(slot)
    }

    fn insert_alloc(&mut self, a: Allocation) -> Slot {
        self.allocs.insert(a)
    }

    /// Gives a relay port back to the shared pool.
    fn release_port(&self, family: Family, port: u16) {
        self.shared.ports().pool(family).release(port);
    }

    /// Removes an allocation and everything it holds.
    fn delete_allocation(&mut self, slot: Slot, reason: EndReason, now: Now) {
        let Some(mut a) = self.allocs.remove(slot) else {
            return;
        };
        self.by_five_tuple.remove(&a.five_tuple);
        self.shared.release(&a.auth.user_key, a.source);
        let was_active = a.is_active();
        if let table::AllocState::Pending(p) = &a.state {
            for &(family, port) in &p.busy {
                self.release_port(family, port);
            }
        }
        for r in &a.relayed {
            self.by_relay.remove(&r.local);
            let port = r.local.port();
            self.release_port(r.family, port);
            if was_active {
                self.commands
                    .push_back(Command::CloseRelay { addr: r.local });
            }
        }
        let kernel_paths = std::mem::take(&mut a.kernel_paths);
        if was_active {
            *self
                .stats
                .allocations_ended
                .entry(reason.name())
                .or_default() += 1;
            let ended = Event::AllocationEnded {
                id: a.id,
                at: now.wall,
                started: a.created,
                reason,
                traffic: a.traffic,
                peers: a.peers,
            };
            let removing = a.kernel_removing;
            if let Some(ended) = self.end_kernel_paths(a.id, kernel_paths, removing, ended) {
                self.events.push_back(ended);
            }
        }
    }

    /// Drops the timer entries that can no longer do anything once they could outnumber the
    /// live ones (see [`table::Timers`]): the entries of allocations that are gone, and those
    /// superseded by a later deadline of the same allocation, permission or channel. An entry
    /// at or after its object's deadline is kept, so the current one always is.
    fn compact_timers(&mut self) {
        if !self.timers.compaction_due() {
            return;
        }
        let allocs = &self.allocs;
        self.timers.retain(|at, t| match t {
            table::Timer::Allocation(slot) => allocs.get(slot).is_some_and(|a| at >= a.expires),
            table::Timer::Permission(slot, ip) => allocs
                .get(slot)
                .is_some_and(|a| a.permissions.iter().any(|p| p.ip == ip && at >= p.expires)),
            table::Timer::Channel(slot, number) => allocs.get(slot).is_some_and(|a| {
                a.channels
                    .iter()
                    .any(|c| c.number == number && at >= c.expires)
            }),
            table::Timer::Cooldown(slot) => allocs.contains_key(slot),
            // Few and short: each ends a port reservation of its own.
            table::Timer::Reservation(_) => true,
        });
    }

    /// Handles a passed deadline: expires allocations, permissions, channels and reservations.
    pub fn handle_timeout(&mut self, now: Now) {
        while let Some(t) = self.timers.pop_due(now.mono) {
            match t {
                table::Timer::Allocation(slot) => {
                    if self.alloc(slot).is_some_and(|a| a.expires <= now.mono) {
                        self.delete_allocation(slot, EndReason::Expired, now);
                    }
                }
                table::Timer::Permission(slot, ip) => {
                    if let Some(a) = self.alloc_mut(slot) {
                        a.permissions.retain(|p| p.ip != ip || p.expires > now.mono);
                    }
                    self.sync_kernel_paths(slot, now);
                }
                table::Timer::Channel(slot, number) => {
                    let mut cooldown_until = None;
                    if let Some(a) = self.alloc_mut(slot) {
                        if let Some(i) = a
                            .channels
                            .iter()
                            .position(|c| c.number == number && c.expires <= now.mono)
                        {
                            let c = a.channels.swap_remove(i);
                            let until =
                                now.mono + Duration::from_secs(table::CHANNEL_COOLDOWN_SECS);
                            a.cooldowns.push((c.number, c.peer, until));
                            cooldown_until = Some(until);
                        }
                    }
                    if let Some(until) = cooldown_until {
                        self.timers.add(until, table::Timer::Cooldown(slot));
                    }
                    self.sync_kernel_paths(slot, now);
                }
                table::Timer::Cooldown(slot) => {
                    if let Some(a) = self.alloc_mut(slot) {
                        a.cooldowns.retain(|(_, _, until)| *until > now.mono);
                    }
                }
                table::Timer::Reservation(token) => {
                    let expired = self.shared.ports().end_reservation(token, Some(now.mono));
                    if let Some(r) = expired
                        && let Some(ip) = self.relay_ip(r.family)
                    {
                        self.commands.push_back(Command::ReleaseReserved {
                            addr: SocketAddr::new(ip, r.port),
                        });
                    }
                }
            }
        }
    }
}
