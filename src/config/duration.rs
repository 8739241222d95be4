//! Durations in the config and on the command line: `"30s"`, `"10m"`, `"1h30m"`, `"2d"`, and
//! everything else [`humantime`](humantime_serde::re::humantime) reads (`"1h 30m"`, `"90 min"`,
//! `"1.5h"`, `"2weeks"`). Whole seconds only: every duration the relay uses is counted in
//! seconds (STUN LIFETIME, credential expiry), so `"500ms"` is refused rather than rounded.

use std::time::Duration;

use humantime_serde::re::humantime;
use serde::{Deserializer, de};

/// What every duration error ends with: how to write one.
const FIX: &str = "write e.g. \"30s\", \"10m\", \"1h\", \"2d\" or \"1h30m\"";

/// Parses a duration of whole seconds, e.g. `"90s"`, `"10m"`, `"1h30m"` or `"2d"`.
///
/// # Errors
///
/// Returns a message saying what is wrong and what is accepted.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); {FIX}"))?;
    whole_seconds(d)
}

/// `#[serde(deserialize_with = "duration::deserialize")]` for a [`Duration`] field: humantime-serde
/// reads it; the message of a bad value gains the fix, and fractions of a second are refused.
pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    // The TOML error's text ends in a newline; the fix goes on the same line.
    let d: Duration = humantime_serde::deserialize(d)
        .map_err(|e: D::Error| de::Error::custom(format!("{}; {FIX}", e.to_string().trim_end())))?;
    whole_seconds(d).map_err(de::Error::custom)
}

/// `#[serde(default, deserialize_with = "duration::deserialize_option")]` for an optional
/// [`Duration`] field.
pub(super) fn deserialize_option<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    deserialize(d).map(Some)
}

fn whole_seconds(d: Duration) -> Result<Duration, String> {
    if d.subsec_nanos() == 0 {
        Ok(d)
    } else {
        Err(format!(
            "{} has a fraction of a second; durations are whole seconds, {FIX}",
            humantime::format_duration(d)
        ))
    }
}
