//! The `eeaturn` command: run the relay, issue credentials, check a config.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use eeaturn::config::{Config, parse_duration};

/// eeaturn: a TURN/STUN relay (RFC 8489, RFC 8656) for endpoints inside the EEA.
///
/// Start with the development configuration, which listens on loopback only:
///   eeaturn serve --config config/dev.toml
#[derive(Parser)]
#[command(version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the relay in the foreground until SIGINT or SIGTERM; SIGHUP re-reads the secrets.
    Serve {
        /// The TOML configuration file (see config/eeaturn.example.toml).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Ephemeral TURN REST credentials.
    #[command(subcommand)]
    Credentials(CredentialsCmd),
    /// Rotate the TURN REST signing secret without a restart (see docs/operations.md).
    #[command(subcommand)]
    Secret(SecretCmd),
    /// Keys for the credential API (docs/api.md).
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCmd),
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// GeoIP databases and residency decisions.
    #[command(subcommand)]
    Geo(GeoCmd),
}

#[derive(Subcommand)]
enum GeoCmd {
    /// Show country, ASN, database build and the policy decision for addresses.
    Lookup {
        /// IP addresses to look up.
        #[arg(required = true, value_name = "ADDRESS")]
        addresses: Vec<String>,
        /// The TOML configuration file (its [geo] and [policy] are used).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Build a .mmdb database from CSV rows (e.g. the ip-location-db ASN files, or the test
    /// world in geo/testdata). Rows: "CIDR,,value..." or "START,END,value...".
    Build {
        /// "country" (rows: network,end,country,continent) or "asn" (network,end,asn,org).
        #[arg(long, value_parser = ["country", "asn"])]
        kind: String,
        /// Record layout of a country database: "maxmind" (country.iso_code) or "flat"
        /// (country_code).
        #[arg(long, default_value = "maxmind", value_parser = ["maxmind", "flat"])]
        schema: String,
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

#[derive(Subcommand)]
enum CredentialsCmd {
    /// Print a username/password pair signed with the current secret of `auth.secret_file`.
    Issue {
        /// The user id embedded in the username ("<expiry>:<user>"); no ':' allowed.
        #[arg(long, short)]
        user: String,
        /// How long the credential is valid, e.g. "10m", "1h" (at most auth.max_credential_ttl).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// The TOML configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Print one JSON object instead of lines for a shell.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SecretCmd {
    /// Put a fresh random secret first in `auth.secret_file`: it signs new credentials after
    /// the next SIGHUP, and every older secret is still accepted until it is retired.
    Rotate {
        /// The TOML configuration file (its auth.secret_file is rewritten).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Remove all but the first KEEP secrets from `auth.secret_file`; credentials signed by the
    /// removed ones fail after the next SIGHUP. Wait auth.max_credential_ttl after a rotation.
    Retire {
        /// The TOML configuration file (its auth.secret_file is rewritten).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// How many secrets to keep, the signing secret first.
        #[arg(long, default_value_t = 1)]
        keep: usize,
    },
}

#[derive(Subcommand)]
enum ApiKeyCmd {
    /// Print a fresh API key and the [[api.keys]] table (holding only its SHA-256) to paste
    /// into the config; reload with SIGHUP. The key is shown once: hand it to the caller.
    New {
        /// The key's name, shown in logs, metrics and TURN usernames ([A-Za-z0-9_-], 1-64).
        #[arg(long)]
        name: String,
        /// "credentials" (signaling servers) or "evidence" (compliance officers).
        #[arg(long, value_parser = ["credentials", "evidence"])]
        scope: String,
    },
    /// Print the SHA-256 of a key read from standard input (for a key made elsewhere).
    Hash,
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate a configuration file and its secret file, and print a summary.
    Check {
        /// The TOML configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Serve { config } => serve(&config),
        Cmd::Credentials(CredentialsCmd::Issue {
            user,
            ttl,
            config,
            json,
        }) => issue(&user, &ttl, &config, json),
        Cmd::Config(ConfigCmd::Check { config }) => check(&config),
        Cmd::Secret(SecretCmd::Rotate { config }) => secret_rotate(&config),
        Cmd::Secret(SecretCmd::Retire { config, keep }) => secret_retire(&config, keep),
        Cmd::ApiKey(ApiKeyCmd::New { name, scope }) => api_key_new(&name, &scope),
        Cmd::ApiKey(ApiKeyCmd::Hash) => api_key_hash(),
        Cmd::Geo(GeoCmd::Lookup { addresses, config }) => lookup(&addresses, &config),
        Cmd::Geo(GeoCmd::Build {
            kind,
            schema,
            csv,
            out,
            build_epoch,
        }) => build(&kind, &schema, &csv, &out, build_epoch),
    }
}

fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    eeaturn::pii::set_show_personal_data(config.log.log_ips);
    init_tracing(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // Install the handlers before anything is bound: a SIGTERM right after "ready" must
        // take the shutdown path, not the default action.
        let shutdown = shutdown_signal().context("installing signal handlers")?;
        eeaturn::shell::run(config, shutdown).await
    })
}

/// Returns a future that completes on SIGINT or SIGTERM; the handlers are installed now.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log.json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "the CLI reads the wall clock to issue"
)]
fn issue(user: &str, ttl: &str, path: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let secrets = eeaturn::shell::load_secrets(&config)?;
    let ttl: Duration = parse_duration(ttl).map_err(|m| anyhow::anyhow!("--ttl: {m}"))?;
    let c = secrets
        .issue(
            user,
            ttl,
            config.max_credential_ttl,
            std::time::SystemTime::now(),
        )
        .map_err(|e| anyhow::anyhow!("cannot issue: {e}"))?;
    let out = if json {
        serde_json::to_string(&c)? + "\n"
    } else {
        format!(
            "username={}\npassword={}\nttl={}\nrealm={}\n",
            c.username, c.password, c.ttl, config.realm
        )
    };
    write_stdout(&out)
}

#[expect(
    clippy::disallowed_methods,
    reason = "the CLI reads the wall clock for database ages"
)]
fn check(path: &std::path::Path) -> anyhow::Result<()> {
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

#[expect(
    clippy::disallowed_methods,
    reason = "the CLI reads the wall clock for database ages"
)]
fn lookup(addrs: &[String], path: &std::path::Path) -> anyhow::Result<()> {
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

#[expect(clippy::disallowed_methods, reason = "the default build epoch is now")]
fn build(
    kind: &str,
    schema: &str,
    csvs: &[PathBuf],
    out: &std::path::Path,
    build_epoch: Option<u64>,
) -> anyhow::Result<()> {
    use eeaturn::geo_build::{CountrySchema, DbBuilder, DbKind, declared_build_epoch};
    let kind = match (kind, schema) {
        ("asn", _) => DbKind::Asn,
        (_, "flat") => DbKind::Country(CountrySchema::Flat),
        _ => DbKind::Country(CountrySchema::MaxMind),
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

fn secret_rotate(path: &std::path::Path) -> anyhow::Result<()> {
    use rand::{RngCore as _, SeedableRng as _};
    let config = Config::load(path)?;
    let file = &config.secret_file;
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read auth.secret_file {}", file.display()))?;
    let mut bytes = [0u8; 32];
    rand::rngs::StdRng::from_os_rng().fill_bytes(&mut bytes);
    let new = eeaturn::api::hex(&bytes);
    let rotated = eeaturn::credentials::rotate_secret_file(&text, &new)
        .map_err(|e| anyhow::anyhow!("auth.secret_file {}: {e}", file.display()))?;
    write_secret_file(file, &rotated)?;
    let n = eeaturn::credentials::Secrets::parse(&rotated)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .len();
    write_stdout(&format!(
        "Rotated {}: a new signing secret is first; {n} secrets are accepted.\n\
         Next: send SIGHUP to eeaturn (systemctl reload eeaturn) so new credentials use it.\n\
         After auth.max_credential_ttl ({} s), when no credential signed by the old secret is\n\
         still valid, retire it: eeaturn secret retire --config {} && systemctl reload eeaturn\n",
        file.display(),
        config.max_credential_ttl.as_secs(),
        path.display()
    ))
}

fn secret_retire(path: &std::path::Path, keep: usize) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let file = &config.secret_file;
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read auth.secret_file {}", file.display()))?;
    let (out, removed) = eeaturn::credentials::retire_secrets(&text, keep).map_err(|e| {
        anyhow::anyhow!(
            "auth.secret_file {}: {e} (--keep must be at least 1)",
            file.display()
        )
    })?;
    if removed == 0 {
        return write_stdout(&format!(
            "{} holds at most {keep} secret(s); nothing to retire.\n",
            file.display()
        ));
    }
    write_secret_file(file, &out)?;
    write_stdout(&format!(
        "Retired {removed} secret(s) from {}; {keep} remain.\n\
         Next: send SIGHUP to eeaturn (systemctl reload eeaturn); credentials signed by the\n\
         retired secrets are refused from then on.\n",
        file.display()
    ))
}

/// Replaces a secret file atomically (write a sibling, then rename), readable by its owner only.
fn write_secret_file(file: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mode = std::fs::metadata(file).map_or(0o600, |m| m.permissions().mode() & 0o777);
    let tmp = file.with_extension("rotating");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode & 0o640)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, file).with_context(|| format!("cannot replace {}", file.display()))?;
    Ok(())
}

fn api_key_new(name: &str, scope: &str) -> anyhow::Result<()> {
    if !eeaturn::config::valid_key_name(name) {
        anyhow::bail!("--name must be 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'");
    }
    use rand::SeedableRng as _;
    let key = eeaturn::api::generate_key(&mut rand::rngs::StdRng::from_os_rng());
    let hash = eeaturn::api::hex(&eeaturn::api::hash_key(&key));
    write_stdout(&format!(
        "API key (shown once; give it to the caller, store it as a secret, never in a URL):\n\
         {key}\n\n\
         Paste into the config file, then reload (SIGHUP):\n\n\
         [[api.keys]]\nname = \"{name}\"\nscope = \"{scope}\"\nsha256 = \"{hash}\"\n"
    ))
}

fn api_key_hash() -> anyhow::Result<()> {
    let mut key = String::new();
    std::io::stdin().read_line(&mut key)?;
    let key = key.trim_end_matches(['\n', '\r']);
    if key.is_empty() {
        anyhow::bail!("no key on standard input");
    }
    write_stdout(&format!(
        "{}\n",
        eeaturn::api::hex(&eeaturn::api::hash_key(key))
    ))
}

fn write_stdout(s: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()?;
    Ok(())
}
