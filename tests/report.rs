//! `eeaturn report` through the binary: formats, exit codes, languages, tampering.
//! The report's content is golden-tested in `evidence/tests/report.rs`; the browser test is
//! `tests/report/chromium.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use eeaturn_evidence::digest::Digest;
use eeaturn_evidence::log::{Log, Options};
use eeaturn_evidence::record::*;
use eeaturn_evidence::sign::Signer;

/// 2026-12-06T03:14:15.123Z.
const T0_MS: u64 = 1_796_526_855_123;

fn at(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(T0_MS + ms)
}

fn signer() -> Signer {
    let key =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("evidence/tests/keys/test-signing-key.pem");
    Signer::from_pkcs8_file(&key).unwrap()
}

/// One node: a DE client with an FR peer, a US client refused. Returns (dir, public key).
fn evidence(parent: &Path) -> (PathBuf, PathBuf) {
    let dir = parent.join("fra-1");
    let opts = Options::new("fra-1", "Frankfurt", "0.1.0", Digest::ZERO);
    let mut log = Log::open(&dir, opts, signer(), at(0)).unwrap().0;
    let created = Body::AllocationCreated(AllocationCreated {
        allocation: "a1".into(),
        client: "p1:00".into(),
        user: None,
        country: Some("DE".into()),
        asn: Some(3320),
        rule: "eea".into(),
        fact_source: FactSource::Database,
        transport: Transport::Udp,
        relayed: vec![],
        lifetime_s: 600,
    });
    log.append(created, at(1)).unwrap();
    let permission = Body::Permission(Permission {
        allocation: "a1".into(),
        decision: PeerDecision::Allowed,
        peer: "p1:01".into(),
        country: Some("FR".into()),
        asn: None,
        rule: "eea".into(),
        fact_source: FactSource::Database,
        via: PermissionVia::CreatePermission,
    });
    log.append(permission, at(2)).unwrap();
    let traffic = Traffic {
        packets_to_peer: 10,
        bytes_to_peer: 1_234_567,
        packets_to_client: 0,
        bytes_to_client: 0,
    };
    let ended = Body::AllocationEnded(AllocationEnded {
        allocation: "a1".into(),
        reason: "released".into(),
        duration_ms: 1000,
        peers: vec![PeerTraffic {
            peer: "p1:01".into(),
            packets_to_peer: 10,
            bytes_to_peer: 1_234_567,
            packets_to_client: 0,
            bytes_to_client: 0,
        }],
        totals: traffic,
    });
    log.append(ended, at(3)).unwrap();
    let refused = Body::AllocationRefused(AllocationRefused {
        stage: RefusalStage::Allocate,
        allocation: None,
        client: "p1:02".into(),
        user: None,
        country: Some("US".into()),
        asn: Some(64_501),
        rule: "outside-region".into(),
        fact_source: FactSource::Database,
        transport: Transport::Udp,
    });
    log.append(refused, at(4)).unwrap();
    log.close(at(5), "shutdown").unwrap();
    let key = parent.join("fra-1.pub");
    std::fs::write(&key, signer().public_key().to_text()).unwrap();
    (dir, key)
}

fn report(args: &[&str], key: &Path, dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eeaturn"))
        .args(["report", "--from", "2026-12-06", "--to", "2026-12-06"])
        .args(args)
        .arg("--trust")
        .arg(key)
        .arg(dir)
        .env("SOURCE_DATE_EPOCH", "1796601600")
        .output()
        .unwrap()
}

#[test]
fn html_json_and_csv_of_intact_evidence_exit_0() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, key) = evidence(tmp.path());
    let html = report(&[], &key, &dir);
    assert_eq!(
        html.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&html.stderr)
    );
    let html = String::from_utf8(html.stdout).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("100\u{202f}% of relayed traffic stayed inside the region"));
    assert!(html.contains("1,234,567 B"));
    assert!(html.contains("eeaturn evidence verify --trust"));

    let json = report(&["--format", "json"], &key, &dir);
    assert_eq!(json.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["summary"]["bytes"], 1_234_567);
    assert_eq!(v["summary"]["client_refusals"], 1);
    assert_eq!(v["generated_at"], "2026-12-07T00:00:00.000Z");

    let out = tmp.path().join("csv");
    let csv = report(
        &["--format", "csv", "--out", out.to_str().unwrap()],
        &key,
        &dir,
    );
    assert_eq!(csv.status.code(), Some(0));
    let refused = std::fs::read_to_string(out.join("refused.csv")).unwrap();
    assert!(refused.starts_with("node,time,subject,stage,"));
    assert!(refused.contains("p1:02"));
    let one = report(&["--format", "csv", "--table", "days"], &key, &dir);
    assert_eq!(
        String::from_utf8(one.stdout).unwrap(),
        "day,allocations,client_refusals,peer_refusals,bytes\r\n2026-12-06,1,1,0,1234567\r\n"
    );
}

#[test]
fn german_headings_with_lang_de() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, key) = evidence(tmp.path());
    let out = report(&["--lang", "de"], &key, &dir);
    let html = String::from_utf8(out.stdout).unwrap();
    for h in [
        "Bericht zur Datenresidenz",
        "Zusammenfassung",
        "So prüfen Sie selbst",
        "1.234.567 B",
    ] {
        assert!(html.contains(h), "{h}");
    }
}

#[test]
fn tampered_evidence_fails_at_the_top_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, key) = evidence(tmp.path());
    let seg = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .unwrap();
    let text = std::fs::read_to_string(&seg).unwrap();
    std::fs::write(&seg, text.replace("\"US\"", "\"DE\"")).unwrap();
    let out = report(&[], &key, &dir);
    assert_eq!(out.status.code(), Some(1));
    let html = String::from_utf8(out.stdout).unwrap();
    let fail = html.find("The evidence does NOT verify").unwrap();
    assert!(fail < html.find("id=\"verdict\"").unwrap());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does NOT verify"));
}

#[test]
fn usage_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, key) = evidence(tmp.path());
    let out = report(&["--format", "csv"], &key, &dir);
    assert_eq!(out.status.code(), Some(2));
    let out = report(&["--format", "csv", "--table", "nope"], &key, &dir);
    assert_eq!(out.status.code(), Some(2));
    let help = Command::new(env!("CARGO_BIN_EXE_eeaturn"))
        .args(["report", "--help"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8(help.stdout)
            .unwrap()
            .contains("Exit codes:")
    );
}
