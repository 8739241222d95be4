//! The `[relay]` table: the relayed transport addresses, the port range and the UDP socket
//! options.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, de};

use super::{Error, invalid};
use crate::host::RelayAddresses;

/// `[relay]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelay {
    /// Local addresses the relay sockets bind on: at most one IPv4 and one IPv6.
    pub addresses: Vec<String>,
    /// Public addresses advertised instead of the local one of the same family (1:1 NAT).
    #[serde(default)]
    pub external_addresses: Vec<String>,
    /// Relay ports, written `"START-END"`.
    #[serde(
        default = "default_port_range",
        deserialize_with = "deserialize_port_range"
    )]
    pub port_range: RangeInclusive<u16>,
    /// Receive and send buffer size (bytes) asked of the kernel for every UDP socket, written
    /// e.g. `"4MiB"`, `"512KiB"` or `"1048576"`.
    #[serde(
        default = "default_socket_buffer",
        deserialize_with = "deserialize_size"
    )]
    pub socket_buffer: usize,
    /// Send runs of equal-sized datagrams to one destination as one UDP GSO message.
    #[serde(default = "default_true")]
    pub gso: bool,
    /// The kernel fast path (XDP) for ChannelData over UDP/IPv4: `"off"`, `"auto"` or
    /// `"required"`.
    #[serde(default)]
    pub offload: Offload,
}

/// `relay.offload`: whether ChannelData is relayed in the kernel (an XDP program; see
/// `docs/design/kernel-fast-path.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Offload {
    /// Relay in user space only.
    Off,
    /// Relay in the kernel where it can be loaded; otherwise log why once and relay in user
    /// space. The default.
    #[default]
    Auto,
    /// Relay in the kernel or refuse to start.
    Required,
}

fn default_port_range() -> RangeInclusive<u16> {
    49152..=65535
}
fn default_socket_buffer() -> usize {
    4 << 20
}
fn default_true() -> bool {
    true
}

/// Options of every UDP socket (`relay.socket_buffer`, `relay.gso`): the shell's part of
/// `[relay]`; the core's part is [`RelayAddresses`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaySockets {
    /// Socket buffer size (bytes) asked for every UDP socket.
    pub buffer: usize,
    /// Send runs of datagrams to one destination with UDP GSO.
    pub gso: bool,
    /// The kernel fast path (`relay.offload`).
    pub offload: Offload,
}

/// Validates `[relay]` into the core's and the shell's parts.
pub(super) fn validate(raw: &RawRelay) -> Result<(RelayAddresses, RelaySockets), Error> {
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
    if !(64 << 10..=256 << 20).contains(&raw.socket_buffer) {
        return Err(invalid(
            "relay.socket_buffer",
            format!(
                "{} bytes is not a size between 64KiB and 256MiB; write e.g. \"4MiB\" or \"512KiB\"",
                raw.socket_buffer
            ),
        ));
    }
    let addresses = RelayAddresses {
        v4,
        v6,
        external_v4,
        external_v6,
        ports: raw.port_range.clone(),
    };
    let sockets = RelaySockets {
        buffer: raw.socket_buffer,
        gso: raw.gso,
        offload: raw.offload,
    };
    Ok((addresses, sockets))
}

pub(super) fn deserialize_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let s = String::deserialize(d)?;
    parse_size(&s).ok_or_else(|| {
        de::Error::custom(format!(
            "{s:?} is not a size; write e.g. \"4MiB\", \"512KiB\" or \"1048576\" (bytes)"
        ))
    })
}

/// `"4MiB"`, `"512KiB"`, `"1048576"` → bytes.
pub(super) fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: usize = digits.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn deserialize_port_range<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<RangeInclusive<u16>, D::Error> {
    let s = String::deserialize(d)?;
    parse_port_range(&s).map_err(de::Error::custom)
}

fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let fix = "write it as \"START-END\", e.g. \"49152-65535\"";
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not a range; {fix}"))?;
    let start: u16 = a
        .trim()
        .parse()
        .map_err(|_| format!("{a:?} is not a port; {fix}"))?;
    let end: u16 = b
        .trim()
        .parse()
        .map_err(|_| format!("{b:?} is not a port; {fix}"))?;
    if start == 0 || start > end {
        return Err(format!(
            "{s:?} is empty or starts at 0; {fix} with 0 < START <= END"
        ));
    }
    if end - start < 1 {
        return Err("needs at least two ports (EVEN-PORT reserves pairs)".to_owned());
    }
    Ok(start..=end)
}
