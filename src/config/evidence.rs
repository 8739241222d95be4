//! The `[evidence]` table: where and how the relay keeps its signed residency evidence
//! (`docs/evidence-format.md`), and the bounds that make it fail closed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use eeaturn_evidence::pseudonym::AddressMode;
use eeaturn_evidence::sign::PublicKey;

use super::{Error, duration, invalid};

/// The longest retention accepted: TSVC asks for deletion after three months at the latest.
pub const MAX_RETENTION: Duration = Duration::from_secs(92 * 86_400);
/// The file name looked for in `$CREDENTIALS_DIRECTORY` when `signing_key_file` is not set.
pub const CREDENTIAL_NAME: &str = "evidence-signing-key";

/// `[evidence]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvidence {
    /// Keep evidence at all. Off by default.
    #[serde(default)]
    pub enabled: bool,
    /// The node's evidence directory; relative to the config file.
    #[serde(default = "default_directory")]
    pub directory: String,
    /// The Ed25519 signing key (PKCS#8, PEM or DER); relative to the config file. Default:
    /// `$CREDENTIALS_DIRECTORY/evidence-signing-key` when systemd passes credentials.
    #[serde(default)]
    pub signing_key_file: Option<String>,
    /// The node id in every record. Default: the host name.
    #[serde(default)]
    pub node_id: Option<String>,
    /// The operator's site name. Default: the node id.
    #[serde(default)]
    pub site: Option<String>,
    /// How client and peer addresses and user ids are written.
    #[serde(default)]
    pub addresses: AddressMode,
    /// How long evidence is kept, at most 92 days.
    #[serde(
        default = "default_retention",
        deserialize_with = "duration::deserialize"
    )]
    pub retention: Duration,
    /// Segments roll when the clock enters a new interval of this length.
    #[serde(
        default = "default_segment_interval",
        deserialize_with = "duration::deserialize"
    )]
    pub segment_interval: Duration,
    /// Segments roll once they hold this many bytes, e.g. `"64MiB"`.
    #[serde(
        default = "default_segment_max_size",
        deserialize_with = "super::relay::deserialize_size"
    )]
    pub segment_max_size: usize,
    /// How often the open segment gets a signed checkpoint.
    #[serde(
        default = "default_checkpoint_interval",
        deserialize_with = "duration::deserialize"
    )]
    pub checkpoint_interval: Duration,
    /// `"interval"` (fsync at most a second behind) or `"always"` (every batch).
    #[serde(default)]
    pub fsync: Fsync,
    /// Events queued from the workers to the writer thread.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Records held in memory while writing fails, e.g. `"64MiB"`; beyond it every allocation
    /// ends with `evidence-unavailable`.
    #[serde(
        default = "default_memory_limit",
        deserialize_with = "super::relay::deserialize_size"
    )]
    pub memory_limit: usize,
    /// Public key files of signing keys this node used before a rotation; relative to the
    /// config file. The API's evidence report trusts them besides the current key.
    #[serde(default)]
    pub previous_public_keys: Vec<String>,
}

impl Default for RawEvidence {
    fn default() -> Self {
        Self {
            enabled: false,
            directory: default_directory(),
            signing_key_file: None,
            node_id: None,
            site: None,
            addresses: AddressMode::default(),
            retention: default_retention(),
            segment_interval: default_segment_interval(),
            segment_max_size: default_segment_max_size(),
            checkpoint_interval: default_checkpoint_interval(),
            fsync: Fsync::default(),
            queue_capacity: default_queue_capacity(),
            memory_limit: default_memory_limit(),
            previous_public_keys: Vec::new(),
        }
    }
}

fn default_directory() -> String {
    "/var/lib/eeaturn/evidence".to_owned()
}
fn default_retention() -> Duration {
    Duration::from_secs(90 * 86_400)
}
fn default_segment_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_segment_max_size() -> usize {
    64 << 20
}
fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_queue_capacity() -> usize {
    65_536
}
fn default_memory_limit() -> usize {
    64 << 20
}

/// `evidence.fsync`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// fsync at most a second after a record is written.
    #[default]
    Interval,
    /// fsync every batch before the writer takes the next.
    Always,
}

/// The validated `[evidence]` table (present only when `enabled`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceConfig {
    /// The node directory.
    pub directory: PathBuf,
    /// The signing key file.
    pub signing_key_file: PathBuf,
    /// The node id.
    pub node_id: String,
    /// The site name.
    pub site: String,
    /// How addresses are written.
    pub addresses: AddressMode,
    /// How long evidence is kept.
    pub retention: Duration,
    /// Segment roll interval.
    pub segment_interval: Duration,
    /// Segment size limit in bytes.
    pub segment_max_size: u64,
    /// Checkpoint interval.
    pub checkpoint_interval: Duration,
    /// fsync policy.
    pub fsync: Fsync,
    /// Capacity of the worker → writer queue, in events.
    pub queue_capacity: usize,
    /// Bytes of records held in memory while writing fails.
    pub memory_limit: usize,
    /// The public keys of this node's earlier signing keys (`previous_public_keys`), read
    /// and checked when the configuration is loaded.
    pub previous_public_keys: Vec<PublicKey>,
}

/// Validates `[evidence]`: `None` when it is off. Paths resolve against `base`.
pub(super) fn validate(raw: &RawEvidence, base: &Path) -> Result<Option<EvidenceConfig>, Error> {
    if !raw.enabled {
        return Ok(None);
    }
    if raw.directory.trim().is_empty() {
        return Err(invalid("evidence.directory", "must name a directory"));
    }
    let signing_key_file = match raw.signing_key_file.as_deref().map(str::trim) {
        Some("") => {
            return Err(invalid(
                "evidence.signing_key_file",
                "must name the PKCS#8 key file (make one with `eeaturn evidence keygen`)",
            ));
        }
        Some(f) => base.join(f),
        None => match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(dir) => Path::new(&dir).join(CREDENTIAL_NAME),
            None => {
                return Err(invalid(
                    "evidence.signing_key_file",
                    format!(
                        "is required unless systemd passes the key as the credential \
                         {CREDENTIAL_NAME:?} (LoadCredential=); make one with \
                         `eeaturn evidence keygen`"
                    ),
                ));
            }
        },
    };
    let node_id = match raw.node_id.as_deref().map(str::trim) {
        Some(n) => n.to_owned(),
        None => hostname(),
    };
    if node_id.is_empty() || node_id.len() > 253 || node_id.chars().any(char::is_control) {
        return Err(invalid(
            "evidence.node_id",
            "must be 1 to 253 printable characters",
        ));
    }
    let site = raw.site.as_deref().map_or(node_id.as_str(), str::trim);
    if site.is_empty() || site.chars().any(char::is_control) {
        return Err(invalid("evidence.site", "must be printable and not empty"));
    }
    if raw.retention.is_zero() || raw.retention > MAX_RETENTION {
        return Err(invalid(
            "evidence.retention",
            "must be between 1s and 92d: connection metadata is deleted after three months \
             at the latest",
        ));
    }
    if raw.segment_interval < Duration::from_secs(60)
        || raw.segment_interval > Duration::from_secs(86_400)
    {
        return Err(invalid(
            "evidence.segment_interval",
            "must be between 1m and 1d",
        ));
    }
    if raw.segment_max_size < 64 << 10 {
        return Err(invalid(
            "evidence.segment_max_size",
            "must be at least 64KiB",
        ));
    }
    if raw.checkpoint_interval.is_zero() || raw.checkpoint_interval > Duration::from_secs(3600) {
        return Err(invalid(
            "evidence.checkpoint_interval",
            "must be between 1s and 1h",
        ));
    }
    if !(16..=1 << 24).contains(&raw.queue_capacity) {
        return Err(invalid(
            "evidence.queue_capacity",
            "must be between 16 and 16777216 events",
        ));
    }
    if raw.memory_limit < 64 << 10 {
        return Err(invalid("evidence.memory_limit", "must be at least 64KiB"));
    }
    let mut previous_public_keys = Vec::new();
    for f in &raw.previous_public_keys {
        let path = base.join(f.trim());
        let key = PublicKey::from_file(&path).map_err(|e| {
            invalid(
                "evidence.previous_public_keys",
                format!(
                    "{}: {e} (list the `.pub` files that `eeaturn evidence keygen` wrote for \
                     this node's earlier keys)",
                    path.display()
                ),
            )
        })?;
        if !previous_public_keys.contains(&key) {
            previous_public_keys.push(key);
        }
    }
    Ok(Some(EvidenceConfig {
        directory: base.join(raw.directory.trim()),
        signing_key_file,
        site: site.to_owned(),
        node_id,
        addresses: raw.addresses,
        retention: raw.retention,
        segment_interval: raw.segment_interval,
        segment_max_size: raw.segment_max_size as u64,
        checkpoint_interval: raw.checkpoint_interval,
        fsync: raw.fsync,
        queue_capacity: raw.queue_capacity,
        memory_limit: raw.memory_limit,
        previous_public_keys,
    }))
}

/// The host name from the kernel, or `"eeaturn"` if it cannot be read.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "eeaturn".to_owned())
}
