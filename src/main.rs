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
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCmd),
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

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let secrets = eeaturn::shell::load_secrets(&config)?;
    let listen: Vec<String> = config.listen.iter().map(|l| l.to_string()).collect();
    let out = format!(
        "{}: OK\n  realm: {}\n  listen: {}\n  relay: v4={} v6={} ports={}-{}\n  secrets accepted: {}\n  peers.dangerous_allow: {}\n",
        path.display(),
        config.realm,
        listen.join(", "),
        config.relay.v4.map_or("-".to_owned(), |i| i.to_string()),
        config.relay.v6.map_or("-".to_owned(), |i| i.to_string()),
        config.relay.ports.start(),
        config.relay.ports.end(),
        secrets.len(),
        if config.peer_dangerous_allow.is_empty() {
            "none".to_owned()
        } else {
            format!(
                "{:?} (development setting)",
                config
                    .peer_dangerous_allow
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
            )
        },
    );
    write_stdout(&out)
}

fn write_stdout(s: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()?;
    Ok(())
}
