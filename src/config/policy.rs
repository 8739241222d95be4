//! The `[policy]` table: the residency rules (regions, countries, ASNs, declared networks).

use std::collections::BTreeSet;

use serde::Deserialize;

use super::{Error, invalid, parse_nets, regions};
use crate::policy::{CountryCode, NetworkOverride, Rules};

/// `[policy]` as written.
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
    /// What happens to an address whose country the database does not know.
    #[serde(default)]
    pub unknown: UnknownLocation,
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
            unknown: UnknownLocation::default(),
            dangerous_allow_relay_outside_region: false,
            networks: Vec::new(),
        }
    }
}

fn default_regions() -> Vec<String> {
    vec!["eea".to_owned()]
}

/// `policy.unknown`: `"deny"` or `"allow"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownLocation {
    /// Refuse an address of unknown country (rule `unknown-location`).
    #[default]
    Deny,
    /// Allow it (rule `policy.unknown`).
    Allow,
}

/// `[[policy.networks]]` as written.
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

/// Validates `[policy]` into the rules; the `[peers]` and `[clients]` parts are left empty.
/// `have_asn_db` says whether `geo.asn_db` is set (ASN rules need it).
pub(super) fn validate(raw: &RawPolicy, have_asn_db: bool) -> Result<Rules, Error> {
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
        unknown_allowed: raw.unknown == UnknownLocation::Allow,
        networks,
        ..Rules::default()
    })
}
