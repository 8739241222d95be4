//! The `[api]` table: the credential API's listener, keys and limits (see docs/api.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{Error, duration, invalid};

/// The longest TTL the API ever grants, whatever the config says.
pub const API_TTL_CEILING: Duration = Duration::from_secs(86_400);

/// `[api]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    /// `"https://IP:PORT"`, or `"http://IP:PORT"` on loopback only.
    pub listen: String,
    /// TURN URIs handed out with every credential.
    pub uris: Vec<String>,
    /// TTL when the caller gives none, e.g. `"1h"`.
    #[serde(default = "default_ttl", deserialize_with = "duration::deserialize")]
    pub default_ttl: Duration,
    /// Largest TTL a caller may ask for; defaults to `auth.max_credential_ttl`.
    #[serde(default, deserialize_with = "duration::deserialize_option")]
    pub max_ttl: Option<Duration>,
    /// Requests per minute per key.
    #[serde(default = "default_rate_limit")]
    pub rate_limit: u32,
    /// Requests a key may make at once before the per-minute rate applies.
    #[serde(default = "default_rate_burst")]
    pub rate_burst: u32,
    /// Longest time a whole request may take, e.g. `"10s"`.
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub request_timeout: Duration,
    /// Origins that get CORS headers; none by default (CORS off).
    #[serde(default)]
    pub cors_allowed_origins: Vec<String>,
    /// PEM file of the CAs that issue client certificates (mutual TLS); none by default.
    #[serde(default)]
    pub client_ca: Option<String>,
    /// `[[api.keys]]`.
    #[serde(default)]
    pub keys: Vec<RawApiKey>,
    /// A file of more `[[api.keys]]` tables (what `eeaturn api-key new` prints), re-read on
    /// SIGHUP; relative to the config file. Default, when `keys` is empty and systemd passes
    /// credentials: `$CREDENTIALS_DIRECTORY/api-keys`.
    #[serde(default)]
    pub keys_file: Option<String>,
}

/// The file name looked for in `$CREDENTIALS_DIRECTORY` when neither `keys` nor `keys_file`
/// is set.
pub(super) const KEYS_CREDENTIAL: &str = "api-keys";

/// An `api.keys_file`: nothing but `[[api.keys]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    api: KeysFileApi,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFileApi {
    #[serde(default)]
    keys: Vec<RawApiKey>,
}

/// Reads the `[[api.keys]]` tables of `path` (`api.keys_file`).
fn read_keys_file(path: &Path) -> Result<Vec<RawApiKey>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        invalid(
            "api.keys_file",
            format!(
                "cannot read {}: {e} (a file of [[api.keys]] tables, or the systemd credential {KEYS_CREDENTIAL:?}: LoadCredential={KEYS_CREDENTIAL}:/etc/eeaturn/...)",
                path.display()
            ),
        )
    })?;
    let file: KeysFile = toml::from_str(&text).map_err(|e| {
        invalid(
            "api.keys_file",
            format!(
                "{} must hold only [[api.keys]] tables with name, scope and sha256, as `eeaturn api-key new` prints them: {}",
                path.display(),
                e.message()
            ),
        )
    })?;
    Ok(file.api.keys)
}

/// One `[[api.keys]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    /// Shown in logs, metrics and TURN usernames.
    pub name: String,
    /// `"credentials"` or `"evidence"`.
    pub scope: Scope,
    /// Hex SHA-256 of the key.
    pub sha256: String,
}

fn default_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_rate_limit() -> u32 {
    120
}
fn default_rate_burst() -> u32 {
    20
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}

/// What a key may call: `api.keys.scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `/v1/credentials` and `/v1/ice-servers`: signaling servers.
    Credentials,
    /// `/v1/evidence/report`, `/v1/evidence/export` and `/v1/evidence/status`: compliance
    /// officers, auditors and the operator's collection timer.
    Evidence,
}

impl Scope {
    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Credentials => "credentials",
            Self::Evidence => "evidence",
        }
    }
}

/// One accepted API key: its name, scope and the SHA-256 of the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// `[A-Za-z0-9_-]{1,64}`.
    pub name: String,
    /// What it may call.
    pub scope: Scope,
    /// SHA-256 of the key string.
    pub sha256: [u8; 32],
}

/// The validated `[api]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Listening address.
    pub listen: SocketAddr,
    /// HTTPS (with the `[tls]` certificate) or plain HTTP (loopback only).
    pub https: bool,
    /// TURN URIs handed out.
    pub uris: Vec<String>,
    /// TTL when none is asked for.
    pub default_ttl: Duration,
    /// Largest TTL granted.
    pub max_ttl: Duration,
    /// Requests per minute per key.
    pub rate_limit: u32,
    /// Burst size per key.
    pub rate_burst: u32,
    /// Longest time a request may take.
    pub request_timeout: Duration,
    /// Origins that get CORS headers.
    pub cors_allowed_origins: Vec<String>,
    /// CA file for client certificates (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// The accepted keys.
    pub keys: Vec<ApiKey>,
}

/// Validates `[api]`. `has_tls` says whether a `[tls]` table exists (https needs its
/// certificate); `max_credential_ttl` is `auth.max_credential_ttl`.
pub(super) fn validate(
    raw: &RawApi,
    base: &Path,
    has_tls: bool,
    max_credential_ttl: Duration,
) -> Result<ApiConfig, Error> {
    let (https, addr) = if let Some(a) = raw.listen.strip_prefix("https://") {
        (true, a)
    } else if let Some(a) = raw.listen.strip_prefix("http://") {
        (false, a)
    } else {
        return Err(invalid(
            "api.listen",
            format!(
                "{:?} must start with https:// (or http:// on a loopback address), e.g. \"https://0.0.0.0:8443\"",
                raw.listen
            ),
        ));
    };
    let listen: SocketAddr = addr.parse().map_err(|_| {
        invalid(
            "api.listen",
            format!(
                "{addr:?} is not IP:PORT (IPv6 in brackets, e.g. \"https://[::1]:8443\"; no host names)"
            ),
        )
    })?;
    if !https && !listen.ip().is_loopback() {
        return Err(invalid(
            "api.listen",
            format!(
                "plain http:// is only allowed on a loopback address (127.0.0.0/8, ::1), not {}: use https:// so API keys and credentials are never sent in clear",
                listen.ip()
            ),
        ));
    }
    if https && !has_tls {
        return Err(invalid(
            "api.listen",
            "https:// uses the certificate of the [tls] table; add [tls] with certificate and private_key",
        ));
    }

    if raw.uris.is_empty() {
        return Err(invalid(
            "api.uris",
            "needs at least one TURN URI handed out with credentials, e.g. [\"turn:turn.example.eu:3478?transport=udp\"]",
        ));
    }
    for u in &raw.uris {
        let scheme_ok = ["turn:", "turns:", "stun:", "stuns:"]
            .iter()
            .any(|s| u.starts_with(s) && u.len() > s.len());
        if !scheme_ok || u.len() > 256 || u.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "api.uris",
                format!(
                    "{u:?} is not a TURN/STUN URI (RFC 7065): write e.g. \"turn:turn.example.eu:3478?transport=udp\" or \"turns:turn.example.eu:5349?transport=tcp\""
                ),
            ));
        }
    }

    let ceiling = max_credential_ttl.min(API_TTL_CEILING);
    let max_ttl = match raw.max_ttl {
        Some(d) => {
            if d < Duration::from_secs(1) || d > ceiling {
                return Err(invalid(
                    "api.max_ttl",
                    format!(
                        "must be between 1s and {}s (auth.max_credential_ttl, at most 24h): the relay refuses credentials that live longer",
                        ceiling.as_secs()
                    ),
                ));
            }
            d
        }
        None => ceiling,
    };
    let default_ttl = raw.default_ttl;
    if default_ttl < Duration::from_secs(1) || default_ttl > max_ttl {
        return Err(invalid(
            "api.default_ttl",
            format!(
                "must be between 1s and api.max_ttl ({}s)",
                max_ttl.as_secs()
            ),
        ));
    }
    if raw.rate_limit == 0 {
        return Err(invalid(
            "api.rate_limit",
            "must be at least 1 (requests per minute per key)",
        ));
    }
    if raw.rate_burst == 0 {
        return Err(invalid(
            "api.rate_burst",
            "must be at least 1 (requests a key may make at once)",
        ));
    }
    let request_timeout = raw.request_timeout;
    if request_timeout < Duration::from_secs(1) || request_timeout > Duration::from_secs(300) {
        return Err(invalid("api.request_timeout", "must be between 1s and 5m"));
    }
    for o in &raw.cors_allowed_origins {
        let rest = o
            .strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"));
        let ok = rest.is_some_and(|r| {
            !r.is_empty()
                && !r.contains('/')
                && !r.contains('*')
                && !r.contains(char::is_whitespace)
        });
        if !ok {
            return Err(invalid(
                "api.cors_allowed_origins",
                format!(
                    "{o:?} is not an origin: write scheme://host[:port] without a path or wildcard, e.g. \"https://app.example.eu\""
                ),
            ));
        }
    }
    let client_ca = match &raw.client_ca {
        Some(p) if !p.trim().is_empty() => {
            if !https {
                return Err(invalid(
                    "api.client_ca",
                    "mutual TLS needs an https:// api.listen",
                ));
            }
            Some(base.join(p.trim()))
        }
        _ => None,
    };

    let keys_file = match raw.keys_file.as_deref().map(str::trim) {
        Some("") => {
            return Err(invalid(
                "api.keys_file",
                "must name a file of [[api.keys]] tables (or leave the key out)",
            ));
        }
        Some(f) => Some(base.join(f)),
        None if raw.keys.is_empty() => std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(|dir| Path::new(&dir).join(KEYS_CREDENTIAL)),
        None => None,
    };
    let from_file = match &keys_file {
        Some(path) => read_keys_file(path)?,
        None => Vec::new(),
    };
    if raw.keys.is_empty() && from_file.is_empty() {
        return Err(invalid(
            if keys_file.is_some() {
                "api.keys_file"
            } else {
                "api.keys"
            },
            "the API has no key, so nobody could call it: create one with `eeaturn api-key new --name NAME --scope credentials` and paste the [[api.keys]] table it prints into the config or into api.keys_file",
        ));
    }
    let mut keys: Vec<ApiKey> = Vec::new();
    for k in raw.keys.iter().chain(&from_file) {
        if !valid_key_name(&k.name) {
            return Err(invalid(
                "api.keys.name",
                format!(
                    "{:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-', and not {UNAUTHENTICATED_LABEL:?} (the metrics' label for requests without a valid key)",
                    k.name
                ),
            ));
        }
        let sha256 = parse_sha256(&k.sha256).ok_or_else(|| {
            invalid(
                "api.keys.sha256",
                format!(
                    "key {:?}: must be 64 hex digits, the SHA-256 of the key (`eeaturn api-key new` prints it; never put the key itself here)",
                    k.name
                ),
            )
        })?;
        if keys.iter().any(|o| o.name == k.name) {
            return Err(invalid(
                "api.keys.name",
                format!("{:?} is used by two keys; names must be unique", k.name),
            ));
        }
        if keys.iter().any(|o| o.sha256 == sha256) {
            return Err(invalid(
                "api.keys.sha256",
                format!("key {:?} has the same hash as another key", k.name),
            ));
        }
        keys.push(ApiKey {
            name: k.name.clone(),
            scope: k.scope,
            sha256,
        });
    }

    Ok(ApiConfig {
        listen,
        https,
        uris: raw.uris.clone(),
        default_ttl,
        max_ttl,
        rate_limit: raw.rate_limit,
        rate_burst: raw.rate_burst,
        request_timeout,
        cors_allowed_origins: raw.cors_allowed_origins.clone(),
        client_ca,
        keys,
    })
}

/// An API key name: 1 to 64 characters of `A-Z a-z 0-9 _ -` (it appears in TURN usernames,
/// logs and metric labels), other than [`UNAUTHENTICATED_LABEL`].
pub fn valid_key_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name != UNAUTHENTICATED_LABEL
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The `key` label of API requests without a valid key in the metrics; no key may be named
/// so, or its requests and the unauthenticated ones would share a series.
pub const UNAUTHENTICATED_LABEL: &str = "none";

fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut out).ok()?;
    Some(out)
}
