//! Prometheus metrics on the standard crates: the `metrics` facade and
//! `metrics-exporter-prometheus`'s recorder, which renders the text exposition.
//!
//! The data path never touches a recorder: each worker keeps its own plain counters (the core's
//! [`Stats`]), and once a second the coordinator sums them and sets *absolute* values here
//! ([`Metrics::update`]), together with what the shell, the API, the evidence writer and the
//! process report. The recorder is local to one relay (never installed globally), so two relays
//! in one process (the tests) keep their own numbers. The listener (`shell::metrics`) serves
//! [`Metrics::handle`]'s rendering through the shell's one HTTP stack; the exporter opens no
//! socket of its own.
//!
//! Labels are bounded: method, result, reason, subject, rule, direction, transport, db, part,
//! outcome, key (the configured API key names) and country (for allocations the region's
//! countries plus `other`; for denials an ISO 3166 code, at most 26 × 26, or `unknown`). Never a username, an address or an allocation id. Every metric is listed in
//! [`METRICS`] and documented in `docs/metrics.md` (a test checks both ways).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::metrics::Label;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::policy::{CountryCode, Policy};
use crate::relay::{AUTH_FAILURE_REASONS, Stats, Transport};

/// The kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (reset at restart).
    Counter,
    /// Any value.
    Gauge,
}

/// Every metric: name, kind, help text.
pub const METRICS: &[(&str, Kind, &str)] = &[
    (
        BUILD_INFO,
        Kind::Gauge,
        "Always 1; the version label names the build.",
    ),
    (ALLOCATIONS, Kind::Gauge, "Allocations in existence now."),
    (ALLOCATIONS_CREATED, Kind::Counter, "Allocations created."),
    (
        ALLOCATIONS_BY_COUNTRY,
        Kind::Counter,
        "Allocations created, by the client's country: the region's countries, or other (outside the region or unknown).",
    ),
    (
        ALLOCATIONS_ENDED,
        Kind::Counter,
        "Allocations ended, by reason.",
    ),
    (
        REQUESTS,
        Kind::Counter,
        "STUN/TURN requests answered, by method and result (ok or the error code).",
    ),
    (
        AUTH_FAILURES,
        Kind::Counter,
        "Requests refused by the long-term credential check, by reason (no-credentials is every client's first round trip).",
    ),
    (
        POLICY_DENIALS,
        Kind::Counter,
        "Addresses refused by the residency policy, by subject and rule.",
    ),
    (
        POLICY_DENIALS_BY_COUNTRY,
        Kind::Counter,
        "Addresses refused by the residency policy, by subject and the address's country (ISO code, or unknown).",
    ),
    (
        RELAYED_PACKETS,
        Kind::Counter,
        "Packets relayed, by direction and the client's transport.",
    ),
    (
        RELAYED_BYTES,
        Kind::Counter,
        "Payload bytes relayed, by direction and the client's transport.",
    ),
    (
        RELAYED_IN_KERNEL_PACKETS,
        Kind::Counter,
        "The part of the relayed packets the kernel fast path (relay.offload) relayed, by direction.",
    ),
    (
        RELAYED_IN_KERNEL_BYTES,
        Kind::Counter,
        "The part of the relayed payload bytes the kernel fast path (relay.offload) relayed, by direction.",
    ),
    (DROPPED, Kind::Counter, "Datagrams dropped, by reason."),
    (
        CONNECTIONS_REFUSED,
        Kind::Counter,
        "TCP/TLS connections closed at accept by a connection limit, or shed for a new one, by rule.",
    ),
    (
        ANSWERS_RATE_LIMITED,
        Kind::Counter,
        "Answers to unauthenticated UDP requests not sent: their source prefix had used its limits.unauthenticated_* budget.",
    ),
    (
        GEO_DB_BUILD,
        Kind::Gauge,
        "Build time of each GeoIP database in force (Unix seconds).",
    ),
    (
        GEO_DB_AGE,
        Kind::Gauge,
        "Age of each GeoIP database in force, by its build time.",
    ),
    (
        GEO_DB_STALE,
        Kind::Gauge,
        "1 when a GeoIP database is older than geo.max_age: update it.",
    ),
    (
        POLICY_RELOADS,
        Kind::Counter,
        "Policy and database reloads, by result.",
    ),
    (
        RELOADS,
        Kind::Counter,
        "Reloads by part (config, secrets, tls, api, policy) and result (ok, failed).",
    ),
    (
        API_REQUESTS,
        Kind::Counter,
        "Requests to the API's /v1/ endpoints, by key name (none: no valid key), endpoint and result (issued, ok or the error code).",
    ),
    (
        API_ISSUANCE,
        Kind::Counter,
        "Credential requests to the API (/v1/credentials, /v1/ice-servers), by outcome (issued or the error code).",
    ),
    (
        TLS_NOT_AFTER,
        Kind::Gauge,
        "Expiry (notAfter, Unix seconds) of the [tls] certificate in force.",
    ),
    (
        EVIDENCE_RECORDS,
        Kind::Counter,
        "Evidence records appended to the log (held in memory while writing fails).",
    ),
    (
        EVIDENCE_QUEUE,
        Kind::Gauge,
        "Events queued from the workers to the evidence writer.",
    ),
    (
        EVIDENCE_PENDING,
        Kind::Gauge,
        "Bytes of evidence records held in memory, not yet written (bounded by evidence.memory_limit).",
    ),
    (
        EVIDENCE_FSYNC,
        Kind::Gauge,
        "Duration of the last and the longest evidence fsync, by stat (last, max).",
    ),
    (
        EVIDENCE_LAST_FSYNC,
        Kind::Gauge,
        "When the evidence log was last fsynced (Unix seconds; 0: not yet).",
    ),
    (
        EVIDENCE_WRITE_ERRORS,
        Kind::Counter,
        "Failed evidence writes, fsyncs, checkpoints and prunes.",
    ),
    (
        EVIDENCE_CHECKPOINT_AGE,
        Kind::Gauge,
        "Seconds since the last signed checkpoint of the open segment (-1: none yet).",
    ),
    (
        EVIDENCE_ADMISSION_CLOSED,
        Kind::Gauge,
        "1 while new allocations are refused (508) because evidence cannot be written.",
    ),
    (
        PROCESS_CPU,
        Kind::Gauge,
        "User and system CPU time of the relay process, seconds (a gauge only because the recorder's counters are integers; use rate()).",
    ),
    (
        PROCESS_RSS,
        Kind::Gauge,
        "Resident memory of the relay process, bytes.",
    ),
    (
        PROCESS_OPEN_FDS,
        Kind::Gauge,
        "Open file descriptors of the relay process.",
    ),
    (
        PROCESS_MAX_FDS,
        Kind::Gauge,
        "The relay process's limit on open file descriptors (RLIMIT_NOFILE, soft).",
    ),
];

/// The evidence writer's state, read once a second.
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
    /// When the last fsync completed.
    pub last_fsync: Option<SystemTime>,
    /// Failed writes.
    pub write_errors: u64,
    /// When the last checkpoint was signed.
    pub last_checkpoint: Option<SystemTime>,
    /// Admission is closed.
    pub admission_closed: bool,
    /// Bytes held in memory.
    pub pending_bytes: u64,
}

/// What the process uses, read from `/proc` and `getrusage` by the shell.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessMetrics {
    /// User plus system CPU time.
    pub cpu: Duration,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on file descriptors.
    pub max_fds: u64,
}

/// Counters the shell keeps beside the core's: reload results by part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShellCounters {
    /// (part, ok?) → reloads.
    pub reloads: BTreeMap<(&'static str, bool), u64>,
}

impl ShellCounters {
    /// Counts a reload of `part` (one of [`RELOAD_PARTS`]).
    pub fn reloaded(&mut self, part: &'static str, ok: bool) {
        *self.reloads.entry((part, ok)).or_default() += 1;
    }
}

/// The parts a reload counts separately.
pub const RELOAD_PARTS: [&str; 5] = ["config", "secrets", "tls", "api", "policy"];

/// API requests by (key name, endpoint, result).
pub type ApiCounters = BTreeMap<(String, &'static str, &'static str), u64>;

/// Everything [`Metrics::update`] sets, gathered by the coordinator.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// The workers' counters, summed.
    pub stats: &'a Stats,
    /// Allocations now.
    pub allocations: usize,
    /// The policy and databases in force.
    pub policy: &'a Policy,
    /// `geo.max_age`.
    pub max_age: Duration,
    /// The shell's own counters.
    pub shell: &'a ShellCounters,
    /// The API's counters, when `[api]` is on.
    pub api: Option<&'a ApiCounters>,
    /// The evidence writer's state, when `[evidence]` is on.
    pub evidence: Option<EvidenceMetrics>,
    /// The `[tls]` certificate's notAfter, when there is one.
    pub tls_not_after: Option<SystemTime>,
    /// The process, when it could be read.
    pub process: Option<ProcessMetrics>,
    /// TCP/TLS connections refused or shed by a connection limit, by rule.
    pub connections_refused: &'a [(&'static str, u64)],
    /// The wall clock.
    pub now: SystemTime,
}

/// One relay's metrics: a local recorder and the handle that renders it.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Builds the recorder and describes every metric of [`METRICS`].
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        ::metrics::with_local_recorder(&recorder, || {
            for (name, kind, help) in METRICS {
                match kind {
                    Kind::Counter => ::metrics::describe_counter!(*name, *help),
                    Kind::Gauge => ::metrics::describe_gauge!(*name, *help),
                }
            }
        });
        Self { recorder, handle }
    }

    /// A handle that renders the exposition text (cheap to clone).
    pub fn handle(&self) -> PrometheusHandle {
        self.handle.clone()
    }

    /// Renders the exposition text.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Sets every metric from `s`: absolute counters and gauges, no increments.
    pub fn update(&self, s: &Sample<'_>) {
        ::metrics::with_local_recorder(&self.recorder, || set_all(s));
    }
}

/// Sets the series of every metric (inside [`::metrics::with_local_recorder`]).
fn set_all(s: &Sample<'_>) {
    gauge(
        BUILD_INFO,
        vec![lbl("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    gauge(ALLOCATIONS, vec![], s.allocations as f64);
    let st = s.stats;
    counter(ALLOCATIONS_CREATED, vec![], st.allocations_created);
    set_countries(s);
    for (reason, n) in &st.allocations_ended {
        counter(ALLOCATIONS_ENDED, vec![lbl("reason", *reason)], *n);
    }
    for (method, n) in &st.requests_ok {
        counter(
            REQUESTS,
            vec![lbl("method", *method), lbl("result", "ok")],
            *n,
        );
    }
    for ((method, code), n) in &st.requests_failed {
        counter(
            REQUESTS,
            vec![lbl("method", *method), lbl("result", code.to_string())],
            *n,
        );
    }
    for reason in AUTH_FAILURE_REASONS {
        let n = st.auth_failures.get(reason).copied().unwrap_or(0);
        counter(AUTH_FAILURES, vec![lbl("reason", reason)], n);
    }
    for ((subject, rule), n) in &st.denials {
        counter(
            POLICY_DENIALS,
            vec![lbl("subject", *subject), lbl("rule", *rule)],
            *n,
        );
    }
    for ((subject, country), n) in &st.denials_by_country {
        let country = country.map_or_else(|| UNKNOWN_COUNTRY.to_owned(), |c| c.as_str().to_owned());
        counter(
            POLICY_DENIALS_BY_COUNTRY,
            vec![lbl("subject", *subject), lbl("country", country)],
            *n,
        );
    }
    for t in Transport::ALL {
        let r = st.relayed_by_transport[t.index()];
        for (direction, packets, bytes) in [
            ("to_peer", r.packets_to_peer, r.bytes_to_peer),
            ("to_client", r.packets_to_client, r.bytes_to_client),
        ] {
            let labels = || vec![lbl("direction", direction), lbl("transport", t.name())];
            counter(RELAYED_PACKETS, labels(), packets);
            counter(RELAYED_BYTES, labels(), bytes);
        }
    }
    let k = &st.relayed_in_kernel;
    for (direction, packets, bytes) in [
        ("to_peer", k.packets_to_peer, k.bytes_to_peer),
        ("to_client", k.packets_to_client, k.bytes_to_client),
    ] {
        counter(
            RELAYED_IN_KERNEL_PACKETS,
            vec![lbl("direction", direction)],
            packets,
        );
        counter(
            RELAYED_IN_KERNEL_BYTES,
            vec![lbl("direction", direction)],
            bytes,
        );
    }
    for (reason, n) in &st.dropped {
        counter(DROPPED, vec![lbl("reason", *reason)], *n);
    }
    for rule in CONNECTION_REFUSAL_RULES {
        let n = s
            .connections_refused
            .iter()
            .find(|(r, _)| *r == rule)
            .map_or(0, |(_, n)| *n);
        counter(CONNECTIONS_REFUSED, vec![lbl("rule", rule)], n);
    }
    counter(ANSWERS_RATE_LIMITED, Vec::new(), st.answers_rate_limited);
    set_databases(s);
    let reloads = &s.shell.reloads;
    for (result, ok) in [("ok", true), ("failed", false)] {
        let n = reloads.get(&("policy", ok)).copied().unwrap_or(0);
        counter(POLICY_RELOADS, vec![lbl("result", result)], n);
        for part in RELOAD_PARTS {
            let n = reloads.get(&(part, ok)).copied().unwrap_or(0);
            counter(RELOADS, vec![lbl("part", part), lbl("result", result)], n);
        }
    }
    if let Some(api) = s.api {
        set_api(api);
    }
    if let Some(t) = s.tls_not_after {
        gauge(TLS_NOT_AFTER, vec![], unix_secs(t));
    }
    if let Some(e) = &s.evidence {
        set_evidence(e, s.now);
    }
    if let Some(p) = &s.process {
        gauge(PROCESS_CPU, vec![], p.cpu.as_secs_f64());
        gauge(PROCESS_RSS, vec![], p.rss_bytes as f64);
        gauge(PROCESS_OPEN_FDS, vec![], p.open_fds as f64);
        gauge(PROCESS_MAX_FDS, vec![], p.max_fds as f64);
    }
}

/// Allocations by country: one series per region country (also at 0) and `other`.
fn set_countries(s: &Sample<'_>) {
    let region = &s.policy.rules().region_countries;
    let mut by: BTreeMap<CountryCode, u64> = region.iter().map(|c| (*c, 0)).collect();
    let mut other = 0;
    for (country, n) in &s.stats.allocations_by_country {
        match country {
            Some(c) if region.contains(c) => {
                *by.entry(*c).or_default() += n;
            }
            _ => other += n,
        }
    }
    for (country, n) in by {
        let label = lbl("country", country.as_str().to_owned());
        counter(ALLOCATIONS_BY_COUNTRY, vec![label], n);
    }
    counter(
        ALLOCATIONS_BY_COUNTRY,
        vec![lbl("country", OTHER_COUNTRY)],
        other,
    );
}

/// Build time, age and staleness of each database in force.
fn set_databases(s: &Sample<'_>) {
    let geo = s.policy.geo();
    let now_s = s.now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    for (name, db) in [("country", geo.country.as_ref()), ("asn", geo.asn.as_ref())] {
        let Some(db) = db else { continue };
        let built = db.info().build_epoch;
        let age = now_s.saturating_sub(built);
        let db_label = || vec![lbl("db", name)];
        gauge(GEO_DB_BUILD, db_label(), built as f64);
        gauge(GEO_DB_AGE, db_label(), age as f64);
        let stale = age > s.max_age.as_secs();
        gauge(GEO_DB_STALE, db_label(), if stale { 1.0 } else { 0.0 });
    }
}

/// The API's requests, and the credential endpoints' outcomes summed over keys.
fn set_api(api: &ApiCounters) {
    let mut issuance: BTreeMap<&str, u64> = BTreeMap::new();
    for ((key, endpoint, result), n) in api {
        counter(
            API_REQUESTS,
            vec![
                lbl("key", key.clone()),
                lbl("endpoint", *endpoint),
                lbl("result", *result),
            ],
            *n,
        );
        if ISSUING_ENDPOINTS.contains(endpoint) {
            *issuance.entry(result).or_default() += n;
        }
    }
    issuance.entry("issued").or_default();
    for (outcome, n) in issuance {
        counter(API_ISSUANCE, vec![lbl("outcome", outcome)], n);
    }
}

fn set_evidence(e: &EvidenceMetrics, now: SystemTime) {
    counter(EVIDENCE_RECORDS, vec![], e.records_written);
    gauge(EVIDENCE_QUEUE, vec![], e.queue_depth as f64);
    gauge(EVIDENCE_PENDING, vec![], e.pending_bytes as f64);
    gauge(
        EVIDENCE_FSYNC,
        vec![lbl("stat", "last")],
        e.fsync_last.as_secs_f64(),
    );
    gauge(
        EVIDENCE_FSYNC,
        vec![lbl("stat", "max")],
        e.fsync_max.as_secs_f64(),
    );
    gauge(
        EVIDENCE_LAST_FSYNC,
        vec![],
        e.last_fsync.map_or(0.0, unix_secs),
    );
    counter(EVIDENCE_WRITE_ERRORS, vec![], e.write_errors);
    let age = e.last_checkpoint.map_or(-1.0, |t| {
        now.duration_since(t).unwrap_or_default().as_secs_f64()
    });
    gauge(EVIDENCE_CHECKPOINT_AGE, vec![], age);
    gauge(
        EVIDENCE_ADMISSION_CLOSED,
        vec![],
        if e.admission_closed { 1.0 } else { 0.0 },
    );
}

fn counter(name: &'static str, labels: Vec<Label>, value: u64) {
    ::metrics::counter!(name, labels).absolute(value);
}

fn gauge(name: &'static str, labels: Vec<Label>, value: f64) {
    ::metrics::gauge!(name, labels).set(value);
}

fn lbl(key: &'static str, value: impl Into<::metrics::SharedString>) -> Label {
    Label::new(key, value)
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The `country` label of allocations from outside the region or of unknown country.
pub const OTHER_COUNTRY: &str = "other";

/// The `country` label of denials of an address whose country is not known.
pub const UNKNOWN_COUNTRY: &str = "unknown";

/// The API endpoints that issue credentials.
const ISSUING_ENDPOINTS: [&str; 2] = ["credentials", "ice-servers"];

/// `eeaturn_build_info`.
pub const BUILD_INFO: &str = "eeaturn_build_info";
/// `eeaturn_allocations`.
pub const ALLOCATIONS: &str = "eeaturn_allocations";
/// `eeaturn_allocations_created_total`.
pub const ALLOCATIONS_CREATED: &str = "eeaturn_allocations_created_total";
/// `eeaturn_allocations_by_country_total`.
pub const ALLOCATIONS_BY_COUNTRY: &str = "eeaturn_allocations_by_country_total";
/// `eeaturn_allocations_ended_total`.
pub const ALLOCATIONS_ENDED: &str = "eeaturn_allocations_ended_total";
/// `eeaturn_requests_total`.
pub const REQUESTS: &str = "eeaturn_requests_total";
/// `eeaturn_auth_failures_total`.
pub const AUTH_FAILURES: &str = "eeaturn_auth_failures_total";
/// `eeaturn_policy_denials_total`.
pub const POLICY_DENIALS: &str = "eeaturn_policy_denials_total";
/// `eeaturn_policy_denials_by_country_total`.
pub const POLICY_DENIALS_BY_COUNTRY: &str = "eeaturn_policy_denials_by_country_total";
/// `eeaturn_relayed_packets_total`.
pub const RELAYED_PACKETS: &str = "eeaturn_relayed_packets_total";
/// `eeaturn_relayed_bytes_total`.
pub const RELAYED_BYTES: &str = "eeaturn_relayed_bytes_total";
/// `eeaturn_relayed_in_kernel_packets_total`.
pub const RELAYED_IN_KERNEL_PACKETS: &str = "eeaturn_relayed_in_kernel_packets_total";
/// `eeaturn_relayed_in_kernel_bytes_total`.
pub const RELAYED_IN_KERNEL_BYTES: &str = "eeaturn_relayed_in_kernel_bytes_total";
/// `eeaturn_dropped_total`.
pub const DROPPED: &str = "eeaturn_dropped_total";
/// TCP/TLS connections refused or shed by a connection limit, by rule.
pub const CONNECTIONS_REFUSED: &str = "eeaturn_connections_refused_total";
/// The `rule` label of [`CONNECTIONS_REFUSED`]: every value is exported from the start (0 until
/// it happens), so that alerts and rate() see the series before the first refusal.
pub const CONNECTION_REFUSAL_RULES: [&str; 3] =
    ["limit-per-source", "limit-total", "shed-unallocated"];
/// `eeaturn_answers_rate_limited_total`.
pub const ANSWERS_RATE_LIMITED: &str = "eeaturn_answers_rate_limited_total";
/// `eeaturn_geo_db_build_timestamp_seconds`.
pub const GEO_DB_BUILD: &str = "eeaturn_geo_db_build_timestamp_seconds";
/// `eeaturn_geo_db_age_seconds`.
pub const GEO_DB_AGE: &str = "eeaturn_geo_db_age_seconds";
/// `eeaturn_geo_db_stale`.
pub const GEO_DB_STALE: &str = "eeaturn_geo_db_stale";
/// `eeaturn_policy_reloads_total`.
pub const POLICY_RELOADS: &str = "eeaturn_policy_reloads_total";
/// `eeaturn_reloads_total`.
pub const RELOADS: &str = "eeaturn_reloads_total";
/// `eeaturn_api_requests_total`.
pub const API_REQUESTS: &str = "eeaturn_api_requests_total";
/// `eeaturn_api_issuance_total`.
pub const API_ISSUANCE: &str = "eeaturn_api_issuance_total";
/// `eeaturn_tls_certificate_not_after_timestamp_seconds`.
pub const TLS_NOT_AFTER: &str = "eeaturn_tls_certificate_not_after_timestamp_seconds";
/// `eeaturn_evidence_records_written_total`.
pub const EVIDENCE_RECORDS: &str = "eeaturn_evidence_records_written_total";
/// `eeaturn_evidence_queue_depth`.
pub const EVIDENCE_QUEUE: &str = "eeaturn_evidence_queue_depth";
/// `eeaturn_evidence_pending_bytes`.
pub const EVIDENCE_PENDING: &str = "eeaturn_evidence_pending_bytes";
/// `eeaturn_evidence_fsync_seconds`.
pub const EVIDENCE_FSYNC: &str = "eeaturn_evidence_fsync_seconds";
/// `eeaturn_evidence_last_fsync_timestamp_seconds`.
pub const EVIDENCE_LAST_FSYNC: &str = "eeaturn_evidence_last_fsync_timestamp_seconds";
/// `eeaturn_evidence_write_errors_total`.
pub const EVIDENCE_WRITE_ERRORS: &str = "eeaturn_evidence_write_errors_total";
/// `eeaturn_evidence_checkpoint_age_seconds`.
pub const EVIDENCE_CHECKPOINT_AGE: &str = "eeaturn_evidence_checkpoint_age_seconds";
/// `eeaturn_evidence_admission_closed`.
pub const EVIDENCE_ADMISSION_CLOSED: &str = "eeaturn_evidence_admission_closed";
/// `process_cpu_seconds_total` (the name every Prometheus client library uses).
pub const PROCESS_CPU: &str = "process_cpu_seconds_total";
/// `process_resident_memory_bytes`.
pub const PROCESS_RSS: &str = "process_resident_memory_bytes";
/// `process_open_fds`.
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
/// `process_max_fds`.
pub const PROCESS_MAX_FDS: &str = "process_max_fds";

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(
        stats: &'a Stats,
        policy: &'a Policy,
        shell: &'a ShellCounters,
        max_age: Duration,
        now: SystemTime,
    ) -> Sample<'a> {
        Sample {
            stats,
            allocations: 2,
            policy,
            max_age,
            shell,
            api: None,
            evidence: None,
            tls_not_after: None,
            process: None,
            connections_refused: &[],
            now,
        }
    }

    #[test]
    fn every_sample_has_help_and_type_and_a_listed_name() {
        let mut stats = Stats::default();
        stats.requests_ok.insert("allocate", 3);
        stats.requests_failed.insert(("allocate", 401), 2);
        stats.denials.insert(("peer", "outside-region"), 1);
        stats.dropped.insert("no-permission", 4);
        stats.allocations_ended.insert("expired", 1);
        let policy = Policy::dangerous_without_geo(Vec::new(), Vec::new(), Vec::new());
        let shell = ShellCounters::default();
        let m = Metrics::new();
        let mut api = ApiCounters::new();
        api.insert(("signaling".into(), "credentials", "issued"), 4);
        api.insert(("none".into(), "ice-servers", "unauthorized"), 1);
        api.insert(("audit".into(), "evidence/report", "ok"), 1);
        m.update(&Sample {
            api: Some(&api),
            evidence: Some(EvidenceMetrics::default()),
            tls_not_after: Some(UNIX_EPOCH + Duration::from_secs(1_900_000_000)),
            process: Some(ProcessMetrics::default()),
            connections_refused: &[("limit-per-source", 2)],
            ..sample(
                &stats,
                &policy,
                &shell,
                Duration::from_secs(3600),
                UNIX_EPOCH,
            )
        });
        let text = m.render();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                METRICS.iter().any(|(n, _, _)| *n == name),
                "{name} is not in METRICS"
            );
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP for {name}"
            );
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "no TYPE for {name}"
            );
        }
        for needle in [
            "eeaturn_requests_total{method=\"allocate\",result=\"401\"} 2",
            "eeaturn_policy_denials_total{subject=\"peer\",rule=\"outside-region\"} 1",
            "eeaturn_allocations 2",
            "eeaturn_auth_failures_total{reason=\"bad-password\"} 0",
            "eeaturn_relayed_packets_total{direction=\"to_peer\",transport=\"tls\"} 0",
            "eeaturn_reloads_total{part=\"secrets\",result=\"failed\"} 0",
            "eeaturn_api_issuance_total{outcome=\"issued\"} 4",
            "eeaturn_api_issuance_total{outcome=\"unauthorized\"} 1",
            "eeaturn_tls_certificate_not_after_timestamp_seconds 1900000000",
            "eeaturn_evidence_checkpoint_age_seconds -1",
            "eeaturn_allocations_by_country_total{country=\"other\"} 0",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(
            !text.contains("outcome=\"ok\""),
            "evidence calls are no issuance"
        );
    }

    #[test]
    fn every_listed_metric_has_a_unique_prefixed_name() {
        let mut seen = std::collections::BTreeSet::new();
        for (name, kind, help) in METRICS {
            assert!(seen.insert(name), "{name} twice");
            assert!(name.starts_with("eeaturn_") || name.starts_with("process_"));
            assert!(!help.is_empty());
            if *kind == Kind::Counter {
                assert!(name.ends_with("_total"), "{name}");
            }
        }
    }

    #[test]
    fn countries_outside_the_region_are_other() {
        use crate::policy::{GeoSet, Rules};
        use std::sync::Arc;
        let code = |s| CountryCode::parse(s).unwrap();
        let rules = Rules {
            region_countries: [code("DE"), code("FR")].into_iter().collect(),
            ..Rules::default()
        };
        let policy = Policy::new(rules, Arc::new(GeoSet::default()));
        let mut stats = Stats::default();
        stats.allocations_by_country.insert(Some(code("DE")), 3);
        stats.allocations_by_country.insert(Some(code("US")), 2);
        stats.allocations_by_country.insert(None, 1);
        let shell = ShellCounters::default();
        let m = Metrics::new();
        m.update(&sample(&stats, &policy, &shell, Duration::ZERO, UNIX_EPOCH));
        let text = m.render();
        for needle in [
            "eeaturn_allocations_by_country_total{country=\"DE\"} 3",
            "eeaturn_allocations_by_country_total{country=\"FR\"} 0",
            "eeaturn_allocations_by_country_total{country=\"other\"} 3",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("country=\"US\""), "{text}");
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
        let stats = Stats::default();
        let shell = ShellCounters::default();
        let render_at = |age_days: u32| {
            let m = Metrics::new();
            m.update(&sample(
                &stats,
                &policy,
                &shell,
                day * 45,
                built + day * age_days,
            ));
            m.render()
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

    #[test]
    fn two_relays_keep_their_own_numbers() {
        let policy = Policy::dangerous_without_geo(Vec::new(), Vec::new(), Vec::new());
        let shell = ShellCounters::default();
        let (a, b) = (Metrics::new(), Metrics::new());
        let one = Stats {
            allocations_created: 1,
            ..Stats::default()
        };
        let five = Stats {
            allocations_created: 5,
            ..Stats::default()
        };
        a.update(&sample(&one, &policy, &shell, Duration::ZERO, UNIX_EPOCH));
        b.update(&sample(&five, &policy, &shell, Duration::ZERO, UNIX_EPOCH));
        assert!(a.render().contains("eeaturn_allocations_created_total 1\n"));
        assert!(b.render().contains("eeaturn_allocations_created_total 5\n"));
    }
}
