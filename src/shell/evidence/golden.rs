//! Golden evidence: a scripted session of the core [`Server`] (seeded RNG, hand-advanced
//! [`Now`], the test world's geo databases) whose events go through the writer's own
//! event → record mapping ([`records`]) into a [`Log`] with a fixed clock, the evidence
//! crate's committed test signing key and fixed pseudonym day keys. The segment, checkpoint
//! and manifest files must equal `tests/golden/evidence/` byte for byte: the whole path from
//! a relay decision to a signed file is deterministic. `EEATURN_BLESS=1` rewrites them.
//!
//! Also the size bound of the issue: an `allocation-ended` record of a typical allocation
//! with two peers stays under 1 KiB.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eeaturn_evidence::Error;
use eeaturn_evidence::digest::Digest;
use eeaturn_evidence::log::{Log, Options};
use eeaturn_evidence::pseudonym::KeySource;
use eeaturn_evidence::record::{Body, Record};
use eeaturn_evidence::sign::Signer;
use rand::SeedableRng as _;
use rand::rngs::SmallRng;

use super::records::{self, Live};
use crate::client::{self, LongTermAuth, PasswordAlgorithm};
use crate::config::Config;
use crate::credentials::Secrets;
use crate::relay::{
    BindResult, Command, Event, FiveTuple, Now, PEER_HEADROOM, PEER_TAILROOM, Server, Transport,
};
use crate::stun::{Message, MessageBuilder, Method, TransactionId, attr};

/// 2026-12-06T10:00:00Z.
const START: u64 = 1_796_515_200 + 10 * 3600;
const SECRET: &str = "golden-session-secret-0123456789";
const LISTEN: &str = "127.0.0.1:3478";
const PEER_FR: &str = "127.0.2.1:9000";
const PEER_NO: &str = "127.0.3.1:9000";
const PEER_US: &str = "127.0.5.1:9000";

#[test]
fn a_scripted_relay_session_gives_byte_identical_evidence() {
    let dir = tempfile::tempdir().unwrap();
    session(dir.path());
    let produced = files(&dir.path().join("segments"));
    let golden = golden_dir();
    if std::env::var_os("EEATURN_BLESS").is_some_and(|v| v == "1") {
        let _ = std::fs::remove_dir_all(&golden);
        std::fs::create_dir_all(&golden).unwrap();
        for (name, bytes) in &produced {
            std::fs::write(golden.join(name), bytes).unwrap();
        }
        return;
    }
    let expected = files(&golden);
    let names = |m: &[(String, Vec<u8>)]| m.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&produced),
        names(&expected),
        "the files of {} (EEATURN_BLESS=1 regenerates them after an intended change)",
        golden.display()
    );
    for ((name, got), (_, want)) in produced.iter().zip(&expected) {
        assert!(
            got == want,
            "{name} differs from {} (EEATURN_BLESS=1 regenerates it after an intended change):\n\
             got:\n{}",
            golden.display(),
            String::from_utf8_lossy(got)
        );
    }
}

#[test]
fn an_allocation_ended_record_with_two_peers_stays_under_one_kib() {
    let dir = tempfile::tempdir().unwrap();
    session(dir.path());
    let lines = files(&dir.path().join("segments"))
        .into_iter()
        .filter(|(n, _)| n.ends_with(".jsonl"))
        .flat_map(|(_, bytes)| {
            String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>();
    let ended = lines
        .iter()
        .find(|l| l.contains("\"kind\":\"allocation-ended\""))
        .unwrap();
    let mut record = Record::parse(ended.as_bytes()).unwrap();
    let Body::AllocationEnded(body) = &mut record.body else {
        panic!("{ended}")
    };
    assert_eq!(body.peers.len(), 2, "{ended}");
    // A typical call: an hour of audio and video, both ways, through two peers (two ICE
    // candidates of the other side). Then the worst case: every counter at its maximum.
    let typical = [(90_000, 110_000_000), (90_000, 95_000_000)];
    for (peer, (packets, bytes)) in body.peers.iter_mut().zip(typical) {
        (peer.packets_to_peer, peer.bytes_to_peer) = (packets, bytes);
        (peer.packets_to_client, peer.bytes_to_client) = (packets, bytes);
    }
    body.totals.packets_to_peer = 180_000;
    body.totals.bytes_to_peer = 205_000_000;
    body.totals.packets_to_client = 180_000;
    body.totals.bytes_to_client = 205_000_000;
    body.duration_ms = 3_600_000;
    let typical = serde_json::to_vec(&record).unwrap().len() + 1;
    let Body::AllocationEnded(body) = &mut record.body else {
        unreachable!()
    };
    for p in &mut body.peers {
        p.packets_to_peer = u64::MAX;
        p.bytes_to_peer = u64::MAX;
        p.packets_to_client = u64::MAX;
        p.bytes_to_client = u64::MAX;
    }
    body.totals.packets_to_peer = u64::MAX;
    body.totals.bytes_to_peer = u64::MAX;
    body.totals.packets_to_client = u64::MAX;
    body.totals.bytes_to_client = u64::MAX;
    body.duration_ms = u64::MAX;
    body.reason = "evidence-unavailable".into(); // the longest reason
    let worst = serde_json::to_vec(&record).unwrap().len() + 1;
    let session = ended.len() + 1;
    eprintln!(
        "allocation-ended with two peers: {session} bytes as scripted, {typical} typical (one \
         hour), {worst} at worst (every counter at u64::MAX)"
    );
    assert!(typical < 1024, "{typical} bytes");
    assert!(worst < 1024, "{worst} bytes");
}

/// Runs the scripted session and writes its evidence into `dir`.
fn session(dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = config_text(root);
    let config = Config::parse(&text, root).unwrap();
    let mut clock = Clock::new();
    let policy = crate::shell::geo::load_policy(&config, clock.now.wall).unwrap();
    let secrets = Secrets::parse(SECRET).unwrap();
    let mut s = Script {
        server: Server::new(
            config.server_config(),
            secrets.clone(),
            policy.clone(),
            [0x42; 32],
            SmallRng::seed_from_u64(13),
        ),
        events: Vec::new(),
        tids: 0,
    };
    let signer =
        Signer::from_pkcs8_file(&root.join("evidence/tests/keys/test-signing-key.pem")).unwrap();
    let opts = Options::new(
        "golden-node",
        "Frankfurt",
        "0.0.0-golden",
        // The digest of the text as written, with the checkout's path left out: the golden
        // files must not depend on where the repository is cloned.
        Digest::of(config_text(Path::new("<root>")).as_bytes()),
    );
    let (mut log, _) =
        Log::open_with_keys(dir, opts, signer, Box::new(FixedKeys(0)), clock.now.wall).unwrap();
    log.append(records::policy_in_force(&policy), clock.now.wall)
        .unwrap();

    // A German client relays to a French and a Norwegian peer, is refused an American one.
    let mut de = s.client("127.0.1.1:40001", "alice", &secrets, clock.now.wall);
    let relayed = s.allocate(&mut de, clock.now);
    clock.advance(Duration::from_millis(250));
    s.call(&mut de, permission(&[PEER_FR, PEER_NO]), clock.now);
    s.call(&mut de, channel_bind(0x4000, PEER_FR), clock.now);
    clock.advance(Duration::from_millis(250));
    for payload in [&b"hello"[..], b"media frame"] {
        s.client_data(&de, &client::channel_data(0x4000, payload), clock.now);
    }
    let tid = s.tid();
    s.client_data(
        &de,
        &client::send_indication(tid, addr(PEER_NO), b"to norway"),
        clock.now,
    );
    s.peer_data(relayed, PEER_FR, b"pong", clock.now);
    s.peer_data(relayed, PEER_NO, b"hej", clock.now);
    s.peer_data(relayed, PEER_NO, b"hej igjen", clock.now);
    clock.advance(Duration::from_secs(1));
    s.call(&mut de, permission(&[PEER_US]), clock.now);
    // An American client cannot allocate: refused before it authenticates (it never gets a
    // nonce), so the record names no user.
    let mut us = s.client("127.0.5.2:40002", "bob", &secrets, clock.now.wall);
    s.call(&mut us, allocate(), clock.now);
    clock.advance(Duration::from_secs(30));
    s.call(&mut de, refresh(0), clock.now);

    let mut live = Live::default();
    for ev in std::mem::take(&mut s.events) {
        if let Some((body, at)) = records::record(&ev, &mut live, log.pseudonyms()).unwrap() {
            log.append(body, at).unwrap();
        }
    }
    log.flush(true).unwrap();
    clock.advance(Duration::from_secs(1));
    log.checkpoint(clock.now.wall).unwrap();
    clock.advance(Duration::from_secs(1));
    log.close(clock.now.wall, "shutdown").unwrap();
}

/// The test world (geo/testdata), relaying from 127.0.0.1 ports 50000-50009.
fn config_text(root: &Path) -> String {
    format!(
        r#"[server]
realm = "eeaturn.test"
listen = ["udp://{LISTEN}"]

[auth]
secret_file = "secret"

[relay]
addresses = ["127.0.0.1"]
port_range = "50000-50009"

[geo]
country_db = "{root}/geo/testdata/world-country.mmdb"
asn_db = "{root}/geo/testdata/world-asn.mmdb"
max_age = "36500d"

[peers]
dangerous_allow = ["127.0.0.0/8"]
"#,
        root = root.display()
    )
}

/// Pseudonym day keys 1, 2, ... (32 equal bytes each).
struct FixedKeys(u8);

impl KeySource for FixedKeys {
    fn fresh_key(&mut self) -> Result<[u8; 32], Error> {
        self.0 += 1;
        Ok([self.0; 32])
    }
}

/// Both clocks, advanced by hand.
struct Clock {
    now: Now,
}

impl Clock {
    #[expect(
        clippy::disallowed_methods,
        reason = "an arbitrary origin for the test's monotonic clock"
    )]
    fn new() -> Self {
        Self {
            now: Now {
                mono: Instant::now(),
                wall: UNIX_EPOCH + Duration::from_secs(START),
            },
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now.mono += d;
        self.now.wall += d;
    }
}

/// A client of the script: its 5-tuple and long-term credential state.
struct Client {
    five_tuple: FiveTuple,
    auth: LongTermAuth,
}

/// The server and what it said.
struct Script {
    server: Server<SmallRng>,
    events: Vec<Event>,
    tids: u64,
}

/// A request's method and the attributes before the credentials.
struct Req {
    method: Method,
    add: Box<dyn Fn(&mut MessageBuilder)>,
}

impl Script {
    fn client(&self, from: &str, user: &str, secrets: &Secrets, now: SystemTime) -> Client {
        let cred = secrets
            .issue(
                user,
                Duration::from_secs(3600),
                Duration::from_secs(86_400),
                now,
            )
            .unwrap();
        Client {
            five_tuple: FiveTuple {
                transport: Transport::Udp,
                client: addr(from),
                server: addr(LISTEN),
            },
            auth: LongTermAuth::new(&cred.username, &cred.password, PasswordAlgorithm::Md5),
        }
    }

    fn tid(&mut self) -> TransactionId {
        self.tids += 1;
        let mut t = [0u8; 12];
        t[..4].copy_from_slice(b"gold");
        t[4..].copy_from_slice(&self.tids.to_be_bytes());
        TransactionId(t)
    }

    /// Allocates (answering the 401 challenge) and returns the relayed address.
    fn allocate(&mut self, c: &mut Client, now: Now) -> SocketAddr {
        let response = self.call(c, allocate(), now);
        let m = Message::parse(&response).unwrap();
        client::xor_addresses(&m, attr::XOR_RELAYED_ADDRESS)[0]
    }

    /// Sends a signed request (after the challenge, once) and returns the final response.
    fn call(&mut self, c: &mut Client, req: Req, now: Now) -> Vec<u8> {
        loop {
            let tid = self.tid();
            let mut b = client::request(req.method, tid);
            (req.add)(&mut b);
            c.auth.sign(&mut b);
            let bytes = b.finish();
            let response = self.request(c, &bytes, now);
            let m = Message::parse(&response).unwrap();
            if !c.auth.take_challenge(&m) {
                return response;
            }
        }
    }

    fn request(&mut self, c: &Client, bytes: &[u8], now: Now) -> Vec<u8> {
        assert!(
            self.server
                .handle_client_input(c.five_tuple, bytes, now)
                .is_none()
        );
        let mut response = None;
        while let Some(cmd) = self.server.poll_command() {
            match cmd {
                Command::BindRelay { token, addrs, .. } => {
                    self.server
                        .handle_relay_bound(token, &addrs, BindResult::Bound, now);
                }
                Command::SendToClient { bytes, .. } => response = Some(bytes),
                Command::CloseRelay { .. } | Command::ReleaseReserved { .. } => {}
                Command::InstallKernelPath(_) | Command::RemoveKernelPath(_) => {
                    unreachable!("kernel paths are announced only after with_kernel_paths")
                }
            }
        }
        self.drain_events();
        response.expect("every request is answered")
    }

    fn client_data(&mut self, c: &Client, bytes: &[u8], now: Now) {
        assert!(
            self.server
                .handle_client_input(c.five_tuple, bytes, now)
                .is_some(),
            "relayed"
        );
        self.drain_events();
    }

    fn peer_data(&mut self, relayed: SocketAddr, peer: &str, payload: &[u8], now: Now) {
        let mut buf = vec![0u8; PEER_HEADROOM + payload.len() + PEER_TAILROOM];
        buf[PEER_HEADROOM..PEER_HEADROOM + payload.len()].copy_from_slice(payload);
        let range = PEER_HEADROOM..PEER_HEADROOM + payload.len();
        assert!(
            self.server
                .handle_peer_input(relayed, addr(peer), &mut buf, range, now)
                .is_some(),
            "relayed"
        );
        self.drain_events();
    }

    fn drain_events(&mut self) {
        while let Some(e) = self.server.poll_event() {
            self.events.push(e);
        }
    }
}

fn allocate() -> Req {
    Req {
        method: Method::ALLOCATE,
        add: Box::new(client::add_requested_transport_udp),
    }
}

fn permission(peers: &'static [&'static str]) -> Req {
    Req {
        method: Method::CREATE_PERMISSION,
        add: Box::new(move |b| {
            for p in peers {
                b.add_xor_address(attr::XOR_PEER_ADDRESS, addr(p));
            }
        }),
    }
}

fn channel_bind(channel: u16, peer: &'static str) -> Req {
    Req {
        method: Method::CHANNEL_BIND,
        add: Box::new(move |b| client::add_channel_bind(b, channel, addr(peer))),
    }
}

fn refresh(lifetime: u32) -> Req {
    Req {
        method: Method::REFRESH,
        add: Box::new(move |b| b.add_raw(attr::LIFETIME, &lifetime.to_be_bytes())),
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The golden files' directory.
fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/evidence")
}

/// `(name, bytes)` of every file in `dir`, sorted by name (none if it does not exist).
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    out
}
