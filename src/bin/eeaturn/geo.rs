//! `eeaturn geo`: explain residency decisions, and build `.mmdb` databases from CSV.

use std::path::{Path, PathBuf};

#[cfg(feature = "geo-build")]
use anyhow::Context as _;
use clap::Subcommand;
#[cfg(feature = "geo-build")]
use clap::ValueEnum;
use eeaturn::config::Config;
#[cfg(feature = "geo-build")]
use eeaturn::geo_build::{CountrySchema, DbBuilder, DbKind, declared_build_epoch};

use crate::write_stdout;

#[derive(Subcommand)]
pub(crate) enum GeoCmd {
    /// Show country, ASN, database build and the policy decision for addresses.
    Lookup {
        /// IP addresses to look up.
        #[arg(required = true, value_name = "ADDRESS")]
        addresses: Vec<String>,
        /// The TOML configuration file (its [geo] and [policy] are used).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    #[cfg(feature = "geo-build")]
    /// Build a .mmdb database from CSV rows (e.g. the ip-location-db ASN files, or the test
    /// world in geo/testdata). Rows: "CIDR,,value..." or "START,END,value...".
    Build {
        /// What the database holds.
        #[arg(long, value_enum)]
        kind: KindArg,
        /// Record layout of a country database.
        #[arg(long, value_enum, default_value_t = SchemaArg::Maxmind)]
        schema: SchemaArg,
        /// Input CSV files, added in order (repeat the flag).
        #[arg(long, required = true, value_name = "FILE")]
        csv: Vec<PathBuf>,
        /// Output .mmdb file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Build epoch (Unix seconds) for the metadata; default: the "# build_epoch: N"
        /// comment of the first CSV, else now. A fixed epoch makes the output reproducible.
        #[arg(long)]
        build_epoch: Option<u64>,
    },
}

/// `geo build --kind`.
#[cfg(feature = "geo-build")]
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum KindArg {
    /// Country and continent per network (rows: network,end,country,continent).
    Country,
    /// Autonomous system per network (rows: network,end,asn,org).
    Asn,
}

/// `geo build --schema`.
#[cfg(feature = "geo-build")]
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum SchemaArg {
    /// MaxMind GeoIP2 layout (country.iso_code).
    Maxmind,
    /// The flat layout of the open ip-location-db files (country_code).
    Flat,
}

pub(crate) fn run(cmd: GeoCmd) -> anyhow::Result<()> {
    match cmd {
        GeoCmd::Lookup { addresses, config } => lookup(&addresses, &config),
        #[cfg(feature = "geo-build")]
        GeoCmd::Build {
            kind,
            schema,
            csv,
            out,
            build_epoch,
        } => build(kind, schema, &csv, &out, build_epoch),
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "the CLI reads the wall clock for database ages"
)]
fn lookup(addrs: &[String], path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let policy = eeaturn::shell::geo::load_policy(&config, std::time::SystemTime::now())?;
    let mut out = String::new();
    for (key, db) in [
        ("country", policy.geo().country.as_ref()),
        ("asn", policy.geo().asn.as_ref()),
    ] {
        if let Some(db) = db {
            let i = db.info();
            out += &format!(
                "{key} database: {} built {} sha256 {}\n",
                i.database_type,
                i.build_epoch,
                &i.sha256[..16]
            );
        }
    }
    for a in addrs {
        let ip: std::net::IpAddr = a
            .parse()
            .map_err(|_| anyhow::anyhow!("{a:?} is not an IP address"))?;
        let facts = policy.geo().lookup(ip);
        let show =
            |c: Option<eeaturn::policy::CountryCode>| c.map_or("-".to_owned(), |c| c.to_string());
        out += &format!(
            "{ip}\n  country {} (registered {}, continent {}), ASN {}\n",
            show(facts.country),
            show(facts.registered_country),
            show(facts.continent),
            facts.asn.map_or("-".to_owned(), |a| format!("AS{a}")),
        );
        for (who, d) in [
            ("as client", policy.check_client(ip)),
            ("as peer", policy.check_peer(ip, &config.relay)),
        ] {
            out += &format!(
                "  {who}: {} by rule {}\n",
                if d.is_allowed() { "ALLOW" } else { "DENY" },
                d.rule().id()
            );
        }
        if config.relay.is_own_ip(ip) {
            out += &format!(
                "  (a relay address: as a peer only ports {}-{} are reachable)\n",
                config.relay.ports.start(),
                config.relay.ports.end()
            );
        }
    }
    write_stdout(&out)
}

#[cfg(feature = "geo-build")]
#[expect(clippy::disallowed_methods, reason = "the default build epoch is now")]
fn build(
    kind: KindArg,
    schema: SchemaArg,
    csvs: &[PathBuf],
    out: &Path,
    build_epoch: Option<u64>,
) -> anyhow::Result<()> {
    let kind = match (kind, schema) {
        (KindArg::Asn, _) => DbKind::Asn,
        (KindArg::Country, SchemaArg::Flat) => DbKind::Country(CountrySchema::Flat),
        (KindArg::Country, SchemaArg::Maxmind) => DbKind::Country(CountrySchema::MaxMind),
    };
    let texts = csvs
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .with_context(|| format!("reading {}", p.display()))
                .map(|t| (p, t))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let epoch = match build_epoch {
        Some(e) => e,
        None => match texts
            .first()
            .map(|(_, t)| declared_build_epoch(t))
            .transpose()?
        {
            Some(Some(e)) => e,
            _ => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        },
    };
    let mut b = DbBuilder::new(kind, epoch)?;
    for (path, text) in &texts {
        eprintln!("reading {}", path.display());
        b.add_csv(&path.display().to_string(), text)?;
    }
    let bytes = b.finish()?;
    std::fs::write(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    let s = b.summary();
    write_stdout(&format!(
        "{}: {} ({} bytes), build epoch {epoch}, {} rows, {} networks, {} rows without country skipped\n",
        out.display(),
        kind.database_type(),
        bytes.len(),
        s.rows,
        s.networks,
        s.rows_without_country_skipped
    ))
}
