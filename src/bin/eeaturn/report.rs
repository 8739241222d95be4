//! `eeaturn report`: the residency report for compliance officers (`docs/reports.md`).
//!
//! The work is `eeaturn_evidence::report` (verify, fold, render); this file parses the
//! command line, shows progress on a terminal and writes the files.

use std::fs;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use eeaturn_evidence::report::text::Lang;
use eeaturn_evidence::report::{self, Progress, Report, ReportOptions};
use eeaturn_evidence::sign::PublicKey;
use eeaturn_evidence::time::Timestamp;
use eeaturn_evidence::verify::VerifyOptions;
use indicatif::{ProgressBar, ProgressStyle};

/// Shown after `eeaturn report --help`.
pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0  the evidence verified and 100 % of relayed traffic stayed inside the region
  1  the evidence does NOT verify (the report is still written and says so at the top)
  2  usage or I/O error (bad arguments, a directory, key or output file that cannot be used)
  3  the evidence verified, but some traffic had an endpoint outside the region (listed)

Example:
  eeaturn report --from 2026-12-01 --to 2026-12-31 --format html --lang de \\
      --trust fra-1.pub --trust osl-1.pub --out bericht-2026-12.html evidence/fra-1 evidence/osl-1";

/// The output formats.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// One self-contained HTML file that prints on A4.
    Html,
    /// The same content as JSON (docs/evidence/report.schema.json).
    Json,
    /// One CSV file per table into the --out directory, or one table (--table).
    Csv,
}

/// The report languages.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Language {
    /// English.
    En,
    /// German.
    De,
}

#[derive(Args)]
pub(crate) struct ReportArgs {
    /// Node evidence directories (each holds `segments/`); several give one report with a
    /// row per node.
    #[arg(required = true, value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// First day of the period (UTC), `2026-12-01`, or an RFC 3339 time.
    #[arg(long, value_name = "DATE")]
    from: String,
    /// Last day of the period (UTC, included), `2026-12-31`, or an RFC 3339 time (excluded).
    #[arg(long, value_name = "DATE")]
    to: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "html")]
    format: Format,
    /// Language of the HTML report.
    #[arg(long, value_enum, default_value = "en")]
    lang: Language,
    /// Write to this file (html, json, csv with --table) or directory (csv); default:
    /// standard output (not for csv without --table).
    #[arg(long, value_name = "FILE|DIR")]
    out: Option<PathBuf>,
    /// With --format csv: write only this table (summary, nodes, days, refusals_by_country,
    /// refusals_by_asn, refusals_by_rule, clients_by_country, peers_by_country, outside,
    /// databases, policies, node_events, refused, findings).
    #[arg(long, value_name = "NAME")]
    table: Option<String>,
    /// A public key file (from `eeaturn evidence keygen`) whose signatures are trusted;
    /// repeat it for several nodes or rotated keys. Without one, nothing verifies.
    #[arg(long, value_name = "PUBKEY")]
    trust: Vec<PathBuf>,
    /// How many refused attempts (and other growing lists) the report lists; the rest are
    /// counted. Pass a large number for a complete CSV listing.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    limit: usize,
}

/// Runs `eeaturn report` and maps the outcome to the exit codes above.
pub(crate) fn run(args: ReportArgs) -> ExitCode {
    match report(&args) {
        Ok(r) if !r.summary.verified => ExitCode::from(1),
        Ok(r) if !r.summary.all_inside => ExitCode::from(3),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn report(args: &ReportArgs) -> anyhow::Result<Report> {
    let from = parse_bound(&args.from, false).context("--from")?;
    let to = parse_bound(&args.to, true).context("--to")?;
    if to <= from {
        bail!("--to must be after --from");
    }
    if args.table.is_some() && args.format != Format::Csv {
        bail!("--table is for --format csv");
    }
    if let Some(t) = &args.table
        && !report::csv::TABLES.contains(&t.as_str())
    {
        bail!("no table {t:?}; tables: {}", report::csv::TABLES.join(", "));
    }
    if args.format == Format::Csv && args.table.is_none() && args.out.is_none() {
        bail!(
            "--format csv writes one file per table: name a directory with --out (or one --table)"
        );
    }
    for dir in &args.dirs {
        if !dir.is_dir() {
            bail!("{}: not a directory", dir.display());
        }
    }
    let mut trust = Vec::new();
    for path in &args.trust {
        trust.push(PublicKey::from_file(path).with_context(|| path.display().to_string())?);
    }
    let opts = ReportOptions {
        from,
        to,
        generated_at: generated_at(),
        list_limit: args.limit,
        dirs_shown: args.dirs.iter().map(|d| d.display().to_string()).collect(),
        trust_shown: args.trust.iter().map(|d| d.display().to_string()).collect(),
        assumed_regions: vec!["EEA".to_owned()],
    };
    let bar = progress_bar();
    let built = report::build(
        &args.dirs,
        &VerifyOptions {
            trust,
            ..VerifyOptions::default()
        },
        &opts,
        &mut |p| match p {
            Progress::Verifying { bytes } => {
                bar.set_message("verifying");
                bar.set_position(bytes);
            }
            Progress::Reading { bytes } => {
                bar.set_message("reading");
                bar.set_position(bytes);
            }
        },
    );
    bar.finish_and_clear();
    let r = built?;
    let lang = match args.lang {
        Language::En => Lang::En,
        Language::De => Lang::De,
    };
    match args.format {
        Format::Html => emit(
            args.out.as_deref(),
            report::html::render(&r, lang).as_bytes(),
        )?,
        Format::Json => {
            let mut json = serde_json::to_string_pretty(&r)?;
            json.push('\n');
            emit(args.out.as_deref(), json.as_bytes())?;
        }
        Format::Csv => match &args.table {
            Some(table) => {
                let mut buf = Vec::new();
                report::csv::write_table(&r, table, &mut buf)?;
                emit(args.out.as_deref(), &buf)?;
            }
            None => {
                let dir = args.out.as_deref().unwrap_or(Path::new("."));
                fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
                for table in report::csv::TABLES {
                    let mut buf = Vec::new();
                    report::csv::write_table(&r, table, &mut buf)?;
                    let path = dir.join(format!("{table}.csv"));
                    fs::write(&path, buf).with_context(|| path.display().to_string())?;
                }
            }
        },
    }
    if !r.summary.verified {
        eprintln!(
            "the evidence does NOT verify: {} finding(s) of tampering or loss (listed in the report)",
            r.summary.failures
        );
    } else if !r.summary.all_inside {
        eprintln!("some relayed traffic had an endpoint outside the region (listed in the report)");
    }
    Ok(r)
}

fn emit(out: Option<&Path>, bytes: &[u8]) -> anyhow::Result<()> {
    match out {
        Some(path) => fs::write(path, bytes).with_context(|| path.display().to_string()),
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(bytes)?;
            stdout.flush()?;
            Ok(())
        }
    }
}

/// `2026-12-01` (a whole UTC day: the start for --from, the end of the day for --to) or an
/// RFC 3339 UTC time (`2026-12-01T06:00:00Z`, with or without milliseconds).
fn parse_bound(s: &str, end_of_day: bool) -> anyhow::Result<Timestamp> {
    let full = match s.len() {
        10 => format!("{s}T00:00:00.000Z"),
        20 if s.ends_with('Z') => format!("{}.000Z", &s[..19]),
        _ => s.to_owned(),
    };
    let Some(t) = Timestamp::parse(&full) else {
        bail!(
            "`{s}` is neither a date (2026-12-01) nor an RFC 3339 UTC time (2026-12-01T00:00:00Z)"
        );
    };
    if s.len() == 10 && end_of_day {
        return Ok(Timestamp::from_unix_millis(t.unix_millis() + 86_400_000));
    }
    Ok(t)
}

/// Now, or `SOURCE_DATE_EPOCH` (seconds) for a reproducible report.
fn generated_at() -> Timestamp {
    if let Some(secs) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        return Timestamp::from_unix_millis(secs * 1000);
    }
    #[expect(
        clippy::disallowed_methods,
        reason = "the report says when it was made"
    )]
    let now = SystemTime::now();
    Timestamp::from_system_time(now)
}

/// A bar on standard error, hidden when it is not a terminal (CI, pipes, cron).
fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {bytes} ({bytes_per_sec})") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
