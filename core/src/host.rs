//! The relay host's own addresses: where relay sockets bind, what they advertise, and the
//! port range. The relay uses them to bind and to fill XOR-RELAYED-ADDRESS; the policy uses
//! them for the relay-host rule (a peer on one of these addresses is the relay itself, which
//! peers may reach on relay ports only). The configuration builds this once.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use crate::policy::canonical;

/// Where relay sockets bind and what address they advertise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayAddresses {
    /// Local IPv4 relay address.
    pub v4: Option<IpAddr>,
    /// Local IPv6 relay address.
    pub v6: Option<IpAddr>,
    /// Advertised IPv4 address (1:1 NAT), if different from the local one.
    pub external_v4: Option<IpAddr>,
    /// Advertised IPv6 address, if different from the local one.
    pub external_v6: Option<IpAddr>,
    /// Relay port range.
    pub ports: RangeInclusive<u16>,
}

impl RelayAddresses {
    /// Returns true when `ip` is one of the relay's own addresses, local or advertised
    /// (IPv4-mapped IPv6 forms included).
    pub fn is_own_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        [self.v4, self.v6, self.external_v4, self.external_v6].contains(&Some(ip))
    }

    /// Returns true unless `peer` is one of the relay's own addresses on a port outside the
    /// relay port range (TURN listeners, APIs and anything else on the host stay unreachable).
    pub fn port_allowed(&self, peer: SocketAddr) -> bool {
        !self.is_own_ip(peer.ip()) || self.ports.contains(&peer.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> RelayAddresses {
        RelayAddresses {
            v4: Some("192.0.2.1".parse().unwrap()),
            v6: None,
            external_v4: Some("198.51.100.7".parse().unwrap()),
            external_v6: None,
            ports: 50000..=50010,
        }
    }

    #[test]
    fn own_addresses_include_advertised_and_mapped_forms() {
        let h = host();
        assert!(h.is_own_ip("192.0.2.1".parse().unwrap()));
        assert!(h.is_own_ip("198.51.100.7".parse().unwrap()));
        assert!(h.is_own_ip("::ffff:192.0.2.1".parse().unwrap()));
        assert!(!h.is_own_ip("192.0.2.2".parse().unwrap()));
    }

    #[test]
    fn own_addresses_are_reachable_on_relay_ports_only() {
        let h = host();
        assert!(h.port_allowed("192.0.2.1:50000".parse().unwrap()));
        assert!(!h.port_allowed("192.0.2.1:3478".parse().unwrap()));
        assert!(h.port_allowed("192.0.2.2:3478".parse().unwrap()));
    }
}
