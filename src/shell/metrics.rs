//! The Prometheus listener: `GET /metrics` over plain HTTP/1.1 (on loopback unless the config
//! says otherwise), served by the shell's one HTTP stack (`crate::http`).
//!
//! Deliberately small: one request per connection, a 4 KiB request head, at most 16
//! connections at once, and short header-read and idle timeouts so that silent connections
//! cannot keep a scrape out for long. Any other path gets 404 and any other method 405. The
//! text comes from a watch channel the coordinator refreshes.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::any;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::http;

/// Binds the listener and serves until the task is aborted; returns the bound address.
///
/// # Errors
///
/// Fails when the address cannot be bound.
pub(super) async fn serve(
    addr: SocketAddr,
    text: watch::Receiver<String>,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding metrics.listen {addr}"))?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(http::serve(listener, None, router(text), LIMITS));
    Ok((local, task))
}

/// `/metrics` and the answers to everything else, all with the same headers.
fn router(text: watch::Receiver<String>) -> Router {
    Router::new()
        .route("/metrics", any(scrape))
        .fallback(other)
        .layer(axum::middleware::map_response(headers))
        .with_state(text)
}

async fn scrape(State(text): State<watch::Receiver<String>>, req: Request) -> Response {
    if req.method() == Method::GET {
        let body = text.borrow().clone();
        (StatusCode::OK, body).into_response()
    } else {
        StatusCode::METHOD_NOT_ALLOWED.into_response()
    }
}

async fn other(req: Request) -> Response {
    if req.method() == Method::GET {
        StatusCode::NOT_FOUND.into_response()
    } else {
        StatusCode::METHOD_NOT_ALLOWED.into_response()
    }
}

async fn headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

/// The limits of the metrics listener. A scraper on the same host sends its request at once
/// and reads the answer at once: anything slower is not one.
const LIMITS: http::Limits = http::Limits {
    max_connections: 16,
    header_timeout: Duration::from_secs(2),
    idle_timeout: Duration::from_secs(5),
    handshake_timeout: Duration::from_secs(5),
    max_header_size: 4096,
    keep_alive: false,
    target: "metrics",
};
