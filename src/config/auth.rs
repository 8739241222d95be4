//! The `[auth]` table: the REST secrets and the lifetimes of nonces and credentials.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{Error, duration, invalid};

/// The file name looked for in `$CREDENTIALS_DIRECTORY` when `secret_file` is not set.
pub(super) const SECRET_CREDENTIAL: &str = "hmac-secret";

/// `[auth]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// File with the REST secrets, one per line; relative to the config file. Default:
    /// `$CREDENTIALS_DIRECTORY/hmac-secret` when systemd passes credentials (a credential is
    /// copied at start, so rotating it takes a restart rather than a reload).
    #[serde(default)]
    pub secret_file: Option<String>,
    /// How long a nonce stays valid, e.g. `"10m"`.
    #[serde(
        default = "default_nonce_lifetime",
        deserialize_with = "duration::deserialize"
    )]
    pub nonce_lifetime: Duration,
    /// The longest credential lifetime accepted (expiry minus now), e.g. `"24h"`.
    #[serde(
        default = "default_max_credential_ttl",
        deserialize_with = "duration::deserialize"
    )]
    pub max_credential_ttl: Duration,
}

fn default_nonce_lifetime() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_max_credential_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// The validated `[auth]` table.
pub(super) struct Auth {
    pub(super) secret_file: PathBuf,
    pub(super) nonce_lifetime: Duration,
    pub(super) max_credential_ttl: Duration,
}

/// Validates `[auth]`; the secret file resolves against `base`.
pub(super) fn validate(raw: &RawAuth, base: &Path) -> Result<Auth, Error> {
    let secret_file = match raw.secret_file.as_deref().map(str::trim) {
        Some("") => {
            return Err(invalid(
                "auth.secret_file",
                "must name a file holding the REST secret(s)",
            ));
        }
        Some(f) => base.join(f),
        None => super::credential("auth.secret_file", SECRET_CREDENTIAL)?,
    };
    let nonce_lifetime = raw.nonce_lifetime;
    if nonce_lifetime < Duration::from_secs(30) || nonce_lifetime > Duration::from_secs(3600) {
        return Err(invalid("auth.nonce_lifetime", "must be between 30s and 1h"));
    }
    let max_credential_ttl = raw.max_credential_ttl;
    if max_credential_ttl.is_zero() || max_credential_ttl > Duration::from_secs(86_400) {
        return Err(invalid(
            "auth.max_credential_ttl",
            "must be between 1s and 24h (short-lived credentials)",
        ));
    }
    Ok(Auth {
        secret_file,
        nonce_lifetime,
        max_credential_ttl,
    })
}
