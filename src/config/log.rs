//! The `[log]` table.

use serde::Deserialize;

/// `[log]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// A `tracing` filter, e.g. `"info"` or `"eeaturn=debug"`.
    #[serde(default = "default_level")]
    pub level: String,
    /// `"text"` or `"json"`.
    #[serde(default)]
    pub format: LogFormat,
    /// Writes client and peer IP addresses into logs (personal data). Off by default.
    #[serde(default)]
    pub log_ips: bool,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: default_level(),
            format: LogFormat::default(),
            log_ips: false,
        }
    }
}

fn default_level() -> String {
    "info".to_owned()
}

/// `log.format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Filter directive.
    pub level: String,
    /// JSON instead of text.
    pub json: bool,
    /// Log IP addresses unredacted.
    pub log_ips: bool,
}

impl From<RawLog> for LogConfig {
    fn from(raw: RawLog) -> Self {
        Self {
            level: raw.level,
            json: raw.format == LogFormat::Json,
            log_ips: raw.log_ips,
        }
    }
}
