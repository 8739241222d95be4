//! Cost of one residency decision (GeoIP country + ASN lookup + rules) on real-size databases.
//!
//! ```sh
//! geo/fetch-open-data.sh /tmp/geo-real            # the open ip-location-db data
//! EEATURN_BENCH_GEO_DIR=/tmp/geo-real cargo bench --bench policy_decision
//! ```
//!
//! Without `EEATURN_BENCH_GEO_DIR` it runs on the tiny loopback test world, which says little
//! about production cost. Prints ns per decision for peers and clients over a fixed
//! pseudo-random set of public IPv4 and IPv6 addresses (the same set every run).

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use eeaturn::config::Config;
use eeaturn::policy::{GeoDb, GeoSet, Policy};

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let (country, asn) = match std::env::var_os("EEATURN_BENCH_GEO_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            (dir.join("country.mmdb"), dir.join("asn.mmdb"))
        }
        None => (
            root.join("geo/testdata/world-country.mmdb"),
            root.join("geo/testdata/world-asn.mmdb"),
        ),
    };
    let config = Config::load(&root.join("config/dev.toml")).expect("config/dev.toml");
    let load = |p: &PathBuf| {
        let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let size = bytes.len();
        (GeoDb::from_bytes(bytes).expect("a .mmdb file"), size)
    };
    let (country_db, country_size) = load(&country);
    let (asn_db, asn_size) = load(&asn);
    println!(
        "country db: {} ({}, {:.1} MB), asn db: {} ({}, {:.1} MB)",
        country.display(),
        country_db.info().database_type,
        country_size as f64 / 1e6,
        asn.display(),
        asn_db.info().database_type,
        asn_size as f64 / 1e6
    );
    let relay = config.relay;
    let policy = Policy::new(
        config.rules,
        Arc::new(GeoSet {
            country: Some(country_db),
            asn: Some(asn_db),
        }),
    );

    // A fixed xorshift sequence of public-looking addresses.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let v4: Vec<IpAddr> = (0..100_000)
        .map(|_| IpAddr::V4(Ipv4Addr::from((next() as u32) | 0x0100_0000)))
        .collect();
    let v6: Vec<IpAddr> = (0..100_000)
        .map(|_| {
            let hi = 0x2a00_u128 << 112 | u128::from(next() as u16) << 96;
            IpAddr::V6(Ipv6Addr::from(hi | u128::from(next())))
        })
        .collect();

    for (name, addrs) in [("IPv4", &v4), ("IPv6", &v6)] {
        for (who, peer) in [("peer", true), ("client", false)] {
            let mut best = f64::MAX;
            let mut allowed = 0;
            for _round in 0..5 {
                allowed = 0;
                #[expect(clippy::disallowed_methods, reason = "a benchmark measures time")]
                let start = Instant::now();
                for &ip in addrs.iter() {
                    let d = if peer {
                        policy.check_peer(black_box(ip), &relay)
                    } else {
                        policy.check_client(black_box(ip))
                    };
                    allowed += usize::from(d.is_allowed());
                }
                let ns = start.elapsed().as_nanos() as f64 / addrs.len() as f64;
                best = best.min(ns);
            }
            println!(
                "{name} {who}: {best:.0} ns per decision (best of 5 rounds of {}; {:.1}% allowed)",
                addrs.len(),
                100.0 * allowed as f64 / addrs.len() as f64
            );
        }
    }
}
