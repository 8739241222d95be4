//! The shell: threads, sockets, timers and signals around the sans-IO [`Server`].
//!
//! The data path runs on worker threads (`worker`): each owns a [`Server`], its listening
//! UDP sockets and the relay sockets of its allocations, and relays without crossing a thread.
//! The main runtime keeps what is not on the data path: the TCP/TLS listeners (their framed
//! messages go to a worker), the credential API, the metrics listener, and the coordinator,
//! which reloads on SIGHUP and database changes and hands the results to every worker.
//! Nothing here decides anything about TURN.

mod batch;
mod connections;
mod coordinator;
pub(crate) mod evidence;
pub mod geo;
mod lifecycle;
mod log;
mod metrics;
mod offload;
mod refusals;
mod sockets;
mod stream;
mod worker;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{Config, ListenTransport};
use crate::credentials::Secrets;
use crate::relay::{Now, Server, Shared, Stats};

pub use self::evidence::{DirectoryInUse, open_log};

use self::coordinator::{Control, Coordinator};
use self::sockets::{bind_udp, check_buffers, raise_fd_limit};
use self::worker::WorkerHandle;
use crate::policy::Policy;

/// A running relay, as returned by [`start`].
pub struct Running {
    /// The bound listening addresses (with the OS-chosen ports where the config said 0).
    pub local_addrs: Vec<SocketAddr>,
    /// The bound metrics address, when `metrics.listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    /// The bound credential API address, when `[api]` is set.
    pub api_addr: Option<SocketAddr>,
    control: Controller,
    task: JoinHandle<anyhow::Result<Stats>>,
}

impl Running {
    /// Stops the relay at once (ending every allocation) and waits for it, returning the
    /// core's final counters.
    ///
    /// # Errors
    ///
    /// Returns the coordinator's error, if it failed.
    pub async fn stop(self) -> anyhow::Result<Stats> {
        self.control.stop();
        self.wait().await
    }

    /// Returns a handle that asks the relay to stop or drain, for signal handlers.
    pub fn controller(&self) -> Controller {
        self.control.clone()
    }

    /// Waits until the relay has stopped (after [`Controller::stop`], or a drain that ended),
    /// returning the core's final counters.
    ///
    /// # Errors
    ///
    /// Returns the coordinator's error, if it failed.
    pub async fn wait(self) -> anyhow::Result<Stats> {
        self.task.await.context("relay task panicked")?
    }
}

/// Asks a running relay to stop: what SIGTERM and SIGINT do.
#[derive(Debug, Clone)]
pub struct Controller(mpsc::UnboundedSender<Control>);

impl Controller {
    /// SIGTERM: with `server.drain_timeout` above zero the first call starts the drain (new
    /// Allocates get 300 with `server.alternate_servers`, or 508; running allocations keep
    /// relaying) and the relay stops once the last allocation has ended or the timeout has
    /// passed; a second call, or a zero timeout, stops at once.
    pub fn terminate(&self) {
        let _ = self.0.send(Control::Terminate);
    }

    /// SIGINT: stops at once, ending every allocation.
    pub fn stop(&self) {
        let _ = self.0.send(Control::Stop);
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
    let policy = geo::load_policy(&config, now().wall)?;
    geo::check_relay_location(&config, &policy)?;
    raise_fd_limit();

    let (udp, mut local_addrs) = bind_udp_listeners(&config)?;
    let evidence = match &config.evidence {
        Some(ev) => Some(evidence::Writer::start(&config, ev, &policy)?),
        None => None,
    };
    // One count of refusals for the whole relay: one summary line per interval.
    let refusals = Arc::new(refusals::Refusals::default());
    let (workers, shared) = spawn_workers(
        &config,
        udp,
        &secrets,
        &policy,
        &mut rng,
        evidence.as_ref(),
        &refusals,
    )?;
    let tls = match &config.tls {
        Some(t) => {
            tracing::info!(target: "eeaturn::shell", "{}", crate::tls::profile_summary(&t.groups));
            Some(stream::acceptor(t)?)
        }
        None => None,
    };
    let (stream_addrs, mut readers) =
        spawn_stream_listeners(&config, &workers, tls.as_ref(), &refusals).await?;
    local_addrs.extend(stream_addrs);
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    // Installed before `start` returns, so a SIGHUP after "ready" never hits the default
    // action (terminate).
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let watch = geo::DbWatch::new(&config);
    let mut metrics_addr = None;
    let metrics = match &config.metrics {
        Some(m) => {
            let recorder = crate::metrics::Metrics::new();
            let (local, task) = metrics::serve(m, tls.clone(), recorder.handle()).await?;
            let scheme = if m.https { "https" } else { "http" };
            tracing::info!(target: "eeaturn::shell", metrics = %format!("{scheme}://{local}/metrics"), token = m.token_file.is_some(), "serving metrics");
            readers.push(task);
            metrics_addr = Some(local);
            Some(recorder)
        }
        None => None,
    };
    let api = match &config.api {
        Some(a) => {
            let source = evidence
                .as_ref()
                .zip(config.evidence.as_ref())
                .map(|(w, ev)| crate::api::EvidenceSource {
                    directory: ev.directory.clone(),
                    node_id: ev.node_id.clone(),
                    site: ev.site.clone(),
                    retention: ev.retention,
                    public_key: w.public_key,
                    previous_public_keys: ev
                        .previous_public_keys
                        .iter()
                        .filter(|k| **k != w.public_key)
                        .copied()
                        .collect(),
                    status: w.status.clone(),
                });
            let api = crate::api::Api::start(a, config.tls.as_ref(), secrets, source).await?;
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
        metrics,
        shell_counters: crate::metrics::ShellCounters::default(),
        tls_not_after: None,
        config,
        readers,
        evidence,
        // READY=1 is sent as the coordinator starts: every listener is bound and the evidence
        // is open by now.
        systemd: lifecycle::Systemd::from_env(),
        refusals,
    };
    let task = tokio::spawn(coordinator.run(control_rx, hup));
    Ok(Running {
        local_addrs,
        metrics_addr,
        api_addr,
        control: Controller(control_tx),
        task,
    })
}

/// Binds every UDP listening address once per worker (SO_REUSEPORT): the kernel hashes a
/// client's address and port to one of the sockets, so a client always reaches the same
/// worker, the one holding its allocation. Returns each worker's sockets and the bound
/// addresses.
fn bind_udp_listeners(
    config: &Config,
) -> anyhow::Result<(Vec<Vec<std::net::UdpSocket>>, Vec<SocketAddr>)> {
    let n = config.workers.max(1);
    let mut local_addrs = Vec::new();
    let mut udp: Vec<Vec<std::net::UdpSocket>> = (0..n).map(|_| Vec::new()).collect();
    for l in config
        .listen
        .iter()
        .filter(|l| l.transport == ListenTransport::Udp)
    {
        if n > 1 && l.addr.port() != 0 {
            refuse_shared_port(l.addr).with_context(|| format!("binding listener {l}"))?;
        }
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
    Ok((udp, local_addrs))
}

/// Loads the kernel fast path as `relay.offload` says: `None` when it is off, or unavailable
/// under `"auto"` (logged once, with the reason).
///
/// # Errors
///
/// Fails under `"required"` when the fast path cannot be loaded.
fn load_offload(config: &Config) -> anyhow::Result<Option<Arc<offload::KernelMaps>>> {
    use crate::config::Offload;
    if config.sockets.offload == Offload::Off {
        return Ok(None);
    }
    let addrs: Vec<std::net::IpAddr> = config
        .relay
        .v4
        .into_iter()
        .chain(
            config
                .listen
                .iter()
                .filter(|l| l.transport == ListenTransport::Udp)
                .map(|l| l.addr.ip()),
        )
        .filter(|ip| ip.is_ipv4() && !ip.is_unspecified())
        .collect();
    match offload::KernelMaps::load(&addrs) {
        Ok(maps) => {
            tracing::info!(target: "eeaturn::offload", interfaces = ?maps.interfaces(), "kernel fast path on: ChannelData over UDP/IPv4 relayed by XDP");
            Ok(Some(maps))
        }
        Err(e) if config.sockets.offload == Offload::Required => {
            let fix = e.fix();
            Err(anyhow::Error::new(e).context(format!(
                "relay.offload = \"required\": the kernel fast path is not available (fix: {fix}; or set relay.offload = \"auto\" to relay in user space instead)"
            )))
        }
        Err(e) => {
            // The one line about it: the relay carries on in user space, as it does with "off".
            tracing::info!(target: "eeaturn::offload", cause = %e, fix = %e.fix(), "kernel fast path unavailable (relay.offload = \"auto\"): relaying in user space");
            Ok(None)
        }
    }
}

/// Fails when another socket already holds `addr`. The workers' sockets share their port
/// with `SO_REUSEPORT`, which would as happily share it with a second process of the same
/// user (a second relay started by hand, a test left running): the kernel would then spread
/// clients over both and each would refuse the other's allocations. A probe bound without
/// `SO_REUSEPORT` fails with `EADDRINUSE` when anything holds the address, and is released
/// before the workers bind.
fn refuse_shared_port(addr: SocketAddr) -> anyhow::Result<()> {
    match bind_udp(addr, 0, false) {
        Ok(probe) => {
            drop(probe);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(anyhow::anyhow!(
            "{addr} is already in use by another socket (another eeaturn, or another \
             server, on this port?); stop it or change server.listen"
        )),
        Err(e) => Err(e.into()),
    }
}

/// Starts one data-path worker per set of listening sockets, each with its own [`Server`]
/// (its own RNG drawn from `rng`, the nonce key too); returns them and the [`Shared`] state of them all.
fn spawn_workers(
    config: &Config,
    udp: Vec<Vec<std::net::UdpSocket>>,
    secrets: &Secrets,
    policy: &Policy,
    rng: &mut StdRng,
    evidence: Option<&evidence::Writer>,
    refusals: &Arc<refusals::Refusals>,
) -> anyhow::Result<(Vec<WorkerHandle>, Arc<Shared>)> {
    // One nonce key for every worker: a client's requests may reach any of them.
    let mut nonce_key = [0u8; 32];
    rng.fill_bytes(&mut nonce_key);
    let shared = Arc::new(Shared::new(&config.server_config(), rng));
    let kernel = load_offload(config)?;
    let kernel = kernel.as_ref();
    let relay_sockets = worker::RelaySockets {
        ports: config.relay.ports.clone(),
        buffer: config.sockets.buffer,
        gso: config.sockets.gso,
        reserved: worker::Reserved::default(),
        v4: config.relay.v4,
        v6: config.relay.v6,
    };
    let mut workers = Vec::with_capacity(udp.len());
    for (i, socks) in udp.into_iter().enumerate() {
        let server = Server::new(
            config.server_config(),
            secrets.clone(),
            policy.clone(),
            nonce_key,
            StdRng::from_rng(&mut *rng),
        )
        .with_shared(shared.clone());
        let server = if kernel.is_some() {
            server.with_kernel_paths()
        } else {
            server
        };
        workers.push(
            worker::spawn(
                format!("eeaturn-worker-{i}"),
                server,
                kernel.map(|k| offload::WorkerPaths::new(k.clone())),
                socks,
                relay_sockets.clone(),
                evidence.map(evidence::Writer::sink),
                refusals.clone(),
            )
            .context("starting a data-path worker")?,
        );
    }
    tracing::info!(target: "eeaturn::shell", workers = workers.len(), "data-path workers started");
    Ok((workers, shared))
}

/// Binds the TCP and TLS listeners; their connections hand framed messages to the worker
/// picked by the client's port. Returns the bound addresses and the accept tasks.
async fn spawn_stream_listeners(
    config: &Config,
    workers: &[WorkerHandle],
    tls: Option<&stream::SharedAcceptor>,
    refusals: &Arc<refusals::Refusals>,
) -> anyhow::Result<(Vec<SocketAddr>, Vec<JoinHandle<()>>)> {
    let inputs: Arc<[worker::WorkerInput]> = workers.iter().map(|w| w.input.clone()).collect();
    // One set of counters for every TCP/TLS listener: the limits are per relay, not per port.
    let settings = stream::StreamSettings::new(&config.connections, refusals.clone());
    let mut addrs = Vec::new();
    let mut tasks = Vec::new();
    for l in config
        .listen
        .iter()
        .filter(|l| l.transport != ListenTransport::Udp)
    {
        let acceptor = if l.transport == ListenTransport::Tls {
            tls.cloned()
        } else {
            None
        };
        let (local, task) =
            stream::spawn_listener(l.addr, acceptor, settings.clone(), inputs.clone())
                .await
                .with_context(|| format!("binding listener {l}"))?;
        tasks.push(task);
        addrs.push(local);
        let bound = crate::config::Listen { addr: local, ..*l };
        tracing::info!(target: "eeaturn::shell", listener = %bound, "listening");
    }
    Ok((addrs, tasks))
}

/// Runs the relay until it stops: `signals` is handed the relay's [`Controller`] and asks it
/// to drain or stop (see [`Controller::terminate`]); it is dropped once the relay has stopped.
///
/// # Errors
///
/// Fails when the relay cannot start or a worker fails.
pub async fn run<F: Future<Output = ()>>(
    config: Config,
    signals: impl FnOnce(Controller) -> F,
) -> anyhow::Result<()> {
    let running = start(config).await?;
    tracing::info!(target: "eeaturn::shell", "ready");
    let signals = signals(running.controller());
    let stopped = running.wait();
    tokio::pin!(stopped);
    let stats = tokio::select! {
        stats = &mut stopped => stats?,
        // The signal future ended (it normally never does): wait for the stop it asked for.
        () = signals => stopped.await?,
    };
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
