//! Reading the PEM files of the `[tls]` table (and `api.client_ca`), with messages that name
//! the config key and the file, and a hint where the mistake is a common one (swapped files,
//! an encrypted key, binary DER).

use std::path::Path;

use anyhow::anyhow;
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The certificates in `path`, in order (for `tls.certificate`, the chain, leaf first); `key`
/// is the config key that named the file, for messages.
pub(super) fn load_certificates(
    key: &str,
    path: &Path,
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
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
pub(super) fn load_private_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
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
