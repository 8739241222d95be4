//! GeoIP country and ASN lookups over `.mmdb` databases.
//!
//! Databases are read into memory by the shell ([`GeoDb::from_bytes`]) and handed to the core
//! as an immutable snapshot; a lookup is a pure memory read. The country record is decoded in
//! the shapes found in the wild: MaxMind GeoIP2/GeoLite2 and DB-IP (`country.iso_code`,
//! `registered_country.iso_code`, `continent.code`), the flat `country_code` of the open
//! ip-location-db files, and IPinfo's string-valued `country` / `continent`. ASN records use
//! `autonomous_system_number` / `autonomous_system_organization`, or IPinfo's `asn: "AS123"`.

use std::fmt;
use std::net::IpAddr;

use ring::digest;
use serde::Deserialize;

use super::canonical;

/// An ISO 3166-1 alpha-2 country code, upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// Parses a two-letter code, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 2 || !b.iter().all(u8::is_ascii_alphabetic) {
            return None;
        }
        Some(Self([b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()]))
    }

    /// Returns the code as text.
    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the databases say about one address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoFacts {
    /// The country the address is located in.
    pub country: Option<CountryCode>,
    /// The country the network is registered to, where the database says.
    pub registered_country: Option<CountryCode>,
    /// The continent code (e.g. "EU"), where the database says.
    pub continent: Option<CountryCode>,
    /// The autonomous system number.
    pub asn: Option<u32>,
}

/// Identity of a loaded database, recorded with every decision it informs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbInfo {
    /// `database_type` from the metadata, e.g. "GeoLite2-Country".
    pub database_type: String,
    /// `build_epoch` from the metadata (Unix seconds).
    pub build_epoch: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

/// Errors of loading a database.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// The bytes are not a MaxMind DB.
    #[error("not a valid .mmdb database: {0}")]
    Invalid(String),
}

/// One loaded `.mmdb` database.
pub struct GeoDb {
    reader: maxminddb::Reader<Vec<u8>>,
    info: DbInfo,
}

impl fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoDb").field("info", &self.info).finish()
    }
}

impl GeoDb {
    /// Parses a database from its bytes.
    ///
    /// # Errors
    ///
    /// Returns [`GeoError::Invalid`] when the bytes are not a MaxMind DB.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GeoError> {
        let sha256 = hex::encode(digest::digest(&digest::SHA256, &bytes));
        let reader =
            maxminddb::Reader::from_source(bytes).map_err(|e| GeoError::Invalid(e.to_string()))?;
        let info = DbInfo {
            database_type: reader.metadata().database_type.clone(),
            build_epoch: reader.metadata().build_epoch,
            sha256,
        };
        Ok(Self { reader, info })
    }

    /// Returns the database's identity.
    pub fn info(&self) -> &DbInfo {
        &self.info
    }

    /// Looks up the country fields of `ip` into `facts`.
    pub fn lookup_country(&self, ip: IpAddr, facts: &mut GeoFacts) {
        let Ok(result) = self.reader.lookup(canonical(ip)) else {
            return;
        };
        let Ok(Some(rec)) = result.decode::<CountryRecord<'_>>() else {
            return;
        };
        facts.country = rec
            .country
            .as_ref()
            .and_then(Field::code)
            .or_else(|| rec.country_code.and_then(CountryCode::parse));
        facts.registered_country = rec.registered_country.as_ref().and_then(Field::code);
        facts.continent = rec
            .continent
            .as_ref()
            .and_then(Field::code)
            .or_else(|| rec.continent_code.and_then(CountryCode::parse));
    }

    /// Looks up the ASN of `ip` into `facts`.
    pub fn lookup_asn(&self, ip: IpAddr, facts: &mut GeoFacts) {
        let Ok(result) = self.reader.lookup(canonical(ip)) else {
            return;
        };
        let Ok(Some(rec)) = result.decode::<AsnRecord<'_>>() else {
            return;
        };
        facts.asn = rec.autonomous_system_number.or_else(|| {
            rec.asn
                .and_then(|s| s.strip_prefix("AS").or(Some(s)))
                .and_then(|s| s.parse().ok())
        });
    }
}

/// The country and ASN databases in force.
#[derive(Debug, Default)]
pub struct GeoSet {
    /// The country database.
    pub country: Option<GeoDb>,
    /// The ASN database.
    pub asn: Option<GeoDb>,
}

impl GeoSet {
    /// Looks `ip` up in both databases.
    pub fn lookup(&self, ip: IpAddr) -> GeoFacts {
        let mut facts = GeoFacts::default();
        if let Some(db) = &self.country {
            db.lookup_country(ip, &mut facts);
        }
        if let Some(db) = &self.asn {
            db.lookup_asn(ip, &mut facts);
        }
        facts
    }
}

/// A country-ish field: a map with `iso_code` / `code`, or a bare string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Field<'a> {
    Map {
        #[serde(borrow, default)]
        iso_code: Option<&'a str>,
        #[serde(borrow, default)]
        code: Option<&'a str>,
    },
    Code(&'a str),
}

impl Field<'_> {
    fn code(&self) -> Option<CountryCode> {
        match self {
            Self::Map { iso_code, code } => iso_code.or(*code).and_then(CountryCode::parse),
            Self::Code(s) => CountryCode::parse(s),
        }
    }
}

#[derive(Deserialize)]
struct CountryRecord<'a> {
    #[serde(borrow, default)]
    country: Option<Field<'a>>,
    #[serde(borrow, default)]
    registered_country: Option<Field<'a>>,
    #[serde(borrow, default)]
    continent: Option<Field<'a>>,
    #[serde(borrow, default)]
    country_code: Option<&'a str>,
    /// IPinfo keeps the continent code here (and a name in `continent`).
    #[serde(borrow, default)]
    continent_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct AsnRecord<'a> {
    #[serde(default)]
    autonomous_system_number: Option<u32>,
    #[serde(borrow, default)]
    asn: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_codes() {
        assert_eq!(CountryCode::parse("de").unwrap().as_str(), "DE");
        assert!(CountryCode::parse("DEU").is_none());
        assert!(CountryCode::parse("1A").is_none());
    }
}
