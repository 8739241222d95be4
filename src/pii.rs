//! Redaction of personal data in logs.
//!
//! Client and peer IP addresses are personal data. Wrap them in [`Pii`] whenever they reach a
//! log line: they print as `<redacted>` unless the operator set `log.log_ips = true`.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

static SHOW: AtomicBool = AtomicBool::new(false);

/// Sets whether [`Pii`] values print in clear (from `log.log_ips`).
pub fn set_show_personal_data(show: bool) {
    SHOW.store(show, Ordering::Relaxed);
}

/// A value that is personal data: redacted in `Display` and `Debug` unless enabled.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Pii<T>(pub T);

impl<T: fmt::Display> fmt::Display for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if SHOW.load(Ordering::Relaxed) {
            self.0.fmt(f)
        } else {
            f.write_str("<redacted>")
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if SHOW.load(Ordering::Relaxed) {
            self.0.fmt(f)
        } else {
            f.write_str("<redacted>")
        }
    }
}
