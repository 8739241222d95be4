//! The middleware in front of every route: refuses keys in the query string, answers CORS
//! preflights, bounds the request's time, and adds the security (and CORS) headers to every
//! answer.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::issue::now_mono;
use super::{AppState, lock};
use crate::config::UNAUTHENTICATED_LABEL;
use crate::http::ConflictingLengths;

/// Runs before every route: refuses a request with both Content-Length and Transfer-Encoding,
/// and `/v1/` requests from a source with too many failed key attempts
/// ([`FailureLimiter`](super::limit::FailureLimiter)); refuses keys in the query string,
/// answers CORS preflights, bounds the request's time, and adds the security (and CORS)
/// headers to every answer.
pub(super) async fn front(State(s): State<AppState>, req: Request, next: Next) -> Response {
    // hyper drops the Content-Length of such a request; the stack marks it instead.
    let both = req.extensions().get::<ConflictingLengths>().is_some()
        || (req.headers().contains_key(header::TRANSFER_ENCODING)
            && req.headers().contains_key(header::CONTENT_LENGTH));
    if both {
        return conflicting_lengths();
    }
    let source = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .filter(|_| req.uri().path().starts_with("/v1/"));
    if let Some(ip) = source
        && let Err(secs) = lock(&s.failures).check(ip, now_mono())
    {
        return too_many_failures(&s, req.uri().path(), secs);
    }
    // A failed attempt is a key presented and refused (a guess), not a missing key or one
    // refused for standing in the URL, which was never looked at.
    let guess = req.headers().contains_key(header::AUTHORIZATION)
        && !req.uri().query().is_some_and(has_key_param);
    let resp = inner(&s, req, next).await;
    if let Some(ip) = source.filter(|_| guess && resp.status() == StatusCode::UNAUTHORIZED) {
        lock(&s.failures).fail(ip, now_mono());
    }
    resp
}

/// Answers a request with both Content-Length and Transfer-Encoding: the two framings could
/// be read differently by a proxy in front (request smuggling), so the request is refused and
/// the connection closed. See RFC 9112 §6.1.
fn conflicting_lengths() -> Response {
    tracing::info!(target: "eeaturn::api", error = "conflicting_lengths", "refused an API request with both Content-Length and Transfer-Encoding");
    let mut r = ApiError::new(
        StatusCode::BAD_REQUEST,
        "conflicting_lengths",
        "a request must not carry both Content-Length and Transfer-Encoding (RFC 9112 section 6.1)",
    )
    .into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    security_headers(r.headers_mut(), false);
    r
}

/// Answers a request from a source that has used up its failed key attempts.
fn too_many_failures(s: &AppState, path: &str, secs: u64) -> Response {
    if let Some(endpoint) = endpoint_of(path) {
        s.count(UNAUTHENTICATED_LABEL, endpoint, "too_many_failures");
    }
    tracing::info!(target: "eeaturn::api", error = "too_many_failures", retry_after = secs, "refused an API request from a source with too many failed key attempts");
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_failures",
        format!(
            "too many requests with a missing or unknown API key from this address; retry after {secs} s"
        ),
    );
    e.retry_after = Some(secs);
    let mut r = e.into_response();
    security_headers(r.headers_mut(), s.https);
    r
}

/// The middleware proper, once the request is admitted.
async fn inner(s: &AppState, req: Request, next: Next) -> Response {
    let cfg = s.settings.borrow().clone();
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| cfg.cors_allowed_origins.iter().any(|a| a == o))
        .map(str::to_owned);
    let mut resp = if req.uri().query().is_some_and(has_key_param) {
        if let Some(endpoint) = endpoint_of(req.uri().path()) {
            s.count(UNAUTHENTICATED_LABEL, endpoint, "api_key_in_query");
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
    security_headers(h, s.https);
    if let Some(o) = origin.and_then(|o| HeaderValue::from_str(&o).ok()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

/// Adds the security headers every answer carries.
fn security_headers(h: &mut HeaderMap, https: bool) {
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
    if https {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
}

/// Whether a raw query string has a parameter whose name looks like a credential. Names are
/// decoded as forms are (`+` is a space, `%XX` a byte, a malformed escape stays as it is).
fn has_key_param(query: &str) -> bool {
    form_urlencoded::parse(query.as_bytes())
        .any(|(name, _)| KEY_PARAMS.contains(&name.to_ascii_lowercase().as_str()))
}

fn endpoint_of(path: &str) -> Option<&'static str> {
    match path {
        "/v1/credentials" => Some("credentials"),
        "/v1/ice-servers" => Some("ice-servers"),
        "/v1/evidence/report" => Some("evidence-report"),
        "/v1/evidence/export" => Some("evidence-export"),
        "/v1/evidence/status" => Some("evidence-status"),
        _ => None,
    }
}

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
    fn parameter_names_are_decoded_leniently() {
        assert!(has_key_param("api+key=1&api%2Dkey=2"));
        assert!(has_key_param("%zz=1&to%6Ben=1"));
        assert!(!has_key_param("key%=1"));
        assert!(!has_key_param("%4=1&%=2&ke%y=3"));
        assert!(has_key_param("&&bearer"));
    }
}
