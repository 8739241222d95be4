//! The `[limits]` table: allocation limits (the core's) and TCP/TLS connection limits (the
//! shell's).

use std::time::Duration;

use serde::Deserialize;

use super::{Error, duration, invalid};
use crate::relay::{AnswerLimit, Limits};

/// `[limits]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Allocations in total.
    #[serde(default = "default_max_allocations")]
    pub max_allocations: usize,
    /// Allocations per user id (per username where the username has no user id).
    #[serde(default = "default_max_allocations_per_user")]
    pub max_allocations_per_user: usize,
    /// Allocations per source: an IPv4 address, or an IPv6 prefix of `ipv6_source_prefix`.
    #[serde(default = "default_max_allocations_per_source")]
    pub max_allocations_per_source: usize,
    /// Leading bits of an IPv6 address that make one source, for every per-source limit.
    #[serde(default = "default_ipv6_source_prefix")]
    pub ipv6_source_prefix: u8,
    /// Permissions per allocation.
    #[serde(default = "default_max_permissions")]
    pub max_permissions_per_allocation: usize,
    /// Channels per allocation.
    #[serde(default = "default_max_channels")]
    pub max_channels_per_allocation: usize,
    /// TCP/TLS connections in total.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// TCP/TLS connections per source (IPv4 address or IPv6 prefix). Its first name,
    /// `max_connections_per_ip`, is still read.
    #[serde(
        default = "default_max_connections_per_source",
        alias = "max_connections_per_ip"
    )]
    pub max_connections_per_source: usize,
    /// Time a new TCP/TLS connection has to complete its TLS handshake and send a first
    /// complete STUN message.
    #[serde(
        default = "default_connection_setup_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub connection_setup_timeout: Duration,
    /// A TCP/TLS connection that sends nothing for this long is closed (with its allocation).
    #[serde(
        default = "default_connection_idle_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub connection_idle_timeout: Duration,
    /// Allocation lifetime when the client asks for less or nothing.
    #[serde(
        default = "default_default_lifetime",
        deserialize_with = "duration::deserialize"
    )]
    pub default_lifetime: Duration,
    /// The longest allocation lifetime granted per Allocate/Refresh.
    #[serde(
        default = "default_max_lifetime",
        deserialize_with = "duration::deserialize"
    )]
    pub max_lifetime: Duration,
    /// Bytes per second that the budget of answers to unauthenticated UDP requests refills at,
    /// per source prefix (an IPv4 address or an IPv6 /64).
    #[serde(default = "default_unauthenticated_rate")]
    pub unauthenticated_rate: u32,
    /// Bytes of answers to unauthenticated UDP requests a source prefix may get at once.
    #[serde(default = "default_unauthenticated_burst")]
    pub unauthenticated_burst: u32,
    /// Source prefixes whose budget is tracked, per worker.
    #[serde(default = "default_unauthenticated_table_size")]
    pub unauthenticated_table_size: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_allocations: default_max_allocations(),
            max_allocations_per_user: default_max_allocations_per_user(),
            max_allocations_per_source: default_max_allocations_per_source(),
            ipv6_source_prefix: default_ipv6_source_prefix(),
            max_permissions_per_allocation: default_max_permissions(),
            max_channels_per_allocation: default_max_channels(),
            max_connections: default_max_connections(),
            max_connections_per_source: default_max_connections_per_source(),
            connection_setup_timeout: default_connection_setup_timeout(),
            connection_idle_timeout: default_connection_idle_timeout(),
            default_lifetime: default_default_lifetime(),
            max_lifetime: default_max_lifetime(),
            unauthenticated_rate: default_unauthenticated_rate(),
            unauthenticated_burst: default_unauthenticated_burst(),
            unauthenticated_table_size: default_unauthenticated_table_size(),
        }
    }
}

fn default_max_allocations() -> usize {
    10_000
}
fn default_max_allocations_per_user() -> usize {
    100
}
/// A clinic behind one NAT address: 100 calls at once, each with up to four allocations (a
/// browser allocates per TURN URL: UDP, TCP, TLS, and per address family), is 400.
fn default_max_allocations_per_source() -> usize {
    500
}
fn default_ipv6_source_prefix() -> u8 {
    crate::relay::DEFAULT_IPV6_SOURCE_PREFIX
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
fn default_max_connections_per_source() -> usize {
    64
}
fn default_connection_setup_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_connection_idle_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_default_lifetime() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_max_lifetime() -> Duration {
    Duration::from_secs(3600)
}
fn default_unauthenticated_rate() -> u32 {
    AnswerLimit::DEFAULT.rate
}
fn default_unauthenticated_burst() -> u32 {
    AnswerLimit::DEFAULT.burst
}
fn default_unauthenticated_table_size() -> usize {
    AnswerLimit::DEFAULT.table_size
}

/// TCP/TLS connection limits (the shell's part of `[limits]`; the core's part is [`Limits`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// TCP/TLS connections in total.
    pub max_connections: usize,
    /// TCP/TLS connections per source (IPv4 address or IPv6 prefix).
    pub max_connections_per_source: usize,
    /// Leading bits of an IPv6 address that make one source.
    pub ipv6_source_prefix: u8,
    /// Deadline for the TLS handshake and the first STUN message.
    pub connection_setup_timeout: Duration,
    /// Idle limit of connections (closed with their allocation).
    pub connection_idle_timeout: Duration,
}

/// Validates `[limits]` into the core's and the shell's parts.
pub(super) fn validate(raw: &RawLimits) -> Result<(Limits, ConnectionLimits), Error> {
    let positive = |key: &'static str, v: usize| {
        if v == 0 {
            Err(invalid(key, "must be at least 1"))
        } else {
            Ok(v)
        }
    };
    let nonzero = |key: &'static str, d: Duration| {
        if d.is_zero() {
            Err(invalid(key, "must be longer than 0s"))
        } else {
            Ok(d)
        }
    };
    let (default_lifetime, max_lifetime) = (raw.default_lifetime, raw.max_lifetime);
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
    let ipv6_source_prefix = raw.ipv6_source_prefix;
    if !(32..=128).contains(&ipv6_source_prefix) {
        return Err(invalid(
            "limits.ipv6_source_prefix",
            "must be between 32 and 128 (64 counts a /64 as one source)",
        ));
    }
    let limits = Limits {
        max_allocations: positive("limits.max_allocations", raw.max_allocations)?,
        max_allocations_per_user: positive(
            "limits.max_allocations_per_user",
            raw.max_allocations_per_user,
        )?,
        max_allocations_per_source: positive(
            "limits.max_allocations_per_source",
            raw.max_allocations_per_source,
        )?,
        ipv6_source_prefix,
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
        max_connections_per_source: positive(
            "limits.max_connections_per_source",
            raw.max_connections_per_source,
        )?,
        ipv6_source_prefix,
        connection_setup_timeout: nonzero(
            "limits.connection_setup_timeout",
            raw.connection_setup_timeout,
        )?,
        connection_idle_timeout: nonzero(
            "limits.connection_idle_timeout",
            raw.connection_idle_timeout,
        )?,
    };
    Ok((limits, connections))
}

/// Validates the `limits.unauthenticated_*` keys: both 0 turn the limit off; otherwise the
/// burst must hold the largest unauthenticated answer, and the table at least one prefix.
pub(super) fn validate_answer_limit(raw: &RawLimits) -> Result<AnswerLimit, Error> {
    let (rate, burst) = (raw.unauthenticated_rate, raw.unauthenticated_burst);
    if rate == 0 && burst == 0 {
        return Ok(AnswerLimit::OFF);
    }
    if burst < MIN_UNAUTHENTICATED_BURST {
        return Err(invalid(
            "limits.unauthenticated_burst",
            "must be at least 1024 (a challenge is about 150 bytes; a burst that cannot hold \
             one never answers), or 0 together with limits.unauthenticated_rate = 0 to turn \
             the limit off",
        ));
    }
    if rate == 0 {
        return Err(invalid(
            "limits.unauthenticated_rate",
            "must be at least 1 byte per second (0 would never refill a budget once used), \
             or 0 together with limits.unauthenticated_burst = 0 to turn the limit off",
        ));
    }
    if raw.unauthenticated_table_size == 0 {
        return Err(invalid(
            "limits.unauthenticated_table_size",
            "must be at least 1",
        ));
    }
    Ok(AnswerLimit {
        rate,
        burst,
        table_size: raw.unauthenticated_table_size,
    })
}

/// The smallest `limits.unauthenticated_burst` (when the limit is on).
const MIN_UNAUTHENTICATED_BURST: u32 = 1024;
