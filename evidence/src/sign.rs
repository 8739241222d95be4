//! Ed25519 signing keys (PKCS#8, `ring`), public keys as an auditor receives them, and the
//! set of keys a verifier trusts.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

use crate::Error;
use crate::digest::Digest;

/// Generates a new Ed25519 key: returns the PKCS#8 v2 document and the raw public key.
///
/// # Errors
///
/// Returns [`Error::Key`] if the system random source fails.
pub fn keygen() -> Result<(Vec<u8>, PublicKey), Error> {
    let rng = ring::rand::SystemRandom::new();
    let doc = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| Error::Key("the system random source failed".into()))?;
    let signer = Signer::from_pkcs8(doc.as_ref())?;
    Ok((doc.as_ref().to_vec(), signer.public_key()))
}

/// Writes a new key pair: the private key as PEM (`PRIVATE KEY`, mode 0600, never overwriting
/// an existing file) and the public key in the text form of [`PublicKey::to_text`].
///
/// # Errors
///
/// Returns [`Error::Io`] if either file cannot be written or the private key file exists.
pub fn write_key_files(
    private_path: &Path,
    public_path: &Path,
    pkcs8: &[u8],
    public: &PublicKey,
) -> Result<(), Error> {
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        BASE64.encode(pkcs8)
    );
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(private_path)
        .map_err(|e| Error::io(private_path, e))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(private_path, e))?;
    fs::write(public_path, public.to_text()).map_err(|e| Error::io(public_path, e))
}

/// An Ed25519 private key that signs manifests and checkpoints.
pub struct Signer {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("fingerprint", &self.public.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Loads a PKCS#8 (v1 or v2) Ed25519 private key from its DER bytes.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Key`] if the bytes are not such a key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, Error> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| Error::Key(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        let mut raw = [0; 32];
        raw.copy_from_slice(pair.public_key().as_ref());
        Ok(Self {
            pair,
            public: PublicKey(raw),
        })
    }

    /// Loads a private key file: PEM (`-----BEGIN PRIVATE KEY-----`) or raw PKCS#8 DER.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Io`] if the file cannot be read, [`Error::Key`] if it holds no key.
    pub fn from_pkcs8_file(path: &Path) -> Result<Self, Error> {
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        match std::str::from_utf8(&bytes) {
            Ok(text) if text.contains("-----BEGIN PRIVATE KEY-----") => {
                let body: String = text
                    .lines()
                    .skip_while(|l| !l.starts_with("-----BEGIN PRIVATE KEY-----"))
                    .skip(1)
                    .take_while(|l| !l.starts_with("-----END"))
                    .map(str::trim)
                    .collect();
                let der = BASE64
                    .decode(body)
                    .map_err(|e| Error::Key(format!("bad PEM body: {e}")))?;
                Self::from_pkcs8(&der)
            }
            _ => Self::from_pkcs8(&bytes),
        }
    }

    /// Returns the public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Returns the key fingerprint, the SHA-256 of the raw 32-byte public key.
    pub fn fingerprint(&self) -> Digest {
        self.public.fingerprint()
    }

    /// Signs a message.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let mut out = [0; 64];
        out.copy_from_slice(self.pair.sign(msg).as_ref());
        out
    }
}

/// A raw Ed25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Returns the fingerprint that manifests name: SHA-256 of the 32 raw bytes.
    pub fn fingerprint(&self) -> Digest {
        Digest::of(&self.0)
    }

    /// Returns the text an auditor receives: comment lines, then `ed25519:<base64>`.
    pub fn to_text(&self) -> String {
        format!(
            "# eeaturn evidence signing key (Ed25519)\n# fingerprint: sha256:{}\n{}\n",
            self.fingerprint(),
            self.to_line()
        )
    }

    /// Returns the one-line form `ed25519:<base64 of the raw key>`.
    pub fn to_line(&self) -> String {
        format!("ed25519:{}", BASE64.encode(self.0))
    }

    /// Parses the form [`to_text`](Self::to_text) writes (or just its `ed25519:` line);
    /// lines starting with `#` and blank lines are ignored.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Key`] if no valid `ed25519:` line is found.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| Error::Key("no public key line".into()))?;
        let b64 = line
            .strip_prefix("ed25519:")
            .ok_or_else(|| Error::Key("a public key starts with `ed25519:`".into()))?;
        let raw = BASE64
            .decode(b64)
            .map_err(|e| Error::Key(format!("bad base64 in public key: {e}")))?;
        let raw: [u8; 32] = raw
            .try_into()
            .map_err(|_| Error::Key("an Ed25519 public key has 32 bytes".into()))?;
        Ok(Self(raw))
    }

    /// Reads a public key file written by [`write_key_files`].
    ///
    /// # Errors
    ///
    /// Returns [`Error::Io`] or [`Error::Key`].
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text)
    }

    /// Checks a signature over `msg`.
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(msg, signature)
            .is_ok()
    }
}

/// The public keys a verifier accepts, by fingerprint.
#[derive(Debug, Clone, Default)]
pub struct TrustSet(BTreeMap<Digest, PublicKey>);

impl TrustSet {
    /// Trusts the given keys.
    pub fn new(keys: &[PublicKey]) -> Self {
        Self(keys.iter().map(|k| (k.fingerprint(), *k)).collect())
    }

    /// Returns the trusted key with this fingerprint.
    pub fn get(&self, fingerprint: &Digest) -> Option<&PublicKey> {
        self.0.get(fingerprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_signs_and_round_trips_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let (pkcs8, public) = keygen().unwrap();
        let (private_path, public_path) = (dir.path().join("k.pem"), dir.path().join("k.pub"));
        write_key_files(&private_path, &public_path, &pkcs8, &public).unwrap();
        assert!(write_key_files(&private_path, &public_path, &pkcs8, &public).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&private_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let signer = Signer::from_pkcs8_file(&private_path).unwrap();
        assert_eq!(signer.public_key(), public);
        assert_eq!(PublicKey::from_file(&public_path).unwrap(), public);
        let sig = signer.sign(b"hello");
        assert!(public.verify(b"hello", &sig));
        assert!(!public.verify(b"hellO", &sig));
        fs::write(dir.path().join("k.der"), &pkcs8).unwrap();
        assert_eq!(
            Signer::from_pkcs8_file(&dir.path().join("k.der"))
                .unwrap()
                .fingerprint(),
            public.fingerprint()
        );
    }
}
