//! The one HTTP/1.1 stack of the shell: the credential API and the metrics listener both serve
//! an axum [`Router`] through [`serve`].
//!
//! One accept loop, two ways to limit connections ([`WhenFull`]):
//!
//! - `Wait` (mini-redis style, the API): a semaphore with [`Limits::max_connections`] permits,
//!   taken *before* `accept`, so a connection over the limit waits in the kernel's backlog
//!   until one closes instead of being served or reset;
//! - `EvictIdle` (the metrics listener): every connection is accepted, and when all slots are
//!   taken the oldest connection that has not yet sent a request is closed to make room. A
//!   scraper sends its request at once, so a flood of silent connections only evicts itself.
//!
//! Two timers make sure connections do close:
//!
//! - the header-read timeout: a client must send a request's headers within
//!   [`Limits::header_timeout`], counted from the moment the connection waits for a request
//!   (so a connection opened and left silent, or idle between keep-alive requests, closes);
//! - the idle timeout: a connection on which no byte is read or written for
//!   [`Limits::idle_timeout`] is dropped, which also frees the slot of a client that stops
//!   reading its answer.
//!
//! It speaks HTTP only; the relay's TCP/TLS listener (STUN framing) is `shell::stream`.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

/// A TLS acceptor that a reload can replace; each connection uses the one in force when it
/// was accepted.
pub(crate) type SharedAcceptor = Arc<RwLock<TlsAcceptor>>;

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections served at once; more wait in the backlog.
    pub(crate) max_connections: usize,
    /// How long a client may take to send a request's headers (and, between requests, to
    /// start the next one).
    pub(crate) header_timeout: Duration,
    /// How long a connection may pass without a byte read or written.
    pub(crate) idle_timeout: Duration,
    /// How long a TLS handshake may take.
    pub(crate) handshake_timeout: Duration,
    /// The largest request head (request line and headers); larger ones get 431.
    pub(crate) max_header_size: usize,
    /// Whether a connection may carry more than one request.
    pub(crate) keep_alive: bool,
    /// What happens to a new connection when all slots are taken.
    pub(crate) when_full: WhenFull,
    /// The tracing target of the listener's debug messages.
    pub(crate) target: &'static str,
}

/// What a listener does with a new connection when [`Limits::max_connections`] are open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenFull {
    /// It waits in the kernel's backlog until a connection closes.
    Wait,
    /// It is accepted, and the oldest connection that has not sent a request is closed.
    EvictIdle,
}

/// Accepts connections on `listener` (with TLS when `tls` is set) and serves `app` on each,
/// within `limits`, until the task is dropped or aborted, which closes every connection.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<SharedAcceptor>,
    app: Router,
    limits: Limits,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    // The connections open, oldest first (`EvictIdle` only).
    let mut open: VecDeque<Arc<Slot>> = VecDeque::new();
    loop {
        while conns.try_join_next().is_some() {}
        // Waits until a connection closes when all slots are taken; the semaphore is never
        // closed, so this cannot fail.
        let permit = match limits.when_full {
            WhenFull::Wait => match permits.clone().acquire_owned().await {
                Ok(p) => Some(p),
                Err(_) => return,
            },
            WhenFull::EvictIdle => None,
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(target: "eeaturn::http", listener = limits.target, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = Arc::new(Slot::default());
        if limits.when_full == WhenFull::EvictIdle {
            // A slot whose task has ended holds the only reference left.
            open.retain(|s| Arc::strong_count(s) > 1 && !s.evicted.load(Ordering::Relaxed));
            if open.len() >= limits.max_connections {
                let idle = open
                    .iter()
                    .position(|s| !s.requested.load(Ordering::Relaxed));
                let Some(i) = idle else {
                    // Every slot is serving a request: this one waits for none.
                    tracing::debug!(target: "eeaturn::http", listener = limits.target, "all connections busy; closing a new one");
                    continue;
                };
                if let Some(victim) = open.remove(i) {
                    victim.evicted.store(true, Ordering::Relaxed);
                    victim.close.notify_one();
                    tracing::debug!(target: "eeaturn::http", listener = limits.target, "closing the oldest connection without a request to make room");
                }
            }
            open.push_back(slot.clone());
        }
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let acceptor = tls
            .as_ref()
            .map(|t| t.read().unwrap_or_else(PoisonError::into_inner).clone());
        conns.spawn(async move {
            let work = async {
                match acceptor {
                    Some(a) => {
                        match tokio::time::timeout(limits.handshake_timeout, a.accept(tcp)).await {
                            Ok(Ok(stream)) => serve_connection(stream, peer, app, limits, &slot).await,
                            Ok(Err(e)) => {
                                tracing::debug!(target: "eeaturn::http", listener = limits.target, error = %e, "TLS handshake failed");
                            }
                            Err(_) => {
                                tracing::debug!(target: "eeaturn::http", listener = limits.target, "TLS handshake timed out");
                            }
                        }
                    }
                    None => serve_connection(tcp, peer, app, limits, &slot).await,
                }
            };
            tokio::select! {
                () = work => {}
                () = slot.close.notified() => {}
            }
            drop(permit);
        });
    }
}

/// One open connection, as the accept loop sees it.
#[derive(Debug, Default)]
struct Slot {
    /// A request has arrived on it (it is no longer idle).
    requested: AtomicBool,
    /// The accept loop chose it to make room.
    evicted: AtomicBool,
    /// Closes it.
    close: Notify,
}

/// Serves HTTP/1.1 on one connection until it closes or is idle for too long. Every request
/// carries the client's address as axum's [`ConnectInfo`] extension.
async fn serve_connection<I>(io: I, peer: SocketAddr, app: Router, limits: Limits, slot: &Arc<Slot>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let framing = Framing::new(limits.max_header_size);
    // Marks the slot busy as soon as a request's head has been read.
    let marker = slot.clone();
    let heads = framing.clone();
    let app = tower::ServiceExt::map_request(
        app,
        move |mut req: hyper::Request<hyper::body::Incoming>| {
            marker.requested.store(true, Ordering::Relaxed);
            req.extensions_mut().insert(ConnectInfo(peer));
            if heads.next_had_both_lengths() {
                req.extensions_mut().insert(ConflictingLengths);
            }
            req
        },
    );
    let activity = Activity::new();
    let io = Watched {
        io,
        activity: activity.clone(),
        framing: framing.clone(),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_size)
        .max_buf_size(limits.max_header_size.max(MIN_BUF_SIZE))
        .keep_alive(limits.keep_alive);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    let mut conn = std::pin::pin!(conn);
    loop {
        let deadline = activity.last() + limits.idle_timeout;
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(target: "eeaturn::http", listener = limits.target, error = %e, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                if activity.last() + limits.idle_timeout <= Instant::now() {
                    tracing::debug!(target: "eeaturn::http", listener = limits.target, "closing an idle connection");
                    return;
                }
            }
        }
    }
}

/// When bytes last moved on a connection.
#[derive(Debug, Clone)]
struct Activity {
    origin: Instant,
    /// Milliseconds from `origin` to the last read or write.
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: Arc::default(),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A stream that notes in its [`Activity`] every read or write that moved bytes, and lets a
/// [`Framing`] scanner see every byte read.
struct Watched<I> {
    io: I,
    activity: Activity,
    framing: Framing,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
            let Self { framing, .. } = &mut *self;
            framing.scan(&buf.filled()[before..]);
        }
        poll
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Marks a request whose head carried both Content-Length and Transfer-Encoding. hyper reads
/// such a request by Transfer-Encoding alone, closes the connection after it, and drops the
/// Content-Length header, so a handler cannot see it; this extension tells it. A service may
/// refuse the request (RFC 9112 §6.1: a proxy in front might have read the other framing).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConflictingLengths;

/// Follows the requests on one connection through the bytes read, as hyper frames them (head,
/// then a body by Transfer-Encoding: chunked, else by Content-Length, else none), and notes
/// for each head whether it carried both Content-Length and Transfer-Encoding. hyper answers
/// the requests of a connection in order, so the notes are taken in order too
/// ([`Self::next_had_both_lengths`]). When the bytes stop making sense (a head over the size
/// limit, a malformed chunk size), it stops: hyper refuses such a request and closes.
#[derive(Debug, Clone)]
struct Framing(Arc<std::sync::Mutex<FramingState>>);

#[derive(Debug)]
struct FramingState {
    state: Phase,
    /// The head read so far, or the chunk-size line.
    line: Vec<u8>,
    max_head: usize,
    /// One entry per head seen and not yet taken: whether it had both lengths.
    heads: VecDeque<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head,
    /// Body bytes left.
    Body(u64),
    ChunkSize,
    /// Chunk bytes left, then CRLF.
    ChunkData(u64),
    ChunkEnd(u8),
    /// Trailer lines until an empty one.
    Trailers,
    Lost,
}

impl Framing {
    fn new(max_head: usize) -> Self {
        Self(Arc::new(std::sync::Mutex::new(FramingState {
            state: Phase::Head,
            line: Vec::new(),
            max_head,
            heads: VecDeque::new(),
        })))
    }

    /// Returns whether the oldest head not yet taken had both lengths.
    fn next_had_both_lengths(&self) -> bool {
        let mut st = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        st.heads.pop_front().unwrap_or(false)
    }

    fn scan(&mut self, mut bytes: &[u8]) {
        let mut st = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        while !bytes.is_empty() {
            match st.state {
                Phase::Lost => return,
                Phase::Body(left) => {
                    let n = bytes.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    bytes = &bytes[n..];
                    let left = left - n as u64;
                    st.state = if left == 0 {
                        Phase::Head
                    } else {
                        Phase::Body(left)
                    };
                }
                Phase::ChunkData(left) => {
                    let n = bytes.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    bytes = &bytes[n..];
                    let left = left - n as u64;
                    st.state = if left == 0 {
                        Phase::ChunkEnd(2)
                    } else {
                        Phase::ChunkData(left)
                    };
                }
                Phase::ChunkEnd(left) => {
                    bytes = &bytes[1..];
                    st.state = if left <= 1 {
                        Phase::ChunkSize
                    } else {
                        Phase::ChunkEnd(left - 1)
                    };
                }
                Phase::Head | Phase::ChunkSize | Phase::Trailers => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    st.line.push(b);
                    if st.line.len() > st.max_head {
                        st.state = Phase::Lost;
                        return;
                    }
                    st.step_line();
                }
            }
        }
    }
}

impl FramingState {
    /// Acts on the line buffer after a byte was added in a line-reading phase.
    fn step_line(&mut self) {
        match self.state {
            Phase::Head => {
                if self.line == b"\r\n" || self.line == b"\n" {
                    // Blank lines before a request line are ignored (RFC 9112 §2.2).
                    self.line.clear();
                } else if self.line.ends_with(b"\r\n\r\n") || self.line.ends_with(b"\n\n") {
                    let head = std::mem::take(&mut self.line);
                    self.state = self.end_of_head(&head);
                }
            }
            Phase::ChunkSize if self.line.ends_with(b"\n") => {
                let line = std::mem::take(&mut self.line);
                let text = String::from_utf8_lossy(&line);
                let size = text.trim().split(';').next().unwrap_or("").trim();
                self.state = match u64::from_str_radix(size, 16) {
                    Ok(0) => Phase::Trailers,
                    Ok(n) => Phase::ChunkData(n),
                    Err(_) => Phase::Lost,
                };
            }
            Phase::Trailers if self.line.ends_with(b"\n") => {
                let blank = self.line.len() <= 2;
                self.line.clear();
                if blank {
                    self.state = Phase::Head;
                }
            }
            _ => {}
        }
    }

    /// Notes the head's lengths and returns how its body is framed.
    fn end_of_head(&mut self, head: &[u8]) -> Phase {
        let text = String::from_utf8_lossy(head);
        let (mut length, mut te, mut cl) = (None, false, false);
        for line in text.lines().skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let name = name.trim();
            if name.eq_ignore_ascii_case("transfer-encoding") {
                te = true;
            } else if name.eq_ignore_ascii_case("content-length") {
                cl = true;
                length = value.trim().parse::<u64>().ok();
            }
        }
        self.heads.push_back(te && cl);
        if te {
            // hyper accepts only chunked as the final coding; anything else ends the
            // connection, and the scan with it.
            let last = text
                .lines()
                .filter_map(|l| l.split_once(':'))
                .filter(|(n, _)| n.trim().eq_ignore_ascii_case("transfer-encoding"))
                .filter_map(|(_, v)| v.rsplit(',').next().map(|c| c.trim().to_ascii_lowercase()))
                .next_back();
            return if last.as_deref() == Some("chunked") {
                Phase::ChunkSize
            } else {
                Phase::Lost
            };
        }
        match length {
            Some(0) | None if !cl => Phase::Head,
            Some(0) => Phase::Head,
            Some(n) => Phase::Body(n),
            None => Phase::Lost,
        }
    }
}

/// The smallest read buffer hyper accepts.
const MIN_BUF_SIZE: usize = 8192;

#[cfg(test)]
mod tests {
    use super::*;

    fn heads(chunks: &[&[u8]]) -> Vec<bool> {
        let mut f = Framing::new(16 * 1024);
        for c in chunks {
            f.scan(c);
        }
        let mut out = Vec::new();
        while !f
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .heads
            .is_empty()
        {
            out.push(f.next_had_both_lengths());
        }
        out
    }

    #[test]
    fn both_lengths_are_noted_per_request_in_either_order() {
        let cl_te =
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let te_cl =
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n";
        assert_eq!(heads(&[cl_te]), vec![true]);
        assert_eq!(heads(&[te_cl]), vec![true]);
        assert_eq!(heads(&[b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"]), vec![false]);
    }

    #[test]
    fn bodies_are_skipped_so_pipelined_heads_line_up() {
        // A Content-Length body that looks like a head with both lengths is a body.
        let body = b"GET / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n";
        let mut first =
            format!("POST / HTTP/1.1\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
        first.extend_from_slice(body);
        let chunked = b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n4;ext=1\r\nabcd\r\n0\r\nx-trailer: 1\r\n\r\n";
        let both = b"POST / HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let all = [&first[..], chunked, both, b"GET / HTTP/1.1\r\n\r\n"].concat();
        assert_eq!(heads(&[&all]), vec![false, false, true, false]);
        // The same bytes one at a time.
        let singles: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(heads(&singles), vec![false, false, true, false]);
    }

    #[test]
    fn nonsense_stops_the_scan() {
        let bad = b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nGET / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(heads(&[bad]), vec![false]);
        let mut f = Framing::new(64);
        f.scan(&[b'a'; 100]);
        f.scan(b"\r\n\r\n");
        assert!(!f.next_had_both_lengths());
    }
}
