//! `eeaturn evidence prune` and the one-writer lock, through the real binary.
//!
//! Retention with an injected clock: evidence written on two days three days apart, pruned
//! with `--now` and a one-day retention: the old day's segments and its pseudonym day key
//! vanish, the newer ones stay, and `verify` passes and reports the pruning. The lock: while
//! a writer holds a node directory, `prune` refuses (naming the directory and saying that the
//! relay prunes by itself) and a relay configured onto it fails at start.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(
    clippy::disallowed_methods,
    reason = "a deadline for the child process, read from the clock"
)]

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use eeaturn_evidence::digest::Digest;
use eeaturn_evidence::log::{Log, Options};
use eeaturn_evidence::record::{
    AllocationCreated, AllocationEnded, Body, FactSource, Traffic, Transport,
};
use eeaturn_evidence::sign::Signer;
use eeaturn_evidence::time::Timestamp;

const BIN: &str = env!("CARGO_BIN_EXE_eeaturn");
/// 2026-12-06T00:00:00Z.
const DAY0: u64 = 1_796_515_200;

#[test]
fn prune_with_an_injected_clock_deletes_old_segments_and_their_day_keys() {
    let n = Node::new("retention = \"1d\"");
    // Day 0, 10:00-10:05 and day 3, 09:00-09:05: one run each.
    n.write_run(at(0, 10), 3);
    n.write_run(at(3, 9), 2);
    let before = n.segment_files();
    let old: Vec<&String> = before.iter().filter(|f| f.contains("20261206T")).collect();
    assert!(!old.is_empty(), "{before:?}");
    assert!(n.dir.join("keys/2026-12-06.key").exists());
    assert!(n.dir.join("keys/2026-12-09.key").exists());

    let out = n.prune(&["--now", "2026-12-09T12:00:00Z"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("retention 1d"), "{text}");
    assert!(text.contains("Deleted "), "{text}");
    assert!(text.contains("every record up to seq "), "{text}");
    assert!(
        text.contains("Destroyed the pseudonym keys of 1 day(s): 2026-12-06"),
        "{text}"
    );
    for f in old.iter().filter(|f| f.ends_with(".jsonl")) {
        assert!(text.contains(f.as_str()), "{f} listed: {text}");
    }

    let after = n.segment_files();
    assert!(
        after.iter().all(|f| !f.contains("20261206T")),
        "day 0's segments, manifests and checkpoints are gone: {after:?}"
    );
    assert!(after.iter().any(|f| f.contains("20261209T")), "{after:?}");
    assert!(!n.dir.join("keys/2026-12-06.key").exists());
    assert!(n.dir.join("keys/2026-12-09.key").exists());

    let verify = Command::new(BIN)
        .args(["evidence", "verify", "--trust"])
        .arg(root().join("config/dev-evidence.pub"))
        .arg(&n.dir)
        .output()
        .unwrap();
    let report = stdout(&verify);
    assert!(verify.status.success(), "{report}");
    assert!(report.contains("VERIFIED"), "{report}");
    assert!(
        report.contains("pruned by retention up to seq "),
        "{report}"
    );

    // Again at the same time: nothing more is old enough.
    let again = n.prune(&["--now", "2026-12-09T12:00:01Z"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("none deleted"),
        "{}",
        stdout(&again)
    );
}

#[test]
fn prune_refuses_a_directory_a_relay_writes() {
    let n = Node::new("");
    let held = n.open_writer(at(0, 10));
    let out = n.prune(&[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&n.dir.display().to_string()), "{err}");
    assert!(err.contains("in use by another eeaturn process"), "{err}");
    assert!(err.contains("every hour by itself"), "{err}");
    drop(held);
    let out = n.prune(&["--now", "2026-12-06T11:00:00Z"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_second_relay_on_the_same_directory_fails_at_start() {
    let n = Node::new("");
    let _held = n.open_writer(at(0, 10));
    let mut relay = n.serve(Stdio::piped());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = relay.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            relay.kill().unwrap();
            panic!("the second relay started on a directory in use");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::io::read_to_string(relay.stderr.take().unwrap()).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains(&n.dir.display().to_string()), "{err}");
    assert!(
        err.contains("must never share an evidence directory"),
        "{err}"
    );
}

#[test]
fn a_starting_relay_prunes_by_retention_at_once() {
    let n = Node::new("retention = \"1d\"");
    // A run three days ago and one an hour ago, written with the relay's own key and node id.
    let now = SystemTime::now();
    let old_start = now - Duration::from_secs(3 * 86_400);
    n.write_run(old_start, 2);
    n.write_run(now - Duration::from_secs(3600), 1);
    let old_day = Timestamp::from_system_time(old_start).day();
    let old_key = n.dir.join(format!("keys/{old_day}.key"));
    assert!(old_key.exists());
    let old_stamp = old_day.replace('-', "");
    let stamped_old =
        |files: &[String]| files.iter().any(|f| f.contains(&format!("-{old_stamp}T")));
    assert!(stamped_old(&n.segment_files()), "{:?}", n.segment_files());

    let mut relay = n.serve(Stdio::null());
    // Not an hour later: the writer prunes as soon as it starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stamped_old(&n.segment_files()) || old_key.exists() {
        if let Some(s) = relay.try_wait().unwrap() {
            panic!("the relay exited: {s}");
        }
        assert!(
            Instant::now() < deadline,
            "the old segments are still there: {:?}",
            n.segment_files()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Command::new("kill")
        .args(["-TERM", &relay.id().to_string()])
        .status()
        .unwrap();
    assert!(relay.wait().unwrap().success());

    let verify = Command::new(BIN)
        .args(["evidence", "verify", "--trust"])
        .arg(root().join("config/dev-evidence.pub"))
        .arg(&n.dir)
        .output()
        .unwrap();
    let report = stdout(&verify);
    assert!(verify.status.success(), "{report}");
    assert!(
        report.contains("pruned by retention up to seq "),
        "{report}"
    );
}

/// A relay configuration (the test world, listening on port 0) with evidence in its own
/// temporary directory, signed with the development key.
struct Node {
    _tmp: tempfile::TempDir,
    config: PathBuf,
    dir: PathBuf,
}

impl Node {
    fn new(evidence_extra: &str) -> Self {
        let dev_key = root().join("config/dev-evidence.key");
        let (tmp, config) = common::write_config_dir(&format!(
            "[evidence]\nenabled = true\ndirectory = \"evidence\"\nsigning_key_file = \"{}\"\n\
             node_id = \"prune-node\"\nsite = \"test\"\n{evidence_extra}\n",
            dev_key.display()
        ));
        let dir = tmp.path().join("evidence");
        Self {
            _tmp: tmp,
            config,
            dir,
        }
    }

    fn open_writer(&self, now: SystemTime) -> Log {
        let signer = Signer::from_pkcs8_file(&root().join("config/dev-evidence.key")).unwrap();
        let opts = Options::new("prune-node", "test", "0.1.0", Digest::of(b"config"));
        Log::open(&self.dir, opts, signer, now).unwrap().0
    }

    /// One relay run from `start`: `allocations` allocations a minute apart, each created and
    /// ended (with a pseudonymised client address), then a clean stop.
    fn write_run(&self, start: SystemTime, allocations: u64) {
        let mut log = self.open_writer(start);
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        for i in 0..allocations {
            let t = start + Duration::from_secs(60 * (i + 1));
            let id = format!("{:016x}", (start_secs(start) << 8) + i);
            let client = log.pseudonyms().address(client, t).unwrap();
            log.append(created(&id, client), t).unwrap();
            log.append(ended(&id), t + Duration::from_secs(30)).unwrap();
            log.flush(true).unwrap();
        }
        log.close(start + Duration::from_secs(300), "shutdown")
            .unwrap();
    }

    /// Starts `eeaturn serve` on the node's configuration, stderr to `stderr`.
    fn serve(&self, stderr: Stdio) -> std::process::Child {
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap()
    }

    fn prune(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(["evidence", "prune", "--config"])
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    /// File names under `segments/`, sorted.
    fn segment_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.join("segments"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

fn created(id: &str, client: String) -> Body {
    Body::AllocationCreated(AllocationCreated {
        allocation: id.to_owned(),
        client,
        user: None,
        country: Some("DE".into()),
        asn: Some(3320),
        rule: "region".into(),
        fact_source: FactSource::Database,
        transport: Transport::Udp,
        relayed: vec!["127.0.0.1:21000".into()],
        lifetime_s: 600,
    })
}

fn ended(id: &str) -> Body {
    Body::AllocationEnded(AllocationEnded {
        allocation: id.to_owned(),
        reason: "released".into(),
        duration_ms: 30_000,
        peers: Vec::new(),
        totals: Traffic::default(),
    })
}

/// `hour`:00 UTC on day `day` after 2026-12-06.
fn at(day: u64, hour: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(DAY0 + day * 86_400 + hour * 3600)
}

fn start_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
