//! What counts as one source for per-source limits: an IPv4 address, or an IPv6 prefix of a
//! configured length (a /64 by default: one subscriber line or host usually holds a whole
//! /64, so counting its addresses one by one would multiply its quota by 2^64).

use std::net::{IpAddr, Ipv6Addr};

/// The default IPv6 prefix length that counts as one source (`limits.ipv6_source_prefix`).
pub const DEFAULT_IPV6_SOURCE_PREFIX: u8 = 64;

/// One source for per-source limits: an IPv4 address, or an IPv6 address with the bits
/// beyond the source prefix cleared. `::ffff:a.b.c.d` is the IPv4 address `a.b.c.d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source(IpAddr);

impl Source {
    /// Returns the source of `ip`, counting IPv6 addresses by their first `v6_prefix` bits
    /// (values above 128 count as 128).
    pub fn new(ip: IpAddr, v6_prefix: u8) -> Self {
        match crate::policy::canonical(ip) {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let keep = u32::from(v6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
                Self(IpAddr::V6(Ipv6Addr::from(bits & mask)))
            }
        }
    }

    /// Returns the address standing for the source (an IPv6 prefix with its host bits zero).
    pub fn ip(self) -> IpAddr {
        self.0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn src(s: &str, prefix: u8) -> Source {
        Source::new(s.parse().unwrap(), prefix)
    }

    #[test]
    fn ipv6_addresses_of_one_prefix_are_one_source() {
        assert_eq!(src("2001:db8:1:2::1", 64), src("2001:db8:1:2:ffff::9", 64));
        assert_ne!(src("2001:db8:1:2::1", 64), src("2001:db8:1:3::1", 64));
        assert_eq!(
            src("2001:db8:1:2::1", 64).ip(),
            src("2001:db8:1:2::", 128).ip()
        );
        assert_eq!(src("2001:db8:1:2::1", 48), src("2001:db8:1:3::1", 48));
        assert_ne!(src("2001:db8::1", 128), src("2001:db8::2", 128));
        assert_eq!(src("2001:db8::1", 0), src("::1", 0));
    }

    #[test]
    fn ipv4_counts_per_address_in_either_form() {
        assert_ne!(src("192.0.2.1", 64), src("192.0.2.2", 64));
        assert_eq!(src("::ffff:192.0.2.1", 64), src("192.0.2.1", 0));
        assert_eq!(
            src("::ffff:192.0.2.1", 64).ip(),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }
}
