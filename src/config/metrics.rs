//! The `[metrics]` table: the Prometheus listener.

use std::net::SocketAddr;
use std::str::FromStr;

use serde::Deserialize;

use super::{Error, invalid};

/// `[metrics]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// `"IP:PORT"` to serve `GET /metrics` on (plain HTTP, loopback only); none by default.
    #[serde(default)]
    pub listen: Option<String>,
}

/// Validates `[metrics]` into the listening address, if any.
pub(super) fn validate(raw: &RawMetrics) -> Result<Option<SocketAddr>, Error> {
    let Some(s) = raw.listen.as_deref() else {
        return Ok(None);
    };
    let addr = SocketAddr::from_str(s.trim()).map_err(|_| {
        invalid(
            "metrics.listen",
            format!("{s:?} is not IP:PORT, e.g. \"127.0.0.1:9464\""),
        )
    })?;
    if !addr.ip().is_loopback() {
        return Err(invalid(
            "metrics.listen",
            format!(
                "{addr} is not a loopback address: metrics are served as plain HTTP, so bind \
                 them to 127.0.0.1 or [::1] and let a local Prometheus agent or a TLS proxy \
                 expose them"
            ),
        ));
    }
    Ok(Some(addr))
}
