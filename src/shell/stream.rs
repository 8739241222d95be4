//! TCP and TLS listeners (RFC 8656 §3.7): one task per connection reads STUN messages and
//! ChannelData off the stream, frames them with [`stream_frame_len`], and hands the complete
//! frames of each read to the connection's worker in one message; a second task writes what
//! the worker sends back. The same core handles them as UDP.
//!
//! Robustness: connections are admitted per source and in total, shedding the oldest
//! connection without an allocation at the total limit ([`Connections`]); a connection must
//! complete an authenticated Allocate within the setup timeout, whatever it sends meanwhile
//! (a Binding does not count), and is held to the idle limit only after that; read buffers
//! are bounded by the largest possible frame; a bounded queue towards each client (a client
//! that does not read loses datagrams, as over UDP, instead of growing memory). Refusals are
//! counted for the summary line, not logged one by one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::connections::{Admitted, Connections};
use super::refusals::Refusals;
use super::worker::{Input, WorkerInput};
use crate::config::ConnectionLimits;
use crate::relay::{FiveTuple, Transport};
use crate::stun::{HEADER_LEN, stream_frame_len};

/// The largest frame: a STUN message of the maximum length (ChannelData is smaller).
const MAX_FRAME: usize = HEADER_LEN + 0xFFFF;
/// Messages queued towards one client before new ones are dropped.
const WRITE_QUEUE: usize = 256;
/// Bytes queued towards a client without an allocation before new answers are dropped (a
/// 420 to a large request may be half its size).
const QUEUE_BYTES_SETUP: usize = 64 * 1024;
/// Bytes queued towards a client with an allocation before new messages are dropped.
const QUEUE_BYTES: usize = 1024 * 1024;
/// The refusal kind of connection limits in the summary line.
pub(super) const KIND: &str = "connection";

/// What a stream listener needs to know, and the connection table shared by all of them.
#[derive(Clone)]
pub(super) struct StreamSettings {
    pub(super) setup_timeout: Duration,
    pub(super) idle_timeout: Duration,
    /// Connections in total and per source, across every TCP/TLS listener.
    pub(super) conns: Arc<Connections>,
    pub(super) refusals: Arc<Refusals>,
}

impl StreamSettings {
    pub(super) fn new(limits: &ConnectionLimits, refusals: Arc<Refusals>) -> Self {
        Self {
            setup_timeout: limits.connection_setup_timeout,
            idle_timeout: limits.connection_idle_timeout,
            conns: Arc::new(Connections::new(
                limits.max_connections,
                limits.max_connections_per_source,
                limits.ipv6_source_prefix,
            )),
            refusals,
        }
    }
}

/// The worker's end of a connection's write queue: bounded in messages and in bytes. What does
/// not fit is dropped, as UDP would drop it, instead of growing memory.
pub(super) struct Outbox {
    tx: mpsc::Sender<Vec<u8>>,
    /// Bytes queued and not yet written (the writer task subtracts what it wrote).
    queued: Arc<AtomicUsize>,
}

impl Outbox {
    /// Queues `bytes` unless the queue is full: [`QUEUE_BYTES`] once the connection has an
    /// allocation (`allocated`), [`QUEUE_BYTES_SETUP`] before.
    pub(super) fn push(&self, bytes: &[u8], allocated: bool) {
        let limit = if allocated {
            QUEUE_BYTES
        } else {
            QUEUE_BYTES_SETUP
        };
        let before = self.queued.fetch_add(bytes.len(), Ordering::AcqRel);
        if before + bytes.len() > limit || self.tx.try_send(bytes.to_vec()).is_err() {
            self.queued.fetch_sub(bytes.len(), Ordering::AcqRel);
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
            let admitted = match settings.conns.admit(peer.ip()) {
                Ok(a) => a,
                Err(why) => {
                    settings
                        .refusals
                        .note(KIND, why.rule(), 1, super::now().mono);
                    continue;
                }
            };
            if admitted.shed_another {
                settings
                    .refusals
                    .note(KIND, super::connections::SHED_RULE, 1, super::now().mono);
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
                serve_connection(stream, five, acceptor, &settings, tx, admitted).await;
            });
        }
    });
    Ok((local, task))
}

/// Runs one connection to its end (or until it is shed), then tells the driver it closed.
/// The residency check comes first, before a TLS handshake is spent on a refused client.
/// `admitted` holds its slot until this returns.
async fn serve_connection(
    stream: TcpStream,
    five: FiveTuple,
    acceptor: Option<TlsAcceptor>,
    settings: &StreamSettings,
    tx: WorkerInput,
    mut admitted: Admitted,
) {
    let deadline = tokio::time::Instant::now() + settings.setup_timeout;
    let (writer_tx, writer_rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let queued = Arc::new(AtomicUsize::new(0));
    let outbox = Outbox {
        tx: writer_tx,
        queued: queued.clone(),
    };
    let (reply_tx, reply_rx) = oneshot::channel();
    let opened = Input::StreamOpened {
        five,
        writer: outbox,
        reply: reply_tx,
        mark: admitted.mark(),
    };
    if tx.send(opened).await.is_err() || reply_rx.await != Ok(true) {
        return; // Refused by policy (or shutting down): nothing to close in the core.
    }
    let allocated = &admitted.allocated;
    let session = async {
        match acceptor {
            Some(acceptor) => {
                match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let writer = (writer_rx, queued);
                        run(tls, five, writer, deadline, allocated, settings, &tx).await
                    }
                    Ok(Err(e)) => {
                        // e.g. "no cipher suites in common": a client outside the bsi profile.
                        let e = e.to_string();
                        tracing::debug!(target: "eeaturn::shell", error = %crate::pii::Escaped(&e), "TLS handshake failed");
                        Err("TLS handshake failed")
                    }
                    Err(_) => Err("TLS handshake not completed in time"),
                }
            }
            None => {
                let writer = (writer_rx, queued);
                run(stream, five, writer, deadline, allocated, settings, &tx).await
            }
        }
    };
    let result = tokio::select! {
        r = session => r,
        _ = &mut admitted.shed => Err("shed for a new connection at limits.max_connections"),
    };
    if let Err(why) = result {
        tracing::debug!(target: "eeaturn::shell", transport = five.transport.name(), why, "connection closed");
    }
    let _ = tx.send(Input::StreamClosed { five }).await;
}

/// Aborts the writer task when the connection's session ends, however it ends.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run<S>(
    stream: S,
    five: FiveTuple,
    (writer_rx, queued): (mpsc::Receiver<Vec<u8>>, Arc<AtomicUsize>),
    setup_deadline: tokio::time::Instant,
    allocated: &AtomicBool,
    settings: &StreamSettings,
    tx: &WorkerInput,
) -> Result<(), &'static str>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(stream);
    let _writer = AbortOnDrop(tokio::spawn(write_loop(writer, writer_rx, queued)));
    read_loop(&mut reader, five, setup_deadline, allocated, settings, tx).await
}

async fn read_loop<R: AsyncRead + Unpin>(
    reader: &mut R,
    five: FiveTuple,
    setup_deadline: tokio::time::Instant,
    allocated: &AtomicBool,
    settings: &StreamSettings,
    tx: &WorkerInput,
) -> Result<(), &'static str> {
    // Start small; grow only as far as a declared frame needs (at most MAX_FRAME + 3).
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
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
            // Doubling towards the declared length: the buffer is never more than twice what
            // the client has sent (a declared 64 KiB frame costs 64 KiB only once half of it
            // has arrived).
            match stream_frame_len(&buf[..len]) {
                Ok(Some(n)) if n > len && n <= MAX_FRAME + 3 => buf.resize(n.min(2 * len), 0),
                _ => return Err("frame too large"),
            }
        }
        // Until its Allocate has succeeded a connection lives by the setup deadline, whatever
        // it sends; then by the idle limit. A read cut off by the deadline loses nothing
        // (reads are cancel-safe), so an allocation made meanwhile just goes on reading.
        let n = loop {
            let read = reader.read(&mut buf[len..]);
            if allocated.load(Ordering::Acquire) {
                break tokio::time::timeout(settings.idle_timeout, read)
                    .await
                    .map_err(|_| "idle")?;
            }
            match tokio::time::timeout_at(setup_deadline, read).await {
                Ok(r) => break r,
                Err(_) if allocated.load(Ordering::Acquire) => {}
                Err(_) => return Err("no authenticated Allocate within the setup timeout"),
            }
        }
        .map_err(|_| "read error")?;
        if n == 0 {
            return Err("closed by the client");
        }
        len += n;
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
) {
    while let Some(bytes) = rx.recv().await {
        if writer.write_all(&bytes).await.is_err() {
            return;
        }
        queued.fetch_sub(bytes.len(), Ordering::AcqRel);
        // Coalesce what is queued before flushing (TLS records, fewer syscalls).
        while let Ok(more) = rx.try_recv() {
            if writer.write_all(&more).await.is_err() {
                return;
            }
            queued.fetch_sub(more.len(), Ordering::AcqRel);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rx: &mut mpsc::Receiver<Vec<u8>>) -> usize {
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        n
    }

    #[test]
    fn the_write_queue_is_bounded_in_bytes_and_messages() {
        let (tx, mut rx) = mpsc::channel(WRITE_QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let outbox = Outbox {
            tx,
            queued: queued.clone(),
        };
        let big = vec![0u8; 30 * 1024];
        // Without an allocation: 64 KiB, two of them.
        for _ in 0..3 {
            outbox.push(&big, false);
        }
        assert_eq!(queued.load(Ordering::Acquire), 60 * 1024);
        // With one: up to 1 MiB in all.
        for _ in 0..40 {
            outbox.push(&big, true);
        }
        assert_eq!(queued.load(Ordering::Acquire), 34 * 30 * 1024);
        assert_eq!(drain(&mut rx), 34);
        // The writer has taken them (and subtracts what it wrote): small messages stop at the
        // message limit.
        queued.store(0, Ordering::Release);
        for _ in 0..WRITE_QUEUE + 10 {
            outbox.push(b"answer", true);
        }
        assert_eq!(drain(&mut rx), WRITE_QUEUE);
        assert_eq!(queued.load(Ordering::Acquire), WRITE_QUEUE * 6);
    }
}
