//! The `[tls]` table: certificate, key and profile of the `tls://` listeners (and of the
//! `https://` API). The files are read and checked by [`crate::tls`] at start.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::server::{Listen, ListenTransport};
use super::{Error, invalid};

/// The file name looked for in `$CREDENTIALS_DIRECTORY` when `private_key` is not set.
pub(super) const KEY_CREDENTIAL: &str = "tls-key";

/// `[tls]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM file with the certificate chain (leaf first); relative to the config file.
    pub certificate: String,
    /// PEM file with the private key (PKCS#8, SEC1 or PKCS#1). Default:
    /// `$CREDENTIALS_DIRECTORY/tls-key` when systemd passes credentials (copied at start: a
    /// renewed key then takes a restart).
    #[serde(default)]
    pub private_key: Option<String>,
    /// The TLS profile; only `"bsi"` (BSI TR-02102-2) exists.
    #[serde(default)]
    pub profile: TlsProfile,
    /// Key-exchange groups offered: `"secp256r1"` (or `"P-256"`), `"secp384r1"` (or
    /// `"P-384"`); the client's preference decides among them.
    #[serde(default = "default_groups")]
    pub groups: Vec<TlsGroup>,
}

fn default_groups() -> Vec<TlsGroup> {
    vec![TlsGroup::Secp256r1, TlsGroup::Secp384r1]
}

/// `tls.profile`: the protocol versions and cipher suites allowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum TlsProfile {
    /// BSI TR-02102-2: TLS 1.2 and 1.3, AES-GCM suites (see docs/tls.md).
    #[default]
    #[serde(rename = "bsi")]
    Bsi,
}

/// A key-exchange group of the bsi profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TlsGroup {
    /// NIST P-256.
    #[serde(rename = "secp256r1", alias = "P-256")]
    Secp256r1,
    /// NIST P-384.
    #[serde(rename = "secp384r1", alias = "P-384")]
    Secp384r1,
}

/// The TLS settings of the `tls://` listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub certificate: PathBuf,
    /// PEM private key.
    pub private_key: PathBuf,
    /// Key-exchange groups offered (the client picks among them).
    pub groups: Vec<TlsGroup>,
}

/// Validates `[tls]`: required when a `tls://` listener exists; paths resolve against `base`.
pub(super) fn validate(
    raw: Option<&RawTls>,
    base: &Path,
    listen: &[Listen],
) -> Result<Option<TlsConfig>, Error> {
    let wants_tls = listen.iter().any(|l| l.transport == ListenTransport::Tls);
    let Some(raw) = raw else {
        if wants_tls {
            return Err(invalid(
                "tls",
                "a tls:// listener needs a [tls] table with certificate and private_key",
            ));
        }
        return Ok(None);
    };
    let TlsProfile::Bsi = raw.profile;
    if raw.groups.is_empty() {
        return Err(invalid(
            "tls.groups",
            "needs at least one group, e.g. [\"secp256r1\"]",
        ));
    }
    let mut groups = Vec::new();
    for &group in &raw.groups {
        if !groups.contains(&group) {
            groups.push(group);
        }
    }
    if raw.certificate.trim().is_empty() {
        return Err(invalid("tls.certificate", "must name a PEM file"));
    }
    let private_key = match raw.private_key.as_deref().map(str::trim) {
        Some("") => return Err(invalid("tls.private_key", "must name a PEM file")),
        Some(f) => base.join(f),
        None => super::credential("tls.private_key", KEY_CREDENTIAL)?,
    };
    Ok(Some(TlsConfig {
        certificate: base.join(raw.certificate.trim()),
        private_key,
        groups,
    }))
}
