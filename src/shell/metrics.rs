//! The Prometheus listener: `GET /metrics`, served by the shell's one HTTP stack
//! (`crate::http`) with the text the exporter's handle renders at scrape time. Plain HTTP on
//! loopback by default; with `https://` it uses the `[tls]` certificate (the acceptor the
//! relay's `tls://` listeners reload), and with `metrics.token_file` every scrape must send
//! `Authorization: Bearer TOKEN` (compared in constant time).
//!
//! Deliberately small: one request per connection, a 4 KiB request head, short header-read and
//! idle timeouts, and when all slots are taken the oldest connection that has not sent a
//! request yet is closed for the new one, so a flood of idle connections cannot keep a
//! scraper out. Any other path gets 404 and any other method 405. This module also reads the
//! process metrics (`/proc`, `getrusage`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::any;
use metrics_exporter_prometheus::PrometheusHandle;
use ring::digest;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::MetricsConfig;
use crate::http::{self, SharedAcceptor};
use crate::metrics::ProcessMetrics;

/// Binds the listener and serves until the task is aborted; returns the bound address.
///
/// # Errors
///
/// Fails when the token file cannot be read or is too short, when `https://` is asked for
/// without an acceptor, or when the address cannot be bound.
pub(super) async fn serve(
    cfg: &MetricsConfig,
    tls: Option<SharedAcceptor>,
    handle: PrometheusHandle,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let token = cfg.token_file.as_deref().map(read_token).transpose()?;
    let tls = if cfg.https {
        Some(tls.context("metrics.listen: https:// needs the [tls] table's certificate")?)
    } else {
        None
    };
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding metrics.listen {}", cfg.listen))?;
    let local = listener.local_addr()?;
    let app = router(Scrape {
        handle,
        token: token.map(Arc::new),
    });
    let task = tokio::spawn(http::serve(listener, tls, app, LIMITS));
    Ok((local, task))
}

/// Reads the process's CPU time, resident memory and file descriptors; `None` where `/proc`
/// cannot be read (not Linux, or hidden).
pub(super) fn process() -> Option<ProcessMetrics> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::new(
            u64::try_from(t.tv_sec()).unwrap_or(0),
            u32::try_from(t.tv_usec()).unwrap_or(0) * 1000,
        )
    };
    let cpu = tv(usage.user_time()) + tv(usage.system_time());
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let (max_fds, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).ok()?;
    Some(ProcessMetrics {
        cpu,
        rss_bytes: rss_kib * 1024,
        open_fds,
        max_fds,
    })
}

/// What a scrape needs: the renderer and the token's hash, when one is required.
#[derive(Clone)]
struct Scrape {
    handle: PrometheusHandle,
    token: Option<Arc<[u8; 32]>>,
}

/// `/metrics` and the answers to everything else, all with the same headers.
fn router(scrape: Scrape) -> Router {
    Router::new()
        .route("/metrics", any(metrics))
        .fallback(other)
        .layer(axum::middleware::map_response(headers))
        .with_state(scrape)
}

async fn metrics(State(s): State<Scrape>, req: Request) -> Response {
    if req.method() != Method::GET {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    if let Some(expected) = &s.token {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !presented.is_some_and(|p| same_token(p, expected)) {
            let mut resp = StatusCode::UNAUTHORIZED.into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"eeaturn metrics\""),
            );
            return resp;
        }
    }
    (StatusCode::OK, s.handle.render()).into_response()
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

/// Reads the bearer token (surrounding whitespace trimmed) and returns its SHA-256.
fn read_token(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read metrics.token_file {}: write a random token of at least 16 bytes into it (e.g. `openssl rand -hex 32`)",
            path.display()
        )
    })?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_LEN {
        anyhow::bail!(
            "metrics.token_file {}: the token is shorter than {MIN_TOKEN_LEN} bytes; use a random one (e.g. `openssl rand -hex 32`)",
            path.display()
        );
    }
    Ok(sha256(token))
}

/// Compares the presented token with the expected hash without an early exit: both sides are
/// hashed, so neither the comparison's time nor the lengths tell anything about the token.
fn same_token(presented: &str, expected: &[u8; 32]) -> bool {
    let h = sha256(presented);
    h.iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

fn sha256(s: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, s.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The shortest token accepted.
const MIN_TOKEN_LEN: usize = 16;

/// The limits of the metrics listener. A scraper sends its request at once and reads the
/// answer at once: anything slower is not one. When every slot is taken, the oldest
/// connection without a request gives way to the new one.
const LIMITS: http::Limits = http::Limits {
    max_connections: 64,
    header_timeout: Duration::from_secs(2),
    idle_timeout: Duration::from_secs(5),
    handshake_timeout: Duration::from_secs(5),
    max_header_size: 4096,
    keep_alive: false,
    when_full: http::WhenFull::EvictIdle,
    target: "metrics",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_content() {
        let expected = sha256("0123456789abcdef-token");
        assert!(same_token("0123456789abcdef-token", &expected));
        assert!(!same_token("0123456789abcdef-tokeN", &expected));
        assert!(!same_token("", &expected));
    }

    #[test]
    fn short_or_missing_token_files_are_refused_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "abc\n").unwrap();
        let e = read_token(&short).unwrap_err().to_string();
        assert!(e.contains("metrics.token_file"), "{e}");
        let e = read_token(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics.token_file"), "{e}");
        let good = dir.path().join("good");
        std::fs::write(&good, "  0123456789abcdef0123\n").unwrap();
        assert_eq!(read_token(&good).unwrap(), sha256("0123456789abcdef0123"));
    }

    #[test]
    fn the_process_reads_itself() {
        let p = process().expect("/proc is readable on Linux");
        assert!(p.open_fds > 0 && p.open_fds <= p.max_fds, "{p:?}");
        assert!(p.rss_bytes > 0, "{p:?}");
    }
}
