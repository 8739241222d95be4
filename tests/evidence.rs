//! Residency evidence end to end, over loopback: a relay in this process writes evidence
//! into a temporary directory; the test reads the records back with the evidence crate and
//! verifies the directory with the development public key. And fail closed: while the
//! evidence disk is full no allocation is admitted (508), running ones keep relaying, and
//! once space returns the held records are written and admission reopens.

#![allow(clippy::unwrap_used, reason = "a failed step fails the test")]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Peer, Relayed, start_server};
use eeaturn_evidence::record::{Body, PeerDecision, PermissionVia, Record, RefusalStage};
use eeaturn_evidence::sign::PublicKey;
use eeaturn_evidence::verify::{VerifyOptions, verify};

#[tokio::test]
async fn evidence_holds_exactly_the_allocations_permissions_refusals_and_bytes() {
    let ev = tempfile::tempdir().unwrap();
    let server = start_server(&evidence_toml(ev.path(), "always")).await;
    let peer = Peer::bind("127.0.2.1").await; // FR
    let us_peer: SocketAddr = "127.0.5.1:9000".parse().unwrap(); // US

    // DE client → FR peer: permission, channel, data both ways.
    let mut c = server.client("127.0.1.1", "alice").await;
    let relayed = c.allocate().await.unwrap().relayed[0];
    c.create_permission(&[peer.addr()]).await.unwrap();
    c.channel_bind(0x4000, peer.addr()).await.unwrap();
    c.send_channel_data(0x4000, b"hello").await;
    c.send_channel_data(0x4000, b"abc").await;
    c.send_indication(peer.addr(), b"xy").await;
    for _ in 0..3 {
        peer.recv().await;
    }
    peer.send_to(b"pong!", relayed).await;
    assert!(matches!(c.recv_relayed().await, Relayed::Channel { .. }));
    // DE → US peer, and a US client: refused.
    let denied = c.create_permission(&[us_peer]).await.unwrap_err();
    assert_eq!(denied.code, 403);
    let mut us = server.client("127.0.5.2", "bob").await;
    assert_eq!(us.allocate().await.unwrap_err().code, 403);
    c.refresh(0).await.unwrap();
    server.stop().await;

    let records = read_records(ev.path());
    let kinds: Vec<&str> = records.iter().map(|r| r.body.kind()).collect();
    assert_eq!(kinds.first(), Some(&"node-started"), "{kinds:?}");
    assert_eq!(kinds.get(1), Some(&"policy-in-force"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"node-stopped"), "{kinds:?}");
    let created: Vec<_> = bodies(&records, |b| match b {
        Body::AllocationCreated(a) => Some(a.clone()),
        _ => None,
    });
    let [created] = &created[..] else {
        panic!("one allocation created: {kinds:?}")
    };
    assert_eq!(created.country.as_deref(), Some("DE"));
    assert!(created.client.starts_with("p1:"), "pseudonymised");
    assert!(
        created
            .user
            .as_deref()
            .is_some_and(|u| u.starts_with("u1:"))
    );
    let permissions: Vec<_> = bodies(&records, |b| match b {
        Body::Permission(p) => Some((p.decision, p.via, p.country.clone(), p.allocation.clone())),
        _ => None,
    });
    let id = created.allocation.clone();
    assert_eq!(
        permissions,
        vec![
            (
                PeerDecision::Allowed,
                PermissionVia::CreatePermission,
                Some("FR".into()),
                id.clone()
            ),
            (
                PeerDecision::Allowed,
                PermissionVia::ChannelBind,
                Some("FR".into()),
                id.clone()
            ),
            // The test world refuses 127.0.5.0/24 by `peers.deny`, before any lookup.
            (
                PeerDecision::Denied,
                PermissionVia::CreatePermission,
                None,
                id.clone()
            ),
        ]
    );
    let channels = bodies(&records, |b| match b {
        Body::ChannelBound(c) => Some((c.channel, c.country.clone())),
        _ => None,
    });
    assert_eq!(channels, vec![(0x4000, Some("FR".to_owned()))]);
    let refused = bodies(&records, |b| match b {
        Body::AllocationRefused(r) => Some((r.stage, r.country.clone(), r.allocation.clone())),
        _ => None,
    });
    assert_eq!(
        refused,
        vec![(RefusalStage::Allocate, Some("US".to_owned()), None)]
    );
    let ended = bodies(&records, |b| match b {
        Body::AllocationEnded(e) => Some(e.clone()),
        _ => None,
    });
    let [ended] = &ended[..] else {
        panic!("one allocation ended: {kinds:?}")
    };
    assert_eq!(ended.allocation, id);
    assert_eq!(ended.reason, "released");
    let [p] = &ended.peers[..] else {
        panic!("one peer: {:?}", ended.peers)
    };
    assert_eq!(
        (
            p.packets_to_peer,
            p.bytes_to_peer,
            p.packets_to_client,
            p.bytes_to_client
        ),
        (3, 10, 1, 5),
        "what the test sent"
    );
    assert_eq!(ended.totals.bytes_to_peer, 10);
    assert_no_finding(ev.path());
}

#[tokio::test]
async fn a_full_evidence_disk_closes_admission_and_recovers() {
    let mount = Tmpfs::mount("256k");
    let server = start_server(&evidence_toml(&mount.path, "interval")).await;
    let peer = Peer::bind("127.0.2.2").await;
    let mut running = server.client("127.0.1.2", "alice").await;
    let relayed = running.allocate().await.unwrap().relayed[0];
    running.channel_bind(0x4001, peer.addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let filler = mount.fill();
    // A record that cannot be written: admission closes.
    let second = Peer::bind("127.0.2.3").await;
    running.create_permission(&[second.addr()]).await.unwrap();
    let mut late = server.client("127.0.1.3", "carol").await;
    let refused = eventually(&mut late, |r| r.is_err()).await;
    assert_eq!(refused.unwrap_err().code, 508);
    // The running allocation still relays, both ways.
    running.send_channel_data(0x4001, b"still here").await;
    assert_eq!(peer.recv().await.0, b"still here");
    peer.send_to(b"ack", relayed).await;
    assert!(matches!(
        running.recv_relayed().await,
        Relayed::Channel { .. }
    ));

    std::fs::remove_file(filler).unwrap();
    let mut later = server.client("127.0.1.4", "dave").await;
    eventually(&mut later, Result::is_ok).await.unwrap();
    server.stop().await;

    let records = read_records(&mount.path);
    let allowed = bodies(&records, |b| match b {
        Body::Permission(p) if p.decision == PeerDecision::Allowed => Some(p.via),
        _ => None,
    });
    assert_eq!(
        allowed,
        vec![PermissionVia::ChannelBind, PermissionVia::CreatePermission],
        "the record held during the failure was written"
    );
    let created = bodies(&records, |b| match b {
        Body::AllocationCreated(a) => Some(a.allocation.clone()),
        _ => None,
    });
    let ended = bodies(&records, |b| match b {
        Body::AllocationEnded(e) => Some(e.allocation.clone()),
        _ => None,
    });
    assert_eq!(
        created.len(),
        ended.len(),
        "every allocation has its end on record"
    );
    assert!(created.len() >= 2);
    assert_no_finding(&mount.path);
}

/// Allocates again (a new client each time: a refused Allocate leaves no state) until
/// `done` holds for the result, for at most five seconds.
async fn eventually(
    c: &mut common::TurnClient,
    done: impl Fn(&Result<common::Allocation, common::StunError>) -> bool,
) -> Result<common::Allocation, common::StunError> {
    for _ in 0..50 {
        let r = c.allocate().await;
        if done(&r) {
            return r;
        }
        if r.is_ok() {
            c.refresh(0).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the relay's admission did not change within five seconds");
}

fn evidence_toml(dir: &Path, fsync: &str) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    format!(
        "[evidence]\nenabled = true\ndirectory = \"{}\"\nsigning_key_file = \"{root}/config/dev-evidence.key\"\nnode_id = \"test-node\"\nsite = \"test\"\nfsync = \"{fsync}\"\ncheckpoint_interval = \"1s\"\nmemory_limit = \"1MiB\"\n",
        dir.display()
    )
}

/// Every record of the node directory, in file order.
fn read_records(dir: &Path) -> Vec<Record> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| Record::parse(l.as_bytes()).unwrap_or_else(|e| panic!("{l}: {e}")))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn bodies<T>(records: &[Record], f: impl Fn(&Body) -> Option<T>) -> Vec<T> {
    records.iter().filter_map(|r| f(&r.body)).collect()
}

fn assert_no_finding(dir: &Path) {
    let key = PublicKey::from_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dev-evidence.pub"),
    )
    .unwrap();
    let opts = VerifyOptions {
        trust: vec![key],
        ..VerifyOptions::default()
    };
    let report = verify(&[dir.to_path_buf()], &opts, &mut |_| {});
    let findings: Vec<_> = report.findings().collect();
    assert!(
        report.is_ok() && findings.is_empty(),
        "{}",
        report.to_json()
    );
}

/// A small tmpfs mounted for one test (the test runs as root), unmounted on drop.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test needs a small tmpfs to fill (run it as root): mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { path, _dir: dir }
    }

    /// Fills the file system; returns the filler file.
    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let path = self.path.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.write_all(&[0]);
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}
