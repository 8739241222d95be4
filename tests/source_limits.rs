//! Per-source limits over real sockets, with the relay in-process and two workers:
//!
//! - one source gets one budget of unauthenticated answers, however its datagrams are spread
//!   over the workers (the kernel hashes each source port to one `SO_REUSEPORT` socket);
//! - IPv6 addresses of one /64 are one source for `limits.max_connections_per_source`,
//!   `limits.max_allocations_per_source` and the answer budget, while another /64 is another
//!   source. This part runs in a network namespace of its own (the test binary runs itself
//!   again under `unshare -n`), where it adds addresses of 2001:db8:de::/48 (Germany in the
//!   test world, `geo/README.md`) to that namespace's `lo`. It needs root and network
//!   namespaces; without them it prints why and passes without testing anything.
//!
//! Nothing here compares a duration with a threshold: bytes answered are compared with
//! `burst + rate × elapsed`, where `elapsed` is measured around the whole exchange, and with
//! what one budget or several would give.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{TIMEOUT, TurnClient, issue_credential, wall_now};
use eeaturn::config::Config;
use eeaturn::shell::Running;
use eeaturn::stun::attr;
use eeaturn::stun::{Class, Message, MessageBuilder, MessageType, Method, TransactionId};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::time::{Instant, timeout};

/// Relay ports of the loopback test (apart from the other test files' ranges).
const PORTS: std::ops::RangeInclusive<u16> = 29_000..=29_199;
/// The largest unauthenticated answer the relay sends here (a 401 is about 100 bytes).
const ANSWER_MAX: usize = 200;
/// How long a socket waits for more answers after its last request.
const QUIET: Duration = Duration::from_secs(1);

// --- one budget across workers ------------------------------------------------------------

/// The budget of the cross-worker test: one burst, and a refill too slow to hide a second.
const BURST: usize = 4096;
const RATE: usize = 64;

#[tokio::test]
async fn one_source_gets_one_answer_budget_across_workers() {
    const SOCKETS: usize = 64;
    const REQUESTS: usize = 40;
    let limits =
        format!("[limits]\nunauthenticated_rate = {RATE}\nunauthenticated_burst = {BURST}\n");
    let relay = start_relay(&["udp://127.0.0.1:0"], PORTS, "workers = 2\n", &limits).await;
    let server = relay.addrs[0];

    // 64 source ports of one address: the kernel spreads them over both workers (all on one
    // worker has odds of 2^-63). With a budget per worker this source would get two bursts.
    let started = Instant::now();
    let (bytes, answers) = flood("127.0.1.77", server, SOCKETS, REQUESTS).await;
    let elapsed = started.elapsed().as_secs_f64();

    let sent = SOCKETS * REQUESTS;
    let bound = BURST as f64 + RATE as f64 * elapsed + ANSWER_MAX as f64;
    eprintln!("{bytes} bytes in {answers} answers to {sent} requests over {elapsed:.1} s");
    assert!(
        bytes as f64 <= bound,
        "{bytes} bytes in {answers} answers to {sent} requests over {elapsed:.1} s: above one \
         budget ({bound:.0})"
    );
    assert!(
        bytes + ANSWER_MAX > BURST,
        "the burst was used ({bytes} bytes): the flood reached the limit"
    );
    assert!(
        (bound as usize) < 2 * BURST,
        "the run took so long ({elapsed:.1} s) that two budgets would pass too"
    );
    relay.running.stop().await.expect("the relay stops");
}

// --- one source per IPv6 /64, in a namespace -------------------------------------------------

/// Marks the test binary run inside the namespace.
const INSIDE: &str = "EEATURN_TEST_IN_NETNS";
/// Three addresses of one /64 and one of another, all in 2001:db8:de::/48 (DE).
const SAME_64: [&str; 3] = [
    "2001:db8:de:1::1",
    "2001:db8:de:1::2",
    "2001:db8:de:1:ffff::3",
];
const OTHER_64: &str = "2001:db8:de:2::1";
/// The namespace test's budget.
const V6_BURST: usize = 2048;
const V6_RATE: usize = 16;

#[test]
fn ipv6_addresses_of_one_slash_64_are_one_source() {
    if std::env::var_os(INSIDE).is_some() {
        in_namespace();
        return;
    }
    if let Err(reason) = namespaces_usable() {
        eprintln!("SKIP tests/source_limits.rs (IPv6 /64 sources): {reason}");
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new("unshare")
        .args(["-n", "--"])
        .arg(exe)
        .args([
            "--exact",
            "ipv6_addresses_of_one_slash_64_are_one_source",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INSIDE, "1")
        .output()
        .expect("running the test binary under unshare");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "in the namespace:\n{text}");
    eprintln!("in the namespace:\n{text}");
    assert!(
        text.contains("1 passed"),
        "the test ran in the namespace:\n{text}"
    );
}

/// Returns why network namespaces cannot be used here, if they cannot.
fn namespaces_usable() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned));
    if euid.as_deref() != Some("0") {
        return Err("needs root (a network namespace, addresses on its lo)".to_owned());
    }
    match Command::new("unshare")
        .args(["-n", "--", "ip", "link", "set", "lo", "up"])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "cannot make a network namespace with unshare(1) and ip(8): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run unshare(1): {e}")),
    }
}

/// The part that runs in the new namespace: sets up `lo`, then runs the scenario.
fn in_namespace() {
    ip(&["link", "set", "lo", "up"]);
    for a in SAME_64.iter().chain([&OTHER_64]) {
        ip(&[
            "-6",
            "addr",
            "add",
            &format!("{a}/128"),
            "dev",
            "lo",
            "nodad",
        ]);
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(one_slash_64_is_one_source());
}

async fn one_slash_64_is_one_source() {
    let limits = format!(
        "[limits]\nmax_allocations_per_source = 2\nmax_connections_per_source = 2\n\
         connection_setup_timeout = \"60s\"\n\
         unauthenticated_rate = {V6_RATE}\nunauthenticated_burst = {V6_BURST}\n"
    );
    let relay = start_relay(
        &["udp://127.0.0.1:0", "udp://[::1]:0", "tcp://[::1]:0"],
        PORTS,
        "workers = 2\n",
        &limits,
    )
    .await;
    let (udp, tcp) = (relay.addrs[1], relay.addrs[2]);
    assert!(udp.is_ipv6() && tcp.is_ipv6(), "{:?}", relay.addrs);

    // Connections: two from one /64, the third address of it is refused; the other /64 is
    // admitted. Each admitted connection proves it with a Binding answer.
    let mut kept = Vec::new();
    for a in &SAME_64[..2] {
        let mut c = tcp_connect(a, tcp).await;
        assert!(
            tcp_binding(&mut c).await,
            "{a}: the /64's connections 1 and 2 are served"
        );
        kept.push(c);
    }
    let mut third = tcp_connect(SAME_64[2], tcp).await;
    assert!(
        !tcp_binding(&mut third).await,
        "{}: a third connection from the same /64 is closed",
        SAME_64[2]
    );
    let mut other = tcp_connect(OTHER_64, tcp).await;
    assert!(
        tcp_binding(&mut other).await,
        "another /64 is another source"
    );
    drop((kept, other));

    // Allocations: two from one /64 (two users), the third gets 486 whatever its user; the
    // other /64 allocates.
    let mut clients = Vec::new();
    for (i, a) in SAME_64.iter().enumerate() {
        clients.push(udp_client(a, udp, &format!("user{i}")).await);
    }
    for c in &mut clients[..2] {
        c.allocate().await.expect("the /64's allocations 1 and 2");
    }
    let refused = clients[2].allocate().await.err().map(|e| e.code);
    assert_eq!(refused, Some(486), "a third allocation from the same /64");
    let mut b = udp_client(OTHER_64, udp, "other").await;
    b.allocate().await.expect("another /64 is another source");

    // The answer budget: unauthenticated requests from the three addresses of one /64 get one
    // budget between them, and the other /64 a budget of its own. The challenges above took
    // a few hundred bytes of each budget already.
    let started = Instant::now();
    let mut same = 0;
    for a in SAME_64 {
        same += flood(a, udp, 4, 20).await.0;
    }
    let (theirs, _) = flood(OTHER_64, udp, 4, 20).await;
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("one /64: {same} bytes from three addresses; another: {theirs}; {elapsed:.1} s");
    let bound = V6_BURST as f64 + V6_RATE as f64 * elapsed + ANSWER_MAX as f64;
    assert!(
        same as f64 <= bound,
        "{same} bytes to three addresses of one /64 in {elapsed:.1} s: above one budget \
         ({bound:.0})"
    );
    assert!(
        theirs + 4 * ANSWER_MAX > V6_BURST,
        "another /64 gets its own burst: {theirs} bytes"
    );
    assert!(
        (bound as usize) < 2 * V6_BURST,
        "the run took so long ({elapsed:.1} s) that a budget per address could pass too"
    );
    relay.running.stop().await.expect("the relay stops");
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip(8)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

// --- helpers ---------------------------------------------------------------------------------

/// A relay in this process; `addrs` are its listeners in the order of `listen`.
struct Relay {
    addrs: Vec<SocketAddr>,
    running: Running,
    _dir: tempfile::TempDir,
}

/// Starts a relay listening on `listen`, with `server_keys` added to `[server]` and `extra`
/// (tables) appended to the test configuration.
async fn start_relay(
    listen: &[&str],
    ports: std::ops::RangeInclusive<u16>,
    server_keys: &str,
    extra: &str,
) -> Relay {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("secret"), format!("{}\n", common::SECRET))
        .expect("writing the secret");
    let listen: Vec<String> = listen.iter().map(|l| format!("\"{l}\"")).collect();
    let toml = common::config_toml_listening(&listen.join(", "), ports, extra).replacen(
        "[server]\n",
        &format!("[server]\n{server_keys}"),
        1,
    );
    let config = Config::parse(&toml, dir.path()).expect("the test config is valid");
    let running = match eeaturn::shell::start(config).await {
        Ok(r) => r,
        Err(e) => panic!("the relay starts: {e:#}"),
    };
    Relay {
        addrs: running.local_addrs.clone(),
        running,
        _dir: dir,
    }
}

/// Sends `requests` unauthenticated Allocates from each of `sockets` sockets bound to `ip`,
/// all at once; returns the bytes and answers that came back until each socket had been quiet
/// for [`QUIET`].
async fn flood(ip: &str, server: SocketAddr, sockets: usize, requests: usize) -> (usize, usize) {
    let mut tasks = Vec::with_capacity(sockets);
    for s in 0..sockets {
        let sock = UdpSocket::bind((ip.parse::<IpAddr>().expect("an IP"), 0))
            .await
            .expect("binding a flood socket");
        sock.connect(server).await.expect("connecting");
        let sock = Arc::new(sock);
        tasks.push(tokio::spawn(async move {
            for r in 0..requests {
                let typ = MessageType::new(Method::ALLOCATE, Class::Request);
                let mut b = MessageBuilder::new(typ, tid(s, r));
                b.add_raw(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_UDP, 0, 0, 0]);
                sock.send(&b.finish()).await.expect("sending");
            }
            let (mut bytes, mut answers) = (0, 0);
            let mut buf = vec![0u8; 2048];
            while let Ok(Ok(n)) = timeout(QUIET, sock.recv(&mut buf)).await {
                assert!(n <= ANSWER_MAX, "an answer of {n} bytes");
                bytes += n;
                answers += 1;
            }
            (bytes, answers)
        }));
    }
    let mut total = (0, 0);
    for t in tasks {
        let (b, a) = t.await.expect("a flood task");
        total = (total.0 + b, total.1 + a);
    }
    total
}

fn tid(socket: usize, request: usize) -> TransactionId {
    let mut t = [0x5Au8; 12];
    t[..4].copy_from_slice(&u32::try_from(socket).expect("few sockets").to_be_bytes());
    t[4..].copy_from_slice(&(request as u64).to_be_bytes());
    TransactionId(t)
}

async fn udp_client(ip: &str, server: SocketAddr, user: &str) -> TurnClient {
    TurnClient::bind(
        ip,
        server,
        issue_credential(user, Duration::from_secs(600), wall_now()),
    )
    .await
}

/// Connects from `ip` (any port) to `server`.
async fn tcp_connect(ip: &str, server: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v6().expect("a TCP socket");
    sock.bind(SocketAddr::new(ip.parse().expect("an IP"), 0))
        .expect("binding the client");
    timeout(TIMEOUT, sock.connect(server))
        .await
        .expect("connected in time")
        .expect("connecting")
}

/// Sends a Binding request; returns true when it is answered, false when the relay closes the
/// connection instead.
async fn tcp_binding(c: &mut TcpStream) -> bool {
    let tid = TransactionId([0x42; 12]);
    let req = MessageBuilder::new(MessageType::new(Method::BINDING, Class::Request), tid).finish();
    if c.write_all(&req).await.is_err() {
        return false;
    }
    let mut head = [0u8; 20];
    match timeout(TIMEOUT, c.read_exact(&mut head)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return false,
        Err(_) => panic!("neither an answer nor a close within {TIMEOUT:?}"),
    }
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let mut msg = head.to_vec();
    msg.resize(20 + len, 0);
    timeout(TIMEOUT, c.read_exact(&mut msg[20..]))
        .await
        .expect("the whole answer in time")
        .expect("reading the answer");
    let m = Message::parse(&msg).expect("a STUN answer");
    assert_eq!((m.transaction_id(), m.class()), (tid, Class::Success));
    true
}
