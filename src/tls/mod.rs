//! The TLS profile of the `tls://` listeners: `bsi`, after BSI TR-02102-2.
//!
//! [`server_config`] turns the `[tls]` table into a rustls [`ServerConfig`] with the *ring*
//! provider passed explicitly (the process-wide default provider is never installed or
//! consulted), so what a listener offers is exactly what this module lists:
//!
//! - protocol versions TLS 1.3 and TLS 1.2 ([`PROTOCOL_VERSIONS`]);
//! - AEAD AES-GCM cipher suites with ECDHE only, in server order ([`CIPHER_SUITES`]): no
//!   ChaCha20-Poly1305, no CBC, no static RSA or DH key exchange;
//! - ECDHE over exactly the configured `tls.groups` (P-256 and/or P-384); never X25519;
//! - certificates with ECDSA P-256/P-384 keys, or RSA keys of at least [`MIN_RSA_BITS`] bits
//!   that sign with RSASSA-PSS only; Ed25519 keys are refused;
//! - the Extended Master Secret extension (RFC 7627) is used with every TLS 1.2 client that
//!   offers it (all current ones do);
//! - no session resumption (no session cache, no tickets, no 0-RTT data): every connection
//!   makes a full ECDHE handshake and is authenticated by the current certificate;
//! - no client certificates, no ALPN.
//!
//! rustls has no code for renegotiation (a ClientHello on an established TLS 1.2 connection
//! is answered with a `no_renegotiation` warning), TLS-level compression (only the null
//! method is accepted), SSL 3.0, TLS 1.0 or 1.1, CBC, RC4, 3DES, export or NULL suites, or
//! suites without forward secrecy, so none of these can be switched on by mistake.
//!
//! `docs/tls.md` is the auditor's version of this list, with the reasoning against the TR.
//!
//! This file holds the profile and the builders; `pem` reads the certificate and key files
//! (with messages that name the config key and the file), and `signing` wraps the server key
//! so that it signs only as the profile allows.
//!
//! Each call reads the PEM files afresh and returns a new configuration, which is how the
//! shell reloads certificates on SIGHUP: established connections keep the configuration they
//! were accepted with, new handshakes get the new one.

mod pem;
mod signing;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use rustls::crypto::{CryptoProvider, SupportedKxGroup, ring};
use rustls::server::{NoServerSessionStorage, ServerConfig};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{Error as TlsError, InconsistentKeys, SupportedCipherSuite, SupportedProtocolVersion};

use crate::config::{TlsConfig, TlsGroup};

use self::pem::{load_certificates, load_private_key};
use self::signing::BsiSigningKey;

/// The protocol versions of the bsi profile.
pub static PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The cipher suites of the bsi profile, in the server's order of preference. The TLS 1.2
/// ECDSA suites serve ECDSA certificates and the RSA suites RSA certificates.
pub static CIPHER_SUITES: &[SupportedCipherSuite] = &[
    ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
    ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
    ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
];

/// The smallest RSA modulus the bsi profile accepts for the server key (TR-02102-1/-2 ask for
/// 3000 bits from 2024 on).
pub const MIN_RSA_BITS: usize = 3000;

/// The key-exchange group that implements `group`.
#[must_use]
pub fn kx_group(group: TlsGroup) -> &'static dyn SupportedKxGroup {
    match group {
        TlsGroup::Secp256r1 => ring::kx_group::SECP256R1,
        TlsGroup::Secp384r1 => ring::kx_group::SECP384R1,
    }
}

/// The *ring* provider restricted to the bsi profile: [`CIPHER_SUITES`] and `groups`, in that
/// order.
#[must_use]
pub fn crypto_provider(groups: &[TlsGroup]) -> CryptoProvider {
    CryptoProvider {
        cipher_suites: CIPHER_SUITES.to_vec(),
        kx_groups: groups.iter().map(|&g| kx_group(g)).collect(),
        ..ring::default_provider()
    }
}

/// One line for the startup log: what the listeners offer.
#[must_use]
pub fn profile_summary(groups: &[TlsGroup]) -> String {
    let suites: Vec<String> = CIPHER_SUITES
        .iter()
        .map(|s| format!("{:?}", s.suite()))
        .collect();
    let groups: Vec<String> = groups
        .iter()
        .map(|&g| format!("{:?}", kx_group(g).name()))
        .collect();
    format!(
        "TLS profile bsi: TLSv1_3 and TLSv1_2; suites {}; groups {}; no resumption",
        suites.join(", "),
        groups.join(", ")
    )
}

/// Builds the server configuration of the `bsi` profile from the `[tls]` settings: reads the
/// certificate chain and the private key, checks that they belong together and that the key
/// is one the profile allows.
///
/// # Errors
///
/// When a file is missing, unreadable, empty or holds no usable PEM item, when the key type or
/// size is outside the profile, or when the key does not match the certificate. The message
/// names the config key (`tls.certificate`, `tls.private_key`, `tls.groups`) and the file.
pub fn server_config(tls: &TlsConfig) -> anyhow::Result<Arc<ServerConfig>> {
    build_server_config(tls, None, Vec::new())
}

/// Reads when the leaf (first) certificate of `tls.certificate` expires (its notAfter), for
/// the metric `eeaturn_tls_certificate_not_after_timestamp_seconds`.
///
/// # Errors
///
/// When the file cannot be read, holds no PEM certificate, or its first certificate is not
/// DER that parses as X.509.
pub fn certificate_not_after(tls: &TlsConfig) -> anyhow::Result<std::time::SystemTime> {
    use x509_cert::der::Decode as _;
    let chain = load_certificates("tls.certificate", &tls.certificate)?;
    let leaf = chain.first().ok_or_else(|| {
        anyhow::anyhow!(
            "tls.certificate {}: no certificate",
            tls.certificate.display()
        )
    })?;
    let cert = x509_cert::Certificate::from_der(leaf.as_ref()).map_err(|e| {
        anyhow::anyhow!(
            "tls.certificate {}: the first certificate is not X.509 DER: {e}",
            tls.certificate.display()
        )
    })?;
    let not_after = cert.tbs_certificate().validity().not_after;
    Ok(std::time::UNIX_EPOCH + not_after.to_unix_duration())
}

/// Builds the server configuration of the credential API's `https://` listener: the `bsi`
/// profile and certificate of [`server_config`], ALPN `http/1.1`, and, when `client_ca` is set,
/// mutual TLS: a client must present a certificate issued by one of the CAs in that file.
///
/// # Errors
///
/// As [`server_config`]; also when `client_ca` cannot be read or holds no usable CA
/// certificate (the message names `api.client_ca`).
pub fn api_server_config(
    tls: &TlsConfig,
    client_ca: Option<&Path>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let verifier = match client_ca {
        None => None,
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in load_certificates("api.client_ca", path)? {
                roots.add(cert).map_err(|e| {
                    anyhow!(
                        "config key `api.client_ca`: {}: not a usable CA certificate: {e}",
                        path.display()
                    )
                })?;
            }
            let provider = Arc::new(crypto_provider(&tls.groups));
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| anyhow!("config key `api.client_ca`: {}: {e}", path.display()))?;
            Some(v)
        }
    };
    build_server_config(tls, verifier, vec![b"http/1.1".to_vec()])
}

fn build_server_config(
    tls: &TlsConfig,
    client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    alpn: Vec<Vec<u8>>,
) -> anyhow::Result<Arc<ServerConfig>> {
    if tls.groups.is_empty() {
        return Err(anyhow!(
            "config key `tls.groups`: needs at least one group, e.g. [\"secp256r1\"]"
        ));
    }
    let chain = load_certificates("tls.certificate", &tls.certificate)?;
    let key_der = load_private_key(&tls.private_key)?;
    let provider = Arc::new(crypto_provider(&tls.groups));

    let key = provider.key_provider.load_private_key(key_der.clone_key()).map_err(|e| {
        anyhow!(
            "config key `tls.private_key`: {}: the key cannot be used: {e} (the bsi profile takes \
             ECDSA P-256 or P-384 keys, or RSA keys of at least {MIN_RSA_BITS} bits)",
            tls.private_key.display()
        )
    })?;
    let key = BsiSigningKey::new(key, &key_der).map_err(|why| {
        anyhow!(
            "config key `tls.private_key`: {}: {why}",
            tls.private_key.display()
        )
    })?;
    let certified = CertifiedKey::new(chain, Arc::new(key));
    certified.keys_match().map_err(|e| match e {
        TlsError::InconsistentKeys(InconsistentKeys::KeyMismatch) => anyhow!(
            "config key `tls.private_key`: the key in {} does not belong to the certificate in {} \
             (tls.certificate; the first certificate of the chain must be the server's own)",
            tls.private_key.display(),
            tls.certificate.display()
        ),
        TlsError::InvalidCertificate(why) => anyhow!(
            "config key `tls.certificate`: {}: the first certificate is not a valid X.509 \
             certificate ({why:?})",
            tls.certificate.display()
        ),
        other => anyhow!(
            "config key `tls.certificate`: {}: the first certificate cannot be used: {other}",
            tls.certificate.display()
        ),
    })?;

    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .context("the bsi TLS profile is inconsistent (a bug in eeaturn)")?;
    let builder = match client_verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    // The server's order of CIPHER_SUITES decides (AES-256 first), not the client's.
    config.ignore_client_order = true;
    // No resumption: no session-ID cache, no TLS 1.2 tickets (the default ticketer never makes
    // any), no TLS 1.3 tickets, no early data.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.max_tls13_tickets = 0;
    config.max_early_data_size = 0;
    config.send_half_rtt_data = false;
    // RFC 7627's Extended Master Secret is always offered back and used when a TLS 1.2 client
    // asks for it, but not required: the attack it answers (3SHAKE) needs resumption or
    // renegotiation, which this profile does not have, and requiring it would refuse older
    // TLS 1.2 clients and hide TLS 1.2 from testssl.sh, whose probes do not offer it.
    config.require_ems = false;
    config.alpn_protocols = alpn;
    Ok(Arc::new(config))
}
