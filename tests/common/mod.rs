//! Shared helpers of the integration tests: a relay running in-process on loopback, a tiny
//! TURN client built on the crate's own STUN codec, and UDP peers.
//!
//! Only loopback addresses are used: clients on 127.0.1.0/24 (and ::1), peers on 127.0.2.0/24
//! (and ::1), the denied peer range 127.0.5.0/24. Every receive has a timeout, so a missing
//! datagram fails the test instead of hanging it.
#![allow(dead_code, reason = "each test crate uses a part of these helpers")]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use eeaturn::client::{self, LongTermAuth};
pub(crate) use eeaturn::client::{PasswordAlgorithm, Relayed};
use eeaturn::config::Config;
use eeaturn::credentials::{Credential, Secrets};
use eeaturn::relay::Stats;
use eeaturn::shell::Running;
use eeaturn::stun::attr::{self, Family};
use eeaturn::stun::{Class, Message, MessageBuilder, MessageType, Method, TransactionId};
use tempfile::TempDir;
use tokio::net::UdpSocket;
use tokio::time::timeout;

/// How long any single receive may wait before the test fails.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);
/// The realm of the test configuration.
pub(crate) const REALM: &str = "eeaturn.test";
/// The REST secret of the test configuration.
pub(crate) const SECRET: &str = "integration-test-secret-0123456789";
/// First relay port of the test configuration (below Linux's ephemeral range).
pub(crate) const RELAY_PORT_MIN: u16 = 21_000;
/// Last relay port of the test configuration.
pub(crate) const RELAY_PORT_MAX: u16 = 24_999;
/// The longest credential lifetime the test configuration accepts (the default, 24h).
pub(crate) const MAX_CREDENTIAL_TTL: Duration = Duration::from_secs(86_400);

/// Returns the test configuration: listeners on 127.0.0.1 and ::1 (port 0), relay addresses
/// 127.0.0.1 and ::1, loopback peers allowed, 127.0.5.0/24 denied as peer, and
/// `relay.offload = "off"`: the tests run as root, where the default `"auto"` would attach the
/// first relay's XDP program to the machine's `lo` (only one fits, the others would fall back)
/// and make which test relays in the kernel a matter of timing. `tests/offload.rs` turns it
/// on in a network namespace of its own. `extra` is appended
/// and may add the tables the base leaves out (`[limits]`, `[clients]`, `[log]`).
pub(crate) fn config_toml(extra: &str) -> String {
    config_toml_listening(
        r#""udp://127.0.0.1:0", "udp://[::1]:0""#,
        RELAY_PORT_MIN..=RELAY_PORT_MAX,
        extra,
    )
}

/// Returns [`config_toml`] with `listen` (the items of `server.listen`, quoted) as listeners
/// and relay ports `ports` (each test file has a range of its own, so that its relays and
/// peers stay out of the way of the other test binaries running at the same time).
pub(crate) fn config_toml_listening(
    listen: &str,
    ports: std::ops::RangeInclusive<u16>,
    extra: &str,
) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let (first, last) = (ports.start(), ports.end());
    format!(
        r#"[server]
realm = "{REALM}"
listen = [{listen}]

[auth]
secret_file = "secret"

[relay]
offload = "off"
addresses = ["127.0.0.1", "::1"]
port_range = "{first}-{last}"

[geo]
country_db = "{root}/geo/testdata/world-country.mmdb"
asn_db = "{root}/geo/testdata/world-asn.mmdb"
max_age = "36500d"

[policy]
deny_asns = [9009]

[peers]
dangerous_allow = ["127.0.0.0/8", "::1/128"]
deny = ["127.0.5.0/24"]

{extra}
"#
    )
}

/// Returns a `[tls]` table with the committed development certificate and key.
pub(crate) fn dev_tls_table() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    format!(
        "[tls]\ncertificate = \"{root}/config/dev-cert.pem\"\nprivate_key = \"{root}/config/dev-key.pem\"\n"
    )
}

/// Writes the secret file and `eeaturn.toml` (from [`config_toml`]) into a new temporary
/// directory; returns the directory (deleted on drop) and the config path.
pub(crate) fn write_config_dir(extra: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    std::fs::write(dir.path().join("secret"), format!("{SECRET}\n")).expect("writing the secret");
    let path = dir.path().join("eeaturn.toml");
    std::fs::write(&path, config_toml(extra)).expect("writing the config");
    (dir, path)
}

/// The IPv4 and the IPv6 listener of a relay started on the test configuration.
pub(crate) fn listeners(running: &Running) -> (SocketAddr, SocketAddr) {
    let find = |v4: bool| {
        running
            .local_addrs
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == v4)
            .expect("a listener of each family")
    };
    (find(true), find(false))
}

/// A relay running in this process.
pub(crate) struct TestServer {
    /// The IPv4 listener.
    pub(crate) v4: SocketAddr,
    /// The IPv6 listener.
    pub(crate) v6: SocketAddr,
    running: Running,
    _dir: TempDir,
}

/// Starts a relay on the test configuration plus `extra_toml` (see [`config_toml`]).
pub(crate) async fn start_server(extra_toml: &str) -> TestServer {
    start_server_with_workers(0, None, extra_toml).await
}

/// Like [`start_server`], with `server.workers = workers` (0: one per core) and, when given,
/// a relay port range of its own (`"START-END"`), out of the way of the other tests' servers
/// and peers in this process.
pub(crate) async fn start_server_with_workers(
    workers: usize,
    ports: Option<&str>,
    extra_toml: &str,
) -> TestServer {
    start_server_with_server_keys(&format!("workers = {workers}\n"), ports, extra_toml).await
}

/// Like [`start_server_with_workers`], with `server_keys` (lines of `[server]`, e.g.
/// `"drain_timeout = \"30s\"\n"`) added to the `[server]` table.
pub(crate) async fn start_server_with_server_keys(
    server_keys: &str,
    ports: Option<&str>,
    extra_toml: &str,
) -> TestServer {
    let (dir, path) = write_config_dir(extra_toml);
    let mut text = std::fs::read_to_string(&path)
        .expect("reading the config back")
        .replacen("[server]\n", &format!("[server]\n{server_keys}"), 1);
    if let Some(ports) = ports {
        text = text.replacen(
            &format!("port_range = \"{RELAY_PORT_MIN}-{RELAY_PORT_MAX}\""),
            &format!("port_range = \"{ports}\""),
            1,
        );
    }
    let config = Config::parse(&text, dir.path()).expect("the test config is valid");
    let running = eeaturn::shell::start(config)
        .await
        .expect("the relay starts");
    let (v4, v6) = listeners(&running);
    assert_ne!(v4.port(), 0, "local_addrs reports the OS-chosen port");
    TestServer {
        v4,
        v6,
        running,
        _dir: dir,
    }
}

/// Starts a relay on the test configuration with `relay_keys` (lines of `[relay]`, e.g.
/// `"offload = \"required\"\n"`) added to the `[relay]` table; returns the error of a relay
/// that does not start instead of failing the test.
pub(crate) async fn try_start_server_with_relay_keys(
    relay_keys: &str,
) -> anyhow::Result<TestServer> {
    let (dir, path) = write_config_dir("");
    let mut text = std::fs::read_to_string(&path).expect("reading the config back");
    if relay_keys.contains("offload") {
        text = text.replacen("offload = \"off\"\n", "", 1);
    }
    let text = text.replacen("[relay]\n", &format!("[relay]\n{relay_keys}"), 1);
    let config = Config::parse(&text, dir.path()).expect("the test config is valid");
    let running = eeaturn::shell::start(config).await?;
    let (v4, v6) = listeners(&running);
    Ok(TestServer {
        v4,
        v6,
        running,
        _dir: dir,
    })
}

impl TestServer {
    /// Issues a REST credential for `user`, valid for an hour.
    pub(crate) fn credential(&self, user: &str) -> Credential {
        issue_credential(user, Duration::from_secs(3600), wall_now())
    }

    /// Returns a client bound to `local_ip` (port 0) that talks to the listener of the same
    /// family, with a fresh credential for `user`.
    pub(crate) async fn client(&self, local_ip: &str, user: &str) -> TurnClient {
        let ip: std::net::IpAddr = local_ip.parse().expect("a literal IP");
        let server = if ip.is_ipv4() { self.v4 } else { self.v6 };
        TurnClient::bind(local_ip, server, self.credential(user)).await
    }

    /// Returns the metrics listener's address, when the config enables it.
    pub(crate) fn metrics_addr(&self) -> Option<SocketAddr> {
        self.running.metrics_addr
    }

    /// Returns the handle that drains or stops the relay, as SIGTERM and SIGINT do.
    pub(crate) fn controller(&self) -> eeaturn::shell::Controller {
        self.running.controller()
    }

    /// Waits until the relay stops by itself (a drain that ended) and returns its final
    /// counters; fails the test after `limit`.
    pub(crate) async fn wait(self, limit: Duration) -> Stats {
        timeout(limit, self.running.wait())
            .await
            .expect("the relay stops in time")
            .expect("the relay stops without error")
    }

    /// Stops the relay and returns its final counters.
    pub(crate) async fn stop(self) -> Stats {
        timeout(TIMEOUT, self.running.stop())
            .await
            .expect("the relay stops in time")
            .expect("the relay stops without error")
    }
}

/// Issues a credential for `user` signed with [`SECRET`], valid for `ttl` from `now`.
pub(crate) fn issue_credential(user: &str, ttl: Duration, now: SystemTime) -> Credential {
    Secrets::parse(SECRET)
        .expect("the test secret parses")
        .issue(user, ttl, ttl.max(MAX_CREDENTIAL_TTL), now)
        .expect("issuing a test credential")
}

/// Reads the wall clock (credentials carry Unix expiry times).
#[expect(
    clippy::disallowed_methods,
    reason = "tests read the wall clock to issue credentials"
)]
pub(crate) fn wall_now() -> SystemTime {
    SystemTime::now()
}

/// Returns a transaction id unique within this process.
fn next_tid() -> TransactionId {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let mut t = [0u8; 12];
    t[..4].copy_from_slice(&std::process::id().to_be_bytes());
    t[4..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    TransactionId(t)
}

/// An error response: ERROR-CODE and reason phrase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StunError {
    /// The error code, e.g. 401.
    pub(crate) code: u16,
    /// The reason phrase.
    pub(crate) reason: String,
}

/// A STUN response as received.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    /// The datagram.
    pub(crate) bytes: Vec<u8>,
}

impl Response {
    /// Parses the datagram (it was validated when received).
    pub(crate) fn message(&self) -> Message<'_> {
        Message::parse(&self.bytes).expect("validated on receipt")
    }

    /// Returns the class.
    pub(crate) fn class(&self) -> Class {
        self.message().class()
    }

    /// Returns the raw value of the first attribute `ty`.
    pub(crate) fn attr(&self, ty: u16) -> Option<Vec<u8>> {
        self.message().get(ty).map(<[u8]>::to_vec)
    }

    /// Returns the ERROR-CODE of an error response.
    pub(crate) fn error(&self) -> Option<StunError> {
        let m = self.message();
        if m.class() != Class::Error {
            return None;
        }
        let (code, reason) = client::error_code(&m).expect("a well-formed ERROR-CODE");
        Some(StunError {
            code,
            reason: reason.to_owned(),
        })
    }

    /// Returns every XOR-encoded address of type `ty`, in order.
    pub(crate) fn xor_addresses(&self, ty: u16) -> Vec<SocketAddr> {
        client::xor_addresses(&self.message(), ty)
    }

    /// Returns LIFETIME.
    pub(crate) fn lifetime(&self) -> Option<u32> {
        let v = self.attr(attr::LIFETIME)?;
        Some(attr::decode_u32(attr::LIFETIME, &v).expect("a four-byte LIFETIME"))
    }

    /// Returns `Ok(self)` for a success response and the error otherwise.
    pub(crate) fn into_result(self) -> Result<Self, StunError> {
        match self.error() {
            Some(e) => Err(e),
            None => Ok(self),
        }
    }
}

/// A successful Allocate.
#[derive(Debug, Clone)]
pub(crate) struct Allocation {
    /// XOR-RELAYED-ADDRESS values (two for a dual-stack allocation).
    pub(crate) relayed: Vec<SocketAddr>,
    /// XOR-MAPPED-ADDRESS.
    pub(crate) mapped: SocketAddr,
    /// LIFETIME in seconds.
    pub(crate) lifetime: u32,
    /// The whole response.
    pub(crate) response: Response,
}

impl Allocation {
    /// Returns the only relayed address.
    pub(crate) fn relayed(&self) -> SocketAddr {
        assert_eq!(self.relayed.len(), 1, "one relayed address");
        self.relayed[0]
    }
}

/// A minimal TURN client over UDP (RFC 8656), no retransmissions: loopback does not lose
/// datagrams, so a missing response is a failure.
pub(crate) struct TurnClient {
    sock: UdpSocket,
    server: SocketAddr,
    /// The credential and the challenge's realm and nonce (the client side shared with the
    /// bench tool and the core's tests: `eeaturn::client`).
    auth: LongTermAuth,
    /// Datagrams that arrived while a response was awaited.
    pending: VecDeque<Vec<u8>>,
    last_request: Option<(TransactionId, Vec<u8>)>,
}

impl TurnClient {
    /// Binds a UDP socket on `local_ip` port 0 for talking to `server` with `credential`.
    pub(crate) async fn bind(local_ip: &str, server: SocketAddr, credential: Credential) -> Self {
        let sock = UdpSocket::bind((local_ip, 0))
            .await
            .unwrap_or_else(|e| panic!("binding a client socket on {local_ip}: {e}"));
        Self {
            sock,
            server,
            auth: LongTermAuth::new(
                &credential.username,
                &credential.password,
                PasswordAlgorithm::Md5,
            ),
            pending: VecDeque::new(),
            last_request: None,
        }
    }

    /// Replaces the credential (the next request is signed with it).
    pub(crate) fn set_credential(&mut self, credential: Credential) {
        self.auth
            .set_credential(&credential.username, &credential.password);
    }

    /// Signs with SHA-256 keys and MESSAGE-INTEGRITY-SHA256 from now on (RFC 8489 §9.2.2).
    pub(crate) fn use_sha256(&mut self) {
        self.auth.set_algorithm(PasswordAlgorithm::Sha256);
    }

    /// Takes over the realm and nonce `other` was challenged with, instead of asking for
    /// its own.
    pub(crate) fn adopt_challenge_of(&mut self, other: &Self) {
        self.auth.adopt_challenge(&other.auth);
    }

    /// Returns the client's socket address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("a bound socket")
    }

    /// Sends a Binding request (no authentication) and returns XOR-MAPPED-ADDRESS.
    pub(crate) async fn binding(&mut self) -> SocketAddr {
        let r = self.request(Method::BINDING, &|_| {}, false).await;
        assert_eq!(
            r.class(),
            Class::Success,
            "Binding succeeds: {:?}",
            r.error()
        );
        let mapped = r.xor_addresses(attr::XOR_MAPPED_ADDRESS);
        assert_eq!(mapped.len(), 1, "one XOR-MAPPED-ADDRESS");
        mapped[0]
    }

    /// Allocates a UDP relay with the server's default family (IPv4).
    pub(crate) async fn allocate(&mut self) -> Result<Allocation, StunError> {
        self.allocate_with(&|_| {}).await
    }

    /// Allocates a UDP relay of the requested family (REQUESTED-ADDRESS-FAMILY).
    pub(crate) async fn allocate_family(
        &mut self,
        family: Family,
    ) -> Result<Allocation, StunError> {
        self.allocate_with(&|b| b.add_family(attr::REQUESTED_ADDRESS_FAMILY, family))
            .await
    }

    /// Allocates a UDP relay; `extra` adds attributes after REQUESTED-TRANSPORT.
    pub(crate) async fn allocate_with(
        &mut self,
        extra: &(dyn Fn(&mut MessageBuilder) + Sync),
    ) -> Result<Allocation, StunError> {
        let add = |b: &mut MessageBuilder| {
            client::add_requested_transport_udp(b);
            extra(b);
        };
        let response = self.transact(Method::ALLOCATE, &add).await.into_result()?;
        let relayed = response.xor_addresses(attr::XOR_RELAYED_ADDRESS);
        let mapped = response.xor_addresses(attr::XOR_MAPPED_ADDRESS);
        assert!(
            !relayed.is_empty(),
            "Allocate success without XOR-RELAYED-ADDRESS"
        );
        assert_eq!(
            mapped.len(),
            1,
            "Allocate success carries one XOR-MAPPED-ADDRESS"
        );
        let lifetime = response
            .lifetime()
            .expect("Allocate success carries LIFETIME");
        Ok(Allocation {
            relayed,
            mapped: mapped[0],
            lifetime,
            response,
        })
    }

    /// Installs permissions for the IPs of `peers` (one request, one XOR-PEER-ADDRESS each).
    pub(crate) async fn create_permission(
        &mut self,
        peers: &[SocketAddr],
    ) -> Result<(), StunError> {
        let add = |b: &mut MessageBuilder| {
            for p in peers {
                b.add_xor_address(attr::XOR_PEER_ADDRESS, *p);
            }
        };
        self.transact(Method::CREATE_PERMISSION, &add)
            .await
            .into_result()
            .map(drop)
    }

    /// Binds `channel` to `peer`.
    pub(crate) async fn channel_bind(
        &mut self,
        channel: u16,
        peer: SocketAddr,
    ) -> Result<(), StunError> {
        let add = |b: &mut MessageBuilder| client::add_channel_bind(b, channel, peer);
        self.transact(Method::CHANNEL_BIND, &add)
            .await
            .into_result()
            .map(drop)
    }

    /// Refreshes the allocation asking for `lifetime` seconds; returns the granted LIFETIME.
    pub(crate) async fn refresh(&mut self, lifetime: u32) -> Result<u32, StunError> {
        let add = |b: &mut MessageBuilder| b.add_u32(attr::LIFETIME, lifetime);
        let r = self.transact(Method::REFRESH, &add).await.into_result()?;
        Ok(r.lifetime().expect("Refresh success carries LIFETIME"))
    }

    /// Sends the last request's bytes again (a retransmission) and returns the response.
    pub(crate) async fn retransmit_last(&mut self) -> Response {
        let (tid, bytes) = self.last_request.clone().expect("a request was sent");
        self.send_raw(&bytes).await;
        self.recv_response(tid).await
    }

    /// Sends a Send indication carrying `data` to `peer`.
    pub(crate) async fn send_indication(&self, peer: SocketAddr, data: &[u8]) {
        self.send_raw(&client::send_indication(next_tid(), peer, data))
            .await;
    }

    /// Sends `data` as ChannelData on `channel`.
    pub(crate) async fn send_channel_data(&self, channel: u16, data: &[u8]) {
        self.send_raw(&client::channel_data(channel, data)).await;
    }

    /// Sends raw bytes to the server.
    pub(crate) async fn send_raw(&self, bytes: &[u8]) {
        self.sock
            .send_to(bytes, self.server)
            .await
            .expect("sending to the server");
    }

    /// Receives the next Data indication or ChannelData from the server.
    pub(crate) async fn recv_relayed(&mut self) -> Relayed {
        let d = match self.pending.pop_front() {
            Some(d) => d,
            None => self.recv_datagram("relayed data").await,
        };
        Relayed::parse(&d).expect("relayed data is ChannelData or a Data indication")
    }

    /// Runs an authenticated request: answers the 401 challenge first (once per client) and a
    /// 438 once. Returns the final response, success or error.
    pub(crate) async fn transact(
        &mut self,
        method: Method,
        attrs: &(dyn Fn(&mut MessageBuilder) + Sync),
    ) -> Response {
        if !self.auth.is_challenged() {
            let r = self.request(method, attrs, false).await;
            if !self.auth.take_challenge(&r.message()) {
                return r;
            }
        }
        let r = self.request(method, attrs, true).await;
        if r.error().is_some_and(|e| e.code == 438) && self.auth.take_challenge(&r.message()) {
            return self.request(method, attrs, true).await;
        }
        r
    }

    /// Sends one request (signed when `auth`) and waits for its response. A signed success
    /// response must verify with the client's key.
    async fn request(
        &mut self,
        method: Method,
        attrs: &(dyn Fn(&mut MessageBuilder) + Sync),
        auth: bool,
    ) -> Response {
        let tid = next_tid();
        let mut b = MessageBuilder::new(MessageType::new(method, Class::Request), tid);
        attrs(&mut b);
        let key = if auth {
            Some(self.auth.sign(&mut b).expect("challenged before signing"))
        } else {
            None
        };
        b.add_fingerprint();
        let bytes = b.finish();
        self.send_raw(&bytes).await;
        self.last_request = Some((tid, bytes));
        let r = self.recv_response(tid).await;
        if let (Some(key), Class::Success) = (key, r.class()) {
            let m = r.message();
            assert!(
                m.verify_integrity(&key),
                "{} success response does not verify with the client's key",
                method.name()
            );
            if self.auth.algorithm() == PasswordAlgorithm::Sha256 {
                assert!(
                    m.has_integrity_sha256(),
                    "a SHA-256 request is answered with MESSAGE-INTEGRITY-SHA256"
                );
            }
        }
        r
    }

    /// Waits for the response to `tid`; other datagrams are kept for [`Self::recv_relayed`].
    async fn recv_response(&mut self, tid: TransactionId) -> Response {
        loop {
            let d = self.recv_datagram("a response").await;
            if let Ok(m) = Message::parse(&d)
                && matches!(m.class(), Class::Success | Class::Error)
                && m.transaction_id() == tid
            {
                return Response { bytes: d };
            }
            self.pending.push_back(d);
        }
    }

    /// Receives one datagram from the server within [`TIMEOUT`].
    async fn recv_datagram(&self, what: &str) -> Vec<u8> {
        let mut buf = vec![0u8; 65_536];
        let (n, from) = timeout(TIMEOUT, self.sock.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {what} from the server within {TIMEOUT:?}"))
            .expect("receiving from the server");
        assert_eq!(
            from, self.server,
            "datagram from the server's listening address"
        );
        buf.truncate(n);
        buf
    }
}

/// A UDP peer on a loopback address.
pub(crate) struct Peer {
    sock: UdpSocket,
}

impl Peer {
    /// Binds on `ip`, port 0. On one of the relay's own addresses (127.0.0.1, ::1) the
    /// policy lets peers be reached on relay ports only, so there the peer takes a free port
    /// from the top of the relay range instead.
    pub(crate) async fn bind(ip: &str) -> Self {
        if ip == "127.0.0.1" || ip == "::1" {
            for port in (RELAY_PORT_MAX - 500..=RELAY_PORT_MAX).rev() {
                if let Ok(sock) = UdpSocket::bind((ip, port)).await {
                    return Self { sock };
                }
            }
            panic!("no free port for a peer on {ip} at the top of the relay range");
        }
        let sock = UdpSocket::bind((ip, 0))
            .await
            .unwrap_or_else(|e| panic!("binding a peer socket on {ip}: {e}"));
        Self { sock }
    }

    /// Returns the peer's address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("a bound socket")
    }

    /// Sends `data` to `to`.
    pub(crate) async fn send_to(&self, data: &[u8], to: SocketAddr) {
        self.sock.send_to(data, to).await.expect("peer send");
    }

    /// Receives one datagram if one comes within `wait`.
    pub(crate) async fn try_recv(&self, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = vec![0u8; 65_536];
        let (n, from) = timeout(wait, self.sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        buf.truncate(n);
        Some((buf, from))
    }

    /// Receives one datagram within [`TIMEOUT`]; returns it and its source.
    pub(crate) async fn recv(&self) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0u8; 65_536];
        let (n, from) = timeout(TIMEOUT, self.sock.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("peer {} received nothing within {TIMEOUT:?}", self.addr()))
            .expect("peer receive");
        buf.truncate(n);
        (buf, from)
    }
}

/// Starts a peer on `ip` that sends every datagram back to its source; returns its address.
/// It runs until the test's runtime ends.
pub(crate) async fn spawn_echo_peer(ip: &str) -> SocketAddr {
    let peer = Peer::bind(ip).await;
    let addr = peer.addr();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = peer.sock.recv_from(&mut buf).await {
            let _ = peer.sock.send_to(&buf[..n], from).await;
        }
    });
    addr
}

/// Returns true once nothing listens on UDP `addr` any more: datagrams sent to it from a
/// connected socket come back as ICMP port unreachable (`ConnectionRefused`). Gives up after
/// [`TIMEOUT`].
pub(crate) async fn udp_port_closed(addr: SocketAddr) -> bool {
    let local = if addr.is_ipv4() { "127.0.2.99" } else { "::1" };
    let probe = UdpSocket::bind((local, 0))
        .await
        .expect("binding the probe");
    probe.connect(addr).await.expect("connecting the probe");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut buf = [0u8; 64];
    while tokio::time::Instant::now() < deadline {
        if let Err(e) = probe.send(b"probe").await
            && e.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        if let Ok(Err(e)) = timeout(Duration::from_millis(100), probe.recv(&mut buf)).await
            && e.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
    }
    false
}

/// Returns true when `addr` is in the test relay port range.
pub(crate) fn in_relay_range(addr: SocketAddr) -> bool {
    (RELAY_PORT_MIN..=RELAY_PORT_MAX).contains(&addr.port())
}
