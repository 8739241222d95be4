//! `eeaturn evidence` end to end through the real binary: a small evidence directory written
//! with the crate's `Log` (fixed clock, the crate's committed test key, fixed day keys), then
//! verify on the untouched copy, one tamper class per test on a fresh copy (each exit 1 and
//! named in the text and the JSON), a torn tail (a warning: exit 0), prove and verify-proof,
//! and keygen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use eeaturn_evidence::Error;
use eeaturn_evidence::digest::Digest;
use eeaturn_evidence::log::{Log, Options};
use eeaturn_evidence::pseudonym::KeySource;
use eeaturn_evidence::record::{
    AllocationCreated, AllocationEnded, Body, FactSource, PeerDecision, PeerTraffic, Permission,
    PermissionVia, Traffic, Transport,
};
use eeaturn_evidence::sign::Signer;
use eeaturn_evidence::statement::Statement;

const BIN: &str = env!("CARGO_BIN_EXE_eeaturn");

#[test]
fn verify_passes_on_the_untouched_copy() {
    let f = Fixture::new();
    let (code, text) = f.verify(&f.dir, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("VERIFIED"), "{text}");
    assert!(text.contains("Node fra-1"), "{text}");
    assert!(text.contains("seq 1 to"), "{text}");
    assert!(text.contains(&f.fingerprint), "{text}");
    assert!(text.contains("(trusted)"), "{text}");
    let (code, json) = f.verify(&f.dir, &["--json"]);
    assert_eq!(code, 0, "{json}");
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["nodes"][0]["findings"], serde_json::json!([]));
}

#[test]
fn changed_byte_is_named_as_an_edited_record() {
    let f = Fixture::new();
    let seg = f.segments()[0].clone();
    let copy = f.tampered("edited", |d| {
        let path = d.join(&seg);
        let mut l = lines(&path);
        let edited = l[2].replacen("\"country\":\"DE\"", "\"country\":\"DK\"", 1);
        assert_ne!(edited, l[2]);
        l[2] = edited;
        write_lines(&path, &l);
    });
    f.assert_finding(
        &copy,
        &format!("{seg} seq 3: record edited"),
        serde_json::json!({"finding": "record-edited", "file": seg, "seq": 3}),
    );
}

#[test]
fn deleted_line_is_named_with_its_seq() {
    let f = Fixture::new();
    let seg = f.segments()[1].clone();
    let mut seq = 0;
    let copy = f.tampered("deleted", |d| {
        let path = d.join(&seg);
        let mut l = lines(&path);
        seq = seq_of(&l[2]);
        l.remove(2);
        write_lines(&path, &l);
    });
    f.assert_finding(
        &copy,
        &format!("{seg}: record {seq} deleted"),
        serde_json::json!({"finding": "records-deleted", "file": seg, "from_seq": seq, "to_seq": seq}),
    );
}

#[test]
fn swapped_lines_are_named_as_reordered() {
    let f = Fixture::new();
    let seg = f.segments()[0].clone();
    let mut seq = 0;
    let copy = f.tampered("swapped", |d| {
        let path = d.join(&seg);
        let mut l = lines(&path);
        seq = seq_of(&l[2]);
        l.swap(2, 3);
        write_lines(&path, &l);
    });
    f.assert_finding(
        &copy,
        &format!("{seg} seq {seq}: records reordered"),
        serde_json::json!({"finding": "records-reordered", "file": seg, "seq": seq}),
    );
}

#[test]
fn truncated_segment_is_named() {
    let f = Fixture::new();
    let seg = f.segments()[0].clone();
    let copy = f.tampered("truncated", |d| {
        let path = d.join(&seg);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    });
    f.assert_finding(
        &copy,
        &format!("{seg}: segment truncated to "),
        serde_json::json!({"finding": "segment-truncated", "file": seg}),
    );
}

#[test]
fn deleted_segment_is_named_as_missing() {
    let f = Fixture::new();
    let segs = f.segments();
    let gone = segs[1].clone();
    let gone_lines = lines(&f.dir.join(&gone));
    let (from, to) = (seq_of(&gone_lines[0]), seq_of(gone_lines.last().unwrap()));
    let copy = f.tampered("segment-deleted", |d| {
        for ext in [".jsonl", ".manifest.json", ".checkpoint.json"] {
            let _ = fs::remove_file(d.join(gone.replace(".jsonl", ext)));
        }
    });
    f.assert_finding(
        &copy,
        &format!(
            "{}: segment missing before it, records {from}\u{2013}{to} gone",
            segs[2]
        ),
        serde_json::json!({"finding": "segment-missing", "file": segs[2], "from_seq": from, "to_seq": to}),
    );
}

#[test]
fn deleted_manifest_is_named() {
    let f = Fixture::new();
    let seg = f.segments()[1].clone();
    let copy = f.tampered("manifest-deleted", |d| {
        fs::remove_file(d.join(seg.replace(".jsonl", ".manifest.json"))).unwrap();
    });
    f.assert_finding(
        &copy,
        &format!("{seg}: manifest missing"),
        serde_json::json!({"finding": "manifest-missing", "file": seg}),
    );
}

#[test]
fn manifest_re_signed_with_another_key_is_named_untrusted() {
    let f = Fixture::new();
    let keys = f.tmp.path().join("other");
    fs::create_dir(&keys).unwrap();
    let (private, public) = (keys.join("other.pem"), keys.join("other.pub"));
    let out = keygen(&private, &public);
    assert!(out.status.success(), "{}", stderr(&out));
    let other = Signer::from_pkcs8_file(&private).unwrap();
    let manifest = f.segments()[0].replace(".jsonl", ".manifest.json");
    let copy = f.tampered("re-signed", |d| {
        let path = d.join(&manifest);
        let (mut m, _) = Statement::read(&path).unwrap();
        m.sign(&other);
        fs::write(&path, m.to_file_bytes()).unwrap();
    });
    let fp = other.fingerprint().to_string();
    f.assert_finding(
        &copy,
        &format!("{manifest}: signed by an untrusted key sha256:{fp}"),
        serde_json::json!({"finding": "untrusted-key", "file": manifest, "key": fp}),
    );
    // The node summary marks the key as not trusted. Trusting it too does not help: the
    // re-signed manifest's bytes changed, so the next manifest's link to it breaks.
    let (_, text) = f.verify(&copy, &[]);
    assert!(
        text.contains(&format!("sha256:{fp} (NOT TRUSTED)")),
        "{text}"
    );
    let (code, text) = f.verify(&copy, &["--trust", public.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(!text.contains("signed by an untrusted key"), "{text}");
    assert!(text.contains("manifest chain broken"), "{text}");
}

#[test]
fn torn_tail_is_reported_as_a_warning_and_verify_passes() {
    let f = Fixture::new();
    let seg = f.segments().last().unwrap().clone();
    let mut offset = 0;
    let copy = f.tampered("torn", |d| {
        let path = d.join(&seg);
        offset = fs::metadata(&path).unwrap().len();
        let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"v\":1,\"seq\":").unwrap();
    });
    let (code, text) = f.verify(&copy, &[]);
    assert_eq!(code, 0, "a torn tail is a warning, not a failure:\n{text}");
    assert!(
        text.contains(&format!(
            "warn  {seg}: torn tail at byte {offset} (crash; fine if the relay was killed)"
        )),
        "{text}"
    );
    assert!(text.contains("VERIFIED"), "{text}");
    assert!(text.contains("1 warning(s)"), "{text}");
    let (code, json) = f.verify(&copy, &["--json"]);
    assert_eq!(code, 0, "{json}");
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        report["nodes"][0]["findings"][0],
        serde_json::json!({"finding": "torn-tail", "file": seg, "offset": offset})
    );
}

#[test]
fn prove_and_verify_proof_round_trip_and_an_edit_fails() {
    let f = Fixture::new();
    let proof = f.tmp.path().join("alloc-0004.proof.json");
    let out = run(&[
        "evidence",
        "prove",
        "--allocation",
        "alloc-0004",
        f.dir.to_str().unwrap(),
        "--out",
        proof.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&proof).unwrap()).unwrap();
    assert_eq!(json["allocation"], "alloc-0004");
    assert_eq!(json["segments"][0]["records"].as_array().unwrap().len(), 4);

    let verify_proof = |file: &Path| {
        run(&[
            "evidence",
            "verify-proof",
            file.to_str().unwrap(),
            "--trust",
            f.public.to_str().unwrap(),
        ])
    };
    let out = verify_proof(&proof);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(
        text.contains("PROVEN: 4 record(s) of allocation alloc-0004"),
        "{text}"
    );
    assert!(text.contains("allocation created: client"), "{text}");
    assert!(text.contains("permission denied: peer"), "{text}");
    assert!(text.contains("allocation ended (released)"), "{text}");
    assert!(
        text.contains(&format!("key sha256:{}", f.fingerprint)),
        "{text}"
    );

    // One byte of a record line changed: the audit path no longer leads to the signed root.
    let edited = f.tmp.path().join("edited.proof.json");
    let body = fs::read_to_string(&proof).unwrap();
    let changed = body.replacen("\\\"DE\\\"", "\\\"DK\\\"", 1);
    assert_ne!(body, changed);
    fs::write(&edited, changed).unwrap();
    let out = verify_proof(&edited);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("NOT PROVEN"), "{}", stdout(&out));

    // An unknown allocation has nothing to prove.
    let out = run(&[
        "evidence",
        "prove",
        "--allocation",
        "no-such-allocation",
        f.dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn keygen_refuses_to_overwrite_and_keeps_the_private_key_private() {
    let tmp = tempfile::tempdir().unwrap();
    let (private, public) = (tmp.path().join("k.pem"), tmp.path().join("k.pub"));
    let out = keygen(&private, &public);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let signer = Signer::from_pkcs8_file(&private).unwrap();
    assert!(
        text.contains(&format!("Fingerprint: sha256:{}", signer.fingerprint())),
        "{text}"
    );
    assert!(text.contains("systemd credential"), "{text}");
    assert!(text.contains("auditor"), "{text}");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let before = (fs::read(&private).unwrap(), fs::read(&public).unwrap());
    for (p, q) in [
        (private.clone(), tmp.path().join("new.pub")),
        (tmp.path().join("new.pem"), public.clone()),
    ] {
        let out = keygen(&p, &q);
        assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
        assert!(
            stderr(&out).contains("refusing to overwrite"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(
        before,
        (fs::read(&private).unwrap(), fs::read(&public).unwrap())
    );
    assert!(!tmp.path().join("new.pem").exists() && !tmp.path().join("new.pub").exists());
}

#[test]
fn verify_help_documents_the_exit_codes_and_trust() {
    let out = run(&["evidence", "verify", "--help"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for needle in [
        "Exit codes:",
        "0  verified",
        "1  a real finding",
        "2  usage or I/O error",
        "--trust",
        "names the keys they trust",
        "--from",
        "2026-12-01",
    ] {
        assert!(text.contains(needle), "--help lacks {needle:?}:\n{text}");
    }
}

#[test]
fn verify_without_trust_or_with_a_missing_dir_is_a_usage_error() {
    let f = Fixture::new();
    let out = run(&["evidence", "verify", f.dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stderr(&out).contains("--trust"), "{}", stderr(&out));
    let missing = f.tmp.path().join("nowhere");
    let (code, _) = f.verify(&missing, &[]);
    assert_eq!(code, 2);
    let out = run(&[
        "evidence",
        "verify",
        f.dir.to_str().unwrap(),
        "--trust",
        f.public.to_str().unwrap(),
        "--from",
        "last tuesday",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
}

#[test]
fn verify_takes_a_period_and_several_nodes() {
    let f = Fixture::new();
    let other = f.tmp.path().join("other-node");
    copy_dir(&f.dir, &other);
    let dir = f.dir.to_str().unwrap();
    let out = run(&[
        "evidence",
        "verify",
        dir,
        other.to_str().unwrap(),
        "--trust",
        f.public.to_str().unwrap(),
        "--from",
        "2026-12-06T04:30:00+01:00",
        "--to",
        "2026-12-07",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("VERIFIED: 2 node(s)"), "{text}");
    assert!(text.contains("Period: 2026-12-06T03:30:00.000Z"), "{text}");
}

// ---- helpers ----

/// A fresh evidence directory and the public key file that verifies it.
struct Fixture {
    tmp: tempfile::TempDir,
    dir: PathBuf,
    public: PathBuf,
    fingerprint: String,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("fra-1");
        write_session(&dir);
        let public = tmp.path().join("test-signing-key.pub");
        let key = signer().public_key();
        fs::write(&public, key.to_text()).unwrap();
        Self {
            tmp,
            dir,
            public,
            fingerprint: key.fingerprint().to_string(),
        }
    }

    /// The record files, oldest first, as `segments/<name>`.
    fn segments(&self) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(self.dir.join("segments"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".jsonl"))
            .map(|n| format!("segments/{n}"))
            .collect();
        out.sort();
        assert!(out.len() >= 3, "{out:?}");
        out
    }

    /// A copy of the directory, changed.
    fn tampered(&self, name: &str, change: impl FnOnce(&Path)) -> PathBuf {
        let copy = self.tmp.path().join(name);
        copy_dir(&self.dir, &copy);
        change(&copy);
        copy
    }

    /// Runs verify with the fixture's key trusted; returns the exit code and standard output.
    fn verify(&self, dir: &Path, extra: &[&str]) -> (i32, String) {
        let mut args = vec![
            "evidence",
            "verify",
            dir.to_str().unwrap(),
            "--trust",
            self.public.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = run(&args);
        (
            out.status.code().unwrap_or(-1),
            stdout(&out) + &stderr(&out),
        )
    }

    /// Verify exits 1 and names the finding in the text and in the JSON (a finding there
    /// with at least the `expected` fields).
    fn assert_finding(&self, copy: &Path, text_needle: &str, expected: serde_json::Value) {
        let (code, text) = self.verify(copy, &[]);
        assert_eq!(code, 1, "{text}");
        assert!(text.contains(text_needle), "no {text_needle:?} in:\n{text}");
        assert!(text.contains("FAIL  "), "{text}");
        assert!(text.contains("FAILED:"), "{text}");
        let (code, json) = self.verify(copy, &["--json"]);
        assert_eq!(code, 1, "{json}");
        let report: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(report["ok"], false);
        let findings = report["nodes"][0]["findings"].as_array().unwrap();
        let fits = |f: &serde_json::Value| {
            expected
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| f[k] == *v)
        };
        assert!(findings.iter().any(fits), "no {expected} in {json}");
        // The original stays clean.
        assert_eq!(self.verify(&self.dir, &[]).0, 0);
    }
}

/// 2026-12-06T03:14:15.123Z.
const T0_MS: u64 = 1_796_526_855_123;

fn at(ms_after_t0: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(T0_MS + ms_after_t0)
}

/// The crate's committed test key (public: it signs test evidence only).
fn signer() -> Signer {
    Signer::from_pkcs8_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("evidence/tests/keys/test-signing-key.pem"),
    )
    .unwrap()
}

struct FixedKeys(u8);

impl KeySource for FixedKeys {
    fn fresh_key(&mut self) -> Result<[u8; 32], Error> {
        self.0 += 1;
        Ok([self.0; 32])
    }
}

/// Three hourly segments of allocations (four records each), checkpointed, cleanly closed.
fn write_session(dir: &Path) {
    let opts = Options::new("fra-1", "Frankfurt", "0.1.0", Digest::of(b"[evidence]\n"));
    let (mut log, _) =
        Log::open_with_keys(dir, opts, signer(), Box::new(FixedKeys(0)), at(0)).unwrap();
    let mut n = 0;
    for hour in 0..3u64 {
        for i in 0..3u64 {
            let now = at(hour * 3_600_000 + i * 60_000 + 1);
            allocation(&mut log, n, now);
            n += 1;
            log.flush(false).unwrap();
            log.roll_if_due(now).unwrap();
        }
        log.checkpoint(at(hour * 3_600_000 + 1_800_000)).unwrap();
    }
    log.close(at(3 * 3_600_000), "shutdown").unwrap();
}

fn allocation(log: &mut Log, n: u64, now: SystemTime) {
    let id = format!("alloc-{n:04}");
    let client: IpAddr = format!("198.51.100.{}", n + 1).parse().unwrap();
    let p = log.pseudonyms();
    let client = p.address(client, now).unwrap();
    let de = p.address("192.0.2.10".parse().unwrap(), now).unwrap();
    let us = p.address("203.0.113.99".parse().unwrap(), now).unwrap();
    let bodies = [
        Body::AllocationCreated(AllocationCreated {
            allocation: id.clone(),
            client,
            user: None,
            country: Some("DE".into()),
            asn: Some(3320),
            rule: "eea".into(),
            fact_source: FactSource::Database,
            transport: Transport::Udp,
            relayed: vec!["192.0.2.1:49152".into()],
            lifetime_s: 600,
        }),
        permission(&id, &de, "DE", PeerDecision::Allowed),
        permission(&id, &us, "US", PeerDecision::Denied),
        Body::AllocationEnded(AllocationEnded {
            allocation: id.clone(),
            reason: "released".into(),
            duration_ms: 30_000,
            peers: vec![PeerTraffic {
                peer: de,
                packets_to_peer: 100 + n,
                bytes_to_peer: 120_000,
                packets_to_client: 99,
                bytes_to_client: 118_800,
            }],
            totals: Traffic {
                packets_to_peer: 100 + n,
                bytes_to_peer: 120_000,
                packets_to_client: 99,
                bytes_to_client: 118_800,
            },
        }),
    ];
    for body in bodies {
        log.append(body, now).unwrap();
    }
}

fn permission(id: &str, peer: &str, country: &str, decision: PeerDecision) -> Body {
    Body::Permission(Permission {
        allocation: id.to_owned(),
        decision,
        peer: peer.to_owned(),
        country: Some(country.into()),
        asn: Some(64_500),
        rule: if decision == PeerDecision::Allowed {
            "eea"
        } else {
            "outside-region"
        }
        .into(),
        fact_source: FactSource::Database,
        via: PermissionVia::CreatePermission,
    })
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn keygen(private: &Path, public: &Path) -> Output {
    run(&[
        "evidence",
        "keygen",
        "--out-private",
        private.to_str().unwrap(),
        "--out-public",
        public.to_str().unwrap(),
    ])
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    fs::write(path, text).unwrap();
}

fn seq_of(line: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"]
        .as_u64()
        .unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}
