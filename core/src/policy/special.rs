//! Special-purpose address ranges (IANA IPv4 and IPv6 Special-Purpose Address Registries),
//! and the canonical form of IPv4-mapped addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Returns the IPv4 address an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) stands for, or the
/// address unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        IpAddr::V4(_) => ip,
    }
}

/// Returns the name of the special-purpose range `ip` falls in, or `None` for a globally
/// routable unicast address. IPv4 embedded in IPv6 (mapped, compatible, NAT64, 6to4, Teredo)
/// is judged by the embedded address where the embedded address is special.
pub fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    let table: &[([u8; 4], u8, &'static str)] = &[
        ([0, 0, 0, 0], 8, "this-network"),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "shared-cgnat"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "ietf-protocol-assignments"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 31, 196, 0], 24, "as112"),
        ([192, 52, 193, 0], 24, "amt"),
        ([192, 88, 99, 0], 24, "6to4-relay-anycast"),
        ([192, 168, 0, 0], 16, "private"),
        ([192, 175, 48, 0], 24, "direct-delegation-as112"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    let v = u32::from_be_bytes(o);
    for (net, len, name) in table {
        let mask = u32::MAX << (32 - u32::from(*len));
        if v & mask == u32::from_be_bytes(*net) {
            return Some(name);
        }
    }
    None
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // IPv4-compatible (deprecated) ::a.b.c.d
    if s[..6] == [0, 0, 0, 0, 0, 0] {
        return Some("ipv4-compatible");
    }
    // IPv4-translated ::ffff:0:a.b.c.d (RFC 2765)
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return Some("ipv4-translated");
    }
    // NAT64 well-known prefix 64:ff9b::/96 and local-use 64:ff9b:1::/48
    if s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0, 0, 0, 0] || s[2] == 1) {
        return Some("nat64");
    }
    // Discard-only 100::/64
    if s[0] == 0x100 && s[1..4] == [0, 0, 0] {
        return Some("discard-only");
    }
    // 2001::/23 IETF protocol assignments, including Teredo 2001::/32 and benchmarking 2001:2::/48
    if s[0] == 0x2001 && s[1] < 0x200 {
        return Some(if s[1] == 0 {
            "teredo"
        } else {
            "ietf-protocol-assignments"
        });
    }
    // Documentation 2001:db8::/32 and 3fff::/20
    if (s[0] == 0x2001 && s[1] == 0x0db8) || (s[0] & 0xfff0) == 0x3ff0 {
        return Some("documentation");
    }
    // 6to4 2002::/16: embeds an IPv4 address; all of it is refused as a tunnel form.
    if s[0] == 0x2002 {
        return Some("6to4");
    }
    // Segment routing 5f00::/16
    if s[0] == 0x5f00 {
        return Some("segment-routing");
    }
    // Unique local fc00::/7
    if (s[0] & 0xfe00) == 0xfc00 {
        return Some("unique-local");
    }
    // Link-local fe80::/10
    if (s[0] & 0xffc0) == 0xfe80 {
        return Some("link-local");
    }
    // Site-local (deprecated) fec0::/10
    if (s[0] & 0xffc0) == 0xfec0 {
        return Some("site-local");
    }
    // Multicast ff00::/8
    if (s[0] & 0xff00) == 0xff00 {
        return Some("multicast");
    }
    // Outside global unicast 2000::/3: not assigned for unicast use.
    if (s[0] & 0xe000) != 0x2000 {
        return Some("reserved");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(s: &str) -> Option<&'static str> {
        special_purpose(s.parse().unwrap())
    }

    #[test]
    fn ipv4_ranges() {
        assert_eq!(sp("127.0.2.1"), Some("loopback"));
        assert_eq!(sp("169.254.169.254"), Some("link-local"));
        assert_eq!(sp("100.64.0.1"), Some("shared-cgnat"));
        assert_eq!(sp("255.255.255.255"), Some("reserved"));
        assert_eq!(sp("198.19.255.255"), Some("benchmarking"));
        assert_eq!(sp("172.32.0.1"), None);
        assert_eq!(sp("81.2.69.160"), None);
    }

    #[test]
    fn ipv6_ranges_and_embedded_ipv4() {
        assert_eq!(sp("::1"), Some("loopback"));
        assert_eq!(sp("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(sp("::ffff:8.8.8.8"), None);
        assert_eq!(sp("::127.0.0.1"), Some("ipv4-compatible"));
        assert_eq!(sp("64:ff9b::a00:1"), Some("nat64"));
        assert_eq!(sp("64:ff9b:1::1"), Some("nat64"));
        assert_eq!(sp("2002:7f00:1::1"), Some("6to4"));
        assert_eq!(sp("2001:0:4136:e378::1"), Some("teredo"));
        assert_eq!(sp("fd00::1"), Some("unique-local"));
        assert_eq!(sp("fec0::1"), Some("site-local"));
        assert_eq!(sp("fe80::1"), Some("link-local"));
        assert_eq!(sp("ff02::1"), Some("multicast"));
        assert_eq!(sp("2001:db8::1"), Some("documentation"));
        assert_eq!(sp("2a00:1450:4001::1"), None);
    }
}
