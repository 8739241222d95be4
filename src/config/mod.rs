//! Configuration: the TOML file as written ([`RawConfig`]) and the validated, typed
//! [`Config`] the server runs with.
//!
//! One file per TOML table: each holds its table's raw struct (what the file says, with its
//! defaults), its validation, and the validated type it produces. This file ties them
//! together. Every table rejects unknown keys; every error names the key path and says how to
//! fix it. Secrets never live in the TOML: `auth.secret_file` points at them.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::host::RelayAddresses;
use crate::policy::Rules;
use crate::relay::{AnswerLimit, Limits, ServerConfig};

mod api;
mod auth;
mod clients;
mod duration;
mod evidence;
mod geo;
mod limits;
mod log;
mod metrics;
mod peers;
mod policy;
mod regions;
mod relay;
mod server;
mod tls;

pub use api::{
    API_TTL_CEILING, ApiConfig, ApiKey, RawApi, RawApiKey, Scope, UNAUTHENTICATED_LABEL,
    valid_key_name,
};
pub use auth::RawAuth;
pub use clients::RawClients;
pub use duration::parse_duration;
pub use evidence::{
    AddressMode, CREDENTIAL_NAME, EvidenceConfig, Fsync, MAX_RETENTION, RawEvidence,
};
pub use geo::{GeoConfig, RawGeo};
pub use limits::{ConnectionLimits, RawLimits};
pub use log::{LogConfig, LogFormat, RawLog};
pub use metrics::{MetricsConfig, RawMetrics};
pub use peers::RawPeers;
pub use policy::{RawNetwork, RawPolicy, UnknownLocation};
pub use relay::{Offload, RawRelay, RelaySockets};
pub use server::{Listen, ListenTransport, RawServer};
pub use tls::{RawTls, TlsConfig, TlsGroup, TlsProfile};

/// A configuration error, with the key path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML did not parse or did not match the schema (unknown key, wrong type, a value
    /// that is not a duration, ...). The message starts with "config key `KEY`:" when the
    /// error is inside a table.
    #[error("{0}")]
    Parse(String),
    /// A value parsed but is not acceptable.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// The dotted key path, e.g. `relay.port_range`.
        key: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
}

fn invalid(key: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid {
        key,
        message: message.into(),
    }
}

/// The configuration file as written. See `config/eeaturn.example.toml` for every key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[server]`.
    pub server: RawServer,
    /// `[auth]`.
    pub auth: RawAuth,
    /// `[relay]`.
    pub relay: RawRelay,
    /// `[limits]`.
    #[serde(default)]
    pub limits: RawLimits,
    /// `[geo]`.
    pub geo: RawGeo,
    /// `[policy]`.
    #[serde(default)]
    pub policy: RawPolicy,
    /// `[peers]`.
    #[serde(default)]
    pub peers: RawPeers,
    /// `[clients]`.
    #[serde(default)]
    pub clients: RawClients,
    /// `[log]`.
    #[serde(default)]
    pub log: RawLog,
    /// `[metrics]`.
    #[serde(default)]
    pub metrics: RawMetrics,
    /// `[tls]`.
    #[serde(default)]
    pub tls: Option<RawTls>,
    /// `[api]`: the credential API (off when absent).
    #[serde(default)]
    pub api: Option<RawApi>,
    /// `[evidence]`: the signed residency evidence (off by default).
    #[serde(default)]
    pub evidence: RawEvidence,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Realm of the long-term credential mechanism.
    pub realm: String,
    /// SOFTWARE attribute value, if any.
    pub software: Option<String>,
    /// Listeners.
    pub listen: Vec<Listen>,
    /// Data-path worker threads (at least 1).
    pub workers: usize,
    /// How long the first SIGTERM drains before the relay stops (zero: it stops at once).
    pub drain_timeout: Duration,
    /// Where new allocations are sent while draining.
    pub alternate_servers: Vec<SocketAddr>,
    /// Absolute path of the secret file.
    pub secret_file: PathBuf,
    /// Nonce validity.
    pub nonce_lifetime: Duration,
    /// Longest credential lifetime accepted.
    pub max_credential_ttl: Duration,
    /// Relay addresses and port range (the core's part of `[relay]`).
    pub relay: RelayAddresses,
    /// UDP socket options (the shell's part of `[relay]`).
    pub sockets: RelaySockets,
    /// Allocation limits (the core's part of `[limits]`).
    pub limits: Limits,
    /// TCP/TLS connection limits (the shell's part of `[limits]`).
    pub connections: ConnectionLimits,
    /// The budget of unauthenticated answers over UDP per source prefix
    /// (`limits.unauthenticated_*`).
    pub answer_limit: AnswerLimit,
    /// The GeoIP databases.
    pub geo: GeoConfig,
    /// The residency rules (relay addresses and ports included).
    pub rules: Rules,
    /// Start even when the relay's own address is outside the allowed region.
    pub dangerous_allow_relay_outside_region: bool,
    /// Logging.
    pub log: LogConfig,
    /// The file this configuration was loaded from (for reloads).
    pub source: Option<PathBuf>,
    /// The Prometheus listener, if any.
    pub metrics: Option<MetricsConfig>,
    /// TLS settings, when a `tls://` listener exists.
    pub tls: Option<TlsConfig>,
    /// The credential API, when `[api]` is present.
    pub api: Option<ApiConfig>,
    /// The residency evidence, when `evidence.enabled`.
    pub evidence: Option<EvidenceConfig>,
}

impl Config {
    /// Returns the core's part: what a [`relay::Server`](crate::relay::Server) runs with.
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            realm: self.realm.clone(),
            software: self.software.clone(),
            relay: self.relay.clone(),
            limits: self.limits.clone(),
            nonce_lifetime: self.nonce_lifetime,
            max_credential_ttl: self.max_credential_ttl,
            alternate_servers: self.alternate_servers.clone(),
            answer_limit: self.answer_limit,
        }
    }

    /// Reads and validates a config file; relative paths in it resolve against its directory.
    ///
    /// # Errors
    ///
    /// Returns an [`Error`] naming the file or the key that is wrong.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let mut config = Self::parse(&text, base).map_err(|e| match e {
            Error::Parse(m) => Error::Parse(format!("{}: {m}", path.display())),
            other => other,
        })?;
        config.source = Some(path.to_owned());
        Ok(config)
    }

    /// Parses and validates TOML text; relative paths resolve against `base`.
    ///
    /// # Errors
    ///
    /// Returns an [`Error`] naming the key that is wrong.
    pub fn parse(text: &str, base: &Path) -> Result<Self, Error> {
        let document = toml::Deserializer::parse(text).map_err(|e| Error::Parse(e.to_string()))?;
        let raw: RawConfig = serde_path_to_error::deserialize(document).map_err(|e| {
            let key = key_path(e.path());
            let message = e.into_inner();
            Error::Parse(if key.is_empty() {
                message.to_string()
            } else {
                format!("config key `{key}`: {message}")
            })
        })?;
        Self::validate(raw, base)
    }

    /// Validates a raw config.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Invalid`] naming the key that is wrong.
    pub fn validate(raw: RawConfig, base: &Path) -> Result<Self, Error> {
        let server = server::validate(raw.server)?;
        let auth = auth::validate(&raw.auth, base)?;
        let (relay, sockets) = relay::validate(&raw.relay)?;
        let (limits, connections) = limits::validate(&raw.limits)?;
        let answer_limit = limits::validate_answer_limit(&raw.limits)?;
        let tls = tls::validate(raw.tls.as_ref(), base, &server.listen)?;
        let api = raw
            .api
            .as_ref()
            .map(|a| api::validate(a, base, tls.is_some(), auth.max_credential_ttl))
            .transpose()?;
        let geo = geo::validate(&raw.geo, base)?;
        let evidence = evidence::validate(&raw.evidence, base)?;
        let mut rules = policy::validate(&raw.policy, geo.asn_db.is_some())?;
        peers::validate(&raw.peers, &mut rules)?;
        clients::validate(&raw.clients, &mut rules)?;

        Ok(Self {
            realm: server.realm,
            software: server.software,
            listen: server.listen,
            workers: server.workers,
            drain_timeout: server.drain_timeout,
            alternate_servers: server.alternate_servers,
            secret_file: auth.secret_file,
            nonce_lifetime: auth.nonce_lifetime,
            max_credential_ttl: auth.max_credential_ttl,
            relay,
            sockets,
            limits,
            connections,
            answer_limit,
            geo,
            rules,
            dangerous_allow_relay_outside_region: raw.policy.dangerous_allow_relay_outside_region,
            log: raw.log.into(),
            source: None,
            metrics: metrics::validate(&raw.metrics, base, tls.is_some())?,
            tls,
            api,
            evidence,
        })
    }
}

/// Returns `$CREDENTIALS_DIRECTORY/name`, the systemd credential (`LoadCredential=`) that
/// stands in for the file `key` when the config names none.
///
/// # Errors
///
/// Returns [`Error::Invalid`] for `key` when systemd passes no credentials.
fn credential(key: &'static str, name: &str) -> Result<PathBuf, Error> {
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) => Ok(Path::new(&dir).join(name)),
        None => Err(invalid(
            key,
            format!(
                "is required unless systemd passes the file as the credential {name:?} \
                 (LoadCredential={name}:/etc/eeaturn/...)"
            ),
        )),
    }
}

/// The dotted key path of a schema error, e.g. `limits.max_lifetime`; array indices are left
/// out (`api.keys.scope`), as in the keys of [`Error::Invalid`].
fn key_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Map { key } => Some(key.as_str()),
            Segment::Enum { variant } => Some(variant.as_str()),
            Segment::Seq { .. } | Segment::Unknown => None,
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Parses a list of CIDRs (a bare address is its own /32 or /128; host bits are cleared).
fn parse_nets(key: &'static str, list: &[String]) -> Result<Vec<IpNet>, Error> {
    list.iter()
        .map(|s| {
            let s = s.trim();
            IpNet::from_str(s)
                .or_else(|_| IpAddr::from_str(s).map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| {
                    invalid(
                        key,
                        format!("{s:?} is not a CIDR, e.g. \"192.0.2.0/24\" or \"2001:db8::/32\""),
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests;
