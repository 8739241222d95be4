//! The loopback test world in `geo/testdata/`: the committed `.mmdb` fixtures are exactly what
//! the committed CSV builds to, and they say what the world table in `geo/README.md` says.
//!
//! After changing a CSV, rewrite the fixtures with
//! `EEATURN_REGENERATE_FIXTURES=1 cargo test --test geo_fixtures` and commit both.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use eeaturn::geo_build::{self, BuildError, CountrySchema};
use maxminddb::{Reader, geoip2};
use serde::Deserialize;

/// The build epoch every world CSV declares: 2026-11-18T11:06:40Z.
const WORLD_EPOCH: u64 = 1_795_000_000;

/// One fixture: the CSV it is built from, the file it is built to, and how.
struct Fixture {
    csv: &'static str,
    mmdb: &'static str,
    database_type: &'static str,
    build: fn(&str, u64) -> Result<Vec<u8>, BuildError>,
}

const FIXTURES: [Fixture; 3] = [
    Fixture {
        csv: "world-country.csv",
        mmdb: "world-country.mmdb",
        database_type: "GeoIP2-Country",
        build: |csv, epoch| geo_build::build_country_db(csv, CountrySchema::MaxMind, epoch),
    },
    Fixture {
        csv: "world-country.csv",
        mmdb: "world-country-flat.mmdb",
        database_type: "geo-whois-asn-country",
        build: |csv, epoch| geo_build::build_country_db(csv, CountrySchema::Flat, epoch),
    },
    Fixture {
        csv: "world-asn.csv",
        mmdb: "world-asn.mmdb",
        database_type: "GeoLite2-ASN",
        build: geo_build::build_asn_db,
    },
];

/// The world table: address, country, continent, ASN and organization.
/// (address, country, continent, (ASN, organization)).
type Block = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<(u32, &'static str)>,
);

const WORLD: &[Block] = &[
    (
        "127.0.0.{}",
        Some("DE"),
        Some("EU"),
        Some((3320, "Deutsche Telekom AG")),
    ),
    (
        "127.0.1.{}",
        Some("DE"),
        Some("EU"),
        Some((3320, "Deutsche Telekom AG")),
    ),
    (
        "127.0.2.{}",
        Some("FR"),
        Some("EU"),
        Some((3215, "Orange S.A.")),
    ),
    (
        "127.0.3.{}",
        Some("NO"),
        Some("EU"),
        Some((2119, "Telenor Norge AS")),
    ),
    (
        "127.0.4.{}",
        Some("CH"),
        Some("EU"),
        Some((3303, "Swisscom (Schweiz) AG")),
    ),
    (
        "127.0.5.{}",
        Some("US"),
        Some("NA"),
        Some((7922, "Comcast Cable Communications, LLC")),
    ),
    (
        "127.0.6.{}",
        Some("GB"),
        Some("EU"),
        Some((2856, "British Telecommunications PLC")),
    ),
    (
        "127.0.7.{}",
        Some("DE"),
        Some("EU"),
        Some((9009, "M247 Europe SRL")),
    ),
    ("127.0.8.{}", None, None, None),
    ("127.0.9.{}", None, Some("EU"), None),
    ("127.0.10.{}", None, None, None),
    ("127.1.0.{}", None, None, None),
    (
        "198.18.1.{}",
        Some("DE"),
        Some("EU"),
        Some((3320, "Deutsche Telekom AG")),
    ),
    (
        "198.18.2.{}",
        Some("FR"),
        Some("EU"),
        Some((3215, "Orange S.A.")),
    ),
    (
        "198.18.5.{}",
        Some("US"),
        Some("NA"),
        Some((7922, "Comcast Cable Communications, LLC")),
    ),
    ("198.18.3.{}", None, None, None),
];

#[test]
fn fixtures_are_built_from_the_committed_csv() {
    let regenerate = std::env::var("EEATURN_REGENERATE_FIXTURES").is_ok_and(|v| v == "1");
    for fixture in &FIXTURES {
        let csv = fs::read_to_string(testdata(fixture.csv)).unwrap();
        let epoch = geo_build::declared_build_epoch(&csv)
            .unwrap()
            .unwrap_or_else(|| panic!("{} declares no `# build_epoch:`", fixture.csv));
        assert_eq!(epoch, WORLD_EPOCH, "{}", fixture.csv);
        let built = (fixture.build)(&csv, epoch).unwrap();

        let path = testdata(fixture.mmdb);
        if regenerate {
            // Written aside and renamed, so the lookup test never reads half a file.
            let tmp = path.with_extension("mmdb.tmp");
            fs::write(&tmp, &built).unwrap();
            fs::rename(&tmp, &path).unwrap();
            continue;
        }
        let committed = fs::read(&path).unwrap_or_default();
        assert!(
            committed == built,
            "{} is not what {} builds to ({} vs {} bytes); rebuild with \
             EEATURN_REGENERATE_FIXTURES=1 cargo test --test geo_fixtures",
            fixture.mmdb,
            fixture.csv,
            committed.len(),
            built.len(),
        );
    }
}

#[test]
fn fixtures_carry_their_type_and_epoch() {
    for fixture in &FIXTURES {
        let reader = open(fixture.mmdb);
        assert_eq!(reader.metadata().database_type, fixture.database_type);
        assert_eq!(reader.metadata().build_epoch, WORLD_EPOCH);
        assert_eq!(reader.metadata().ip_version, 6);
    }
}

#[test]
fn the_world_is_as_the_table_says() {
    let maxmind = open("world-country.mmdb");
    let flat = open("world-country-flat.mmdb");
    let asn = open("world-asn.mmdb");
    for &(block, country, continent, as_info) in WORLD {
        for host in [0, 1, 128, 255] {
            let ip: IpAddr = block.replace("{}", &host.to_string()).parse().unwrap();
            check(&maxmind, &flat, &asn, ip, country, continent, as_info);
        }
    }
}

#[test]
fn ipv6_loopback_is_the_relay_in_germany() {
    let (maxmind, flat, asn) = (
        open("world-country.mmdb"),
        open("world-country-flat.mmdb"),
        open("world-asn.mmdb"),
    );
    let telekom = Some((3320, "Deutsche Telekom AG"));
    let ip = "::1".parse().unwrap();
    check(&maxmind, &flat, &asn, ip, Some("DE"), Some("EU"), telekom);
    let ip = "::2".parse().unwrap();
    check(&maxmind, &flat, &asn, ip, None, None, None);
}

#[test]
fn an_ipv6_documentation_block_is_in_germany() {
    let (maxmind, flat, asn) = (
        open("world-country.mmdb"),
        open("world-country-flat.mmdb"),
        open("world-asn.mmdb"),
    );
    let telekom = Some((3320, "Deutsche Telekom AG"));
    for ip in [
        "2001:db8:de::",
        "2001:db8:de:1::1",
        "2001:db8:de:ffff:ffff::1",
    ] {
        let ip = ip.parse().unwrap();
        check(&maxmind, &flat, &asn, ip, Some("DE"), Some("EU"), telekom);
    }
    for ip in ["2001:db8:df::1", "2001:db8::1"] {
        check(&maxmind, &flat, &asn, ip.parse().unwrap(), None, None, None);
    }
}

#[test]
fn mapped_ipv4_finds_the_ipv4_record() {
    // The relay canonicalises before lookup; the databases answer either way.
    let maxmind = open("world-country.mmdb");
    let record = country(&maxmind, "::ffff:127.0.2.1".parse().unwrap()).unwrap();
    assert_eq!(record.country.iso_code, Some("FR"));
}

#[test]
fn zero_zero_zero_one_shares_the_leaf_of_ipv6_loopback() {
    // IPv4 lives under ::/96 in an IPv6 database, so 0.0.0.1 and ::1 are one address there.
    // The policy refuses 0.0.0.0/8 as special-purpose before any lookup.
    let maxmind = open("world-country.mmdb");
    let record = country(&maxmind, "0.0.0.1".parse().unwrap()).unwrap();
    assert_eq!(record.country.iso_code, Some("DE"));
}

#[derive(Deserialize)]
struct FlatRecord<'a> {
    country_code: &'a str,
}

fn check(
    maxmind: &Reader<Vec<u8>>,
    flat: &Reader<Vec<u8>>,
    asn: &Reader<Vec<u8>>,
    ip: IpAddr,
    country_code: Option<&str>,
    continent: Option<&str>,
    as_info: Option<(u32, &str)>,
) {
    match country(maxmind, ip) {
        None => assert_eq!(
            (country_code, continent),
            (None, None),
            "{ip}: no country record"
        ),
        Some(record) => {
            assert_eq!(record.country.iso_code, country_code, "{ip}");
            assert_eq!(record.registered_country.iso_code, country_code, "{ip}");
            assert_eq!(record.continent.code, continent, "{ip}");
        }
    }

    let flat_record = flat.lookup(ip).unwrap().decode::<FlatRecord<'_>>().unwrap();
    assert_eq!(
        flat_record.map(|r| r.country_code),
        country_code,
        "{ip}: flat"
    );

    let as_record = asn.lookup(ip).unwrap().decode::<geoip2::Asn<'_>>().unwrap();
    let found = as_record.map(|r| {
        (
            r.autonomous_system_number.unwrap(),
            r.autonomous_system_organization.unwrap(),
        )
    });
    assert_eq!(found, as_info, "{ip}: asn");
}

fn country(reader: &Reader<Vec<u8>>, ip: IpAddr) -> Option<geoip2::Country<'_>> {
    reader.lookup(ip).unwrap().decode().unwrap()
}

fn open(name: &str) -> Reader<Vec<u8>> {
    Reader::open_readfile(testdata(name)).unwrap()
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("geo/testdata")
        .join(name)
}
