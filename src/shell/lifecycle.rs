//! The relay's side of the systemd service protocol (`Type=notify`, sd_notify(3)): readiness,
//! status, reloads, stopping and the watchdog, through the `sd-notify` crate. Without
//! `NOTIFY_SOCKET` (not under systemd, or `Type=simple`) every call does nothing.
//!
//! It also holds the workers' heartbeats: each worker bumps its counter once per turn of its
//! event loop (at least twice a second while idle), and the watchdog is pinged only when every
//! counter moved since the last ping, so a stuck data path gets the relay restarted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

/// A worker's heartbeat: bumped once per loop turn, read by the coordinator.
pub(super) type Heartbeat = Arc<AtomicU64>;

/// The notifications of one relay process.
#[derive(Debug)]
pub(super) struct Systemd {
    /// Whether systemd listens (`NOTIFY_SOCKET` is set).
    enabled: bool,
    /// How often to check the heartbeats and ping, when systemd runs a watchdog.
    watchdog: Option<Duration>,
    /// The heartbeats seen at the last check, one per worker.
    seen: Vec<u64>,
}

impl Systemd {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` (left in the environment).
    pub(super) fn from_env() -> Self {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let mut usec = 0;
        let watchdog = (enabled && sd_notify::watchdog_enabled(false, &mut usec))
            .then(|| ping_interval(Duration::from_micros(usec)));
        Self {
            enabled,
            watchdog,
            seen: Vec::new(),
        }
    }

    /// How often [`Systemd::watchdog`] must run, if systemd watches the relay.
    pub(super) fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// `READY=1` with a status line: every listener is bound and the evidence is open.
    pub(super) fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `STATUS=...`, shown by `systemctl status`.
    pub(super) fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// `RELOADING=1` with the monotonic time (a reload starts; [`Systemd::ready`] ends it).
    pub(super) fn reloading(&self) {
        if !self.enabled {
            return;
        }
        match NotifyState::monotonic_usec_now() {
            Ok(t) => self.send(&[NotifyState::Reloading, t]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// `STOPPING=1` with a status line.
    pub(super) fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// `EXTEND_TIMEOUT_USEC=`: the stop takes longer (a drain), tell systemd not to kill yet.
    pub(super) fn extend_timeout(&self, by: Duration) {
        let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
        self.send(&[NotifyState::ExtendTimeoutUsec(usec)]);
    }

    /// Pings the watchdog if every worker turned its loop since the last check; returns the
    /// index of a worker that did not (and then pings nothing).
    pub(super) fn watchdog(&mut self, heartbeats: &[Heartbeat]) -> Result<(), usize> {
        let now: Vec<u64> = heartbeats
            .iter()
            .map(|h| h.load(Ordering::Relaxed))
            .collect();
        let stalled = if self.seen.len() == now.len() {
            self.seen.iter().zip(&now).position(|(a, b)| a == b)
        } else {
            None
        };
        self.seen = now;
        match stalled {
            Some(i) => Err(i),
            None => {
                self.send(&[NotifyState::Watchdog]);
                Ok(())
            }
        }
    }

    fn send(&self, state: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(false, state) {
            tracing::warn!(target: "eeaturn::shell", error = %e, "cannot notify systemd");
        }
    }
}

/// How often to check and ping for a watchdog of `timeout`: a third of it (so a ping is never
/// late even if one check comes late), but not more often than workers turn while idle.
fn ping_interval(timeout: Duration) -> Duration {
    (timeout / 3).max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn quiet() -> Systemd {
        Systemd {
            enabled: false,
            watchdog: Some(Duration::from_secs(10)),
            seen: Vec::new(),
        }
    }

    #[test]
    fn the_watchdog_is_pinged_only_while_every_worker_turns() {
        let mut systemd = quiet();
        let beats: Vec<Heartbeat> = (0..2).map(|_| Arc::new(AtomicU64::new(0))).collect();

        let first = systemd.watchdog(&beats);
        beats[0].fetch_add(1, Ordering::Relaxed);
        beats[1].fetch_add(3, Ordering::Relaxed);
        let both_moved = systemd.watchdog(&beats);
        beats[0].fetch_add(1, Ordering::Relaxed);
        let second_stuck = systemd.watchdog(&beats);

        assert_eq!(first, Ok(()), "nothing seen yet: no verdict");
        assert_eq!(both_moved, Ok(()));
        assert_eq!(second_stuck, Err(1));
    }

    #[test]
    fn pings_come_at_a_third_of_the_timeout_and_at_most_once_a_second() {
        assert_eq!(
            ping_interval(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        assert_eq!(
            ping_interval(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }
}
