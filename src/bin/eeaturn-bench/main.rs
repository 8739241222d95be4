//! eeaturn-bench: drives any TURN server (or a bare UDP forwarder) on loopback and measures
//! it. Uses eeaturn's codec and credential code, never its server.
//!
//! - `load`: N allocations send ChannelData or Send indications (or raw datagrams to a
//!   forwarder) to a peer socket of this process, at a fixed rate or saturating; reports
//!   offered and delivered packets per second, loss, one-way latency percentiles, and the
//!   server's CPU time and memory (`--server-pid`).
//! - `setup`: allocations per second, each with its 401 round and authenticated Allocate.
//! - `memory`: the server's RSS growth per idle allocation with one permission and channel.
//! - `hold`: sets up allocations with a channel each, prints their 5-tuples and keeps them,
//!   for an external generator (`benches/veth-capacity.sh`).
//!
//! With `--json`, stdout carries one JSON line and the human summary goes to stderr.
//! Every address must be a loopback address: this tool never sends anywhere else (the one
//! exception, 198.18.0.0/15 in a network namespace without a default route, is for
//! `benches/veth-compare.sh`).

#![expect(
    clippy::print_stdout,
    reason = "a command-line tool printing its results"
)]

mod hist;
mod hold;
mod load;
mod procstat;
mod setup;
mod turn;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};

use crate::load::{Direction, LoadSpec, Mode};
use crate::turn::{Dialer, Transport};

/// The most allocations or sockets one run may open.
const MAX_ALLOCATIONS: usize = 60_000;
/// The longest measurement and warm-up, in seconds.
const MAX_SECS: f64 = 600.0;
/// The longest `hold`, in seconds (a day).
const MAX_HOLD_SECS: f64 = 86_400.0;

#[derive(Debug, Parser)]
#[command(
    name = "eeaturn-bench",
    about = "Load generator and meter for TURN servers and UDP forwarders (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Relays stamped packets through N allocations and measures rate, loss, latency, CPU.
    Load(LoadArgs),
    /// Measures the allocation setup rate (401 round plus authenticated Allocate).
    Setup(SetupArgs),
    /// Measures the server's memory per idle allocation (one permission, one channel).
    Memory(MemoryArgs),
    /// Sets up allocations over UDP with a channel each to one peer, prints them as JSON and
    /// keeps them until stdin closes, SIGTERM or SIGINT, or --seconds; then releases them.
    Hold(HoldArgs),
}

#[derive(Debug, Args)]
struct Target {
    /// The server (or forwarder) address, e.g. 127.0.0.1:20000.
    #[arg(long)]
    server: SocketAddr,
    /// Transport to the server.
    #[arg(long, value_enum, default_value = "udp")]
    transport: Transport,
    /// PEM file of the CA that signed the server's certificate (TLS).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The TURN REST shared secret (visible in `ps`; prefer --secret-file).
    #[arg(long, conflicts_with = "secret_file")]
    secret: Option<String>,
    /// File holding the shared secret (first non-comment line signs).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Local address of the client sockets (127.0.1.x is German in eeaturn's test world).
    #[arg(long, default_value = "127.0.1.1")]
    client_addr: IpAddr,
    /// Process id of the server, to read its CPU time and memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The CPU the server is pinned to (taskset), to read that core's busy time including
    /// softirq work charged to no process.
    #[arg(long)]
    server_core: Option<usize>,
    /// Requests in flight while allocations are set up and released.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Print one JSON line on stdout (the summary goes to stderr).
    #[arg(long)]
    json: bool,
    /// A label copied into the JSON line (e.g. the server's name).
    #[arg(long, default_value = "")]
    label: String,
}

#[derive(Debug, Args)]
struct LoadArgs {
    #[command(flatten)]
    target: Target,
    /// Allocations (or, with --raw-forwarder, client sockets).
    #[arg(long, default_value_t = 10)]
    allocations: usize,
    /// ChannelData or Send indications.
    #[arg(long, value_enum, default_value = "channel")]
    mode: LoadMode,
    /// Which way the measured packets travel: from the clients through the relay to the peer
    /// socket (ChannelData or Send indications in, plain datagrams out), or from the peer
    /// socket through the relay to the clients (plain datagrams in, ChannelData or Data
    /// indications out; UDP and a TURN server only).
    #[arg(long, value_enum, default_value = "to-peer")]
    direction: Direction,
    /// Application bytes per packet (at least 20: magic, sequence, timestamp).
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Total offered packets per second; 0 sends as fast as possible.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Measurement window, seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Sending before the window, not counted, seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Address of the peer socket this tool binds (127.0.2.x is French in the test world).
    #[arg(long, default_value = "127.0.2.1")]
    peer_addr: IpAddr,
    /// Port of the peer socket.
    #[arg(long, default_value_t = 20_500)]
    peer_port: u16,
    /// Packets per send system call with UDP GSO (1 = one send per packet, as real clients
    /// do). More lets one tool core offer more, for saturating fast servers; the server
    /// still receives separate datagrams unless it enabled UDP_GRO.
    #[arg(long, default_value_t = 1)]
    gso: usize,
    /// No TURN: send bare payloads to a UDP forwarder at --server that forwards them to the
    /// peer address and port.
    #[arg(long)]
    raw_forwarder: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LoadMode {
    /// ChannelData on a bound channel.
    Channel,
    /// Send indications to a permitted peer.
    Send,
}

#[derive(Debug, Args)]
struct SetupArgs {
    #[command(flatten)]
    target: Target,
    /// Allocations to make (each on its own connection, each with its own user id).
    #[arg(long, default_value_t = 1000)]
    allocations: usize,
}

#[derive(Debug, Args)]
struct MemoryArgs {
    #[command(flatten)]
    target: Target,
    /// Allocations to make and hold.
    #[arg(long, default_value_t = 1000)]
    allocations: usize,
    /// Peer address of each allocation's permission and channel.
    #[arg(long, default_value = "127.0.2.1")]
    peer_addr: IpAddr,
    /// Peer port of the channels.
    #[arg(long, default_value_t = 20_500)]
    peer_port: u16,
}

#[derive(Debug, Args)]
struct HoldArgs {
    #[command(flatten)]
    target: Target,
    /// Allocations to make and hold.
    #[arg(long, default_value_t = 10)]
    allocations: usize,
    /// Peer address of each allocation's channel (0x4000).
    #[arg(long, default_value = "127.0.2.1")]
    peer_addr: IpAddr,
    /// Peer port of the channels.
    #[arg(long, default_value_t = 20_500)]
    peer_port: u16,
    /// The longest hold, seconds (at most a day).
    #[arg(long, default_value_t = 300.0)]
    seconds: f64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Load(a) => {
            let t = &a.target;
            check_loopback(&[t.server.ip(), t.client_addr, a.peer_addr])?;
            check_count(a.allocations, t.concurrency)?;
            let spec = LoadSpec {
                allocations: a.allocations,
                mode: match (a.raw_forwarder, a.mode) {
                    (true, _) => Mode::Raw,
                    (false, LoadMode::Channel) => Mode::Channel,
                    (false, LoadMode::Send) => Mode::Send,
                },
                direction: a.direction,
                payload: a.payload,
                rate: a.rate,
                duration: secs("--duration", a.duration)?,
                warmup: secs("--warmup", a.warmup)?,
                peer: SocketAddr::new(a.peer_addr, a.peer_port),
                server_pid: t.server_pid,
                server_core: t.server_core,
                concurrency: t.concurrency,
                gso: a.gso,
            };
            if spec.duration.is_zero() {
                bail!("--duration must be positive");
            }
            let dialer = dialer(t, !a.raw_forwarder)?;
            load::check(&spec, &dialer)?;
            let r = load::run(&dialer, &spec).await?;
            let summary = load_summary(&label(&t.label), dialer.transport(), &r);
            output(t, "load", &summary, &r)
        }
        Command::Setup(a) => {
            let t = &a.target;
            check_loopback(&[t.server.ip(), t.client_addr])?;
            check_count(a.allocations, t.concurrency)?;
            let dialer = dialer(t, true)?;
            let r = setup::run_setup(&dialer, a.allocations, t.concurrency, t.server_pid).await?;
            let summary = format!(
                "{label}{transport:?} setup: {ok} of {n} allocations in {secs:.3} s = {rate:.0}/s \
                 ({c} in flight), per allocation p50 {p50:.0} µs p99 {p99:.0} µs, server CPU \
                 {per} per allocation, tool CPU {tc:.0} %; released {rel} in {rs:.3} s{err}",
                label = label(&t.label),
                transport = dialer.transport(),
                ok = r.ok,
                n = r.allocations,
                secs = r.secs,
                rate = r.allocs_per_s,
                c = r.concurrency,
                p50 = r.setup_p50_us,
                p99 = r.setup_p99_us,
                per = opt(r.server_us_per_alloc, |v| format!("{v:.1} µs")),
                tc = r.tool_cpu_pct,
                rel = r.released,
                rs = r.release_secs,
                err = r
                    .first_error
                    .as_deref()
                    .map(|e| format!("; first error: {e}"))
                    .unwrap_or_default(),
            );
            output(t, "setup", &summary, &r)
        }
        Command::Memory(a) => {
            let t = &a.target;
            check_loopback(&[t.server.ip(), t.client_addr, a.peer_addr])?;
            check_count(a.allocations, t.concurrency)?;
            let pid = t.server_pid.context("memory needs --server-pid")?;
            let dialer = dialer(t, true)?;
            let peer = SocketAddr::new(a.peer_addr, a.peer_port);
            let r = setup::run_memory(&dialer, a.allocations, t.concurrency, peer, pid).await?;
            let summary = format!(
                "{label}memory: {ok} allocations with one permission and one channel: VmRSS \
                 {b} → {l} KiB ({per:.0} B per allocation; smaps_rollup {sper:.0} B), {r} KiB \
                 after release",
                label = label(&t.label),
                ok = r.ok,
                b = r.rss_before_kib,
                l = r.rss_loaded_kib,
                per = r.bytes_per_allocation,
                sper = r.smaps_bytes_per_allocation,
                r = r.rss_released_kib,
            );
            output(t, "memory", &summary, &r)
        }
        Command::Hold(a) => {
            let t = &a.target;
            check_loopback(&[t.server.ip(), t.client_addr, a.peer_addr])?;
            check_count(a.allocations, t.concurrency)?;
            if t.transport != Transport::Udp {
                bail!("hold runs over UDP only");
            }
            let dialer = dialer(t, true)?;
            let peer = SocketAddr::new(a.peer_addr, a.peer_port);
            if !(a.seconds > 0.0 && a.seconds <= MAX_HOLD_SECS) {
                bail!("--seconds must be more than 0 and at most {MAX_HOLD_SECS}");
            }
            let limit = Duration::from_secs_f64(a.seconds);
            let label = label(&t.label);
            let released = hold::run(&dialer, a.allocations, t.concurrency, peer, limit, |r| {
                // Always JSON: the line is for the generator; flushed before the hold begins.
                println!("{}", serde_json::to_string(r)?);
                std::io::Write::flush(&mut std::io::stdout())?;
                eprintln!(
                    "{label}holding {} allocations with a channel to {peer}",
                    r.flows.len()
                );
                Ok(())
            })
            .await?;
            eprintln!(
                "{label}released {released} of {} allocations",
                a.allocations
            );
            Ok(())
        }
    }
}

/// Returns the human summary of a load run.
fn load_summary(label: &str, transport: Transport, r: &load::LoadReport) -> String {
    use std::fmt::Write as _;
    let rate = if r.rate == 0 {
        "max".to_owned()
    } else {
        r.rate.to_string()
    };
    let mut s = format!(
        "{label}{transport:?} {mode:?} {direction} {n} alloc {payload} B, rate {rate}: \
         offered {op:.0}/s, delivered {dp:.0}/s, loss {loss:.3} %",
        mode = r.mode,
        direction = r.direction.name(),
        n = r.allocations,
        payload = r.payload,
        op = r.offered_pps,
        dp = r.delivered_pps,
        loss = r.loss_pct,
    );
    let _ = write!(
        s,
        "; latency p50 {:.1} µs p99 {:.1} µs p99.9 {:.1} µs max {:.1} µs",
        r.lat_p50_us, r.lat_p99_us, r.lat_p999_us, r.lat_max_us
    );
    let _ = write!(
        s,
        "; server CPU {}, {} per packet (core {}, {} per packet), RSS {} → {} KiB",
        opt(r.server_cpu_s, |v| format!("{v:.2} s")),
        opt(r.server_us_per_pkt, |v| format!("{v:.2} µs")),
        opt(r.server_core_pct, |v| format!("{v:.0} %")),
        opt(r.server_core_us_per_pkt, |v| format!("{v:.2} µs")),
        opt(r.server_rss_before_kib, |v| v.to_string()),
        opt(r.server_rss_after_kib, |v| v.to_string()),
    );
    let _ = write!(
        s,
        "; tool CPU {:.0} % (core {}); both cores {} per packet; dropped at full sockets: server {}, peer {}",
        r.tool_cpu_pct,
        opt(r.tool_core_pct, |v| format!("{v:.0} %")),
        opt(r.cores_us_per_pkt, |v| format!("{v:.2} µs")),
        r.server_socket_drops,
        r.peer_socket_drops,
    );
    if r.send_errors > 0 {
        let _ = write!(s, "; {} send errors", r.send_errors);
    }
    s
}

/// Prints the summary, and with `--json` one JSON line on stdout.
fn output(
    t: &Target,
    kind: &str,
    summary: &str,
    report: &impl serde::Serialize,
) -> anyhow::Result<()> {
    if !t.json {
        println!("{summary}");
        return Ok(());
    }
    eprintln!("{summary}");
    let mut v = serde_json::to_value(report)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("kind".into(), kind.into());
        o.insert("label".into(), t.label.clone().into());
        o.insert("server".into(), t.server.to_string().into());
        o.insert("transport".into(), serde_json::to_value(t.transport)?);
    }
    println!("{v}");
    Ok(())
}

fn dialer(t: &Target, turn: bool) -> anyhow::Result<Dialer> {
    let secret = match (&t.secret, &t.secret_file) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(f)) => {
            Some(std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?)
        }
        (None, None) if turn => bail!("TURN needs --secret or --secret-file"),
        (None, None) => None,
    };
    Dialer::new(
        t.server,
        t.client_addr,
        t.transport,
        t.ca_file.as_deref(),
        secret.as_deref(),
    )
}

/// Refuses anything that is not a loopback address, except the benchmarking range
/// 198.18.0.0/15 (RFC 2544) inside a network namespace without a default route
/// (`benches/veth-compare.sh`), where those addresses exist only on the namespace's veth and
/// nothing can leave it.
fn check_loopback(addrs: &[IpAddr]) -> anyhow::Result<()> {
    for a in addrs {
        if a.is_loopback() {
            continue;
        }
        if benchmarking(*a) {
            if !has_default_route() {
                continue;
            }
            bail!(
                "{a} is in 198.18.0.0/15: this tool uses that range only in a network namespace \
                 without a default route (benches/veth-compare.sh), never on the host's network"
            );
        }
        bail!("{a} is not a loopback address: this tool only runs on loopback");
    }
    Ok(())
}

/// 198.18.0.0/15, the benchmarking range of RFC 2544.
fn benchmarking(a: IpAddr) -> bool {
    matches!(a, IpAddr::V4(v4) if v4.octets()[0] == 198 && v4.octets()[1] & 0xfe == 18)
}

/// Whether this network namespace has an IPv4 default route (or its table cannot be read,
/// which counts as having one).
fn has_default_route() -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/route") else {
        return true;
    };
    table
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some("00000000"))
}

fn check_count(n: usize, concurrency: usize) -> anyhow::Result<()> {
    if n == 0 || n > MAX_ALLOCATIONS {
        bail!("--allocations must be 1..={MAX_ALLOCATIONS}");
    }
    if concurrency == 0 || concurrency > 1024 {
        bail!("--concurrency must be 1..=1024");
    }
    Ok(())
}

fn secs(name: &str, v: f64) -> anyhow::Result<Duration> {
    if !(0.0..=MAX_SECS).contains(&v) {
        bail!("{name} must be between 0 and {MAX_SECS} seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

fn label(l: &str) -> String {
    if l.is_empty() {
        String::new()
    } else {
        format!("[{l}] ")
    }
}

fn opt<T: Copy>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "n/a".to_owned(), f)
}

/// The tool's monotonic clock: nanoseconds since it was created.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    start: Instant,
}

impl Clock {
    /// Starts a clock at zero.
    #[expect(
        clippy::disallowed_methods,
        reason = "the bench is a client, not the core: it reads the clock"
    )]
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// Returns the nanoseconds since the clock started.
    pub(crate) fn nanos(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Runs `f(0)..f(count - 1)` with at most `concurrency` running at once; returns the results
/// in index order.
pub(crate) async fn bounded<T, F, Fut>(
    count: usize,
    concurrency: usize,
    f: F,
) -> Vec<anyhow::Result<T>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency.clamp(1, count.max(1)) {
        let (f, next) = (f.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return out;
                }
                out.push((i, f(i).await));
            }
        }));
    }
    let mut all: Vec<Option<anyhow::Result<T>>> = (0..count).map(|_| None).collect();
    for w in workers {
        match w.await {
            Ok(done) => {
                for (i, r) in done {
                    all[i] = Some(r);
                }
            }
            Err(e) => {
                let msg = format!("worker failed: {e}");
                for slot in all.iter_mut().filter(|s| s.is_none()) {
                    *slot = Some(Err(anyhow::anyhow!(msg.clone())));
                }
            }
        }
    }
    all.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("not run"))))
        .collect()
}
