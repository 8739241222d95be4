//! Crash recovery, retention and the golden session.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use common::*;
use eeaturn_evidence::log::Log;
use eeaturn_evidence::record::{Body, Record};
use eeaturn_evidence::verify::Finding;

#[test]
fn torn_tail_is_recovered_and_named_only_as_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fra-1");
    let mut log = open(&dir, at(0));
    for n in 0..3 {
        allocation(&mut log, n, at(1000 + n));
    }
    log.checkpoint(at(5000)).unwrap();
    allocation(&mut log, 3, at(6000));
    log.flush(true).unwrap();
    let live = dir.join(log.current_segment().unwrap());
    drop(log); // SIGKILL: no manifest, no node-stopped
    let intact = fs::metadata(&live).unwrap().len();
    let mut f = fs::OpenOptions::new().append(true).open(&live).unwrap();
    let torn_bytes = b"{\"v\":1,\"seq\":30,\"prev\":\"00";
    f.write_all(torn_bytes).unwrap();
    drop(f);

    let (mut log, recovery) =
        Log::open_with_keys(&dir, options(), signer(), Box::new(FixedKeys(0)), at(9000)).unwrap();
    let resumed = recovery.resumed.unwrap();
    let torn = resumed.torn_tail.clone().unwrap();
    assert_eq!(torn.offset, intact);
    assert_eq!(torn.bytes, torn_bytes.len() as u64);
    assert_eq!(resumed.last_seq, 1 + 4 * 7);
    log.flush(true).unwrap();
    let first = fs::read_to_string(dir.join(log.current_segment().unwrap())).unwrap();
    let record = Record::parse(first.lines().next().unwrap().as_bytes()).unwrap();
    assert_eq!(record.seq, 30);
    assert_eq!(record.body, Body::ChainResumed(resumed));
    log.close(at(10_000), "shutdown").unwrap();

    let report = check(&dir);
    assert!(report.is_ok(), "{}", report.to_json());
    assert_eq!(
        findings(&report),
        vec![Finding::TornTail {
            file: torn.file,
            offset: intact
        }]
    );
}

#[test]
fn a_crash_without_a_torn_tail_verifies_clean_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fra-1");
    let mut log = open(&dir, at(0));
    allocation(&mut log, 0, at(1));
    log.flush(true).unwrap();
    drop(log);
    let mut log = open(&dir, at(2));
    log.close(at(3), "shutdown").unwrap();
    let report = check(&dir);
    assert_eq!(findings(&report), vec![], "{}", report.to_json());
}

#[test]
fn the_live_segment_is_checked_against_its_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fra-1");
    let mut log = open(&dir, at(0));
    allocation(&mut log, 0, at(1));
    log.checkpoint(at(2)).unwrap();
    allocation(&mut log, 1, at(3));
    log.flush(true).unwrap();
    let live = dir.join(log.current_segment().unwrap());
    let report = check(&dir);
    assert!(report.is_ok(), "{}", report.to_json());
    assert_eq!(
        findings(&report),
        vec![Finding::LiveRecordsUnsigned {
            file: log.current_segment().unwrap(),
            from_seq: 9,
            to_seq: 15
        }]
    );
    // Cutting the live segment below its checkpoint is detected.
    let bytes = fs::read(&live).unwrap();
    fs::write(&live, &bytes[..200]).unwrap();
    let report = check(&dir);
    assert!(!report.is_ok());
    assert!(
        findings(&report)
            .iter()
            .any(|f| matches!(f, Finding::SegmentTruncated { .. })),
        "{}",
        report.to_json()
    );
}

#[test]
fn retention_deletes_old_segments_and_day_keys_and_verify_still_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fra-1");
    let hour = 3_600_000;
    let mut log = open(&dir, at(0));
    // Five days, one allocation every six hours.
    for step in 0..20u64 {
        let now = at(step * 6 * hour);
        log.roll_if_due(now).unwrap();
        allocation(&mut log, step, now);
        log.flush(true).unwrap();
        log.checkpoint(now).unwrap();
    }
    let now = at(20 * 6 * hour);
    log.roll_if_due(now).unwrap();
    let keys = |d: &Path| {
        let mut k: Vec<String> = fs::read_dir(d.join("keys"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        k.sort();
        k
    };
    assert_eq!(keys(&dir).len(), 5);
    let before = segment_files(&dir).len();

    let outcome = log.prune(Duration::from_secs(2 * 86_400), now).unwrap();
    assert!(!outcome.segments.is_empty());
    assert_eq!(outcome.key_days, ["2026-12-06", "2026-12-07", "2026-12-08"]);
    assert_eq!(keys(&dir), ["2026-12-09.key", "2026-12-10.key"]);
    assert_eq!(
        segment_files(&dir).len(),
        before - outcome.segments.len() + 1
    );
    for gone in &outcome.segments {
        assert!(!dir.join("segments").join(gone).exists());
    }
    // Pruning again at the same time has nothing to do and writes nothing.
    let again = log.prune(Duration::from_secs(2 * 86_400), now).unwrap();
    assert_eq!(again, Default::default(), "{again:?}");
    log.close(now, "shutdown").unwrap();

    let report = check(&dir);
    assert!(report.is_ok(), "{}", report.to_json());
    let up_to = outcome.up_to_seq.unwrap();
    assert_eq!(
        findings(&report),
        vec![Finding::PrunedByRetention { up_to_seq: up_to }]
    );
    assert_eq!(report.nodes[0].pruned_up_to, Some(up_to));
    assert_eq!(report.nodes[0].first_seq, Some(up_to + 1));

    // Deleting the oldest kept segment as well is not retention.
    let copy = tmp.path().join("attacked");
    copy_dir(&dir, &copy);
    let oldest = segment_files(&copy)[0].clone();
    fs::remove_file(copy.join(&oldest)).unwrap();
    fs::remove_file(copy.join(manifest_of(&oldest))).unwrap();
    let _ = fs::remove_file(copy.join(oldest.replace(".jsonl", ".checkpoint.json")));
    let report = check(&copy);
    assert!(!report.is_ok());
    assert!(
        matches!(findings(&report)[..], [Finding::SegmentMissing { .. }]),
        "{}",
        report.to_json()
    );
}

#[test]
fn several_nodes_verify_independently() {
    let tmp = tempfile::tempdir().unwrap();
    let a = scripted(tmp.path());
    let b = tmp.path().join("ber-1");
    let mut log = open(&b, at(0));
    allocation(&mut log, 0, at(1));
    log.close(at(2), "shutdown").unwrap();
    let report = eeaturn_evidence::verify::verify(&[a, b], &trust(), &mut |_| {});
    assert!(report.is_ok());
    assert_eq!(report.nodes.len(), 2);
    assert_eq!(report.nodes[1].last_seq, Some(9));
    assert!(report.records > 100);
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["ok"], true);
}

/// `EEATURN_BLESS=1 cargo test -p eeaturn-evidence --test lifecycle golden` rewrites them.
#[test]
fn golden_session_is_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = scripted(tmp.path());
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/fra-1/segments");
    let bless = std::env::var_os("EEATURN_BLESS").is_some();
    let mut produced: Vec<String> = fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    produced.sort();
    if bless {
        let _ = fs::remove_dir_all(&golden);
        fs::create_dir_all(&golden).unwrap();
        for name in &produced {
            fs::copy(dir.join("segments").join(name), golden.join(name)).unwrap();
        }
    }
    let mut expected: Vec<String> = fs::read_dir(&golden)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    expected.sort();
    assert_eq!(
        produced, expected,
        "set EEATURN_BLESS=1 to rewrite the golden files"
    );
    for name in &produced {
        let a = fs::read(dir.join("segments").join(name)).unwrap();
        let b = fs::read(golden.join(name)).unwrap();
        assert!(
            a == b,
            "{name} differs; set EEATURN_BLESS=1 to rewrite the golden files"
        );
    }
    // And the committed golden directory verifies.
    let report = check(golden.parent().unwrap());
    assert_eq!(findings(&report), vec![], "{}", report.to_json());
}
