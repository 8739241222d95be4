//! Reports over a scripted evidence set of two nodes: golden JSON and CSV, tampering, the
//! German strings, the limits of the growing lists, traffic outside the region.
//!
//! `EEATURN_BLESS=1 cargo test -p eeaturn-evidence --test report` rewrites the golden files
//! in `tests/golden/report/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::*;
use eeaturn_evidence::digest::Digest;
use eeaturn_evidence::log::{Log, Options};
use eeaturn_evidence::record::*;
use eeaturn_evidence::report::text::Lang;
use eeaturn_evidence::report::{self, Report, ReportOptions};
use eeaturn_evidence::time::Timestamp;

const DAY_MS: u64 = 86_400_000;

#[test]
fn golden_json_and_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = scripted_fleet(tmp.path());
    let r = make(&dirs, 1000);
    assert!(r.summary.verified, "{:?}", r.findings);
    assert!(r.summary.all_inside);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/report");
    let mut files = vec![(
        "report.json".to_owned(),
        serde_json::to_string_pretty(&r).unwrap() + "\n",
    )];
    for table in report::csv::TABLES {
        let mut buf = Vec::new();
        report::csv::write_table(&r, table, &mut buf).unwrap();
        files.push((format!("csv/{table}.csv"), String::from_utf8(buf).unwrap()));
    }
    let bless = std::env::var_os("EEATURN_BLESS").is_some();
    for (name, text) in files {
        let path = golden.join(&name);
        if bless {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, &text).unwrap();
            continue;
        }
        let want = fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{name} missing; set EEATURN_BLESS=1 to write it"));
        assert!(
            want == text,
            "{name} differs; set EEATURN_BLESS=1 to rewrite the golden files\n{text}"
        );
    }
}

#[test]
fn summary_counts_what_the_script_did() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = scripted_fleet(tmp.path());
    let r = make(&dirs, 1000);
    let s = &r.summary;
    assert_eq!(s.nodes, 2);
    assert_eq!(s.sites, ["Frankfurt", "Oslo"]);
    // fra-1: 2 days × 3 calls; osl-1: 2 days × 2 calls, but retention deleted its day 0.
    assert_eq!(s.allocations, 8);
    assert_eq!(s.allocations_inside, 8);
    // A US client with each call, a GB client per node and day; a US peer in each call.
    assert_eq!(s.client_refusals, 11);
    assert_eq!(s.peer_refusals, 8);
    assert_eq!(s.bytes, s.bytes_inside);
    assert_eq!(s.bytes, 8 * (100_000 + 90_000 + 2_000 + 1_800));
    assert_eq!(s.retention_days, Some(1));
    assert_eq!(s.within_retention, Some(true));
    assert!(r.nodes[1].pruned_up_to_seq.is_some());
    assert_eq!(s.key_fingerprints, [signer().fingerprint()]);
    assert_eq!(r.days.len(), 2);
    assert_eq!(r.nodes[1].node, "osl-1");
    assert_eq!(r.refused.total, 19);
    let gb = r
        .refusals_by_country
        .iter()
        .find(|c| c.country == "GB")
        .unwrap();
    assert_eq!((gb.clients, gb.peers), (3, 0));
    // A reload with the same rules, then a change; plus each node's start.
    let changes: Vec<_> = r.policies.items.iter().map(|p| p.change).collect();
    assert_eq!(changes, ["start", "reload", "change"]);
    // fra-1's three; osl-1's policy record went with its first segment.
    assert_eq!(r.databases.len(), 3);
    // No address anywhere: only pseudonyms.
    let json = serde_json::to_string(&r).unwrap();
    for addr in ["198.51.100", "192.0.2.", "203.0.113", "2001:db8"] {
        assert!(!json.contains(addr), "{addr} in the report");
    }
}

#[test]
fn the_period_limits_what_is_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = scripted_fleet(tmp.path());
    let mut opts = options(&dirs, 1000);
    opts.from = Timestamp::from_unix_millis(day0() + DAY_MS);
    let r = report::build(&dirs, &trust(), &opts, &mut |_| {}).unwrap();
    assert_eq!(r.summary.allocations, 5);
    assert_eq!(r.days.len(), 1);
    assert!(r.summary.verified);
}

#[test]
fn tampered_evidence_is_reported_first_and_in_red() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = scripted_fleet(tmp.path());
    let seg = segment_files(&dirs[0]).remove(0);
    let path = dirs[0].join(&seg);
    let text = fs::read_to_string(&path).unwrap();
    fs::write(
        &path,
        text.replacen("\"country\":\"US\"", "\"country\":\"DE\"", 1),
    )
    .unwrap();
    let r = make(&dirs, 1000);
    assert!(!r.summary.verified);
    assert!(r.summary.failures > 0);
    assert!(!r.nodes[0].verified && r.nodes[1].verified);
    assert!(r.findings.iter().any(|f| f.finding == "record-edited"));
    let html = report::html::render(&r, Lang::En);
    let banner = html.find("id=\"verification-failed\"").unwrap();
    assert!(banner < html.find("id=\"verdict\"").unwrap());
    assert!(html.contains("The evidence does NOT verify"));
    assert!(html.contains("class=\"banner fail\" id=\"verification-failed\""));
}

#[test]
fn german_report_has_german_headings_and_number_forms() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = scripted_fleet(tmp.path());
    let r = make(&dirs, 1000);
    let html = report::html::render(&r, Lang::De);
    for heading in [
        "Bericht zur Datenresidenz",
        "Zusammenfassung",
        "So lesen Sie diesen Bericht",
        "So prüfen Sie selbst",
        "Abweisungen nach Regel",
        "Verwendete GeoIP- und ASN-Datenbanken",
        "100\u{202f}% des weitergeleiteten Datenverkehrs blieben in der Region",
    ] {
        assert!(html.contains(heading), "{heading}");
    }
    assert!(html.contains("<html lang=\"de\">"));
    assert!(html.contains("1.550.400 B"), "German thousands separators");
    assert!(!html.contains("How to read"));
}

#[test]
fn html_is_self_contained_and_escapes_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("evil");
    let mut opts = Options::new("n<1>", "<script>alert(1)</script>", "0.1.0", Digest::ZERO);
    opts.roll_interval = Duration::from_secs(3600);
    let mut log = Log::open_with_keys(&dir, opts, signer(), Box::new(FixedKeys(0)), at(0))
        .unwrap()
        .0;
    log.append(policy(), at(0)).unwrap();
    log.append(
        Body::AllocationRefused(AllocationRefused {
            stage: RefusalStage::Allocate,
            allocation: None,
            client: "p1:\"><img src=x>".into(),
            user: None,
            country: Some("U\"S".into()),
            asn: None,
            rule: "<b>rule</b>".into(),
            fact_source: FactSource::Database,
            transport: Transport::Udp,
        }),
        at(1),
    )
    .unwrap();
    log.close(at(2), "shutdown").unwrap();
    let dirs = vec![dir];
    let mut o = options(&dirs, 1000);
    o.from = Timestamp::from_unix_millis(T0_MS - DAY_MS);
    let r = report::build(&dirs, &trust(), &o, &mut |_| {}).unwrap();
    let html = report::html::render(&r, Lang::En);
    assert!(!html.contains("<script"));
    assert!(!html.contains("<img"));
    assert!(!html.contains("<b>rule"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(html.contains("default-src 'none'"));
}

#[test]
fn long_lists_stop_at_the_limit_and_say_how_many_more() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = scripted_fleet(tmp.path());
    let r = make(&dirs, 5);
    assert_eq!(r.refused.items.len(), 5);
    assert_eq!(r.refused.omitted, 14);
    let html = report::html::render(&r, Lang::En);
    assert!(html.contains("\u{2026} 14 more not listed"));
    // The tables do not grow with the limit.
    assert_eq!(
        serde_json::to_string(&r.refusals_by_country).unwrap(),
        serde_json::to_string(&make(&dirs, 1000).refusals_by_country).unwrap()
    );
}

#[test]
fn traffic_with_a_peer_outside_the_region_is_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fra-1");
    let mut log = open(&dir, at(0));
    log.append(policy(), at(0)).unwrap();
    call(&mut log, "a-in", "DE", &[("FR", 1000)], at(10));
    // A peer allowed by an operator override although it is in Switzerland.
    call(&mut log, "a-out", "DE", &[("DE", 500), ("CH", 300)], at(20));
    log.close(at(30), "shutdown").unwrap();
    let dirs = vec![dir];
    let r = make(&dirs, 1000);
    assert!(r.summary.verified);
    assert!(!r.summary.all_inside);
    assert_eq!(
        (r.summary.allocations, r.summary.allocations_inside),
        (2, 1)
    );
    assert_eq!((r.summary.bytes, r.summary.bytes_inside), (1800, 1500));
    assert_eq!(r.outside.total, 1);
    assert_eq!(r.outside.items[0].peer_country.as_deref(), Some("CH"));
    let html = report::html::render(&r, Lang::En);
    assert!(html.contains("Not all relayed traffic stayed inside the region"));
    assert!(html.contains("83.33\u{202f}%"));
}

// --- the scripted fleet ---------------------------------------------------------------------

/// 2026-12-06T00:00:00Z, the first day of the scripted period.
fn day0() -> u64 {
    T0_MS / DAY_MS * DAY_MS
}

fn options(dirs: &[PathBuf], limit: usize) -> ReportOptions {
    ReportOptions {
        from: Timestamp::from_unix_millis(day0()),
        to: Timestamp::from_unix_millis(day0() + 2 * DAY_MS),
        generated_at: Timestamp::from_unix_millis(day0() + 2 * DAY_MS + 3_600_000),
        list_limit: limit,
        dirs_shown: dirs
            .iter()
            .map(|d| format!("evidence/{}", d.file_name().unwrap().to_string_lossy()))
            .collect(),
        trust_shown: vec!["keys/evidence-signing.pub".into()],
        assumed_regions: vec!["EEA".into()],
    }
}

fn make(dirs: &[PathBuf], limit: usize) -> Report {
    report::build(dirs, &trust(), &options(dirs, limit), &mut |_| {}).unwrap()
}

/// Two nodes over two days: DE↔FR and DE↔NO calls relayed, a US peer denied in each call,
/// US and GB clients refused; fra-1 reloads its policy unchanged, then with a new country
/// database.
pub fn scripted_fleet(parent: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for (node, site, calls) in [("fra-1", "Frankfurt", 3u64), ("osl-1", "Oslo", 2)] {
        let dir = parent.join(node);
        let start = at(0);
        let mut opts = Options::new(node, site, "0.1.0", Digest::of(node.as_bytes()));
        opts.roll_interval = Duration::from_secs(3600);
        let mut log = Log::open_with_keys(&dir, opts, signer(), Box::new(FixedKeys(0)), start)
            .unwrap()
            .0;
        log.append(policy(), start).unwrap();
        for day in 0..2u64 {
            for n in 0..calls {
                let now = at(day * DAY_MS + n * 600_000 + 60_000);
                let peer_country = if n % 2 == 0 { "FR" } else { "NO" };
                let id = format!("{node}-d{day}-{n}");
                scripted_call(&mut log, &id, peer_country, now);
                refuse(&mut log, "US", 64_501, &format!("203.0.113.{n}"), now);
                log.flush(false).unwrap();
                log.roll_if_due(now).unwrap();
            }
            let later = at(day * DAY_MS + 4 * 3_600_000);
            refuse(&mut log, "GB", 64_502, "198.51.100.200", later);
            if node == "fra-1" && day == 0 {
                log.append(policy(), later).unwrap();
                let Body::PolicyInForce(mut p) = policy() else {
                    unreachable!()
                };
                p.databases[0].build_epoch += 7 * 86_400;
                p.databases[0].sha256 = Digest::of(b"country-2.mmdb");
                p.rule_set_digest = Digest::of(b"rules-2");
                log.append(Body::PolicyInForce(p), later).unwrap();
            }
            log.flush(false).unwrap();
            log.roll_if_due(later).unwrap();
            log.checkpoint(later).unwrap();
        }
        if node == "osl-1" {
            // One day of retention: the first hour's segment goes, with its policy record.
            log.prune(Duration::from_secs(86_400), at(DAY_MS + 5 * 3_600_000))
                .unwrap();
        }
        log.close(at(DAY_MS + 5 * 3_600_000), "shutdown").unwrap();
        dirs.push(dir);
    }
    dirs
}

fn scripted_call(log: &mut Log, id: &str, peer_country: &str, now: SystemTime) {
    let client: IpAddr = "198.51.100.7".parse().unwrap();
    let peer: IpAddr = "192.0.2.10".parse().unwrap();
    let denied: IpAddr = "203.0.113.99".parse().unwrap();
    let second: IpAddr = "192.0.2.11".parse().unwrap();
    let p = log.pseudonyms();
    let client_p = p.address(client, now).unwrap();
    let peer_p = p.address(peer, now).unwrap();
    let denied_p = p.address(denied, now).unwrap();
    let second_p = p.address(second, now).unwrap();
    let user = p.user("patient-4711", now).unwrap();
    created(log, id, &client_p, Some(user), "DE", now);
    permission(log, id, &peer_p, peer_country, PeerDecision::Allowed, now);
    permission(log, id, &denied_p, "US", PeerDecision::Denied, now);
    let traffic = PeerTraffic {
        peer: peer_p,
        packets_to_peer: 100,
        bytes_to_peer: 100_000,
        packets_to_client: 90,
        bytes_to_client: 90_000,
    };
    let extra = PeerTraffic {
        peer: second_p,
        packets_to_peer: 2,
        bytes_to_peer: 2_000,
        packets_to_client: 2,
        bytes_to_client: 1_800,
    };
    permission(
        log,
        id,
        &extra.peer,
        peer_country,
        PeerDecision::Allowed,
        now,
    );
    ended(log, id, vec![traffic, extra], now);
}

fn call(log: &mut Log, id: &str, client_country: &str, peers: &[(&str, u64)], now: SystemTime) {
    created(log, id, "p1:client", None, client_country, now);
    let mut traffic = Vec::new();
    for (i, (country, bytes)) in peers.iter().enumerate() {
        let peer = format!("p1:peer-{i}");
        permission(log, id, &peer, country, PeerDecision::Allowed, now);
        traffic.push(PeerTraffic {
            peer,
            packets_to_peer: 1,
            bytes_to_peer: *bytes,
            packets_to_client: 0,
            bytes_to_client: 0,
        });
    }
    ended(log, id, traffic, now);
}

fn created(
    log: &mut Log,
    id: &str,
    client: &str,
    user: Option<String>,
    country: &str,
    now: SystemTime,
) {
    log.append(
        Body::AllocationCreated(AllocationCreated {
            allocation: id.into(),
            client: client.into(),
            user,
            country: Some(country.into()),
            asn: Some(3320),
            rule: "eea".into(),
            fact_source: FactSource::Database,
            transport: Transport::Udp,
            relayed: vec!["192.0.2.1:49152".into()],
            lifetime_s: 600,
        }),
        now,
    )
    .unwrap();
}

fn permission(
    log: &mut Log,
    id: &str,
    peer: &str,
    country: &str,
    decision: PeerDecision,
    now: SystemTime,
) {
    let rule = if decision == PeerDecision::Allowed {
        "eea"
    } else {
        "outside-region"
    };
    log.append(
        Body::Permission(Permission {
            allocation: id.into(),
            decision,
            peer: peer.into(),
            country: Some(country.into()),
            asn: Some(64_500),
            rule: rule.into(),
            fact_source: FactSource::Database,
            via: PermissionVia::CreatePermission,
        }),
        now,
    )
    .unwrap();
}

fn ended(log: &mut Log, id: &str, peers: Vec<PeerTraffic>, now: SystemTime) {
    let mut totals = Traffic::default();
    for p in &peers {
        totals.packets_to_peer += p.packets_to_peer;
        totals.bytes_to_peer += p.bytes_to_peer;
        totals.packets_to_client += p.packets_to_client;
        totals.bytes_to_client += p.bytes_to_client;
    }
    log.append(
        Body::AllocationEnded(AllocationEnded {
            allocation: id.into(),
            reason: "released".into(),
            duration_ms: 61_000,
            peers,
            totals,
        }),
        now,
    )
    .unwrap();
}

fn refuse(log: &mut Log, country: &str, asn: u32, addr: &str, now: SystemTime) {
    let ip: IpAddr = addr.parse().unwrap();
    let client = log.pseudonyms().address(ip, now).unwrap();
    log.append(
        Body::AllocationRefused(AllocationRefused {
            stage: RefusalStage::Allocate,
            allocation: None,
            client,
            user: None,
            country: Some(country.into()),
            asn: Some(asn),
            rule: if country == "GB" {
                "client-outside-region"
            } else {
                "outside-region"
            }
            .into(),
            fact_source: FactSource::Database,
            transport: Transport::Udp,
        }),
        now,
    )
    .unwrap();
}

/// Writes the scripted fleet and its public key to `$EEATURN_REPORT_FLEET` for
/// `tests/report/chromium.sh` (the browser test and the screenshots in `docs/images/`).
#[test]
fn write_fleet_for_the_browser_test() {
    let Some(out) = std::env::var_os("EEATURN_REPORT_FLEET") else {
        return;
    };
    let out = PathBuf::from(out);
    fs::create_dir_all(&out).unwrap();
    scripted_fleet(&out);
    fs::write(
        out.join("evidence-signing.pub"),
        signer().public_key().to_text(),
    )
    .unwrap();
}

/// `cargo test -p eeaturn-evidence --release --test report -- --ignored --nocapture one_million`
#[test]
#[ignore = "a measurement, not a check: run in release with --nocapture"]
fn one_million_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fra-1");
    let mut log = open(&dir, at(0));
    log.append(policy(), at(0)).unwrap();
    // 142,858 allocations × 7 records, one every 2 s: about 3.3 days of hourly segments.
    for n in 0..142_858u64 {
        allocation(&mut log, n, at(n * 2000));
        if n % 1000 == 0 {
            log.flush(false).unwrap();
            log.roll_if_due(at(n * 2000)).unwrap();
            log.checkpoint(at(n * 2000)).unwrap();
        }
    }
    log.close(at(142_858 * 2000), "shutdown").unwrap();
    let dirs = vec![dir];
    let mut opts = options(&dirs, 1000);
    opts.from = Timestamp::from_unix_millis(day0());
    opts.to = Timestamp::from_unix_millis(day0() + 5 * DAY_MS);
    #[expect(clippy::disallowed_methods, reason = "measuring wall-clock time")]
    let start = std::time::Instant::now();
    let r = report::build(&dirs, &trust(), &opts, &mut |_| {}).unwrap();
    let html = report::html::render(&r, Lang::En);
    let elapsed = start.elapsed();
    assert!(r.summary.verified);
    let records: u64 = r.nodes.iter().map(|n| n.records).sum();
    assert!(records >= 1_000_000, "{records}");
    let rss = fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or_default()
        .to_owned();
    eprintln!(
        "report: {records} records, verify + fold + HTML ({} bytes) in {:.2} s; peak {rss}",
        html.len(),
        elapsed.as_secs_f64()
    );
}
