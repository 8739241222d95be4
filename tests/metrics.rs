//! The Prometheus listener of a running relay: every sample has HELP and TYPE, the key series
//! exist, `docs/metrics.md` and a scrape list the same metrics (checked both ways after a run
//! that exercises every part), an exposed listener wants its bearer token, an idle-connection
//! flood does not keep scrapes out, and nothing personal is in the labels.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use eeaturn::client::LongTermAuth;
use eeaturn::config::Config;
use eeaturn::shell::Running;
use eeaturn::stun::{Class, Message, Method, TransactionId, attr};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use common::{
    PasswordAlgorithm, Relayed, TIMEOUT, TurnClient, issue_credential, spawn_echo_peer,
    start_server, wall_now,
};

/// First relay port of this file's relays (apart from the other test files' ranges).
const RELAY_PORT_MIN: u16 = 28_000;
/// Last relay port of this file's relays.
const RELAY_PORT_MAX: u16 = 28_499;
/// The API key of the both-ways test (its SHA-256 is in the config).
const API_KEY: &str = "eeaturn-metrics-test-key-6b2d90e1c4a7";
/// The bearer token of the exposed listener.
const TOKEN: &str = "metrics-test-token-0f4c2a9e7d1b3856";

async fn get(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect to the metrics listener");
    s.write_all(request.as_bytes()).await.expect("send");
    let mut out = String::new();
    tokio::time::timeout(TIMEOUT, s.read_to_string(&mut out))
        .await
        .expect("an answer within the timeout")
        .expect("read");
    out
}

/// Scrapes until the text holds every one of `until` (the workers publish their counters
/// twice a second and the coordinator sets the metrics once a second), for at most 10 s;
/// returns the last text.
async fn scrape_until(addr: SocketAddr, until: &[&str]) -> String {
    let mut body = String::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let answer = get(addr, "GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        body = answer.split("\r\n\r\n").nth(1).expect("a body").to_owned();
        if until.iter().all(|u| body.contains(u)) {
            break;
        }
    }
    body
}

/// The metric names of a scrape's samples.
fn scraped_names(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().expect("a name").to_owned())
        .collect()
}

/// The metric names in the table of `docs/metrics.md` (rows starting with a code span).
fn documented_names() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
        .expect("reading docs/metrics.md");
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|n| n.starts_with("eeaturn_") || n.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

fn assert_help_and_type(body: &str) {
    for name in scraped_names(body) {
        assert!(
            name.starts_with("eeaturn_") || name.starts_with("process_"),
            "{name}"
        );
        assert!(
            body.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
        assert!(
            body.contains(&format!("# TYPE {name} ")),
            "no TYPE for {name}"
        );
    }
}

#[tokio::test]
async fn metrics_have_help_and_show_relaying_and_denials() {
    let server = start_server("[metrics]\nlisten = \"127.0.0.1:0\"\n").await;
    let addr = server.metrics_addr().expect("metrics are configured");

    let mut client = server.client("127.0.1.7", "metrics-user").await;
    let alloc = client.allocate().await.expect("Allocate succeeds");
    let _ = alloc;
    let denied = client
        .create_permission(&["127.0.6.1:9".parse().expect("literal")])
        .await;
    assert!(denied.is_err(), "a British peer is refused");

    let body = scrape_until(
        addr,
        &["eeaturn_policy_denials_total{subject=\"peer\",rule=\"outside-region\"} 1"],
    )
    .await;
    assert_help_and_type(&body);
    for needle in [
        "eeaturn_build_info{version=",
        "eeaturn_allocations 1",
        "eeaturn_allocations_created_total 1",
        "eeaturn_allocations_by_country_total{country=\"DE\"} 1",
        "eeaturn_requests_total{method=\"allocate\",result=\"ok\"} 1",
        "eeaturn_auth_failures_total{reason=\"no-credentials\"} 1",
        "eeaturn_policy_denials_total{subject=\"peer\",rule=\"outside-region\"} 1",
        "eeaturn_geo_db_stale{db=\"country\"} 0",
        "eeaturn_geo_db_stale{db=\"asn\"} 0",
        "eeaturn_geo_db_build_timestamp_seconds{db=\"country\"} 1795000000",
    ] {
        assert!(body.contains(needle), "missing {needle:?} in\n{body}");
    }
    assert!(!body.contains("127.0."), "no address in the metrics");
    assert!(!body.contains("metrics-user"), "no user in the metrics");
}

#[tokio::test]
async fn only_get_metrics_is_served() {
    let server = start_server("[metrics]\nlisten = \"127.0.0.1:0\"\n").await;
    let addr = server.metrics_addr().expect("metrics are configured");
    assert!(
        get(addr, "GET / HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 404")
    );
    assert!(
        get(addr, "POST /metrics HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 405")
    );
    let long = format!("GET /metrics HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(5000));
    assert!(get(addr, &long).await.starts_with("HTTP/1.1 431"));
}

/// A flood of connections that never send a request, opened faster than the header timeout
/// closes them and far more than the listener serves at once, while a scraper scrapes: every
/// scrape is answered (a listener that makes new connections wait for a free slot keeps the
/// scraper behind the flood's connections for seconds each).
#[tokio::test]
async fn an_idle_connection_flood_does_not_keep_scrapes_out() {
    let server = start_server("[metrics]\nlisten = \"127.0.0.1:0\"\n").await;
    let addr = server.metrics_addr().expect("metrics are configured");
    let flood = tokio::spawn(async move {
        let mut held = Vec::new();
        // Bounded: at most 600 connections, held until the test ends.
        for _ in 0..600 {
            if let Ok(s) = TcpStream::connect(addr).await {
                held.push(s);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        held
    });
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            get(addr, "GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n"),
        )
        .await
        .unwrap_or_else(|_| panic!("scrape {i} during the flood is answered"));
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    }
    let held = flood.await.expect("the flood task");
    assert!(held.len() > 100, "the flood opened connections");
    // The listener closed them: evicted, or at the header timeout.
    for mut s in held.into_iter().take(20) {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok(),
            "a silent connection is closed by the server"
        );
    }
}

#[tokio::test]
async fn an_exposed_listener_wants_tls_and_the_bearer_token() {
    // "https://" on loopback: the same code path as an exposed address, which the test may
    // not bind. The token makes the listener check it.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let token_file = dir.path().join("metrics-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("writing the token");
    let extra = format!(
        "{}\n[metrics]\nlisten = \"https://127.0.0.1:0\"\ntoken_file = \"{}\"\n",
        common::dev_tls_table(),
        token_file.display()
    );
    let (running, _dir) = start_relay(r#""udp://127.0.0.1:0""#, &extra).await;
    let addr = running.metrics_addr.expect("metrics are configured");
    let http = https_client();
    let url = format!("https://localhost:{}/metrics", addr.port());
    let resolve = |b: reqwest::ClientBuilder| b.resolve("localhost", addr);
    let http = resolve(http).build().expect("the HTTPS client");

    let none = http.get(&url).send().await.expect("a TLS answer");
    assert_eq!(none.status(), 401);
    assert!(
        none.headers()
            .get("www-authenticate")
            .is_some_and(|v| v.to_str().unwrap_or("").starts_with("Bearer")),
        "{:?}",
        none.headers()
    );
    let wrong = http
        .get(&url)
        .bearer_auth("metrics-test-token-0f4c2a9e7d1b3857")
        .send()
        .await
        .expect("a TLS answer");
    assert_eq!(wrong.status(), 401);
    let right = http
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("a TLS answer");
    assert_eq!(right.status(), 200);
    let body = right.text().await.expect("a body");
    assert!(body.contains("eeaturn_build_info"), "{body}");
    // Plain HTTP gets no metrics from a TLS listener.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("send");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, s.read_to_end(&mut out)).await;
    assert!(
        !String::from_utf8_lossy(&out).contains("eeaturn_"),
        "no metrics in clear"
    );
    running.stop().await.expect("the relay stops");
}

/// Runs a relay with every part on (UDP and TCP listeners, `[tls]`, `[api]`, `[evidence]`),
/// exercises it — allocations relaying over UDP and TCP, a denial, an authentication failure,
/// a drop, an ended allocation, an API issuance and a SIGHUP reload — and compares the
/// metric names of a scrape with `docs/metrics.md`, both ways.
#[tokio::test]
async fn docs_metrics_md_and_a_scrape_list_the_same_metrics() {
    let evidence = tempfile::tempdir().expect("a temporary directory");
    let root = env!("CARGO_MANIFEST_DIR");
    let key_hash = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        API_KEY.as_bytes(),
    ));
    let extra = format!(
        r#"{tls}
[metrics]
listen = "127.0.0.1:0"

[api]
listen = "http://127.0.0.1:0"
uris = ["turn:127.0.0.1:3478?transport=udp"]

[[api.keys]]
name = "signaling"
scope = "credentials"
sha256 = "{key_hash}"

[evidence]
enabled = true
directory = "{dir}"
signing_key_file = "{root}/config/dev-evidence.key"
node_id = "metrics-node"
site = "test"
fsync = "always"
checkpoint_interval = "1s"
"#,
        tls = common::dev_tls_table(),
        dir = evidence.path().display(),
    );
    let (running, _dir) = start_relay(r#""udp://127.0.0.1:0", "tcp://127.0.0.1:0""#, &extra).await;
    let metrics = running.metrics_addr.expect("metrics are configured");
    let (udp, tcp) = (running.local_addrs[0], running.local_addrs[1]);
    let api = running.api_addr.expect("the API is configured");
    let peer = spawn_echo_peer("127.0.2.1").await;

    // UDP: relay a round trip, be denied a British peer, drop ChannelData on no channel.
    let mut c = TurnClient::bind("127.0.1.21", udp, credential()).await;
    let relayed = c.allocate().await.expect("Allocate over UDP").relayed();
    let _ = relayed;
    c.create_permission(&[peer]).await.expect("a French peer");
    c.send_indication(peer, b"over udp").await;
    assert_eq!(c.recv_relayed().await.data(), b"over udp");
    assert!(
        c.create_permission(&["127.0.6.1:9".parse().expect("literal")])
            .await
            .is_err()
    );
    c.send_channel_data(0x4abc, b"no such channel").await;
    // An allocation that ends.
    let mut ending = TurnClient::bind("127.0.1.22", udp, credential()).await;
    ending.allocate().await.expect("Allocate");
    ending.refresh(0).await.expect("released");
    // A wrong password.
    let mut wrong = credential();
    wrong.password = "not-the-password".to_owned();
    let mut bad = TurnClient::bind("127.0.1.23", udp, wrong).await;
    assert!(bad.allocate().await.is_err(), "a wrong password is refused");
    // TCP: relay a round trip.
    tcp_round_trip(tcp, peer).await;
    // An API issuance.
    let answer = get(
        api,
        &format!(
            "POST /v1/credentials HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer {API_KEY}\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{{\"user\": \"u-1\"}}"
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A reload: SIGHUP to this process reaches the relay's handler.
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success());

    let body = scrape_until(
        metrics,
        &[
            "eeaturn_reloads_total{part=\"policy\",result=\"ok\"} 1",
            "eeaturn_relayed_packets_total{direction=\"to_client\",transport=\"tcp\"} 1",
            "eeaturn_relayed_packets_total{direction=\"to_client\",transport=\"udp\"} 1",
            "eeaturn_api_issuance_total{outcome=\"issued\"} 1",
            "eeaturn_auth_failures_total{reason=\"bad-password\"} 1",
            "eeaturn_allocations_ended_total{reason=\"released\"} 1",
            "eeaturn_dropped_total{reason=\"no-channel\"} 1",
            "eeaturn_evidence_records_written_total",
        ],
    )
    .await;
    assert_help_and_type(&body);
    for needle in [
        "eeaturn_relayed_bytes_total{direction=\"to_peer\",transport=\"udp\"} 8",
        "eeaturn_relayed_bytes_total{direction=\"to_peer\",transport=\"tcp\"} 8",
        "eeaturn_relayed_packets_total{direction=\"to_peer\",transport=\"tls\"} 0",
        "eeaturn_policy_reloads_total{result=\"ok\"} 1",
        "eeaturn_policy_denials_by_country_total{subject=\"peer\",country=\"GB\"} 1",
        "eeaturn_reloads_total{part=\"secrets\",result=\"ok\"} 1",
        "eeaturn_api_requests_total{key=\"signaling\",endpoint=\"credentials\",result=\"issued\"} 1",
        "eeaturn_allocations_by_country_total{country=\"DE\"} 3",
        "eeaturn_tls_certificate_not_after_timestamp_seconds 2110798923",
        "eeaturn_evidence_admission_closed 0",
    ] {
        assert!(body.contains(needle), "missing {needle:?} in\n{body}");
    }
    let scraped = scraped_names(&body);
    let documented = documented_names();
    let undocumented: Vec<_> = scraped.difference(&documented).collect();
    let missing: Vec<_> = documented.difference(&scraped).collect();
    assert!(
        undocumented.is_empty(),
        "scraped but not in docs/metrics.md: {undocumented:?}"
    );
    assert!(
        missing.is_empty(),
        "in docs/metrics.md but not scraped: {missing:?}\n{body}"
    );
    assert!(documented.len() >= 30, "{documented:?}");
    assert!(!body.contains("127.0."), "no address in the metrics");
    assert!(!body.contains("u-1"), "no user in the metrics");
    running.stop().await.expect("the relay stops");
}

/// Allocates over TCP from 127.0.1.24, permits `peer` and relays one Send indication to it
/// and the echo back (a Data indication). Frames the stream itself: 20-byte STUN headers.
async fn tcp_round_trip(server: SocketAddr, peer: SocketAddr) {
    let mut s = connect_from("127.0.1.24", server).await;
    let cred = credential();
    let mut auth = LongTermAuth::new(&cred.username, &cred.password, PasswordAlgorithm::Md5);
    let mut tid_seed = 0u8;
    let mut tid = || {
        tid_seed += 1;
        TransactionId([tid_seed; 12])
    };
    // The challenge, then the signed Allocate.
    let mut b = eeaturn::client::request(Method::ALLOCATE, tid());
    eeaturn::client::add_requested_transport_udp(&mut b);
    b.add_fingerprint();
    s.write_all(&b.finish()).await.expect("write");
    let challenge = read_stun(&mut s).await;
    assert!(auth.take_challenge(&Message::parse(&challenge).expect("STUN")));
    for method in [Method::ALLOCATE, Method::CREATE_PERMISSION] {
        let mut b = eeaturn::client::request(method, tid());
        if method == Method::ALLOCATE {
            eeaturn::client::add_requested_transport_udp(&mut b);
        } else {
            b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
        }
        auth.sign(&mut b).expect("challenged");
        b.add_fingerprint();
        s.write_all(&b.finish()).await.expect("write");
        let r = read_stun(&mut s).await;
        let m = Message::parse(&r).expect("STUN");
        assert_eq!(m.class(), Class::Success, "{} over TCP", method.name());
    }
    s.write_all(&eeaturn::client::send_indication(tid(), peer, b"over tcp"))
        .await
        .expect("write");
    let echoed = read_stun(&mut s).await;
    assert_eq!(
        Relayed::parse(&echoed).expect("a Data indication").data(),
        b"over tcp"
    );
}

async fn connect_from(ip: &str, server: SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().expect("a socket");
    sock.bind(SocketAddr::new(ip.parse().expect("an IP"), 0))
        .expect("binding the client address");
    tokio::time::timeout(TIMEOUT, sock.connect(server))
        .await
        .expect("connects in time")
        .expect("connects")
}

/// Reads one STUN message (header and body) off the stream.
async fn read_stun(s: &mut TcpStream) -> Vec<u8> {
    let mut head = [0u8; 20];
    tokio::time::timeout(TIMEOUT, s.read_exact(&mut head))
        .await
        .expect("a message in time")
        .expect("reading a STUN header");
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let mut msg = head.to_vec();
    msg.resize(20 + len, 0);
    tokio::time::timeout(TIMEOUT, s.read_exact(&mut msg[20..]))
        .await
        .expect("a message in time")
        .expect("reading a STUN body");
    msg
}

fn credential() -> eeaturn::credentials::Credential {
    issue_credential("alice", Duration::from_secs(3600), wall_now())
}

/// Starts a relay listening on `listen` with this file's relay ports and `extra` tables.
async fn start_relay(listen: &str, extra: &str) -> (Running, TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("secret"), format!("{}\n", common::SECRET))
        .expect("writing the secret");
    let toml = common::config_toml_listening(listen, RELAY_PORT_MIN..=RELAY_PORT_MAX, extra);
    let path = dir.path().join("eeaturn.toml");
    std::fs::write(&path, &toml).expect("writing the config");
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => panic!("the test config is valid: {e}\n{toml}"),
    };
    match eeaturn::shell::start(config).await {
        Ok(r) => (r, dir),
        Err(e) => panic!("the relay starts: {e:#}"),
    }
}

/// An HTTPS client trusting only the development certificate (name "localhost").
fn https_client() -> reqwest::ClientBuilder {
    let pem = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/config/dev-cert.pem"))
        .expect("reading config/dev-cert.pem");
    let cert = reqwest::Certificate::from_pem(&pem).expect("a PEM certificate");
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(cert)
        .timeout(TIMEOUT)
}
