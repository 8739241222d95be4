//! The `eeaturn` command: run the relay, and the operator's tools around it (credentials,
//! secrets, API keys, configuration checks, GeoIP databases, residency evidence). One file per command family;
//! each command body is a function that returns `anyhow::Result` and prints with
//! [`write_stdout`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod check;
mod evidence;
mod geo;
mod keys;
mod report;
mod serve;

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
    Credentials(keys::CredentialsCmd),
    /// Rotate the TURN REST signing secret without a restart (see docs/operations.md).
    #[command(subcommand)]
    Secret(keys::SecretCmd),
    /// Keys for the credential API (docs/api.md).
    #[command(subcommand, name = "api-key")]
    ApiKey(keys::ApiKeyCmd),
    /// Configuration files.
    #[command(subcommand)]
    Config(check::ConfigCmd),
    /// GeoIP databases and residency decisions.
    #[command(subcommand)]
    Geo(geo::GeoCmd),
    /// Residency evidence: signing keys, verification, inclusion proofs (docs/evidence.md).
    #[command(subcommand)]
    Evidence(evidence::EvidenceCmd),
    /// The residency report for compliance officers: HTML, JSON or CSV (docs/reports.md).
    ///
    /// Verifies the evidence of one or several relay nodes first, with the same code as
    /// `eeaturn evidence verify`, then reports on the period: the share of relayed traffic
    /// inside the region, refusals, databases and policies in force, retention.
    #[command(after_long_help = report::EXIT_CODES)]
    Report(report::ReportArgs),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Serve { config } => serve::serve(&config),
        Cmd::Credentials(c) => keys::credentials(c),
        Cmd::Secret(c) => keys::secret(c),
        Cmd::ApiKey(c) => keys::api_key(c),
        Cmd::Config(c) => check::run(c),
        Cmd::Geo(c) => geo::run(c),
        // Its own exit codes: 1 is a finding in the evidence, 2 an operating error.
        Cmd::Evidence(c) => return evidence::run(c),
        // Its own exit codes: 1 evidence that does not verify, 2 errors, 3 traffic outside.
        Cmd::Report(args) => return report::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes a command's output to standard output and flushes it.
fn write_stdout(s: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()?;
    Ok(())
}
