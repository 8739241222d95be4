//! TURN over TCP and TLS (RFC 8656 §3.7) against the relay running in-process on real loopback
//! sockets: allocation, permissions, Send/Data indications and ChannelData (padded to 4 bytes
//! both ways, §12.5), framing of messages split across writes and of several messages in one
//! write, the allocation ending with its connection, REQUESTED-TRANSPORT TCP (442), the
//! residency check at accept, the connection limits (per source; in total, shedding the oldest
//! connection without an allocation) and the setup deadline, which only an authenticated
//! Allocate ends (slow-loris, Binding chatter, TLS handshake floods), and garbage on the
//! stream.
//!
//! The client here is written for these tests: it frames the stream itself (it does not use
//! the relay's framing code), speaks TLS through `tokio-rustls` trusting the committed
//! development certificate `config/dev-cert.pem` (server name "localhost"), and builds its
//! messages with the crate's STUN codec. Every read has a deadline: a missing message fails the
//! test instead of hanging it.
//!
//! Addresses (the loopback test world of `geo/testdata`): clients on 127.0.1.0/24 (DE) and ::1,
//! the peers on 127.0.2.1 (FR), the refused client 127.0.5.1 (US).

mod common;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{
    Peer, Relayed, Response, StunError, TIMEOUT, issue_credential, spawn_echo_peer,
    udp_port_closed, wall_now,
};
use eeaturn::config::Config;
use eeaturn::relay::Stats;
use eeaturn::shell::Running;
use eeaturn::stun::attr;
use eeaturn::stun::integrity::long_term_key_md5;
use eeaturn::stun::{Class, Message, MessageBuilder, MessageType, Method, TransactionId};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpSocket;
use tokio::time::{Instant, sleep, sleep_until, timeout, timeout_at};
use tokio_rustls::TlsConnector;

/// First relay port of this file's configs (apart from the other test files' ranges).
const RELAY_PORT_MIN: u16 = 27_000;
/// Last relay port of this file's configs.
const RELAY_PORT_MAX: u16 = 27_999;
/// The setup deadline of most tests here (TLS handshake and first complete message).
const SETUP: Duration = Duration::from_secs(1);
/// `[limits]` of most tests here.
const FAST_SETUP: &str = "connection_setup_timeout = \"1s\"";
/// `[limits]` where "closed at once" must be told apart from the setup deadline.
const SLOW_SETUP: &str = "connection_setup_timeout = \"10s\"";
/// How much later than its deadline a connection may be closed on a busy 2-core machine.
const SLACK: Duration = Duration::from_secs(3);
/// A first channel number.
const CHANNEL: u16 = 0x4000;

// --- the relay in-process -------------------------------------------------------------------

/// The stream transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp,
    Tls,
}

impl Kind {
    fn scheme(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }
}

/// Returns a config with a listener on 127.0.0.1 and on ::1 (port 0) for each of `kinds`, the
/// same relay, [geo] and [peers] settings as `common::config_toml` (relay ports of this file),
/// the development certificate when TLS is among `kinds`, and `limits` as `[limits]`.
fn stream_toml(kinds: &[Kind], limits: &str) -> String {
    let listen = kinds
        .iter()
        .flat_map(|k| {
            [
                format!("\"{}://127.0.0.1:0\"", k.scheme()),
                format!("\"{}://[::1]:0\"", k.scheme()),
            ]
        })
        .collect::<Vec<_>>()
        .join(", ");
    let tls = if kinds.contains(&Kind::Tls) {
        common::dev_tls_table()
    } else {
        String::new()
    };
    common::config_toml_listening(
        &listen,
        RELAY_PORT_MIN..=RELAY_PORT_MAX,
        &format!("{tls}\n[limits]\n{limits}"),
    )
}

/// A relay running in this process with stream listeners.
struct StreamServer {
    /// (transport, IPv4 listener, IPv6 listener), in config order.
    listeners: Vec<(Kind, SocketAddr, SocketAddr)>,
    running: Running,
    _dir: TempDir,
}

/// Starts a relay with listeners for `kinds` and `limits` (see [`stream_toml`]).
async fn start(kinds: &[Kind], limits: &str) -> StreamServer {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    std::fs::write(dir.path().join("secret"), format!("{}\n", common::SECRET))
        .expect("writing the secret");
    let toml = stream_toml(kinds, limits);
    let config = Config::parse(&toml, dir.path()).expect("the test config is valid");
    let running = match eeaturn::shell::start(config).await {
        Ok(r) => r,
        Err(e) => panic!("the relay starts: {e:#}"),
    };
    // `local_addrs` follows the order of `server.listen`: v4 then v6 for each kind.
    assert_eq!(running.local_addrs.len(), 2 * kinds.len());
    let listeners = kinds
        .iter()
        .zip(running.local_addrs.chunks(2))
        .map(|(&k, a)| {
            assert!(a[0].is_ipv4() && a[1].is_ipv6(), "listener order: {a:?}");
            assert_ne!(a[0].port(), 0, "local_addrs reports the OS-chosen port");
            (k, a[0], a[1])
        })
        .collect();
    StreamServer {
        listeners,
        running,
        _dir: dir,
    }
}

impl StreamServer {
    /// The IPv4 listener of `kind`.
    fn addr(&self, kind: Kind) -> SocketAddr {
        self.listener(kind).1
    }

    /// The IPv6 listener of `kind`.
    fn addr6(&self, kind: Kind) -> SocketAddr {
        self.listener(kind).2
    }

    fn listener(&self, kind: Kind) -> (Kind, SocketAddr, SocketAddr) {
        *self
            .listeners
            .iter()
            .find(|l| l.0 == kind)
            .expect("a listener of that transport")
    }

    /// Connects a client from `from_ip` to the IPv4 listener of `kind`.
    async fn client(&self, kind: Kind, from_ip: &str) -> StreamClient {
        StreamClient::connect(kind, self.addr(kind), from_ip).await
    }

    /// Stops the relay and returns its counters.
    async fn stop(self) -> Stats {
        timeout(TIMEOUT, self.running.stop())
            .await
            .expect("the relay stops in time")
            .expect("the relay stops without error")
    }
}

fn ended(stats: &Stats, reason: &str) -> u64 {
    stats.allocations_ended.get(reason).copied().unwrap_or(0)
}

// --- connections ------------------------------------------------------------------------------

/// A TCP or TLS connection.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A TLS client trusting only the development certificate.
fn tls_connector() -> TlsConnector {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/dev-cert.pem");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).expect("reading config/dev-cert.pem") {
        roots
            .add(cert.expect("a PEM certificate in config/dev-cert.pem"))
            .expect("the development certificate is a usable trust anchor");
    }
    assert!(!roots.is_empty(), "config/dev-cert.pem holds a certificate");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("the ring provider supports TLS 1.2 and 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Opens a TCP connection from `from_ip` (port 0) to `server`.
async fn tcp_from(from_ip: &str, server: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let ip: IpAddr = from_ip.parse().expect("a literal IP");
    let sock = if ip.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.bind(SocketAddr::new(ip, 0))?;
    let tcp = timeout(TIMEOUT, sock.connect(server))
        .await
        .map_err(|_| std::io::Error::other("TCP connect timed out"))??;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// Opens a connection of `kind` from `from_ip` to `server` (with the TLS handshake); returns
/// it and its local address.
async fn open(
    kind: Kind,
    server: SocketAddr,
    from_ip: &str,
) -> std::io::Result<(Box<dyn Io>, SocketAddr)> {
    let tcp = tcp_from(from_ip, server).await?;
    let local = tcp.local_addr()?;
    match kind {
        Kind::Tcp => Ok((Box::new(tcp), local)),
        Kind::Tls => {
            let name = ServerName::try_from("localhost").expect("a valid server name");
            let tls = timeout(TIMEOUT, tls_connector().connect(name, tcp))
                .await
                .map_err(|_| std::io::Error::other("TLS handshake timed out"))??;
            Ok((Box::new(tls), local))
        }
    }
}

/// Reads until the server closes the connection (end of stream, reset, or a TLS error) and
/// returns whatever arrived before. Fails the test if it is still open at `deadline`.
async fn read_until_closed(io: &mut dyn Io, deadline: Instant, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match timeout_at(deadline, io.read(&mut buf)).await {
            Err(_) => panic!(
                "{what}: the connection is still open at its deadline ({} bytes received)",
                got.len()
            ),
            Ok(Ok(0) | Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

// --- the stream TURN client -------------------------------------------------------------------

/// Returns a transaction id unique within this process.
fn next_tid() -> TransactionId {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let mut t = [0u8; 12];
    t[..4].copy_from_slice(b"strm");
    t[4..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    TransactionId(t)
}

/// Rounds up to a multiple of 4.
fn padded(len: usize) -> usize {
    len.div_ceil(4) * 4
}

/// A ChannelData message, padded to a multiple of 4 bytes as a stream client must.
fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).expect("test payloads fit ChannelData");
    let mut out = Vec::with_capacity(4 + padded(data.len()));
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    out.resize(4 + padded(data.len()), 0);
    out
}

/// A Send indication carrying `data` to `peer`.
fn send_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut b = MessageBuilder::new(
        MessageType::new(Method::SEND, Class::Indication),
        next_tid(),
    );
    b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
    b.add_raw(attr::DATA, data);
    b.add_fingerprint();
    b.finish()
}

/// An unauthenticated Binding request.
fn binding_request() -> (TransactionId, Vec<u8>) {
    let tid = next_tid();
    let mut b = MessageBuilder::new(MessageType::new(Method::BINDING, Class::Request), tid);
    b.add_fingerprint();
    (tid, b.finish())
}

/// `len` bytes of recognisable payload.
fn payload(len: usize, tag: u8) -> Vec<u8> {
    (0..len)
        .map(|i| tag.wrapping_add((i % 251) as u8))
        .collect()
}

/// One message read off the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Frame {
    /// A STUN message (its header length is the whole message).
    Stun(Vec<u8>),
    /// ChannelData; `wire_len` counts the header, the data and the padding that followed.
    Channel {
        channel: u16,
        data: Vec<u8>,
        wire_len: usize,
    },
}

/// A minimal TURN client over TCP or TLS with the long-term credential mechanism (MD5 key).
struct StreamClient {
    io: Box<dyn Io>,
    /// The client's end of the connection.
    local: SocketAddr,
    /// Bytes read off the stream and not consumed yet.
    buf: Vec<u8>,
    username: String,
    password: String,
    realm: Option<String>,
    nonce: Option<String>,
    /// Messages that arrived while a response was awaited.
    pending: VecDeque<Frame>,
    /// Write every message one byte at a time (with a flush and a pause after each).
    dribble: bool,
}

impl StreamClient {
    /// Connects from `from_ip` to `server`; the connection must come up.
    async fn connect(kind: Kind, server: SocketAddr, from_ip: &str) -> Self {
        let (io, local) = open(kind, server, from_ip)
            .await
            .unwrap_or_else(|e| panic!("{kind:?} connection from {from_ip} to {server}: {e}"));
        let credential = issue_credential("alice", Duration::from_secs(3600), wall_now());
        Self {
            io,
            local,
            buf: Vec::new(),
            username: credential.username,
            password: credential.password,
            realm: None,
            nonce: None,
            pending: VecDeque::new(),
            dribble: false,
        }
    }

    /// Writes `bytes` (dribbled when [`Self::dribble`] is set) and flushes.
    async fn write(&mut self, bytes: &[u8]) {
        if self.dribble {
            for b in bytes {
                self.write_chunk(std::slice::from_ref(b)).await;
                sleep(Duration::from_millis(1)).await;
            }
        } else {
            self.write_chunk(bytes).await;
        }
    }

    async fn write_chunk(&mut self, bytes: &[u8]) {
        let io = &mut self.io;
        timeout(TIMEOUT, async move {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await
        .expect("the write completes in time")
        .expect("writing to the server");
    }

    /// Closes the connection cleanly (TLS close_notify, then FIN).
    async fn close(mut self) {
        let _ = timeout(TIMEOUT, self.io.shutdown()).await;
    }

    /// Waits until `self.buf` holds `n` bytes.
    async fn fill(&mut self, n: usize, what: &str) {
        let mut chunk = [0u8; 8192];
        while self.buf.len() < n {
            let read = timeout(TIMEOUT, self.io.read(&mut chunk))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "waiting for {what}: have {} of {n} bytes after {TIMEOUT:?}",
                        self.buf.len()
                    )
                });
            match read {
                Ok(0) => panic!(
                    "waiting for {what}: the server closed the connection ({} of {n} bytes)",
                    self.buf.len()
                ),
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
                Err(e) => panic!("waiting for {what}: read error {e}"),
            }
        }
    }

    /// Takes exactly `n` raw bytes off the stream.
    async fn recv_raw(&mut self, n: usize) -> Vec<u8> {
        self.fill(n, "raw bytes").await;
        self.buf.drain(..n).collect()
    }

    /// Reads the next message: a STUN message (20 + length bytes) or ChannelData (4 + length,
    /// followed by the padding to a multiple of 4, RFC 8656 §12.5).
    async fn recv_frame(&mut self) -> Frame {
        if let Some(f) = self.pending.pop_front() {
            return f;
        }
        self.fill(4, "a message header").await;
        let len = usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
        match self.buf[0] >> 6 {
            0b00 => {
                assert_eq!(len % 4, 0, "a STUN message length is a multiple of 4");
                self.fill(20 + len, "a STUN message").await;
                Frame::Stun(self.buf.drain(..20 + len).collect())
            }
            0b01 => {
                let channel = u16::from_be_bytes([self.buf[0], self.buf[1]]);
                self.fill(4 + len, "ChannelData").await;
                let wire_len = 4 + padded(len);
                self.fill(
                    wire_len,
                    &format!("the padding after a ChannelData of {len} bytes"),
                )
                .await;
                let frame: Vec<u8> = self.buf.drain(..wire_len).collect();
                Frame::Channel {
                    channel,
                    data: frame[4..4 + len].to_vec(),
                    wire_len,
                }
            }
            _ => panic!(
                "the server sent bytes that are neither STUN nor ChannelData: {:02x?}",
                &self.buf[..4]
            ),
        }
    }

    /// Reads the next Data indication or ChannelData.
    async fn recv_relayed(&mut self) -> Relayed {
        match self.recv_frame().await {
            Frame::Channel { channel, data, .. } => Relayed::Channel { channel, data },
            Frame::Stun(bytes) => {
                let m = Message::parse(&bytes).expect("a well-formed STUN message");
                assert_eq!(
                    (m.method(), m.class()),
                    (Method::DATA, Class::Indication),
                    "relayed data is a Data indication"
                );
                let tid = m.transaction_id();
                let peer = attr::decode_xor_address(
                    attr::XOR_PEER_ADDRESS,
                    m.get(attr::XOR_PEER_ADDRESS)
                        .expect("Data indication carries XOR-PEER-ADDRESS"),
                    &tid,
                )
                .expect("a well-formed XOR-PEER-ADDRESS");
                let data = m.get(attr::DATA).expect("Data carries DATA").to_vec();
                Relayed::Data { peer, data }
            }
        }
    }

    /// Waits for the response to `tid`; other messages are kept for later.
    async fn recv_response(&mut self, tid: TransactionId) -> Response {
        let mut kept = VecDeque::new();
        let found = loop {
            let f = match self.pending.pop_front() {
                Some(f) => f,
                None => {
                    // Read a new frame (not from `pending`, which is being searched).
                    let saved = std::mem::take(&mut self.pending);
                    let f = self.recv_frame().await;
                    self.pending = saved;
                    f
                }
            };
            if let Frame::Stun(bytes) = &f {
                let m = Message::parse(bytes).expect("a well-formed STUN message");
                if matches!(m.class(), Class::Success | Class::Error) && m.transaction_id() == tid {
                    break Response {
                        bytes: bytes.clone(),
                    };
                }
            }
            kept.push_back(f);
        };
        kept.extend(self.pending.drain(..));
        self.pending = kept;
        found
    }

    /// Builds a request, signed when `auth` (USERNAME, REALM, NONCE, MESSAGE-INTEGRITY with
    /// the MD5 key); returns its id, its bytes and the key.
    fn build(
        &self,
        method: Method,
        attrs: &(dyn Fn(&mut MessageBuilder) + Sync),
        auth: bool,
    ) -> (TransactionId, Vec<u8>, Option<[u8; 16]>) {
        let tid = next_tid();
        let mut b = MessageBuilder::new(MessageType::new(method, Class::Request), tid);
        attrs(&mut b);
        let key = auth.then(|| {
            let realm = self.realm.as_deref().expect("challenged before signing");
            let key = long_term_key_md5(&self.username, realm, &self.password);
            b.add_raw(attr::USERNAME, self.username.as_bytes());
            b.add_raw(attr::REALM, realm.as_bytes());
            b.add_raw(
                attr::NONCE,
                self.nonce.as_deref().unwrap_or_default().as_bytes(),
            );
            b.add_message_integrity(&key);
            key
        });
        b.add_fingerprint();
        (tid, b.finish(), key)
    }

    /// Sends one request and waits for its response; a signed success must verify.
    async fn request(
        &mut self,
        method: Method,
        attrs: &(dyn Fn(&mut MessageBuilder) + Sync),
        auth: bool,
    ) -> Response {
        let (tid, bytes, key) = self.build(method, attrs, auth);
        self.write(&bytes).await;
        let r = self.recv_response(tid).await;
        check_integrity(&r, key, method);
        r
    }

    /// Runs an authenticated request: the 401 challenge first (once per client), a 438 once.
    async fn transact(
        &mut self,
        method: Method,
        attrs: &(dyn Fn(&mut MessageBuilder) + Sync),
    ) -> Response {
        if self.nonce.is_none() {
            let r = self.request(method, attrs, false).await;
            if !self.take_challenge(&r) {
                return r;
            }
        }
        let r = self.request(method, attrs, true).await;
        if r.error().is_some_and(|e| e.code == 438) && self.take_challenge(&r) {
            return self.request(method, attrs, true).await;
        }
        r
    }

    fn take_challenge(&mut self, r: &Response) -> bool {
        if !r.error().is_some_and(|e| e.code == 401 || e.code == 438) {
            return false;
        }
        let (Some(realm), Some(nonce)) = (r.attr(attr::REALM), r.attr(attr::NONCE)) else {
            return false;
        };
        self.realm = Some(String::from_utf8(realm).expect("a UTF-8 REALM"));
        self.nonce = Some(String::from_utf8(nonce).expect("a UTF-8 NONCE"));
        true
    }

    /// Allocates a UDP relay; returns (relayed, mapped).
    async fn allocate(&mut self) -> Result<(SocketAddr, SocketAddr), StunError> {
        let r = self
            .transact(Method::ALLOCATE, &|b| {
                b.add_raw(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_UDP, 0, 0, 0]);
            })
            .await
            .into_result()?;
        let relayed = r.xor_addresses(attr::XOR_RELAYED_ADDRESS);
        let mapped = r.xor_addresses(attr::XOR_MAPPED_ADDRESS);
        assert_eq!(relayed.len(), 1, "one XOR-RELAYED-ADDRESS");
        assert_eq!(mapped.len(), 1, "one XOR-MAPPED-ADDRESS");
        assert!(r.lifetime().is_some(), "Allocate success carries LIFETIME");
        Ok((relayed[0], mapped[0]))
    }

    async fn create_permission(&mut self, peer: SocketAddr) -> Result<(), StunError> {
        self.transact(Method::CREATE_PERMISSION, &|b| {
            b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
        })
        .await
        .into_result()
        .map(drop)
    }

    async fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> Result<(), StunError> {
        self.transact(Method::CHANNEL_BIND, &|b| {
            let [hi, lo] = channel.to_be_bytes();
            b.add_raw(attr::CHANNEL_NUMBER, &[hi, lo, 0, 0]);
            b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
        })
        .await
        .into_result()
        .map(drop)
    }

    async fn refresh(&mut self, lifetime: u32) -> Result<u32, StunError> {
        let r = self
            .transact(Method::REFRESH, &|b| b.add_u32(attr::LIFETIME, lifetime))
            .await
            .into_result()?;
        Ok(r.lifetime().expect("Refresh success carries LIFETIME"))
    }

    /// A Binding request; returns XOR-MAPPED-ADDRESS.
    async fn binding(&mut self) -> SocketAddr {
        let r = self.request(Method::BINDING, &|_| {}, false).await;
        assert_eq!(r.class(), Class::Success, "Binding: {:?}", r.error());
        r.xor_addresses(attr::XOR_MAPPED_ADDRESS)[0]
    }

    /// Reads until the server closes the connection; returns what arrived before.
    async fn closed_by_server(&mut self, within: Duration, what: &str) -> Vec<u8> {
        let mut got = std::mem::take(&mut self.buf);
        got.extend(read_until_closed(&mut *self.io, Instant::now() + within, what).await);
        got
    }
}

fn check_integrity(r: &Response, key: Option<[u8; 16]>, method: Method) {
    if let (Some(key), Class::Success) = (key, r.class()) {
        assert!(
            r.message().verify_integrity(&key),
            "{} success response does not verify with the client's key",
            method.name()
        );
    }
}

/// Allocates, installs a permission for `peer` and checks a Send → Data round trip; returns
/// the relayed address.
async fn allocate_and_roundtrip(c: &mut StreamClient, peer: &Peer, tag: &str) -> SocketAddr {
    let (relayed, mapped) = c
        .allocate()
        .await
        .unwrap_or_else(|e| panic!("{tag}: Allocate: {e:?}"));
    assert_eq!(
        mapped, c.local,
        "{tag}: XOR-MAPPED-ADDRESS is the client's TCP address"
    );
    assert_eq!(
        relayed.ip(),
        IpAddr::from([127, 0, 0, 1]),
        "{tag}: relayed IPv4"
    );
    assert!(
        (RELAY_PORT_MIN..=RELAY_PORT_MAX).contains(&relayed.port()),
        "{tag}: relayed port {relayed} in range"
    );
    c.create_permission(peer.addr())
        .await
        .unwrap_or_else(|e| panic!("{tag}: CreatePermission: {e:?}"));
    send_roundtrip(c, peer, relayed, tag).await;
    relayed
}

/// Send indication out, Data indication back.
async fn send_roundtrip(c: &mut StreamClient, peer: &Peer, relayed: SocketAddr, tag: &str) {
    let out = format!("{tag}: to the peer").into_bytes();
    c.write(&send_indication(peer.addr(), &out)).await;
    assert_eq!(peer.recv().await, (out, relayed), "{tag}: Send indication");
    let back = format!("{tag}: back, odd").into_bytes();
    peer.send_to(&back, relayed).await;
    assert_eq!(
        c.recv_relayed().await,
        Relayed::Data {
            peer: peer.addr(),
            data: back
        },
        "{tag}: Data indication"
    );
}

// --- allocate, permission, Send and Data ------------------------------------------------------

async fn allocate_send_and_data(kind: Kind) {
    let server = start(&[kind], FAST_SETUP).await;
    let peer = Peer::bind("127.0.2.1").await;
    let mut c = server.client(kind, "127.0.1.1").await;
    let relayed = allocate_and_roundtrip(&mut c, &peer, kind.scheme()).await;
    // Several sizes both ways: Data indications stay 4-aligned on the stream.
    for len in [1, 2, 3, 4, 5, 99, 1200] {
        let data = payload(len, 7);
        c.write(&send_indication(peer.addr(), &data)).await;
        assert_eq!(
            peer.recv().await,
            (data.clone(), relayed),
            "Send of {len} bytes"
        );
        peer.send_to(&data, relayed).await;
        assert_eq!(
            c.recv_relayed().await,
            Relayed::Data {
                peer: peer.addr(),
                data
            },
            "Data indication of {len} bytes"
        );
    }
    assert_eq!(c.refresh(600).await, Ok(600), "Refresh over {kind:?}");
    let stats = server.stop().await;
    assert_eq!(stats.allocations_created, 1);
    assert_eq!(stats.packets_to_peer, 8);
    assert_eq!(stats.packets_to_client, 8);
}

#[tokio::test]
async fn tcp_allocate_permission_send_and_data_indication() {
    allocate_send_and_data(Kind::Tcp).await;
}

#[tokio::test]
async fn tls_allocate_permission_send_and_data_indication() {
    allocate_send_and_data(Kind::Tls).await;
}

async fn over_ipv6(kind: Kind) {
    let server = start(&[kind], FAST_SETUP).await;
    let peer = Peer::bind("127.0.2.1").await;
    let mut c = StreamClient::connect(kind, server.addr6(kind), "::1").await;
    let relayed = allocate_and_roundtrip(&mut c, &peer, &format!("{kind:?} over ::1")).await;
    assert!(relayed.is_ipv4(), "the default relayed family is IPv4");
    server.stop().await;
}

#[tokio::test]
async fn tcp_over_ipv6_allocates_and_relays() {
    over_ipv6(Kind::Tcp).await;
}

#[tokio::test]
async fn tls_over_ipv6_allocates_and_relays() {
    over_ipv6(Kind::Tls).await;
}

// --- ChannelData and its padding ----------------------------------------------------------------

async fn channel_data_both_ways(kind: Kind) {
    let server = start(&[kind], FAST_SETUP).await;
    let peer = Peer::bind("127.0.2.1").await;
    let mut c = server.client(kind, "127.0.1.1").await;
    let relayed = allocate_and_roundtrip(&mut c, &peer, kind.scheme()).await;
    c.channel_bind(CHANNEL, peer.addr())
        .await
        .expect("ChannelBind");

    // Client → peer: padded ChannelData is accepted, and the padding is not relayed. 10_001
    // bytes is more than the server's initial read buffer.
    for len in [1, 2, 3, 4, 5, 6, 7, 8, 100, 10_001] {
        let data = payload(len, 1);
        c.write(&channel_data(CHANNEL, &data)).await;
        assert_eq!(
            peer.recv().await,
            (data, relayed),
            "padded ChannelData of {len} bytes reaches the peer without its padding"
        );
    }

    // Peer → client: on the wire, ChannelData of 5 bytes takes 4 + 5 + 3 bytes.
    peer.send_to(b"five!", relayed).await;
    let raw = c.recv_raw(12).await;
    assert_eq!(&raw[..4], &[0x40, 0x00, 0x00, 0x05], "ChannelData header");
    assert_eq!(&raw[4..9], b"five!");
    // The next message starts right after the 3 padding bytes.
    peer.send_to(b"next", relayed).await;
    assert_eq!(
        c.recv_frame().await,
        Frame::Channel {
            channel: CHANNEL,
            data: b"next".to_vec(),
            wire_len: 8
        },
        "the message after a padded ChannelData is aligned"
    );
    for len in [1, 2, 3, 4, 5, 6, 7, 8, 100, 10_001] {
        let data = payload(len, 9);
        peer.send_to(&data, relayed).await;
        assert_eq!(
            c.recv_frame().await,
            Frame::Channel {
                channel: CHANNEL,
                data,
                wire_len: 4 + padded(len)
            },
            "ChannelData of {len} bytes from the server, padded to {}",
            4 + padded(len)
        );
    }
    let stats = server.stop().await;
    assert_eq!(stats.packets_to_peer, 11);
    assert_eq!(stats.packets_to_client, 13);
}

#[tokio::test]
async fn tcp_channel_data_both_ways_with_padding() {
    channel_data_both_ways(Kind::Tcp).await;
}

#[tokio::test]
async fn tls_channel_data_both_ways_with_padding() {
    channel_data_both_ways(Kind::Tls).await;
}

// --- framing: split and coalesced messages ------------------------------------------------------

async fn split_and_coalesced(kind: Kind) {
    let server = start(&[kind], FAST_SETUP).await;
    let peer = Peer::bind("127.0.2.1").await;
    let echo = spawn_echo_peer("127.0.2.1").await;
    let mut c = server.client(kind, "127.0.1.1").await;

    // The 401 round and the signed Allocate, each written one byte at a time.
    c.dribble = true;
    let (relayed, _) = c.allocate().await.expect("Allocate written byte by byte");
    c.dribble = false;

    // Five messages in one write: CreatePermission, ChannelBind, a Send indication, ChannelData
    // on the channel just bound (odd length, padded), a Binding request.
    let (cp_tid, cp, cp_key) = c.build(
        Method::CREATE_PERMISSION,
        &|b| {
            b.add_xor_address(attr::XOR_PEER_ADDRESS, peer.addr());
            b.add_xor_address(attr::XOR_PEER_ADDRESS, echo);
        },
        true,
    );
    let (cb_tid, cb, cb_key) = c.build(
        Method::CHANNEL_BIND,
        &|b| {
            let [hi, lo] = CHANNEL.to_be_bytes();
            b.add_raw(attr::CHANNEL_NUMBER, &[hi, lo, 0, 0]);
            b.add_xor_address(attr::XOR_PEER_ADDRESS, peer.addr());
        },
        true,
    );
    let (bind_tid, bind) = binding_request();
    let mut batch = Vec::new();
    batch.extend_from_slice(&cp);
    batch.extend_from_slice(&cb);
    batch.extend_from_slice(&send_indication(peer.addr(), b"batched send"));
    batch.extend_from_slice(&channel_data(CHANNEL, b"batched channel data"));
    batch.extend_from_slice(&bind);
    c.write(&batch).await;
    let r = c.recv_response(cp_tid).await;
    check_integrity(&r, cp_key, Method::CREATE_PERMISSION);
    assert_eq!(
        r.class(),
        Class::Success,
        "batched CreatePermission: {:?}",
        r.error()
    );
    let r = c.recv_response(cb_tid).await;
    check_integrity(&r, cb_key, Method::CHANNEL_BIND);
    assert_eq!(
        r.class(),
        Class::Success,
        "batched ChannelBind: {:?}",
        r.error()
    );
    let r = c.recv_response(bind_tid).await;
    assert_eq!(r.class(), Class::Success, "batched Binding");
    assert_eq!(r.xor_addresses(attr::XOR_MAPPED_ADDRESS), vec![c.local]);
    assert_eq!(peer.recv().await, (b"batched send".to_vec(), relayed));
    assert_eq!(
        peer.recv().await,
        (b"batched channel data".to_vec(), relayed)
    );

    // One ChannelData and one Send indication written one byte at a time.
    c.dribble = true;
    c.write(&channel_data(CHANNEL, b"dribbled channel data"))
        .await;
    c.write(&send_indication(peer.addr(), b"dribbled send"))
        .await;
    c.dribble = false;
    assert_eq!(
        peer.recv().await,
        (b"dribbled channel data".to_vec(), relayed)
    );
    assert_eq!(peer.recv().await, (b"dribbled send".to_vec(), relayed));

    // A message split across three writes, with the boundaries inside the header and the data.
    let cd = channel_data(CHANNEL, b"three pieces");
    for piece in [&cd[..1], &cd[1..6], &cd[6..]] {
        c.write(piece).await;
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(peer.recv().await, (b"three pieces".to_vec(), relayed));

    // Many ChannelData in one write, and the echoes coming back (the server coalesces what it
    // has queued into few writes, so the client reads several messages at once).
    let mut many = Vec::new();
    let sent: Vec<Vec<u8>> = (0..40).map(|i| payload(1 + i % 9, i as u8)).collect();
    c.channel_bind(CHANNEL + 1, echo)
        .await
        .expect("ChannelBind to the echo peer");
    for d in &sent {
        many.extend_from_slice(&channel_data(CHANNEL + 1, d));
    }
    c.write(&many).await;
    for (i, d) in sent.iter().enumerate() {
        assert_eq!(
            c.recv_relayed().await,
            Relayed::Channel {
                channel: CHANNEL + 1,
                data: d.clone()
            },
            "echo {i} of 40"
        );
    }
    let stats = server.stop().await;
    assert_eq!(stats.allocations_created, 1);
    assert_eq!(stats.packets_to_peer, 45);
    assert!(
        stats.dropped.is_empty(),
        "nothing dropped: {:?}",
        stats.dropped
    );
}

#[tokio::test]
async fn tcp_messages_split_across_writes_and_several_in_one_write() {
    split_and_coalesced(Kind::Tcp).await;
}

#[tokio::test]
async fn tls_messages_split_across_writes_and_several_in_one_write() {
    split_and_coalesced(Kind::Tls).await;
}

// --- the allocation lives no longer than its connection ----------------------------------------

async fn closing_frees_the_allocation(kind: Kind) {
    let server = start(&[kind], FAST_SETUP).await;
    let peer = Peer::bind("127.0.2.1").await;
    let mut relayed = Vec::new();
    for (ip, clean) in [("127.0.1.1", true), ("127.0.1.2", false)] {
        let mut c = server.client(kind, ip).await;
        let r = allocate_and_roundtrip(&mut c, &peer, ip).await;
        c.channel_bind(CHANNEL, peer.addr())
            .await
            .expect("ChannelBind");
        if clean {
            c.close().await;
        } else {
            drop(c); // No TLS close_notify, no shutdown: the socket just goes away.
        }
        relayed.push(r);
    }
    for r in &relayed {
        assert!(
            udp_port_closed(*r).await,
            "the relayed port {r} is released once its connection closed"
        );
    }
    // The listener still serves new clients.
    let mut other = server.client(kind, "127.0.1.3").await;
    allocate_and_roundtrip(&mut other, &peer, "after the close").await;

    let stats = server.stop().await;
    assert_eq!(stats.allocations_created, 3);
    assert_eq!(
        ended(&stats, "connection-closed"),
        2,
        "{:?}",
        stats.allocations_ended
    );
    assert_eq!(
        ended(&stats, "shutdown"),
        1,
        "{:?}",
        stats.allocations_ended
    );
}

#[tokio::test]
async fn tcp_closing_the_connection_frees_the_allocation() {
    closing_frees_the_allocation(Kind::Tcp).await;
}

#[tokio::test]
async fn tls_closing_the_connection_frees_the_allocation() {
    closing_frees_the_allocation(Kind::Tls).await;
}

#[tokio::test]
async fn tcp_idle_connection_is_closed_with_its_allocation() {
    let server = start(&[Kind::Tcp], "connection_idle_timeout = \"1s\"").await;
    let peer = Peer::bind("127.0.2.1").await;
    let mut c = server.client(Kind::Tcp, "127.0.1.1").await;
    let relayed = allocate_and_roundtrip(&mut c, &peer, "idle").await;
    let t0 = Instant::now();
    let got = c
        .closed_by_server(Duration::from_secs(1) + SLACK, "idle connection")
        .await;
    assert!(got.is_empty(), "nothing sent before the close: {got:02x?}");
    assert!(
        t0.elapsed() >= Duration::from_millis(800),
        "closed after the idle limit"
    );
    assert!(
        udp_port_closed(relayed).await,
        "the relayed port is released"
    );
    let stats = server.stop().await;
    assert_eq!(
        ended(&stats, "connection-closed"),
        1,
        "{:?}",
        stats.allocations_ended
    );
}

// --- REQUESTED-TRANSPORT TCP --------------------------------------------------------------------

async fn requested_transport_tcp(kind: Kind) {
    let server = start(&[kind], FAST_SETUP).await;
    let mut c = server.client(kind, "127.0.1.1").await;
    let r = c
        .transact(Method::ALLOCATE, &|b| {
            b.add_raw(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
        })
        .await;
    assert_eq!(
        r.error().map(|e| e.code),
        Some(442),
        "REQUESTED-TRANSPORT TCP (RFC 6062) is answered with 442"
    );
    // The connection stays usable: a UDP allocation on it succeeds.
    c.allocate().await.expect("a UDP Allocate after the 442");
    let stats = server.stop().await;
    assert_eq!(stats.requests_failed.get(&("allocate", 442)), Some(&1));
    assert_eq!(stats.allocations_created, 1);
}

#[tokio::test]
async fn tcp_requested_transport_tcp_gets_442() {
    requested_transport_tcp(Kind::Tcp).await;
}

#[tokio::test]
async fn tls_requested_transport_tcp_gets_442() {
    requested_transport_tcp(Kind::Tls).await;
}

// --- residency at accept ------------------------------------------------------------------------

async fn refused_client_closed_at_accept(kind: Kind) {
    let server = start(&[kind], SLOW_SETUP).await;
    let t0 = Instant::now();
    // The handshake may complete (the check runs once the connection is up) or not.
    match open(kind, server.addr(kind), "127.0.5.1").await {
        Err(e) => assert!(kind == Kind::Tls, "the TCP connect itself succeeds: {e}"),
        Ok((mut io, _)) => {
            let (_, bind) = binding_request();
            // The server may already have closed: a failing write is fine.
            let _ = timeout(TIMEOUT, async {
                io.write_all(&bind).await?;
                io.flush().await
            })
            .await;
            let got = read_until_closed(&mut *io, Instant::now() + TIMEOUT, "refused client").await;
            assert!(
                got.is_empty(),
                "no STUN answer to a refused client: {got:02x?}"
            );
        }
    }
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "closed at accept, not at the 10 s setup deadline ({:?})",
        t0.elapsed()
    );
    // A German client on the same listener is served.
    let mut de = server.client(kind, "127.0.1.1").await;
    de.allocate().await.expect("a German client allocates");
    let stats = server.stop().await;
    assert_eq!(
        stats.denials.get(&("client", "outside-region")),
        Some(&1),
        "{:?}",
        stats.denials
    );
    assert_eq!(stats.allocations_created, 1);
}

#[tokio::test]
async fn tcp_client_from_a_refused_address_is_closed_at_accept() {
    refused_client_closed_at_accept(Kind::Tcp).await;
}

#[tokio::test]
async fn tls_client_from_a_refused_address_is_closed_at_accept() {
    refused_client_closed_at_accept(Kind::Tls).await;
}

// --- slow-loris ---------------------------------------------------------------------------------

/// How a misbehaving connection behaves.
#[derive(Debug, Clone, Copy)]
enum Loris {
    /// Connects and sends nothing.
    Silent,
    /// Sends half a STUN header, then nothing.
    HalfHeader,
    /// Sends a STUN header declaring 400 bytes, then one byte every 100 ms: always active,
    /// never complete.
    Trickle,
}

/// Runs one misbehaving connection from `from_ip`; returns how long after connecting the
/// server closed it. Fails if it is still open after `SETUP + SLACK`.
async fn loris(kind: Kind, server: SocketAddr, from_ip: String, how: Loris) -> Duration {
    let (mut io, _) = open(kind, server, &from_ip)
        .await
        .unwrap_or_else(|e| panic!("{how:?} from {from_ip}: {e}"));
    let t0 = Instant::now();
    let deadline = t0 + SETUP + SLACK;
    let mut header = [0u8; 20];
    header[..2].copy_from_slice(&0x0001u16.to_be_bytes());
    header[2..4].copy_from_slice(&400u16.to_be_bytes());
    header[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    let what = format!("{how:?} {kind:?} connection from {from_ip}");
    match how {
        Loris::Silent => {}
        Loris::HalfHeader => {
            io.write_all(&header[..10])
                .await
                .expect("writing half a header");
            io.flush().await.expect("flushing");
        }
        Loris::Trickle => {
            let (mut r, mut w) = tokio::io::split(io);
            // A failed write means the server closed: leave it to the reader to see that.
            let writer = async move {
                for b in header.into_iter().chain(std::iter::repeat(0u8)) {
                    if w.write_all(&[b]).await.is_err() || w.flush().await.is_err() {
                        break;
                    }
                    sleep(Duration::from_millis(100)).await;
                }
                std::future::pending::<()>().await;
            };
            let mut buf = [0u8; 64];
            let reader = async {
                if let Ok(n @ 1..) = r.read(&mut buf).await {
                    panic!("{what}: the server answered {:02x?}", &buf[..n]);
                }
            };
            tokio::select! {
                () = reader => {}
                () = writer => unreachable!("the writer never ends"),
                () = sleep_until(deadline) => panic!("{what}: still open at its deadline"),
            }
            return t0.elapsed();
        }
    }
    let got = read_until_closed(&mut *io, deadline, &what).await;
    assert!(got.is_empty(), "{what}: no answer: {got:02x?}");
    t0.elapsed()
}

async fn slow_loris(kind: Kind) {
    let server = start(&[kind], FAST_SETUP).await;
    let addr = server.addr(kind);
    let mut tasks = Vec::new();
    for (i, how) in [Loris::Silent, Loris::HalfHeader, Loris::Trickle]
        .into_iter()
        .enumerate()
    {
        let from = format!("127.0.1.{}", 50 + i);
        tasks.push((how, tokio::spawn(loris(kind, addr, from, how))));
    }
    // Meanwhile a well-behaved client is served.
    let peer = Peer::bind("127.0.2.1").await;
    let mut good = server.client(kind, "127.0.1.1").await;
    let relayed = allocate_and_roundtrip(&mut good, &peer, "well-behaved").await;
    for (how, t) in tasks {
        let took = t.await.expect("the loris task");
        assert!(
            took >= SETUP - Duration::from_millis(200),
            "{how:?}: closed at the setup deadline, not before ({took:?})"
        );
    }
    // Past the setup deadline, the well-behaved client still is.
    send_roundtrip(&mut good, &peer, relayed, "after the deadline").await;
    let stats = server.stop().await;
    assert_eq!(stats.allocations_created, 1);
    assert_eq!(
        ended(&stats, "shutdown"),
        1,
        "{:?}",
        stats.allocations_ended
    );
}

#[tokio::test]
async fn tcp_slow_loris_is_closed_at_the_setup_deadline_while_others_are_served() {
    slow_loris(Kind::Tcp).await;
}

#[tokio::test]
async fn tls_slow_loris_is_closed_at_the_setup_deadline_while_others_are_served() {
    slow_loris(Kind::Tls).await;
}

// --- TLS handshake flood ------------------------------------------------------------------------

/// Opens a TCP connection to a TLS listener, sends `junk` (maybe nothing) and waits for the
/// server to close it; returns how long that took.
async fn tls_junk(server: SocketAddr, from_ip: String, junk: Vec<u8>) -> Duration {
    let mut tcp = tcp_from(&from_ip, server)
        .await
        .unwrap_or_else(|e| panic!("connecting from {from_ip}: {e}"));
    let t0 = Instant::now();
    if !junk.is_empty() {
        let _ = tcp.write_all(&junk).await;
    }
    let what = format!("TLS listener, {} bytes of junk from {from_ip}", junk.len());
    let got = read_until_closed(&mut tcp, t0 + SETUP + SLACK, &what).await;
    // A TLS alert is fine; STUN is not.
    assert!(
        got.first().is_none_or(|&b| b == 0x15),
        "{what}: the server sent {got:02x?}"
    );
    t0.elapsed()
}

#[tokio::test]
async fn tls_handshake_flood_does_not_stop_a_well_behaved_client() {
    let server = start(&[Kind::Tls], FAST_SETUP).await;
    let addr = server.addr(Kind::Tls);
    let mut silent = Vec::new();
    let mut garbage = Vec::new();
    for i in 0..50 {
        silent.push(tokio::spawn(tls_junk(
            addr,
            format!("127.0.1.{}", 100 + i),
            Vec::new(),
        )));
    }
    let (_, stun) = binding_request();
    for i in 0..20 {
        let junk = match i % 4 {
            0 => b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            1 => stun.clone(), // plaintext TURN on the TLS port
            2 => vec![0x16, 0x03, 0x01, 0xFF, 0xFF, 1], // a handshake record that never ends
            _ => payload(300, 0xA5),
        };
        garbage.push(tokio::spawn(tls_junk(
            addr,
            format!("127.0.1.{}", 150 + i),
            junk,
        )));
    }
    // While the flood is pending, a well-behaved TLS client allocates and relays.
    let peer = Peer::bind("127.0.2.1").await;
    let mut good = server.client(Kind::Tls, "127.0.1.1").await;
    let relayed = allocate_and_roundtrip(&mut good, &peer, "during the flood").await;
    for (i, t) in silent.into_iter().enumerate() {
        let took = t.await.expect("a flood task");
        assert!(
            took >= SETUP - Duration::from_millis(200),
            "silent connection {i} closed at the deadline, not before ({took:?})"
        );
    }
    for t in garbage {
        t.await.expect("a garbage task");
    }
    // And after it.
    send_roundtrip(&mut good, &peer, relayed, "after the flood").await;
    let mut late = server.client(Kind::Tls, "127.0.1.2").await;
    late.allocate().await.expect("a new client after the flood");
    let stats = server.stop().await;
    assert_eq!(stats.allocations_created, 2);
}

// --- connection limits --------------------------------------------------------------------------

async fn per_ip_limit(kind: Kind) {
    let server = start(
        &[kind],
        &format!("{SLOW_SETUP}\nmax_connections_per_ip = 3"),
    )
    .await;
    let mut three = Vec::new();
    for _ in 0..3 {
        let mut c = server.client(kind, "127.0.1.1").await;
        assert_eq!(c.binding().await, c.local, "connections 1-3 are served");
        three.push(c);
    }
    let t0 = Instant::now();
    match open(kind, server.addr(kind), "127.0.1.1").await {
        Err(e) => assert!(kind == Kind::Tls, "the TCP connect itself succeeds: {e}"),
        Ok((mut io, _)) => {
            let got =
                read_until_closed(&mut *io, t0 + Duration::from_secs(2), "4th connection").await;
            assert!(
                got.is_empty(),
                "no answer on the 4th connection: {got:02x?}"
            );
        }
    }
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "the 4th connection is closed at once ({:?})",
        t0.elapsed()
    );
    // Another address still connects.
    let mut other = server.client(kind, "127.0.1.2").await;
    assert_eq!(other.binding().await, other.local, "another IP is served");
    // The first three are still served.
    for c in &mut three {
        assert_eq!(c.binding().await, c.local);
    }
    // Once one of them closes, the address may connect again.
    three.pop().expect("three connections").close().await;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (tid, bind) = binding_request();
        if let Ok((mut io, _)) = open(kind, server.addr(kind), "127.0.1.1").await {
            let answered = timeout(Duration::from_millis(500), async {
                io.write_all(&bind).await.ok()?;
                io.flush().await.ok()?;
                let mut hdr = [0u8; 20];
                io.read_exact(&mut hdr).await.ok()?;
                Some(hdr[8..20] == tid.0)
            })
            .await;
            if answered == Ok(Some(true)) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "a slot of 127.0.1.1 is free again after one of its connections closed"
        );
        sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn tcp_fourth_connection_from_one_ip_is_closed_at_once() {
    per_ip_limit(Kind::Tcp).await;
}

#[tokio::test]
async fn tls_fourth_connection_from_one_ip_is_closed_at_once() {
    per_ip_limit(Kind::Tls).await;
}

/// `limits.max_connections_per_ip` counts "TCP/TLS connections per client IP address": all of
/// an address's connections, whichever stream listener they reached.
#[tokio::test]
async fn per_ip_limit_counts_connections_on_every_listener() {
    let server = start(
        &[Kind::Tcp, Kind::Tls],
        &format!("{SLOW_SETUP}\nmax_connections_per_ip = 3"),
    )
    .await;
    // Three connections from 127.0.1.1: TCP, TLS, TCP. A fourth, on the TLS listener (which
    // has seen only one of them), must be refused.
    let mut open_ones = Vec::new();
    for kind in [Kind::Tcp, Kind::Tls, Kind::Tcp] {
        let mut c = server.client(kind, "127.0.1.1").await;
        c.binding().await;
        open_ones.push(c);
    }
    let t0 = Instant::now();
    if let Ok((mut io, _)) = open(Kind::Tls, server.addr(Kind::Tls), "127.0.1.1").await {
        let (_, bind) = binding_request();
        let _ = io.write_all(&bind).await;
        let _ = io.flush().await;
        let got = read_until_closed(
            &mut *io,
            t0 + Duration::from_secs(2),
            "4th connection of 127.0.1.1 (on the TLS listener)",
        )
        .await;
        assert!(
            got.is_empty(),
            "no answer on the 4th connection: {got:02x?}"
        );
    }
    server.stop().await;
}

/// `limits.max_connections` counts "TCP/TLS connections in total", over every listener. The
/// three connections have allocations, so none of them is shed for the fourth.
#[tokio::test]
async fn total_connection_limit_counts_every_listener() {
    let server = start(
        &[Kind::Tcp, Kind::Tls],
        &format!("{SLOW_SETUP}\nmax_connections = 3"),
    )
    .await;
    let mut open_ones = Vec::new();
    for (i, kind) in [Kind::Tcp, Kind::Tls, Kind::Tcp].into_iter().enumerate() {
        let mut c = server.client(kind, &format!("127.0.1.{}", 10 + i)).await;
        c.allocate()
            .await
            .expect("an allocation on each connection");
        open_ones.push(c);
    }
    let t0 = Instant::now();
    if let Ok((mut io, _)) = open(Kind::Tls, server.addr(Kind::Tls), "127.0.1.20").await {
        let (_, bind) = binding_request();
        let _ = io.write_all(&bind).await;
        let _ = io.flush().await;
        let got = read_until_closed(
            &mut *io,
            t0 + Duration::from_secs(2),
            "4th connection in total (on the TLS listener)",
        )
        .await;
        assert!(
            got.is_empty(),
            "no answer on the 4th connection: {got:02x?}"
        );
    }
    server.stop().await;
}

/// At the total limit with an allocation on every connection, a new connection is closed at
/// once (nothing may be shed); once one closes, a slot is free again.
#[tokio::test]
async fn tcp_total_connection_limit_closes_new_connections_when_every_connection_has_an_allocation()
{
    let server = start(&[Kind::Tcp], &format!("{SLOW_SETUP}\nmax_connections = 3")).await;
    let mut open_ones = Vec::new();
    for i in 0..3 {
        let mut c = server
            .client(Kind::Tcp, &format!("127.0.1.{}", 10 + i))
            .await;
        c.allocate()
            .await
            .expect("an allocation on each connection");
        open_ones.push(c);
    }
    let t0 = Instant::now();
    let (mut io, _) = open(Kind::Tcp, server.addr(Kind::Tcp), "127.0.1.20")
        .await
        .expect("the TCP connect itself succeeds");
    let got = read_until_closed(&mut *io, t0 + Duration::from_secs(2), "4th connection").await;
    assert!(got.is_empty(), "no answer: {got:02x?}");
    open_ones.pop().expect("three").close().await;
    // A slot is free again (the server notices the close asynchronously).
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok((mut io, _)) = open(Kind::Tcp, server.addr(Kind::Tcp), "127.0.1.21").await {
            let (tid, bind) = binding_request();
            let answered = timeout(Duration::from_millis(500), async {
                io.write_all(&bind).await.ok()?;
                let mut hdr = [0u8; 20];
                io.read_exact(&mut hdr).await.ok()?;
                Some(hdr[8..20] == tid.0)
            })
            .await;
            if answered == Ok(Some(true)) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "a connection slot is free again");
        sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

// --- admission: the setup deadline and shedding ---------------------------------------------

/// An unauthenticated Allocate (answered with 401).
fn unauthenticated_allocate() -> Vec<u8> {
    let mut b = MessageBuilder::new(
        MessageType::new(Method::ALLOCATE, Class::Request),
        next_tid(),
    );
    b.add_raw(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_UDP, 0, 0, 0]);
    b.add_fingerprint();
    b.finish()
}

/// Opens a connection from `from_ip` that keeps sending `request()` every 200 ms and reads
/// the answers, never authenticating. Returns how long after connecting the server closed it
/// and how many bytes it answered before. Fails if it is still open after `SETUP + SLACK`.
async fn chatter(
    kind: Kind,
    server: SocketAddr,
    from_ip: &str,
    request: fn() -> Vec<u8>,
) -> (Duration, usize) {
    let (io, _) = open(kind, server, from_ip)
        .await
        .unwrap_or_else(|e| panic!("connecting from {from_ip}: {e}"));
    let t0 = Instant::now();
    let (mut r, mut w) = tokio::io::split(io);
    let writer = async move {
        loop {
            if w.write_all(&request()).await.is_err() || w.flush().await.is_err() {
                break;
            }
            sleep(Duration::from_millis(200)).await;
        }
        std::future::pending::<()>().await;
    };
    let reader = async {
        let mut buf = [0u8; 4096];
        let mut answered = 0;
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return answered,
                Ok(n) => answered += n,
            }
        }
    };
    tokio::select! {
        answered = reader => (t0.elapsed(), answered),
        () = writer => unreachable!("the writer never ends"),
        () = sleep_until(t0 + SETUP + SLACK) => panic!("{kind:?} chatter from {from_ip}: still open at its deadline"),
    }
}

/// Bindings and unauthenticated Allocates are answered but do not buy time: the connection
/// is closed at the setup deadline (issue: one Binding used to exempt it until the idle
/// timeout). A connection whose Allocate succeeded outlives the deadline, silent.
async fn setup_deadline_needs_an_allocation(kind: Kind) {
    let server = start(&[kind], FAST_SETUP).await;
    let addr = server.addr(kind);
    let binder = tokio::spawn(chatter(kind, addr, "127.0.1.60", || binding_request().1));
    let challenged = tokio::spawn(chatter(kind, addr, "127.0.1.61", unauthenticated_allocate));
    let peer = Peer::bind("127.0.2.1").await;
    let mut good = server.client(kind, "127.0.1.1").await;
    let relayed = allocate_and_roundtrip(&mut good, &peer, "allocated").await;
    for (what, task) in [
        ("Binding", binder),
        ("unauthenticated Allocate", challenged),
    ] {
        let (took, answered) = task.await.expect("a chatter task");
        assert!(answered > 0, "{what}: answered before the close");
        assert!(
            took >= SETUP - Duration::from_millis(200),
            "{what}: closed at the setup deadline, not before ({took:?})"
        );
    }
    // Silent past the deadline, the allocated connection is still served.
    sleep(SETUP + Duration::from_millis(500)).await;
    send_roundtrip(&mut good, &peer, relayed, "after the deadline, silent").await;
    assert_eq!(good.refresh(600).await, Ok(600));
    let stats = server.stop().await;
    assert_eq!(stats.allocations_created, 1);
}

#[tokio::test]
async fn tcp_binding_does_not_exempt_a_connection_from_the_setup_deadline() {
    setup_deadline_needs_an_allocation(Kind::Tcp).await;
}

#[tokio::test]
async fn tls_binding_does_not_exempt_a_connection_from_the_setup_deadline() {
    setup_deadline_needs_an_allocation(Kind::Tls).await;
}

/// At `limits.max_connections` a new connection is admitted by closing the oldest connection
/// without an allocation; a connection with an allocation is never shed.
async fn shed_oldest_unallocated(kind: Kind) {
    let server = start(&[kind], &format!("{SLOW_SETUP}\nmax_connections = 3")).await;
    let peer = Peer::bind("127.0.2.1").await;
    // The oldest connection allocates: it must survive everything below.
    let mut allocated = server.client(kind, "127.0.1.30").await;
    let relayed = allocate_and_roundtrip(&mut allocated, &peer, "oldest, allocated").await;
    let mut older = server.client(kind, "127.0.1.31").await;
    older.binding().await;
    let mut newer = server.client(kind, "127.0.1.32").await;
    newer.binding().await;

    let mut fourth = server.client(kind, "127.0.1.33").await;

    let got = older
        .closed_by_server(TIMEOUT, "the oldest connection without an allocation")
        .await;
    assert!(got.is_empty(), "nothing sent before shedding: {got:02x?}");
    assert_eq!(
        fourth.binding().await,
        fourth.local,
        "the new one is served"
    );
    assert_eq!(
        newer.binding().await,
        newer.local,
        "the younger one is kept"
    );
    // The fifth sheds the next oldest without an allocation, never the allocated one.
    let mut fifth = server.client(kind, "127.0.1.34").await;
    newer
        .closed_by_server(TIMEOUT, "the next oldest without an allocation")
        .await;
    assert_eq!(fifth.binding().await, fifth.local);
    send_roundtrip(&mut allocated, &peer, relayed, "after two sheddings").await;
    let stats = server.stop().await;
    assert_eq!(stats.allocations_created, 1);
    assert_eq!(
        ended(&stats, "connection-closed"),
        0,
        "{:?}",
        stats.allocations_ended
    );
}

#[tokio::test]
async fn tcp_at_the_connection_limit_the_oldest_unallocated_connection_is_shed() {
    shed_oldest_unallocated(Kind::Tcp).await;
}

#[tokio::test]
async fn tls_at_the_connection_limit_the_oldest_unallocated_connection_is_shed() {
    shed_oldest_unallocated(Kind::Tls).await;
}

// --- garbage ------------------------------------------------------------------------------------

async fn garbage_closes(kind: Kind) {
    let server = start(&[kind], SLOW_SETUP).await;
    // First byte 0xFF (top bits 11), 0x80 (top bits 10), and a STUN header whose length is not
    // a multiple of 4: none of them can be framed.
    let mut bad_len = [0u8; 20];
    bad_len[..2].copy_from_slice(&0x0001u16.to_be_bytes());
    bad_len[2..4].copy_from_slice(&5u16.to_be_bytes());
    bad_len[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    for (i, junk) in [vec![0xFF; 24], vec![0x80; 24], bad_len.to_vec()]
        .into_iter()
        .enumerate()
    {
        let mut c = server.client(kind, &format!("127.0.1.{}", 20 + i)).await;
        let t0 = Instant::now();
        c.write(&junk).await;
        let got = c
            .closed_by_server(
                Duration::from_secs(2),
                &format!("garbage {:02x?}", &junk[..4]),
            )
            .await;
        assert!(got.is_empty(), "no answer to garbage: {got:02x?}");
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "closed at once, not at the 10 s setup deadline"
        );
    }
    // Garbage after an allocation: the connection closes and the allocation ends with it.
    let peer = Peer::bind("127.0.2.1").await;
    let mut c = server.client(kind, "127.0.1.1").await;
    let relayed = allocate_and_roundtrip(&mut c, &peer, "before the garbage").await;
    // In the same write as the garbage, a complete Send indication: it is still relayed.
    let mut last = send_indication(peer.addr(), b"last words");
    last.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
    c.write(&last).await;
    assert_eq!(peer.recv().await, (b"last words".to_vec(), relayed));
    let got = c
        .closed_by_server(Duration::from_secs(2), "garbage after Allocate")
        .await;
    assert!(got.is_empty(), "no answer to garbage: {got:02x?}");
    assert!(
        udp_port_closed(relayed).await,
        "the relayed port is released"
    );
    let stats = server.stop().await;
    assert_eq!(
        ended(&stats, "connection-closed"),
        1,
        "{:?}",
        stats.allocations_ended
    );
}

#[tokio::test]
async fn tcp_garbage_closes_the_connection() {
    garbage_closes(Kind::Tcp).await;
}

#[tokio::test]
async fn tls_garbage_closes_the_connection() {
    garbage_closes(Kind::Tls).await;
}
