//! Prometheus metrics: names, help texts, and the text exposition rendered from the core's
//! [`Stats`] and the databases in force.
//!
//! Labels are bounded: method, result, reason, subject, rule, direction, database. Never a
//! username, an address or an allocation id. Rendering is pure; the shell serves the text.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::policy::Policy;
use crate::relay::Stats;

/// Every metric: name, type, help text.
pub const METRICS: &[(&str, &str, &str)] = &[
    (
        "eeaturn_build_info",
        "gauge",
        "Always 1; the version label names the build.",
    ),
    (
        "eeaturn_allocations",
        "gauge",
        "Allocations in existence now.",
    ),
    (
        "eeaturn_allocations_created_total",
        "counter",
        "Allocations created.",
    ),
    (
        "eeaturn_allocations_ended_total",
        "counter",
        "Allocations ended, by reason.",
    ),
    (
        "eeaturn_requests_total",
        "counter",
        "STUN/TURN requests answered, by method and result (ok or the error code).",
    ),
    (
        "eeaturn_policy_denials_total",
        "counter",
        "Addresses refused by the residency policy, by subject and rule.",
    ),
    (
        "eeaturn_auth_failures_total",
        "counter",
        "Requests with credentials that were refused, by reason (wrong-credentials, stale-nonce, bad-request).",
    ),
    (
        "eeaturn_connections_refused_total",
        "counter",
        "TCP/TLS connections closed at accept by a connection limit, or shed for a new one, by rule.",
    ),
    (
        "eeaturn_relayed_packets_total",
        "counter",
        "Packets relayed, by direction.",
    ),
    (
        "eeaturn_relayed_bytes_total",
        "counter",
        "Payload bytes relayed, by direction.",
    ),
    (
        "eeaturn_dropped_total",
        "counter",
        "Datagrams dropped, by reason.",
    ),
    (
        "eeaturn_geo_db_build_timestamp_seconds",
        "gauge",
        "Build time of each GeoIP database in force (Unix seconds).",
    ),
    (
        "eeaturn_geo_db_age_seconds",
        "gauge",
        "Age of each GeoIP database in force, by its build time.",
    ),
    (
        "eeaturn_geo_db_stale",
        "gauge",
        "1 when a GeoIP database is older than geo.max_age: update it.",
    ),
    (
        "eeaturn_policy_reloads_total",
        "counter",
        "Policy and database reloads, by result.",
    ),
    (
        "eeaturn_evidence_records_written_total",
        "counter",
        "Evidence records appended to the log (held in memory while writing fails).",
    ),
    (
        "eeaturn_evidence_queue_depth",
        "gauge",
        "Events queued from the workers to the evidence writer.",
    ),
    (
        "eeaturn_evidence_pending_bytes",
        "gauge",
        "Bytes of evidence records held in memory, not yet written (bounded by evidence.memory_limit).",
    ),
    (
        "eeaturn_evidence_fsync_seconds",
        "gauge",
        "Duration of the last and the longest evidence fsync, by stat (last, max).",
    ),
    (
        "eeaturn_evidence_write_errors_total",
        "counter",
        "Failed evidence writes, fsyncs, checkpoints and prunes.",
    ),
    (
        "eeaturn_evidence_checkpoint_age_seconds",
        "gauge",
        "Seconds since the last signed checkpoint of the open segment (-1: none yet).",
    ),
    (
        "eeaturn_evidence_admission_closed",
        "gauge",
        "1 while new allocations are refused (508) because evidence cannot be written.",
    ),
];

/// The evidence writer's state, for [`render_evidence`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvidenceMetrics {
    /// Records appended.
    pub records_written: u64,
    /// Events queued to the writer.
    pub queue_depth: u64,
    /// The last fsync's duration.
    pub fsync_last: Duration,
    /// The longest fsync's duration.
    pub fsync_max: Duration,
    /// Failed writes.
    pub write_errors: u64,
    /// When the last checkpoint was signed.
    pub last_checkpoint: Option<SystemTime>,
    /// Admission is closed.
    pub admission_closed: bool,
    /// Bytes held in memory.
    pub pending_bytes: u64,
}

/// Appends the TCP/TLS connection refusals (`rule`, count) to `out`.
pub fn render_connections_refused(out: &mut String, refused: &[(&str, u64)]) {
    let name = "eeaturn_connections_refused_total";
    if let Some((_, ty, help)) = METRICS.iter().find(|(n, _, _)| *n == name) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {ty}");
    }
    for (rule, n) in refused {
        let _ = writeln!(out, "{name}{{rule=\"{rule}\"}} {n}");
    }
}

/// Appends the evidence writer's series to `out`.
pub fn render_evidence(out: &mut String, m: &EvidenceMetrics, now: SystemTime) {
    let mut section = |name: &str, samples: &[(&str, String)]| {
        if let Some((_, ty, help)) = METRICS.iter().find(|(n, _, _)| *n == name) {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {ty}");
        }
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    section(
        "eeaturn_evidence_records_written_total",
        &[("", m.records_written.to_string())],
    );
    section(
        "eeaturn_evidence_queue_depth",
        &[("", m.queue_depth.to_string())],
    );
    section(
        "eeaturn_evidence_pending_bytes",
        &[("", m.pending_bytes.to_string())],
    );
    section(
        "eeaturn_evidence_fsync_seconds",
        &[
            ("{stat=\"last\"}", m.fsync_last.as_secs_f64().to_string()),
            ("{stat=\"max\"}", m.fsync_max.as_secs_f64().to_string()),
        ],
    );
    section(
        "eeaturn_evidence_write_errors_total",
        &[("", m.write_errors.to_string())],
    );
    let age = m.last_checkpoint.map_or(-1.0, |t| {
        now.duration_since(t).unwrap_or_default().as_secs_f64()
    });
    section(
        "eeaturn_evidence_checkpoint_age_seconds",
        &[("", age.to_string())],
    );
    section(
        "eeaturn_evidence_admission_closed",
        &[("", u8::from(m.admission_closed).to_string())],
    );
}

/// Counters the shell keeps beside the core's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShellCounters {
    /// Successful policy reloads.
    pub reloads_ok: u64,
    /// Failed policy reloads.
    pub reloads_failed: u64,
}

/// Renders the exposition text.
pub fn render(
    stats: &Stats,
    allocations: usize,
    policy: &Policy,
    max_age: Duration,
    shell: ShellCounters,
    now: SystemTime,
) -> String {
    let mut out = String::with_capacity(4096);
    let mut section = |name: &str, samples: &[(String, String)]| {
        if let Some((_, ty, help)) = METRICS.iter().find(|(n, _, _)| *n == name) {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {ty}");
        }
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    section(
        "eeaturn_build_info",
        &[(
            format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")),
            "1".into(),
        )],
    );
    section(
        "eeaturn_allocations",
        &[(String::new(), allocations.to_string())],
    );
    section(
        "eeaturn_allocations_created_total",
        &[(String::new(), stats.allocations_created.to_string())],
    );
    section(
        "eeaturn_allocations_ended_total",
        &stats
            .allocations_ended
            .iter()
            .map(|(r, n)| (format!("{{reason=\"{r}\"}}"), n.to_string()))
            .collect::<Vec<_>>(),
    );
    let mut requests: Vec<(String, String)> = stats
        .requests_ok
        .iter()
        .map(|(m, n)| (format!("{{method=\"{m}\",result=\"ok\"}}"), n.to_string()))
        .collect();
    requests.extend(
        stats
            .requests_failed
            .iter()
            .map(|((m, c), n)| (format!("{{method=\"{m}\",result=\"{c}\"}}"), n.to_string())),
    );
    section("eeaturn_requests_total", &requests);
    section(
        "eeaturn_policy_denials_total",
        &stats
            .denials
            .iter()
            .map(|((s, r), n)| (format!("{{subject=\"{s}\",rule=\"{r}\"}}"), n.to_string()))
            .collect::<Vec<_>>(),
    );
    section(
        "eeaturn_auth_failures_total",
        &stats
            .auth_failures
            .iter()
            .map(|(r, n)| (format!("{{reason=\"{r}\"}}"), n.to_string()))
            .collect::<Vec<_>>(),
    );
    section(
        "eeaturn_relayed_packets_total",
        &[
            (
                "{direction=\"to_peer\"}".into(),
                stats.packets_to_peer.to_string(),
            ),
            (
                "{direction=\"to_client\"}".into(),
                stats.packets_to_client.to_string(),
            ),
        ],
    );
    section(
        "eeaturn_relayed_bytes_total",
        &[
            (
                "{direction=\"to_peer\"}".into(),
                stats.bytes_to_peer.to_string(),
            ),
            (
                "{direction=\"to_client\"}".into(),
                stats.bytes_to_client.to_string(),
            ),
        ],
    );
    section(
        "eeaturn_dropped_total",
        &stats
            .dropped
            .iter()
            .map(|(r, n)| (format!("{{reason=\"{r}\"}}"), n.to_string()))
            .collect::<Vec<_>>(),
    );
    let dbs: Vec<(&str, u64)> = [
        ("country", policy.geo().country.as_ref()),
        ("asn", policy.geo().asn.as_ref()),
    ]
    .into_iter()
    .filter_map(|(name, db)| db.map(|d| (name, d.info().build_epoch)))
    .collect();
    let now_s = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    section(
        "eeaturn_geo_db_build_timestamp_seconds",
        &dbs.iter()
            .map(|(n, e)| (format!("{{db=\"{n}\"}}"), e.to_string()))
            .collect::<Vec<_>>(),
    );
    section(
        "eeaturn_geo_db_age_seconds",
        &dbs.iter()
            .map(|(n, e)| {
                (
                    format!("{{db=\"{n}\"}}"),
                    now_s.saturating_sub(*e).to_string(),
                )
            })
            .collect::<Vec<_>>(),
    );
    section(
        "eeaturn_geo_db_stale",
        &dbs.iter()
            .map(|(n, e)| {
                let stale = now_s.saturating_sub(*e) > max_age.as_secs();
                (format!("{{db=\"{n}\"}}"), u8::from(stale).to_string())
            })
            .collect::<Vec<_>>(),
    );
    section(
        "eeaturn_policy_reloads_total",
        &[
            ("{result=\"ok\"}".into(), shell.reloads_ok.to_string()),
            (
                "{result=\"failed\"}".into(),
                shell.reloads_failed.to_string(),
            ),
        ],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_has_help_and_type_and_names_are_prefixed() {
        let mut stats = Stats::default();
        stats.requests_ok.insert("allocate", 3);
        stats.requests_failed.insert(("allocate", 401), 2);
        stats.denials.insert(("peer", "outside-region"), 1);
        stats.dropped.insert("no-permission", 4);
        stats.allocations_ended.insert("expired", 1);
        let policy = Policy::dangerous_without_geo(Vec::new(), Vec::new(), Vec::new());
        let text = render(
            &stats,
            2,
            &policy,
            Duration::from_secs(3600),
            ShellCounters::default(),
            UNIX_EPOCH,
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(name.starts_with("eeaturn_"), "{line}");
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP for {name}"
            );
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "no TYPE for {name}"
            );
        }
        assert!(text.contains("eeaturn_requests_total{method=\"allocate\",result=\"401\"} 2"));
        assert!(
            text.contains(
                "eeaturn_policy_denials_total{subject=\"peer\",rule=\"outside-region\"} 1"
            )
        );
        assert!(text.contains("eeaturn_allocations 2"));
    }

    #[test]
    fn a_database_older_than_max_age_is_stale() {
        use std::sync::Arc;

        use crate::policy::{GeoDb, GeoSet, Rules};
        let built = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let w = mmdb_writer::Writer::builder("GeoIP2-Country")
            .build_epoch(built)
            .build();
        let db = GeoDb::from_bytes(w.to_bytes().unwrap()).unwrap();
        let policy = Policy::new(
            Rules::default(),
            Arc::new(GeoSet {
                country: Some(db),
                asn: None,
            }),
        );
        let day = Duration::from_secs(86_400);
        let render_at = |age_days: u32| {
            render(
                &Stats::default(),
                0,
                &policy,
                day * 45,
                ShellCounters::default(),
                built + day * age_days,
            )
        };
        assert!(render_at(10).contains("eeaturn_geo_db_stale{db=\"country\"} 0"));
        let old = render_at(46);
        assert!(
            old.contains("eeaturn_geo_db_stale{db=\"country\"} 1"),
            "{old}"
        );
        assert!(old.contains(&format!(
            "eeaturn_geo_db_age_seconds{{db=\"country\"}} {}",
            46 * 86_400
        )));
        assert!(old.contains("eeaturn_geo_db_build_timestamp_seconds{db=\"country\"} 1700000000"));
    }
}
