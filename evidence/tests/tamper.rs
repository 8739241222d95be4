//! Each class of tampering is detected and named; the untouched copy verifies clean.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use eeaturn_evidence::statement::Statement;
use eeaturn_evidence::verify::Finding;

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = scripted(tmp.path());
    let report = check(&dir);
    assert!(report.is_ok(), "{}", report.to_json());
    assert_eq!(findings(&report), vec![], "{}", report.to_json());
    Fixture { _tmp: tmp, dir }
}

fn tampered(f: &Fixture, name: &str, change: impl FnOnce(&Path)) -> Vec<Finding> {
    let copy = f.dir.parent().unwrap().join(name);
    copy_dir(&f.dir, &copy);
    change(&copy);
    let report = check(&copy);
    assert!(!report.is_ok(), "{name} went unnoticed");
    // The original stays clean.
    assert!(check(&f.dir).is_ok());
    findings(&report)
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

fn seq_of(line: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"]
        .as_u64()
        .unwrap()
}

#[test]
fn the_scripted_session_spans_several_segments() {
    let f = fixture();
    assert!(
        segment_files(&f.dir).len() >= 3,
        "{:?}",
        segment_files(&f.dir)
    );
}

#[test]
fn changed_byte_is_named_as_an_edited_record() {
    let f = fixture();
    let seg = segment_files(&f.dir)[0].clone();
    let mut seq = 0;
    let found = tampered(&f, "edited", |d| {
        let path = d.join(&seg);
        let mut l = lines(&path);
        seq = seq_of(&l[2]);
        let before = l[2].clone();
        l[2] = l[2].replacen("\"country\":\"DE\"", "\"country\":\"DK\"", 1);
        assert_ne!(before, l[2]);
        write_lines(&path, &l);
    });
    assert_eq!(found, vec![Finding::RecordEdited { file: seg, seq }]);
}

#[test]
fn changed_last_record_of_a_segment_is_named() {
    let f = fixture();
    let seg = segment_files(&f.dir)[1].clone();
    let mut seq = 0;
    let found = tampered(&f, "edited-last", |d| {
        let path = d.join(&seg);
        let mut l = lines(&path);
        let last = l.len() - 1;
        seq = seq_of(&l[last]);
        let before = l[last].clone();
        l[last] = l[last].replacen("\"US\"", "\"DE\"", 1);
        assert_ne!(before, l[last]);
        write_lines(&path, &l);
    });
    assert_eq!(found, vec![Finding::RecordEdited { file: seg, seq }]);
}

#[test]
fn deleted_line_is_named_with_its_seq() {
    let f = fixture();
    let seg = segment_files(&f.dir)[1].clone();
    let mut seq = 0;
    let found = tampered(&f, "deleted", |d| {
        let path = d.join(&seg);
        let mut l = lines(&path);
        seq = seq_of(&l[3]);
        l.remove(3);
        write_lines(&path, &l);
    });
    assert_eq!(
        found,
        vec![Finding::RecordsDeleted {
            file: seg,
            from_seq: seq,
            to_seq: seq
        }]
    );
}

#[test]
fn swapped_lines_are_named_as_reordered() {
    let f = fixture();
    let seg = segment_files(&f.dir)[0].clone();
    let mut seq = 0;
    let found = tampered(&f, "swapped", |d| {
        let path = d.join(&seg);
        let mut l = lines(&path);
        seq = seq_of(&l[4]);
        l.swap(4, 5);
        write_lines(&path, &l);
    });
    assert_eq!(found, vec![Finding::RecordsReordered { file: seg, seq }]);
}

#[test]
fn truncated_segment_is_named_with_the_missing_seqs() {
    let f = fixture();
    let seg = segment_files(&f.dir)[0].clone();
    let original = lines(&f.dir.join(&seg));
    let last_seq = seq_of(original.last().unwrap());
    let found = tampered(&f, "truncated", |d| {
        let path = d.join(&seg);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    });
    let [
        Finding::SegmentTruncated {
            file,
            to_seq,
            from_seq,
            expected_bytes,
            found_bytes,
        },
    ] = found.as_slice()
    else {
        panic!("{found:?}");
    };
    assert_eq!((file, *to_seq), (&seg, last_seq));
    assert!(from_seq <= to_seq && found_bytes < expected_bytes);
}

#[test]
fn deleted_segment_is_named_as_missing() {
    let f = fixture();
    let segs = segment_files(&f.dir);
    let (gone, next) = (segs[1].clone(), segs[2].clone());
    let gone_lines = lines(&f.dir.join(&gone));
    let (from, to) = (seq_of(&gone_lines[0]), seq_of(gone_lines.last().unwrap()));
    let found = tampered(&f, "segment-deleted", |d| {
        fs::remove_file(d.join(&gone)).unwrap();
        fs::remove_file(d.join(manifest_of(&gone))).unwrap();
        let _ = fs::remove_file(d.join(gone.replace(".jsonl", ".checkpoint.json")));
    });
    assert_eq!(
        found,
        vec![Finding::SegmentMissing {
            file: next,
            from_seq: from,
            to_seq: to
        }]
    );
}

#[test]
fn deleted_segment_file_with_manifest_left_is_named_as_missing() {
    let f = fixture();
    let segs = segment_files(&f.dir);
    let gone = segs[1].clone();
    let gone_lines = lines(&f.dir.join(&gone));
    let (from, to) = (seq_of(&gone_lines[0]), seq_of(gone_lines.last().unwrap()));
    let found = tampered(&f, "segment-file-deleted", |d| {
        fs::remove_file(d.join(&gone)).unwrap()
    });
    assert_eq!(
        found,
        vec![Finding::SegmentMissing {
            file: gone,
            from_seq: from,
            to_seq: to
        }]
    );
}

#[test]
fn deleted_manifest_is_named() {
    let f = fixture();
    let seg = segment_files(&f.dir)[1].clone();
    let found = tampered(&f, "manifest-deleted", |d| {
        fs::remove_file(d.join(manifest_of(&seg))).unwrap();
    });
    assert_eq!(found, vec![Finding::ManifestMissing { file: seg }]);
}

#[test]
fn manifest_signed_by_another_key_is_named_untrusted() {
    let f = fixture();
    let seg = segment_files(&f.dir)[0].clone();
    let (pkcs8, other) = eeaturn_evidence::sign::keygen().unwrap();
    let other_signer = eeaturn_evidence::sign::Signer::from_pkcs8(&pkcs8).unwrap();
    let found = tampered(&f, "re-signed", |d| {
        let path = d.join(manifest_of(&seg));
        let (mut m, _) = Statement::read(&path).unwrap();
        m.sign(&other_signer);
        fs::write(&path, m.to_file_bytes()).unwrap();
    });
    assert_eq!(
        found,
        vec![Finding::UntrustedKey {
            file: manifest_of(&seg),
            key: other.fingerprint()
        }]
    );
}

#[test]
fn manifest_edited_without_the_key_is_a_bad_signature() {
    let f = fixture();
    let seg = segment_files(&f.dir)[0].clone();
    let found = tampered(&f, "manifest-edited", |d| {
        let path = d.join(manifest_of(&seg));
        let (mut m, _) = Statement::read(&path).unwrap();
        m.count += 1;
        fs::write(&path, m.to_file_bytes()).unwrap();
    });
    assert_eq!(
        found,
        vec![Finding::BadSignature {
            file: manifest_of(&seg)
        }]
    );
}
