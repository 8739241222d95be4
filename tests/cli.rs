//! The `eeaturn` binary: help, `config check`, `credentials issue`, start-up errors, and
//! `serve` end to end (readiness, STUN, SIGTERM, and no IP addresses in its log by default).
//!
//! Every child is waited for with a deadline and killed if the test fails early.

mod common;

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Peer, Relayed, TurnClient, issue_credential, wall_now, write_config_dir};
use ring::hmac;

const BIN: &str = env!("CARGO_BIN_EXE_eeaturn");
/// How long a command may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn help_mentions_the_subcommands() {
    let out = eeaturn(&["--help"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for word in ["serve", "credentials", "config"] {
        assert!(stdout.contains(word), "--help mentions {word}:\n{stdout}");
    }
}

#[test]
fn config_check_accepts_the_dev_config() {
    let out = eeaturn(&["config", "check", "--config", "config/dev.toml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("OK"), "{stdout}");
    assert!(
        stdout.contains("eeaturn.dev"),
        "the summary names the realm: {stdout}"
    );
}

#[test]
fn credentials_issue_json_is_signed_with_the_dev_secret() {
    let out = eeaturn(&[
        "credentials",
        "issue",
        "--user",
        "alice",
        "--ttl",
        "1h",
        "--config",
        "config/dev.toml",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let username = json["username"].as_str().expect("username is a string");
    let password = json["password"].as_str().expect("password is a string");
    assert_eq!(json["ttl"], 3600);

    let (expiry, user) = username.split_once(':').expect("\"<expiry>:<user>\"");
    assert_eq!(user, "alice");
    let expiry: u64 = expiry.parse().expect("a Unix time");
    let now = wall_now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert!(
        (now + 3600 - 60..=now + 3600 + 60).contains(&expiry),
        "expiry {expiry} is an hour after {now}"
    );

    // Independently of the crate: base64(HMAC-SHA1(secret, username)), coturn's scheme.
    let secret = dev_secret();
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let expected =
        base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, username.as_bytes()));
    assert_eq!(password, expected);
}

#[test]
fn an_unknown_config_key_fails_naming_the_key() {
    let (dir, _) = write_config_dir("[limits]\nmax_allocation = 5\n");
    let config = dir.path().join("eeaturn.toml");
    for cmd in [&["config", "check"][..], &["serve"][..]] {
        let out = eeaturn_with_config(cmd, &config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd:?} exits 1: {stderr}");
        assert!(
            stderr.contains("max_allocation"),
            "{cmd:?} names the key: {stderr}"
        );
    }
}

#[test]
fn a_missing_secret_file_fails_naming_the_file() {
    let (dir, config) = write_config_dir("");
    std::fs::remove_file(dir.path().join("secret")).expect("removing the secret");
    for cmd in [
        &["config", "check"][..],
        &["serve"][..],
        &["credentials", "issue", "--user", "alice"][..],
    ] {
        let out = eeaturn_with_config(cmd, &config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd:?} exits 1: {stderr}");
        assert!(
            stderr.contains(&dir.path().join("secret").display().to_string()),
            "{cmd:?} names the secret file: {stderr}"
        );
    }
}

#[tokio::test]
async fn serve_logs_ready_answers_stun_and_exits_on_sigterm() {
    let (_dir, config) = write_config_dir("");
    let mut serve = Serve::spawn(&config);
    serve.wait_for("ready");
    let server = serve.listener_v4();

    let mut client = TurnClient::bind(
        "127.0.1.1",
        server,
        issue_credential("cli", Duration::from_secs(600), wall_now()),
    )
    .await;
    assert_eq!(client.binding().await, client.local_addr());

    let (status, stderr) = serve.terminate();
    assert!(
        status.success(),
        "clean exit on SIGTERM, got {status}:\n{stderr}"
    );
    assert!(stderr.contains("stopped"), "{stderr}");
}

#[tokio::test]
async fn serve_drains_on_sigterm_and_exits_0_when_the_last_allocation_ends() {
    let (dir, config) = write_config_dir("");
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[server]\n",
        "[server]\ndrain_timeout = \"1m\"\nalternate_servers = [\"127.0.3.1:3478\"]\n",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let mut serve = Serve::spawn(&config);
    serve.wait_for("ready");
    let server = serve.listener_v4();
    let mut client = TurnClient::bind(
        "127.0.1.1",
        server,
        issue_credential("cli", Duration::from_secs(600), wall_now()),
    )
    .await;
    client.allocate().await.expect("allocates before the drain");

    serve.signal("-TERM");
    serve.wait_for("draining");
    client.refresh(0).await.expect("releases during the drain");
    let (status, stderr) = serve.wait_exit();

    assert!(
        status.success(),
        "exit 0 after the drain, got {status}:\n{stderr}"
    );
    assert!(stderr.contains("drained"), "{stderr}");
    drop(dir);
}

#[tokio::test]
async fn serve_log_has_no_ip_addresses_by_default() {
    let log = serve_full_cycle(false).await;
    for ip in ["127.0.1.1", "127.0.2.1", "127.0.5.1"] {
        assert!(!log.contains(ip), "the log shows {ip}:\n{log}");
    }
    for line in [
        "allocation created",
        "permission allowed",
        "channel bound",
        "denied by policy",
    ] {
        assert!(log.contains(line), "the debug log has {line:?}:\n{log}");
    }
    assert!(log.contains("<redacted>"), "{log}");
}

#[tokio::test]
async fn serve_log_shows_ip_addresses_with_log_ips() {
    let log = serve_full_cycle(true).await;
    for ip in ["127.0.1.1", "127.0.2.1", "127.0.5.1"] {
        assert!(
            log.contains(ip),
            "the log shows {ip} with log_ips = true:\n{log}"
        );
    }
}

#[tokio::test]
async fn serve_without_capabilities_logs_once_why_it_relays_in_user_space() {
    // relay.offload = "auto" (the default) as a process without CAP_BPF and CAP_NET_ADMIN:
    // setpriv(1) empties the bounding set, so even root runs without any capability here.
    let Some((mut serve, _dir)) = spawn_without_capabilities("auto") else {
        return;
    };
    serve.wait_for("ready");
    let server = serve.listener_v4();
    let mut client = TurnClient::bind(
        "127.0.1.1",
        server,
        issue_credential("cli", Duration::from_secs(600), wall_now()),
    )
    .await;
    assert_eq!(client.binding().await, client.local_addr());
    let (status, stderr) = serve.terminate();
    assert!(status.success(), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("kernel fast path"))
        .collect();
    assert_eq!(lines.len(), 1, "one line about the fast path:\n{stderr}");
    for words in [
        "unavailable",
        "CAP_BPF and CAP_NET_ADMIN",
        "relay.offload = \"off\"",
    ] {
        assert!(
            lines[0].contains(words),
            "the line names {words:?}: {}",
            lines[0]
        );
    }
    assert!(
        !lines[0].contains("WARN") && !lines[0].contains("ERROR"),
        "{}",
        lines[0]
    );
}

#[test]
fn serve_without_capabilities_refuses_to_start_when_offload_is_required() {
    let Some((serve, _dir)) = spawn_without_capabilities("required") else {
        return;
    };
    let (status, stderr) = serve.wait_exit();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("relay.offload = \"required\""), "{stderr}");
    assert!(stderr.contains("CAP_BPF"), "{stderr}");
    assert!(!stderr.contains("ready"), "{stderr}");
}

/// Starts `serve` on the test configuration with `relay.offload = offload` and no
/// capabilities: as root through `setpriv --bounding-set=-all`, otherwise as it is. Returns it
/// with its configuration directory, or `None` (printed) where root has no setpriv(1).
fn spawn_without_capabilities(offload: &str) -> Option<(Serve, tempfile::TempDir)> {
    let root = nix::unistd::Uid::effective().is_root();
    if root && Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("SKIP: setpriv(1) (util-linux) is not installed");
        return None;
    }
    let (dir, config) = write_config_dir("");
    let text = std::fs::read_to_string(&config).expect("reading the config back");
    let text = text.replacen("offload = \"off\"", &format!("offload = \"{offload}\""), 1);
    std::fs::write(&config, text).expect("writing the config");
    let config = config.to_str().expect("a UTF-8 temp path");
    let serve = if root {
        command_of(
            "setpriv",
            &[
                "--bounding-set=-all",
                "--inh-caps=-all",
                "--",
                BIN,
                "serve",
                "--config",
                config,
            ],
        )
    } else {
        command(&["serve", "--config", config])
    };
    Some((Serve::spawn_command(serve), dir))
}

/// Runs `serve` at debug level with `log.log_ips`, drives allocate → permission → Send →
/// channel → ChannelData both ways → a denied peer → Refresh 0 from 127.0.1.1 to a peer on
/// 127.0.2.1, stops it with SIGTERM and returns its stderr.
async fn serve_full_cycle(log_ips: bool) -> String {
    let (_dir, config) =
        write_config_dir(&format!("[log]\nlevel = \"debug\"\nlog_ips = {log_ips}\n"));
    let mut serve = Serve::spawn(&config);
    serve.wait_for("ready");
    let server = serve.listener_v4();

    let peer = Peer::bind("127.0.2.1").await;
    let credential = issue_credential("pii", Duration::from_secs(600), wall_now());
    let mut client = TurnClient::bind("127.0.1.1", server, credential).await;
    let relayed = client.allocate().await.expect("Allocate").relayed();
    client
        .create_permission(&[peer.addr()])
        .await
        .expect("permission");
    client.send_indication(peer.addr(), b"send").await;
    assert_eq!(peer.recv().await, (b"send".to_vec(), relayed));
    client
        .channel_bind(0x4000, peer.addr())
        .await
        .expect("ChannelBind");
    client.send_channel_data(0x4000, b"channel").await;
    assert_eq!(peer.recv().await, (b"channel".to_vec(), relayed));
    peer.send_to(b"reply", relayed).await;
    assert_eq!(
        client.recv_relayed().await,
        Relayed::Channel {
            channel: 0x4000,
            data: b"reply".to_vec()
        }
    );
    let denied: SocketAddr = "127.0.5.1:4000".parse().expect("literal");
    assert_eq!(
        client
            .create_permission(&[denied])
            .await
            .map_err(|e| e.code),
        Err(403)
    );
    assert_eq!(client.refresh(0).await, Ok(0));

    let (status, stderr) = serve.terminate();
    assert!(
        status.success(),
        "clean exit on SIGTERM, got {status}:\n{stderr}"
    );
    assert!(stderr.contains("allocation ended"), "{stderr}");
    stderr
}

/// Returns the first secret line of `config/dev.secret`.
fn dev_secret() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dev.secret");
    let text = std::fs::read_to_string(&path).expect("reading config/dev.secret");
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .expect("a secret line")
        .to_owned()
}

/// Returns the command for the binary, run from the package root without RUST_LOG or colours.
fn command(args: &[&str]) -> Command {
    command_of(BIN, args)
}

/// Like [`command`], for `program` (e.g. a wrapper that runs the binary).
fn command_of(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Runs `eeaturn args..` to completion (killed after [`DEADLINE`]).
fn eeaturn(args: &[&str]) -> Output {
    let child = command(args).spawn().expect("spawning eeaturn");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(out) => out.expect("waiting for eeaturn"),
        Err(_) => {
            signal(pid, "-KILL");
            panic!("eeaturn {args:?} did not finish within {DEADLINE:?}");
        }
    }
}

/// Runs `eeaturn cmd.. --config config` to completion.
fn eeaturn_with_config(cmd: &[&str], config: &Path) -> Output {
    let config = config.to_str().expect("a UTF-8 temp path");
    let mut args = cmd.to_vec();
    args.extend(["--config", config]);
    eeaturn(&args)
}

/// Sends `sig` (e.g. "-TERM") to a process this test started.
fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .expect("running kill");
    assert!(status.success(), "kill {sig} {pid}");
}

/// A running `eeaturn serve` whose stderr is read line by line.
struct Serve {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Serve {
    fn spawn(config: &Path) -> Self {
        let config = config.to_str().expect("a UTF-8 temp path");
        Self::spawn_command(command(&["serve", "--config", config]))
    }

    fn spawn_command(mut command: Command) -> Self {
        let mut child = command.spawn().expect("spawning eeaturn serve");
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
        Self {
            child: Some(child),
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits until a stderr line contains `needle`.
    #[expect(
        clippy::disallowed_methods,
        reason = "a deadline for the child process, not core logic"
    )]
    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + DEADLINE;
        while !self.seen.iter().any(|l| l.contains(needle)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "no log line with {needle:?} within {DEADLINE:?}; stderr so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Returns the IPv4 listener's address from the "listening" log line.
    fn listener_v4(&self) -> SocketAddr {
        const PREFIX: &str = "udp://127.0.0.1:";
        let line = self
            .seen
            .iter()
            .find(|l| l.contains("listening") && l.contains(PREFIX))
            .unwrap_or_else(|| panic!("no IPv4 listening line in:\n{}", self.seen.join("\n")));
        let rest = &line[line.find(PREFIX).expect("checked") + PREFIX.len()..];
        let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let port: u16 = port.parse().expect("a port number");
        assert_ne!(port, 0, "the log shows the bound port, not 0");
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Sends SIGTERM, waits for the exit and returns its status with all of stderr.
    fn terminate(self) -> (ExitStatus, String) {
        self.signal("-TERM");
        self.wait_exit()
    }

    /// Sends `sig` (e.g. `"-TERM"`) without waiting.
    fn signal(&self, sig: &str) {
        signal(self.child.as_ref().expect("running").id(), sig);
    }

    /// Waits for the exit and returns its status with all of stderr.
    fn wait_exit(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = match rx.recv_timeout(DEADLINE) {
            Ok(status) => status.expect("waiting for eeaturn serve"),
            Err(_) => {
                signal(pid, "-KILL");
                panic!(
                    "eeaturn serve did not exit within {DEADLINE:?} of SIGTERM; stderr:\n{}",
                    self.seen.join("\n")
                );
            }
        };
        // The reader ends at EOF, which follows the exit.
        while let Ok(line) = self.lines.recv_timeout(DEADLINE) {
            self.seen.push(line);
        }
        (status, self.seen.join("\n"))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
