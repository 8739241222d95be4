//! Quiet logs under attack: 2,000 TCP connects from a refused address (127.0.5.0/24, the US in
//! the loopback test world), then 300 Allocates with a wrong password over UDP, against the
//! relay running in-process on real loopback listeners give a bounded number of log lines, and
//! the summary lines still account for every refusal, by rule.
//!
//! This file installs a process-wide tracing subscriber that writes into a buffer, so it holds
//! this one test only.

mod common;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TIMEOUT;
use eeaturn::config::Config;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpSocket;
use tokio::task::JoinSet;
use tokio::time::timeout;

/// Refused connects in the flood.
const FLOOD: usize = 2_000;
/// Allocates with a wrong password.
const WRONG_PASSWORDS: u64 = 300;
/// Connects in flight at once.
const IN_FLIGHT: usize = 50;
/// The message of a summary line (`shell/refusals.rs`).
const SUMMARY: &str = "refusals since the last summary";

/// Everything written to the log, shared with the subscriber's writer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("the log buffer")
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().expect("the log buffer").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Connects from `from` to `server` and waits until the relay closes the connection.
async fn refused_connect(from: IpAddr, server: SocketAddr) {
    let sock = TcpSocket::new_v4().expect("a TCP socket");
    sock.bind(SocketAddr::new(from, 0)).expect("binding");
    let mut tcp = timeout(TIMEOUT, sock.connect(server))
        .await
        .expect("the connect completes in time")
        .expect("the TCP connect itself succeeds");
    let mut buf = [0u8; 64];
    let read = timeout(TIMEOUT, tcp.read(&mut buf))
        .await
        .expect("a refused connection is closed at once");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "nothing is sent to a refused client: {read:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_tcp_connects_writes_a_bounded_number_of_lines() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    std::fs::write(dir.path().join("secret"), format!("{}\n", common::SECRET))
        .expect("writing the secret");
    // The 300 wrong passwords come from one address: the budget of answers to unauthenticated
    // requests (tests/hostile.rs tests it) would drop most of their 401s, so it is off here.
    let toml = common::config_toml_listening(
        r#""udp://127.0.0.1:0", "tcp://127.0.0.1:0""#,
        28_000..=28_099,
        "[limits]\nunauthenticated_rate = 0\nunauthenticated_burst = 0\n",
    );
    let config = Config::parse(&toml, dir.path()).expect("the test config is valid");
    let running = eeaturn::shell::start(config)
        .await
        .expect("the relay starts");
    // UDP listeners come first in `local_addrs`, then the stream listeners.
    let (udp, server) = (running.local_addrs[0], running.local_addrs[1]);
    let before = log.lines().len();

    let mut flood = JoinSet::new();
    for i in 0..FLOOD {
        if flood.len() >= IN_FLIGHT {
            flood
                .join_next()
                .await
                .expect("a connect")
                .expect("a connect task");
        }
        let from = IpAddr::from([127, 0, 5, 1 + u8::try_from(i % 250).expect("fits")]);
        flood.spawn(refused_connect(from, server));
    }
    while let Some(done) = flood.join_next().await {
        done.expect("a connect task");
    }
    let mut credential =
        common::issue_credential("mallory", Duration::from_secs(3600), common::wall_now());
    credential.password = "not-the-password".to_owned();
    let mut guesser = common::TurnClient::bind("127.0.1.9", udp, credential).await;
    for _ in 0..WRONG_PASSWORDS {
        let refused = guesser.allocate().await.map(|_| ()).map_err(|e| e.code);
        assert_eq!(refused, Err(401));
    }
    let during = log.lines().len() - before;

    let stats = timeout(TIMEOUT, running.stop())
        .await
        .expect("the relay stops in time")
        .expect("the relay stops without error");
    // One summary line now, perhaps one more if the flood took longer than the interval.
    assert!(
        during <= 3,
        "{during} log lines during {FLOOD} refused connects and {WRONG_PASSWORDS} wrong passwords:\n{}",
        log.lines()[before..].join("\n")
    );
    assert_eq!(
        stats.denials.get(&("client", "outside-region")),
        Some(&(FLOOD as u64)),
        "every connect was refused by the policy: {:?}",
        stats.denials
    );
    // The summary lines (the last written at the stop) account for every refusal, by rule.
    let summaries: Vec<String> = log
        .lines()
        .into_iter()
        .filter(|l| l.contains(SUMMARY))
        .collect();
    assert!(
        !summaries.is_empty() && summaries.len() <= 4,
        "{summaries:#?}"
    );
    let total: u64 = summaries.iter().map(|l| field(l, "total=")).sum();
    assert_eq!(total, FLOOD as u64 + WRONG_PASSWORDS, "{summaries:#?}");
    let guesses: u64 = summaries
        .iter()
        .filter(|l| l.contains("auth:bad-password="))
        .map(|l| field(l, "auth:bad-password="))
        .sum();
    assert_eq!(guesses, WRONG_PASSWORDS, "{summaries:#?}");
    assert_eq!(
        stats.auth_failures.get("bad-password"),
        Some(&WRONG_PASSWORDS)
    );
    let by_rule: u64 = summaries
        .iter()
        .filter(|l| l.contains("client:outside-region="))
        .map(|l| field(l, "client:outside-region="))
        .sum();
    assert_eq!(by_rule, FLOOD as u64, "{summaries:#?}");
    assert!(
        summaries.iter().all(|l| l.contains("WARN")),
        "{summaries:#?}"
    );
}

/// The number after `key` in `line`.
fn field(line: &str, key: &str) -> u64 {
    let at = line.find(key).unwrap_or_else(|| panic!("{key} in {line}")) + key.len();
    line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|e| panic!("a number after {key} in {line}: {e}"))
}
