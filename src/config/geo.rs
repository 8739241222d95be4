//! The `[geo]` table: the GeoIP country and ASN databases and how they are watched.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{Error, duration, invalid};

/// `[geo]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeo {
    /// Country database (`.mmdb`); relative to the config file.
    pub country_db: String,
    /// ASN database (`.mmdb`); needed for ASN rules.
    #[serde(default)]
    pub asn_db: Option<String>,
    /// A database older than this (by its build epoch) is reported as stale, e.g. `"45d"`.
    #[serde(
        default = "default_max_age",
        deserialize_with = "duration::deserialize"
    )]
    pub max_age: Duration,
    /// How often the database files are checked for changes; `"0s"` disables the check.
    #[serde(
        default = "default_watch_interval",
        deserialize_with = "duration::deserialize"
    )]
    pub watch_interval: Duration,
}

fn default_max_age() -> Duration {
    Duration::from_secs(45 * 86_400)
}
fn default_watch_interval() -> Duration {
    Duration::from_secs(60)
}

/// Where the GeoIP databases are and how they are watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoConfig {
    /// Country database.
    pub country_db: PathBuf,
    /// ASN database.
    pub asn_db: Option<PathBuf>,
    /// Age beyond which a database is reported stale.
    pub max_age: Duration,
    /// File check interval; zero disables it.
    pub watch_interval: Duration,
}

/// Validates `[geo]`; paths resolve against `base`.
pub(super) fn validate(raw: &RawGeo, base: &Path) -> Result<GeoConfig, Error> {
    if raw.country_db.trim().is_empty() {
        return Err(invalid(
            "geo.country_db",
            "must name a country .mmdb file (see geo/README.md)",
        ));
    }
    let asn_db = match raw.asn_db.as_deref().map(str::trim) {
        Some("") => {
            return Err(invalid(
                "geo.asn_db",
                "is empty; name an ASN .mmdb file or leave the key out",
            ));
        }
        Some(p) => Some(base.join(p)),
        None => None,
    };
    Ok(GeoConfig {
        country_db: base.join(raw.country_db.trim()),
        asn_db,
        max_age: raw.max_age,
        watch_interval: raw.watch_interval,
    })
}
