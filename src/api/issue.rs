//! Issuing a credential: `/v1/credentials` (TURN REST shape) and `/v1/ice-servers`
//! (`RTCIceServer` shape), by GET with a query or POST with a JSON body.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::config::{ApiConfig, ApiKey, Scope, UNAUTHENTICATED_LABEL};

use super::error::ApiError;
use super::{AppState, MAX_BODY, keys, lock};

pub(super) async fn credentials(State(s): State<AppState>, req: Request) -> Response {
    issue(&s, req, Shape::Rest).await
}

pub(super) async fn ice_servers(State(s): State<AppState>, req: Request) -> Response {
    issue(&s, req, Shape::IceServers).await
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
    let key = match authenticated(s, &cfg.keys, req.headers(), endpoint) {
        Ok(k) => k,
        Err(refused) => return refused.into_response(),
    };
    let result = async {
        admit(s, &cfg, &key, Scope::Credentials)?;
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
            tracing::info!(target: "eeaturn::api", key = %key.name, user = %crate::pii::Escaped(&label), ttl = cred.ttl, expires, endpoint, "issued a TURN credential");
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
/// Authenticates a request; a refusal is counted and logged here, and returned to be sent.
pub(super) fn authenticated(
    s: &AppState,
    keys: &[ApiKey],
    headers: &HeaderMap,
    endpoint: &'static str,
) -> Result<ApiKey, ApiError> {
    authenticate(keys, headers).cloned().inspect_err(|e| {
        s.count(UNAUTHENTICATED_LABEL, endpoint, e.code);
        tracing::info!(target: "eeaturn::api", endpoint, error = e.code, "refused an API request");
    })
}

/// Admits an authenticated key to an endpoint of `scope`: its scope must be that one and it
/// must be within its rate limit.
pub(super) fn admit(
    s: &AppState,
    cfg: &ApiConfig,
    key: &ApiKey,
    scope: Scope,
) -> Result<(), ApiError> {
    if key.scope != scope {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!(
                "key {:?} has scope {:?}; this endpoint needs a key of scope {:?}",
                key.name,
                key.scope.as_str(),
                scope.as_str()
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
    Ok(())
}

pub(super) fn authenticate<'a>(
    keys: &'a [ApiKey],
    headers: &HeaderMap,
) -> Result<&'a ApiKey, ApiError> {
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
    parse_body(&bytes)
}

/// Parses a JSON request body (already within the size limit) into the request's parameters:
/// an object with at most `user` (a string) and `ttl` (a whole number), nothing else.
fn parse_body(bytes: &[u8]) -> Result<IssueRequest, ApiError> {
    // The message says what is wrong without quoting the body (which could hold a secret).
    let shape = || ApiError::invalid(BODY_SHAPE);
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|_| ApiError::invalid(BODY_NOT_JSON))?;
    if !value.is_object() {
        return Err(shape());
    }
    serde_json::from_value::<IssueRequest>(value).map_err(|_| shape())
}

/// Fuzz entry point for the API request body: [`parse_body`] must not panic; what it accepts
/// is a JSON object with only `user` (a string) and `ttl` (an unsigned integer), with the same
/// values; an error is a 400 whose message does not quote the body.
#[cfg(feature = "fuzzing")]
pub fn fuzz_body(data: &[u8]) {
    match parse_body(data) {
        Ok(req) => {
            let v: serde_json::Value = serde_json::from_slice(data).expect("accepted JSON parses");
            let obj = v.as_object().expect("accepted JSON is an object");
            assert!(obj.keys().all(|k| k == "user" || k == "ttl"), "{obj:?}");
            assert_eq!(
                req.user.as_deref(),
                obj.get("user").and_then(|u| u.as_str())
            );
            assert_eq!(req.ttl, obj.get("ttl").and_then(serde_json::Value::as_u64));
            if let Some(u) = &req.user {
                // The label check after parsing decides; it must not panic either.
                let _ = valid_user(u);
            }
        }
        Err(e) => {
            // One of the fixed messages: nothing of the body is quoted. (Checking that the
            // message does not contain the body was wrong: a body may be a piece of it.)
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(
                e.message == BODY_SHAPE || e.message == BODY_NOT_JSON,
                "{}",
                e.message
            );
        }
    }
}

/// A user label: 1 to 128 visible ASCII characters other than ':'.
fn valid_user(u: &str) -> bool {
    u.len() <= 128 && crate::credentials::valid_user_id(u)
}

#[expect(
    clippy::disallowed_methods,
    reason = "the API is shell code, where clocks are read"
)]
pub(super) fn now_mono() -> Instant {
    Instant::now()
}

#[expect(
    clippy::disallowed_methods,
    reason = "the API is shell code, where clocks are read"
)]
fn now_wall() -> SystemTime {
    SystemTime::now()
}

/// The answer to a body that is JSON but not the request's shape.
const BODY_SHAPE: &str = "the body must be a JSON object {\"user\": string, \"ttl\": integer}; both are optional and no other field is accepted";
/// The answer to a body that is not JSON.
const BODY_NOT_JSON: &str = "the body is not valid JSON";

/// The most of an oversized body read (and thrown away) before answering 413.
const DRAIN_LIMIT: usize = 128 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

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
}
