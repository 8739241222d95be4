//! The `[metrics]` table: the Prometheus listener. Loopback by default; exposed beyond the
//! host only with TLS (the `[tls]` certificate) and a bearer token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Error, invalid};

/// The file name looked for in `$CREDENTIALS_DIRECTORY` when `token_file` is not set and the
/// listener is not on loopback.
pub(super) const TOKEN_CREDENTIAL: &str = "metrics-token";

/// `[metrics]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Where to serve `GET /metrics`: `"IP:PORT"` or `"http://IP:PORT"` (plain HTTP, loopback
    /// only), or `"https://IP:PORT"` (TLS with the `[tls]` certificate, any address). None by
    /// default.
    #[serde(default)]
    pub listen: Option<String>,
    /// File holding the bearer token scrapers send (`Authorization: Bearer TOKEN`), relative
    /// to the config file. Required when `listen` is not a loopback address; defaults then to
    /// `$CREDENTIALS_DIRECTORY/metrics-token` when systemd passes credentials. Optional on
    /// loopback (a token there is checked too).
    #[serde(default)]
    pub token_file: Option<String>,
}

/// The validated `[metrics]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// The listening address.
    pub listen: SocketAddr,
    /// TLS with the `[tls]` certificate.
    pub https: bool,
    /// The bearer token's file, when scrapes must present one.
    pub token_file: Option<PathBuf>,
}

/// Validates `[metrics]` into the listener's settings, if any. `has_tls` says whether a
/// `[tls]` table exists; relative paths resolve against `base`.
pub(super) fn validate(
    raw: &RawMetrics,
    base: &Path,
    has_tls: bool,
) -> Result<Option<MetricsConfig>, Error> {
    let Some(s) = raw.listen.as_deref().map(str::trim) else {
        if raw.token_file.is_some() {
            return Err(invalid(
                "metrics.token_file",
                "is set but metrics.listen is not: add listen = \"127.0.0.1:9464\" or remove token_file",
            ));
        }
        return Ok(None);
    };
    let (https, addr) = if let Some(a) = s.strip_prefix("https://") {
        (true, a)
    } else {
        (false, s.strip_prefix("http://").unwrap_or(s))
    };
    let listen: SocketAddr = addr.parse().map_err(|_| {
        invalid(
            "metrics.listen",
            format!(
                "{s:?} is not IP:PORT, e.g. \"127.0.0.1:9464\" or \"https://[2001:db8::1]:9464\" (no host names)"
            ),
        )
    })?;
    let loopback = listen.ip().is_loopback();
    if !https && !loopback {
        return Err(invalid(
            "metrics.listen",
            format!(
                "{listen} is not a loopback address, so metrics must be served over TLS: write \"https://{listen}\" (with a [tls] table and metrics.token_file), or bind 127.0.0.1 / [::1]"
            ),
        ));
    }
    if https && !has_tls {
        return Err(invalid(
            "metrics.listen",
            "https:// uses the certificate of the [tls] table; add [tls] with certificate and private_key",
        ));
    }
    let token_file = match raw.token_file.as_deref().map(str::trim) {
        Some("") => {
            return Err(invalid(
                "metrics.token_file",
                "is empty: name the file holding the bearer token (at least 16 bytes)",
            ));
        }
        Some(p) => Some(base.join(p)),
        None if loopback => None,
        None => Some(super::credential("metrics.token_file", TOKEN_CREDENTIAL)?),
    };
    Ok(Some(MetricsConfig {
        listen,
        https,
        token_file,
    }))
}
