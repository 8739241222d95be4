//! Loading the GeoIP databases and the policy, the start-up location self-check, and the
//! file watch that reloads databases when they change on disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use crate::config::Config;
use crate::policy::{DbInfo, Decision, GeoDb, GeoSet, Policy};

/// Reads the databases named by `[geo]` and builds the policy. Fails closed: a missing or
/// unreadable database is an error naming the key and the file.
///
/// # Errors
///
/// Fails when a database cannot be read or is not a `.mmdb` file.
pub fn load_policy(config: &Config, now: SystemTime) -> anyhow::Result<Policy> {
    let country = load_db("geo.country_db", &config.geo.country_db)?;
    warn_if_stale("geo.country_db", country.info(), config.geo.max_age, now);
    let asn = match &config.geo.asn_db {
        Some(path) => {
            let db = load_db("geo.asn_db", path)?;
            warn_if_stale("geo.asn_db", db.info(), config.geo.max_age, now);
            Some(db)
        }
        None => None,
    };
    let geo = GeoSet {
        country: Some(country),
        asn,
    };
    Ok(Policy::new(config.rules.clone(), Arc::new(geo)))
}

/// Refuses a relay whose own (advertised) addresses are outside the allowed region, unless
/// `policy.dangerous_allow_relay_outside_region` says otherwise.
///
/// # Errors
///
/// Fails naming the address, the rule and the override.
pub fn check_relay_location(config: &Config, policy: &Policy) -> anyhow::Result<()> {
    let r = &config.relay;
    let advertised = [r.external_v4.or(r.v4), r.external_v6.or(r.v6)];
    for ip in advertised.into_iter().flatten() {
        let d = policy.check_client(ip);
        if let Decision::Deny { rule, facts } = d {
            let country = facts
                .country
                .map_or_else(|| "unknown".to_owned(), |c| c.to_string());
            if config.dangerous_allow_relay_outside_region {
                tracing::warn!(
                    target: "eeaturn::policy",
                    relay = %ip,
                    country = %country,
                    rule = rule.id(),
                    "DANGEROUS: the relay's own address is outside the allowed region; starting anyway because policy.dangerous_allow_relay_outside_region = true"
                );
            } else {
                anyhow::bail!(
                    "the relay address {ip} (country {country}) is outside the allowed region \
                     {:?} (rule {}): media would be relayed outside it. Fix relay.addresses / \
                     relay.external_addresses, or for a lab setup only set \
                     policy.dangerous_allow_relay_outside_region = true",
                    config.rules.regions,
                    rule.id()
                );
            }
        }
    }
    Ok(())
}

/// Remembers the size and modification time of the database files to notice replacements.
#[derive(Debug)]
pub(super) struct DbWatch {
    files: Vec<(PathBuf, Option<(u64, SystemTime)>)>,
}

impl DbWatch {
    pub(super) fn new(config: &Config) -> Self {
        let mut files = vec![config.geo.country_db.clone()];
        files.extend(config.geo.asn_db.clone());
        Self {
            files: files
                .into_iter()
                .map(|p| {
                    let s = stamp(&p);
                    (p, s)
                })
                .collect(),
        }
    }

    /// Returns true when any file changed since the last call (or since creation).
    pub(super) fn changed(&mut self) -> bool {
        let mut changed = false;
        for (path, last) in &mut self.files {
            let now = stamp(path);
            if now != *last {
                *last = now;
                changed = true;
            }
        }
        changed
    }
}

fn stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

fn load_db(key: &str, path: &Path) -> anyhow::Result<GeoDb> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "cannot read {key} {}: the relay refuses to run without its database (see geo/README.md)",
            path.display()
        )
    })?;
    let db = GeoDb::from_bytes(bytes)
        .with_context(|| format!("{key} {} is not a usable .mmdb file", path.display()))?;
    tracing::info!(
        target: "eeaturn::policy",
        key,
        path = %path.display(),
        database_type = %db.info().database_type,
        build_epoch = db.info().build_epoch,
        sha256 = %db.info().sha256,
        "loaded database"
    );
    Ok(db)
}

/// Returns the age of a database by its build epoch.
pub fn db_age(info: &DbInfo, now: SystemTime) -> Duration {
    let built = UNIX_EPOCH + Duration::from_secs(info.build_epoch);
    now.duration_since(built).unwrap_or(Duration::ZERO)
}

fn warn_if_stale(key: &str, info: &DbInfo, max_age: Duration, now: SystemTime) {
    let age = db_age(info, now);
    if age > max_age {
        tracing::warn!(
            target: "eeaturn::policy",
            key,
            age_days = age.as_secs() / 86_400,
            max_age_days = max_age.as_secs() / 86_400,
            "database is older than geo.max_age; update it (see geo/README.md)"
        );
    }
}
