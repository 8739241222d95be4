//! The credential API: an HTTPS listener (axum on the shell's one HTTP stack, `crate::http`)
//! that hands signaling servers short-lived TURN credentials. The contract is docs/api.md;
//! docs/api/openapi.yaml describes it for machines.
//!
//! The API shares the signing secrets with the relay (the shell passes every reload on), and
//! its own settings (keys, limits, URIs) are replaced on SIGHUP. Requests pass through
//! `front` (refuses keys in the query string, CORS, the request timeout, security headers)
//! and then a route of `router`; `issue` issues the credentials, `evidence` answers the
//! evidence endpoints (report, export, status), `keys` finds the caller's key, `limit`
//! rate-limits it, and `metrics` counts the answers for Prometheus.
//! This file holds the running [`Api`] and the state its routes share.

mod error;
mod evidence;
mod front;
mod issue;

#[cfg(feature = "fuzzing")]
pub use issue::fuzz_body;
mod keys;
mod limit;
mod metrics;
mod router;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::config::{ApiConfig, TlsConfig};
use crate::credentials::Secrets;
use crate::http::{self, SharedAcceptor};

pub use evidence::EvidenceSource;
pub use keys::{KEY_PREFIX, generate as generate_key, hash as hash_key};

/// Every route the API serves, as (method, path). The OpenAPI description must list exactly
/// these (a test checks).
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/credentials"),
    ("GET", "/v1/credentials"),
    ("POST", "/v1/ice-servers"),
    ("GET", "/v1/ice-servers"),
    ("GET", "/v1/evidence/report"),
    ("GET", "/v1/evidence/export"),
    ("GET", "/v1/evidence/status"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
];

/// The largest request body accepted.
pub const MAX_BODY: usize = 4096;
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may pass without a byte read or written: longer than the longest
/// `api.request_timeout` (5 min), so a stalled request still gets its 408.
const IDLE_TIMEOUT: Duration = Duration::from_secs(330);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait until one closes.
const MAX_CONNECTIONS: usize = 1024;
/// The largest request head (request line and headers).
const MAX_HEADER_SIZE: usize = 16 * 1024;

/// What every route shares: the settings and secrets in force, readiness, the rate limiter and
/// the counters.
#[derive(Clone)]
struct AppState {
    settings: watch::Receiver<Arc<ApiConfig>>,
    secrets: watch::Receiver<Arc<Secrets>>,
    ready: Arc<AtomicBool>,
    limiter: Arc<Mutex<limit::RateLimiter>>,
    /// Failed key attempts per source.
    failures: Arc<Mutex<limit::FailureLimiter>>,
    counters: metrics::Counters,
    https: bool,
    /// The node's evidence, when `[evidence]` is on.
    evidence: Option<Arc<evidence::Evidence>>,
}

impl AppState {
    fn count(&self, key: &str, endpoint: &'static str, result: &'static str) {
        *lock(&self.counters)
            .entry((key.to_owned(), endpoint, result))
            .or_default() += 1;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running API, owned by the shell.
pub struct Api {
    /// The bound address (with the OS-chosen port where the config said 0).
    pub local_addr: SocketAddr,
    listen: SocketAddr,
    settings: watch::Sender<Arc<ApiConfig>>,
    secrets: watch::Sender<Arc<Secrets>>,
    ready: Arc<AtomicBool>,
    limiter: Arc<Mutex<limit::RateLimiter>>,
    counters: metrics::Counters,
    tls: Option<SharedAcceptor>,
    task: JoinHandle<()>,
}

impl Api {
    /// Binds the listener and serves. `tls` is the `[tls]` table (needed for https://);
    /// `evidence` the node's evidence for the `/v1/evidence/` endpoints.
    ///
    /// # Errors
    ///
    /// Fails when the certificate (or `api.client_ca`) cannot be loaded or the address cannot
    /// be bound.
    pub async fn start(
        config: &ApiConfig,
        tls: Option<&TlsConfig>,
        secrets: Secrets,
        evidence: Option<EvidenceSource>,
    ) -> anyhow::Result<Self> {
        let acceptor = if config.https {
            let t = tls.context("config key `api.listen`: https:// needs the [tls] table")?;
            let server = crate::tls::api_server_config(t, config.client_ca.as_deref())
                .context("loading the API's TLS certificate")?;
            Some(Arc::new(RwLock::new(TlsAcceptor::from(server))))
        } else {
            None
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding the API listener api.listen = {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let (settings_tx, settings_rx) = watch::channel(Arc::new(config.clone()));
        let (secrets_tx, secrets_rx) = watch::channel(Arc::new(secrets));
        let state = AppState {
            settings: settings_rx,
            secrets: secrets_rx,
            ready: Arc::new(AtomicBool::new(false)),
            limiter: Arc::default(),
            failures: Arc::default(),
            counters: Arc::default(),
            https: config.https,
            evidence: evidence.map(|e| Arc::new(evidence::Evidence::new(e))),
        };
        let api = Self {
            local_addr,
            listen: config.listen,
            settings: settings_tx,
            secrets: secrets_tx,
            ready: state.ready.clone(),
            limiter: state.limiter.clone(),
            counters: state.counters.clone(),
            tls: acceptor.clone(),
            task: tokio::spawn(http::serve(
                listener,
                acceptor,
                router::router(state),
                LIMITS,
            )),
        };
        Ok(api)
    }

    /// Says whether the relay serves (`/readyz`).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Signs new credentials with the first of `secrets` from now on.
    pub fn replace_secrets(&self, secrets: Secrets) {
        self.secrets.send_replace(Arc::new(secrets));
    }

    /// Puts new settings (keys, TTLs, limits, URIs, CORS) in force and reloads the certificate.
    /// The listening address and http/https need a restart.
    ///
    /// # Errors
    ///
    /// Fails (keeping everything as it was) when the certificate cannot be loaded.
    pub fn reload(&self, config: &ApiConfig, tls: Option<&TlsConfig>) -> anyhow::Result<()> {
        if let (Some(shared), Some(t)) = (&self.tls, tls) {
            let server = crate::tls::api_server_config(t, config.client_ca.as_deref())?;
            *shared.write().unwrap_or_else(PoisonError::into_inner) = TlsAcceptor::from(server);
        }
        if config.listen != self.listen || config.https != self.tls.is_some() {
            tracing::warn!(target: "eeaturn::api", "api.listen changed in the config file; it takes effect at the next restart");
        }
        let mut new = config.clone();
        new.listen = self.listen;
        new.https = self.tls.is_some();
        lock(&self.limiter).retain(|name| new.keys.iter().any(|k| k.name == name));
        self.settings.send_replace(Arc::new(new));
        Ok(())
    }

    /// A copy of the API's request counters, for the metrics.
    pub fn counters(&self) -> crate::metrics::ApiCounters {
        lock(&self.counters).clone()
    }

    /// Stops serving: closes the listener and every open connection.
    pub fn stop(self) {
        self.task.abort();
    }
}

/// The limits of the API's listener.
const LIMITS: http::Limits = http::Limits {
    max_connections: MAX_CONNECTIONS,
    header_timeout: HEADER_TIMEOUT,
    idle_timeout: IDLE_TIMEOUT,
    handshake_timeout: HANDSHAKE_TIMEOUT,
    max_header_size: MAX_HEADER_SIZE,
    keep_alive: true,
    when_full: http::WhenFull::Wait,
    target: "api",
};
