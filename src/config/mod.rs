//! Configuration: the TOML file as written ([`RawConfig`]) and the validated, typed
//! [`Config`] the server runs with.
//!
//! Every table rejects unknown keys; every validation error names the key path and says how to
//! fix it. Secrets never live in the TOML: `auth.secret_file` points at them.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::host::RelayAddresses;
use crate::policy::{CountryCode, NetworkOverride, Rules};
use crate::relay::{Limits, ServerConfig};

mod api;
mod regions;

pub use api::{API_TTL_CEILING, ApiConfig, ApiKey, RawApi, RawApiKey, Scope, valid_key_name};

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
    /// The TOML did not parse or did not match the schema (unknown key, wrong type).
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
}

/// `[tls]`: certificate and profile of the `tls://` listeners.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM file with the certificate chain (leaf first); relative to the config file.
    pub certificate: String,
    /// PEM file with the private key (PKCS#8, SEC1 or PKCS#1).
    pub private_key: String,
    /// The TLS profile; only "bsi" (BSI TR-02102-2) exists.
    #[serde(default = "default_tls_profile")]
    pub profile: String,
    /// Key-exchange groups offered: "secp256r1", "secp384r1" (the client's preference decides
    /// among them).
    #[serde(default = "default_tls_groups")]
    pub groups: Vec<String>,
}

/// `[metrics]`: the Prometheus listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// "IP:PORT" to serve `GET /metrics` on (plain HTTP, loopback only); none by default.
    #[serde(default)]
    pub listen: Option<String>,
}

/// `[server]`: identity and listeners.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// The realm of the long-term credential mechanism.
    pub realm: String,
    /// Listener URLs, e.g. `"udp://0.0.0.0:3478"`.
    pub listen: Vec<String>,
    /// Value of the SOFTWARE attribute; empty omits it.
    #[serde(default = "default_software")]
    pub software: String,
    /// Data-path worker threads; 0 means one per CPU core.
    #[serde(default)]
    pub workers: usize,
}

/// `[auth]`: credentials and nonces.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// File with the REST secrets, one per line; relative to the config file.
    pub secret_file: String,
    /// How long a nonce stays valid.
    #[serde(default = "default_nonce_lifetime")]
    pub nonce_lifetime: String,
    /// The longest credential lifetime accepted (expiry minus now).
    #[serde(default = "default_max_credential_ttl")]
    pub max_credential_ttl: String,
}

/// `[relay]`: relayed transport addresses.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelay {
    /// Local addresses the relay sockets bind on: at most one IPv4 and one IPv6.
    pub addresses: Vec<String>,
    /// Public addresses advertised instead of the local one of the same family (1:1 NAT).
    #[serde(default)]
    pub external_addresses: Vec<String>,
    /// Relay ports as `"START-END"`.
    #[serde(default = "default_port_range")]
    pub port_range: String,
    /// Receive and send buffer size asked of the kernel for every UDP socket, e.g. `"4MiB"`.
    #[serde(default = "default_socket_buffer")]
    pub socket_buffer: String,
    /// Send runs of equal-sized datagrams to one destination as one UDP GSO message.
    #[serde(default = "default_true")]
    pub gso: bool,
}

fn default_true() -> bool {
    true
}

fn default_socket_buffer() -> String {
    "4MiB".to_owned()
}

/// `[limits]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Allocations in total.
    #[serde(default = "default_max_allocations")]
    pub max_allocations: usize,
    /// Allocations per user id (per username where the username has no user id).
    #[serde(default = "default_max_allocations_per_user")]
    pub max_allocations_per_user: usize,
    /// Permissions per allocation.
    #[serde(default = "default_max_permissions")]
    pub max_permissions_per_allocation: usize,
    /// Channels per allocation.
    #[serde(default = "default_max_channels")]
    pub max_channels_per_allocation: usize,
    /// TCP/TLS connections in total.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// TCP/TLS connections per client IP address.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Time a new TCP/TLS connection has to complete its TLS handshake and send a first
    /// complete STUN message.
    #[serde(default = "default_connection_setup_timeout")]
    pub connection_setup_timeout: String,
    /// A TCP/TLS connection that sends nothing for this long is closed (with its allocation).
    #[serde(default = "default_connection_idle_timeout")]
    pub connection_idle_timeout: String,
    /// Allocation lifetime when the client asks for less or nothing.
    #[serde(default = "default_default_lifetime")]
    pub default_lifetime: String,
    /// The longest allocation lifetime granted per Allocate/Refresh.
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime: String,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_allocations: default_max_allocations(),
            max_allocations_per_user: default_max_allocations_per_user(),
            max_permissions_per_allocation: default_max_permissions(),
            max_channels_per_allocation: default_max_channels(),
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_connections_per_ip(),
            connection_setup_timeout: default_connection_setup_timeout(),
            connection_idle_timeout: default_connection_idle_timeout(),
            default_lifetime: default_default_lifetime(),
            max_lifetime: default_max_lifetime(),
        }
    }
}

/// `[geo]`: the GeoIP country and ASN databases.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeo {
    /// Country database (`.mmdb`); relative to the config file.
    pub country_db: String,
    /// ASN database (`.mmdb`); needed for ASN rules.
    #[serde(default)]
    pub asn_db: Option<String>,
    /// A database older than this (by its build epoch) is reported as stale.
    #[serde(default = "default_geo_max_age")]
    pub max_age: String,
    /// How often the database files are checked for changes; "0s" disables the check.
    #[serde(default = "default_geo_watch_interval")]
    pub watch_interval: String,
}

/// `[policy]`: the residency rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Named regions (`geo/regions/*.toml`): "eea", "eu", "de".
    #[serde(default = "default_regions")]
    pub regions: Vec<String>,
    /// Extra allowed countries.
    #[serde(default)]
    pub allow_countries: Vec<String>,
    /// Countries always refused.
    #[serde(default)]
    pub deny_countries: Vec<String>,
    /// ASNs allowed whatever their country.
    #[serde(default)]
    pub allow_asns: Vec<u32>,
    /// ASNs always refused.
    #[serde(default)]
    pub deny_asns: Vec<u32>,
    /// "deny" or "allow" an address whose country the database does not know.
    #[serde(default = "default_unknown")]
    pub unknown: String,
    /// Start even when the relay's own address is outside the allowed region (lab setups).
    #[serde(default)]
    pub dangerous_allow_relay_outside_region: bool,
    /// Static networks with a declared country (the operator's own networks).
    #[serde(default)]
    pub networks: Vec<RawNetwork>,
}

impl Default for RawPolicy {
    fn default() -> Self {
        Self {
            regions: default_regions(),
            allow_countries: Vec::new(),
            deny_countries: Vec::new(),
            allow_asns: Vec::new(),
            deny_asns: Vec::new(),
            unknown: default_unknown(),
            dangerous_allow_relay_outside_region: false,
            networks: Vec::new(),
        }
    }
}

/// `[[policy.networks]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    /// The network, e.g. "198.51.100.0/24".
    pub cidr: String,
    /// Its declared country.
    pub country: String,
    /// Its declared ASN.
    #[serde(default)]
    pub asn: Option<u32>,
}

/// `[peers]`: peer address rules applied before (and, once the residency policy lands,
/// beside) the geo policy.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeers {
    /// CIDRs always refused as peers.
    #[serde(default)]
    pub deny: Vec<String>,
    /// CIDRs exempt from the special-purpose refusal (loopback, private, ...). Development
    /// and lab setups only.
    #[serde(default)]
    pub dangerous_allow: Vec<String>,
}

/// `[clients]`: client address rules.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClients {
    /// CIDRs refused at Allocate.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// `[log]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// A `tracing` filter, e.g. `"info"` or `"eeaturn=debug"`.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `"text"` or `"json"`.
    #[serde(default = "default_log_format")]
    pub format: String,
    /// Writes client and peer IP addresses into logs (personal data). Off by default.
    #[serde(default)]
    pub log_ips: bool,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            format: default_log_format(),
            log_ips: false,
        }
    }
}

fn default_software() -> String {
    "eeaturn".to_owned()
}
fn default_nonce_lifetime() -> String {
    "10m".to_owned()
}
fn default_max_credential_ttl() -> String {
    "24h".to_owned()
}
fn default_port_range() -> String {
    "49152-65535".to_owned()
}
fn default_max_allocations() -> usize {
    10_000
}
fn default_max_allocations_per_user() -> usize {
    100
}
fn default_max_permissions() -> usize {
    32
}
fn default_max_channels() -> usize {
    32
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_connections_per_ip() -> usize {
    64
}
fn default_connection_setup_timeout() -> String {
    "10s".to_owned()
}
fn default_connection_idle_timeout() -> String {
    "15m".to_owned()
}
fn default_tls_profile() -> String {
    "bsi".to_owned()
}
fn default_tls_groups() -> Vec<String> {
    vec!["secp256r1".to_owned(), "secp384r1".to_owned()]
}
fn default_default_lifetime() -> String {
    "10m".to_owned()
}
fn default_max_lifetime() -> String {
    "1h".to_owned()
}
fn default_geo_max_age() -> String {
    "45d".to_owned()
}
fn default_geo_watch_interval() -> String {
    "60s".to_owned()
}
fn default_regions() -> Vec<String> {
    vec!["eea".to_owned()]
}
fn default_unknown() -> String {
    "deny".to_owned()
}
fn default_log_level() -> String {
    "info".to_owned()
}
fn default_log_format() -> String {
    "text".to_owned()
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
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// TLS settings, when a `tls://` listener exists.
    pub tls: Option<TlsConfig>,
    /// The credential API, when `[api]` is present.
    pub api: Option<ApiConfig>,
}

/// The TLS settings of the `tls://` listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub certificate: PathBuf,
    /// PEM private key.
    pub private_key: PathBuf,
    /// Key-exchange groups offered (the client picks among them).
    pub groups: Vec<TlsGroup>,
}

/// A key-exchange group of the bsi profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsGroup {
    /// NIST P-256.
    Secp256r1,
    /// NIST P-384.
    Secp384r1,
}

/// Where the GeoIP databases are and how they are watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoConfig {
    /// Country database.
    pub country_db: PathBuf,
    /// ASN database.
    pub asn_db: Option<PathBuf>,
    /// Age beyond which a database is reported stale.
    pub max_age: Duration,
    /// File check interval; zero disables it.
    pub watch_interval: Duration,
}

/// One listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// The transport.
    pub transport: ListenTransport,
    /// The local address.
    pub addr: SocketAddr,
}

/// Listener transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenTransport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP (TURNS).
    Tls,
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.transport {
            ListenTransport::Udp => write!(f, "udp://{}", self.addr),
            ListenTransport::Tcp => write!(f, "tcp://{}", self.addr),
            ListenTransport::Tls => write!(f, "tls://{}", self.addr),
        }
    }
}

/// Options of every UDP socket (`relay.socket_buffer`, `relay.gso`): the shell's part of
/// `[relay]`; the core's part is [`RelayAddresses`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaySockets {
    /// Socket buffer size (bytes) asked for every UDP socket.
    pub buffer: usize,
    /// Send runs of datagrams to one destination with UDP GSO.
    pub gso: bool,
}

/// TCP/TLS connection limits (the shell's part of `[limits]`; the core's part is [`Limits`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// TCP/TLS connections in total.
    pub max_connections: usize,
    /// TCP/TLS connections per client IP.
    pub max_connections_per_ip: usize,
    /// Deadline for the TLS handshake and the first STUN message.
    pub connection_setup_timeout: Duration,
    /// Idle limit of connections (closed with their allocation).
    pub connection_idle_timeout: Duration,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Filter directive.
    pub level: String,
    /// JSON instead of text.
    pub json: bool,
    /// Log IP addresses unredacted.
    pub log_ips: bool,
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
        let raw: RawConfig = toml::from_str(text).map_err(|e| Error::Parse(e.to_string()))?;
        Self::validate(raw, base)
    }

    /// Validates a raw config.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Invalid`] naming the key that is wrong.
    pub fn validate(raw: RawConfig, base: &Path) -> Result<Self, Error> {
        let realm = raw.server.realm.trim().to_owned();
        if realm.is_empty() || realm.len() > 127 || !realm.is_ascii() {
            return Err(invalid(
                "server.realm",
                "must be 1 to 127 ASCII characters, e.g. \"turn.example.eu\"",
            ));
        }
        if raw.server.listen.is_empty() {
            return Err(invalid(
                "server.listen",
                "needs at least one listener, e.g. [\"udp://0.0.0.0:3478\"]",
            ));
        }
        let listen = raw
            .server
            .listen
            .iter()
            .map(|s| parse_listen(s))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, l) in listen.iter().enumerate() {
            if listen[..i].contains(l) {
                return Err(invalid("server.listen", format!("{l} is listed twice")));
            }
        }
        if raw.server.workers > 256 {
            return Err(invalid(
                "server.workers",
                "must be at most 256 (0 means one per CPU core)",
            ));
        }
        let workers = match raw.server.workers {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            n => n,
        };
        let software = Some(raw.server.software).filter(|s| !s.is_empty());
        if software.as_ref().is_some_and(|s| s.len() > 127) {
            return Err(invalid("server.software", "must be at most 127 characters"));
        }

        if raw.auth.secret_file.trim().is_empty() {
            return Err(invalid(
                "auth.secret_file",
                "must name a file holding the REST secret(s)",
            ));
        }
        let secret_file = base.join(raw.auth.secret_file.trim());
        let nonce_lifetime = parse_duration_key("auth.nonce_lifetime", &raw.auth.nonce_lifetime)?;
        if nonce_lifetime < Duration::from_secs(30) || nonce_lifetime > Duration::from_secs(3600) {
            return Err(invalid("auth.nonce_lifetime", "must be between 30s and 1h"));
        }
        let max_credential_ttl =
            parse_duration_key("auth.max_credential_ttl", &raw.auth.max_credential_ttl)?;
        if max_credential_ttl.is_zero() || max_credential_ttl > Duration::from_secs(86_400) {
            return Err(invalid(
                "auth.max_credential_ttl",
                "must be between 1s and 24h (short-lived credentials)",
            ));
        }

        let (relay, sockets) = validate_relay(&raw.relay)?;
        let (limits, connections) = validate_limits(&raw.limits)?;

        let log = LogConfig {
            level: raw.log.level,
            json: match raw.log.format.as_str() {
                "text" => false,
                "json" => true,
                other => {
                    return Err(invalid(
                        "log.format",
                        format!("unknown format {other:?}; use \"text\" or \"json\""),
                    ));
                }
            },
            log_ips: raw.log.log_ips,
        };

        let tls = validate_tls(raw.tls.as_ref(), base, &listen)?;
        let api = raw
            .api
            .as_ref()
            .map(|a| api::validate_api(a, base, tls.is_some(), max_credential_ttl))
            .transpose()?;
        let geo = validate_geo(&raw.geo, base)?;
        let mut rules = validate_policy(&raw.policy, geo.asn_db.is_some())?;
        rules.peer_deny = parse_nets("peers.deny", &raw.peers.deny)?;
        rules.peer_dangerous_allow =
            parse_nets("peers.dangerous_allow", &raw.peers.dangerous_allow)?;
        rules.client_deny = parse_nets("clients.deny", &raw.clients.deny)?;

        Ok(Self {
            realm,
            software,
            listen,
            workers,
            secret_file,
            nonce_lifetime,
            max_credential_ttl,
            relay,
            sockets,
            limits,
            connections,
            geo,
            rules,
            dangerous_allow_relay_outside_region: raw.policy.dangerous_allow_relay_outside_region,
            log,
            source: None,
            metrics_listen: validate_metrics(&raw.metrics)?,
            tls,
            api,
        })
    }
}

fn parse_listen(s: &str) -> Result<Listen, Error> {
    let Some((scheme, addr)) = s.split_once("://") else {
        return Err(invalid(
            "server.listen",
            format!("{s:?} has no scheme; write e.g. \"udp://0.0.0.0:3478\""),
        ));
    };
    let transport = match scheme {
        "udp" => ListenTransport::Udp,
        "tcp" => ListenTransport::Tcp,
        "tls" => ListenTransport::Tls,
        other => {
            return Err(invalid(
                "server.listen",
                format!("{s:?}: unknown scheme {other:?}; use udp://, tcp:// or tls://"),
            ));
        }
    };
    let addr = SocketAddr::from_str(addr).map_err(|_| {
        invalid(
            "server.listen",
            format!("{s:?}: {addr:?} is not IP:PORT (IPv6 in brackets, e.g. [::1]:3478)"),
        )
    })?;
    Ok(Listen { transport, addr })
}

fn validate_relay(raw: &RawRelay) -> Result<(RelayAddresses, RelaySockets), Error> {
    let mut v4 = None;
    let mut v6 = None;
    for a in &raw.addresses {
        let ip = IpAddr::from_str(a.trim())
            .map_err(|_| invalid("relay.addresses", format!("{a:?} is not an IP address")))?;
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(invalid(
                "relay.addresses",
                format!("{ip} cannot be a relay address; name the interface's own address"),
            ));
        }
        let slot = if ip.is_ipv4() { &mut v4 } else { &mut v6 };
        if slot.replace(ip).is_some() {
            return Err(invalid(
                "relay.addresses",
                "at most one IPv4 and one IPv6 address",
            ));
        }
    }
    if v4.is_none() && v6.is_none() {
        return Err(invalid(
            "relay.addresses",
            "needs at least one address, e.g. [\"192.0.2.10\"]",
        ));
    }
    let mut external_v4 = None;
    let mut external_v6 = None;
    for a in &raw.external_addresses {
        let ip = IpAddr::from_str(a.trim()).map_err(|_| {
            invalid(
                "relay.external_addresses",
                format!("{a:?} is not an IP address"),
            )
        })?;
        let (slot, local) = if ip.is_ipv4() {
            (&mut external_v4, v4)
        } else {
            (&mut external_v6, v6)
        };
        if local.is_none() {
            return Err(invalid(
                "relay.external_addresses",
                format!("{ip} has no relay address of its family in relay.addresses"),
            ));
        }
        if slot.replace(ip).is_some() {
            return Err(invalid(
                "relay.external_addresses",
                "at most one IPv4 and one IPv6 address",
            ));
        }
    }
    let ports = parse_port_range(&raw.port_range)?;
    let socket_buffer = parse_size(&raw.socket_buffer)
        .filter(|n| (64 << 10..=256 << 20).contains(n))
        .ok_or_else(|| {
            invalid(
                "relay.socket_buffer",
                format!(
                    "{:?} is not a size between 64KiB and 256MiB; write e.g. \"4MiB\" or \"512KiB\"",
                    raw.socket_buffer
                ),
            )
        })?;
    let addresses = RelayAddresses {
        v4,
        v6,
        external_v4,
        external_v6,
        ports,
    };
    let sockets = RelaySockets {
        buffer: socket_buffer,
        gso: raw.gso,
    };
    Ok((addresses, sockets))
}

/// `"4MiB"`, `"512KiB"`, `"1048576"` → bytes.
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: usize = digits.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, Error> {
    let key = "relay.port_range";
    let fix = "write it as \"START-END\", e.g. \"49152-65535\"";
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| invalid(key, format!("{s:?} is not a range; {fix}")))?;
    let start: u16 = a
        .trim()
        .parse()
        .map_err(|_| invalid(key, format!("{a:?} is not a port; {fix}")))?;
    let end: u16 = b
        .trim()
        .parse()
        .map_err(|_| invalid(key, format!("{b:?} is not a port; {fix}")))?;
    if start == 0 || start > end {
        return Err(invalid(
            key,
            format!("{s:?} is empty or starts at 0; {fix} with 0 < START <= END"),
        ));
    }
    if end - start < 1 {
        return Err(invalid(
            key,
            "needs at least two ports (EVEN-PORT reserves pairs)",
        ));
    }
    Ok(start..=end)
}

fn validate_limits(raw: &RawLimits) -> Result<(Limits, ConnectionLimits), Error> {
    let positive = |key: &'static str, v: usize| {
        if v == 0 {
            Err(invalid(key, "must be at least 1"))
        } else {
            Ok(v)
        }
    };
    let default_lifetime = parse_duration_key("limits.default_lifetime", &raw.default_lifetime)?;
    let max_lifetime = parse_duration_key("limits.max_lifetime", &raw.max_lifetime)?;
    if default_lifetime < Duration::from_secs(60) {
        return Err(invalid("limits.default_lifetime", "must be at least 60s"));
    }
    if max_lifetime < default_lifetime {
        return Err(invalid(
            "limits.max_lifetime",
            "must not be below limits.default_lifetime",
        ));
    }
    if max_lifetime > Duration::from_secs(86_400) {
        return Err(invalid("limits.max_lifetime", "must be at most 24h"));
    }
    let limits = Limits {
        max_allocations: positive("limits.max_allocations", raw.max_allocations)?,
        max_allocations_per_user: positive(
            "limits.max_allocations_per_user",
            raw.max_allocations_per_user,
        )?,
        max_permissions_per_allocation: positive(
            "limits.max_permissions_per_allocation",
            raw.max_permissions_per_allocation,
        )?,
        max_channels_per_allocation: positive(
            "limits.max_channels_per_allocation",
            raw.max_channels_per_allocation,
        )?,
        default_lifetime,
        max_lifetime,
    };
    let connections = ConnectionLimits {
        max_connections: positive("limits.max_connections", raw.max_connections)?,
        max_connections_per_ip: positive(
            "limits.max_connections_per_ip",
            raw.max_connections_per_ip,
        )?,
        connection_setup_timeout: nonzero(
            "limits.connection_setup_timeout",
            &raw.connection_setup_timeout,
        )?,
        connection_idle_timeout: nonzero(
            "limits.connection_idle_timeout",
            &raw.connection_idle_timeout,
        )?,
    };
    Ok((limits, connections))
}

fn validate_metrics(raw: &RawMetrics) -> Result<Option<SocketAddr>, Error> {
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

fn validate_geo(raw: &RawGeo, base: &Path) -> Result<GeoConfig, Error> {
    if raw.country_db.trim().is_empty() {
        return Err(invalid(
            "geo.country_db",
            "must name a country .mmdb file (see geo/README.md)",
        ));
    }
    let asn_db = match raw.asn_db.as_deref().map(str::trim) {
        Some("") => {
            return Err(invalid(
                "geo.asn_db",
                "is empty; name an ASN .mmdb file or leave the key out",
            ));
        }
        Some(p) => Some(base.join(p)),
        None => None,
    };
    Ok(GeoConfig {
        country_db: base.join(raw.country_db.trim()),
        asn_db,
        max_age: parse_duration_key("geo.max_age", &raw.max_age)?,
        watch_interval: parse_duration_key("geo.watch_interval", &raw.watch_interval)?,
    })
}

fn validate_policy(raw: &RawPolicy, have_asn_db: bool) -> Result<Rules, Error> {
    if raw.regions.is_empty() {
        return Err(invalid(
            "policy.regions",
            "needs at least one region, e.g. [\"eea\"]",
        ));
    }
    let mut region_countries = BTreeSet::new();
    for name in &raw.regions {
        let countries = regions::countries(name).ok_or_else(|| {
            invalid(
                "policy.regions",
                format!(
                    "unknown region {name:?}; known regions: {}",
                    regions::NAMES.join(", ")
                ),
            )
        })?;
        region_countries.extend(countries);
    }
    let codes = |key: &'static str, list: &[String]| {
        list.iter()
            .map(|c| {
                CountryCode::parse(c.trim()).ok_or_else(|| {
                    invalid(
                        key,
                        format!("{c:?} is not an ISO 3166-1 alpha-2 code such as \"DE\""),
                    )
                })
            })
            .collect::<Result<BTreeSet<_>, _>>()
    };
    let allow_countries = codes("policy.allow_countries", &raw.allow_countries)?;
    let deny_countries = codes("policy.deny_countries", &raw.deny_countries)?;
    if (!raw.deny_asns.is_empty() || !raw.allow_asns.is_empty()) && !have_asn_db {
        return Err(invalid(
            "policy.deny_asns",
            "ASN rules need an ASN database: set geo.asn_db",
        ));
    }
    let unknown_allowed = match raw.unknown.as_str() {
        "deny" => false,
        "allow" => true,
        other => {
            return Err(invalid(
                "policy.unknown",
                format!("{other:?} is not \"deny\" or \"allow\""),
            ));
        }
    };
    let mut networks = Vec::new();
    for n in &raw.networks {
        let net = parse_nets("policy.networks.cidr", std::slice::from_ref(&n.cidr))?.remove(0);
        let country = CountryCode::parse(n.country.trim()).ok_or_else(|| {
            invalid(
                "policy.networks.country",
                format!("{:?} is not an ISO 3166-1 alpha-2 code", n.country),
            )
        })?;
        networks.push(NetworkOverride {
            net,
            country,
            asn: n.asn,
        });
    }
    Ok(Rules {
        regions: raw.regions.clone(),
        region_countries,
        allow_countries,
        deny_countries,
        allow_asns: raw.allow_asns.iter().copied().collect(),
        deny_asns: raw.deny_asns.iter().copied().collect(),
        unknown_allowed,
        networks,
        ..Rules::default()
    })
}

fn nonzero(key: &'static str, s: &str) -> Result<Duration, Error> {
    let d = parse_duration_key(key, s)?;
    if d.is_zero() {
        return Err(invalid(key, "must be longer than 0s"));
    }
    Ok(d)
}

fn validate_tls(
    raw: Option<&RawTls>,
    base: &Path,
    listen: &[Listen],
) -> Result<Option<TlsConfig>, Error> {
    let wants_tls = listen.iter().any(|l| l.transport == ListenTransport::Tls);
    let Some(raw) = raw else {
        if wants_tls {
            return Err(invalid(
                "tls",
                "a tls:// listener needs a [tls] table with certificate and private_key",
            ));
        }
        return Ok(None);
    };
    if raw.profile != "bsi" {
        return Err(invalid(
            "tls.profile",
            format!(
                "unknown profile {:?}; the only profile is \"bsi\" (BSI TR-02102-2)",
                raw.profile
            ),
        ));
    }
    if raw.groups.is_empty() {
        return Err(invalid(
            "tls.groups",
            "needs at least one group, e.g. [\"secp256r1\"]",
        ));
    }
    let mut groups = Vec::new();
    for g in &raw.groups {
        let group = match g.as_str() {
            "secp256r1" | "P-256" => TlsGroup::Secp256r1,
            "secp384r1" | "P-384" => TlsGroup::Secp384r1,
            other => {
                return Err(invalid(
                    "tls.groups",
                    format!(
                        "{other:?} is not offered by the bsi profile; use \"secp256r1\" and/or \"secp384r1\" (see docs/tls.md)"
                    ),
                ));
            }
        };
        if !groups.contains(&group) {
            groups.push(group);
        }
    }
    for (key, v) in [
        ("tls.certificate", &raw.certificate),
        ("tls.private_key", &raw.private_key),
    ] {
        if v.trim().is_empty() {
            return Err(invalid(key, "must name a PEM file"));
        }
    }
    Ok(Some(TlsConfig {
        certificate: base.join(raw.certificate.trim()),
        private_key: base.join(raw.private_key.trim()),
        groups,
    }))
}

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

fn parse_duration_key(key: &'static str, s: &str) -> Result<Duration, Error> {
    parse_duration(s).map_err(|m| invalid(key, m))
}

/// Parses `"90s"`, `"10m"`, `"1h"`, `"2d"` or a combination such as `"1h30m"`.
///
/// # Errors
///
/// Returns a message saying what is accepted.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let fix =
        || format!("{s:?} is not a duration; write e.g. \"30s\", \"10m\", \"1h\" or \"1h30m\"");
    let s = s.trim();
    if s.is_empty() {
        return Err(fix());
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(fix()),
        };
        let n: u64 = num.parse().map_err(|_| fix())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(fix)?;
        num.clear();
    }
    if !num.is_empty() {
        return Err(fix());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests;
