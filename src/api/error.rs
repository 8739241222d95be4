//! The API's error answer: a status, a stable code and a message that never holds a secret.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error answer: a status, a stable code and a message that never holds a secret.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
    pub(super) retry_after: Option<u64>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    pub(super) fn invalid(message: impl Into<String>) -> Self {
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
