//! The server key as the bsi profile lets it sign: [`BsiSigningKey`] refuses key types and
//! sizes outside the profile and never signs with RSA PKCS#1 v1.5.

use std::fmt;
use std::sync::Arc;

use ring::signature::{RsaKeyPair, RsaPublicKeyComponents};
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use rustls_pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};

use super::MIN_RSA_BITS;

/// The server key, limited to what the bsi profile signs with: ECDSA P-256/P-384 as *ring*
/// does it, RSA with RSASSA-PSS only (never PKCS#1 v1.5, which TLS 1.2 would otherwise use
/// when a client offers it first).
pub(super) struct BsiSigningKey {
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
    /// Accepts `inner`, the key loaded from `der`, if the profile allows its type and size;
    /// else says why not.
    pub(super) fn new(inner: Arc<dyn SigningKey>, der: &PrivateKeyDer<'_>) -> Result<Self, String> {
        match inner.algorithm() {
            // *ring* loads P-256 and P-384 keys only.
            SignatureAlgorithm::ECDSA => {}
            SignatureAlgorithm::RSA => {
                let bits = rsa_modulus_bits(der).ok_or("cannot read the size of the RSA key")?;
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

/// The modulus size in bits of an RSA private key (PKCS#1 or PKCS#8), as *ring* reads it;
/// `None` for any other key or one *ring* refuses.
pub(super) fn rsa_modulus_bits(der: &PrivateKeyDer<'_>) -> Option<usize> {
    let pair = match der {
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        _ => return None,
    }
    .ok()?;
    // The modulus, big-endian; its bit length is exact once leading zeros are skipped.
    let n = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public()).n;
    let first = n.iter().position(|&b| b != 0)?;
    Some((n.len() - first) * 8 - n[first].leading_zeros() as usize)
}
