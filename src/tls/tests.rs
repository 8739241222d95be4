use std::path::PathBuf;

use rustls::client::{ClientConfig, ClientConnection};
use rustls::crypto::ring::{cipher_suite as cs, kx_group as kx};
use rustls::server::ServerConnection;
use rustls::{
    AlertDescription, CipherSuite, Connection, HandshakeKind, NamedGroup, PeerIncompatible,
    ProtocolVersion, RootCertStore,
};

use rustls::sign::SigningKey;
use rustls::{SignatureAlgorithm, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::signing::rsa_modulus_bits;
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
    let der = test_der("rsa3072.pem");
    let key = BsiSigningKey::new(test_key("rsa3072.pem"), &der).unwrap();
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
    let pem = generated_key(KeyKind::P384);
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap();
    let ecdsa = BsiSigningKey::new(ring_key(&pem), &der).unwrap();
    let signer = ecdsa
        .choose_scheme(&[SignatureScheme::ECDSA_NISTP384_SHA384])
        .unwrap();
    assert_eq!(signer.scheme(), SignatureScheme::ECDSA_NISTP384_SHA384);
}

#[test]
fn rsa_modulus_sizes_are_read_exactly() {
    let bits = |name: &str| rsa_modulus_bits(&test_der(name));
    assert_eq!(bits("rsa3072.pem"), Some(3072));
    assert_eq!(bits("rsa3072-pkcs1.pem"), Some(3072));
    assert_eq!(bits("rsa2048.pem"), Some(2048));
    // Not RSA, or not a key at all.
    let p256 = PrivateKeyDer::from_pem_slice(generated_key(KeyKind::P256).as_bytes()).unwrap();
    assert_eq!(rsa_modulus_bits(&p256), None);
    let junk = PrivateKeyDer::Pkcs8(vec![0x30, 0x05, 0x30].into());
    assert_eq!(rsa_modulus_bits(&junk), None);
    assert_eq!(
        rsa_modulus_bits(&PrivateKeyDer::Pkcs1(Vec::new().into())),
        None
    );
}

// ---- errors: every one names the config key and the file ------------------------------

/// Test-only RSA keys (no certificates): tests/vectors/tls/.
fn test_key_path(name: &str) -> PathBuf {
    repo_file("tests/vectors/tls").join(name)
}

fn test_der(name: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(test_key_path(name)).unwrap()
}

fn test_key(name: &str) -> Arc<dyn SigningKey> {
    let der = test_der(name);
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
        KeyKind::P256 => {
            ::ring::signature::EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        }
        KeyKind::P384 => {
            ::ring::signature::EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &rng)
        }
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

#[test]
fn the_dev_certificate_expires_when_openssl_says() {
    // `openssl x509 -in config/dev-cert.pem -noout -enddate`: Nov 20 13:02:03 2036 GMT.
    let not_after = certificate_not_after(&dev_tls(&[TlsGroup::Secp256r1])).unwrap();
    let secs = not_after
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(secs, 2_110_798_923);
}
