//! Crash safety of the evidence, through the real binary: `eeaturn serve` with
//! `[evidence] fsync = "always"` is killed with SIGKILL in the middle of load three times,
//! restarted each time, then stopped cleanly.
//!
//! What "written before the kill" means here, precisely:
//! - *Written*: a record whose `write(2)` to its segment file returned. SIGKILL does not lose
//!   the page cache, so every such record must be intact after the restart (`fsync = "always"`
//!   adds the same for a power cut, which a test cannot cut). The test reads the segment files
//!   just before each kill; every complete line it read must still be there, byte for byte.
//! - *Acknowledged*: an Allocate or ChannelBind whose success response the client received.
//!   The relay answers first and the writer thread writes the record a moment later (events
//!   never wait for the disk), so an acknowledgement may precede the record by the writer's
//!   latency (milliseconds). Every acknowledgement older than [`WRITER_MARGIN`] at the kill
//!   must have its `allocation-created` / `channel-bound` record; younger ones may be lost
//!   with the process (the allocation died with it too).
//!
//! After each restart the chain continues: the first records of the new run are
//! `chain-resumed` (naming the last intact record's seq and hash) and `node-started`; seqs
//! run on without a gap. `verify` passes and names nothing but torn tails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(
    clippy::disallowed_methods,
    reason = "deadlines and acknowledgement times of a child process, read from the clock"
)]

mod common;

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::{Peer, SECRET, TurnClient, issue_credential, wall_now};
use eeaturn_evidence::merkle::leaf_hash;
use eeaturn_evidence::record::{Body, Record};

const BIN: &str = env!("CARGO_BIN_EXE_eeaturn");
/// SIGKILLs before the clean stop.
const KILLS: usize = 3;
/// Load before each kill.
const LOAD: Duration = Duration::from_millis(2000);
/// Concurrent clients.
const CLIENTS: usize = 4;
/// How long the writer thread may take to write an acknowledged request's record.
const WRITER_MARGIN: Duration = Duration::from_millis(1000);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_keeps_every_written_record_and_the_chain_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let evidence = tmp.path().join("evidence");
    let config = write_config(tmp.path(), &evidence);
    let peer = Arc::new(Peer::bind("127.0.2.7").await); // FR
    let mut runs = Vec::new();

    for run in 0..=KILLS {
        let mut relay = Relay::start(&config);
        let acks = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (server, acks, peer) = (relay.listener, acks.clone(), peer.clone());
                tokio::spawn(load(server, run, i, peer, acks))
            })
            .collect();
        tokio::time::sleep(LOAD).await;
        let killed = run < KILLS;
        for t in &tasks {
            t.abort();
        }
        let stopped_at = Instant::now();
        let snapshot = if killed {
            let snapshot = read_lines(&evidence);
            relay.kill();
            snapshot
        } else {
            for t in tasks {
                let _ = t.await;
            }
            relay.terminate();
            BTreeMap::new()
        };
        let acks = std::mem::take(&mut *acks.lock().unwrap());
        runs.push(Run {
            killed,
            stopped_at,
            acks,
            snapshot,
        });
    }

    let records = read_records(&evidence);
    let seqs: Vec<u64> = records.iter().map(|(_, r)| r.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "one chain, no gap"
    );
    let by_run = split_runs(&records);
    assert_eq!(by_run.len(), KILLS + 1, "one run per start");

    for (i, (run, lines)) in runs.iter().zip(&by_run).enumerate() {
        let recs: Vec<&Record> = lines.iter().map(|(_, r)| r).collect();
        // Every line read just before the kill is still there, unchanged.
        let now = read_lines(&evidence);
        for (file, lines) in &run.snapshot {
            let after = &now[file];
            assert!(
                after.len() >= lines.len() && after[..lines.len()] == lines[..],
                "run {i}: {file} lost or changed records written before the kill"
            );
        }
        // Acknowledged requests have their records.
        let created = count(recs.iter().filter_map(|r| match &r.body {
            Body::AllocationCreated(a) => a.relayed.first().cloned(),
            _ => None,
        }));
        let bound = count(recs.iter().filter_map(|r| match &r.body {
            Body::ChannelBound(c) => Some(c.allocation.clone()),
            _ => None,
        }));
        let ids: BTreeMap<String, String> = recs
            .iter()
            .filter_map(|r| match &r.body {
                Body::AllocationCreated(a) => Some((a.allocation.clone(), a.relayed[0].clone())),
                _ => None,
            })
            .collect();
        let bound_by_relayed = count(
            bound
                .iter()
                .flat_map(|(id, n)| std::iter::repeat_n(ids[id].clone(), *n)),
        );
        let old_enough = |a: &&Ack| {
            !run.killed || run.stopped_at.saturating_duration_since(a.at) >= WRITER_MARGIN
        };
        let acked: Vec<&Ack> = run.acks.iter().filter(old_enough).collect();
        assert!(
            acked.iter().filter(|a| a.what == What::Allocate).count() >= CLIENTS,
            "run {i}: the load made allocations: {:?}",
            run.acks.len()
        );
        for (what, have) in [
            (What::Allocate, &created),
            (What::ChannelBind, &bound_by_relayed),
        ] {
            let want = count(
                acked
                    .iter()
                    .filter(|a| a.what == what)
                    .map(|a| a.relayed.to_string()),
            );
            for (relayed, n) in &want {
                let got = have.get(relayed).copied().unwrap_or(0);
                assert!(
                    got >= *n,
                    "run {i}: {n} acknowledged {what:?} on {relayed}, {got} on record"
                );
            }
        }
        eprintln!(
            "run {i}: {} records, {} acknowledgements ({} older than the margin), killed: {}",
            recs.len(),
            run.acks.len(),
            acked.len(),
            run.killed
        );
        if run.killed {
            // The next run starts by saying where the chain resumes.
            let next = &by_run[i + 1];
            let Body::ChainResumed(resumed) = &next[0].1.body else {
                panic!("run {} starts with {}", i + 1, next[0].1.body.kind());
            };
            let (last_line, last) = lines.last().unwrap();
            assert_eq!(resumed.last_seq, last.seq, "run {}", i + 1);
            assert_eq!(resumed.last_head, leaf_hash(last_line), "run {}", i + 1);
            assert_eq!(next[1].1.body.kind(), "node-started");
        } else {
            assert_eq!(recs.last().unwrap().body.kind(), "node-stopped");
            assert_eq!(created.values().sum::<usize>(), ended_count(&recs));
        }
    }

    let out = Command::new(BIN)
        .args(["evidence", "verify", "--json", "--trust"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dev-evidence.pub"))
        .arg(&evidence)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{report}");
    for f in report["nodes"][0]["findings"].as_array().unwrap() {
        assert_eq!(f["finding"], "torn-tail", "only torn tails: {report}");
    }
}

/// One client's load until aborted: allocate, permission, channel, ChannelData, release.
async fn load(
    server: SocketAddr,
    run: usize,
    i: usize,
    peer: Arc<Peer>,
    acks: Arc<Mutex<Vec<Ack>>>,
) {
    let user = format!("crash-{run}-{i}");
    let mut c = TurnClient::bind(
        &format!("127.0.1.{}", 20 + i),
        server,
        issue_credential(&user, Duration::from_secs(600), wall_now()),
    )
    .await;
    loop {
        let Ok(a) = c.allocate().await else { continue };
        let relayed = a.relayed();
        let ack = |what| Ack {
            what,
            relayed,
            at: Instant::now(),
        };
        acks.lock().unwrap().push(ack(What::Allocate));
        c.create_permission(&[peer.addr()]).await.unwrap();
        c.channel_bind(0x4000, peer.addr()).await.unwrap();
        acks.lock().unwrap().push(ack(What::ChannelBind));
        for _ in 0..5 {
            c.send_channel_data(0x4000, &[0x5a; 100]).await;
        }
        c.refresh(0).await.unwrap();
    }
}

struct Run {
    killed: bool,
    stopped_at: Instant,
    acks: Vec<Ack>,
    /// Complete lines of each segment file just before the kill.
    snapshot: BTreeMap<String, Vec<Vec<u8>>>,
}

#[derive(Debug)]
struct Ack {
    what: What,
    relayed: SocketAddr,
    at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    Allocate,
    ChannelBind,
}

/// `eeaturn serve` as a child process.
struct Relay {
    child: Child,
    listener: SocketAddr,
}

impl Relay {
    /// Starts the relay and waits for its IPv4 listener to be logged, then for "ready".
    fn start(config: &Path) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let mut listener = None;
        let mut seen = Vec::new();
        loop {
            let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
                panic!("the relay did not get ready:\n{}", seen.join("\n"));
            };
            const PREFIX: &str = "udp://127.0.0.1:";
            if line.contains("listening")
                && let Some(at) = line.find(PREFIX)
            {
                let port: String = line[at + PREFIX.len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                listener = Some(SocketAddr::from(([127, 0, 0, 1], port.parse().unwrap())));
            }
            if line.contains("ready") {
                break;
            }
            seen.push(line);
        }
        // Keep draining stderr so the relay never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Self {
            child,
            listener: listener.expect("a listening line"),
        }
    }

    fn kill(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "clean exit on SIGTERM: {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the relay did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test world listening on 127.0.0.1 port 0, relay ports of its own, evidence with
/// `fsync = "always"` in `evidence`.
fn write_config(dir: &Path, evidence: &Path) -> PathBuf {
    std::fs::write(dir.join("secret"), format!("{SECRET}\n")).unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let text = common::config_toml_listening(
        r#""udp://127.0.0.1:0""#,
        27_000..=27_499,
        &format!(
            "[evidence]\nenabled = true\ndirectory = \"{}\"\n\
             signing_key_file = \"{root}/config/dev-evidence.key\"\nnode_id = \"crash-node\"\n\
             site = \"test\"\nfsync = \"always\"\ncheckpoint_interval = \"1s\"\n",
            evidence.display()
        ),
    );
    let path = dir.join("eeaturn.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Every complete line (with its newline) of each segment file, by file name.
fn read_lines(dir: &Path) -> BTreeMap<String, Vec<Vec<u8>>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir.join("segments")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "jsonl") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let lines = bytes
            .split_inclusive(|&b| b == b'\n')
            .filter(|l| l.ends_with(b"\n"))
            .map(<[u8]>::to_vec)
            .collect();
        out.insert(
            path.file_name().unwrap().to_string_lossy().into_owned(),
            lines,
        );
    }
    out
}

/// Every intact record in seq order (segment names sort by first seq), with its line (without
/// the newline). A torn tail (an incomplete last line) is skipped: `verify` reports it.
fn read_records(dir: &Path) -> Vec<(Vec<u8>, Record)> {
    let mut out = Vec::new();
    for (file, lines) in read_lines(dir) {
        for mut l in lines {
            l.pop();
            let record = Record::parse(&l)
                .unwrap_or_else(|e| panic!("{file}: {}: {e}", String::from_utf8_lossy(&l)));
            out.push((l, record));
        }
    }
    out
}

/// The records of each run: a run starts at `node-started`, or at the `chain-resumed` just
/// before it.
fn split_runs(records: &[(Vec<u8>, Record)]) -> Vec<Vec<(Vec<u8>, Record)>> {
    let mut runs: Vec<Vec<(Vec<u8>, Record)>> = Vec::new();
    for (i, (_, r)) in records.iter().enumerate() {
        let starts = match r.body.kind() {
            "chain-resumed" => true,
            "node-started" => i == 0 || records[i - 1].1.body.kind() != "chain-resumed",
            _ => false,
        };
        if starts || runs.is_empty() {
            runs.push(Vec::new());
        }
        runs.last_mut().unwrap().push(records[i].clone());
    }
    runs
}

fn ended_count(records: &[&Record]) -> usize {
    records
        .iter()
        .filter(|r| matches!(r.body, Body::AllocationEnded(_)))
        .count()
}

fn count<T: Ord>(items: impl IntoIterator<Item = T>) -> BTreeMap<T, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}
