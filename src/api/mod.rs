//! The credential API: an HTTPS listener (axum on hyper) that hands signaling servers
//! short-lived TURN credentials. The contract is docs/api.md; docs/api/openapi.yaml describes it
//! for machines.
//!
//! The API shares the signing secrets with the relay (the shell passes every reload on), and
//! its own settings (keys, limits, URIs) are replaced on SIGHUP. Requests pass through
//! [`front`] (refuses keys in the query string, CORS, the request timeout, security headers)
//! and then a route.

mod keys;
mod limit;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::config::{ApiConfig, ApiKey, Scope, TlsConfig};
use crate::credentials::Secrets;

pub use keys::{KEY_PREFIX, generate as generate_key, hash as hash_key, hex};

/// Every route the API serves, as (method, path). The OpenAPI description must list exactly
/// these (a test checks).
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/credentials"),
    ("GET", "/v1/credentials"),
    ("POST", "/v1/ice-servers"),
    ("GET", "/v1/ice-servers"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
];

/// The largest request body accepted.
pub const MAX_BODY: usize = 4096;
/// The most of an oversized body read (and thrown away) before answering 413.
const DRAIN_LIMIT: usize = 128 * 1024;
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections beyond which new ones are closed at once.
const MAX_CONNECTIONS: usize = 1024;
/// Query parameters that look like a credential: a request carrying one is refused.
const KEY_PARAMS: &[&str] = &[
    "key",
    "api_key",
    "apikey",
    "api-key",
    "token",
    "access_token",
    "auth",
    "authorization",
    "bearer",
];

/// Requests per (key name, endpoint, result).
type Counters = Arc<Mutex<BTreeMap<(String, &'static str, &'static str), u64>>>;
type SharedAcceptor = Arc<RwLock<TlsAcceptor>>;

#[derive(Clone)]
struct AppState {
    settings: watch::Receiver<Arc<ApiConfig>>,
    secrets: watch::Receiver<Arc<Secrets>>,
    ready: Arc<AtomicBool>,
    limiter: Arc<Mutex<limit::RateLimiter>>,
    counters: Counters,
    https: bool,
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
    counters: Counters,
    tls: Option<SharedAcceptor>,
    task: JoinHandle<()>,
}

impl Api {
    /// Binds the listener and serves. `tls` is the `[tls]` table (needed for https://).
    ///
    /// # Errors
    ///
    /// Fails when the certificate (or `api.client_ca`) cannot be loaded or the address cannot
    /// be bound.
    pub async fn start(
        config: &ApiConfig,
        tls: Option<&TlsConfig>,
        secrets: Secrets,
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
            counters: Arc::default(),
            https: config.https,
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
            task: tokio::spawn(accept_loop(listener, acceptor, router(state))),
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

    /// Appends the API's counters to a Prometheus exposition.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let counters = lock(&self.counters);
        let _ = writeln!(
            out,
            "# HELP eeaturn_api_requests_total Requests to the credential API's /v1/ endpoints, by key name (none: no valid key), endpoint and result (issued or the error code)."
        );
        let _ = writeln!(out, "# TYPE eeaturn_api_requests_total counter");
        for ((key, endpoint, result), n) in counters.iter() {
            let _ = writeln!(
                out,
                "eeaturn_api_requests_total{{key=\"{key}\",endpoint=\"{endpoint}\",result=\"{result}\"}} {n}"
            );
        }
    }

    /// Stops serving: closes the listener and every open connection.
    pub fn stop(self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<SharedAcceptor>, app: Router) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::debug!(target: "eeaturn::api", error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if conns.len() >= MAX_CONNECTIONS {
            tracing::debug!(target: "eeaturn::api", "too many open API connections; closing a new one");
            continue;
        }
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let acceptor = tls
            .as_ref()
            .map(|t| t.read().unwrap_or_else(PoisonError::into_inner).clone());
        conns.spawn(async move {
            match acceptor {
                Some(a) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, a.accept(tcp)).await {
                    Ok(Ok(stream)) => serve_connection(stream, app).await,
                    Ok(Err(e)) => {
                        tracing::debug!(target: "eeaturn::api", error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        tracing::debug!(target: "eeaturn::api", "TLS handshake timed out");
                    }
                },
                None => serve_connection(tcp, app).await,
            }
        });
    }
}

async fn serve_connection<I>(io: I, app: Router)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(16 * 1024);
    if let Err(e) = builder
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await
    {
        tracing::debug!(target: "eeaturn::api", error = %e, "API connection ended with an error");
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/credentials", get(credentials).post(credentials))
        .route("/v1/ice-servers", get(ice_servers).post(ice_servers))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), front))
        .with_state(state)
}

/// An error answer: a status, a stable code and a message that never holds a secret.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        let mut resp = (self.status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            let v = if self.code == "invalid_api_key" {
                "Bearer realm=\"eeaturn\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"eeaturn\""
            };
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
        }
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // What is left of an oversized body is not read: the connection cannot carry
            // another request.
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// Which shape a credential is returned in.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// TURN REST API draft: username, password, ttl, uris.
    Rest,
    /// `RTCIceServer`: `{"iceServers":[{urls, username, credential}], "ttl"}`.
    IceServers,
}

impl Shape {
    fn endpoint(self) -> &'static str {
        match self {
            Self::Rest => "credentials",
            Self::IceServers => "ice-servers",
        }
    }
}

fn endpoint_of(path: &str) -> Option<&'static str> {
    match path {
        "/v1/credentials" => Some("credentials"),
        "/v1/ice-servers" => Some("ice-servers"),
        _ => None,
    }
}

/// Runs before every route: refuses keys in the query string, answers CORS preflights,
/// bounds the request's time, and adds the security (and CORS) headers to every answer.
async fn front(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let cfg = s.settings.borrow().clone();
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| cfg.cors_allowed_origins.iter().any(|a| a == o))
        .map(str::to_owned);
    let mut resp = if req.uri().query().is_some_and(has_key_param) {
        if let Some(endpoint) = endpoint_of(req.uri().path()) {
            s.count("none", endpoint, "api_key_in_query");
        }
        tracing::info!(target: "eeaturn::api", error = "api_key_in_query", "refused an API request carrying a key in its URL (the URL is not logged)");
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "api_key_in_query",
            "API keys go in the Authorization: Bearer header, never in the URL; this request was refused and the key should be considered leaked",
        )
        .into_response()
    } else if req.method() == Method::OPTIONS
        && origin.is_some()
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        r
    } else {
        match tokio::time::timeout(cfg.request_timeout, next.run(req)).await {
            Ok(r) => r,
            Err(_) => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request took longer than {} s",
                    cfg.request_timeout.as_secs()
                ),
            )
            .into_response(),
        }
    };
    let h = resp.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    if s.https {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    if let Some(o) = origin.and_then(|o| HeaderValue::from_str(&o).ok()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

/// Whether a raw query string has a parameter whose name looks like a credential.
fn has_key_param(query: &str) -> bool {
    query.split('&').any(|pair| {
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        let name = percent_decode(name).to_ascii_lowercase();
        KEY_PARAMS.contains(&name.as_str())
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = (b[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], escaped) {
            (_, Some(v)) => {
                out.push(v);
                i += 2;
            }
            (b'+', None) => out.push(b' '),
            (c, None) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn credentials(State(s): State<AppState>, req: Request) -> Response {
    issue(&s, req, Shape::Rest).await
}

async fn ice_servers(State(s): State<AppState>, req: Request) -> Response {
    issue(&s, req, Shape::IceServers).await
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.ready.load(Ordering::Relaxed) {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "not_ready"})),
        )
            .into_response()
    }
}

async fn not_found() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see docs/api.md",
    )
    .into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; see docs/api.md",
    )
    .into_response()
}

/// The request's parameters, from the query (GET) or the JSON body (POST).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueRequest {
    #[serde(default, deserialize_with = "present")]
    user: Option<String>,
    #[serde(default, deserialize_with = "present")]
    ttl: Option<u64>,
}

/// A field that may be absent but, when present, must hold a value (`null` is refused, as the
/// OpenAPI description says).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

async fn issue(s: &AppState, req: Request, shape: Shape) -> Response {
    let endpoint = shape.endpoint();
    let cfg = s.settings.borrow().clone();
    let key = match authenticate(&cfg.keys, req.headers()) {
        Ok(k) => k.clone(),
        Err(e) => {
            s.count("none", endpoint, e.code);
            tracing::info!(target: "eeaturn::api", endpoint, error = e.code, "refused an API request");
            return e.into_response();
        }
    };
    let result = async {
        if key.scope != Scope::Credentials {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!(
                    "key {:?} has scope {:?}; this endpoint needs a key of scope \"credentials\"",
                    key.name,
                    key.scope.as_str()
                ),
            ));
        }
        let took = lock(&s.limiter).take(&key.name, now_mono(), cfg.rate_limit, cfg.rate_burst);
        if let Err(secs) = took {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "key {:?} exceeded its rate limit of {} requests per minute; retry after {secs} s",
                    key.name, cfg.rate_limit
                ),
            );
            e.retry_after = Some(secs);
            return Err(e);
        }
        let params = read_params(req).await?;
        let ttl = params.ttl.unwrap_or(cfg.default_ttl.as_secs());
        let max = cfg.max_ttl.as_secs();
        if ttl == 0 || ttl > max {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_ttl",
                format!("ttl must be between 1 and {max} seconds"),
            ));
        }
        let label = match &params.user {
            Some(u) => {
                if !valid_user(u) {
                    return Err(ApiError::invalid(
                        "user must be 1 to 128 visible ASCII characters (no spaces) other than ':'",
                    ));
                }
                format!("{}/{u}", key.name)
            }
            None => key.name.clone(),
        };
        let secrets = s.secrets.borrow().clone();
        let cred = secrets
            .issue(&label, Duration::from_secs(ttl), cfg.max_ttl, now_wall())
            .map_err(|e| {
                tracing::error!(target: "eeaturn::api", error = %e, "issuing a credential failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the credential could not be issued",
                )
            })?;
        Ok((label, cred))
    }
    .await;
    match result {
        Ok((label, cred)) => {
            s.count(&key.name, endpoint, "issued");
            let expires = now_wall()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                + cred.ttl;
            tracing::info!(target: "eeaturn::api", key = %key.name, user = %label, ttl = cred.ttl, expires, endpoint, "issued a TURN credential");
            let body = match shape {
                Shape::Rest => serde_json::json!({
                    "username": cred.username,
                    "password": cred.password,
                    "ttl": cred.ttl,
                    "uris": cfg.uris,
                }),
                Shape::IceServers => serde_json::json!({
                    "iceServers": [{
                        "urls": cfg.uris,
                        "username": cred.username,
                        "credential": cred.password,
                    }],
                    "ttl": cred.ttl,
                }),
            };
            axum::Json(body).into_response()
        }
        Err(e) => {
            s.count(&key.name, endpoint, e.code);
            tracing::info!(target: "eeaturn::api", key = %key.name, endpoint, error = e.code, "refused an API request");
            e.into_response()
        }
    }
}

/// The configured key presented in `Authorization: Bearer <key>`.
fn authenticate<'a>(keys: &'a [ApiKey], headers: &HeaderMap) -> Result<&'a ApiKey, ApiError> {
    let missing = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
            "send an API key in the header Authorization: Bearer <key>",
        )
    };
    let value = headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(missing());
    }
    keys::find(keys, token.trim()).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "the API key is not known (it may have been removed from the configuration)",
        )
    })
}

async fn read_params(req: Request) -> Result<IssueRequest, ApiError> {
    let (parts, body) = req.into_parts();
    let pairs: Vec<(String, String)> = if parts.uri.query().is_some_and(|q| !q.is_empty()) {
        Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|_| ApiError::invalid("the query string is malformed"))?
            .0
    } else {
        Vec::new()
    };
    if parts.method == Method::POST {
        if !pairs.is_empty() {
            return Err(ApiError::invalid(
                "POST takes its parameters in the JSON body, not in the query string",
            ));
        }
        return read_body(&parts.headers, body).await;
    }
    let mut out = IssueRequest::default();
    for (name, value) in pairs {
        match name.as_str() {
            "user" if out.user.is_none() => out.user = Some(value),
            "ttl" if out.ttl.is_none() => {
                let bad = || ApiError::invalid("ttl must be a whole number of seconds");
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                out.ttl = Some(value.parse().map_err(|_| bad())?);
            }
            "user" | "ttl" => {
                return Err(ApiError::invalid(format!("{name} is given twice")));
            }
            _ => {
                return Err(ApiError::invalid(
                    "unknown query parameter; only user and ttl are accepted",
                ));
            }
        }
    }
    Ok(out)
}

async fn read_body(headers: &HeaderMap, body: Body) -> Result<IssueRequest, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is over {MAX_BODY} bytes"),
        )
    };
    // A body over the limit is still read (up to DRAIN_LIMIT, and within the request
    // timeout) before the 413 goes out: a client that writes its whole body before reading
    // would otherwise lose the answer to a reset connection. Anything larger closes it.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, DRAIN_LIMIT)
        .await
        .map_err(|_| too_large())?;
    if bytes.len() > MAX_BODY {
        return Err(too_large());
    }
    if bytes.is_empty() {
        return Ok(IssueRequest::default());
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON with Content-Type: application/json",
        ));
    }
    // The message says what is wrong without quoting the body (which could hold a secret).
    let shape = || {
        ApiError::invalid(
            "the body must be a JSON object {\"user\": string, \"ttl\": integer}; both are optional and no other field is accepted",
        )
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| ApiError::invalid("the body is not valid JSON"))?;
    if !value.is_object() {
        return Err(shape());
    }
    serde_json::from_value::<IssueRequest>(value).map_err(|_| shape())
}

/// A user label: 1 to 128 visible ASCII characters other than ':'.
fn valid_user(u: &str) -> bool {
    u.len() <= 128 && crate::credentials::valid_user_id(u)
}

#[expect(
    clippy::disallowed_methods,
    reason = "the API is shell code, where clocks are read"
)]
fn now_mono() -> Instant {
    Instant::now()
}

#[expect(
    clippy::disallowed_methods,
    reason = "the API is shell code, where clocks are read"
)]
fn now_wall() -> SystemTime {
    SystemTime::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_like_query_parameters_are_recognised() {
        assert!(has_key_param("api_key=x"));
        assert!(has_key_param("user=a&TOKEN=x"));
        assert!(has_key_param("user=a&api%5Fkey=x"));
        assert!(has_key_param("key"));
        assert!(!has_key_param("user=a&ttl=60"));
        assert!(!has_key_param("monkey=1"));
        assert!(!has_key_param(""));
    }

    #[test]
    fn user_labels() {
        assert!(valid_user("u-123"));
        assert!(valid_user(&"a".repeat(128)));
        assert!(!valid_user(&"a".repeat(129)));
        assert!(!valid_user(""));
        assert!(!valid_user("a:b"));
        assert!(!valid_user("a b"));
        assert!(!valid_user("ä"));
    }

    #[test]
    fn percent_decoding_is_lenient() {
        assert_eq!(percent_decode("a%5Fb+c"), "a_b c");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
