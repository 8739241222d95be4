//! The data-path worker: a thread of its own with an event loop (`mio` over epoll), owning one
//! [`Server`], its listening UDP sockets and the relay sockets of its allocations.
//!
//! When a socket is readable the worker reads up to [`BATCH`] datagrams with one `recvmmsg`
//! into a buffer that lives as long as the worker, hands each to the core, and sends what the
//! core returns with one system call per outgoing socket ([`Batch::send`]). No datagram
//! crosses a thread or a channel, none is copied into a new allocation, and no lock is taken.
//! A relay socket costs its file descriptor and a slot in a table indexed by port: no task,
//! no waker, no buffer.
//!
//! The rest of the relay talks to the worker through [`Input`] messages: TCP/TLS connections
//! (their framed messages), reloaded secrets and policies, and the stop. A sender wakes the
//! event loop after queueing ([`WorkerInput::send`]).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::{Range, RangeInclusive};

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mio::{Events, Interest, Poll, Token, Waker};
use rand::rngs::StdRng;
use tokio::sync::{mpsc, oneshot};

use super::batch::{BATCH, Batch, SLOT};
use super::connections::Mark;
use super::evidence::{CLOSED_REASON, Sink};
use super::lifecycle::Heartbeat;
use super::offload::WorkerPaths;
use super::refusals::Refusals;
use super::sockets::bind_udp;
use super::stream::Outbox;
use super::{log, now};
use crate::credentials::Secrets;
use crate::policy::Policy;
use crate::relay::{
    Admission, BindResult, ClientTransmit, Command, EndReason, FiveTuple, KernelPath,
    PEER_HEADROOM, Server, Stats, TrafficCounters, Transport,
};
use crate::stun::stream_frame_len;

/// Messages queued to a worker from the rest of the relay.
pub(super) const INPUT_QUEUE: usize = 4096;
/// Batches read from one socket before the others get a turn.
const ROUNDS: usize = 8;
/// Inputs handled before the sockets get a turn.
const INPUTS_PER_TURN: usize = 1024;
/// How often the worker publishes its counters.
const PUBLISH_EVERY: Duration = Duration::from_millis(500);
/// The token of the waker.
const WAKER: Token = Token(usize::MAX);
/// Tokens of relay sockets start here; below are the listening sockets.
const RELAY_TOKENS: usize = 1 << 20;

/// A message to a worker.
pub(super) enum Input {
    /// A TCP/TLS connection is up (handshake done): may it stay?
    StreamOpened {
        five: FiveTuple,
        writer: Outbox,
        reply: oneshot::Sender<bool>,
        /// Marks the connection once its Allocate has succeeded.
        mark: Mark,
    },
    /// Complete framed messages from a TCP/TLS connection, back to back (what one read
    /// brought).
    Stream { five: FiveTuple, frames: Vec<u8> },
    /// A TCP/TLS connection ended.
    StreamClosed { five: FiveTuple },
    /// New secrets (SIGHUP).
    Secrets(Secrets),
    /// A new policy and databases (SIGHUP, file change).
    Policy(Policy),
    /// The relay drains before it stops: new allocations go elsewhere
    /// ([`Admission::Draining`]).
    Drain,
    /// End every allocation and stop.
    Stop,
}

/// A TCP/TLS connection as its worker knows it.
struct StreamClient {
    /// Its writer task's queue.
    writer: Outbox,
    /// Until its Allocate has succeeded.
    mark: Option<Mark>,
}

/// Where to send [`Input`]s for one worker.
#[derive(Clone)]
pub(super) struct WorkerInput {
    tx: mpsc::Sender<Input>,
    waker: Arc<Waker>,
}

impl WorkerInput {
    /// Queues `input` (waiting while the queue is full) and wakes the worker.
    pub(super) async fn send(&self, input: Input) -> Result<(), ()> {
        self.tx.send(input).await.map_err(|_| ())?;
        self.waker.wake().map_err(|_| ())
    }
}

/// The counters a worker publishes twice a second (and when it stops).
#[derive(Debug, Default, Clone)]
pub(super) struct Snapshot {
    pub(super) stats: Stats,
}

/// The relay's handle on a running worker.
pub(super) struct WorkerHandle {
    pub(super) input: WorkerInput,
    pub(super) snapshot: Arc<Mutex<Snapshot>>,
    /// Bumped once per turn of the worker's event loop (the systemd watchdog looks at it).
    pub(super) heartbeat: Heartbeat,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WorkerHandle {
    /// The worker's latest counters.
    pub(super) fn snapshot(&self) -> Snapshot {
        self.snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Asks the worker to stop and waits for its thread (off the async runtime).
    pub(super) async fn stop(mut self) -> Snapshot {
        let _ = self.input.send(Input::Stop).await;
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        self.snapshot()
    }
}

/// Where relay sockets are bound and how large their buffers are.
#[derive(Debug, Clone)]
pub(super) struct RelaySockets {
    /// The configured relay port range (the table is indexed by port).
    pub(super) ports: RangeInclusive<u16>,
    /// Requested socket buffer size.
    pub(super) buffer: usize,
    /// Send runs of datagrams with UDP GSO (`relay.gso`).
    pub(super) gso: bool,
    /// Sockets bound for EVEN-PORT reservations, held until redeemed (at any worker) or
    /// expired.
    pub(super) reserved: Reserved,
    /// The relay addresses (`relay.addresses`).
    pub(super) v4: Option<IpAddr>,
    pub(super) v6: Option<IpAddr>,
}

/// Relay sockets held for reservations, by local address, shared by the workers.
pub(super) type Reserved = Arc<Mutex<HashMap<SocketAddr, std::net::UdpSocket>>>;

/// Starts a worker thread serving `listeners` (already bound) with `server`.
pub(super) fn spawn(
    name: String,
    server: Server<StdRng>,
    kernel: Option<WorkerPaths>,
    listeners: Vec<std::net::UdpSocket>,
    relay: RelaySockets,
    evidence: Option<Sink>,
    refusals: Arc<Refusals>,
) -> io::Result<WorkerHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    let snapshot = Arc::new(Mutex::new(Snapshot::default()));
    let mut socks = Vec::with_capacity(listeners.len());
    for (i, l) in listeners.into_iter().enumerate() {
        let addr = l.local_addr()?;
        let mut sock = mio::net::UdpSocket::from_std(l);
        poll.registry()
            .register(&mut sock, Token(i), Interest::READABLE)?;
        socks.push((addr, sock));
    }
    let published = snapshot.clone();
    let heartbeat = Heartbeat::default();
    let beat = heartbeat.clone();
    let relays = RelayTable::new(&relay);
    // The batch buffer holds raw system-call headers (not `Send`): it is made on the thread.
    let thread = std::thread::Builder::new().name(name).spawn(move || {
        Worker {
            poll,
            server,
            listeners: socks,
            relays,
            relay_buffer: relay.buffer,
            reserved: relay.reserved,
            streams: HashMap::new(),
            batch: Batch::new(relay.gso),
            to_peers: Vec::with_capacity(BATCH),
            to_clients: Vec::with_capacity(BATCH),
            sends: Vec::with_capacity(BATCH),
            again: Vec::new(),
            input: rx,
            published,
            stopping: false,
            draining: false,
            heartbeat: beat,
            evidence,
            refusals,
            auth_failures_seen: BTreeMap::new(),
            kernel,
            kernel_traffic: Vec::new(),
        }
        .run();
    })?;
    Ok(WorkerHandle {
        input: WorkerInput { tx, waker },
        snapshot,
        heartbeat,
        thread: Some(thread),
    })
}

/// Relay sockets by port, one half per address family: an index, not a map lookup. A socket's
/// token is `RELAY_TOKENS` plus its index here.
struct RelayTable {
    base: u16,
    len: usize,
    v4: Option<IpAddr>,
    v6: Option<IpAddr>,
    socks: Vec<Option<mio::net::UdpSocket>>,
}

impl RelayTable {
    fn new(relay: &RelaySockets) -> Self {
        let ports = &relay.ports;
        let len = usize::from(*ports.end() - *ports.start()) + 1;
        Self {
            base: *ports.start(),
            len,
            v4: relay.v4,
            v6: relay.v6,
            socks: std::iter::repeat_with(|| None).take(2 * len).collect(),
        }
    }

    fn index(&self, addr: SocketAddr) -> Option<usize> {
        let i = usize::from(addr.port().checked_sub(self.base)?);
        (i < self.len).then_some(if addr.is_ipv4() { i } else { self.len + i })
    }

    fn get(&self, addr: SocketAddr) -> Option<&mio::net::UdpSocket> {
        self.socks.get(self.index(addr)?)?.as_ref()
    }

    /// The local address of the socket at `index`.
    fn addr(&self, index: usize) -> Option<SocketAddr> {
        let (ip, i) = if index < self.len {
            (self.v4?, index)
        } else {
            (self.v6?, index - self.len)
        };
        let port = self.base.checked_add(u16::try_from(i).ok()?)?;
        Some(SocketAddr::new(ip, port))
    }
}

struct Worker {
    poll: Poll,
    server: Server<StdRng>,
    /// The listening sockets by local address (a handful: a linear scan); token = index.
    listeners: Vec<(SocketAddr, mio::net::UdpSocket)>,
    relays: RelayTable,
    relay_buffer: usize,
    reserved: Reserved,
    streams: HashMap<FiveTuple, StreamClient>,
    /// Every datagram is read here, a batch at a time (peer data with room to frame it in
    /// place), and sent from here.
    batch: Batch,
    /// Payloads of the last batch from clients, for peers: (relay socket, range, peer).
    to_peers: Vec<(SocketAddr, Range<usize>, SocketAddr)>,
    /// Messages of the last batch from peers, for clients.
    to_clients: Vec<(FiveTuple, Range<usize>)>,
    /// One `sendmmsg` worth of (range, destination).
    sends: Vec<(Range<usize>, SocketAddr)>,
    /// Sockets (and the input queue) left readable after their turn.
    again: Vec<Token>,
    input: mpsc::Receiver<Input>,
    published: Arc<Mutex<Snapshot>>,
    stopping: bool,
    /// Draining before the stop: admission stays [`Admission::Draining`].
    draining: bool,
    /// Bumped once per loop turn: this thread is alive and not stuck.
    heartbeat: Heartbeat,
    /// Where core events go as evidence, when `[evidence]` is on.
    evidence: Option<Sink>,
    /// Refusals are counted here and summarised (see [`Refusals`]).
    refusals: Arc<Refusals>,
    /// The core's refused-credential counters as last handed to `refusals`.
    auth_failures_seen: BTreeMap<&'static str, u64>,
    /// This worker's paths in the kernel fast path (`relay.offload`), when it is on; the
    /// server is then built `with_kernel_paths`.
    kernel: Option<WorkerPaths>,
    /// What the kernel relayed per path since the last read (reused buffer).
    kernel_traffic: Vec<(KernelPath, TrafficCounters)>,
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut ready: Vec<Token> = Vec::with_capacity(256);
        let mut last_publish = now().mono;
        while !self.stopping {
            // One relaxed add per loop turn (not per datagram).
            self.heartbeat.fetch_add(1, Ordering::Relaxed);
            let mono = now().mono;
            let mut timeout =
                PUBLISH_EVERY.saturating_sub(mono.saturating_duration_since(last_publish));
            if let Some(d) = self.server.poll_timeout() {
                timeout = timeout.min(d.saturating_duration_since(mono));
            }
            if !self.again.is_empty() {
                timeout = Duration::ZERO;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!(target: "eeaturn::shell", error = %e, "the worker's event loop failed");
                break;
            }
            ready.clear();
            ready.append(&mut self.again);
            ready.extend(events.iter().map(mio::event::Event::token));
            for &token in &ready {
                match token {
                    WAKER => self.inputs(),
                    Token(i) if i < RELAY_TOKENS => self.listener_readable(i),
                    Token(i) => self.relay_readable(i - RELAY_TOKENS),
                }
                if self.stopping {
                    break;
                }
            }
            let now = now();
            if self.server.poll_timeout().is_some_and(|d| d <= now.mono) {
                self.server.handle_timeout(now);
            }
            self.drain();
            self.evidence_turn(now);
            if now.mono.saturating_duration_since(last_publish) >= PUBLISH_EVERY {
                self.publish();
                last_publish = now.mono;
            }
        }
        self.fold_kernel_traffic();
        self.server.shutdown(now());
        self.drain();
        if let Some(sink) = &mut self.evidence {
            sink.finish();
        }
        self.publish();
    }

    /// Hands buffered events to the evidence writer (never blocking) and follows its state:
    /// admission closed while evidence cannot be written, every allocation ended when the
    /// writer can hold no more.
    fn evidence_turn(&mut self, now: crate::relay::Now) {
        let Some(sink) = &mut self.evidence else {
            return;
        };
        let verdict = sink.turn();
        // Draining wins: a client sent elsewhere is better off than one refused.
        let admission = if self.draining {
            Admission::Draining
        } else if verdict.close_admission {
            Admission::Closed(CLOSED_REASON)
        } else {
            Admission::Open
        };
        if self.server.admission() != admission {
            self.server.set_admission(admission);
        }
        if verdict.end_all {
            self.server.end_all(EndReason::EvidenceUnavailable, now);
            self.drain();
        }
    }

    /// Hands what the kernel relayed since the last read to the core (allocation traffic,
    /// peer ledger, counters).
    fn fold_kernel_traffic(&mut self) {
        let Some(kernel) = &mut self.kernel else {
            return;
        };
        kernel.fold(&mut self.kernel_traffic);
        for (path, traffic) in self.kernel_traffic.drain(..) {
            self.server.handle_kernel_traffic(&path, traffic);
        }
    }

    fn publish(&mut self) {
        self.fold_kernel_traffic();
        // Refused credentials leave no line each: the increase since the last turn is counted.
        // The challenge of a request without credentials is every client's first round trip,
        // not a refusal worth a line.
        let mono = now().mono;
        for (&reason, &n) in &self.server.stats().auth_failures {
            if reason == crate::relay::AUTH_NO_CREDENTIALS {
                continue;
            }
            let seen = self.auth_failures_seen.entry(reason).or_default();
            self.refusals.note("auth", reason, n - *seen, mono);
            *seen = n;
        }
        let s = Snapshot {
            stats: self.server.stats().clone(),
        };
        *self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = s;
    }

    /// Handles queued inputs (a bounded number per turn).
    fn inputs(&mut self) {
        for _ in 0..INPUTS_PER_TURN {
            let msg = match self.input.try_recv() {
                Ok(m) => m,
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.stopping = true;
                    return;
                }
            };
            let now = now();
            match msg {
                Input::StreamOpened {
                    five,
                    writer,
                    reply,
                    mark,
                } => {
                    let allowed = self.server.handle_connection_opened(five, now);
                    if allowed {
                        let mark = Some(mark);
                        self.streams.insert(five, StreamClient { writer, mark });
                    }
                    let _ = reply.send(allowed);
                }
                Input::Stream { five, frames } => {
                    let mut rest = &frames[..];
                    while let Ok(Some(n)) = stream_frame_len(rest) {
                        let Some((frame, tail)) = rest.split_at_checked(n) else {
                            break;
                        };
                        rest = tail;
                        let Some(t) = self.server.handle_client_input(five, frame, now) else {
                            continue;
                        };
                        if let Some(sock) = self.relays.get(t.relay)
                            && let Err(e) = send_udp(sock, &frame[t.range], t.peer)
                        {
                            tracing::trace!(target: "eeaturn::relay", error = %e, "send to peer failed");
                        }
                        // Answers go out in order with the frames that caused them.
                        self.drain();
                    }
                }
                Input::StreamClosed { five } => {
                    self.streams.remove(&five);
                    self.server.handle_connection_closed(five, now);
                }
                Input::Secrets(s) => self.server.replace_secrets(s),
                Input::Policy(p) => self.server.replace_policy(p),
                Input::Drain => {
                    self.draining = true;
                    self.server.set_admission(Admission::Draining);
                }
                Input::Stop => {
                    self.stopping = true;
                    return;
                }
            }
            self.drain();
        }
        self.again.push(WAKER);
    }

    /// A listening socket is readable: STUN/TURN requests and ChannelData/Send from clients,
    /// a batch per system call; the payloads go out a batch per relay socket.
    fn listener_readable(&mut self, index: usize) {
        let Some((local, _)) = self.listeners.get(index) else {
            return;
        };
        let local = *local;
        for _ in 0..ROUNDS {
            let Some((_, sock)) = self.listeners.get(index) else {
                return;
            };
            let n = match self.batch.recv(sock, local.is_ipv6(), 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // ICMP errors (port unreachable) surface as receive errors on Linux; skip them.
                Err(e) => {
                    tracing::trace!(target: "eeaturn::shell", error = %e, "listener recv error");
                    continue;
                }
            };
            let now = now();
            for i in 0..n {
                let (len, from) = self.batch.got[i];
                let Some(from) = from else { continue };
                let five = FiveTuple {
                    transport: Transport::Udp,
                    client: from,
                    server: local,
                };
                let start = i * SLOT;
                let Some(bytes) = self.batch.buf.get(start..start + len) else {
                    continue;
                };
                if let Some(t) = self.server.handle_client_input(five, bytes, now) {
                    let range = start + t.range.start..start + t.range.end;
                    self.to_peers.push((t.relay, range, t.peer));
                }
            }
            self.flush_to_peers();
            // Requests answered, relays bound, before the buffer is read over.
            self.drain();
            if n < BATCH {
                return;
            }
        }
        self.again.push(Token(index));
    }

    /// A relay socket is readable: data from peers, a batch per system call, framed in place
    /// and sent to the clients a batch per listening socket.
    fn relay_readable(&mut self, index: usize) {
        for _ in 0..ROUNDS {
            let (Some(Some(sock)), Some(local)) =
                (self.relays.socks.get(index), self.relays.addr(index))
            else {
                return;
            };
            let n = match self.batch.recv(sock, local.is_ipv6(), PEER_HEADROOM) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::trace!(target: "eeaturn::shell", error = %e, "relay recv error");
                    continue;
                }
            };
            let now = now();
            for i in 0..n {
                let (len, from) = self.batch.got[i];
                let Some(from) = from else { continue };
                let payload = PEER_HEADROOM..PEER_HEADROOM + len;
                let slot = self.batch.slot_mut(i);
                if let Some(ClientTransmit { to, range }) = self
                    .server
                    .handle_peer_input(local, from, slot, payload, now)
                {
                    let base = i * SLOT;
                    self.to_clients
                        .push((to, base + range.start..base + range.end));
                }
            }
            self.flush_to_clients();
            if n < BATCH {
                return;
            }
        }
        self.again.push(Token(RELAY_TOKENS + index));
    }

    /// Sends the payloads of a batch from clients to their peers: one `sendmmsg` per relay
    /// socket.
    fn flush_to_peers(&mut self) {
        let Self {
            to_peers,
            sends,
            relays,
            batch,
            ..
        } = self;
        // Stable: each flow's datagrams keep their order; a flow's datagrams end up next to
        // each other, so runs go out as one GSO message.
        to_peers.sort_by_key(|(relay, _, peer)| (*relay, *peer));
        let mut rest = &to_peers[..];
        while let Some(&(relay, ..)) = rest.first() {
            let n = rest.iter().take_while(|(r, ..)| *r == relay).count();
            let (group, tail) = rest.split_at(n);
            rest = tail;
            if let Some(sock) = relays.get(relay) {
                sends.clear();
                sends.extend(group.iter().map(|(_, range, peer)| (range.clone(), *peer)));
                batch.send(sock, sends);
            }
        }
        to_peers.clear();
    }

    /// Sends the messages of a batch from peers to their clients: one `sendmmsg` per
    /// listening socket; stream clients get a queued write each.
    fn flush_to_clients(&mut self) {
        let Self {
            to_clients,
            sends,
            listeners,
            streams,
            batch,
            ..
        } = self;
        for (local, sock) in listeners.iter() {
            sends.clear();
            sends.extend(
                to_clients
                    .iter()
                    .filter(|(to, _)| !to.transport.is_stream() && to.server == *local)
                    .map(|(to, range)| (range.clone(), to.client)),
            );
            // Stable, as above: a client's messages together and in order.
            sends.sort_by_key(|(_, client)| *client);
            if !sends.is_empty() {
                batch.send(sock, sends);
            }
        }
        for (to, range) in to_clients.iter().filter(|(to, _)| to.transport.is_stream()) {
            if let (Some(s), Some(bytes)) = (streams.get(to), batch.buf.get(range.clone())) {
                // A full queue means the client does not read: drop, as UDP would.
                s.writer.push(bytes, s.mark.is_none());
            }
        }
        to_clients.clear();
    }

    /// Carries out the core's commands and logs its events.
    fn drain(&mut self) {
        while let Some(cmd) = self.server.poll_command() {
            match cmd {
                Command::SendToClient { to, bytes } => self.send_to_client(to, &bytes),
                Command::BindRelay {
                    token,
                    addrs,
                    reserve,
                } => {
                    let result = self.bind_relays(&addrs, reserve);
                    self.server.handle_relay_bound(token, &addrs, result, now());
                }
                Command::CloseRelay { addr } => {
                    if let Some(i) = self.relays.index(addr)
                        && let Some(mut sock) = self.relays.socks.get_mut(i).and_then(Option::take)
                    {
                        let _ = self.poll.registry().deregister(&mut sock);
                    }
                }
                Command::ReleaseReserved { addr } => {
                    self.reserved
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&addr);
                }
                Command::InstallKernelPath(path) => {
                    if let Some(kernel) = &mut self.kernel {
                        kernel.install(path);
                    }
                }
                Command::RemoveKernelPath(path) => {
                    let traffic = self
                        .kernel
                        .as_mut()
                        .map(|k| k.remove(&path))
                        .unwrap_or_default();
                    self.server.handle_kernel_path_removed(&path, traffic);
                }
            }
        }
        while let Some(ev) = self.server.poll_event() {
            log::event(&ev, &self.refusals);
            if let Some(sink) = &mut self.evidence {
                sink.push(ev);
            }
        }
    }

    /// Sends a message to a client: a datagram on UDP, a queued write on TCP/TLS.
    fn send_to_client(&mut self, to: FiveTuple, bytes: &[u8]) {
        if to.transport.is_stream() {
            if let Some(s) = self.streams.get_mut(&to) {
                // The first answer after an Allocate succeeded (its success response) marks
                // the connection before it is written: from then on it is never shed and the
                // setup deadline no longer applies.
                if s.mark.is_some()
                    && self.server.has_allocation(to)
                    && let Some(mark) = s.mark.take()
                {
                    mark.allocated();
                }
                // A full queue means the client does not read: drop, as UDP would.
                s.writer.push(bytes, s.mark.is_none());
            }
        } else if let Some((_, sock)) = self.listeners.iter().find(|(a, _)| *a == to.server)
            && let Err(e) = send_udp(sock, bytes, to.client)
        {
            tracing::trace!(target: "eeaturn::relay", error = %e, "send to client failed");
        }
    }

    /// Binds `addrs` (or takes them from the reservations' sockets) and `reserve` (held for
    /// its reservation); all or nothing.
    fn bind_relays(&mut self, addrs: &[SocketAddr], reserve: Option<SocketAddr>) -> BindResult {
        let mut bound = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            let Some(index) = self.relays.index(addr) else {
                // A port outside the table: the core only picks configured ports.
                return BindResult::Failed;
            };
            let held = self
                .reserved
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&addr);
            match held.map_or_else(|| bind_udp(addr, self.relay_buffer, false), Ok) {
                Ok(sock) => bound.push((index, mio::net::UdpSocket::from_std(sock))),
                Err(e) => return bind_failed(addr, &e),
            }
        }
        let reserved = match reserve.map(|addr| (addr, bind_udp(addr, self.relay_buffer, false))) {
            Some((addr, Err(e))) => return bind_failed(addr, &e),
            Some((addr, Ok(sock))) => Some((addr, sock)),
            None => None,
        };
        let registry = self.poll.registry();
        for (n, (index, sock)) in bound.iter_mut().enumerate() {
            let token = Token(RELAY_TOKENS + *index);
            if let Err(e) = registry.register(sock, token, Interest::READABLE) {
                tracing::warn!(target: "eeaturn::shell", error = %e, "cannot register relay socket");
                for (_, s) in bound.iter_mut().take(n) {
                    let _ = registry.deregister(s);
                }
                return BindResult::Failed;
            }
        }
        for (index, sock) in bound {
            if let Some(slot) = self.relays.socks.get_mut(index) {
                *slot = Some(sock);
            }
        }
        if let Some((addr, sock)) = reserved {
            self.reserved
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(addr, sock);
        }
        BindResult::Bound
    }
}

/// Logs a relay socket that could not be bound; the core tries another port when the port is
/// taken by another process.
fn bind_failed(addr: SocketAddr, e: &io::Error) -> BindResult {
    tracing::warn!(target: "eeaturn::shell", port = addr.port(), error = %e, "cannot bind relay socket");
    if e.kind() == io::ErrorKind::AddrInUse {
        BindResult::AddrInUse
    } else {
        BindResult::Failed
    }
}

/// Sends one datagram now: a full send buffer drops it, as the network would.
fn send_udp(sock: &mio::net::UdpSocket, bytes: &[u8], to: SocketAddr) -> io::Result<usize> {
    sock.send_to(bytes, to)
}
