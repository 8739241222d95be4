//! Every record kind validates against `docs/evidence/record.schema.json`, checked by
//! Python's `jsonschema` (code we did not write) through `tests/evidence/check-schema.py`.
//!
//! Set `EEATURN_EVIDENCE_SAMPLES=DIR` to keep the sample directory for running the script
//! by hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use eeaturn_evidence::log::{Log, Options};
use eeaturn_evidence::pseudonym::AddressMode;

fn write_samples(root: &Path) -> PathBuf {
    // Every kind but chain-resumed and pruned.
    scripted(root);
    // chain-resumed with a torn tail, then pruned (segments and day keys).
    let dir = root.join("restarted");
    let mut log = open(&dir, at(0));
    allocation(&mut log, 1, at(1));
    log.flush(true).unwrap();
    let live = dir.join(log.current_segment().unwrap());
    drop(log);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&live)
        .unwrap();
    f.write_all(b"{\"v\":1,").unwrap();
    drop(f);
    let mut log = open(&dir, at(86_400_000 * 3));
    allocation(&mut log, 2, at(86_400_000 * 3));
    log.flush(true).unwrap();
    log.prune(Duration::from_secs(86_400), at(86_400_000 * 3 + 1))
        .unwrap();
    log.close(at(86_400_000 * 3 + 2), "shutdown").unwrap();
    // The other address modes.
    for (name, mode) in [("prefix", AddressMode::Prefix), ("full", AddressMode::Full)] {
        let opts = Options {
            addresses: mode,
            ..options()
        };
        let (mut log, _) = Log::open_with_keys(
            &root.join(name),
            opts,
            signer(),
            Box::new(FixedKeys(0)),
            at(0),
        )
        .unwrap();
        allocation(&mut log, 3, at(1));
        log.close(at(2), "shutdown").unwrap();
    }
    root.to_path_buf()
}

#[test]
fn every_kind_validates_against_the_published_schema() {
    let keep = std::env::var_os("EEATURN_EVIDENCE_SAMPLES").map(PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let root = keep.unwrap_or_else(|| tmp.path().join("samples"));
    let _ = std::fs::remove_dir_all(&root);
    let samples = write_samples(&root);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let script = repo.join("tests/evidence/check-schema.py");
    let has_jsonschema = Command::new("python3")
        .args(["-c", "import jsonschema"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_jsonschema {
        eprintln!(
            "python3 with jsonschema not found: schema check skipped (pip install jsonschema)"
        );
        return;
    }
    let out = Command::new("python3")
        .arg(&script)
        .arg(&samples)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for kind in [
        "allocation-created",
        "allocation-ended",
        "allocation-refused",
        "chain-resumed",
        "channel-bound",
        "node-started",
        "node-stopped",
        "permission",
        "policy-in-force",
        "pruned",
    ] {
        assert!(stdout.contains(kind), "no {kind} sample: {stdout}");
    }

    // An unknown field is refused by the schema too.
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let good = std::fs::read_to_string(
        samples
            .join("fra-1/segments")
            .read_dir()
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .unwrap(),
    )
    .unwrap();
    let line =
        good.lines()
            .next()
            .unwrap()
            .replacen("\"site\":", "\"password\":\"x\",\"site\":", 1);
    std::fs::write(bad.join("bad.jsonl"), format!("{line}\n")).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
