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
//! Each call reads the PEM files afresh and returns a new configuration, which is how the
//! shell reloads certificates on SIGHUP: established connections keep the configuration they
//! were accepted with, new handshakes get the new one.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use rustls::crypto::{CryptoProvider, SupportedKxGroup, ring};
use rustls::server::{NoServerSessionStorage, ServerConfig};
use rustls::sign::{CertifiedKey, Signer, SigningKey, SingleCertAndKey};
use rustls::{
    Error as TlsError, InconsistentKeys, SignatureAlgorithm, SignatureScheme, SupportedCipherSuite,
    SupportedProtocolVersion,
};

use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, SubjectPublicKeyInfoDer};

use crate::config::{TlsConfig, TlsGroup};

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

    let key = provider.key_provider.load_private_key(key_der).map_err(|e| {
        anyhow!(
            "config key `tls.private_key`: {}: the key cannot be used: {e} (the bsi profile takes \
             ECDSA P-256 or P-384 keys, or RSA keys of at least {MIN_RSA_BITS} bits)",
            tls.private_key.display()
        )
    })?;
    let key = BsiSigningKey::new(key).map_err(|why| {
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

/// The sections of a PEM file, in order: their kind and DER contents.
type PemSections = Vec<(SectionKind, Vec<u8>)>;

/// Reads a PEM file: every section, in order, after the checks all files get.
fn read_pem(key: &str, path: &Path) -> anyhow::Result<(Vec<u8>, PemSections)> {
    let bytes = std::fs::read(path)
        .map_err(|e| anyhow!("config key `{key}`: cannot read {}: {e}", path.display()))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(anyhow!("config key `{key}`: {} is empty", path.display()));
    }
    let sections = <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow!(
                "config key `{key}`: {} is not valid PEM: {}",
                path.display(),
                pem_error(&e)
            )
        })?;
    Ok((bytes, sections))
}

/// A PEM parse error in words (the library's Display shows some parts as byte lists).
fn pem_error(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error as E;
    match e {
        E::MissingSectionEnd { end_marker } => {
            format!(
                "no \"-----END {}-----\" line",
                String::from_utf8_lossy(end_marker)
            )
        }
        E::IllegalSectionStart { line } => {
            format!("malformed BEGIN line {:?}", String::from_utf8_lossy(line))
        }
        E::Base64Decode(_) => "a section is not valid base64".to_owned(),
        other => other.to_string(),
    }
}

fn is_private_key(kind: SectionKind) -> bool {
    matches!(
        kind,
        SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey
    )
}

/// Why a PEM file holds nothing of the wanted kind, with a hint where one is likely.
fn nothing_found(
    key: &str,
    path: &Path,
    bytes: &[u8],
    sections: &[(SectionKind, Vec<u8>)],
    wanted: &str,
) -> anyhow::Error {
    let path = path.display();
    let hint = if key == "tls.certificate" && sections.iter().any(|(k, _)| is_private_key(*k)) {
        ": it holds a private key; are tls.certificate and tls.private_key swapped?".to_owned()
    } else if key == "tls.private_key"
        && sections.iter().any(|(k, _)| *k == SectionKind::Certificate)
    {
        ": it holds a certificate; are tls.certificate and tls.private_key swapped?".to_owned()
    } else if key == "tls.private_key" && contains(bytes, b"ENCRYPTED") {
        ": the key is encrypted; the relay needs it unencrypted (`openssl pkey -in FILE -out \
         NEW`) and protected by file permissions"
            .to_owned()
    } else if bytes.first() == Some(&0x30) {
        ": it looks like binary DER; convert it to PEM (`openssl x509 -inform der` for a \
         certificate, `openssl pkey -inform der` for a key)"
            .to_owned()
    } else {
        String::new()
    };
    anyhow!("config key `{key}`: {path} holds no {wanted}{hint}")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The certificates in `path`, in order (for `tls.certificate`, the chain, leaf first); `key`
/// is the config key that named the file, for messages.
fn load_certificates(key: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let (bytes, sections) = read_pem(key, path)?;
    let chain: Vec<CertificateDer<'static>> = sections
        .iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der.clone()))
        .collect();
    if chain.is_empty() {
        return Err(nothing_found(
            key,
            path,
            &bytes,
            &sections,
            "PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(chain)
}

/// The one private key in `path` (the `tls.private_key` file): PKCS#8, SEC1 or PKCS#1.
fn load_private_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    const KEY: &str = "tls.private_key";
    let (bytes, sections) = read_pem(KEY, path)?;
    let mut keys: Vec<PrivateKeyDer<'static>> = sections
        .iter()
        .filter(|(kind, _)| is_private_key(*kind))
        .filter_map(|(kind, der)| PrivateKeyDer::from_pem(*kind, der.clone()))
        .collect();
    match keys.len() {
        1 => Ok(keys.remove(0)),
        0 => Err(nothing_found(
            KEY,
            path,
            &bytes,
            &sections,
            "unencrypted PEM private key (-----BEGIN PRIVATE KEY-----, EC PRIVATE KEY or RSA \
             PRIVATE KEY)",
        )),
        n => Err(anyhow!(
            "config key `{KEY}`: {} holds {n} private keys; it must hold exactly one",
            path.display()
        )),
    }
}

/// The server key, limited to what the bsi profile signs with: ECDSA P-256/P-384 as *ring*
/// does it, RSA with RSASSA-PSS only (never PKCS#1 v1.5, which TLS 1.2 would otherwise use
/// when a client offers it first).
struct BsiSigningKey {
    inner: Arc<dyn SigningKey>,
}

impl fmt::Debug for BsiSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BsiSigningKey")
            .field("algorithm", &self.inner.algorithm())
            .finish_non_exhaustive()
    }
}

impl BsiSigningKey {
    /// Accepts the key if the profile allows its type and size; else says why not.
    fn new(inner: Arc<dyn SigningKey>) -> Result<Self, String> {
        match inner.algorithm() {
            // *ring* loads P-256 and P-384 keys only.
            SignatureAlgorithm::ECDSA => {}
            SignatureAlgorithm::RSA => {
                let bits = inner
                    .public_key()
                    .and_then(|spki| rsa_modulus_bits(&spki))
                    .ok_or("cannot read the size of the RSA key")?;
                if bits < MIN_RSA_BITS {
                    return Err(format!(
                        "an RSA key of {bits} bits is too short for the bsi profile (at least \
                         {MIN_RSA_BITS}; use an ECDSA P-256/P-384 key or RSA with 3072 bits or more)"
                    ));
                }
            }
            other => {
                let name = match other {
                    SignatureAlgorithm::ED25519 => "an Ed25519".to_owned(),
                    SignatureAlgorithm::ED448 => "an Ed448".to_owned(),
                    other => format!("a {other:?}"),
                };
                return Err(format!(
                    "{name} key is outside the bsi profile (use an ECDSA P-256/P-384 key, or \
                     RSA with at least {MIN_RSA_BITS} bits)"
                ));
            }
        }
        Ok(Self { inner })
    }
}

fn is_pkcs1_v15(scheme: SignatureScheme) -> bool {
    matches!(
        scheme,
        SignatureScheme::RSA_PKCS1_SHA1
            | SignatureScheme::RSA_PKCS1_SHA256
            | SignatureScheme::RSA_PKCS1_SHA384
            | SignatureScheme::RSA_PKCS1_SHA512
    )
}

impl SigningKey for BsiSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let allowed: Vec<SignatureScheme> = offered
            .iter()
            .copied()
            .filter(|&s| !is_pkcs1_v15(s))
            .collect();
        self.inner.choose_scheme(&allowed)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        self.inner.public_key()
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.inner.algorithm()
    }
}

/// The modulus size in bits of an RSA SubjectPublicKeyInfo (DER).
fn rsa_modulus_bits(spki: &[u8]) -> Option<usize> {
    let (spki, _) = der_element(spki, 0x30)?;
    let (_algorithm, rest) = der_element(spki, 0x30)?;
    let (bit_string, _) = der_element(rest, 0x03)?;
    let (&unused_bits, rsa_public_key) = bit_string.split_first()?;
    if unused_bits != 0 {
        return None;
    }
    let (rsa_public_key, _) = der_element(rsa_public_key, 0x30)?;
    let (modulus, _) = der_element(rsa_public_key, 0x02)?;
    let first = modulus.iter().position(|&b| b != 0)?;
    let modulus = &modulus[first..];
    Some(modulus.len() * 8 - modulus[0].leading_zeros() as usize)
}

/// Splits one DER element with tag `tag` off `input`: its contents and what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (len_bytes, rest) = rest.split_at(n);
        (
            len_bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b)),
            rest,
        )
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use rustls::client::{ClientConfig, ClientConnection};
    use rustls::crypto::ring::{cipher_suite as cs, kx_group as kx};
    use rustls::server::ServerConnection;
    use rustls::{
        AlertDescription, CipherSuite, Connection, HandshakeKind, NamedGroup, PeerIncompatible,
        ProtocolVersion, RootCertStore,
    };

    use super::*;

    fn repo_file(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
    }

    fn dev_tls(groups: &[TlsGroup]) -> TlsConfig {
        TlsConfig {
            certificate: repo_file("config/dev-cert.pem"),
            private_key: repo_file("config/dev-key.pem"),
            groups: groups.to_vec(),
        }
    }

    const BOTH: &[TlsGroup] = &[TlsGroup::Secp256r1, TlsGroup::Secp384r1];

    fn dev_server(groups: &[TlsGroup]) -> Arc<ServerConfig> {
        server_config(&dev_tls(groups)).expect("the dev certificate loads")
    }

    /// A client that trusts the development certificate and offers what it is told to.
    fn client(
        versions: &[&'static SupportedProtocolVersion],
        suites: &[SupportedCipherSuite],
        groups: &[&'static dyn SupportedKxGroup],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(repo_file("config/dev-cert.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = CryptoProvider {
            cipher_suites: suites.to_vec(),
            kx_groups: groups.to_vec(),
            ..ring::default_provider()
        };
        Arc::new(
            ClientConfig::builder_with_provider(Arc::new(provider))
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// A client with rustls' full *ring* menu (ChaCha20 and X25519 included, X25519 first).
    fn default_client(versions: &[&'static SupportedProtocolVersion]) -> Arc<ClientConfig> {
        client(versions, ring::ALL_CIPHER_SUITES, ring::ALL_KX_GROUPS)
    }

    struct Outcome {
        client: Connection,
        server: Connection,
        client_result: Result<(), TlsError>,
        server_result: Result<(), TlsError>,
    }

    impl Outcome {
        fn assert_ok(&self) {
            assert!(
                self.client_result.is_ok(),
                "client: {:?}",
                self.client_result
            );
            assert!(
                self.server_result.is_ok(),
                "server: {:?}",
                self.server_result
            );
            assert!(!self.client.is_handshaking() && !self.server.is_handshaking());
        }
        fn version(&self) -> Option<ProtocolVersion> {
            self.server.protocol_version()
        }
        fn suite(&self) -> Option<CipherSuite> {
            self.server.negotiated_cipher_suite().map(|s| s.suite())
        }
        fn group(&self) -> Option<NamedGroup> {
            self.server
                .negotiated_key_exchange_group()
                .map(|g| g.name())
        }
        fn kind(&self) -> Option<HandshakeKind> {
            self.server.handshake_kind()
        }
        /// The handshake failed: the server refused with `why` and told the client so.
        fn assert_refused(&self, why: PeerIncompatible) {
            assert_eq!(self.server_result, Err(TlsError::PeerIncompatible(why)));
            assert_eq!(
                self.client_result,
                Err(TlsError::AlertReceived(AlertDescription::HandshakeFailure))
            );
        }
    }

    /// Moves what `from` has to send into `to`; returns the byte count.
    fn deliver(
        from: &mut Connection,
        to: &mut Connection,
        to_result: &mut Result<(), TlsError>,
    ) -> usize {
        let mut wire = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut wire).unwrap();
        }
        if wire.is_empty() || to_result.is_err() {
            return 0;
        }
        let mut rd = wire.as_slice();
        while !rd.is_empty() {
            to.read_tls(&mut rd).unwrap();
        }
        if let Err(e) = to.process_new_packets() {
            *to_result = Err(e);
        }
        wire.len()
    }

    /// Runs a handshake in memory between a client and the bsi server.
    fn handshake(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> Outcome {
        let name = "localhost".try_into().unwrap();
        let mut o = Outcome {
            client: Connection::Client(ClientConnection::new(client, name).unwrap()),
            server: Connection::Server(ServerConnection::new(server).unwrap()),
            client_result: Ok(()),
            server_result: Ok(()),
        };
        for _ in 0..16 {
            let up = deliver(&mut o.client, &mut o.server, &mut o.server_result);
            let down = deliver(&mut o.server, &mut o.client, &mut o.client_result);
            if up == 0 && down == 0 {
                break;
            }
        }
        o
    }

    #[test]
    fn dev_certificate_builds_the_bsi_profile() {
        let config = dev_server(BOTH);
        let provider = config.crypto_provider();
        let suites: Vec<CipherSuite> = provider.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(
            suites,
            [
                CipherSuite::TLS13_AES_256_GCM_SHA384,
                CipherSuite::TLS13_AES_128_GCM_SHA256,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            ]
        );
        let groups: Vec<NamedGroup> = provider.kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(groups, [NamedGroup::secp256r1, NamedGroup::secp384r1]);
        assert!(config.ignore_client_order);
        assert!(!config.require_ems);
        assert_eq!(config.send_tls13_tickets, 0);
        assert_eq!(config.max_early_data_size, 0);
        assert!(config.alpn_protocols.is_empty());
        assert!(!config.ticketer.enabled());

        let only_384 = dev_server(&[TlsGroup::Secp384r1]);
        let groups: Vec<NamedGroup> = only_384
            .crypto_provider()
            .kx_groups
            .iter()
            .map(|g| g.name())
            .collect();
        assert_eq!(groups, [NamedGroup::secp384r1]);
        let summary = profile_summary(BOTH);
        assert!(
            summary.contains("TLS13_AES_256_GCM_SHA384") && summary.contains("secp384r1"),
            "{summary}"
        );
    }

    #[test]
    fn tls13_handshake_uses_aes_256_gcm_and_p256() {
        // The client prefers ChaCha20 and X25519; the server's order decides the suite.
        let o = handshake(default_client(&[&rustls::version::TLS13]), dev_server(BOTH));
        o.assert_ok();
        assert_eq!(o.version(), Some(ProtocolVersion::TLSv1_3));
        assert_eq!(o.suite(), Some(CipherSuite::TLS13_AES_256_GCM_SHA384));
        assert_eq!(o.group(), Some(NamedGroup::secp256r1));
        // The client's key share was for X25519 only: the server asks again, for P-256.
        assert_eq!(o.kind(), Some(HandshakeKind::FullWithHelloRetryRequest));
    }

    #[test]
    fn tls13_with_a_p256_key_share_needs_no_retry() {
        let suites = [cs::TLS13_AES_128_GCM_SHA256, cs::TLS13_AES_256_GCM_SHA384];
        let o = handshake(
            client(
                &[&rustls::version::TLS13],
                &suites,
                &[kx::SECP256R1, kx::X25519],
            ),
            dev_server(BOTH),
        );
        o.assert_ok();
        assert_eq!(o.suite(), Some(CipherSuite::TLS13_AES_256_GCM_SHA384));
        assert_eq!(o.group(), Some(NamedGroup::secp256r1));
        assert_eq!(o.kind(), Some(HandshakeKind::Full));
    }

    #[test]
    fn tls12_handshake_uses_ecdhe_ecdsa_aes_256_gcm() {
        let o = handshake(default_client(&[&rustls::version::TLS12]), dev_server(BOTH));
        o.assert_ok();
        assert_eq!(o.version(), Some(ProtocolVersion::TLSv1_2));
        assert_eq!(
            o.suite(),
            Some(CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)
        );
        assert_eq!(o.group(), Some(NamedGroup::secp256r1));
        // Each suite of the profile works on its own.
        for (version, suite) in [
            (
                &rustls::version::TLS12,
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ),
            (&rustls::version::TLS13, cs::TLS13_AES_128_GCM_SHA256),
        ] {
            let o = handshake(
                client(&[version], &[suite], &[kx::SECP256R1]),
                dev_server(BOTH),
            );
            o.assert_ok();
            assert_eq!(o.suite(), Some(suite.suite()));
        }
    }

    #[test]
    fn the_client_picks_among_the_configured_groups() {
        // rustls takes the client's most preferred group among those configured; the order of
        // `tls.groups` does not change the choice.
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let o = handshake(
                client(
                    &[version],
                    ring::ALL_CIPHER_SUITES,
                    &[kx::SECP384R1, kx::SECP256R1],
                ),
                dev_server(BOTH),
            );
            o.assert_ok();
            assert_eq!(o.group(), Some(NamedGroup::secp384r1), "{version:?}");
        }
        // A P-384-only server refuses a P-256-only client and serves a P-384 one.
        let only_384 = dev_server(&[TlsGroup::Secp384r1]);
        let o = handshake(
            client(
                &[&rustls::version::TLS13],
                ring::ALL_CIPHER_SUITES,
                &[kx::SECP256R1],
            ),
            only_384.clone(),
        );
        o.assert_refused(PeerIncompatible::NoKxGroupsInCommon);
        let o = handshake(default_client(&[&rustls::version::TLS13]), only_384);
        o.assert_ok();
        assert_eq!(o.group(), Some(NamedGroup::secp384r1));
    }

    #[test]
    fn chacha20_only_clients_are_refused() {
        for (version, suite) in [
            (&rustls::version::TLS13, cs::TLS13_CHACHA20_POLY1305_SHA256),
            (
                &rustls::version::TLS12,
                cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            ),
        ] {
            let o = handshake(
                client(&[version], &[suite], ring::ALL_KX_GROUPS),
                dev_server(BOTH),
            );
            o.assert_refused(PeerIncompatible::NoCipherSuitesInCommon);
        }
    }

    #[test]
    fn x25519_only_clients_are_refused() {
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let o = handshake(
                client(&[version], ring::ALL_CIPHER_SUITES, &[kx::X25519]),
                dev_server(BOTH),
            );
            o.assert_refused(PeerIncompatible::NoKxGroupsInCommon);
        }
    }

    #[test]
    fn there_is_no_resumption() {
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let client = client(&[version], ring::ALL_CIPHER_SUITES, &[kx::SECP256R1]);
            let server = dev_server(BOTH);
            for _ in 0..2 {
                let o = handshake(client.clone(), server.clone());
                o.assert_ok();
                assert_eq!(o.kind(), Some(HandshakeKind::Full), "{version:?}");
            }
        }
    }

    #[test]
    fn rsa_keys_sign_with_pss_only() {
        let key = BsiSigningKey::new(test_key("rsa3072.pem")).unwrap();
        assert_eq!(key.algorithm(), SignatureAlgorithm::RSA);
        let pkcs1 = [
            SignatureScheme::RSA_PKCS1_SHA256,
            SignatureScheme::RSA_PKCS1_SHA512,
        ];
        assert!(key.choose_scheme(&pkcs1).is_none());
        let offered = [
            SignatureScheme::RSA_PKCS1_SHA256,
            SignatureScheme::RSA_PSS_SHA256,
        ];
        let signer = key.choose_scheme(&offered).unwrap();
        assert_eq!(signer.scheme(), SignatureScheme::RSA_PSS_SHA256);
        // ECDSA keys are passed through.
        let ecdsa = BsiSigningKey::new(ring_key(&generated_key(KeyKind::P384))).unwrap();
        let signer = ecdsa
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP384_SHA384])
            .unwrap();
        assert_eq!(signer.scheme(), SignatureScheme::ECDSA_NISTP384_SHA384);
    }

    #[test]
    fn rsa_modulus_sizes_are_read_exactly() {
        assert_eq!(
            test_key("rsa3072.pem")
                .public_key()
                .and_then(|k| rsa_modulus_bits(&k)),
            Some(3072)
        );
        assert_eq!(
            test_key("rsa2048.pem")
                .public_key()
                .and_then(|k| rsa_modulus_bits(&k)),
            Some(2048)
        );
        assert_eq!(rsa_modulus_bits(&[0x30, 0x05, 0x30]), None);
        assert_eq!(rsa_modulus_bits(&[]), None);
    }

    // ---- errors: every one names the config key and the file ------------------------------

    /// Test-only RSA keys (no certificates): tests/vectors/tls/.
    fn test_key_path(name: &str) -> PathBuf {
        repo_file("tests/vectors/tls").join(name)
    }

    fn test_key(name: &str) -> Arc<dyn SigningKey> {
        let der = PrivateKeyDer::from_pem_file(test_key_path(name)).unwrap();
        ring::default_provider()
            .key_provider
            .load_private_key(der)
            .unwrap()
    }

    enum KeyKind {
        P256,
        P384,
        Ed25519,
    }

    /// A fresh PKCS#8 key from *ring*, as PEM.
    fn generated_key(kind: KeyKind) -> String {
        use ::ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING};
        use base64::Engine as _;
        let rng = ::ring::rand::SystemRandom::new();
        let der = match kind {
            KeyKind::P256 => ::ring::signature::EcdsaKeyPair::generate_pkcs8(
                &ECDSA_P256_SHA256_ASN1_SIGNING,
                &rng,
            ),
            KeyKind::P384 => ::ring::signature::EcdsaKeyPair::generate_pkcs8(
                &ECDSA_P384_SHA384_ASN1_SIGNING,
                &rng,
            ),
            KeyKind::Ed25519 => ::ring::signature::Ed25519KeyPair::generate_pkcs8(&rng),
        }
        .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        )
    }

    fn ring_key(pem: &str) -> Arc<dyn SigningKey> {
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap();
        ring::default_provider()
            .key_provider
            .load_private_key(der)
            .unwrap()
    }

    /// The error of a config with these certificate and key files.
    fn error_with(certificate: &Path, private_key: &Path) -> String {
        let tls = TlsConfig {
            certificate: certificate.to_owned(),
            private_key: private_key.to_owned(),
            groups: BOTH.to_vec(),
        };
        format!(
            "{:#}",
            server_config(&tls).expect_err("the config must be refused")
        )
    }

    fn assert_names(message: &str, key: &str, path: &Path, also: &str) {
        assert!(
            message.contains(&format!("config key `{key}`")),
            "{message}"
        );
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains(also), "expected {also:?} in: {message}");
    }

    #[test]
    fn missing_unreadable_and_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = repo_file("config/dev-cert.pem");
        let key = repo_file("config/dev-key.pem");
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "\n  \n").unwrap();

        assert_names(
            &error_with(&missing, &key),
            "tls.certificate",
            &missing,
            "cannot read",
        );
        assert_names(
            &error_with(&cert, &missing),
            "tls.private_key",
            &missing,
            "cannot read",
        );
        assert_names(
            &error_with(dir.path(), &key),
            "tls.certificate",
            dir.path(),
            "cannot read",
        );
        assert_names(
            &error_with(&empty, &key),
            "tls.certificate",
            &empty,
            "is empty",
        );
        assert_names(
            &error_with(&cert, &empty),
            "tls.private_key",
            &empty,
            "is empty",
        );
    }

    #[test]
    fn files_without_the_right_pem_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = repo_file("config/dev-cert.pem");
        let key = repo_file("config/dev-key.pem");
        let write = |name: &str, contents: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).unwrap();
            path
        };

        let text = write("text.pem", b"this is not a certificate\n");
        assert_names(
            &error_with(&text, &key),
            "tls.certificate",
            &text,
            "holds no PEM certificate",
        );
        assert_names(
            &error_with(&cert, &text),
            "tls.private_key",
            &text,
            "holds no unencrypted PEM private key",
        );

        let der = write("cert.der", &[0x30, 0x82, 0x01, 0x00, 0x30, 0x81]);
        assert_names(
            &error_with(&der, &key),
            "tls.certificate",
            &der,
            "binary DER",
        );

        let broken = write(
            "broken.pem",
            b"-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n",
        );
        assert_names(
            &error_with(&broken, &key),
            "tls.certificate",
            &broken,
            "is not valid PEM",
        );
        let unterminated = write("unterminated.pem", b"-----BEGIN CERTIFICATE-----\nMIIB\n");
        assert_names(
            &error_with(&unterminated, &key),
            "tls.certificate",
            &unterminated,
            "no \"-----END CERTIFICATE-----\" line",
        );

        // Swapped files.
        assert_names(&error_with(&key, &key), "tls.certificate", &key, "swapped");
        assert_names(
            &error_with(&cert, &cert),
            "tls.private_key",
            &cert,
            "swapped",
        );

        let encrypted = write(
            "encrypted.pem",
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        assert_names(
            &error_with(&cert, &encrypted),
            "tls.private_key",
            &encrypted,
            "encrypted",
        );

        let two = write(
            "two.pem",
            format!(
                "{}{}",
                generated_key(KeyKind::P256),
                generated_key(KeyKind::P256)
            )
            .as_bytes(),
        );
        assert_names(
            &error_with(&cert, &two),
            "tls.private_key",
            &two,
            "holds 2 private keys",
        );

        // A well-formed PEM block that is not a certificate.
        let bogus = write(
            "bogus.pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        assert_names(
            &error_with(&bogus, &key),
            "tls.certificate",
            &bogus,
            "not a valid X.509 certificate",
        );
        let bogus_key = write(
            "bogus-key.pem",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        assert_names(
            &error_with(&cert, &bogus_key),
            "tls.private_key",
            &bogus_key,
            "cannot be used",
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cert = repo_file("config/dev-cert.pem");
        for (name, kind) in [("p256.pem", KeyKind::P256), ("p384.pem", KeyKind::P384)] {
            let other = dir.path().join(name);
            std::fs::write(&other, generated_key(kind)).unwrap();
            let message = error_with(&cert, &other);
            assert_names(
                &message,
                "tls.private_key",
                &other,
                "does not belong to the certificate",
            );
            assert!(message.contains(&cert.display().to_string()), "{message}");
        }
        // An RSA key big enough for the profile, but not the certificate's.
        let rsa = test_key_path("rsa3072.pem");
        assert_names(
            &error_with(&cert, &rsa),
            "tls.private_key",
            &rsa,
            "does not belong to the certificate",
        );
    }

    #[test]
    fn keys_outside_the_profile_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cert = repo_file("config/dev-cert.pem");
        let rsa = test_key_path("rsa2048.pem");
        assert_names(
            &error_with(&cert, &rsa),
            "tls.private_key",
            &rsa,
            "RSA key of 2048 bits is too short",
        );
        let ed25519 = dir.path().join("ed25519.pem");
        std::fs::write(&ed25519, generated_key(KeyKind::Ed25519)).unwrap();
        assert_names(
            &error_with(&cert, &ed25519),
            "tls.private_key",
            &ed25519,
            "an Ed25519 key is outside the bsi profile",
        );
    }

    #[test]
    fn no_groups_is_an_error() {
        let mut tls = dev_tls(BOTH);
        tls.groups.clear();
        let message = format!("{:#}", server_config(&tls).unwrap_err());
        assert!(message.contains("config key `tls.groups`"), "{message}");
    }
}
