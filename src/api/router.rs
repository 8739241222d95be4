//! The routes of the API and the answers that need no credential handling.

use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::error::ApiError;
use super::evidence;
use super::issue::{credentials, ice_servers};
use super::{AppState, front};

/// The API's routes behind [`front::front`].
pub(super) fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/credentials", get(credentials).post(credentials))
        .route("/v1/ice-servers", get(ice_servers).post(ice_servers))
        .route("/v1/evidence/report", get(evidence::report))
        .route("/v1/evidence/export", get(evidence::export))
        .route("/v1/evidence/status", get(evidence::status))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            front::front,
        ))
        .with_state(state)
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
