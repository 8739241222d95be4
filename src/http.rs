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
    // Marks the slot busy as soon as a request's head has been read.
    let marker = slot.clone();
    let app = tower::ServiceExt::map_request(
        app,
        move |mut req: hyper::Request<hyper::body::Incoming>| {
            marker.requested.store(true, Ordering::Relaxed);
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        },
    );
    let activity = Activity::new();
    let io = Watched {
        io,
        activity: activity.clone(),
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

/// A stream that notes in its [`Activity`] every read or write that moved bytes.
struct Watched<I> {
    io: I,
    activity: Activity,
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

/// The smallest read buffer hyper accepts.
const MIN_BUF_SIZE: usize = 8192;
