//! Builds MaxMind DB (`.mmdb`) files from CSV: the loopback test world and the open ASN data.
//!
//! The input is text the caller has already read; the output is the bytes of a database. Nothing
//! here reads a clock, a file or the environment, so the same CSV and build epoch always give
//! the same bytes (the fixtures in `geo/testdata/` are checked byte for byte).
//!
//! # CSV rows
//!
//! One network per line, in either of two forms:
//!
//! ```text
//! 127.0.2.0/24,,FR,EU                       CIDR in column 1, column 2 empty
//! 127.0.2.0,127.0.2.255,FR,EU               inclusive range, as in the ip-location-db files
//! ```
//!
//! - country rows: `network_or_start,end_or_empty,country,continent`; the continent column
//!   may be left out (ip-location-db country files have three columns), and either the
//!   country or the continent may be empty, not both;
//! - ASN rows: `network_or_start,end_or_empty,asn,organization`; the organization may be
//!   left out or empty, and may be double-quoted (`"Comcast, LLC"`, `""` for a quote).
//!
//! Empty lines and lines starting with `#` are skipped, and so is a header line (a first row
//! made of column names). A leading `# build_epoch: N` comment declares the epoch a file is
//! meant to be built with ([`declared_build_epoch`]). Later rows win where rows overlap.
//!
//! # What the databases look like
//!
//! An IPv6 tree with IPv4 under `::/96` and the usual IPv4 aliases (`::ffff:0:0/96`,
//! `2001::/32` Teredo, `2002::/16` 6to4), as in MaxMind's own databases. Rows inside an alias
//! network are dropped (those addresses resolve to the IPv4 data) and counted in
//! [`BuildSummary::aliased_networks_skipped`]; the real ip-location-db ASN file has such rows.
//! Because IPv4 lives under `::/96`, `::1` and `0.0.0.1` are the same leaf in any such file.
//! Reserved networks (loopback, documentation ranges) are writable: the test world needs them.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, UNIX_EPOCH};

use ipnet::{IpNet, Ipv4Subnets, Ipv6Net, Ipv6Subnets};
use mmdb_writer::{IpVersion, Value, Writer};

/// The record layout of a country database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CountrySchema {
    /// MaxMind GeoIP2 layout: `country.iso_code`, `registered_country.iso_code`,
    /// `continent.code`.
    MaxMind,
    /// The flat layout of the open ip-location-db files: `country_code`.
    Flat,
}

/// What a database holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DbKind {
    /// Country (and continent) per network.
    Country(CountrySchema),
    /// Autonomous system number and organization per network.
    Asn,
}

impl DbKind {
    /// Returns the `database_type` written to the metadata.
    pub fn database_type(self) -> &'static str {
        match self {
            Self::Country(CountrySchema::MaxMind) => "GeoIP2-Country",
            Self::Country(CountrySchema::Flat) => "geo-whois-asn-country",
            Self::Asn => "GeoLite2-ASN",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Self::Country(_) => "Country database built from CSV by eeaturn",
            Self::Asn => "ASN database built from CSV by eeaturn",
        }
    }
}

/// Builds a country database from CSV rows `network_or_start,end_or_empty,country,continent`.
///
/// With [`CountrySchema::Flat`], rows without a country are skipped.
///
/// # Errors
///
/// Returns [`BuildError::Row`] naming the first line that cannot be used, or
/// [`BuildError::Epoch`] when `build_epoch` is not a representable time.
pub fn build_country_db(
    csv: &str,
    schema: CountrySchema,
    build_epoch: u64,
) -> Result<Vec<u8>, BuildError> {
    let mut builder = DbBuilder::new(DbKind::Country(schema), build_epoch)?;
    builder.add_csv("", csv)?;
    builder.finish()
}

/// Builds an ASN database from CSV rows `network_or_start,end_or_empty,asn,organization`.
///
/// Reads the ip-location-db `asn-ipv4.csv` and `asn-ipv6.csv` files as they are published
/// (no header, inclusive ranges, quoted organizations).
///
/// # Errors
///
/// Returns [`BuildError::Row`] naming the first line that cannot be used, or
/// [`BuildError::Epoch`] when `build_epoch` is not a representable time.
pub fn build_asn_db(csv: &str, build_epoch: u64) -> Result<Vec<u8>, BuildError> {
    let mut builder = DbBuilder::new(DbKind::Asn, build_epoch)?;
    builder.add_csv("", csv)?;
    builder.finish()
}

/// Returns the epoch a CSV declares in a `# build_epoch: N` comment before its first row.
///
/// # Errors
///
/// Returns [`BuildError::Row`] when the comment is there but `N` is not a number.
pub fn declared_build_epoch(csv: &str) -> Result<Option<u64>, BuildError> {
    for (index, raw) in csv.lines().enumerate() {
        let line = raw.trim();
        let Some(comment) = line.strip_prefix('#') else {
            if line.is_empty() {
                continue;
            }
            break;
        };
        let Some(value) = comment.trim_start().strip_prefix(EPOCH_KEY) else {
            continue;
        };
        let value = value.trim();
        return value.parse().map(Some).map_err(|_| BuildError::Row {
            input: String::new(),
            line: index + 1,
            problem: RowProblem::Epoch {
                value: shorten(value),
            },
        });
    }
    Ok(None)
}

/// Builds one database from one or more CSV inputs, in order.
///
/// [`build_country_db`] and [`build_asn_db`] are this with a single input; use the builder to
/// combine files (ip-location-db publishes IPv4 and IPv6 separately) and to report what was
/// skipped.
#[derive(Debug)]
pub struct DbBuilder {
    kind: DbKind,
    writer: Writer,
    summary: BuildSummary,
}

/// Counts of what went into a database, for the operator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildSummary {
    /// Rows written.
    pub rows: u64,
    /// CIDR networks written (a range row may need several).
    pub networks: u64,
    /// Rows skipped because a flat country database has no place for a continent alone.
    pub rows_without_country_skipped: u64,
    /// Networks dropped because they lie inside the IPv4 alias networks.
    pub aliased_networks_skipped: u64,
}

impl DbBuilder {
    /// Starts an empty database of `kind` stamped with `build_epoch` (Unix seconds).
    ///
    /// # Errors
    ///
    /// Returns [`BuildError::Epoch`] when `build_epoch` is not a representable time.
    pub fn new(kind: DbKind, build_epoch: u64) -> Result<Self, BuildError> {
        let epoch = UNIX_EPOCH
            .checked_add(Duration::from_secs(build_epoch))
            .ok_or(BuildError::Epoch(build_epoch))?;
        let writer = Writer::builder(kind.database_type())
            .ip_version(IpVersion::V6)
            .description(&[("en", kind.description())])
            .build_epoch(epoch)
            .build();
        Ok(Self {
            kind,
            writer,
            summary: BuildSummary::default(),
        })
    }

    /// Adds the rows of one CSV text; `input` names it in errors (a file name, or "").
    ///
    /// # Errors
    ///
    /// Returns [`BuildError::Row`] for the first line that cannot be used; rows before it
    /// have been added.
    pub fn add_csv(&mut self, input: &str, csv: &str) -> Result<(), BuildError> {
        let csv = csv.strip_prefix('\u{feff}').unwrap_or(csv);
        let mut seen_row = false;
        for (index, raw) in csv.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let first_row = !seen_row;
            seen_row = true;
            self.add_line(line, first_row)
                .map_err(|problem| BuildError::Row {
                    input: input.to_owned(),
                    line: index + 1,
                    problem,
                })?;
        }
        Ok(())
    }

    /// Returns the counts so far.
    pub fn summary(&self) -> BuildSummary {
        self.summary
    }

    /// Serializes the database.
    ///
    /// # Errors
    ///
    /// Returns [`BuildError::Write`] when the writer cannot lay out the tree.
    pub fn finish(&self) -> Result<Vec<u8>, BuildError> {
        Ok(self.writer.to_bytes()?)
    }

    fn add_line(&mut self, line: &str, first_row: bool) -> Result<(), RowProblem> {
        let fields = split_fields(line)?;
        if first_row && is_header(&fields) {
            return Ok(());
        }
        if !(3..=4).contains(&fields.len()) {
            return Err(RowProblem::FieldCount {
                expected: match self.kind {
                    DbKind::Country(_) => "network_or_start,end_or_empty,country[,continent]",
                    DbKind::Asn => "network_or_start,end_or_empty,asn[,organization]",
                },
                found: fields.len(),
            });
        }
        let networks = parse_networks(&fields[0], &fields[1])?;
        let field = |i: usize| fields.get(i).map_or("", String::as_str);
        let value = match self.kind {
            DbKind::Country(schema) => {
                let country = parse_country(field(2))?;
                let continent = parse_continent(field(3))?;
                match (schema, country, continent) {
                    (_, None, None) => return Err(RowProblem::NoLocation),
                    (CountrySchema::Flat, None, Some(_)) => {
                        self.summary.rows_without_country_skipped += 1;
                        return Ok(());
                    }
                    (CountrySchema::Flat, Some(country), _) => {
                        Value::map([("country_code", Value::from(country.as_str()))])
                    }
                    (CountrySchema::MaxMind, country, continent) => {
                        maxmind_country_value(country, continent)
                    }
                }
            }
            DbKind::Asn => {
                let asn = parse_asn(field(2))?;
                let organization = field(3);
                let mut entries = vec![("autonomous_system_number", Value::from(asn))];
                if !organization.is_empty() {
                    entries.push(("autonomous_system_organization", Value::from(organization)));
                }
                Value::map(entries)
            }
        };
        for network in networks {
            self.insert_outside_aliases(network, &value)?;
        }
        self.summary.rows += 1;
        Ok(())
    }

    /// Inserts `network`, leaving out the parts that lie in the IPv4 alias networks and
    /// splitting it where it would cover one of them (or the IPv4 subtree), so the aliases
    /// the writer installs keep pointing at the IPv4 data.
    fn insert_outside_aliases(&mut self, network: IpNet, value: &Value) -> Result<(), RowProblem> {
        let IpNet::V6(v6) = network else {
            self.writer
                .insert_value(network, value.clone())
                .map_err(RowProblem::Write)?;
            self.summary.networks += 1;
            return Ok(());
        };
        if ipv4_alias_networks()
            .iter()
            .any(|alias| alias.contains(&v6))
        {
            self.summary.aliased_networks_skipped += 1;
            return Ok(());
        }
        let covers_protected = ipv4_alias_networks()
            .iter()
            .chain(std::iter::once(&IPV4_SUBTREE))
            .any(|protected| v6 != *protected && v6.contains(protected));
        if covers_protected {
            // The prefix is shorter than the protected network's, so it is below 128.
            for half in v6
                .subnets(v6.prefix_len() + 1)
                .map_err(|_| RowProblem::Network {
                    value: v6.to_string(),
                })?
            {
                self.insert_outside_aliases(IpNet::V6(half), value)?;
            }
            return Ok(());
        }
        self.writer
            .insert_value(network, value.clone())
            .map_err(RowProblem::Write)?;
        self.summary.networks += 1;
        Ok(())
    }
}

/// Errors of building a database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A CSV line cannot be used.
    #[error("{}line {line}: {problem}", InputPrefix(.input))]
    Row {
        /// The input the line is in, as passed to [`DbBuilder::add_csv`] ("" if unnamed).
        input: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        problem: RowProblem,
    },
    /// The build epoch is not a representable time.
    #[error("build epoch {0} is out of range")]
    Epoch(u64),
    /// The writer could not lay out the database.
    #[error("cannot write the database: {0}")]
    Write(#[from] mmdb_writer::Error),
}

/// What is wrong with one CSV line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RowProblem {
    /// The line has too few or too many fields.
    #[error("expected the fields {expected}, found {found} field(s)")]
    FieldCount {
        /// The expected layout.
        expected: &'static str,
        /// How many fields the line has.
        found: usize,
    },
    /// The line is not CSV the `csv` crate can read.
    #[error("not a CSV row: {0}")]
    Csv(String),
    /// A field is not an IP address.
    #[error("`{value}` is not an IP address")]
    Address {
        /// The field, shortened.
        value: String,
    },
    /// A field is a number, as in the ip-location-db `-num.csv` files.
    #[error("`{value}` is a numeric address; use the files with dotted/colon addresses")]
    NumericAddress {
        /// The field, shortened.
        value: String,
    },
    /// Column 1 is not a CIDR network.
    #[error("`{value}` is not a CIDR network")]
    Network {
        /// The field, shortened.
        value: String,
    },
    /// A CIDR network has bits set after its prefix.
    #[error("`{value}` has host bits set (did you mean {network}?)")]
    HostBits {
        /// The field, shortened.
        value: String,
        /// The network with the host bits cleared.
        network: String,
    },
    /// Column 1 is a CIDR network but column 2 is not empty.
    #[error("column 1 is a CIDR network, so column 2 must be empty (found `{value}`)")]
    NetworkWithEnd {
        /// Column 2, shortened.
        value: String,
    },
    /// A range mixes IPv4 and IPv6.
    #[error("range {start} - {end} mixes IPv4 and IPv6")]
    MixedFamilies {
        /// The start address.
        start: IpAddr,
        /// The end address.
        end: IpAddr,
    },
    /// A range ends before it starts.
    #[error("range {start} - {end} ends before it starts")]
    StartAfterEnd {
        /// The start address.
        start: IpAddr,
        /// The end address.
        end: IpAddr,
    },
    /// The country is not two ASCII letters.
    #[error("`{value}` is not an ISO 3166-1 alpha-2 country code")]
    Country {
        /// The field, shortened.
        value: String,
    },
    /// The continent is not one of AF, AN, AS, EU, NA, OC, SA.
    #[error("`{value}` is not a continent code (AF, AN, AS, EU, NA, OC, SA)")]
    Continent {
        /// The field, shortened.
        value: String,
    },
    /// A country row has neither a country nor a continent.
    #[error("the row has neither a country nor a continent")]
    NoLocation,
    /// The ASN is not a number from 0 to 4294967295.
    #[error("`{value}` is not an AS number")]
    Asn {
        /// The field, shortened.
        value: String,
    },
    /// A `# build_epoch:` comment does not hold a number.
    #[error("`{value}` is not a build epoch (Unix seconds)")]
    Epoch {
        /// The value, shortened.
        value: String,
    },
    /// The writer refused the network.
    #[error("cannot insert the network: {0}")]
    Write(mmdb_writer::Error),
}

/// A two-letter upper-case code (country or continent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Code([u8; 2]);

impl Code {
    fn as_str(&self) -> &str {
        // Both bytes are ASCII upper-case letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

fn maxmind_country_value(country: Option<Code>, continent: Option<Code>) -> Value {
    let mut entries = Vec::with_capacity(3);
    if let Some(country) = country {
        let iso = || Value::map([("iso_code", Value::from(country.as_str()))]);
        entries.push(("country", iso()));
        entries.push(("registered_country", iso()));
    }
    if let Some(continent) = continent {
        entries.push((
            "continent",
            Value::map([("code", Value::from(continent.as_str()))]),
        ));
    }
    Value::map(entries)
}

/// Splits one line into fields with the `csv` crate (RFC 4180 quoting: `"Comcast, LLC"`,
/// `""` for a quote inside), fields trimmed. Each line is read on its own, so a quote left
/// open cannot swallow the rows after it.
fn split_fields(line: &str) -> Result<Vec<String>, RowProblem> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .trim(csv::Trim::All)
        .from_reader(line.as_bytes());
    let mut record = csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => Ok(record.iter().map(str::to_owned).collect()),
        Ok(false) => Ok(Vec::new()),
        Err(e) => Err(RowProblem::Csv(e.to_string())),
    }
}

/// A header is a first row of column names: every field a word, the first not an address.
fn is_header(fields: &[String]) -> bool {
    let word = |f: &String| {
        f.starts_with(|c: char| c.is_ascii_alphabetic())
            && f.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ' '))
    };
    fields.iter().all(word) && fields.first().is_some_and(|f| f.parse::<IpAddr>().is_err())
}

fn parse_networks(first: &str, second: &str) -> Result<Vec<IpNet>, RowProblem> {
    if first.contains('/') {
        if !second.is_empty() {
            return Err(RowProblem::NetworkWithEnd {
                value: shorten(second),
            });
        }
        let network: IpNet = first.parse().map_err(|_| RowProblem::Network {
            value: shorten(first),
        })?;
        if network.trunc() != network {
            return Err(RowProblem::HostBits {
                value: shorten(first),
                network: network.trunc().to_string(),
            });
        }
        return Ok(vec![network]);
    }
    let start = parse_address(first)?;
    if second.is_empty() {
        return Ok(vec![IpNet::from(start)]);
    }
    let end = parse_address(second)?;
    match (start, end) {
        (IpAddr::V4(s), IpAddr::V4(e)) if s <= e => {
            Ok(Ipv4Subnets::new(s, e, 0).map(IpNet::V4).collect())
        }
        (IpAddr::V6(s), IpAddr::V6(e)) if s <= e => {
            Ok(Ipv6Subnets::new(s, e, 0).map(IpNet::V6).collect())
        }
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
            Err(RowProblem::StartAfterEnd { start, end })
        }
        _ => Err(RowProblem::MixedFamilies { start, end }),
    }
}

fn parse_address(field: &str) -> Result<IpAddr, RowProblem> {
    field.parse().map_err(|_| {
        if !field.is_empty() && field.bytes().all(|b| b.is_ascii_digit()) {
            RowProblem::NumericAddress {
                value: shorten(field),
            }
        } else {
            RowProblem::Address {
                value: shorten(field),
            }
        }
    })
}

fn parse_code(field: &str) -> Option<Code> {
    match field.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Some(Code([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
        }
        _ => None,
    }
}

fn parse_country(field: &str) -> Result<Option<Code>, RowProblem> {
    if field.is_empty() {
        return Ok(None);
    }
    parse_code(field)
        .map(Some)
        .ok_or_else(|| RowProblem::Country {
            value: shorten(field),
        })
}

fn parse_continent(field: &str) -> Result<Option<Code>, RowProblem> {
    if field.is_empty() {
        return Ok(None);
    }
    match parse_code(field) {
        Some(code) if CONTINENTS.contains(&code.as_str()) => Ok(Some(code)),
        _ => Err(RowProblem::Continent {
            value: shorten(field),
        }),
    }
}

fn parse_asn(field: &str) -> Result<u32, RowProblem> {
    let digits = field
        .strip_prefix("AS")
        .or_else(|| field.strip_prefix("as"))
        .unwrap_or(field);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RowProblem::Asn {
            value: shorten(field),
        });
    }
    digits.parse().map_err(|_| RowProblem::Asn {
        value: shorten(field),
    })
}

/// Keeps error messages readable when a line is garbage.
fn shorten(field: &str) -> String {
    const MAX: usize = 64;
    match field.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &field[..cut]),
        None => field.to_owned(),
    }
}

/// The networks the writer aliases to the IPv4 subtree: IPv4-mapped, Teredo, 6to4.
fn ipv4_alias_networks() -> [Ipv6Net; 3] {
    [IPV4_MAPPED, TEREDO, SIX_TO_FOUR]
}

struct InputPrefix<'a>(&'a String);

impl fmt::Display for InputPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, "{}: ", self.0)
        }
    }
}

/// The comment key of [`declared_build_epoch`].
const EPOCH_KEY: &str = "build_epoch:";

/// Continent codes as used by MaxMind and GeoNames.
const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

/// `::/96`, where an IPv6 tree keeps IPv4.
const IPV4_SUBTREE: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::UNSPECIFIED, 96);
/// `::ffff:0:0/96`. See RFC 4291 §2.5.5.2.
const IPV4_MAPPED: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96);
/// `2001::/32`. See RFC 4380.
const TEREDO: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32);
/// `2002::/16`. See RFC 3056.
const SIX_TO_FOUR: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16);

#[cfg(test)]
mod tests {
    use maxminddb::{Reader, geoip2};
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct Flat<'a> {
        country_code: &'a str,
    }

    #[test]
    fn maxmind_country_round_trip() {
        let csv = "127.0.2.0/24,,FR,EU\n127.0.9.0/24,,,EU\n127.0.4.0/24,,CH,\n";
        let reader = open(build_country_db(csv, CountrySchema::MaxMind, EPOCH).unwrap());

        let fr = country(&reader, "127.0.2.200").unwrap();
        assert_eq!(fr.country.iso_code, Some("FR"));
        assert_eq!(fr.registered_country.iso_code, Some("FR"));
        assert_eq!(fr.continent.code, Some("EU"));

        let eu_only = country(&reader, "127.0.9.1").unwrap();
        assert_eq!(eu_only.country.iso_code, None);
        assert_eq!(eu_only.registered_country.iso_code, None);
        assert_eq!(eu_only.continent.code, Some("EU"));

        let ch = country(&reader, "127.0.4.1").unwrap();
        assert_eq!(ch.country.iso_code, Some("CH"));
        assert_eq!(ch.continent.code, None);

        assert!(country(&reader, "127.0.3.1").is_none());
        assert_eq!(reader.metadata().database_type, "GeoIP2-Country");
        assert_eq!(reader.metadata().build_epoch, EPOCH);
    }

    #[test]
    fn flat_country_skips_rows_without_country() {
        let csv =
            "192.0.2.0,192.0.2.127,de\n192.0.2.128/25,,,EU\n2001:db8::,2001:db8::ffff,NO,EU\n";
        let mut builder = DbBuilder::new(DbKind::Country(CountrySchema::Flat), EPOCH).unwrap();
        builder.add_csv("", csv).unwrap();
        assert_eq!(builder.summary().rows, 2);
        assert_eq!(builder.summary().rows_without_country_skipped, 1);
        let reader = open(builder.finish().unwrap());

        let flat = |ip: &str| {
            reader
                .lookup(ip.parse().unwrap())
                .unwrap()
                .decode::<Flat<'_>>()
                .unwrap()
                .map(|r| r.country_code.to_owned())
        };
        assert_eq!(flat("192.0.2.1").as_deref(), Some("DE"));
        assert_eq!(flat("192.0.2.200"), None);
        assert_eq!(flat("2001:db8::abcd").as_deref(), Some("NO"));
        assert_eq!(flat("2001:db8::1:0"), None);
        assert_eq!(reader.metadata().database_type, "geo-whois-asn-country");
    }

    #[test]
    fn asn_rows_in_the_ip_location_db_format() {
        // Same layout as asn-ipv4.csv / asn-ipv6.csv: no header, inclusive ranges, RFC 4180
        // quoting. Addresses and numbers are from the documentation ranges.
        let csv = concat!(
            "192.0.2.0,192.0.2.255,64496,\"Example, Inc.\"\n",
            "198.51.100.0,198.51.100.127,64497,\"LLC \"\"QUOTED\"\"\"\n",
            "203.0.113.0,203.0.113.255,4294967294,Plain Org\r\n",
            "2001:db8::,2001:db8:ffff:ffff:ffff:ffff:ffff:ffff,64498,Réseau Exemple\n",
            "3fff::/20,,AS64499\n",
        );
        let reader = open(build_asn_db(csv, EPOCH).unwrap());

        let a = asn(&reader, "192.0.2.77").unwrap();
        assert_eq!(a.autonomous_system_number, Some(64496));
        assert_eq!(a.autonomous_system_organization, Some("Example, Inc."));
        let b = asn(&reader, "198.51.100.5").unwrap();
        assert_eq!(b.autonomous_system_organization, Some("LLC \"QUOTED\""));
        assert!(asn(&reader, "198.51.100.128").is_none());
        let c = asn(&reader, "203.0.113.9").unwrap();
        assert_eq!(c.autonomous_system_number, Some(4_294_967_294));
        assert_eq!(c.autonomous_system_organization, Some("Plain Org"));
        let d = asn(&reader, "2001:db8:1::1").unwrap();
        assert_eq!(d.autonomous_system_organization, Some("Réseau Exemple"));
        let e = asn(&reader, "3fff::1").unwrap();
        assert_eq!(e.autonomous_system_number, Some(64499));
        assert_eq!(e.autonomous_system_organization, None);
        assert_eq!(reader.metadata().database_type, "GeoLite2-ASN");
    }

    #[test]
    fn ipv4_is_also_found_through_its_ipv6_forms() {
        let reader = open(build_asn_db("192.0.2.0/24,,64496,Example\n", EPOCH).unwrap());
        for ip in ["192.0.2.1", "::ffff:192.0.2.1", "2002:c000:201::1"] {
            assert_eq!(
                asn(&reader, ip).and_then(|r| r.autonomous_system_number),
                Some(64496),
                "{ip}"
            );
        }
    }

    #[test]
    fn rows_in_alias_space_are_skipped_and_wider_rows_split_around_it() {
        // The real asn-ipv6.csv has rows for 2001::/32 and 2002::/16.
        let csv = concat!(
            "192.0.2.0/24,,64496,IPv4\n",
            "2001::,2001::ffff:ffff:ffff:ffff:ffff:ffff,64497,Teredo\n",
            "2002::,2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff,64497,6to4\n",
            "::ffff:198.51.100.0/120,,64497,Mapped\n",
            "2000::/14,,64498,Wide\n",
        );
        let mut builder = DbBuilder::new(DbKind::Asn, EPOCH).unwrap();
        builder.add_csv("asn-ipv6.csv", csv).unwrap();
        // Three rows lie in alias space; the wide row gives up 2001::/32 and 2002::/16.
        assert_eq!(builder.summary().aliased_networks_skipped, 5);
        assert_eq!(builder.summary().rows, 5);
        let reader = open(builder.finish().unwrap());

        let number = |ip: &str| asn(&reader, ip).and_then(|r| r.autonomous_system_number);
        assert_eq!(
            number("2002:c000:201::"),
            Some(64496),
            "6to4 still aliases IPv4"
        );
        assert_eq!(
            number("::ffff:192.0.2.9"),
            Some(64496),
            "mapped still aliases IPv4"
        );
        assert_eq!(
            number("2001:0:c000:201::"),
            Some(64496),
            "Teredo still aliases IPv4"
        );
        assert_eq!(number("2000::1"), Some(64498));
        assert_eq!(number("2003::1"), Some(64498));
        assert_eq!(number("2001:db8::1"), Some(64498));
        assert_eq!(number("198.51.100.1"), None);
    }

    #[test]
    fn loopback_ipv6_shares_the_leaf_of_0_0_0_1() {
        let reader = open(build_asn_db("::1/128,,3320,Test\n", EPOCH).unwrap());
        assert!(asn(&reader, "::1").is_some());
        assert!(asn(&reader, "0.0.0.1").is_some());
        assert!(asn(&reader, "0.0.0.2").is_none());
    }

    #[test]
    fn later_rows_win_where_rows_overlap() {
        let csv = "192.0.2.0/24,,DE,EU\n192.0.2.128/25,,FR,EU\n";
        let reader = open(build_country_db(csv, CountrySchema::MaxMind, EPOCH).unwrap());
        assert_eq!(
            country(&reader, "192.0.2.1").unwrap().country.iso_code,
            Some("DE")
        );
        assert_eq!(
            country(&reader, "192.0.2.129").unwrap().country.iso_code,
            Some("FR")
        );
    }

    #[test]
    fn comments_blank_lines_bom_and_header_are_skipped() {
        let csv = "\u{feff}# build_epoch: 1\n\nip_range_start,ip_range_end,country_code\n# note\n192.0.2.0,192.0.2.255,DE\n";
        let mut builder = DbBuilder::new(DbKind::Country(CountrySchema::Flat), EPOCH).unwrap();
        builder.add_csv("", csv).unwrap();
        assert_eq!(builder.summary().rows, 1);
    }

    #[test]
    fn a_header_is_only_recognised_on_the_first_row() {
        let csv = "192.0.2.0/24,,DE,EU\nnetwork,end,country,continent\n";
        let err = build_country_db(csv, CountrySchema::MaxMind, EPOCH).unwrap_err();
        assert!(
            matches!(
                err,
                BuildError::Row {
                    line: 2,
                    problem: RowProblem::Address { .. },
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn output_is_reproducible_and_stamped_with_the_epoch() {
        let csv = "192.0.2.0,192.0.2.9,DE,EU\n::1/128,,DE,EU\n2001:db8::/48,,FR,\n";
        let a = build_country_db(csv, CountrySchema::MaxMind, EPOCH).unwrap();
        let b = build_country_db(csv, CountrySchema::MaxMind, EPOCH).unwrap();
        assert_eq!(a, b);
        let c = build_country_db(csv, CountrySchema::MaxMind, EPOCH + 1).unwrap();
        assert_ne!(a, c);
        assert_eq!(open(c).metadata().build_epoch, EPOCH + 1);
    }

    #[test]
    fn several_inputs_build_one_database() {
        let mut builder = DbBuilder::new(DbKind::Asn, EPOCH).unwrap();
        builder.add_csv("v4", "192.0.2.0/24,,64496,A\n").unwrap();
        builder.add_csv("v6", "2001:db8::/32,,64497,B\n").unwrap();
        let reader = open(builder.finish().unwrap());
        assert!(asn(&reader, "192.0.2.1").is_some());
        assert!(asn(&reader, "2001:db8::1").is_some());
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        type Check = fn(&RowProblem) -> bool;
        let cases: &[(&str, Check)] = &[
            ("192.0.2.0/33,,DE,EU", |p| {
                matches!(p, RowProblem::Network { .. })
            }),
            ("192.0.2.1/24,,DE,EU", |p| {
                matches!(p, RowProblem::HostBits { .. })
            }),
            ("192.0.2.0/24,192.0.2.255,DE,EU", |p| {
                matches!(p, RowProblem::NetworkWithEnd { .. })
            }),
            ("192.0.2.0,2001:db8::,DE,EU", |p| {
                matches!(p, RowProblem::MixedFamilies { .. })
            }),
            ("192.0.2.9,192.0.2.1,DE,EU", |p| {
                matches!(p, RowProblem::StartAfterEnd { .. })
            }),
            ("3221225984,3221226239,DE,EU", |p| {
                matches!(p, RowProblem::NumericAddress { .. })
            }),
            ("192.0.2.256,,DE,EU", |p| {
                matches!(p, RowProblem::Address { .. })
            }),
            ("192.0.2.0/24,,DEU,EU", |p| {
                matches!(p, RowProblem::Country { .. })
            }),
            ("192.0.2.0/24,,DE,XX", |p| {
                matches!(p, RowProblem::Continent { .. })
            }),
            ("192.0.2.0/24,,,", |p| matches!(p, RowProblem::NoLocation)),
            ("192.0.2.0/24,,DE,EU,extra", |p| {
                matches!(p, RowProblem::FieldCount { found: 5, .. })
            }),
            ("192.0.2.0/24", |p| {
                matches!(p, RowProblem::FieldCount { found: 1, .. })
            }),
            // A quote left open takes the rest of its line, never the next row.
            ("192.0.2.0/24,,\"DE,EU", |p| {
                matches!(
                    p,
                    RowProblem::Country { .. } | RowProblem::FieldCount { .. }
                )
            }),
        ];
        for (row, expected) in cases {
            let csv = format!("# comment\n192.0.2.0/24,,DE,EU\n{row}\n");
            let err = build_country_db(&csv, CountrySchema::MaxMind, EPOCH).unwrap_err();
            let BuildError::Row { line, problem, .. } = &err else {
                panic!("{row}: {err}");
            };
            assert_eq!(*line, 3, "{row}");
            assert!(expected(problem), "{row}: {err}");
            assert!(err.to_string().starts_with("line 3: "), "{err}");
        }

        for row in [
            "192.0.2.0/24,,4294967296,X",
            "192.0.2.0/24,,,X",
            "192.0.2.0/24,,AS-1,X",
        ] {
            let err = build_asn_db(row, EPOCH).unwrap_err();
            assert!(
                matches!(
                    err,
                    BuildError::Row {
                        line: 1,
                        problem: RowProblem::Asn { .. },
                        ..
                    }
                ),
                "{row}: {err}"
            );
        }
    }

    #[test]
    fn errors_name_the_input_when_given() {
        let mut builder = DbBuilder::new(DbKind::Asn, EPOCH).unwrap();
        let err = builder
            .add_csv("asn-ipv4.csv", "\n\n192.0.2.0/24,,1,X\nnope,,1,X\n")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "asn-ipv4.csv: line 4: `nope` is not an IP address"
        );
    }

    #[test]
    fn long_fields_are_shortened_in_errors() {
        let row = format!("{},,DE,EU", "x".repeat(500));
        let err = build_country_db(&row, CountrySchema::MaxMind, EPOCH).unwrap_err();
        assert!(err.to_string().len() < 120, "{err}");
    }

    #[test]
    fn the_declared_epoch_is_read_from_the_leading_comments() {
        assert_eq!(
            declared_build_epoch("# world\n#  build_epoch: 42 \n1.2.3.0/24,,DE,EU\n").unwrap(),
            Some(42)
        );
        assert_eq!(
            declared_build_epoch("1.2.3.0/24,,DE,EU\n# build_epoch: 42\n").unwrap(),
            None
        );
        assert_eq!(declared_build_epoch("").unwrap(), None);
        let err = declared_build_epoch("\n# build_epoch: soon\n").unwrap_err();
        assert!(
            matches!(
                err,
                BuildError::Row {
                    line: 2,
                    problem: RowProblem::Epoch { .. },
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn an_epoch_beyond_the_clock_is_an_error() {
        assert!(matches!(
            build_asn_db("", u64::MAX),
            Err(BuildError::Epoch(u64::MAX))
        ));
    }

    fn open(bytes: Vec<u8>) -> Reader<Vec<u8>> {
        Reader::from_source(bytes).unwrap()
    }

    fn country<'a>(reader: &'a Reader<Vec<u8>>, ip: &str) -> Option<geoip2::Country<'a>> {
        reader
            .lookup(ip.parse().unwrap())
            .unwrap()
            .decode()
            .unwrap()
    }

    fn asn<'a>(reader: &'a Reader<Vec<u8>>, ip: &str) -> Option<geoip2::Asn<'a>> {
        reader
            .lookup(ip.parse().unwrap())
            .unwrap()
            .decode()
            .unwrap()
    }

    const EPOCH: u64 = 1_795_000_000;
}
