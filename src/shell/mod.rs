//! The tokio shell: sockets, timers and signals around the sans-IO [`Server`].
//!
//! One driver task owns the [`Server`]. Each listening socket and each relay socket has a
//! reader task that forwards datagrams to the driver over a bounded channel; the driver feeds
//! them to the core, sends what the core returns, and carries out its commands. SIGHUP re-reads
//! the secret file. Nothing here decides anything about TURN.

pub mod geo;
mod log;
mod metrics;
mod stream;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::{Config, ListenTransport};
use crate::credentials::Secrets;
use crate::pii::Pii;
use crate::relay::{
    BindResult, ClientTransmit, Command, FiveTuple, Now, PEER_HEADROOM, PEER_TAILROOM, Server,
    ServerConfig, Stats, Transport,
};

/// Largest UDP payload read from any socket.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams queued from reader tasks to the driver before new ones are dropped.
const QUEUE_DEPTH: usize = 8192;
/// Socket buffer size requested for every socket.
const SOCKET_BUFFER: usize = 4 << 20;

/// A datagram for the driver.
enum Input {
    Client {
        server: SocketAddr,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    Peer {
        relay: SocketAddr,
        from: SocketAddr,
        /// The payload sits at `PEER_HEADROOM..PEER_HEADROOM + len`.
        buf: Vec<u8>,
        len: usize,
    },
    /// A TCP/TLS connection is up (handshake done): may it stay?
    StreamOpened {
        five: FiveTuple,
        writer: mpsc::Sender<Vec<u8>>,
        reply: oneshot::Sender<bool>,
    },
    /// One framed message from a TCP/TLS connection.
    Stream { five: FiveTuple, bytes: Vec<u8> },
    /// A TCP/TLS connection ended.
    StreamClosed { five: FiveTuple },
}

/// A running relay, as returned by [`start`].
pub struct Running {
    /// The bound listening addresses (with the OS-chosen ports where the config said 0).
    pub local_addrs: Vec<SocketAddr>,
    /// The bound metrics address, when `metrics.listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    /// The bound credential API address, when `[api]` is set.
    pub api_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<Stats>>,
}

impl Running {
    /// Stops the relay and waits for it, returning the core's final counters.
    ///
    /// # Errors
    ///
    /// Returns the driver's error, if it failed.
    pub async fn stop(mut self) -> anyhow::Result<Stats> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.context("relay task panicked")?
    }
}

/// Binds every listener, starts the driver, and returns once the relay serves.
///
/// # Errors
///
/// Fails when the secret file cannot be read or a listener cannot be bound.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let secrets = load_secrets(&config)?;
    let mut rng = StdRng::from_os_rng();
    let mut nonce_key = [0u8; 32];
    rng.fill_bytes(&mut nonce_key);
    let policy = geo::load_policy(&config, now().wall)?;
    geo::check_relay_location(&config, &policy)?;
    let server = Server::new(
        ServerConfig::from_config(&config),
        secrets,
        policy,
        nonce_key,
        rng,
    );

    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    let mut listeners = HashMap::new();
    let mut local_addrs = Vec::new();
    let mut readers = Vec::new();
    let tls = match &config.tls {
        Some(t) => {
            tracing::info!(target: "eeaturn::shell", "{}", crate::tls::profile_summary(&t.groups));
            Some(stream::acceptor(t)?)
        }
        None => None,
    };
    // One set of counters for every TCP/TLS listener: the limits are per relay, not per port.
    let stream_settings = stream::StreamSettings::new(
        config.limits.max_connections,
        config.limits.max_connections_per_ip,
        config.limits.connection_setup_timeout,
        config.limits.connection_idle_timeout,
    );
    for l in &config.listen {
        match l.transport {
            ListenTransport::Tcp | ListenTransport::Tls => {
                let acceptor = if l.transport == ListenTransport::Tls {
                    tls.clone()
                } else {
                    None
                };
                let (local, task) =
                    stream::spawn_listener(l.addr, acceptor, stream_settings.clone(), tx.clone())
                        .await
                        .with_context(|| format!("binding listener {l}"))?;
                readers.push(task);
                local_addrs.push(local);
                let bound = crate::config::Listen { addr: local, ..*l };
                tracing::info!(target: "eeaturn::shell", listener = %bound, "listening");
            }
            ListenTransport::Udp => {
                let sock = bind_udp(l.addr).with_context(|| format!("binding listener {l}"))?;
                let local = sock.local_addr()?;
                let sock = Arc::new(sock);
                readers.push(spawn_listener_reader(sock.clone(), local, tx.clone()));
                listeners.insert(local, sock);
                local_addrs.push(local);
                let bound = crate::config::Listen { addr: local, ..*l };
                tracing::info!(target: "eeaturn::shell", listener = %bound, "listening");
            }
        }
    }
    let (stop_tx, stop_rx) = oneshot::channel();
    // Installed before `start` returns, so a SIGHUP after "ready" never hits the default
    // action (terminate).
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let watch = geo::DbWatch::new(&config);
    let (metrics_tx, metrics_rx) = tokio::sync::watch::channel(String::new());
    let mut metrics_addr = None;
    if let Some(addr) = config.metrics_listen {
        let (local, task) = metrics::serve(addr, metrics_rx).await?;
        tracing::info!(target: "eeaturn::shell", metrics = %format!("http://{local}/metrics"), "serving metrics");
        readers.push(task);
        metrics_addr = Some(local);
    }
    let api = match &config.api {
        Some(a) => {
            let api =
                crate::api::Api::start(a, config.tls.as_ref(), load_secrets(&config)?).await?;
            let scheme = if a.https { "https" } else { "http" };
            tracing::info!(target: "eeaturn::api", api = %format!("{scheme}://{}", api.local_addr), keys = a.keys.len(), "serving the credential API");
            Some(api)
        }
        None => None,
    };
    let api_addr = api.as_ref().map(|a| a.local_addr);
    if let Some(a) = &api {
        a.set_ready(true);
    }
    let driver = Driver {
        server,
        api,
        tls,
        streams: HashMap::new(),
        watch,
        metrics_tx,
        shell_counters: crate::metrics::ShellCounters::default(),
        config,
        listeners,
        relays: HashMap::new(),
        tx,
        readers,
    };
    let task = tokio::spawn(driver.run(rx, stop_rx, hup));
    Ok(Running {
        local_addrs,
        metrics_addr,
        api_addr,
        stop: Some(stop_tx),
        task,
    })
}

/// Runs the relay until `shutdown` completes.
///
/// # Errors
///
/// Fails when the relay cannot start or its driver fails.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let running = start(config).await?;
    tracing::info!(target: "eeaturn::shell", "ready");
    shutdown.await;
    tracing::info!(target: "eeaturn::shell", "shutting down");
    let stats = running.stop().await?;
    tracing::info!(
        target: "eeaturn::shell",
        allocations = stats.allocations_created,
        packets_to_peer = stats.packets_to_peer,
        packets_to_client = stats.packets_to_client,
        "stopped"
    );
    Ok(())
}

/// Reads and parses the secret file named by the config.
///
/// # Errors
///
/// Fails with a message naming the file when it is missing, unreadable or holds no secret.
pub fn load_secrets(config: &Config) -> anyhow::Result<Secrets> {
    let path = &config.secret_file;
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read auth.secret_file {}: create it with one secret per line (at least 16 bytes each)",
            path.display()
        )
    })?;
    Secrets::parse(&text).with_context(|| format!("auth.secret_file {}", path.display()))
}

struct RelaySocket {
    sock: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

struct Driver {
    server: Server<StdRng>,
    api: Option<crate::api::Api>,
    tls: Option<stream::SharedAcceptor>,
    streams: HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>,
    watch: geo::DbWatch,
    metrics_tx: tokio::sync::watch::Sender<String>,
    shell_counters: crate::metrics::ShellCounters,
    config: Config,
    listeners: HashMap<SocketAddr, Arc<UdpSocket>>,
    relays: HashMap<SocketAddr, RelaySocket>,
    tx: mpsc::Sender<Input>,
    readers: Vec<JoinHandle<()>>,
}

impl Driver {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Input>,
        mut stop: oneshot::Receiver<()>,
        mut hup: tokio::signal::unix::Signal,
    ) -> anyhow::Result<Stats> {
        let mut batch = Vec::with_capacity(64);
        let watch_every = self.config.geo.watch_interval;
        let mut watch_tick = tokio::time::interval(if watch_every.is_zero() {
            std::time::Duration::from_secs(86_400 * 365)
        } else {
            watch_every
        });
        watch_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        watch_tick.tick().await;
        let mut metrics_tick = tokio::time::interval(std::time::Duration::from_secs(1));
        metrics_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.server.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                n = rx.recv_many(&mut batch, 64) => {
                    if n == 0 {
                        break;
                    }
                    let now = now();
                    for input in batch.drain(..) {
                        self.handle_input(input, now);
                    }
                }
                () = sleep => {
                    self.server.handle_timeout(now());
                }
                _ = hup.recv() => {
                    self.reload();
                }
                _ = metrics_tick.tick() => {
                    self.publish_metrics();
                }
                _ = watch_tick.tick(), if !watch_every.is_zero() => {
                    if self.watch.changed() {
                        tracing::info!(target: "eeaturn::policy", "database files changed; reloading");
                        self.reload_policy(&self.config.clone());
                    }
                }
                _ = &mut stop => break,
            }
            self.drain().await;
        }
        if let Some(api) = self.api.take() {
            api.set_ready(false);
            api.stop();
        }
        self.server.shutdown(now());
        self.drain().await;
        for r in self.readers.drain(..) {
            r.abort();
        }
        Ok(self.server.stats().clone())
    }

    fn handle_input(&mut self, input: Input, now: Now) {
        match input {
            Input::Client {
                server,
                from,
                bytes,
            } => {
                let five = FiveTuple {
                    transport: Transport::Udp,
                    client: from,
                    server,
                };
                if let Some(t) = self.server.handle_client_input(five, &bytes, now) {
                    if let Some(r) = self.relays.get(&t.relay) {
                        if let Err(e) = r.sock.try_send_to(&bytes[t.range], t.peer) {
                            tracing::debug!(target: "eeaturn::relay", error = %e, "send to peer failed");
                        }
                    }
                }
            }
            Input::Peer {
                relay,
                from,
                mut buf,
                len,
            } => {
                let payload = PEER_HEADROOM..PEER_HEADROOM + len;
                if let Some(ClientTransmit { to, range }) = self
                    .server
                    .handle_peer_input(relay, from, &mut buf, payload, now)
                {
                    self.send_to_client(to, &buf[range]);
                }
            }
            Input::StreamOpened {
                five,
                writer,
                reply,
            } => {
                let allowed = self.server.handle_connection_opened(five, now);
                if allowed {
                    self.streams.insert(five, writer);
                }
                let _ = reply.send(allowed);
            }
            Input::Stream { five, bytes } => {
                if let Some(t) = self.server.handle_client_input(five, &bytes, now) {
                    if let Some(r) = self.relays.get(&t.relay) {
                        if let Err(e) = r.sock.try_send_to(&bytes[t.range], t.peer) {
                            tracing::debug!(target: "eeaturn::relay", error = %e, "send to peer failed");
                        }
                    }
                }
            }
            Input::StreamClosed { five } => {
                self.streams.remove(&five);
                self.server.handle_connection_closed(five, now);
            }
        }
    }

    /// Sends a message to a client: a datagram on UDP, a queued write on TCP/TLS.
    fn send_to_client(&self, to: FiveTuple, bytes: &[u8]) {
        if to.transport.is_stream() {
            if let Some(w) = self.streams.get(&to) {
                // A full queue means the client does not read: drop, as UDP would.
                let _ = w.try_send(bytes.to_vec());
            }
        } else if let Some(sock) = self.listeners.get(&to.server) {
            if let Err(e) = sock.try_send_to(bytes, to.client) {
                tracing::debug!(target: "eeaturn::relay", error = %e, "send to client failed");
            }
        }
    }

    /// Carries out the core's commands and logs its events.
    async fn drain(&mut self) {
        while let Some(cmd) = self.server.poll_command() {
            match cmd {
                Command::SendToClient { to, bytes } => {
                    if to.transport.is_stream() {
                        self.send_to_client(to, &bytes);
                    } else if let Some(sock) = self.listeners.get(&to.server) {
                        if let Err(e) = sock.send_to(&bytes, to.client).await {
                            tracing::debug!(target: "eeaturn::shell", error = %e, client = %Pii(to.client), "send to client failed");
                        }
                    }
                }
                Command::BindRelay { token, addrs } => {
                    let result = self.bind_relays(&addrs);
                    self.server.handle_relay_bound(token, &addrs, result, now());
                }
                Command::CloseRelay { addr } => {
                    if let Some(r) = self.relays.remove(&addr) {
                        r.reader.abort();
                    }
                }
            }
        }
        while let Some(ev) = self.server.poll_event() {
            log::event(&ev);
        }
    }

    fn bind_relays(&mut self, addrs: &[SocketAddr]) -> BindResult {
        let mut bound = Vec::new();
        for &addr in addrs {
            match bind_udp(addr) {
                Ok(sock) => bound.push((addr, Arc::new(sock))),
                Err(e) => {
                    tracing::warn!(target: "eeaturn::shell", port = addr.port(), error = %e, "cannot bind relay socket");
                    return if e.kind() == std::io::ErrorKind::AddrInUse {
                        BindResult::AddrInUse
                    } else {
                        BindResult::Failed
                    };
                }
            }
        }
        for (addr, sock) in bound {
            let reader = spawn_relay_reader(sock.clone(), addr, self.tx.clone());
            self.relays.insert(addr, RelaySocket { sock, reader });
        }
        BindResult::Bound
    }

    /// Renders the metrics text for the listener (when one is configured).
    fn publish_metrics(&mut self) {
        if self.config.metrics_listen.is_none() {
            return;
        }
        let mut text = crate::metrics::render(
            self.server.stats(),
            self.server.allocation_count(),
            self.server.policy(),
            self.config.geo.max_age,
            self.shell_counters,
            now().wall,
        );
        if let Some(api) = &self.api {
            api.render_metrics(&mut text);
        }
        self.metrics_tx.send_replace(text);
    }

    /// SIGHUP: re-reads the config file (when it came from one), the secrets, the policy and
    /// the databases. Each part that fails keeps its previous state and says why. Listeners,
    /// relay addresses and limits need a restart.
    fn reload(&mut self) {
        let mut config = match &self.config.source {
            Some(path) => match Config::load(path) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(target: "eeaturn::shell", error = %e, "config reload failed; keeping the previous configuration");
                    return;
                }
            },
            None => self.config.clone(),
        };
        // The relay sockets stay as they are until a restart, so the relay-host rule must keep
        // describing the addresses and ports in use, whatever the file says now.
        if config.relay != self.config.relay {
            tracing::warn!(target: "eeaturn::shell", "[relay] changed in the config file; it takes effect at the next restart");
        }
        config.relay = self.config.relay.clone();
        config.rules.relay_ips = self.config.rules.relay_ips.clone();
        config.rules.relay_ports = self.config.rules.relay_ports.clone();
        match load_secrets(&config) {
            Ok(s) => {
                let n = s.len();
                if let Some(api) = &self.api {
                    api.replace_secrets(s.clone());
                }
                self.server.replace_secrets(s);
                tracing::info!(target: "eeaturn::shell", secrets = n, "reloaded secrets on SIGHUP");
            }
            Err(e) => {
                tracing::error!(target: "eeaturn::shell", error = %format!("{e:#}"), "secret reload failed; keeping the previous secrets");
            }
        }
        if let (Some(shared), Some(t)) = (&self.tls, &config.tls) {
            match crate::tls::server_config(t) {
                Ok(c) => {
                    *shared
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        tokio_rustls::TlsAcceptor::from(c);
                    tracing::info!(target: "eeaturn::shell", "reloaded the TLS certificate; new handshakes use it");
                }
                Err(e) => {
                    tracing::error!(target: "eeaturn::shell", error = %format!("{e:#}"), "TLS certificate reload failed; keeping the previous certificate");
                }
            }
        }
        match (&self.api, &config.api) {
            (Some(api), Some(a)) => match api.reload(a, config.tls.as_ref()) {
                Ok(()) => {
                    tracing::info!(target: "eeaturn::api", keys = a.keys.len(), "reloaded the API settings and keys");
                }
                Err(e) => {
                    tracing::error!(target: "eeaturn::api", error = %format!("{e:#}"), "API reload failed; keeping the previous API settings and certificate");
                }
            },
            (None, None) => {}
            _ => {
                tracing::warn!(target: "eeaturn::api", "[api] was added or removed in the config file; it takes effect at the next restart");
            }
        }
        if self.reload_policy(&config) {
            self.watch = geo::DbWatch::new(&config);
            self.config.geo = config.geo.clone();
            self.config.rules = config.rules.clone();
            self.config.secret_file = config.secret_file.clone();
        }
    }

    /// Loads the policy and databases of `config` and puts them in force atomically; on
    /// failure keeps the previous ones. Returns whether it succeeded.
    fn reload_policy(&mut self, config: &Config) -> bool {
        let policy = geo::load_policy(config, now().wall)
            .and_then(|p| geo::check_relay_location(config, &p).map(|()| p));
        match policy {
            Ok(p) => {
                self.server.replace_policy(p);
                self.shell_counters.reloads_ok += 1;
                tracing::info!(target: "eeaturn::policy", "policy and databases reloaded; existing permissions are re-checked at their next refresh");
                true
            }
            Err(e) => {
                self.shell_counters.reloads_failed += 1;
                tracing::error!(target: "eeaturn::policy", error = %format!("{e:#}"), "policy reload failed; keeping the previous policy and databases");
                false
            }
        }
    }
}

fn spawn_listener_reader(
    sock: Arc<UdpSocket>,
    local: SocketAddr,
    tx: mpsc::Sender<Input>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            match sock.recv_from(&mut buf).await {
                Ok((n, from)) => {
                    let input = Input::Client {
                        server: local,
                        from,
                        bytes: buf[..n].to_vec(),
                    };
                    if tx.try_send(input).is_err() && tx.is_closed() {
                        return;
                    }
                }
                Err(e) => {
                    // ICMP errors (port unreachable) surface as recv errors on Linux; skip them.
                    tracing::trace!(target: "eeaturn::shell", error = %e, "listener recv error");
                }
            }
        }
    })
}

fn spawn_relay_reader(
    sock: Arc<UdpSocket>,
    local: SocketAddr,
    tx: mpsc::Sender<Input>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; PEER_HEADROOM + MAX_DATAGRAM + PEER_TAILROOM];
        loop {
            let end = PEER_HEADROOM + MAX_DATAGRAM;
            match sock.recv_from(&mut buf[PEER_HEADROOM..end]).await {
                Ok((n, from)) => {
                    let mut out = vec![0u8; PEER_HEADROOM + n + PEER_TAILROOM];
                    out[PEER_HEADROOM..PEER_HEADROOM + n]
                        .copy_from_slice(&buf[PEER_HEADROOM..PEER_HEADROOM + n]);
                    let input = Input::Peer {
                        relay: local,
                        from,
                        buf: out,
                        len: n,
                    };
                    if tx.try_send(input).is_err() && tx.is_closed() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::trace!(target: "eeaturn::shell", error = %e, "relay recv error");
                }
            }
        }
    })
}

/// Binds a non-blocking UDP socket with large buffers (IPv6 sockets are IPv6-only).
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

#[expect(
    clippy::disallowed_methods,
    reason = "the shell is where clocks are read"
)]
fn now() -> Now {
    Now {
        mono: Instant::now(),
        wall: SystemTime::now(),
    }
}
