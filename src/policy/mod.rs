//! The residency seam: one check for every address media may flow to or from.
//!
//! [`Policy::check_client`] runs at Allocate for the client's source address and
//! [`Policy::check_peer`] at CreatePermission, ChannelBind (and therefore for Send and peer
//! data, which need a permission). A decision is a value with the rule that made it, never an
//! error. This first version knows the address rules only (special-purpose ranges, operator
//! deny lists and the development exemption); the GeoIP/ASN policy plugs in here.
//! Pure: no I/O, no clock.

mod special;

use std::net::IpAddr;

use ipnet::IpNet;

pub use special::{canonical, special_purpose};

/// Who an address belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// The TURN client (checked at Allocate).
    Client,
    /// A peer (checked at CreatePermission and ChannelBind).
    Peer,
}

/// The rule that decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// No rule refused the address.
    Default,
    /// The address is unspecified (0.0.0.0, ::).
    Unspecified,
    /// The address is in a special-purpose range (named).
    SpecialPurpose(&'static str),
    /// The address is exempted by `peers.dangerous_allow`.
    DangerousAllow,
    /// The address is in `peers.deny`.
    PeerDenyList,
    /// The address is in `clients.deny`.
    ClientDenyList,
}

impl Rule {
    /// Returns a stable identifier for reason phrases, logs, metrics and evidence.
    pub fn id(self) -> &'static str {
        match self {
            Self::Default => "default-allow",
            Self::Unspecified => "unspecified-address",
            Self::SpecialPurpose(_) => "special-purpose-address",
            Self::DangerousAllow => "peers.dangerous_allow",
            Self::PeerDenyList => "peers.deny",
            Self::ClientDenyList => "clients.deny",
        }
    }
}

/// A policy decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Relaying is allowed.
    Allow {
        /// The deciding rule.
        rule: Rule,
    },
    /// Relaying is refused (STUN 403).
    Deny {
        /// The deciding rule.
        rule: Rule,
    },
}

impl Decision {
    /// Returns true for [`Decision::Allow`].
    pub fn is_allowed(self) -> bool {
        matches!(self, Self::Allow { .. })
    }

    /// Returns the deciding rule.
    pub fn rule(self) -> Rule {
        match self {
            Self::Allow { rule } | Self::Deny { rule } => rule,
        }
    }
}

/// The address rules from the config.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    peer_deny: Vec<IpNet>,
    peer_dangerous_allow: Vec<IpNet>,
    client_deny: Vec<IpNet>,
}

impl Policy {
    /// Creates a policy from the config's lists.
    pub fn new(
        peer_deny: Vec<IpNet>,
        peer_dangerous_allow: Vec<IpNet>,
        client_deny: Vec<IpNet>,
    ) -> Self {
        Self {
            peer_deny,
            peer_dangerous_allow,
            client_deny,
        }
    }

    /// Decides whether a client at `ip` may allocate.
    pub fn check_client(&self, ip: IpAddr) -> Decision {
        let ip = canonical(ip);
        if ip.is_unspecified() {
            return Decision::Deny {
                rule: Rule::Unspecified,
            };
        }
        if self.client_deny.iter().any(|n| n.contains(&ip)) {
            return Decision::Deny {
                rule: Rule::ClientDenyList,
            };
        }
        Decision::Allow {
            rule: Rule::Default,
        }
    }

    /// Decides whether media may be relayed to and from a peer at `ip`.
    ///
    /// Precedence: unspecified is always refused; then `peers.deny`; then special-purpose
    /// ranges are refused unless `peers.dangerous_allow` exempts them.
    pub fn check_peer(&self, ip: IpAddr) -> Decision {
        let ip = canonical(ip);
        if ip.is_unspecified() {
            return Decision::Deny {
                rule: Rule::Unspecified,
            };
        }
        if self.peer_deny.iter().any(|n| n.contains(&ip)) {
            return Decision::Deny {
                rule: Rule::PeerDenyList,
            };
        }
        if let Some(name) = special_purpose(ip) {
            if self.peer_dangerous_allow.iter().any(|n| n.contains(&ip)) {
                return Decision::Allow {
                    rule: Rule::DangerousAllow,
                };
            }
            return Decision::Deny {
                rule: Rule::SpecialPurpose(name),
            };
        }
        Decision::Allow {
            rule: Rule::Default,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn peers_default_refuses_special_purpose_and_allows_public() {
        let p = Policy::default();
        assert!(!p.check_peer(ip("192.0.2.1")).is_allowed());
        assert_eq!(p.check_peer(ip("0.0.0.0")).rule(), Rule::Unspecified);
        assert_eq!(p.check_peer(ip("::")).rule(), Rule::Unspecified);
        assert!(!p.check_peer(ip("127.0.0.1")).is_allowed());
        assert!(!p.check_peer(ip("::ffff:10.0.0.1")).is_allowed());
        assert!(p.check_peer(ip("8.8.8.8")).is_allowed());
        assert!(p.check_peer(ip("2a00:1450::1")).is_allowed());
    }

    #[test]
    fn dangerous_allow_exempts_and_deny_wins() {
        let p = Policy::new(
            vec!["127.0.5.0/24".parse().unwrap()],
            vec!["127.0.0.0/8".parse().unwrap()],
            vec!["203.0.113.0/24".parse().unwrap()],
        );
        assert_eq!(p.check_peer(ip("127.0.2.1")).rule(), Rule::DangerousAllow);
        assert_eq!(p.check_peer(ip("127.0.5.1")).rule(), Rule::PeerDenyList);
        assert_eq!(
            p.check_client(ip("203.0.113.9")).rule(),
            Rule::ClientDenyList
        );
        assert!(p.check_client(ip("127.0.0.1")).is_allowed());
        assert!(!p.check_client(ip("0.0.0.0")).is_allowed());
    }
}
