//! The `[clients]` table: client address rules.

use serde::Deserialize;

use super::{Error, parse_nets};
use crate::policy::Rules;

/// `[clients]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClients {
    /// CIDRs refused at Allocate.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// Validates `[clients]` into the client part of `rules`.
pub(super) fn validate(raw: &RawClients, rules: &mut Rules) -> Result<(), Error> {
    rules.client_deny = parse_nets("clients.deny", &raw.deny)?;
    Ok(())
}
