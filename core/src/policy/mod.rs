//! Residency policy: one decision for every address media may flow to or from.
//!
//! [`Policy::check_client`] runs at Allocate for the client's source address and
//! [`Policy::check_peer`] at CreatePermission and ChannelBind (Send, ChannelData and peer data
//! need a permission, so they are covered by the decision cached with it). A decision is a
//! value with the rule that made it and the facts it used, never an error.
//!
//! Precedence for a peer (first match wins; see docs/policy.md):
//! 1. unspecified address → deny;
//! 2. `peers.deny` → deny;
//! 3. one of the relay's own addresses → allow (`relay-host`); the port must then be in the
//!    relay port range ([`RelayAddresses::port_allowed`]), checked per ChannelBind and packet;
//! 4. a `[[policy.networks]]` override supplies country/ASN instead of the databases and lifts
//!    the special-purpose refusal; otherwise special-purpose ranges are refused unless
//!    `peers.dangerous_allow` lifts the refusal (the geo rules below still apply);
//! 5. the geo rules: `deny_asns`, `deny_countries`, `allow_asns`, region ∪ `allow_countries`,
//!    a known country outside them → deny, no country → `unknown` (deny by default).
//!
//! A client goes through 1, `clients.deny`, 4 (without the special-purpose refusal) and 5.
//! Pure: databases are handed in as a snapshot; no I/O, no clock.

pub mod geo;
mod special;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::host::RelayAddresses;

pub use geo::{CountryCode, DbInfo, GeoDb, GeoFacts, GeoSet};
pub use special::{canonical, special_purpose};

/// Who an address belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// The TURN client (checked at Allocate).
    Client,
    /// A peer (checked at CreatePermission and ChannelBind).
    Peer,
}

impl Subject {
    /// Returns a stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Peer => "peer",
        }
    }
}

/// The rule that decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// The address is unspecified (0.0.0.0, ::).
    Unspecified,
    /// The address is in `clients.deny`.
    ClientDenyList,
    /// The address is in `peers.deny`.
    PeerDenyList,
    /// The address is in a special-purpose range (named) and nothing lifts the refusal.
    SpecialPurpose(&'static str),
    /// The peer is one of the relay's own addresses (allowed on relay ports only).
    RelayHost,
    /// The peer is one of the relay's own addresses on a port outside the relay range.
    RelayHostPort,
    /// The ASN is in `policy.deny_asns`.
    DeniedAsn,
    /// The country is in `policy.deny_countries`.
    DeniedCountry,
    /// The ASN is in `policy.allow_asns`.
    AllowedAsn,
    /// The country is in the policy's region(s).
    InRegion,
    /// The country is in `policy.allow_countries`.
    AllowedCountry,
    /// The country is known and outside the region.
    OutsideRegion,
    /// No country is known (not in the database, or continent only); `policy.unknown` is deny.
    UnknownLocation,
    /// No country is known and `policy.unknown = "allow"`.
    UnknownAllowed,
}

impl Rule {
    /// Returns a stable identifier for reason phrases, logs, metrics and evidence.
    pub fn id(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified-address",
            Self::ClientDenyList => "clients.deny",
            Self::PeerDenyList => "peers.deny",
            Self::SpecialPurpose(_) => "special-purpose-address",
            Self::RelayHost => "relay-host",
            Self::RelayHostPort => "relay-host-port",
            Self::DeniedAsn => "policy.deny_asns",
            Self::DeniedCountry => "policy.deny_countries",
            Self::AllowedAsn => "policy.allow_asns",
            Self::InRegion => "region",
            Self::AllowedCountry => "policy.allow_countries",
            Self::OutsideRegion => "outside-region",
            Self::UnknownLocation => "unknown-location",
            Self::UnknownAllowed => "policy.unknown",
        }
    }
}

/// Where the country/ASN of a decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FactSource {
    /// No lookup was needed (the decision came before it).
    None,
    /// The GeoIP/ASN databases.
    Database,
    /// A `[[policy.networks]]` override.
    Override,
}

/// The facts a decision used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Facts {
    /// Country, if known.
    pub country: Option<CountryCode>,
    /// Continent, if the database only knows that.
    pub continent: Option<CountryCode>,
    /// ASN, if known.
    pub asn: Option<u32>,
    /// Where they came from.
    pub source: FactSource,
}

impl Facts {
    /// No facts: the decision came before any lookup.
    pub const NONE: Self = Self {
        country: None,
        continent: None,
        asn: None,
        source: FactSource::None,
    };
}

/// A policy decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Relaying is allowed.
    Allow {
        /// The deciding rule.
        rule: Rule,
        /// The facts used.
        facts: Facts,
    },
    /// Relaying is refused (STUN 403).
    Deny {
        /// The deciding rule.
        rule: Rule,
        /// The facts used.
        facts: Facts,
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
            Self::Allow { rule, .. } | Self::Deny { rule, .. } => rule,
        }
    }

    /// Returns the facts used.
    pub fn facts(self) -> Facts {
        match self {
            Self::Allow { facts, .. } | Self::Deny { facts, .. } => facts,
        }
    }
}

/// A static network with a declared location (the operator's own networks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkOverride {
    /// The network.
    pub net: IpNet,
    /// Its declared country.
    pub country: CountryCode,
    /// Its declared ASN, if any.
    pub asn: Option<u32>,
}

/// The rules, as validated from the configuration.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Names of the regions in force (for reports), e.g. `["eea"]`.
    pub regions: Vec<String>,
    /// Countries of the regions.
    pub region_countries: BTreeSet<CountryCode>,
    /// `policy.allow_countries`.
    pub allow_countries: BTreeSet<CountryCode>,
    /// `policy.deny_countries`.
    pub deny_countries: BTreeSet<CountryCode>,
    /// `policy.allow_asns`.
    pub allow_asns: BTreeSet<u32>,
    /// `policy.deny_asns`.
    pub deny_asns: BTreeSet<u32>,
    /// `policy.unknown = "allow"`.
    pub unknown_allowed: bool,
    /// `[[policy.networks]]`, most specific first.
    pub networks: Vec<NetworkOverride>,
    /// `peers.deny`.
    pub peer_deny: Vec<IpNet>,
    /// `peers.dangerous_allow`.
    pub peer_dangerous_allow: Vec<IpNet>,
    /// `clients.deny`.
    pub client_deny: Vec<IpNet>,
}

impl Default for Rules {
    /// The EEA-free empty rule set: no region, unknown denied, no relay ports.
    fn default() -> Self {
        Self {
            regions: Vec::new(),
            region_countries: BTreeSet::new(),
            allow_countries: BTreeSet::new(),
            deny_countries: BTreeSet::new(),
            allow_asns: BTreeSet::new(),
            deny_asns: BTreeSet::new(),
            unknown_allowed: false,
            networks: Vec::new(),
            peer_deny: Vec::new(),
            peer_dangerous_allow: Vec::new(),
            client_deny: Vec::new(),
        }
    }
}

/// The rules and the databases in force: cheap to clone, replaced whole on reload.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Arc<Rules>,
    geo: Arc<GeoSet>,
}

impl Policy {
    /// Creates a policy. Networks are sorted most-specific first.
    pub fn new(mut rules: Rules, geo: Arc<GeoSet>) -> Self {
        rules
            .networks
            .sort_by_key(|n| std::cmp::Reverse(n.net.prefix_len()));
        Self {
            rules: Arc::new(rules),
            geo,
        }
    }

    /// A policy without databases that allows every address its lists do not refuse: for
    /// tests of protocol mechanics only, never for a relay.
    #[doc(hidden)]
    pub fn dangerous_without_geo(
        peer_deny: Vec<IpNet>,
        peer_dangerous_allow: Vec<IpNet>,
        client_deny: Vec<IpNet>,
    ) -> Self {
        Self::new(
            Rules {
                unknown_allowed: true,
                peer_deny,
                peer_dangerous_allow,
                client_deny,
                ..Rules::default()
            },
            Arc::new(GeoSet::default()),
        )
    }

    /// Returns the rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Returns the databases.
    pub fn geo(&self) -> &GeoSet {
        &self.geo
    }

    /// Decides whether a client at `ip` may allocate.
    pub fn check_client(&self, ip: IpAddr) -> Decision {
        let ip = canonical(ip);
        if ip.is_unspecified() {
            return deny(Rule::Unspecified, Facts::NONE);
        }
        if contains(&self.rules.client_deny, ip) {
            return deny(Rule::ClientDenyList, Facts::NONE);
        }
        let facts = self.override_facts(ip).unwrap_or_else(|| self.lookup(ip));
        self.geo_rules(facts)
    }

    /// Decides whether media may be relayed to and from a peer at `ip`; `host` names the
    /// relay's own addresses (allowed by [`Rule::RelayHost`], on relay ports only: see
    /// [`RelayAddresses::port_allowed`]).
    pub fn check_peer(&self, ip: IpAddr, host: &RelayAddresses) -> Decision {
        let ip = canonical(ip);
        if ip.is_unspecified() {
            return deny(Rule::Unspecified, Facts::NONE);
        }
        if contains(&self.rules.peer_deny, ip) {
            return deny(Rule::PeerDenyList, Facts::NONE);
        }
        if host.is_own_ip(ip) {
            return Decision::Allow {
                rule: Rule::RelayHost,
                facts: Facts::NONE,
            };
        }
        let facts = match self.override_facts(ip) {
            Some(f) => f,
            None => {
                if let Some(name) = special_purpose(ip) {
                    if !contains(&self.rules.peer_dangerous_allow, ip) {
                        return deny(Rule::SpecialPurpose(name), Facts::NONE);
                    }
                }
                self.lookup(ip)
            }
        };
        self.geo_rules(facts)
    }

    fn override_facts(&self, ip: IpAddr) -> Option<Facts> {
        self.rules
            .networks
            .iter()
            .find(|n| n.net.contains(&ip))
            .map(|n| Facts {
                country: Some(n.country),
                continent: None,
                asn: n.asn,
                source: FactSource::Override,
            })
    }

    fn lookup(&self, ip: IpAddr) -> Facts {
        let g = self.geo.lookup(ip);
        Facts {
            country: g.country,
            continent: g.continent,
            asn: g.asn,
            source: FactSource::Database,
        }
    }

    fn geo_rules(&self, facts: Facts) -> Decision {
        let r = &self.rules;
        if facts.asn.is_some_and(|a| r.deny_asns.contains(&a)) {
            return deny(Rule::DeniedAsn, facts);
        }
        if facts.country.is_some_and(|c| r.deny_countries.contains(&c)) {
            return deny(Rule::DeniedCountry, facts);
        }
        if facts.asn.is_some_and(|a| r.allow_asns.contains(&a)) {
            return allow(Rule::AllowedAsn, facts);
        }
        match facts.country {
            Some(c) if r.region_countries.contains(&c) => allow(Rule::InRegion, facts),
            Some(c) if r.allow_countries.contains(&c) => allow(Rule::AllowedCountry, facts),
            Some(_) => deny(Rule::OutsideRegion, facts),
            None if r.unknown_allowed => allow(Rule::UnknownAllowed, facts),
            None => deny(Rule::UnknownLocation, facts),
        }
    }
}

fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&ip))
}

fn allow(rule: Rule, facts: Facts) -> Decision {
    Decision::Allow { rule, facts }
}

fn deny(rule: Rule, facts: Facts) -> Decision {
    Decision::Deny { rule, facts }
}

#[cfg(test)]
mod tests;
