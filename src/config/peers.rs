//! The `[peers]` table: peer address rules applied before the geo policy.

use serde::Deserialize;

use super::{Error, parse_nets};
use crate::policy::Rules;

/// `[peers]` as written.
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

/// Validates `[peers]` into the peer part of `rules`.
pub(super) fn validate(raw: &RawPeers, rules: &mut Rules) -> Result<(), Error> {
    rules.peer_deny = parse_nets("peers.deny", &raw.deny)?;
    rules.peer_dangerous_allow = parse_nets("peers.dangerous_allow", &raw.dangerous_allow)?;
    Ok(())
}
