//! `eeaturn config check`: validate a configuration as the relay would load it.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use eeaturn::config::Config;

use crate::write_stdout;

#[derive(Subcommand)]
pub(crate) enum ConfigCmd {
    /// Validate a configuration file and its secret file, and print a summary.
    Check {
        /// The TOML configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
}

pub(crate) fn run(cmd: ConfigCmd) -> anyhow::Result<()> {
    match cmd {
        ConfigCmd::Check { config } => check(&config),
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "the CLI reads the wall clock for database ages"
)]
fn check(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let secrets = eeaturn::shell::load_secrets(&config)?;
    let now = std::time::SystemTime::now();
    let policy = eeaturn::shell::geo::load_policy(&config, now)?;
    eeaturn::shell::geo::check_relay_location(&config, &policy)?;
    let listen: Vec<String> = config.listen.iter().map(|l| l.to_string()).collect();
    let nets = |v: &[ipnet::IpNet]| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let mut out = format!(
        "{}: OK\n  realm: {}\n  listen: {}\n  relay: v4={} v6={} ports={}-{}\n  secrets accepted: {}\n",
        path.display(),
        config.realm,
        listen.join(", "),
        config.relay.v4.map_or("-".to_owned(), |i| i.to_string()),
        config.relay.v6.map_or("-".to_owned(), |i| i.to_string()),
        config.relay.ports.start(),
        config.relay.ports.end(),
        secrets.len(),
    );
    for (key, db) in [
        ("geo.country_db", policy.geo().country.as_ref()),
        ("geo.asn_db", policy.geo().asn.as_ref()),
    ] {
        if let Some(db) = db {
            let info = db.info();
            let age = eeaturn::shell::geo::db_age(info, now).as_secs() / 86_400;
            out += &format!(
                "  {key}: {} (built {}, {} days old{}), sha256 {}\n",
                info.database_type,
                info.build_epoch,
                age,
                if age * 86_400 > config.geo.max_age.as_secs() {
                    ", OLDER THAN geo.max_age"
                } else {
                    ""
                },
                info.sha256
            );
        }
    }
    if let Some(t) = &config.tls {
        eeaturn::tls::server_config(t)?;
        out += &format!(
            "  tls: profile bsi, groups {:?}, certificate {} and key {} load\n",
            t.groups,
            t.certificate.display(),
            t.private_key.display()
        );
    }
    let r = policy.rules();
    out += &format!(
        "  policy: regions {:?} ({} countries), unknown locations {}\n  peers.dangerous_allow: {}{}\n",
        r.regions,
        r.region_countries.len(),
        if r.unknown_allowed {
            "ALLOWED"
        } else {
            "denied"
        },
        nets(&r.peer_dangerous_allow),
        if r.peer_dangerous_allow.is_empty() {
            ""
        } else {
            " (development setting)"
        },
    );
    write_stdout(&out)
}
