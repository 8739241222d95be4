//! A scripted evidence session with a fixed clock, signing key and day keys.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use eeaturn_evidence::Error;
use eeaturn_evidence::digest::Digest;
use eeaturn_evidence::log::{Log, Options};
use eeaturn_evidence::pseudonym::KeySource;
use eeaturn_evidence::record::*;
use eeaturn_evidence::sign::{PublicKey, Signer};
use eeaturn_evidence::verify::{Finding, VerifyOptions, VerifyReport, verify};

/// 2026-12-06T03:14:15.123Z.
pub const T0_MS: u64 = 1_796_526_855_123;

pub fn at(ms_after_t0: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(T0_MS + ms_after_t0)
}

pub fn signer() -> Signer {
    Signer::from_pkcs8_file(&keys_dir().join("test-signing-key.pem")).unwrap()
}

pub fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

/// Day keys 0x01…, 0x02…: deterministic, for tests only.
pub struct FixedKeys(pub u8);

impl KeySource for FixedKeys {
    fn fresh_key(&mut self) -> Result<[u8; 32], Error> {
        self.0 += 1;
        Ok([self.0; 32])
    }
}

pub fn options() -> Options {
    Options::new("fra-1", "Frankfurt", "0.1.0", Digest::of(b"[evidence]\n"))
}

pub fn open(dir: &Path, now: SystemTime) -> Log {
    Log::open_with_keys(dir, options(), signer(), Box::new(FixedKeys(0)), now)
        .unwrap()
        .0
}

pub fn policy() -> Body {
    Body::PolicyInForce(PolicyInForce {
        regions: vec!["EEA".into()],
        rule_set_digest: Digest::of(b"rules"),
        databases: vec![
            DatabaseInfo {
                role: DatabaseRole::Country,
                database_type: "GeoLite2-Country".into(),
                build_epoch: 1_796_000_000,
                sha256: Digest::of(b"country.mmdb"),
            },
            DatabaseInfo {
                role: DatabaseRole::Asn,
                database_type: "GeoLite2-ASN".into(),
                build_epoch: 1_796_000_000,
                sha256: Digest::of(b"asn.mmdb"),
            },
        ],
    })
}

/// Writes one allocation's life: created, two permissions allowed, one denied, a channel,
/// ended with traffic to two peers; and a refused client.
pub fn allocation(log: &mut Log, n: u64, now: SystemTime) {
    let id = format!("alloc-{n:04}");
    let client: IpAddr = format!("198.51.100.{}", n % 250 + 1).parse().unwrap();
    let peer_de: IpAddr = "192.0.2.10".parse().unwrap();
    let peer_fr: IpAddr = "2001:db8::7".parse().unwrap();
    let peer_us: IpAddr = "203.0.113.99".parse().unwrap();
    let p = log.pseudonyms();
    let client_p = p.address(client, now).unwrap();
    let user_p = p.user(&format!("user-{n}"), now).unwrap();
    let de = p.address(peer_de, now).unwrap();
    let fr = p.address(peer_fr, now).unwrap();
    let us = p.address(peer_us, now).unwrap();
    log.append(
        Body::AllocationCreated(AllocationCreated {
            allocation: id.clone(),
            client: client_p.clone(),
            user: Some(user_p.clone()),
            country: Some("DE".into()),
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
    for (peer, country, decision) in [
        (&de, "DE", PeerDecision::Allowed),
        (&fr, "FR", PeerDecision::Allowed),
        (&us, "US", PeerDecision::Denied),
    ] {
        log.append(
            Body::Permission(Permission {
                allocation: id.clone(),
                decision,
                peer: peer.clone(),
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
            }),
            now,
        )
        .unwrap();
    }
    log.append(
        Body::ChannelBound(ChannelBound {
            allocation: id.clone(),
            channel: 0x4000,
            peer: de.clone(),
            country: Some("DE".into()),
            asn: Some(64_500),
            rule: "eea".into(),
        }),
        now,
    )
    .unwrap();
    let peers = vec![
        PeerTraffic {
            peer: de,
            packets_to_peer: 100 + n,
            bytes_to_peer: 120_000,
            packets_to_client: 99,
            bytes_to_client: 118_800,
        },
        PeerTraffic {
            peer: fr,
            packets_to_peer: 10,
            bytes_to_peer: 1_200,
            packets_to_client: 11,
            bytes_to_client: 1_320,
        },
    ];
    let totals = Traffic {
        packets_to_peer: 110 + n,
        bytes_to_peer: 121_200,
        packets_to_client: 110,
        bytes_to_client: 120_120,
    };
    log.append(
        Body::AllocationEnded(AllocationEnded {
            allocation: id,
            reason: "released".into(),
            duration_ms: 61_000 + n,
            peers,
            totals,
        }),
        now,
    )
    .unwrap();
    log.append(
        Body::AllocationRefused(AllocationRefused {
            stage: RefusalStage::Allocate,
            allocation: None,
            client: client_p,
            user: Some(user_p),
            country: Some("US".into()),
            asn: Some(64_501),
            rule: "outside-region".into(),
            fact_source: FactSource::Database,
            transport: Transport::Tls,
        }),
        now,
    )
    .unwrap();
}

/// The scripted session: three hours, a checkpoint each half hour, a clean stop.
/// Returns the directory (inside `parent`).
pub fn scripted(parent: &Path) -> PathBuf {
    let dir = parent.join("fra-1");
    let mut log = open(&dir, at(0));
    log.append(policy(), at(0)).unwrap();
    let mut n = 0;
    for half_hour in 0..6u64 {
        for i in 0..4u64 {
            let now = at(half_hour * 1_800_000 + i * 60_000 + 1);
            allocation(&mut log, n, now);
            n += 1;
            log.flush(false).unwrap();
            log.roll_if_due(now).unwrap();
        }
        log.checkpoint(at(half_hour * 1_800_000 + 900_000)).unwrap();
    }
    log.close(at(6 * 1_800_000), "shutdown").unwrap();
    dir
}

pub fn trust() -> VerifyOptions {
    VerifyOptions {
        trust: vec![signer().public_key()],
        ..VerifyOptions::default()
    }
}

pub fn check(dir: &Path) -> VerifyReport {
    verify(&[dir.to_path_buf()], &trust(), &mut |_| {})
}

pub fn findings(report: &VerifyReport) -> Vec<Finding> {
    report.findings().map(|(_, f)| f.clone()).collect()
}

pub fn copy_dir(from: &Path, to: &Path) {
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

/// The record files of a node directory, oldest first, as `segments/<name>`.
pub fn segment_files(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".jsonl"))
        .map(|n| format!("segments/{n}"))
        .collect();
    out.sort();
    out
}

pub fn manifest_of(segment: &str) -> String {
    segment.replace(".jsonl", ".manifest.json")
}

pub fn public_key_of(signer: &Signer) -> PublicKey {
    signer.public_key()
}
