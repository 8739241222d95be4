//! Quiet logs under attack: refusals are counted per rule and written as one summary line per
//! interval, not one line each.
//!
//! A refusal is anything an outsider can cause at will and in bulk: a policy refusal (a TCP
//! connect or an Allocate from a refused address, a refused peer), a refused credential, a
//! connection over a connection limit or shed for a new one. The first refusal after a quiet
//! interval is written at once (as a summary of one); the ones after it are counted and
//! written together when [`SUMMARY_INTERVAL`] has passed since the last line. So a flood costs
//! at most one log line per interval, whatever its rate, and the counters in `/metrics` keep
//! the exact numbers (`eeaturn_policy_denials_total`, `eeaturn_auth_failures_total`,
//! `eeaturn_connections_refused_total`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The shortest time between two summary lines.
pub(crate) const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// The counts since the last summary line, by (kind, rule).
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Counts by (kind, rule); kinds and rules are a bounded set (rule ids of the policy,
    /// names of limits and reasons), never client data.
    counts: BTreeMap<(&'static str, &'static str), u64>,
    /// When the last line was written.
    last: Option<Instant>,
    /// Counts since the start, by (kind, rule), for `/metrics`.
    totals: BTreeMap<(&'static str, &'static str), u64>,
}

impl Refusals {
    /// Counts `n` refusals of `kind` by `rule`, and writes the summary if it is due.
    pub(crate) fn note(&self, kind: &'static str, rule: &'static str, n: u64, now: Instant) {
        if n == 0 {
            return;
        }
        let mut s = self.lock();
        *s.counts.entry((kind, rule)).or_default() += n;
        *s.totals.entry((kind, rule)).or_default() += n;
        s.write_if_due(now);
    }

    /// Writes the summary if refusals are counted and the interval has passed (called once a
    /// second, so that the last refusals of a burst are not held back).
    pub(crate) fn flush_if_due(&self, now: Instant) {
        self.lock().write_if_due(now);
    }

    /// Writes what is counted now, due or not (at shutdown).
    pub(crate) fn flush(&self, now: Instant) {
        self.lock().write(now);
    }

    /// The counts of `kind` since the start, by rule.
    pub(crate) fn totals(&self, kind: &str) -> Vec<(&'static str, u64)> {
        self.lock()
            .totals
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, rule), n)| (*rule, *n))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn write_if_due(&mut self, now: Instant) {
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= SUMMARY_INTERVAL);
        if due {
            self.write(now);
        }
    }

    fn write(&mut self, now: Instant) {
        if self.counts.is_empty() {
            return;
        }
        let total: u64 = self.counts.values().sum();
        let mut by_rule = String::new();
        for ((kind, rule), n) in &self.counts {
            let sep = if by_rule.is_empty() { "" } else { " " };
            let _ = write!(by_rule, "{sep}{kind}:{rule}={n}");
        }
        let since = self
            .last
            .map(|l| now.saturating_duration_since(l).as_secs());
        tracing::warn!(
            target: "eeaturn::policy",
            total,
            by_rule = %by_rule,
            since_s = since,
            "refusals since the last summary"
        );
        self.counts.clear();
        self.last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_between_lines_and_resets() {
        let r = Refusals::default();
        #[expect(
            clippy::disallowed_methods,
            reason = "an arbitrary origin for the test"
        )]
        let t0 = Instant::now();
        r.note("policy", "client:outside-region", 1, t0);
        // The first was written at once; these wait for the interval.
        for i in 0..1000 {
            r.note(
                "policy",
                "client:outside-region",
                1,
                t0 + Duration::from_millis(i),
            );
        }
        r.note(
            "connection",
            "limit-per-source",
            5,
            t0 + Duration::from_secs(1),
        );
        r.flush_if_due(t0 + Duration::from_secs(9));
        {
            let s = r.lock();
            assert_eq!(
                s.counts.get(&("policy", "client:outside-region")),
                Some(&1000)
            );
            assert_eq!(s.counts.get(&("connection", "limit-per-source")), Some(&5));
            assert_eq!(s.last, Some(t0));
        }
        r.flush_if_due(t0 + SUMMARY_INTERVAL);
        assert_eq!(r.totals("connection"), vec![("limit-per-source", 5)]);
        assert_eq!(r.totals("policy"), vec![("client:outside-region", 1001)]);
        let s = r.lock();
        assert!(s.counts.is_empty());
        assert_eq!(s.last, Some(t0 + SUMMARY_INTERVAL));
    }
}
