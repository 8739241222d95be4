//! The coordinator: everything of the relay that is not on the data path. It reloads the
//! configuration, secrets, TLS certificate, API settings and policy on SIGHUP and when a
//! database file changes, hands the results to every worker, and publishes the merged counters
//! as metrics text. It decides nothing about TURN.

use std::sync::Arc;

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::lifecycle::Systemd;
use super::worker::{Input, WorkerHandle};
use super::{geo, load_secrets, now, stream};
use crate::config::Config;
use crate::policy::Policy;
use crate::relay::{Shared, Stats};

/// Everything of the relay that is not on the data path: reloads, metrics, the API.
pub(super) struct Coordinator {
    pub(super) workers: Vec<WorkerHandle>,
    pub(super) shared: Arc<Shared>,
    /// The policy in force (the workers hold clones), for the metrics.
    pub(super) policy: Policy,
    pub(super) api: Option<crate::api::Api>,
    pub(super) tls: Option<stream::SharedAcceptor>,
    pub(super) watch: geo::DbWatch,
    /// The metrics, when `metrics.listen` is set.
    pub(super) metrics: Option<crate::metrics::Metrics>,
    pub(super) shell_counters: crate::metrics::ShellCounters,
    /// The `[tls]` certificate's expiry, read at start and on every reload.
    pub(super) tls_not_after: Option<std::time::SystemTime>,
    pub(super) config: Config,
    pub(super) readers: Vec<JoinHandle<()>>,
    /// The evidence writer, when `[evidence]` is on.
    pub(super) evidence: Option<super::evidence::Writer>,
    /// Readiness, status and watchdog notifications to systemd.
    pub(super) systemd: Systemd,
    /// Refusals counted for the summary lines (written from here once due).
    pub(super) refusals: Arc<super::refusals::Refusals>,
}

/// What the rest of the process asks of the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Control {
    /// SIGTERM: drain first when `server.drain_timeout` is set, stop at the second.
    Terminate,
    /// SIGINT, or a stop from the embedding code: stop at once.
    Stop,
}

/// How often `STATUS=` is updated.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// How often a drain looks whether the last allocation has ended.
const DRAIN_CHECK_EVERY: Duration = Duration::from_millis(250);
/// The `node-stopped` reasons.
const STOP_SHUTDOWN: &str = "shutdown";
const STOP_DRAINED: &str = "drained";
const STOP_DRAIN_TIMEOUT: &str = "drain-timeout";

/// Formats whole seconds the way the config writes durations (`"15m"`).
fn humantime_secs(d: Duration) -> String {
    humantime_serde::re::humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

impl Coordinator {
    pub(super) async fn run(
        mut self,
        mut control: mpsc::UnboundedReceiver<Control>,
        mut hup: tokio::signal::unix::Signal,
    ) -> anyhow::Result<Stats> {
        let watch_every = self.config.geo.watch_interval;
        let mut watch_tick = tokio::time::interval(if watch_every.is_zero() {
            Duration::from_secs(86_400 * 365)
        } else {
            watch_every
        });
        watch_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        watch_tick.tick().await;
        let mut metrics_tick = tokio::time::interval(Duration::from_secs(1));
        metrics_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut status_tick = tokio::time::interval(STATUS_EVERY);
        status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let watchdog_every = self.systemd.watchdog_interval();
        let mut watchdog_tick =
            tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(86_400 * 365)));
        watchdog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain_tick = tokio::time::interval(DRAIN_CHECK_EVERY);
        drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Set when the drain starts: until when it may last.
        let mut drain_until: Option<tokio::time::Instant> = None;
        self.read_tls_not_after();
        self.publish_metrics();
        self.systemd.ready(&self.status_line(false));
        let reason = loop {
            tokio::select! {
                _ = hup.recv() => {
                    self.systemd.reloading();
                    self.reload().await;
                    self.systemd.ready(&self.status_line(drain_until.is_some()));
                }
                _ = metrics_tick.tick() => {
                    self.publish_metrics();
                    self.refusals.flush_if_due(now().mono);
                }
                _ = status_tick.tick() => {
                    self.systemd.status(&self.status_line(drain_until.is_some()));
                }
                _ = watchdog_tick.tick(), if watchdog_every.is_some() => {
                    let beats: Vec<_> = self.workers.iter().map(|w| w.heartbeat.clone()).collect();
                    if let Err(i) = self.systemd.watchdog(&beats) {
                        tracing::error!(target: "eeaturn::shell", worker = i, "a data-path worker has not turned its loop since the last check; the watchdog is not pinged");
                    }
                }
                _ = watch_tick.tick(), if !watch_every.is_zero() => {
                    if self.watch.changed() {
                        tracing::info!(target: "eeaturn::policy", "database files changed; reloading");
                        self.reload_policy(&self.config.clone()).await;
                    }
                }
                _ = drain_tick.tick(), if drain_until.is_some() => {
                    let left = self.shared.total();
                    if left == 0 {
                        tracing::info!(target: "eeaturn::shell", "drained: the last allocation has ended");
                        break STOP_DRAINED;
                    }
                    if drain_until.is_some_and(|t| tokio::time::Instant::now() >= t) {
                        tracing::warn!(target: "eeaturn::shell", allocations = left, "server.drain_timeout passed; ending the remaining allocations");
                        break STOP_DRAIN_TIMEOUT;
                    }
                }
                c = control.recv() => match c {
                    Some(Control::Terminate) if drain_until.is_none() && !self.config.drain_timeout.is_zero() => {
                        let timeout = self.config.drain_timeout;
                        drain_until = Some(tokio::time::Instant::now() + timeout);
                        self.to_workers(|| Input::Drain).await;
                        if let Some(api) = &self.api {
                            api.set_ready(false);
                        }
                        self.systemd.extend_timeout(timeout + Duration::from_secs(30));
                        let status = self.status_line(true);
                        self.systemd.stopping(&status);
                        tracing::info!(
                            target: "eeaturn::shell",
                            allocations = self.shared.total(),
                            timeout = %humantime_secs(timeout),
                            alternates = self.config.alternate_servers.len(),
                            "draining: new allocations are sent elsewhere, running ones continue until they end (SIGTERM again or SIGINT stops at once)"
                        );
                    }
                    Some(Control::Terminate | Control::Stop) | None => break STOP_SHUTDOWN,
                },
            }
        };
        self.systemd.stopping("stopping");
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
        self.refusals.flush(now().mono);
        // After the workers: their last events (allocations ended at shutdown) are queued.
        if let Some(evidence) = self.evidence.take() {
            evidence.stop(reason).await;
        }
        Ok(stats)
    }

    /// The `STATUS=` line: allocations now and the age of the country database.
    fn status_line(&self, draining: bool) -> String {
        let now_s = now()
            .wall
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let age = self.policy.geo().country.as_ref().map_or_else(
            || "no country database".to_owned(),
            |db| {
                let age = Duration::from_secs(now_s.saturating_sub(db.info().build_epoch));
                // Days are enough, and keep the line short.
                format!("country database {}d old", age.as_secs() / 86_400)
            },
        );
        let state = if draining { "draining: " } else { "" };
        format!("{state}{} allocations, {age}", self.shared.total())
    }

    /// Sends `make()` to every worker.
    async fn to_workers(&self, make: impl Fn() -> Input) {
        for w in &self.workers {
            let _ = w.input.send(make()).await;
        }
    }

    /// Sets the metrics from the workers' counters and everything else (when a listener is
    /// configured); scrapes render what was set last.
    fn publish_metrics(&mut self) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let mut stats = Stats::default();
        for w in &self.workers {
            stats.merge(&w.snapshot().stats);
        }
        let api = self.api.as_ref().map(crate::api::Api::counters);
        metrics.update(&crate::metrics::Sample {
            stats: &stats,
            allocations: self.shared.total(),
            policy: &self.policy,
            max_age: self.config.geo.max_age,
            shell: &self.shell_counters,
            api: api.as_ref(),
            evidence: self.evidence.as_ref().map(super::evidence::Writer::metrics),
            tls_not_after: self.tls_not_after,
            process: super::metrics::process(),
            connections_refused: &self.refusals.totals(stream::KIND),
            now: now().wall,
        });
    }

    /// Reads the `[tls]` certificate's expiry for the metrics (kept as it was on failure).
    fn read_tls_not_after(&mut self) {
        if self.metrics.is_none() {
            return;
        }
        if let Some(t) = &self.config.tls {
            match crate::tls::certificate_not_after(t) {
                Ok(at) => self.tls_not_after = Some(at),
                Err(e) => {
                    tracing::warn!(target: "eeaturn::shell", error = %format!("{e:#}"), "cannot read the certificate's expiry for the metrics");
                }
            }
        }
    }

    /// SIGHUP: re-reads the config file (when it came from one), the secrets, the policy and
    /// the databases. Each part that fails keeps its previous state and says why. Listeners,
    /// relay addresses and limits need a restart.
    async fn reload(&mut self) {
        let mut config = match &self.config.source {
            Some(path) => match Config::load(path) {
                Ok(c) => c,
                Err(e) => {
                    self.shell_counters.reloaded("config", false);
                    tracing::error!(target: "eeaturn::shell", error = %e, "config reload failed; keeping the previous configuration");
                    return;
                }
            },
            None => self.config.clone(),
        };
        self.shell_counters.reloaded("config", true);
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
                self.shell_counters.reloaded("secrets", true);
                tracing::info!(target: "eeaturn::shell", secrets = n, "reloaded secrets on SIGHUP");
            }
            Err(e) => {
                self.shell_counters.reloaded("secrets", false);
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
                    self.shell_counters.reloaded("tls", true);
                    if self.metrics.is_some() {
                        self.tls_not_after = crate::tls::certificate_not_after(t).ok();
                    }
                    tracing::info!(target: "eeaturn::shell", "reloaded the TLS certificate; new handshakes use it");
                }
                Err(e) => {
                    self.shell_counters.reloaded("tls", false);
                    tracing::error!(target: "eeaturn::shell", error = %format!("{e:#}"), "TLS certificate reload failed; keeping the previous certificate");
                }
            }
        }
        match (&self.api, &config.api) {
            (Some(api), Some(a)) => match api.reload(a, config.tls.as_ref()) {
                Ok(()) => {
                    self.shell_counters.reloaded("api", true);
                    tracing::info!(target: "eeaturn::api", keys = a.keys.len(), "reloaded the API settings and keys");
                }
                Err(e) => {
                    self.shell_counters.reloaded("api", false);
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
                // On record before any decision made under it.
                if let Some(evidence) = &self.evidence {
                    evidence.policy(p.clone()).await;
                }
                self.to_workers(|| Input::Policy(p.clone())).await;
                self.policy = p;
                self.shell_counters.reloaded("policy", true);
                tracing::info!(target: "eeaturn::policy", "policy and databases reloaded; existing permissions are re-checked at their next refresh");
                true
            }
            Err(e) => {
                self.shell_counters.reloaded("policy", false);
                tracing::error!(target: "eeaturn::policy", error = %format!("{e:#}"), "policy reload failed; keeping the previous policy and databases");
                false
            }
        }
    }
}
