//! The data-path measurement: N allocations (or N sockets towards a bare forwarder) send
//! stamped packets to a peer socket of this process, at a fixed rate or as fast as possible;
//! or, the other way (`--direction to-client`), the peer socket sends them to the N relayed
//! addresses and the allocations' clients receive them as ChannelData or Data indications.
//!
//! Every payload starts with a magic, a sequence number and the send time (nanoseconds of
//! the tool's monotonic clock), so the peer side computes one-way latency without clock
//! synchronisation. Only packets *sent* inside the measurement window (after the warm-up)
//! count, as offered and, when they arrive, as delivered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use eeaturn::stun::{
    Class, Message, MessageBuilder, MessageType, Method, attr, write_channel_data_header,
};
use tokio::io::AsyncWriteExt as _;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::hist::Histogram;
use crate::procstat::{ProcReader, Sample, core_ticks, pinned_cpu, udp_drops};
use crate::turn::{Conn, Dialer, Session, new_tid};
use crate::{Clock, bounded};

/// The first four bytes of every payload.
const MAGIC: [u8; 4] = *b"EEB1";
/// Magic, sequence number, send time.
pub(crate) const PAYLOAD_HEADER: usize = 4 + 8 + 8;
/// The channel every allocation binds (each allocation has its own channel space).
pub(crate) const CHANNEL: u16 = 0x4000;
/// Scheduler tick of the fixed-rate sender.
const TICK: Duration = Duration::from_millis(1);
/// Packets sent between two yields of the saturating sender.
const SATURATE_BATCH: u64 = 64;
/// Time after the window for packets still in flight.
const DRAIN: Duration = Duration::from_millis(300);
/// The most bytes one GSO send carries (the kernel's limit is a 64 KiB datagram).
const MAX_GSO_BYTES: usize = 60_000;
/// The most segments one GSO send carries (`UDP_MAX_SEGMENTS`).
pub(crate) const MAX_GSO_SEGMENTS: usize = 64;
/// Receive buffer asked for on the peer socket, so that the tool's own socket is not where
/// bursts are lost.
const PEER_RCVBUF: usize = 8 << 20;

/// How packets travel from the client to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// ChannelData on channel 0x4000.
    Channel,
    /// Send indications.
    Send,
    /// No TURN: bare payloads to a UDP forwarder.
    Raw,
}

/// Which way the measured packets travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Direction {
    /// Clients → relay → peer.
    ToPeer,
    /// Peer → relay → clients.
    ToClient,
}

impl Direction {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::ToPeer => "to-peer",
            Self::ToClient => "to-client",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct LoadSpec {
    pub(crate) allocations: usize,
    pub(crate) mode: Mode,
    pub(crate) direction: Direction,
    pub(crate) payload: usize,
    /// Total offered packets per second; 0 saturates.
    pub(crate) rate: u64,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) peer: SocketAddr,
    pub(crate) server_pid: Option<u32>,
    /// The CPU the server is pinned to, to read that core's busy time.
    pub(crate) server_core: Option<usize>,
    pub(crate) concurrency: usize,
    /// Packets per UDP GSO send; 1 sends each packet with its own system call.
    pub(crate) gso: usize,
}

/// The result of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct LoadReport {
    pub(crate) allocations: usize,
    pub(crate) mode: Mode,
    pub(crate) direction: Direction,
    pub(crate) payload: usize,
    pub(crate) rate: u64,
    pub(crate) duration_s: f64,
    pub(crate) warmup_s: f64,
    pub(crate) offered: u64,
    pub(crate) delivered: u64,
    pub(crate) offered_pps: f64,
    pub(crate) delivered_pps: f64,
    pub(crate) loss_pct: f64,
    pub(crate) lat_p50_us: f64,
    pub(crate) lat_p99_us: f64,
    pub(crate) lat_p999_us: f64,
    pub(crate) lat_max_us: f64,
    /// Server CPU seconds in the window, when `--server-pid` was given.
    pub(crate) server_cpu_s: Option<f64>,
    /// Server CPU microseconds per delivered packet.
    pub(crate) server_us_per_pkt: Option<f64>,
    pub(crate) server_rss_before_kib: Option<u64>,
    pub(crate) server_rss_after_kib: Option<u64>,
    pub(crate) server_smaps_rss_after_kib: Option<u64>,
    /// Busy share of the server's core (`--server-core`) in the window, softirq included.
    pub(crate) server_core_pct: Option<f64>,
    /// Busy microseconds of the server's core per delivered packet.
    pub(crate) server_core_us_per_pkt: Option<f64>,
    /// Busy microseconds of the server's and the tool's cores together per delivered packet:
    /// on a two-core machine, the whole machine. The fair figure when part of the relaying
    /// runs in the kernel outside the server's process and core (the XDP fast path on `lo`
    /// runs in the sender's softirq, on the tool's core). Needs `--server-core` and a tool
    /// pinned to one other core.
    pub(crate) cores_us_per_pkt: Option<f64>,
    /// CPU of this tool in the window, percent of one core.
    pub(crate) tool_cpu_pct: f64,
    /// Busy share of the tool's core, when the tool is pinned to one: near 100 means the tool,
    /// not the server, may have been the limit.
    pub(crate) tool_core_pct: Option<f64>,
    pub(crate) send_errors: u64,
    /// Packets per GSO send (1: none).
    pub(crate) gso: usize,
    /// Datagrams the kernel dropped at the server's full receiving sockets from the window's
    /// start to the end of the drain: where saturation loses packets. Towards the peer these
    /// are the listening socket(s) (every UDP socket bound to the server's address and port);
    /// towards the clients, the relay sockets.
    pub(crate) server_socket_drops: u64,
    /// Datagrams dropped at this tool's own receiving sockets (the peer socket, or the
    /// clients'): must be 0, or the tool lost them.
    pub(crate) peer_socket_drops: u64,
    pub(crate) peer_rcvbuf: usize,
    pub(crate) clk_tck: u64,
}

/// Sets up the allocations, runs the load, tears them down.
///
/// # Errors
///
/// Fails when an allocation cannot be made or a socket fails.
pub(crate) async fn run(dialer: &Dialer, spec: &LoadSpec) -> anyhow::Result<LoadReport> {
    let proc = ProcReader::new();
    let pid = spec.server_pid.map(|p| p.to_string());
    let before = pid.as_deref().map(|p| proc.sample(p)).transpose()?;
    let (peer_sock, peer_rcvbuf) = bind_peer(spec.peer)?;
    let peer_sock = Arc::new(peer_sock);

    let mut sessions = Vec::new();
    let mut flows = Vec::with_capacity(spec.allocations);
    if spec.mode == Mode::Raw {
        for _ in 0..spec.allocations {
            let conn = dialer.connect().await?;
            flows.push(Flow::new(conn, spec.mode, spec.payload, spec.peer, None));
        }
    } else {
        let d = dialer.clone();
        let (mode, peer) = (spec.mode, spec.peer);
        let made = bounded(spec.allocations, spec.concurrency, move |i| {
            let d = d.clone();
            async move {
                let mut s = Session::open(&d, &format!("load{i}")).await?;
                match mode {
                    Mode::Channel => s.channel_bind(CHANNEL, peer).await?,
                    Mode::Send | Mode::Raw => s.create_permission(peer).await?,
                }
                Ok(s)
            }
        })
        .await;
        for (i, s) in made.into_iter().enumerate() {
            let s = s.with_context(|| format!("setting up allocation {i}"))?;
            flows.push(Flow::new(s.conn, spec.mode, spec.payload, spec.peer, None));
            sessions.push(s.auth);
        }
    }
    // Towards the clients the peer socket sends, to every relayed address in turn, and the
    // clients' sockets receive.
    let mut clients = Vec::new();
    // The clients' UDP sockets (the tool checks that this direction runs over UDP only).
    let mut client_socks: Vec<Arc<UdpSocket>> = Vec::new();
    let sides = match spec.direction {
        Direction::ToPeer => Sides {
            server: vec![dialer.server()],
            tool: vec![spec.peer],
        },
        Direction::ToClient => {
            clients = std::mem::take(&mut flows);
            client_socks = clients
                .iter()
                .filter_map(|f| match &f.conn {
                    Conn::Udp(s) => Some(s.clone()),
                    Conn::Stream { .. } => None,
                })
                .collect();
            // The clients receive now: room for bursts, as on the peer socket.
            let each = (PEER_RCVBUF / client_socks.len().max(1)).max(1 << 20);
            for s in &client_socks {
                socket2::SockRef::from(&**s).set_recv_buffer_size(each)?;
            }
            for a in &sessions {
                let conn = Conn::Udp(peer_sock.clone());
                flows.push(Flow::new(
                    conn,
                    Mode::Raw,
                    spec.payload,
                    spec.peer,
                    Some(a.relayed),
                ));
            }
            Sides {
                server: sessions.iter().map(|a| a.relayed).collect(),
                tool: client_socks
                    .iter()
                    .filter_map(|s| s.local_addr().ok())
                    .collect(),
            }
        }
    };
    let sides = Arc::new(sides);

    let clock = Clock::new();
    let window = Window {
        start: clock.nanos() + nanos(spec.warmup),
        end: clock.nanos() + nanos(spec.warmup + spec.duration),
    };
    let t0 = Instant::now();
    let stop = t0 + spec.warmup + spec.duration + DRAIN;
    let recv = match spec.direction {
        Direction::ToPeer => tokio::spawn(receive(peer_sock, Unwrap::Bare, clock, window, stop)),
        Direction::ToClient => {
            let unwrap = match spec.mode {
                Mode::Send => Unwrap::Data,
                Mode::Channel | Mode::Raw => Unwrap::Channel,
            };
            let tasks: Vec<_> = client_socks
                .into_iter()
                .map(|s| tokio::spawn(receive(s, unwrap, clock, window, stop)))
                .collect();
            tokio::spawn(async move {
                let mut all = RecvStats {
                    latency: Histogram::new(),
                };
                for t in tasks {
                    if let Ok(st) = t.await {
                        all.latency.merge(&st.latency);
                    }
                }
                all
            })
        }
    };
    let sampler = {
        let pid = pid.clone();
        let cores = (spec.server_core, pinned_cpu());
        let addrs = sides.clone();
        let (a, b) = (t0 + spec.warmup, t0 + spec.warmup + spec.duration);
        tokio::spawn(async move {
            tokio::time::sleep_until(a).await;
            let first = Snap::take(proc, pid.as_deref(), cores, &addrs);
            tokio::time::sleep_until(b).await;
            (first, Snap::take(proc, pid.as_deref(), cores, &addrs))
        })
    };
    let sent = send(&mut flows, clock, window, spec.rate, spec.gso).await;
    let (snap0, snap1) = sampler.await?;
    let (snap0, snap1) = (snap0?, snap1?);
    let got = recv.await?;
    let delivered = got.latency.count();
    let drops_end = drops(&sides)?;
    let after = pid.as_deref().map(|p| proc.sample(p)).transpose()?;

    // Give the connections back and release the allocations.
    if spec.direction == Direction::ToClient {
        flows = clients;
    }
    let sessions = sessions
        .into_iter()
        .zip(flows)
        .map(|(auth, f)| Session { conn: f.conn, auth })
        .collect();
    release_all(sessions, spec.concurrency).await;

    let secs = spec.duration.as_secs_f64();
    let server_cpu_s = snap0.server_cpu.zip(snap1.server_cpu).map(|(a, b)| b - a);
    let ticks = proc.ticks_per_s() as f64;
    // Busy share of a core over the window, and busy microseconds per delivered packet.
    let core = |a: Option<(u64, u64)>, b: Option<(u64, u64)>| {
        a.zip(b).map(|((ba, ta), (bb, tb))| {
            let busy = bb.saturating_sub(ba) as f64;
            let total = tb.saturating_sub(ta).max(1) as f64;
            (100.0 * busy / total, busy / ticks * 1e6)
        })
    };
    let server_core = core(snap0.server_core, snap1.server_core);
    let tool_core = core(snap0.tool_core, snap1.tool_core);
    let us = |ns: u64| ns as f64 / 1000.0;
    Ok(LoadReport {
        allocations: spec.allocations,
        mode: spec.mode,
        direction: spec.direction,
        payload: spec.payload,
        rate: spec.rate,
        duration_s: secs,
        warmup_s: spec.warmup.as_secs_f64(),
        offered: sent.offered,
        delivered,
        offered_pps: sent.offered as f64 / secs,
        delivered_pps: delivered as f64 / secs,
        loss_pct: if sent.offered == 0 {
            0.0
        } else {
            100.0 * (1.0 - delivered as f64 / sent.offered as f64)
        },
        lat_p50_us: us(got.latency.quantile(0.5)),
        lat_p99_us: us(got.latency.quantile(0.99)),
        lat_p999_us: us(got.latency.quantile(0.999)),
        lat_max_us: us(got.latency.max()),
        server_cpu_s,
        server_us_per_pkt: server_cpu_s
            .filter(|_| delivered > 0)
            .map(|c| c * 1e6 / delivered as f64),
        server_rss_before_kib: before.map(|s: Sample| s.vm_rss_kib),
        server_rss_after_kib: after.map(|s| s.vm_rss_kib),
        server_smaps_rss_after_kib: after.map(|s| s.smaps_rss_kib),
        server_core_pct: server_core.map(|c| c.0),
        server_core_us_per_pkt: server_core
            .filter(|_| delivered > 0)
            .map(|c| c.1 / delivered as f64),
        cores_us_per_pkt: server_core
            .zip(tool_core)
            .filter(|_| delivered > 0 && spec.server_core != pinned_cpu())
            .map(|(s, t)| (s.1 + t.1) / delivered as f64),
        tool_cpu_pct: 100.0 * (snap1.tool_cpu - snap0.tool_cpu) / secs,
        tool_core_pct: tool_core.map(|c| c.0),
        send_errors: sent.errors,
        gso: spec.gso,
        server_socket_drops: drops_end.0.saturating_sub(snap0.drops.0),
        peer_socket_drops: drops_end.1.saturating_sub(snap0.drops.1),
        peer_rcvbuf,
        clk_tck: proc.ticks_per_s(),
    })
}

/// Releases every allocation, ignoring failures (the server expires them anyway).
pub(crate) async fn release_all(sessions: Vec<Session>, concurrency: usize) -> usize {
    let n = sessions.len();
    let slots: Arc<Vec<std::sync::Mutex<Option<Session>>>> = Arc::new(
        sessions
            .into_iter()
            .map(|s| std::sync::Mutex::new(Some(s)))
            .collect(),
    );
    let done = bounded(n, concurrency, move |i| {
        let s = slots[i].lock().ok().and_then(|mut g| g.take());
        async move {
            match s {
                Some(mut s) => s.release().await,
                None => Ok(()),
            }
        }
    })
    .await;
    done.iter().filter(|r| r.is_ok()).count()
}

/// CPU counters read at one edge of the window.
#[derive(Debug, Clone, Copy)]
struct Snap {
    /// Drops on the server's listening socket(s) and on the peer socket.
    drops: (u64, u64),
    server_cpu: Option<f64>,
    tool_cpu: f64,
    server_core: Option<(u64, u64)>,
    tool_core: Option<(u64, u64)>,
}

impl Snap {
    fn take(
        proc: ProcReader,
        pid: Option<&str>,
        (server_core, tool_core): (Option<usize>, Option<usize>),
        sides: &Sides,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            drops: drops(sides)?,
            server_cpu: pid.map(|p| proc.cpu_s(p)).transpose()?,
            tool_cpu: proc.cpu_s("self")?,
            server_core: server_core.map(core_ticks).transpose()?,
            tool_core: tool_core.and_then(|c| core_ticks(c).ok()),
        })
    }
}

/// The measurement window in tool nanoseconds: packets stamped in `start..end` count.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    end: u64,
}

impl Window {
    fn contains(&self, t: u64) -> bool {
        (self.start..self.end).contains(&t)
    }
}

/// One sending socket with its prepared packet, and where to send it when the socket is
/// not connected (the peer socket, sending to a relayed address).
struct Flow {
    conn: Conn,
    pkt: Packet,
    to: Option<SocketAddr>,
}

/// A prepared packet: only the payload header (and a Send's transaction id) changes.
struct Packet {
    bytes: Vec<u8>,
    /// Offset of the payload in `bytes`.
    payload_at: usize,
    /// Offset of the transaction id (Send indications get a fresh one per packet).
    tid_at: Option<usize>,
}

impl Flow {
    fn new(
        conn: Conn,
        mode: Mode,
        payload: usize,
        peer: SocketAddr,
        to: Option<SocketAddr>,
    ) -> Self {
        let (bytes, payload_at, tid_at) = match mode {
            Mode::Raw => (vec![0x5a; payload], 0, None),
            Mode::Channel => {
                // Streams carry ChannelData padded to four bytes (RFC 8656 §12.5).
                let padded = match conn {
                    Conn::Udp(_) => payload,
                    Conn::Stream { .. } => (payload + 3) & !3,
                };
                let mut p = vec![0x5a; 4 + padded];
                let len = u16::try_from(payload).unwrap_or(u16::MAX);
                write_channel_data_header(&mut p, CHANNEL, len);
                (p, 4, None)
            }
            Mode::Send => {
                let mut b = MessageBuilder::new(
                    MessageType::new(Method::SEND, Class::Indication),
                    new_tid(),
                );
                b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
                b.add_raw(attr::DATA, &vec![0x5a; payload]);
                let p = b.finish();
                let at = Message::parse(&p)
                    .ok()
                    .and_then(|m| m.value_range(attr::DATA))
                    .map_or(0, |r| r.start);
                (p, at, Some(8))
            }
        };
        Self {
            conn,
            pkt: Packet {
                bytes,
                payload_at,
                tid_at,
            },
            to,
        }
    }
}

impl Packet {
    /// Writes the magic, `seq` and the send time `now` into the payload.
    fn stamp(&mut self, seq: u64, now: u64) {
        let p = &mut self.bytes[self.payload_at..];
        p[..4].copy_from_slice(&MAGIC);
        p[4..12].copy_from_slice(&seq.to_be_bytes());
        p[12..20].copy_from_slice(&now.to_be_bytes());
        if let Some(t) = self.tid_at {
            self.bytes[t + 4..t + 12].copy_from_slice(&seq.to_be_bytes());
        }
    }
}

#[derive(Debug, Default)]
struct SendStats {
    offered: u64,
    errors: u64,
}

/// Sends until the window ends: `rate` packets per second in 1 ms ticks, or as fast as the
/// sockets take them when `rate` is 0. Packets go round-robin over the flows.
async fn send(
    flows: &mut [Flow],
    clock: Clock,
    window: Window,
    rate: u64,
    gso: usize,
) -> SendStats {
    if flows.is_empty() {
        return SendStats::default();
    }
    let mut s = Sender {
        flows,
        next: 0,
        seq: 0,
        clock,
        window,
        gso,
        scratch: Vec::new(),
        st: SendStats::default(),
    };
    if rate == 0 {
        while s.burst(SATURATE_BATCH).await {
            tokio::task::yield_now().await;
        }
        return s.st;
    }
    let begin = clock.nanos();
    // Never more than 20 ms worth in one tick: a stalled tool does not send a huge burst.
    let cap = (rate / 50).max(1);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let elapsed = clock.nanos().saturating_sub(begin);
        let target = (u128::from(rate) * u128::from(elapsed) / 1_000_000_000) as u64;
        let due = target.saturating_sub(s.seq).min(cap);
        if due == 0 {
            if clock.nanos() >= window.end {
                return s.st;
            }
            continue;
        }
        if !s.burst(due).await {
            return s.st;
        }
        if target > s.seq + cap {
            // The tool fell behind: drop the backlog rather than burst it later.
            s.seq = target;
        }
    }
}

/// The sending side's state.
struct Sender<'a> {
    flows: &'a mut [Flow],
    /// The next flow, round-robin.
    next: usize,
    /// The next sequence number.
    seq: u64,
    clock: Clock,
    window: Window,
    /// Packets per UDP GSO send (1: one `send` per packet).
    gso: usize,
    scratch: Vec<u8>,
    st: SendStats,
}

impl Sender<'_> {
    /// Sends `n` packets; returns false once the window has ended.
    async fn burst(&mut self, n: u64) -> bool {
        let count = self.flows.len();
        let mut left = n;
        while left > 0 {
            if self.clock.nanos() >= self.window.end {
                return false;
            }
            let f = &mut self.flows[self.next];
            self.next = (self.next + 1) % count;
            // How many packets this flow sends at once: one per datagram socket (or a GSO
            // batch), its share of the burst on a stream.
            let k = match f.conn {
                Conn::Udp(_) if self.gso > 1 => {
                    let fit = MAX_GSO_BYTES / f.pkt.bytes.len();
                    left.min(self.gso as u64).min(fit as u64).max(1)
                }
                Conn::Udp(_) => 1,
                Conn::Stream { .. } => left.div_ceil(count as u64).max(1).min(left),
            };
            self.scratch.clear();
            let mut counted = 0;
            for _ in 0..k {
                let now = self.clock.nanos();
                f.pkt.stamp(self.seq, now);
                self.scratch.extend_from_slice(&f.pkt.bytes);
                if self.window.contains(now) {
                    counted += 1;
                }
                self.seq += 1;
            }
            let sent = match &mut f.conn {
                Conn::Udp(sock) if k > 1 || self.gso > 1 => {
                    send_gso(sock, &self.scratch, f.pkt.bytes.len(), f.to).await
                }
                Conn::Udp(sock) => send_one(sock, &self.scratch, f.to).await,
                Conn::Stream { writer, .. } => writer.write_all(&self.scratch).await,
            };
            match sent {
                Ok(()) => self.st.offered += counted,
                Err(_) => self.st.errors += k,
            }
            left -= k;
        }
        true
    }
}

/// Sends one datagram (to `to`, or where `sock` is connected), waiting while the socket
/// buffer is full.
async fn send_one(sock: &UdpSocket, bytes: &[u8], to: Option<SocketAddr>) -> std::io::Result<()> {
    loop {
        let r = match to {
            Some(to) => sock.try_send_to(bytes, to),
            None => sock.try_send(bytes),
        };
        match r {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => sock.writable().await?,
            Err(e) => return Err(e),
        }
    }
}

/// Sends `buf` as datagrams of `segment` bytes in one `sendmsg` (UDP GSO, Linux 4.18+). The
/// kernel splits it; on loopback the receiver gets separate datagrams unless it enabled
/// UDP_GRO.
async fn send_gso(
    sock: &UdpSocket,
    buf: &[u8],
    segment: usize,
    to: Option<SocketAddr>,
) -> std::io::Result<()> {
    let cmsg = udp_segment_cmsg(u16::try_from(segment).unwrap_or(u16::MAX));
    let iov = [std::io::IoSlice::new(buf)];
    let to = to.map(socket2::SockAddr::from);
    loop {
        let r = sock.try_io(tokio::io::Interest::WRITABLE, || {
            let msg = socket2::MsgHdr::new()
                .with_buffers(&iov)
                .with_control(&cmsg);
            let msg = match &to {
                Some(to) => msg.with_addr(to),
                None => msg,
            };
            socket2::SockRef::from(sock).sendmsg(&msg, 0)
        });
        match r {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => sock.writable().await?,
            Err(e) => return Err(e),
        }
    }
}

/// Returns the control message `UDP_SEGMENT = size` as the kernel lays it out on 64-bit
/// Linux: `cmsghdr { len: usize, level: i32, type: i32 }`, the u16, padding to 8 bytes.
fn udp_segment_cmsg(size: u16) -> [u8; 24] {
    /// `SOL_UDP` and `UDP_SEGMENT` from `<netinet/udp.h>`.
    const SOL_UDP: i32 = 17;
    const UDP_SEGMENT: i32 = 103;
    let mut c = [0u8; 24];
    // CMSG_LEN(2): the 16-byte header plus the value.
    c[..8].copy_from_slice(&18u64.to_ne_bytes());
    c[8..12].copy_from_slice(&SOL_UDP.to_ne_bytes());
    c[12..16].copy_from_slice(&UDP_SEGMENT.to_ne_bytes());
    c[16..18].copy_from_slice(&size.to_ne_bytes());
    c
}

#[derive(Debug)]
struct RecvStats {
    /// One-way latency of every delivered packet; its count is the delivered count.
    latency: Histogram,
}

/// How a receiving socket finds the payload in a datagram.
#[derive(Debug, Clone, Copy)]
enum Unwrap {
    /// The datagram is the payload (the peer socket).
    Bare,
    /// ChannelData.
    Channel,
    /// A Data indication's DATA.
    Data,
}

impl Unwrap {
    fn payload(self, b: &[u8]) -> Option<&[u8]> {
        match self {
            Self::Bare => Some(b),
            Self::Channel => {
                let len = usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?]));
                b.get(4..4 + len)
            }
            Self::Data => {
                let range = Message::parse(b).ok()?.value_range(attr::DATA)?;
                b.get(range)
            }
        }
    }
}

/// Receives on `sock` until `stop`, counting the packets sent inside the window.
async fn receive(
    sock: Arc<UdpSocket>,
    unwrap: Unwrap,
    clock: Clock,
    window: Window,
    stop: Instant,
) -> RecvStats {
    let mut st = RecvStats {
        latency: Histogram::new(),
    };
    let mut buf = vec![0u8; 65_536];
    loop {
        let mut n = 0;
        while n < SATURATE_BATCH {
            match sock.try_recv(&mut buf) {
                Ok(len) => {
                    n += 1;
                    let now = clock.nanos();
                    if let Some(sent) = unwrap.payload(&buf[..len]).and_then(parse_stamp)
                        && window.contains(sent)
                    {
                        st.latency.record(now.saturating_sub(sent));
                    }
                }
                Err(_) => break,
            }
        }
        if Instant::now() >= stop {
            return st;
        }
        if n == SATURATE_BATCH {
            tokio::task::yield_now().await;
        } else {
            let _ = tokio::time::timeout_at(stop, sock.readable()).await;
        }
    }
}

/// Returns the send time of a payload of ours.
fn parse_stamp(p: &[u8]) -> Option<u64> {
    if p.len() < PAYLOAD_HEADER || p[..4] != MAGIC {
        return None;
    }
    Some(u64::from_be_bytes(p[12..20].try_into().ok()?))
}

/// Binds the peer socket with a large receive buffer; returns it and the effective size.
fn bind_peer(addr: SocketAddr) -> anyhow::Result<(UdpSocket, usize)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_recv_buffer_size(PEER_RCVBUF)?;
    s.bind(&addr.into())
        .with_context(|| format!("binding the peer socket on {addr}"))?;
    s.set_nonblocking(true)?;
    let size = s.recv_buffer_size()?;
    if size < PEER_RCVBUF {
        eprintln!(
            "note: the peer socket's receive buffer is {size} bytes (asked {PEER_RCVBUF}; \
             net.core.rmem_max caps it): bursts may be lost in the tool itself"
        );
    }
    let sock = UdpSocket::from_std(s.into())?;
    Ok((sock, size))
}

/// The receiving sockets on each side, for their drop counters.
#[derive(Debug)]
struct Sides {
    /// The server's sockets that receive the load.
    server: Vec<SocketAddr>,
    /// This tool's sockets that receive what the server relays.
    tool: Vec<SocketAddr>,
}

/// Reads the drops of the server's receiving sockets and of the tool's.
fn drops(sides: &Sides) -> anyhow::Result<(u64, u64)> {
    Ok((
        udp_drops(|a| sides.server.contains(&a))?,
        udp_drops(|a| sides.tool.contains(&a))?,
    ))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Checks the load parameters.
///
/// # Errors
///
/// Fails on a payload too small for the stamp or a mode the transport cannot carry.
pub(crate) fn check(spec: &LoadSpec, dialer: &Dialer) -> anyhow::Result<()> {
    if spec.payload < PAYLOAD_HEADER {
        bail!("--payload must be at least {PAYLOAD_HEADER} bytes (the stamp)");
    }
    if spec.mode == Mode::Raw && dialer.transport() != crate::turn::Transport::Udp {
        bail!("--raw-forwarder works over UDP only");
    }
    if spec.direction == Direction::ToClient
        && (spec.mode == Mode::Raw || dialer.transport() != crate::turn::Transport::Udp)
    {
        bail!(
            "--direction to-client needs a TURN server over UDP (no --raw-forwarder, no --transport tcp/tls)"
        );
    }
    if !(1..=MAX_GSO_SEGMENTS).contains(&spec.gso) {
        bail!("--gso must be 1..={MAX_GSO_SEGMENTS}");
    }
    if spec.gso > 1 && !cfg!(all(target_os = "linux", target_pointer_width = "64")) {
        bail!("--gso needs 64-bit Linux");
    }
    Ok(())
}
