//! The TURN client side of the bench, built on eeaturn's codec: connections over UDP, TCP
//! and TLS, transactions with retransmission, and the authenticated requests (Allocate with
//! its 401 round, CreatePermission, ChannelBind, Refresh).
//!
//! Nothing here knows the server: the realm and nonce are learnt from the 401.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use eeaturn::client::{self, LongTermAuth, PasswordAlgorithm};
use eeaturn::credentials::Secrets;
use eeaturn::stun::{
    Class, Message, MessageBuilder, Method, TransactionId, attr, stream_frame_len,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How the client reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Transport {
    /// TURN over UDP.
    Udp,
    /// TURN over TCP (RFC 8656 §3.7 framing).
    Tcp,
    /// TURN over TLS over TCP.
    Tls,
}

/// Credentials lifetime asked for: long enough for any run, short enough for every server.
const CREDENTIAL_TTL: Duration = Duration::from_secs(3600);
/// Initial UDP retransmission timeout; doubled on every retry. See RFC 8489 §6.2.1.
const UDP_RTO: Duration = Duration::from_millis(250);
/// Transmissions of one UDP request before giving up.
const UDP_TRIES: u32 = 4;
/// How long a request over TCP/TLS may wait for its answer.
const STREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames queued from a stream reader to its connection before they are dropped.
const STREAM_QUEUE: usize = 64;

/// Opens connections to the server and signs credentials.
#[derive(Clone)]
pub(crate) struct Dialer {
    server: SocketAddr,
    client_ip: IpAddr,
    transport: Transport,
    tls: Option<tokio_rustls::TlsConnector>,
    secrets: Option<Arc<Secrets>>,
}

impl Dialer {
    /// Creates a dialer. `ca_file` is required for TLS; `secret` for TURN (not for a raw
    /// forwarder).
    ///
    /// # Errors
    ///
    /// Fails when the CA file cannot be read or the secret is unusable.
    pub(crate) fn new(
        server: SocketAddr,
        client_ip: IpAddr,
        transport: Transport,
        ca_file: Option<&Path>,
        secret: Option<&str>,
    ) -> anyhow::Result<Self> {
        let tls = match transport {
            Transport::Tls => {
                let ca = ca_file.context("--transport tls needs --ca-file")?;
                Some(tls_connector(ca)?)
            }
            Transport::Udp | Transport::Tcp => None,
        };
        let secrets = secret
            .map(|s| Secrets::parse(s).map(Arc::new))
            .transpose()
            .context("the shared secret")?;
        Ok(Self {
            server,
            client_ip,
            transport,
            tls,
            secrets,
        })
    }

    /// Returns the server's address.
    pub(crate) fn server(&self) -> SocketAddr {
        self.server
    }

    /// Returns the transport.
    pub(crate) fn transport(&self) -> Transport {
        self.transport
    }

    /// Returns a TURN REST credential for user id `user`: `(username, password)`.
    ///
    /// # Errors
    ///
    /// Fails without a secret.
    pub(crate) fn credential(&self, user: &str) -> anyhow::Result<(String, String)> {
        let secrets = self.secrets.as_ref().context("no --secret given")?;
        let c = secrets.issue(user, CREDENTIAL_TTL, CREDENTIAL_TTL, wall_clock())?;
        Ok((c.username, c.password))
    }

    /// Opens one connection from a fresh local port.
    ///
    /// # Errors
    ///
    /// Fails when the socket cannot be bound or the server does not accept.
    pub(crate) async fn connect(&self) -> anyhow::Result<Conn> {
        let local = SocketAddr::new(self.client_ip, 0);
        match self.transport {
            Transport::Udp => {
                let sock = UdpSocket::bind(local)
                    .await
                    .with_context(|| format!("binding a client socket on {local}"))?;
                sock.connect(self.server).await?;
                Ok(Conn::Udp(Arc::new(sock)))
            }
            Transport::Tcp | Transport::Tls => {
                let sock = if self.client_ip.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                sock.bind(local)
                    .with_context(|| format!("binding a client socket on {local}"))?;
                let tcp = sock
                    .connect(self.server)
                    .await
                    .with_context(|| format!("connecting to {}", self.server))?;
                tcp.set_nodelay(true)?;
                match &self.tls {
                    Some(connector) => {
                        let name = ServerName::IpAddress(self.server.ip().into());
                        let tls = connector
                            .connect(name, tcp)
                            .await
                            .context("TLS handshake")?;
                        Ok(Conn::stream(tls))
                    }
                    None => Ok(Conn::stream(tcp)),
                }
            }
        }
    }
}

/// One client connection: a connected UDP socket or a framed TCP/TLS stream.
pub(crate) enum Conn {
    /// A UDP socket connected to the server.
    Udp(Arc<UdpSocket>),
    /// A TCP or TLS stream; a reader task delivers the STUN messages that arrive.
    Stream {
        /// The sending half.
        writer: Box<dyn AsyncWrite + Send + Unpin>,
        rx: mpsc::Receiver<Vec<u8>>,
        reader: JoinHandle<()>,
    },
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Self::Stream { reader, .. } = self {
            reader.abort();
        }
    }
}

impl Conn {
    fn stream<S: AsyncRead + AsyncWrite + Send + 'static>(s: S) -> Self {
        let (r, w) = tokio::io::split(s);
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let reader = tokio::spawn(read_frames(r, tx));
        Self::Stream {
            writer: Box::new(w),
            rx,
            reader,
        }
    }

    /// Sends one message (a datagram, or bytes on the stream).
    ///
    /// # Errors
    ///
    /// Fails when the socket fails.
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Udp(s) => s.send(bytes).await.map(|_| ()),
            Self::Stream { writer, .. } => writer.write_all(bytes).await,
        }
    }

    /// Receives the next STUN message.
    async fn recv(&mut self) -> anyhow::Result<Vec<u8>> {
        match self {
            Self::Udp(s) => {
                let mut buf = vec![0u8; 2048];
                let n = s.recv(&mut buf).await?;
                buf.truncate(n);
                Ok(buf)
            }
            Self::Stream { rx, .. } => rx.recv().await.context("the server closed the stream"),
        }
    }

    /// Sends request `req` (transaction `tid`) and returns the response with the same
    /// transaction id, retransmitting over UDP.
    ///
    /// # Errors
    ///
    /// Fails on a socket error or when no answer comes in time.
    pub(crate) async fn transact(
        &mut self,
        req: &[u8],
        tid: TransactionId,
    ) -> anyhow::Result<Vec<u8>> {
        let (tries, mut wait) = match self {
            Self::Udp(_) => (UDP_TRIES, UDP_RTO),
            Self::Stream { .. } => (1, STREAM_TIMEOUT),
        };
        for _ in 0..tries {
            self.send(req).await?;
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                match tokio::time::timeout_at(deadline, self.recv()).await {
                    Err(_) => break,
                    Ok(Err(e)) => return Err(e),
                    Ok(Ok(bytes)) => {
                        if let Ok(m) = Message::parse(&bytes)
                            && m.transaction_id() == tid
                            && matches!(m.class(), Class::Success | Class::Error)
                        {
                            return Ok(bytes);
                        }
                    }
                }
            }
            wait *= 2;
        }
        bail!("no answer from the server")
    }
}

/// An allocation: its connection and what authenticates requests on it.
pub(crate) struct Session {
    /// The connection the allocation lives on.
    pub(crate) conn: Conn,
    /// The credentials and nonce.
    pub(crate) auth: Auth,
}

/// The authentication state of an allocation, apart from its connection.
pub(crate) struct Auth {
    /// The relayed transport address.
    pub(crate) relayed: SocketAddr,
    /// The credential, realm and nonce (the client side shared with the tests:
    /// `eeaturn::client`).
    long_term: LongTermAuth,
}

/// A request answered with an error response.
#[derive(Debug, thiserror::Error)]
#[error("{method} refused: {code} {reason}")]
pub(crate) struct Refused {
    method: &'static str,
    code: u16,
    reason: String,
}

/// Allocation mismatch: the 5-tuple already has an allocation. See RFC 8656 §6.2.
const ALLOCATION_MISMATCH: u16 = 437;
/// New connections tried when the server still holds an allocation on the local port the
/// OS handed out (a stale allocation of an earlier run).
const MISMATCH_RETRIES: usize = 3;

impl Session {
    /// Connects and allocates as user `user`; when the server answers 437 (a stale
    /// allocation on the same 5-tuple, left by an earlier run), retries from a new local port.
    ///
    /// # Errors
    ///
    /// Fails when the connection or the allocation fails.
    pub(crate) async fn open(dialer: &Dialer, user: &str) -> anyhow::Result<Self> {
        let mut attempt = 0;
        loop {
            // The OS picks ephemeral ports at random, so the retry lands on another one.
            let conn = dialer.connect().await?;
            match Self::allocate(dialer, conn, user).await {
                Err(e)
                    if attempt < MISMATCH_RETRIES
                        && e.downcast_ref::<Refused>()
                            .is_some_and(|r| r.code == ALLOCATION_MISMATCH) =>
                {
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    /// Allocates a UDP relay on `conn` as user `user`: an unauthenticated Allocate to learn
    /// realm and nonce from the 401, then the authenticated one.
    ///
    /// # Errors
    ///
    /// Fails when the server does not answer or refuses.
    async fn allocate(dialer: &Dialer, mut conn: Conn, user: &str) -> anyhow::Result<Self> {
        let (username, password) = dialer.credential(user)?;
        let mut long_term = LongTermAuth::new(&username, &password, PasswordAlgorithm::Md5);
        let tid = new_tid();
        let mut b = client::request(Method::ALLOCATE, tid);
        client::add_requested_transport_udp(&mut b);
        let resp = conn.transact(&b.finish(), tid).await?;
        let m = Message::parse(&resp)?;
        match client::error_code(&m) {
            Some((401, _)) if long_term.take_challenge(&m) => {}
            Some((401, _)) => bail!("a 401 without REALM and NONCE"),
            None => bail!("the server allocated without authentication"),
            other => bail!("Allocate without credentials: expected 401, got {other:?}"),
        }
        let mut s = Self {
            conn,
            auth: Auth {
                relayed: SocketAddr::from(([0, 0, 0, 0], 0)),
                long_term,
            },
        };
        let (resp, tid) = s
            .request(Method::ALLOCATE, client::add_requested_transport_udp)
            .await?;
        let m = Message::parse(&resp)?;
        let v = m
            .get(attr::XOR_RELAYED_ADDRESS)
            .context("Allocate success without XOR-RELAYED-ADDRESS")?;
        s.auth.relayed = attr::decode_xor_address(attr::XOR_RELAYED_ADDRESS, v, &tid)?;
        Ok(s)
    }

    /// Installs a permission for `peer`'s address.
    ///
    /// # Errors
    ///
    /// Fails when the server does not answer or refuses.
    pub(crate) async fn create_permission(&mut self, peer: SocketAddr) -> anyhow::Result<()> {
        self.request(Method::CREATE_PERMISSION, |b| {
            b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
        })
        .await
        .map(|_| ())
    }

    /// Binds `channel` to `peer`.
    ///
    /// # Errors
    ///
    /// Fails when the server does not answer or refuses.
    pub(crate) async fn channel_bind(
        &mut self,
        channel: u16,
        peer: SocketAddr,
    ) -> anyhow::Result<()> {
        self.request(Method::CHANNEL_BIND, |b| {
            client::add_channel_bind(b, channel, peer);
        })
        .await
        .map(|_| ())
    }

    /// Refreshes the allocation for `lifetime` seconds (Refresh with LIFETIME).
    ///
    /// # Errors
    ///
    /// Fails when the server does not answer or refuses.
    pub(crate) async fn refresh(&mut self, lifetime: u32) -> anyhow::Result<()> {
        self.request(Method::REFRESH, |b| b.add_u32(attr::LIFETIME, lifetime))
            .await
            .map(|_| ())
    }

    /// Releases the allocation (Refresh with LIFETIME 0).
    ///
    /// # Errors
    ///
    /// Fails when the server does not answer or refuses.
    pub(crate) async fn release(&mut self) -> anyhow::Result<()> {
        self.request(Method::REFRESH, |b| b.add_u32(attr::LIFETIME, 0))
            .await
            .map(|_| ())
    }

    /// Sends an authenticated request; retries with the new nonce on 438 (Stale Nonce).
    /// Returns the success response and its transaction id.
    async fn request(
        &mut self,
        method: Method,
        attrs: impl Fn(&mut MessageBuilder),
    ) -> anyhow::Result<(Vec<u8>, TransactionId)> {
        for _ in 0..3 {
            let tid = new_tid();
            let mut b = client::request(method, tid);
            attrs(&mut b);
            self.auth
                .long_term
                .sign(&mut b)
                .context("signing before the 401 challenge")?;
            let resp = self.conn.transact(&b.finish(), tid).await?;
            let m = Message::parse(&resp)?;
            if m.class() == Class::Success {
                return Ok((resp, tid));
            }
            match client::error_code(&m) {
                Some((438, _)) if self.auth.long_term.take_challenge(&m) => {}
                Some((code, reason)) => {
                    return Err(Refused {
                        method: method.name(),
                        code,
                        reason: reason.to_owned(),
                    }
                    .into());
                }
                None => bail!("{} refused without ERROR-CODE", method.name()),
            }
        }
        Err(anyhow!("{}: stale nonce three times", method.name()))
    }
}

/// Returns a fresh transaction id: unique within this process, and across processes started
/// at different nanoseconds.
pub(crate) fn new_tid() -> TransactionId {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static BASE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| {
        wall_clock()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut t = [0u8; 12];
    t[..4].copy_from_slice(&base.to_be_bytes());
    t[4..].copy_from_slice(&n.to_be_bytes());
    TransactionId(t)
}

#[expect(
    clippy::disallowed_methods,
    reason = "the bench is a client: it signs credentials with the wall clock"
)]
fn wall_clock() -> SystemTime {
    SystemTime::now()
}

/// Reads a TCP/TLS stream, splits it into frames (RFC 8656 §3.7) and passes STUN messages
/// on; ChannelData from the server is dropped (this bench sends towards the peer).
async fn read_frames(mut r: impl AsyncRead + Unpin, tx: mpsc::Sender<Vec<u8>>) {
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            let len = match stream_frame_len(&buf) {
                Ok(Some(len)) if buf.len() >= len => len,
                Ok(_) => break,
                Err(_) => return,
            };
            let frame: Vec<u8> = buf.drain(..len).collect();
            if frame[0] >> 6 == 0 {
                // Full queue: the frame is dropped, as a lost datagram would be.
                let _ = tx.try_send(frame);
            }
        }
    }
}

fn tls_connector(ca: &Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("reading CA file {}", ca.display()))?
    {
        roots.add(cert.with_context(|| format!("parsing {}", ca.display()))?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
