//! The data-path worker: a thread of its own with a current-thread tokio runtime, owning one
//! [`Server`], its listening UDP sockets and the relay sockets of its allocations.
//!
//! Everything of the worker lives in one `Rc<RefCell<Worker>>` on that thread, and every socket
//! has a small task that, when its socket is readable, borrows the worker, reads up to
//! [`BATCH`] datagrams straight into a buffer that lives as long as the worker, hands each to
//! the core and sends what the core returns right away. No datagram crosses a thread or a
//! channel, none is copied into a new allocation, and no lock is taken: a packet costs the
//! `recvfrom`, the core's lookups and the `sendto`.
//!
//! The rest of the relay talks to the worker through [`Input`] messages: TCP/TLS connections
//! (their framed messages), reloaded secrets and policies, and the stop.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use rand::rngs::StdRng;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::batch::{BATCH, Batch, SLOT};
use super::{bind_udp, log, now};
use crate::credentials::Secrets;
use crate::policy::Policy;
use crate::relay::{
    BindResult, ClientTransmit, Command, FiveTuple, PEER_HEADROOM, Server, Stats, Transport,
};
/// Messages queued to a worker from the rest of the relay.
pub(super) const INPUT_QUEUE: usize = 4096;

/// A message to a worker.
pub(super) enum Input {
    /// A TCP/TLS connection is up (handshake done): may it stay?
    StreamOpened {
        five: FiveTuple,
        writer: mpsc::Sender<Vec<u8>>,
        reply: oneshot::Sender<bool>,
    },
    /// One framed message from a TCP/TLS connection.
    Stream { five: FiveTuple, bytes: Vec<u8> },
    /// A TCP/TLS connection ended.
    StreamClosed { five: FiveTuple },
    /// New secrets (SIGHUP).
    Secrets(Secrets),
    /// A new policy and databases (SIGHUP, file change).
    Policy(Policy),
    /// End every allocation and stop.
    Stop,
}

/// The counters a worker publishes once a second (and when it stops).
#[derive(Debug, Default, Clone)]
pub(super) struct Snapshot {
    pub(super) stats: Stats,
}

/// The relay's handle on a running worker.
pub(super) struct WorkerHandle {
    pub(super) input: mpsc::Sender<Input>,
    pub(super) snapshot: Arc<Mutex<Snapshot>>,
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
}

/// Starts a worker thread serving `listeners` (already bound) with `server`.
pub(super) fn spawn(
    name: String,
    server: Server<StdRng>,
    listeners: Vec<std::net::UdpSocket>,
    relay: RelaySockets,
) -> std::io::Result<WorkerHandle> {
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    let snapshot = Arc::new(Mutex::new(Snapshot::default()));
    let published = snapshot.clone();
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(target: "eeaturn::shell", error = %e, "cannot start a worker runtime");
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, run(server, listeners, relay, rx, published));
        })?;
    Ok(WorkerHandle {
        input: tx,
        snapshot,
        thread: Some(thread),
    })
}

struct RelaySock {
    sock: Rc<UdpSocket>,
    task: JoinHandle<()>,
}

/// Relay sockets by port, one table per address family: an index, not a map lookup.
struct RelayTable {
    base: u16,
    v4: Vec<Option<RelaySock>>,
    v6: Vec<Option<RelaySock>>,
}

impl RelayTable {
    fn new(ports: &RangeInclusive<u16>) -> Self {
        let n = usize::from(*ports.end() - *ports.start()) + 1;
        Self {
            base: *ports.start(),
            v4: std::iter::repeat_with(|| None).take(n).collect(),
            v6: std::iter::repeat_with(|| None).take(n).collect(),
        }
    }

    fn entry(&mut self, addr: SocketAddr) -> Option<&mut Option<RelaySock>> {
        let i = usize::from(addr.port().checked_sub(self.base)?);
        if addr.is_ipv4() {
            self.v4.get_mut(i)
        } else {
            self.v6.get_mut(i)
        }
    }

    fn get(&self, addr: SocketAddr) -> Option<&UdpSocket> {
        let i = usize::from(addr.port().checked_sub(self.base)?);
        let table = if addr.is_ipv4() { &self.v4 } else { &self.v6 };
        table.get(i)?.as_ref().map(|r| &*r.sock)
    }
}

struct Worker {
    server: Server<StdRng>,
    /// The listening sockets by local address (a handful: a linear scan).
    listeners: Vec<(SocketAddr, Rc<UdpSocket>)>,
    relays: RelayTable,
    relay_buffer: usize,
    streams: HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>,
    /// Every datagram is read here, a batch at a time (peer data with room to frame it in
    /// place), and sent from here.
    batch: Batch,
    /// Payloads of the last batch from clients, for peers: (relay socket, range, peer).
    to_peers: Vec<(SocketAddr, std::ops::Range<usize>, SocketAddr)>,
    /// Messages of the last batch from peers, for clients.
    to_clients: Vec<(FiveTuple, std::ops::Range<usize>)>,
    /// One `sendmmsg` worth of (range, destination).
    sends: Vec<(std::ops::Range<usize>, SocketAddr)>,
    /// The deadline the timer task sleeps towards; it is woken when the core's changes.
    scheduled: Option<Instant>,
    timer: Rc<Notify>,
    me: Weak<RefCell<Self>>,
}

async fn run(
    server: Server<StdRng>,
    listeners: Vec<std::net::UdpSocket>,
    relay: RelaySockets,
    mut input: mpsc::Receiver<Input>,
    published: Arc<Mutex<Snapshot>>,
) {
    let mut socks = Vec::new();
    for l in listeners {
        match l
            .local_addr()
            .and_then(|a| Ok((a, UdpSocket::from_std(l)?)))
        {
            Ok((addr, sock)) => socks.push((addr, Rc::new(sock))),
            Err(e) => {
                tracing::error!(target: "eeaturn::shell", error = %e, "cannot register a listening socket");
            }
        }
    }
    let timer = Rc::new(Notify::new());
    let worker = Rc::new_cyclic(|me| {
        RefCell::new(Worker {
            server,
            listeners: socks.clone(),
            relays: RelayTable::new(&relay.ports),
            relay_buffer: relay.buffer,
            streams: HashMap::new(),
            batch: Batch::new(),
            to_peers: Vec::with_capacity(BATCH),
            to_clients: Vec::with_capacity(BATCH),
            sends: Vec::with_capacity(BATCH),
            scheduled: None,
            timer: timer.clone(),
            me: me.clone(),
        })
    });
    let mut tasks = Vec::new();
    for (addr, sock) in socks {
        tasks.push(tokio::task::spawn_local(listener_task(
            worker.clone(),
            sock,
            addr,
        )));
    }
    tasks.push(tokio::task::spawn_local(timer_task(worker.clone(), timer)));
    tasks.push(tokio::task::spawn_local(publish_task(
        worker.clone(),
        published.clone(),
    )));

    while let Some(msg) = input.recv().await {
        let mut w = worker.borrow_mut();
        let now = now();
        match msg {
            Input::StreamOpened {
                five,
                writer,
                reply,
            } => {
                let allowed = w.server.handle_connection_opened(five, now);
                if allowed {
                    w.streams.insert(five, writer);
                }
                let _ = reply.send(allowed);
            }
            Input::Stream { five, bytes } => w.client_message(five, &bytes, now),
            Input::StreamClosed { five } => {
                w.streams.remove(&five);
                w.server.handle_connection_closed(five, now);
            }
            Input::Secrets(s) => w.server.replace_secrets(s),
            Input::Policy(p) => w.server.replace_policy(p),
            Input::Stop => break,
        }
        w.drain();
    }
    for t in tasks {
        t.abort();
    }
    let mut w = worker.borrow_mut();
    w.server.shutdown(now());
    w.drain();
    let table = &mut w.relays;
    let relays: Vec<JoinHandle<()>> = table
        .v4
        .iter_mut()
        .chain(table.v6.iter_mut())
        .filter_map(|r| r.take().map(|r| r.task))
        .collect();
    for t in relays {
        t.abort();
    }
    *published.lock().unwrap_or_else(PoisonError::into_inner) = w.snapshot();
}

impl Worker {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            stats: self.server.stats().clone(),
        }
    }

    /// A datagram or framed message from a client: to the core, and the payload on to the
    /// peer from the allocation's relay socket.
    fn client_message(&mut self, five: FiveTuple, bytes: &[u8], now: crate::relay::Now) {
        if let Some(t) = self.server.handle_client_input(five, bytes, now) {
            if let Some(sock) = self.relays.get(t.relay) {
                if let Err(e) = send_udp(sock, &bytes[t.range], t.peer) {
                    tracing::trace!(target: "eeaturn::relay", error = %e, "send to peer failed");
                }
            }
        }
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
        to_peers.sort_unstable_by_key(|(relay, ..)| *relay);
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
            if !sends.is_empty() {
                batch.send(&**sock, sends);
            }
        }
        for (to, range) in to_clients.iter().filter(|(to, _)| to.transport.is_stream()) {
            if let (Some(w), Some(bytes)) = (streams.get(to), batch.buf.get(range.clone())) {
                // A full queue means the client does not read: drop, as UDP would.
                let _ = w.try_send(bytes.to_vec());
            }
        }
        to_clients.clear();
    }

    /// Carries out the core's commands, logs its events, and re-arms the timer.
    fn drain(&mut self) {
        while let Some(cmd) = self.server.poll_command() {
            match cmd {
                Command::SendToClient { to, bytes } => {
                    send_to_client(&self.listeners, &self.streams, to, &bytes);
                }
                Command::BindRelay { token, addrs } => {
                    let result = self.bind_relays(&addrs);
                    self.server.handle_relay_bound(token, &addrs, result, now());
                }
                Command::CloseRelay { addr } => {
                    if let Some(r) = self.relays.entry(addr).and_then(Option::take) {
                        r.task.abort();
                    }
                }
            }
        }
        while let Some(ev) = self.server.poll_event() {
            log::event(&ev);
        }
        let next = self.server.poll_timeout();
        if next != self.scheduled {
            self.scheduled = next;
            self.timer.notify_one();
        }
    }

    fn bind_relays(&mut self, addrs: &[SocketAddr]) -> BindResult {
        let mut bound = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            match bind_udp(addr, self.relay_buffer, false) {
                Ok(sock) => bound.push((addr, sock)),
                Err(e) => {
                    tracing::warn!(target: "eeaturn::shell", port = addr.port(), error = %e, "cannot bind relay socket");
                    return if e.kind() == std::io::ErrorKind::AddrInUse {
                        BindResult::AddrInUse
                    } else {
                        BindResult::Failed
                    };
                }
            }
        }
        let mut registered = Vec::with_capacity(bound.len());
        for (addr, sock) in bound {
            match UdpSocket::from_std(sock) {
                Ok(s) => registered.push((addr, Rc::new(s))),
                Err(e) => {
                    tracing::warn!(target: "eeaturn::shell", error = %e, "cannot register relay socket");
                    return BindResult::Failed;
                }
            }
        }
        for (addr, sock) in registered {
            let task = tokio::task::spawn_local(relay_task(self.me.clone(), sock.clone(), addr));
            match self.relays.entry(addr) {
                Some(slot) => *slot = Some(RelaySock { sock, task }),
                None => {
                    // A port outside the table: the core only picks configured ports.
                    task.abort();
                    return BindResult::Failed;
                }
            }
        }
        BindResult::Bound
    }
}

/// Sends a message to a client: a datagram on UDP, a queued write on TCP/TLS.
fn send_to_client(
    listeners: &[(SocketAddr, Rc<UdpSocket>)],
    streams: &HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>,
    to: FiveTuple,
    bytes: &[u8],
) {
    if to.transport.is_stream() {
        if let Some(w) = streams.get(&to) {
            // A full queue means the client does not read: drop, as UDP would.
            let _ = w.try_send(bytes.to_vec());
        }
    } else if let Some((_, sock)) = listeners.iter().find(|(a, _)| *a == to.server) {
        if let Err(e) = send_udp(sock, bytes, to.client) {
            tracing::trace!(target: "eeaturn::relay", error = %e, "send to client failed");
        }
    }
}

/// Sends one datagram now, without waiting: straight to the kernel, not through tokio's
/// readiness (which a socket bound a moment ago does not have yet). A full send buffer drops
/// the datagram, as the network would.
fn send_udp(sock: &UdpSocket, bytes: &[u8], to: SocketAddr) -> std::io::Result<usize> {
    socket2::SockRef::from(sock).send_to(bytes, &to.into())
}

/// Reads a listening socket: STUN/TURN requests and ChannelData/Send from clients, a batch
/// per system call; the payloads go out a batch per relay socket.
async fn listener_task(worker: Rc<RefCell<Worker>>, sock: Rc<UdpSocket>, local: SocketAddr) {
    loop {
        if let Err(e) = sock.readable().await {
            tracing::error!(target: "eeaturn::shell", error = %e, "listening socket failed");
            return;
        }
        let mut guard = worker.borrow_mut();
        let w = &mut *guard;
        let n = match sock.try_io(Interest::READABLE, || {
            w.batch.recv(&*sock, local.is_ipv6(), 0)
        }) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            // ICMP errors (port unreachable) surface as receive errors on Linux; skip them.
            Err(e) => {
                tracing::trace!(target: "eeaturn::shell", error = %e, "listener recv error");
                continue;
            }
        };
        let now = now();
        for i in 0..n {
            let (len, from) = w.batch.got[i];
            let Some(from) = from else { continue };
            let five = FiveTuple {
                transport: Transport::Udp,
                client: from,
                server: local,
            };
            let start = i * SLOT;
            let Some(bytes) = w.batch.buf.get(start..start + len) else {
                continue;
            };
            if let Some(t) = w.server.handle_client_input(five, bytes, now) {
                let range = start + t.range.start..start + t.range.end;
                w.to_peers.push((t.relay, range, t.peer));
            }
        }
        w.flush_to_peers();
        w.drain();
    }
}

/// Reads one relay socket: data from peers, a batch per system call, framed in place and sent
/// to the clients a batch per listening socket.
async fn relay_task(worker: Weak<RefCell<Worker>>, sock: Rc<UdpSocket>, local: SocketAddr) {
    loop {
        if sock.readable().await.is_err() {
            return;
        }
        let Some(worker) = worker.upgrade() else {
            return;
        };
        let mut guard = worker.borrow_mut();
        let w = &mut *guard;
        let n = match sock.try_io(Interest::READABLE, || {
            w.batch.recv(&*sock, local.is_ipv6(), PEER_HEADROOM)
        }) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::trace!(target: "eeaturn::shell", error = %e, "relay recv error");
                continue;
            }
        };
        let now = now();
        for i in 0..n {
            let (len, from) = w.batch.got[i];
            let Some(from) = from else { continue };
            let payload = PEER_HEADROOM..PEER_HEADROOM + len;
            let slot = w.batch.slot_mut(i);
            if let Some(ClientTransmit { to, range }) =
                w.server.handle_peer_input(local, from, slot, payload, now)
            {
                let base = i * SLOT;
                w.to_clients
                    .push((to, base + range.start..base + range.end));
            }
        }
        w.flush_to_clients();
        w.drain();
    }
}

/// Runs the core's timers.
async fn timer_task(worker: Rc<RefCell<Worker>>, wake: Rc<Notify>) {
    loop {
        let deadline = worker.borrow().server.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {
                let mut w = worker.borrow_mut();
                w.server.handle_timeout(now());
                w.drain();
            }
            () = wake.notified() => {}
        }
    }
}

/// Publishes the worker's counters for the metrics twice a second.
async fn publish_task(worker: Rc<RefCell<Worker>>, published: Arc<Mutex<Snapshot>>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let s = worker.borrow().snapshot();
        *published.lock().unwrap_or_else(PoisonError::into_inner) = s;
    }
}
