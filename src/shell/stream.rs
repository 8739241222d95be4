//! TCP and TLS listeners (RFC 8656 §3.7): one task per connection reads STUN messages and
//! ChannelData off the stream, frames them with [`stream_frame_len`], and hands the complete
//! frames of each read to the connection's worker in one message; a second task writes what
//! the worker sends back. The same core handles them as UDP.
//!
//! Robustness: a cap on connections in total and per client IP; a deadline for the TLS
//! handshake and the first complete message; an idle limit afterwards; read buffers bounded by
//! the largest possible frame; a bounded queue towards each client (a client that does not read
//! loses datagrams, as over UDP, instead of growing memory).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::worker::{Input, WorkerInput};
use crate::relay::{FiveTuple, Transport};
use crate::stun::{HEADER_LEN, stream_frame_len};

/// The largest frame: a STUN message of the maximum length (ChannelData is smaller).
const MAX_FRAME: usize = HEADER_LEN + 0xFFFF;
/// Messages queued towards one client before new ones are dropped.
const WRITE_QUEUE: usize = 256;

/// What a stream listener needs to know, and the connection counts shared by all of them.
#[derive(Clone)]
pub(super) struct StreamSettings {
    pub(super) max_per_ip: usize,
    pub(super) setup_timeout: Duration,
    pub(super) idle_timeout: Duration,
    /// Connections in total, across every TCP/TLS listener.
    pub(super) total: Arc<Semaphore>,
    /// Connections per client IP, across every TCP/TLS listener.
    pub(super) per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl StreamSettings {
    pub(super) fn new(
        max_connections: usize,
        max_per_ip: usize,
        setup_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            max_per_ip,
            setup_timeout,
            idle_timeout,
            total: Arc::new(Semaphore::new(max_connections)),
            per_ip: Arc::default(),
        }
    }
}

/// The TLS acceptor, replaceable on reload; new handshakes use the newest.
pub(super) type SharedAcceptor = Arc<RwLock<TlsAcceptor>>;

/// Binds a TCP listener and serves it (with TLS when `tls` is given).
pub(super) async fn spawn_listener(
    addr: SocketAddr,
    tls: Option<SharedAcceptor>,
    settings: StreamSettings,
    workers: Arc<[WorkerInput]>,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    let listener = TcpListener::from_std(sock.into())?;
    let local = listener.local_addr()?;
    let transport = if tls.is_some() {
        Transport::Tls
    } else {
        Transport::Tcp
    };
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(target: "eeaturn::shell", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = settings.total.clone().try_acquire_owned() else {
                tracing::debug!(target: "eeaturn::shell", "connection limit reached; closing a new connection");
                continue;
            };
            let ip = crate::policy::canonical(peer.ip());
            {
                let mut map = settings
                    .per_ip
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let n = map.entry(ip).or_default();
                if *n >= settings.max_per_ip {
                    tracing::debug!(target: "eeaturn::shell", "per-address connection limit reached; closing a new connection");
                    continue;
                }
                *n += 1;
            }
            let _ = stream.set_nodelay(true);
            let five = FiveTuple {
                transport,
                client: peer,
                server: local,
            };
            let acceptor = tls.as_ref().map(|t| {
                t.read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            });
            // A connection's allocation lives on one worker, picked by the client's port.
            let tx = workers[usize::from(peer.port()) % workers.len()].clone();
            let settings = settings.clone();
            tokio::spawn(async move {
                serve_connection(stream, five, acceptor, &settings, tx).await;
                let mut map = settings
                    .per_ip
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(n) = map.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        map.remove(&ip);
                    }
                }
                drop(permit);
            });
        }
    });
    Ok((local, task))
}

/// Runs one connection to its end, then tells the driver it closed. The residency check
/// comes first, before a TLS handshake is spent on a refused client.
async fn serve_connection(
    stream: TcpStream,
    five: FiveTuple,
    acceptor: Option<TlsAcceptor>,
    settings: &StreamSettings,
    tx: WorkerInput,
) {
    let deadline = tokio::time::Instant::now() + settings.setup_timeout;
    let (writer_tx, writer_rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let (reply_tx, reply_rx) = oneshot::channel();
    let opened = Input::StreamOpened {
        five,
        writer: writer_tx,
        reply: reply_tx,
    };
    if tx.send(opened).await.is_err() || reply_rx.await != Ok(true) {
        return; // Refused by policy (or shutting down): nothing to close in the core.
    }
    let result = match acceptor {
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => run(tls, five, writer_rx, deadline, settings, &tx).await,
            Ok(Err(e)) => {
                // e.g. "no cipher suites in common": a client outside the bsi profile.
                let e = e.to_string();
                tracing::debug!(target: "eeaturn::shell", error = %crate::pii::Escaped(&e), "TLS handshake failed");
                Err("TLS handshake failed")
            }
            Err(_) => Err("TLS handshake not completed in time"),
        },
        None => run(stream, five, writer_rx, deadline, settings, &tx).await,
    };
    if let Err(why) = result {
        tracing::debug!(target: "eeaturn::shell", transport = five.transport.name(), why, "connection closed");
    }
    let _ = tx.send(Input::StreamClosed { five }).await;
}

async fn run<S>(
    stream: S,
    five: FiveTuple,
    writer_rx: mpsc::Receiver<Vec<u8>>,
    setup_deadline: tokio::time::Instant,
    settings: &StreamSettings,
    tx: &WorkerInput,
) -> Result<(), &'static str>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(stream);
    let write_task = tokio::spawn(write_loop(writer, writer_rx));
    let result = read_loop(&mut reader, five, setup_deadline, settings, tx).await;
    write_task.abort();
    result
}

async fn read_loop<R: AsyncRead + Unpin>(
    reader: &mut R,
    five: FiveTuple,
    setup_deadline: tokio::time::Instant,
    settings: &StreamSettings,
    tx: &WorkerInput,
) -> Result<(), &'static str> {
    // Start small; grow only as far as a declared frame needs (at most MAX_FRAME).
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    let mut first = true;
    loop {
        // Hand over every complete frame in the buffer, all in one message: one copy, one
        // queue slot and one wake-up of the worker per read, not per frame.
        let mut complete = 0;
        let mut garbage = false;
        loop {
            match stream_frame_len(&buf[complete..len]) {
                Ok(Some(n)) if n <= len - complete => complete += n,
                Ok(_) => break,
                Err(_) => {
                    garbage = true;
                    break;
                }
            }
        }
        if complete > 0 {
            first = false;
            let input = Input::Stream {
                five,
                frames: buf[..complete].to_vec(),
            };
            if tx.send(input).await.is_err() {
                return Err("shutting down");
            }
            buf.copy_within(complete..len, 0);
            len -= complete;
        }
        if garbage {
            return Err("not STUN or ChannelData");
        }
        if len == buf.len() {
            match stream_frame_len(&buf[..len]) {
                Ok(Some(n)) if n > len && n <= MAX_FRAME + 3 => buf.resize(n, 0),
                _ => return Err("frame too large"),
            }
        }
        let read = reader.read(&mut buf[len..]);
        let n = if first {
            tokio::time::timeout_at(setup_deadline, read)
                .await
                .map_err(|_| "no complete request in time")?
        } else {
            tokio::time::timeout(settings.idle_timeout, read)
                .await
                .map_err(|_| "idle")?
        }
        .map_err(|_| "read error")?;
        if n == 0 {
            return Err("closed by the client");
        }
        len += n;
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut writer: W, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(bytes) = rx.recv().await {
        if writer.write_all(&bytes).await.is_err() {
            return;
        }
        // Coalesce what is queued before flushing (TLS records, fewer syscalls).
        while let Ok(more) = rx.try_recv() {
            if writer.write_all(&more).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// Builds the shared acceptor from the `[tls]` settings.
pub(super) fn acceptor(tls: &crate::config::TlsConfig) -> anyhow::Result<SharedAcceptor> {
    let config = crate::tls::server_config(tls).context("loading the TLS certificate")?;
    Ok(Arc::new(RwLock::new(TlsAcceptor::from(config))))
}
