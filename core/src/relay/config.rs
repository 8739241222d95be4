//! What the core needs from the configuration. The `eeaturn` package's `config` module reads
//! the TOML file and builds these; settings that only the shell needs (socket buffers, GSO,
//! TCP/TLS connection limits) stay there.

use std::net::SocketAddr;
use std::time::Duration;

use crate::host::RelayAddresses;

/// The settings of a [`Server`](super::Server).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Realm of the long-term credential mechanism.
    pub realm: String,
    /// SOFTWARE attribute value.
    pub software: Option<String>,
    /// Relay addresses and port range.
    pub relay: RelayAddresses,
    /// Allocation, permission and channel limits.
    pub limits: Limits,
    /// How long a nonce the server issued stays valid.
    pub nonce_lifetime: Duration,
    /// Longest credential lifetime accepted.
    pub max_credential_ttl: Duration,
    /// Where clients are sent while the relay drains ([`super::Admission::Draining`]): the
    /// first address of the client's family goes into ALTERNATE-SERVER.
    pub alternate_servers: Vec<SocketAddr>,
}

/// Limits on what clients may hold (`[limits]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Allocations in total.
    pub max_allocations: usize,
    /// Allocations per user.
    pub max_allocations_per_user: usize,
    /// Allocations per source: an IPv4 address, or an IPv6 prefix of `ipv6_source_prefix`
    /// bits (see [`Source`](super::Source)).
    pub max_allocations_per_source: usize,
    /// How many leading bits of an IPv6 address make one source (64: a /64 counts once).
    pub ipv6_source_prefix: u8,
    /// Permissions per allocation.
    pub max_permissions_per_allocation: usize,
    /// Channels per allocation.
    pub max_channels_per_allocation: usize,
    /// Allocation lifetime granted when the client asks for none.
    pub default_lifetime: Duration,
    /// Longest allocation lifetime granted.
    pub max_lifetime: Duration,
}
