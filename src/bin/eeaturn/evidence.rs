//! `eeaturn evidence`: the operator's and the auditor's tools for the residency evidence
//! (`docs/evidence.md`): signing keys, verification of node directories, and inclusion
//! proofs for one allocation.
//!
//! Exit codes differ from the rest of the CLI so that scripts can tell evidence problems from
//! operating errors: 0 when all is well, 1 for a real finding (tampering, loss, an untrusted
//! key, a proof that does not hold), 2 for usage and I/O errors.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::Subcommand;
use eeaturn::config::Config;
use eeaturn::shell::DirectoryInUse;
use eeaturn_evidence::digest::Digest;
use eeaturn_evidence::proof::{self, Proof};
use eeaturn_evidence::record::{Body, Record};
use eeaturn_evidence::sign::{self, PublicKey};
use eeaturn_evidence::time::Timestamp;
use eeaturn_evidence::verify::{self, Finding, NodeReport, Severity, VerifyOptions, VerifyReport};
use indicatif::{ProgressBar, ProgressStyle};

use crate::write_stdout;

const EXIT_CODES: &str = "\
Exit codes:
  0  verified: no finding of tampering or loss (warnings and notes may be listed)
  1  a real finding: a record edited, deleted or reordered, a segment truncated or missing,
     a manifest missing or disagreeing, a statement signed by an untrusted key or with a bad
     signature, an unreadable file
  2  usage or I/O error (bad arguments, a directory or key file that cannot be read)";

#[derive(Subcommand)]
pub(crate) enum EvidenceCmd {
    /// Write a new Ed25519 evidence signing key pair (PKCS#8 private key, public key text).
    ///
    /// The private key goes to the relay node only, as a systemd credential; the public key
    /// goes to the auditor, who passes it to `verify --trust`. Neither file is overwritten.
    Keygen {
        /// Where to write the private key (PEM, mode 0600); must not exist.
        #[arg(long, value_name = "FILE")]
        out_private: PathBuf,
        /// Where to write the public key for the auditor; must not exist.
        #[arg(long, value_name = "FILE")]
        out_public: PathBuf,
    },
    /// Check node evidence directories: every chain link, manifest, checkpoint and signature.
    ///
    /// Each DIR is one relay node's evidence directory (the one holding `segments/`); each
    /// node keeps its own chain. Every finding is named with its file and sequence numbers,
    /// then a one-line verdict follows.
    ///
    /// `--trust` is required: a signature only means something if the auditor names the keys
    /// they trust (the public key files the operator handed over, compared by fingerprint
    /// out of band). A statement signed by any other key is a finding.
    #[command(after_help = EXIT_CODES)]
    Verify {
        /// Node evidence directories.
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Check the records of the period from this time on; closed segments that end
        /// before it are checked through their signed manifests only. RFC 3339
        /// (2026-12-01T00:00:00Z, 2026-12-01T01:00:00+01:00) or a date (2026-12-01, UTC
        /// midnight).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        from: Option<SystemTime>,
        /// Check the records of the period up to this time; closed segments that start after
        /// it are checked through their manifests only. Same forms as --from.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        to: Option<SystemTime>,
        /// A public key file (from `eeaturn evidence keygen`) whose signatures are accepted.
        /// Repeat it for rotated keys.
        #[arg(long, required = true, value_name = "PUBKEY_FILE")]
        trust: Vec<PathBuf>,
        /// Print the verification report as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write one allocation's records with Merkle inclusion proofs, as JSON for `verify-proof`.
    ///
    /// The proof holds the record lines, their audit paths, and the signed manifests (or, for
    /// the open segment, checkpoints) they are proven against. Exit 0 when the proof was written, 1 when the directory holds no signed record of the
    /// allocation, 2 on usage or I/O errors.
    Prove {
        /// The allocation id, as in the records' `allocation` field.
        #[arg(long, value_name = "ID")]
        allocation: String,
        /// The node evidence directory.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Write the proof to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Delete the evidence older than `evidence.retention` now, as the running relay does
    /// every hour by itself.
    ///
    /// Opens the node directory of the configuration's `[evidence]` table as its writer (with
    /// the signing key), deletes the closed segments whose last record is older than the
    /// retention, with their manifests and checkpoints, and destroys the pseudonym day keys
    /// of the days no kept record is from. A signed `pruned` record says what was deleted
    /// before anything is; `verify` then reports it as pruned by retention. The directory
    /// must not be in use: while a relay runs on it, this refuses (exit 2). Exit 0 when done,
    /// also when nothing was old enough.
    Prune {
        /// The relay's configuration file (its `[evidence]` table).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Take this as the current time instead of the clock (for tests and rehearsals;
        /// never earlier than the newest record). Same forms as `verify --from`.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        now: Option<SystemTime>,
    },
    /// Check a proof from `prove` offline and print what it proves.
    ///
    /// Checks each statement's signature by a trusted key, each record's audit path to the
    /// signed Merkle root, and that each record belongs to the allocation at its position.
    /// Exit 0 when the proof holds, 1 when it does not (or is not a proof), 2 on usage or
    /// I/O errors.
    VerifyProof {
        /// The proof file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// A public key file whose signatures are accepted (repeatable).
        #[arg(long, required = true, value_name = "PUBKEY_FILE")]
        trust: Vec<PathBuf>,
    },
}

/// Runs an evidence command and maps its outcome to the exit codes above.
pub(crate) fn run(cmd: EvidenceCmd) -> ExitCode {
    let result = match cmd {
        EvidenceCmd::Keygen {
            out_private,
            out_public,
        } => keygen(&out_private, &out_public),
        EvidenceCmd::Verify {
            dirs,
            from,
            to,
            trust,
            json,
        } => verify(&dirs, from, to, &trust, json),
        EvidenceCmd::Prove {
            allocation,
            dir,
            out,
        } => prove(&allocation, &dir, out.as_deref()),
        EvidenceCmd::VerifyProof { file, trust } => verify_proof(&file, &trust),
        EvidenceCmd::Prune { config, now } => prune(&config, now),
    };
    match result {
        Ok(Outcome::Good) => ExitCode::SUCCESS,
        Ok(Outcome::Finding) => ExitCode::from(1),
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// How a command that did not fail to run ended.
enum Outcome {
    /// Verified, written.
    Good,
    /// A real finding: exit 1.
    Finding,
}

fn keygen(private: &Path, public: &Path) -> anyhow::Result<Outcome> {
    for path in [private, public] {
        if path.exists() {
            anyhow::bail!("{} exists; refusing to overwrite a key", path.display());
        }
    }
    let (pkcs8, key) = sign::keygen()?;
    sign::write_key_files(private, public, &pkcs8, &key)?;
    write_stdout(&format!(
        "Wrote a new evidence signing key.\n\
         Fingerprint: sha256:{fp}\n\n\
         {private} (private, mode 0600): the relay's signing key. Keep it on the relay node\n\
         only, as a systemd credential, and point evidence.signing_key_file at it, e.g.\n\
         \x20 LoadCredential=evidence-key:/etc/eeaturn/evidence-key.pem   (eeaturn.service)\n\
         \x20 signing_key_file = \"/run/credentials/eeaturn.service/evidence-key\"   ([evidence])\n\
         Never copy it elsewhere; the auditor does not need it.\n\n\
         {public} (public): give it to the auditor, who checks the fingerprint above with you\n\
         out of band and verifies with\n\
         \x20 eeaturn evidence verify DIR --trust {public}\n",
        fp = key.fingerprint(),
        private = private.display(),
        public = public.display(),
    ))?;
    Ok(Outcome::Good)
}

fn read_trust(files: &[PathBuf]) -> anyhow::Result<Vec<PublicKey>> {
    files
        .iter()
        .map(|f| {
            PublicKey::from_file(f)
                .with_context(|| format!("--trust {}: not a public key file", f.display()))
        })
        .collect()
}

fn verify(
    dirs: &[PathBuf],
    from: Option<SystemTime>,
    to: Option<SystemTime>,
    trust_files: &[PathBuf],
    json: bool,
) -> anyhow::Result<Outcome> {
    let trust = read_trust(trust_files)?;
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        anyhow::bail!("--from is after --to");
    }
    for dir in dirs {
        if !dir.join("segments").is_dir() {
            anyhow::bail!(
                "{}: not a node evidence directory (no segments/ in it)",
                dir.display()
            );
        }
    }
    let opts = VerifyOptions { from, to, trust };
    let bar = progress_bar();
    let report = verify::verify(dirs, &opts, &mut |p| {
        bar.set_length(p.segments_total as u64);
        bar.set_position(p.segments_done as u64);
        bar.set_message(format!(
            "{}: {} records, {} MiB",
            p.dir.display(),
            p.records,
            p.bytes >> 20
        ));
    });
    bar.finish_and_clear();
    let out = if json {
        report.to_json() + "\n"
    } else {
        render_report(&report, &opts)
    };
    write_stdout(&out)?;
    Ok(if report.is_ok() {
        Outcome::Good
    } else {
        Outcome::Finding
    })
}

/// A bar on standard error, hidden when it is not a terminal (CI, pipes, cron).
fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} segments {pos}/{len} {wide_bar} {msg}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn render_report(report: &VerifyReport, opts: &VerifyOptions) -> String {
    let trusted: Vec<Digest> = opts.trust.iter().map(PublicKey::fingerprint).collect();
    let mut out = String::new();
    let period = opts.from.is_some() || opts.to.is_some();
    for node in &report.nodes {
        render_node(&mut out, node, &trusted, period);
    }
    if period {
        out += &format!(
            "Period: {} to {}; closed segments outside it were checked through their signed \
             manifests only.\n",
            opts.from.map_or("the start".to_owned(), |t| {
                Timestamp::from_system_time(t).to_string()
            }),
            opts.to
                .map_or("the end".to_owned(), |t| Timestamp::from_system_time(t)
                    .to_string()),
        );
    }
    let count = |s: Severity| report.findings().filter(|(_, f)| f.severity() == s).count();
    let (warnings, notes) = (count(Severity::Warning), count(Severity::Info));
    let nodes = report.nodes.len();
    out += &if report.is_ok() {
        format!(
            "VERIFIED: {nodes} node(s), {} records, no tampering or loss found \
             ({warnings} warning(s), {notes} note(s)).\n",
            report.records
        )
    } else {
        format!(
            "FAILED: {} finding(s) of tampering, loss or an untrusted key in {nodes} node(s) \
             ({warnings} warning(s), {notes} note(s)); see docs/evidence.md for what to do.\n",
            report.failures
        )
    };
    out
}

fn render_node(out: &mut String, node: &NodeReport, trusted: &[Digest], period: bool) {
    let opt = |t: Option<Timestamp>| t.map_or("-".to_owned(), |t| t.to_string());
    let seq = |s: Option<u64>| s.map_or("-".to_owned(), |s| s.to_string());
    *out += &format!(
        "Node {} ({})\n",
        node.node.as_deref().unwrap_or("(no record read)"),
        node.dir.display()
    );
    *out += &format!(
        "  records:       seq {} to {} ({} records read in {} segments)\n",
        seq(node.first_seq),
        seq(node.last_seq),
        node.records,
        node.segments
    );
    *out += &format!(
        "  time range:    {} to {}\n",
        opt(node.first_time),
        opt(node.last_time)
    );
    *out += &if period {
        // Segments before the period were not read: what the signed statements say is held.
        format!(
            "  oldest held:   seq {} (before the period; not read)\n",
            node.pruned_up_to.map_or(1, |p| p + 1)
        )
    } else {
        format!(
            "  oldest held:   seq {} at {}\n",
            seq(node.first_seq),
            opt(node.first_time)
        )
    };
    *out += &format!(
        "  pruned:        {}\n",
        node.pruned_up_to
            .map_or("nothing pruned by retention".to_owned(), |s| format!(
                "up to seq {s} by retention"
            ))
    );
    if node.key_fingerprints.is_empty() {
        *out += "  signed by:     no signed statement found\n";
    }
    for (i, key) in node.key_fingerprints.iter().enumerate() {
        *out += &format!(
            "  {}sha256:{key} ({})\n",
            if i == 0 {
                "signed by:     "
            } else {
                "               "
            },
            if trusted.contains(key) {
                "trusted"
            } else {
                "NOT TRUSTED"
            }
        );
    }
    if node.findings.is_empty() {
        *out += "  findings:      none\n";
    } else {
        *out += "  findings:\n";
        for f in &node.findings {
            let tag = match f.severity() {
                Severity::Failure => "FAIL",
                Severity::Warning => "warn",
                Severity::Info => "note",
            };
            *out += &format!("    {tag}  {}\n", describe(f));
        }
    }
}

/// Renders a finding readably, with its file and sequence numbers.
fn describe(f: &Finding) -> String {
    let range = |from: u64, to: u64, what: &str| {
        if from == to {
            format!("record {from} {what}")
        } else {
            format!("records {from}\u{2013}{to} {what}")
        }
    };
    match f {
        Finding::RecordEdited { file, seq } => format!(
            "{file} seq {seq}: record edited (its bytes no longer hash to what the next record \
             or the signed head chained)"
        ),
        Finding::RecordsDeleted {
            file,
            from_seq,
            to_seq,
        } => format!("{file}: {}", range(*from_seq, *to_seq, "deleted")),
        Finding::RecordsReordered { file, seq } => {
            format!("{file} seq {seq}: records reordered (seq {seq} comes after a higher seq)")
        }
        Finding::RecordDuplicated { file, seq } => {
            format!("{file} seq {seq}: record duplicated")
        }
        Finding::SegmentTruncated {
            file,
            expected_bytes,
            found_bytes,
            from_seq,
            to_seq,
        } => format!(
            "{file}: segment truncated to {found_bytes} of the {expected_bytes} signed bytes; {}",
            range(*from_seq, *to_seq, "missing")
        ),
        Finding::SegmentMissing {
            file,
            from_seq,
            to_seq,
        } => format!(
            "{file}: segment missing before it, {} (not by retention)",
            range(*from_seq, *to_seq, "gone")
        ),
        Finding::ManifestMissing { file } => {
            format!("{file}: manifest missing (every closed segment has one)")
        }
        Finding::ManifestMismatch { file, field } => {
            format!("{file}: the signed manifest disagrees with the segment in `{field}`")
        }
        Finding::ManifestChainBroken { file } => format!(
            "{file}: manifest chain broken (prev_manifest is not the previous manifest's hash)"
        ),
        Finding::CheckpointMismatch { file, field } => {
            format!("{file}: the signed checkpoint disagrees with the segment in `{field}`")
        }
        Finding::UntrustedKey { file, key } => {
            format!("{file}: signed by an untrusted key sha256:{key}")
        }
        Finding::BadSignature { file } => format!(
            "{file}: bad signature (the statement was changed after signing, or is unsigned)"
        ),
        Finding::Unreadable { file, error } => format!("{file}: unreadable: {error}"),
        Finding::NodeMismatch { file, seq } => {
            format!("{file} seq {seq}: record of another node than the rest of the directory")
        }
        Finding::PruneMismatch { file, seq } => {
            format!("{file} seq {seq}: a `pruned` record disagrees with what was actually deleted")
        }
        Finding::TornTail { file, offset } => {
            format!("{file}: torn tail at byte {offset} (crash; fine if the relay was killed)")
        }
        Finding::PrunedByRetention { up_to_seq } => {
            format!("pruned by retention up to seq {up_to_seq} (fine)")
        }
        Finding::LiveRecordsUnsigned {
            file,
            from_seq,
            to_seq,
        } => format!(
            "{file}: {} (open segment; normal for up to one checkpoint interval)",
            range(*from_seq, *to_seq, "not yet under a checkpoint")
        ),
        Finding::UnexpectedFile { file } => {
            format!("{file}: unexpected file in segments/ (not part of the layout)")
        }
    }
}

fn prune(config_path: &Path, now: Option<SystemTime>) -> anyhow::Result<Outcome> {
    let config = Config::load(config_path)?;
    let Some(ev) = &config.evidence else {
        anyhow::bail!(
            "{}: evidence is not enabled ([evidence] enabled = true): nothing to prune",
            config_path.display()
        );
    };
    let now = now.unwrap_or_else(wall_clock);
    let (mut log, _) = match eeaturn::shell::open_log(&config, ev, now) {
        Err(e) if e.downcast_ref::<DirectoryInUse>().is_some() => {
            return Err(e.context(
                "a relay is running on this directory; it prunes by evidence.retention every \
                 hour by itself, so there is nothing to do (to prune right now, stop it first)",
            ));
        }
        other => other?,
    };
    let outcome = log
        .prune(ev.retention, now)
        .with_context(|| format!("pruning {}", ev.directory.display()));
    // The log is closed (node-stopped, manifest) whether or not the pruning went through.
    let closed = log
        .close(now, "prune")
        .with_context(|| format!("closing {}", ev.directory.display()));
    let outcome = outcome?;
    closed?;
    let retention = days_or_seconds(ev.retention);
    let mut out = format!(
        "{}: retention {retention}, now {}\n",
        ev.directory.display(),
        Timestamp::from_system_time(now)
    );
    match outcome.up_to_seq {
        Some(seq) => {
            out += &format!(
                "Deleted {} segment(s), every record up to seq {seq}:\n",
                outcome.segments.len()
            );
            for s in &outcome.segments {
                out += &format!("  {s}\n");
            }
        }
        None => out += "No segment is older than the retention; none deleted.\n",
    }
    if outcome.key_days.is_empty() {
        out += "No pseudonym day key destroyed.\n";
    } else {
        out += &format!(
            "Destroyed the pseudonym keys of {} day(s): {}\n",
            outcome.key_days.len(),
            outcome.key_days.join(", ")
        );
    }
    if let Some(seq) = outcome.record_seq {
        out += &format!("The signed `pruned` record is seq {seq}.\n");
    }
    write_stdout(&out)?;
    Ok(Outcome::Good)
}

/// `"90d"` for whole days, else seconds.
fn days_or_seconds(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else {
        format!("{s}s")
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "the CLI reads the wall clock when no --now is given"
)]
fn wall_clock() -> SystemTime {
    SystemTime::now()
}

fn prove(allocation: &str, dir: &Path, out: Option<&Path>) -> anyhow::Result<Outcome> {
    if !dir.join("segments").is_dir() {
        anyhow::bail!(
            "{}: not a node evidence directory (no segments/ in it)",
            dir.display()
        );
    }
    let proof = proof::prove(dir, allocation)?;
    let records: usize = proof.segments.iter().map(|s| s.records.len()).sum();
    if records == 0 {
        eprintln!(
            "No signed record of allocation {allocation} in {}{}.",
            dir.display(),
            if proof.unsigned_records > 0 {
                format!(
                    " ({} not yet under a checkpoint: try again after the next one)",
                    proof.unsigned_records
                )
            } else {
                String::new()
            }
        );
        return Ok(Outcome::Finding);
    }
    let json = serde_json::to_string_pretty(&proof)? + "\n";
    match out {
        Some(path) => {
            std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "Wrote {}: {records} record(s) of allocation {allocation} in {} segment(s){}.",
                path.display(),
                proof.segments.len(),
                if proof.unsigned_records > 0 {
                    format!(
                        "; {} more not yet under a checkpoint",
                        proof.unsigned_records
                    )
                } else {
                    String::new()
                }
            );
        }
        None => write_stdout(&json)?,
    }
    Ok(Outcome::Good)
}

fn verify_proof(file: &Path, trust_files: &[PathBuf]) -> anyhow::Result<Outcome> {
    let trust = read_trust(trust_files)?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let proof: Proof = match serde_json::from_str(&text) {
        Ok(p) => p,
        Err(e) => {
            write_stdout(&format!(
                "NOT PROVEN: {} is not an evidence proof: {e}\n",
                file.display()
            ))?;
            return Ok(Outcome::Finding);
        }
    };
    match proof::verify_proof(&proof, &trust) {
        Ok(summary) => {
            write_stdout(&render_proof(&proof, summary.records))?;
            Ok(Outcome::Good)
        }
        Err(e) => {
            write_stdout(&format!(
                "NOT PROVEN: allocation {}: {e}\n",
                proof.allocation
            ))?;
            Ok(Outcome::Finding)
        }
    }
}

fn render_proof(proof: &Proof, records: usize) -> String {
    let mut out = format!(
        "PROVEN: {records} record(s) of allocation {} are included in signed evidence.\n",
        proof.allocation
    );
    for seg in &proof.segments {
        let s = &seg.statement;
        out += &format!(
            "Node {}, segment {}: {} signed at {} by key sha256:{} (covers seq {} to {}, Merkle \
             root {})\n",
            s.node,
            s.segment,
            name(&s.statement),
            s.signed_at,
            s.key,
            s.first_seq,
            s.last_seq,
            s.merkle_root
        );
        for r in &seg.records {
            // verify_proof parsed every line already.
            if let Ok(record) = Record::parse(r.line.as_bytes()) {
                out += &format!(
                    "  seq {} {} {}\n",
                    record.seq,
                    record.time,
                    summarize(&record.body)
                );
            }
        }
    }
    if proof.unsigned_records > 0 {
        out += &format!(
            "Not covered: {} later record(s) were not yet under a signed checkpoint when the \
             proof was made.\n",
            proof.unsigned_records
        );
    }
    out
}

/// One line for a record an auditor reads.
fn summarize(body: &Body) -> String {
    let place = |country: &Option<String>, asn: &Option<u32>| {
        format!(
            "{}, {}",
            country.as_deref().unwrap_or("country unknown"),
            asn.map_or("ASN unknown".to_owned(), |a| format!("AS{a}"))
        )
    };
    match body {
        Body::AllocationCreated(b) => format!(
            "allocation created: client {} ({}) over {}, rule {} ({}), relayed {}, lifetime {} s",
            b.client,
            place(&b.country, &b.asn),
            name(&b.transport),
            b.rule,
            name(&b.fact_source),
            b.relayed.join(" "),
            b.lifetime_s
        ),
        Body::AllocationRefused(b) => format!(
            "allocation refused at {}: client {} ({}) over {}, rule {}",
            name(&b.stage),
            b.client,
            place(&b.country, &b.asn),
            name(&b.transport),
            b.rule
        ),
        Body::Permission(b) => format!(
            "permission {}: peer {} ({}), rule {}, by {}",
            name(&b.decision),
            b.peer,
            place(&b.country, &b.asn),
            b.rule,
            name(&b.via)
        ),
        Body::ChannelBound(b) => format!(
            "channel {:#06x} bound to peer {} ({}), rule {}",
            b.channel,
            b.peer,
            place(&b.country, &b.asn),
            b.rule
        ),
        Body::AllocationEnded(b) => {
            let mut s = format!(
                "allocation ended ({}) after {:.1} s: {} packets/{} bytes to peers, {} packets/{} \
                 bytes to the client",
                b.reason,
                b.duration_ms as f64 / 1000.0,
                b.totals.packets_to_peer,
                b.totals.bytes_to_peer,
                b.totals.packets_to_client,
                b.totals.bytes_to_client
            );
            for p in &b.peers {
                s += &format!(
                    "; peer {}: {}/{} out, {}/{} in",
                    p.peer,
                    p.packets_to_peer,
                    p.bytes_to_peer,
                    p.packets_to_client,
                    p.bytes_to_client
                );
            }
            s
        }
        other => other.kind().to_owned(),
    }
}

/// The kebab-case name serde writes for a unit enum variant.
fn name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Parses `--from`/`--to`: RFC 3339 (`2026-12-01T00:00:00Z`, fractions and `±HH:MM` offsets
/// allowed) or a date (`2026-12-01`, UTC midnight).
fn parse_time(s: &str) -> Result<SystemTime, String> {
    let bad =
        || format!("`{s}` is neither RFC 3339 (2026-12-01T00:00:00Z) nor a date (2026-12-01)");
    let b = s.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let part = s.get(range).ok_or_else(bad)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if !(1..=days_in_month).contains(&day) {
        return Err(bad());
    }
    let mut secs = days_from_civil(year, month, day) * 86_400;
    let mut nanos = 0u32;
    if b.len() > 10 {
        if !matches!(b[10], b'T' | b't') || b.len() < 20 || b[13] != b':' || b[16] != b':' {
            return Err(bad());
        }
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if hour > 23 || minute > 59 || second > 60 {
            return Err(bad());
        }
        secs += hour * 3600 + minute * 60 + second;
        let mut rest = &s[19..];
        if let Some(frac) = rest.strip_prefix('.') {
            let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad());
            }
            let padded = format!("{:0<9}", &frac[..digits.min(9)]);
            nanos = padded.parse().map_err(|_| bad())?;
            rest = &frac[digits..];
        }
        match rest.as_bytes() {
            [b'Z' | b'z'] => {}
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]
                if [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()) =>
            {
                let offset = i64::from((h1 - b'0') * 10 + (h2 - b'0')) * 3600
                    + i64::from((m1 - b'0') * 10 + (m2 - b'0')) * 60;
                secs -= if *sign == b'+' { offset } else { -offset };
            }
            _ => return Err(bad()),
        }
    }
    let secs = u64::try_from(secs).map_err(|_| format!("`{s}` is before 1970"))?;
    Ok(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the usual era-based computation).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(s: &str) -> u64 {
        parse_time(s)
            .unwrap()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn times_parse_as_rfc3339_or_utc_dates() {
        assert_eq!(unix("1970-01-01"), 0);
        assert_eq!(unix("2026-12-01"), 1_796_083_200);
        assert_eq!(unix("2026-12-01T00:00:00Z"), 1_796_083_200);
        assert_eq!(unix("2026-12-01T01:00:00+01:00"), 1_796_083_200);
        assert_eq!(unix("2026-11-30T23:30:00-00:30"), 1_796_083_200);
        assert_eq!(unix("2024-02-29T12:00:00.5Z"), 1_709_208_000);
        assert_eq!(
            parse_time("2026-12-06T03:14:15.123Z").unwrap(),
            Timestamp::from_unix_millis(1_796_526_855_123).to_system_time()
        );
        for bad in [
            "",
            "2026-13-01",
            "2026-02-29",
            "2026-12-01T00:00:00",
            "2026-12-01 00:00:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T00:00:00.Z",
            "1969-12-31",
            "yesterday",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
