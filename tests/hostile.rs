//! Bad input and floods over real sockets, against the `eeaturn serve` binary (so that its
//! memory is its own): malformed messages, attribute games, integrity and FINGERPRINT
//! mismatches, every REST username form, channel numbers, LIFETIME extremes, a family
//! mismatch, and an unauthenticated flood from one source that must not be amplified while a
//! well-behaved client keeps being served and the relay's RSS stays bounded.
//!
//! Covered elsewhere and not repeated here: every special-purpose and IPv4-in-IPv6 peer form
//! on CreatePermission, ChannelBind and Send (`tests/residency.rs`,
//! `special_purpose_peers_are_refused_on_create_permission_channel_bind_and_send`, and the
//! relay-host rule after it); stale and forged nonces (core `relay/tests/auth.rs`) and a nonce
//! from another address (`tests/turn.rs`); 440 on an IPv4-only relay (core
//! `relay/tests/allocate.rs`); refused clients (`tests/residency.rs`); the API's hostile
//! requests (`tests/api.rs`).
//!
//! Every wait is bounded: a datagram that must not be answered is followed by a Binding
//! request, whose answer must come first.

mod common;

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{TIMEOUT, TurnClient, issue_credential, wall_now};
use eeaturn::credentials::Credential;
use eeaturn::stun::attr::{self, Family};
use eeaturn::stun::integrity::long_term_key_md5;
use eeaturn::stun::{Class, Message, MessageBuilder, MessageType, Method, TransactionId};
use tokio::net::UdpSocket;
use tokio::time::timeout;

const BIN: &str = env!("CARGO_BIN_EXE_eeaturn");

/// The budget of unauthenticated answers in this test's relay: 4096 bytes at once, 512 a
/// second after that, per source address.
const BURST: usize = 4096;
const RATE: usize = 512;

/// The relay's resident memory must stay under this through the whole test (it starts at
/// about 30 MB with the test world's databases; the flood must not grow it).
const RSS_LIMIT_KB: u64 = 96 * 1024;

#[tokio::test]
async fn hostile_input_is_answered_as_the_rfcs_say_and_floods_are_not_amplified() {
    let relay = Relay::start();
    let server = relay.addr;

    malformed_datagrams_get_no_answer(server).await;
    attribute_games(server).await;
    integrity_and_fingerprint_mismatches(server).await;
    rest_username_forms(server).await;
    channel_numbers_lifetimes_and_families(server).await;
    let rss_before = relay.rss_kb();
    flood_is_not_amplified_and_a_good_client_is_served(server).await;
    let rss_after = relay.rss_kb();
    assert!(
        rss_after < RSS_LIMIT_KB,
        "RSS {rss_after} kB after the flood (before: {rss_before} kB), limit {RSS_LIMIT_KB} kB"
    );
    relay.stop();
}

// --- malformed datagrams --------------------------------------------------------------------

async fn malformed_datagrams_get_no_answer(server: SocketAddr) {
    let good = binding(tid(1), &[]);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("a 10-byte header", good[..10].to_vec()),
        ("top bits 10", {
            let mut m = good.clone();
            m[0] |= 0x80;
            m
        }),
        ("top bits 11", {
            let mut m = good.clone();
            m[0] |= 0xC0;
            m
        }),
        ("wrong magic cookie", {
            let mut m = good.clone();
            m[4] ^= 0xFF;
            m
        }),
        ("length not a multiple of 4", with_length(&good, 2)),
        ("length beyond the datagram", with_length(&good, 400)),
        ("length short of the datagram", {
            let mut m = good.clone();
            m.extend_from_slice(&[0; 8]);
            m
        }),
        ("attribute longer than the message", {
            // SOFTWARE claiming 64 bytes in a message of 8.
            let mut m = binding(tid(2), &[]);
            m.truncate(20);
            m.extend_from_slice(&[0x80, 0x22, 0x00, 0x40, b'a', b'b', b'c', b'd']);
            with_length(&m, 8)
        }),
        ("a success response from a client", {
            let mut m = good.clone();
            m[0] = 0x01;
            m[1] = 0x01;
            m
        }),
        ("a Data indication from a client", {
            let typ = MessageType::new(Method::DATA, Class::Indication);
            MessageBuilder::new(typ, tid(3)).finish()
        }),
        (
            "ChannelData shorter than its header",
            vec![0x40, 0x00, 0x00],
        ),
        (
            "ChannelData longer than the datagram",
            vec![0x40, 0x00, 0x00, 0x10, 1, 2],
        ),
        (
            "ChannelData without an allocation",
            vec![0x40, 0x00, 0x00, 0x02, 1, 2, 0, 0],
        ),
        ("a Send indication without an allocation", {
            let typ = MessageType::new(Method::SEND, Class::Indication);
            let mut b = MessageBuilder::new(typ, tid(4));
            b.add_xor_address(
                attr::XOR_PEER_ADDRESS,
                "127.0.1.9:5000".parse().expect("addr"),
            );
            b.add_raw(attr::DATA, b"x");
            b.finish()
        }),
    ];
    cases.push(("FINGERPRINT not last", {
        let mut m = binding(tid(5), &[]);
        m.extend_from_slice(&[0x80, 0x22, 0, 4, b'a', b'b', b'c', b'd']);
        let len = m.len() - 20;
        with_length(&m, len)
    }));
    let mut probe = Probe::bind("127.0.1.10", server).await;
    for (what, bytes) in cases {
        assert_eq!(probe.ask(&bytes).await, None, "{what}: no answer expected");
    }
}

// --- attributes -----------------------------------------------------------------------------

async fn attribute_games(server: SocketAddr) {
    let mut probe = Probe::bind("127.0.1.11", server).await;

    // An unknown comprehension-required attribute: 420 listing it (RFC 8489 §7.3.1).
    let r = probe
        .ask(&binding(tid(10), &[(0x7F01, b"zzzz"), (0x0033, b"yyyy")]))
        .await
        .expect("an answer");
    let m = Message::parse(&r).expect("a STUN answer");
    assert_eq!(error_code(&m), Some(420));
    assert_eq!(
        m.get(attr::UNKNOWN_ATTRIBUTES),
        Some(&[0x7F, 0x01, 0x00, 0x33][..]),
        "both unknown attributes are listed"
    );

    // An unknown comprehension-optional attribute is ignored.
    let r = probe
        .ask(&binding(tid(11), &[(0xC0FE, b"ignored")]))
        .await
        .expect("an answer");
    assert_eq!(
        Message::parse(&r).expect("STUN").class(),
        Class::Success,
        "comprehension-optional attributes are ignored"
    );

    // Padding bytes are ignored whatever they hold (RFC 8489 §14).
    let mut m = binding(tid(12), &[(attr::SOFTWARE, b"abcde")]);
    let pad = 20 + 4 + 5;
    m[pad..pad + 3].copy_from_slice(&[0xAA, 0xBB, 0xCC]);
    refresh_fingerprint(&mut m);
    let r = probe.ask(&m).await.expect("an answer");
    assert_eq!(Message::parse(&r).expect("STUN").class(), Class::Success);

    // An unknown method: 400.
    let typ = MessageType::from_u16(0x000F);
    assert_eq!(typ.class, Class::Request);
    let r = probe
        .ask(&MessageBuilder::new(typ, tid(13)).finish())
        .await
        .expect("an answer");
    assert_eq!(error_code(&Message::parse(&r).expect("STUN")), Some(400));

    // Duplicate attributes: the first counts (RFC 8489 §5). `allocate_with` puts
    // REQUESTED-TRANSPORT UDP first; a second one asking for TCP is ignored.
    let mut c = client("127.0.1.12", server, "dup").await;
    let a = c
        .allocate_with(&|b: &mut MessageBuilder| {
            b.add_raw(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
        })
        .await;
    assert!(a.is_ok(), "{:?}", a.err());
}

// --- integrity ------------------------------------------------------------------------------

async fn integrity_and_fingerprint_mismatches(server: SocketAddr) {
    let mut probe = Probe::bind("127.0.1.13", server).await;
    let cred = issue_credential("mallory", Duration::from_secs(600), wall_now());
    let nonce = probe.nonce().await;
    let key = long_term_key_md5(&cred.username, common::REALM, &cred.password);
    let signed = |tid_byte: u8, key: &[u8]| {
        let typ = MessageType::new(Method::ALLOCATE, Class::Request);
        let mut b = MessageBuilder::new(typ, tid(tid_byte));
        b.add_raw(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_UDP, 0, 0, 0]);
        b.add_raw(attr::USERNAME, cred.username.as_bytes());
        b.add_raw(attr::REALM, common::REALM.as_bytes());
        b.add_raw(attr::NONCE, nonce.as_bytes());
        b.add_message_integrity(key);
        b.add_fingerprint();
        b.finish()
    };

    // A wrong MESSAGE-INTEGRITY: 401 (RFC 8489 §9.2.4), and not a relay.
    let r = probe
        .ask(&signed(20, b"not the key"))
        .await
        .expect("an answer");
    assert_eq!(error_code(&Message::parse(&r).expect("STUN")), Some(401));

    // A message whose bytes changed after signing (FINGERPRINT recomputed): 401.
    let mut m = signed(21, &key);
    let at = 20 + 4; // inside REQUESTED-TRANSPORT's reserved bytes
    m[at + 2] ^= 0x01;
    refresh_fingerprint(&mut m);
    let r = probe.ask(&m).await.expect("an answer");
    assert_eq!(error_code(&Message::parse(&r).expect("STUN")), Some(401));

    // A wrong FINGERPRINT: not STUN at all, dropped (RFC 8489 §7.3).
    let mut m = signed(22, &key);
    let last = m.len() - 1;
    m[last] ^= 0xFF;
    assert_eq!(probe.ask(&m).await, None, "a bad FINGERPRINT is dropped");

    // The intact message allocates: the failures above were the mismatches. (Its success
    // waits for the relay socket, so it may come after a sentinel: wait for it by id.)
    let r = probe.request(&signed(23, &key)).await;
    assert_eq!(Message::parse(&r).expect("STUN").class(), Class::Success);
}

// --- REST usernames -------------------------------------------------------------------------

async fn rest_username_forms(server: SocketAddr) {
    let now = wall_now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let good = issue_credential("form", Duration::from_secs(600), wall_now());
    let sign = |username: &str| {
        let c = issue_credential("x", Duration::from_secs(600), wall_now());
        // The password of `username` under the relay's secret, whatever its form.
        Credential {
            username: username.to_owned(),
            password: rest_password(username),
            ttl: c.ttl,
        }
    };
    let cases: Vec<(&str, Credential, Option<u16>)> = vec![
        ("a valid username", good.clone(), None),
        ("expired", sign(&format!("{}:form", now - 10)), Some(401)),
        (
            "valid for longer than the relay accepts",
            sign(&format!("{}:form", now + 10 * 86_400)),
            Some(401),
        ),
        ("a non-numeric expiry", sign("soon:form"), Some(401)),
        ("an empty expiry", sign(":form"), Some(401)),
        (
            "a negative expiry",
            sign(&format!("-{}:form", now + 60)),
            Some(401),
        ),
        (
            "an expiry beyond u64",
            sign("99999999999999999999999:form"),
            Some(401),
        ),
        ("an empty user part", sign(&format!("{}:", now + 600)), None),
        ("a bare timestamp", sign(&format!("{}", now + 600)), None),
        (
            "a wrong HMAC",
            Credential {
                password: "AAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
                ..good.clone()
            },
            Some(401),
        ),
        (
            "another user's password",
            Credential {
                password: issue_credential("other", Duration::from_secs(600), wall_now()).password,
                ..good.clone()
            },
            Some(401),
        ),
    ];
    for (i, (what, cred, expected)) in cases.into_iter().enumerate() {
        let ip = format!("127.0.1.{}", 30 + i);
        let mut c = TurnClient::bind(&ip, server, cred).await;
        let got = c.allocate().await.err().map(|e| e.code);
        assert_eq!(got, expected, "{what}");
    }
}

// --- channels, lifetimes, families ----------------------------------------------------------

async fn channel_numbers_lifetimes_and_families(server: SocketAddr) {
    let peer: SocketAddr = "127.0.1.99:5000".parse().expect("addr");
    let mut c = client("127.0.1.60", server, "chan").await;
    let a = c.allocate().await.expect("allocated");
    assert_eq!(a.relayed.len(), 1, "IPv4 only unless asked");

    // Channel numbers outside 0x4000-0x7FFF: 400. RFC 8656 §12 allots 0x4000-0x4FFF; the
    // relay accepts RFC 5766's 0x4000-0x7FFF on purpose, for older clients (see
    // `stun::ChannelNumber`); nothing in that range can be mistaken for STUN or DTLS.
    for n in [0x0000, 0x3FFF, 0x8000, 0xBFFF, 0xFFFF] {
        let e = c.channel_bind(n, peer).await.err().map(|e| e.code);
        assert_eq!(e, Some(400), "channel {n:#06x}");
    }
    for (i, n) in [0x4000u16, 0x4FFF, 0x7FFF].into_iter().enumerate() {
        let to = SocketAddr::new(peer.ip(), 5001 + i as u16);
        c.channel_bind(n, to)
            .await
            .unwrap_or_else(|e| panic!("channel {n:#06x}: {e:?}"));
    }
    // A family mismatch: an IPv6 peer on an IPv4 allocation is 443 (RFC 8656 §9.1).
    let v6: SocketAddr = "[::1]:5000".parse().expect("addr");
    let e = c.create_permission(&[v6]).await.err().map(|e| e.code);
    assert_eq!(e, Some(443));
    // REQUESTED-ADDRESS-FAMILY with an unknown family: 440.
    let mut d = client("127.0.1.61", server, "fam").await;
    let e = d
        .allocate_with(&|b: &mut MessageBuilder| {
            b.add_raw(attr::REQUESTED_ADDRESS_FAMILY, &[0x03, 0, 0, 0]);
        })
        .await
        .err()
        .map(|e| e.code);
    assert!(matches!(e, Some(400 | 440)), "family 3: {e:?}");
    // ... and IPv6 requested: granted (the test relay has ::1).
    let mut v6c = client("127.0.1.62", server, "fam6").await;
    let a6 = v6c
        .allocate_family(Family::V6)
        .await
        .expect("an IPv6 relay");
    assert!(a6.relayed().is_ipv6());

    // LIFETIME huge: capped at limits.max_lifetime (1 h by default).
    assert_eq!(c.refresh(u32::MAX).await.expect("refreshed"), 3600);
    // LIFETIME 0 on Allocate: the default lifetime (10 min), not an instant expiry.
    let mut z = client("127.0.1.63", server, "zero").await;
    let a = z
        .allocate_with(&|b: &mut MessageBuilder| {
            b.add_u32(attr::LIFETIME, 0);
        })
        .await
        .expect("allocated");
    assert_eq!(a.lifetime, 600);
    // LIFETIME 0 on Refresh deletes; a second Refresh finds nothing (437).
    assert_eq!(z.refresh(0).await.expect("deleted"), 0);
    assert_eq!(z.refresh(600).await.err().map(|e| e.code), Some(437));
}

// --- the flood ------------------------------------------------------------------------------

async fn flood_is_not_amplified_and_a_good_client_is_served(server: SocketAddr) {
    const REQUESTS: usize = 3000;
    let attacker = UdpSocket::bind("127.0.1.200:0").await.expect("binding");
    attacker.connect(server).await.expect("connecting");
    let attacker = std::sync::Arc::new(attacker);

    // Count every byte that comes back to the attacker's address until it has been quiet
    // for a second after the flood.
    let rx = attacker.clone();
    let counted = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        let (mut bytes, mut answers) = (0usize, 0usize);
        while let Ok(Ok(n)) = timeout(Duration::from_secs(1), rx.recv(&mut buf)).await {
            bytes += n;
            answers += 1;
        }
        (bytes, answers)
    });
    // A well-behaved client allocates and refreshes while the flood runs.
    let good = tokio::spawn(async move {
        let mut c = client("127.0.1.201", server, "good").await;
        c.allocate()
            .await
            .expect("the good client allocates during the flood");
        for _ in 0..20 {
            c.refresh(600).await.expect("refreshed during the flood");
        }
    });

    let started = tokio::time::Instant::now();
    let mut sent = 0usize;
    for i in 0..REQUESTS {
        let typ = MessageType::new(Method::ALLOCATE, Class::Request);
        let mut b = MessageBuilder::new(typ, tid_n(i));
        b.add_raw(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_UDP, 0, 0, 0]);
        let m = b.finish();
        sent += attacker.send(&m).await.expect("sending");
        if i % 200 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let elapsed = started.elapsed();
    timeout(Duration::from_secs(60), good)
        .await
        .expect("the good client finished in time")
        .expect("the good client's task");
    let (received, answers) = counted.await.expect("the counting task");
    let elapsed_secs = elapsed.as_secs_f64() + 1.0;
    // Everything an unauthenticated source gets: the burst, plus the rate over the time it
    // sent and waited, plus one answer (the last one that fitted).
    let bound = BURST as f64 + RATE as f64 * elapsed_secs + 200.0;
    assert!(
        (received as f64) <= bound,
        "{received} bytes in {answers} answers to {REQUESTS} requests over {elapsed:?}, bound {bound}"
    );
    assert!(answers > 0, "the first challenges were answered");
    let beyond = received.saturating_sub(BURST);
    assert!(
        beyond < sent,
        "beyond the burst, bytes out ({beyond}) stay below bytes in ({sent})"
    );
    assert!(
        received < sent,
        "bytes out ({received}) below bytes in ({sent}) over the whole flood"
    );
}

// --- helpers --------------------------------------------------------------------------------

/// A raw UDP client that tells "no answer" from an answer without waiting for a timeout.
struct Probe {
    sock: UdpSocket,
    next: u32,
}

impl Probe {
    async fn bind(ip: &str, server: SocketAddr) -> Self {
        let sock = UdpSocket::bind((ip, 0)).await.expect("binding the probe");
        sock.connect(server).await.expect("connecting the probe");
        Self { sock, next: 0 }
    }

    /// Sends `bytes`, then a Binding request; returns the answer to `bytes` if one came
    /// before the Binding's (one worker answers a 5-tuple in order).
    async fn ask(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        self.next += 1;
        let sentinel = tid_n(0xABC0_0000 + self.next as usize);
        if !bytes.is_empty() {
            self.sock.send(bytes).await.expect("sending");
        }
        self.sock
            .send(&binding(sentinel, &[]))
            .await
            .expect("sending");
        let mut first = None;
        let mut buf = vec![0u8; 65_536];
        loop {
            let n = timeout(TIMEOUT, self.sock.recv(&mut buf))
                .await
                .expect("the sentinel Binding is answered in time")
                .expect("receiving");
            let d = buf[..n].to_vec();
            if Message::parse(&d).is_ok_and(|m| m.transaction_id() == sentinel) {
                return first;
            }
            assert!(first.is_none(), "two answers to one datagram");
            first = Some(d);
        }
    }

    /// Sends a request and waits for the answer with its transaction id.
    async fn request(&mut self, bytes: &[u8]) -> Vec<u8> {
        let tid = Message::parse(bytes).expect("a request").transaction_id();
        self.sock.send(bytes).await.expect("sending");
        let mut buf = vec![0u8; 65_536];
        loop {
            let n = timeout(TIMEOUT, self.sock.recv(&mut buf))
                .await
                .expect("an answer in time")
                .expect("receiving");
            if Message::parse(&buf[..n]).is_ok_and(|m| m.transaction_id() == tid) {
                return buf[..n].to_vec();
            }
        }
    }

    /// Returns a fresh nonce from a 401.
    async fn nonce(&mut self) -> String {
        let typ = MessageType::new(Method::ALLOCATE, Class::Request);
        let mut b = MessageBuilder::new(typ, tid(99));
        b.add_raw(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_UDP, 0, 0, 0]);
        let r = self.ask(&b.finish()).await.expect("a challenge");
        let m = Message::parse(&r).expect("STUN");
        assert_eq!(error_code(&m), Some(401));
        String::from_utf8(m.get(attr::NONCE).expect("NONCE").to_vec()).expect("UTF-8")
    }
}

/// The `eeaturn serve` binary on the test world, UDP on 127.0.0.1, with a small answer budget.
struct Relay {
    child: Option<Child>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Relay {
    fn start() -> Self {
        let limits =
            format!("[limits]\nunauthenticated_rate = {RATE}\nunauthenticated_burst = {BURST}\n");
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("secret"), format!("{}\n", common::SECRET))
            .expect("writing the secret");
        let config = dir.path().join("eeaturn.toml");
        let toml =
            common::config_toml_listening(r#""udp://127.0.0.1:0""#, 25_000..=25_199, &limits);
        std::fs::write(&config, toml).expect("writing the config");
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning eeaturn serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let addr = wait_for_listener(&lines, &config);
        // Keep draining stderr so the relay never blocks on a full pipe.
        std::thread::spawn(move || while lines.recv().is_ok() {});
        Self {
            child: Some(child),
            addr,
            _dir: dir,
        }
    }

    /// The relay's resident set size from /proc/<pid>/status.
    fn rss_kb(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("reading the relay's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// Stops the relay with SIGTERM and waits (at most 30 s) for it to exit.
    fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the relay stops within 30 s of SIGTERM")
            .expect("waiting for the relay");
        assert!(status.success(), "the relay exits cleanly: {status}");
    }
}

impl Drop for Relay {
    /// Kills a relay left running by a failed assertion.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits (at most 30 s) for the "listening" line and returns the IPv4 UDP listener.
fn wait_for_listener(lines: &mpsc::Receiver<String>, config: &Path) -> SocketAddr {
    const PREFIX: &str = "udp://127.0.0.1:";
    let mut seen = Vec::new();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "{}: no listening line; stderr:\n{}",
                    config.display(),
                    seen.join("\n")
                )
            });
        if line.contains("listening")
            && let Some(at) = line.find(PREFIX)
        {
            let port: String = line[at + PREFIX.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            return SocketAddr::from(([127, 0, 0, 1], port.parse().expect("a port")));
        }
        seen.push(line);
    }
}

async fn client(ip: &str, server: SocketAddr, user: &str) -> TurnClient {
    TurnClient::bind(
        ip,
        server,
        issue_credential(user, Duration::from_secs(600), wall_now()),
    )
    .await
}

/// A Binding request with `attrs` and FINGERPRINT.
fn binding(tid: TransactionId, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut b = MessageBuilder::new(MessageType::new(Method::BINDING, Class::Request), tid);
    for (t, v) in attrs {
        b.add_raw(*t, v);
    }
    b.add_fingerprint();
    b.finish()
}

fn with_length(m: &[u8], len: usize) -> Vec<u8> {
    let mut m = m.to_vec();
    let len = u16::try_from(len).expect("a small length");
    m[2..4].copy_from_slice(&len.to_be_bytes());
    m
}

fn refresh_fingerprint(m: &mut [u8]) {
    let pos = m.len() - 8;
    let crc = eeaturn::stun::integrity::fingerprint(m, pos);
    m[pos + 4..].copy_from_slice(&crc.to_be_bytes());
}

fn error_code(m: &Message<'_>) -> Option<u16> {
    m.get(attr::ERROR_CODE)
        .and_then(|v| attr::decode_error_code(v).ok())
        .map(|(code, _)| code)
}

fn rest_password(username: &str) -> String {
    use base64::Engine as _;
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        common::SECRET.as_bytes(),
    );
    base64::engine::general_purpose::STANDARD
        .encode(ring::hmac::sign(&key, username.as_bytes()).as_ref())
}

fn tid(n: u8) -> TransactionId {
    TransactionId([n; 12])
}

fn tid_n(n: usize) -> TransactionId {
    let mut t = [0x5Au8; 12];
    t[4..12].copy_from_slice(&(n as u64).to_be_bytes());
    TransactionId(t)
}
