//! The tokio shell: sockets, timers and signals around the sans-IO [`Server`].
//!
//! The data path runs on worker threads ([`worker`]): each owns a [`Server`], its listening
//! UDP sockets and the relay sockets of its allocations, and relays without crossing a thread.
//! The main runtime keeps what is not on the data path: the TCP/TLS listeners (their framed
//! messages go to a worker), the credential API, the metrics listener, and the coordinator,
//! which reloads on SIGHUP and database changes and hands the results to every worker.
//! Nothing here decides anything about TURN.

mod batch;
pub mod geo;
mod log;
mod metrics;
mod stream;
mod worker;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{Config, ListenTransport};
use crate::credentials::Secrets;
use crate::policy::Policy;
use crate::relay::{Now, Server, Shared, Stats};

use self::worker::{Input, WorkerHandle};

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
    /// Returns the coordinator's error, if it failed.
    pub async fn stop(mut self) -> anyhow::Result<Stats> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.context("relay task panicked")?
    }
}

/// Binds every listener, starts the workers, and returns once the relay serves.
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
    raise_fd_limit();

    let mut local_addrs = Vec::new();
    let mut readers = Vec::new();
    // Each worker gets its own socket on every UDP listening address (SO_REUSEPORT); the
    // kernel hashes a client's address and port to one of them, so a client always reaches
    // the same worker, the one holding its allocation.
    let n = config.workers.max(1);
    let mut udp: Vec<Vec<std::net::UdpSocket>> = (0..n).map(|_| Vec::new()).collect();
    for l in config
        .listen
        .iter()
        .filter(|l| l.transport == ListenTransport::Udp)
    {
        let first = bind_udp(l.addr, config.sockets.buffer, n > 1)
            .with_context(|| format!("binding listener {l}"))?;
        let local = first.local_addr()?;
        if local_addrs.is_empty() {
            check_buffers(&first, config.sockets.buffer);
        }
        udp[0].push(first);
        for socks in udp.iter_mut().skip(1) {
            socks.push(
                bind_udp(local, config.sockets.buffer, true)
                    .with_context(|| format!("binding listener {l} (SO_REUSEPORT)"))?,
            );
        }
        local_addrs.push(local);
        let bound = crate::config::Listen { addr: local, ..*l };
        tracing::info!(target: "eeaturn::shell", listener = %bound, "listening");
    }
    let shared = Arc::new(Shared::new(config.relay.ports.clone()));
    let relay_sockets = worker::RelaySockets {
        ports: config.relay.ports.clone(),
        buffer: config.sockets.buffer,
        gso: config.sockets.gso,
        reserved: worker::Reserved::default(),
        v4: config.relay.v4,
        v6: config.relay.v6,
    };
    let mut workers = Vec::with_capacity(n);
    for (i, socks) in udp.into_iter().enumerate() {
        let server = Server::new(
            config.server_config(),
            secrets.clone(),
            policy.clone(),
            nonce_key,
            StdRng::from_rng(&mut rng),
        )
        .with_shared(shared.clone());
        workers.push(
            worker::spawn(
                format!("eeaturn-worker-{i}"),
                server,
                socks,
                relay_sockets.clone(),
            )
            .context("starting a data-path worker")?,
        );
    }
    tracing::info!(target: "eeaturn::shell", workers = n, "data-path workers started");
    let stream_inputs: Arc<[worker::WorkerInput]> =
        workers.iter().map(|w| w.input.clone()).collect();

    let tls = match &config.tls {
        Some(t) => {
            tracing::info!(target: "eeaturn::shell", "{}", crate::tls::profile_summary(&t.groups));
            Some(stream::acceptor(t)?)
        }
        None => None,
    };
    // One set of counters for every TCP/TLS listener: the limits are per relay, not per port.
    let stream_settings = stream::StreamSettings::new(
        config.connections.max_connections,
        config.connections.max_connections_per_ip,
        config.connections.connection_setup_timeout,
        config.connections.connection_idle_timeout,
    );
    for l in config
        .listen
        .iter()
        .filter(|l| l.transport != ListenTransport::Udp)
    {
        let acceptor = if l.transport == ListenTransport::Tls {
            tls.clone()
        } else {
            None
        };
        let (local, task) = stream::spawn_listener(
            l.addr,
            acceptor,
            stream_settings.clone(),
            stream_inputs.clone(),
        )
        .await
        .with_context(|| format!("binding listener {l}"))?;
        readers.push(task);
        local_addrs.push(local);
        let bound = crate::config::Listen { addr: local, ..*l };
        tracing::info!(target: "eeaturn::shell", listener = %bound, "listening");
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
            let api = crate::api::Api::start(a, config.tls.as_ref(), secrets).await?;
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
    let coordinator = Coordinator {
        workers,
        shared,
        policy,
        api,
        tls,
        watch,
        metrics_tx,
        shell_counters: crate::metrics::ShellCounters::default(),
        config,
        readers,
    };
    let task = tokio::spawn(coordinator.run(stop_rx, hup));
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
/// Fails when the relay cannot start or a worker fails.
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

/// Everything of the relay that is not on the data path: reloads, metrics, the API.
struct Coordinator {
    workers: Vec<WorkerHandle>,
    shared: Arc<Shared>,
    /// The policy in force (the workers hold clones), for the metrics.
    policy: Policy,
    api: Option<crate::api::Api>,
    tls: Option<stream::SharedAcceptor>,
    watch: geo::DbWatch,
    metrics_tx: tokio::sync::watch::Sender<String>,
    shell_counters: crate::metrics::ShellCounters,
    config: Config,
    readers: Vec<JoinHandle<()>>,
}

impl Coordinator {
    async fn run(
        mut self,
        mut stop: oneshot::Receiver<()>,
        mut hup: tokio::signal::unix::Signal,
    ) -> anyhow::Result<Stats> {
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
            tokio::select! {
                _ = hup.recv() => {
                    self.reload().await;
                }
                _ = metrics_tick.tick() => {
                    self.publish_metrics();
                }
                _ = watch_tick.tick(), if !watch_every.is_zero() => {
                    if self.watch.changed() {
                        tracing::info!(target: "eeaturn::policy", "database files changed; reloading");
                        self.reload_policy(&self.config.clone()).await;
                    }
                }
                _ = &mut stop => break,
            }
        }
        if let Some(api) = self.api.take() {
            api.set_ready(false);
            api.stop();
        }
        for r in self.readers.drain(..) {
            r.abort();
        }
        let mut stats = Stats::default();
        for w in self.workers.drain(..) {
            stats.merge(&w.stop().await.stats);
        }
        Ok(stats)
    }

    /// Sends `make()` to every worker.
    async fn to_workers(&self, make: impl Fn() -> Input) {
        for w in &self.workers {
            let _ = w.input.send(make()).await;
        }
    }

    /// Renders the metrics text for the listener (when one is configured).
    fn publish_metrics(&mut self) {
        if self.config.metrics_listen.is_none() {
            return;
        }
        let mut stats = Stats::default();
        for w in &self.workers {
            stats.merge(&w.snapshot().stats);
        }
        let mut text = crate::metrics::render(
            &stats,
            self.shared.total(),
            &self.policy,
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
    async fn reload(&mut self) {
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
        if config.relay != self.config.relay || config.sockets != self.config.sockets {
            tracing::warn!(target: "eeaturn::shell", "[relay] changed in the config file; it takes effect at the next restart");
        }
        config.relay = self.config.relay.clone();
        config.sockets = self.config.sockets;
        match load_secrets(&config) {
            Ok(s) => {
                let n = s.len();
                if let Some(api) = &self.api {
                    api.replace_secrets(s.clone());
                }
                self.to_workers(|| Input::Secrets(s.clone())).await;
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
        if self.reload_policy(&config).await {
            self.watch = geo::DbWatch::new(&config);
            self.config.geo = config.geo.clone();
            self.config.rules = config.rules.clone();
            self.config.secret_file = config.secret_file.clone();
        }
    }

    /// Loads the policy and databases of `config` and puts them in force atomically; on
    /// failure keeps the previous ones. Returns whether it succeeded.
    async fn reload_policy(&mut self, config: &Config) -> bool {
        let policy = geo::load_policy(config, now().wall)
            .and_then(|p| geo::check_relay_location(config, &p).map(|()| p));
        match policy {
            Ok(p) => {
                self.to_workers(|| Input::Policy(p.clone())).await;
                self.policy = p;
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

/// Binds a non-blocking UDP socket (IPv6 sockets are IPv6-only) and asks for `buffer`-byte
/// receive and send buffers; the kernel caps them at `net.core.{r,w}mem_max`.
fn bind_udp(
    addr: SocketAddr,
    buffer: usize,
    reuse_port: bool,
) -> std::io::Result<std::net::UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    let _ = sock.set_recv_buffer_size(buffer);
    let _ = sock.set_send_buffer_size(buffer);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Warns when the kernel gave a socket smaller buffers than `relay.socket_buffer` asked for:
/// a burst larger than the buffer is lost before the relay sees it.
fn check_buffers(sock: &std::net::UdpSocket, wanted: usize) {
    let s = socket2::SockRef::from(sock);
    // Linux reports twice the size it was asked for (the other half is bookkeeping).
    for (what, got, sysctl) in [
        ("receive", s.recv_buffer_size(), "net.core.rmem_max"),
        ("send", s.send_buffer_size(), "net.core.wmem_max"),
    ] {
        match got {
            Ok(got) if got / 2 < wanted => {
                tracing::warn!(
                    target: "eeaturn::shell",
                    wanted,
                    got = got / 2,
                    "the kernel capped the UDP {what} buffers below relay.socket_buffer; bursts may be lost: raise it with `sysctl -w {sysctl}={wanted}` (and in /etc/sysctl.d/)"
                );
            }
            Ok(got) => {
                tracing::debug!(target: "eeaturn::shell", what, bytes = got / 2, "UDP socket buffers");
            }
            Err(e) => {
                tracing::debug!(target: "eeaturn::shell", error = %e, "cannot read the socket buffer size");
            }
        }
    }
}

/// Raises the open-file limit to its hard maximum: every allocation holds a socket.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(target: "eeaturn::shell", limit = n, "open-file limit"),
        Err(e) => {
            tracing::warn!(target: "eeaturn::shell", error = %e, "cannot raise the open-file limit");
        }
    }
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
