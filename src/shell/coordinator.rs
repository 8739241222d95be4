//! The coordinator: everything of the relay that is not on the data path. It reloads the
//! configuration, secrets, TLS certificate, API settings and policy on SIGHUP and when a
//! database file changes, hands the results to every worker, and publishes the merged counters
//! as metrics text. It decides nothing about TURN.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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
    pub(super) metrics_tx: tokio::sync::watch::Sender<String>,
    pub(super) shell_counters: crate::metrics::ShellCounters,
    pub(super) config: Config,
    pub(super) readers: Vec<JoinHandle<()>>,
    /// The evidence writer, when `[evidence]` is on.
    pub(super) evidence: Option<super::evidence::Writer>,
}

impl Coordinator {
    pub(super) async fn run(
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
        // After the workers: their last events (allocations ended at shutdown) are queued.
        if let Some(evidence) = self.evidence.take() {
            evidence.stop().await;
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
        if let Some(evidence) = &self.evidence {
            crate::metrics::render_evidence(&mut text, &evidence.metrics(), now().wall);
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
                // On record before any decision made under it.
                if let Some(evidence) = &self.evidence {
                    evidence.policy(p.clone()).await;
                }
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
