//! API keys: generating them, hashing them, and finding the key a caller presented.
//!
//! A key is `eeaturn_` followed by 43 base64url characters (32 random bytes). Only its SHA-256
//! is stored: a key has 256 bits of entropy, so a fast hash is as good as a slow one, and
//! looking the hash up reveals nothing an attacker could use.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use ring::digest;

use crate::config::ApiKey;

/// The prefix of every generated key (so a leaked key is recognisable in a secret scanner).
pub const KEY_PREFIX: &str = "eeaturn_";

/// SHA-256 of a key string.
pub fn hash(key: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A fresh random key.
pub fn generate(rng: &mut impl RngCore) -> String {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The configured key whose hash matches `presented`, if any.
pub(super) fn find<'a>(keys: &'a [ApiKey], presented: &str) -> Option<&'a ApiKey> {
    let h = hash(presented);
    keys.iter().find(|k| k.sha256 == h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Scope;
    use rand::SeedableRng;

    #[test]
    fn hash_is_sha256_of_the_key_string() {
        // sha256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            hex::encode(hash("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn generated_keys_are_distinct_and_found_by_hash() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let a = generate(&mut rng);
        let b = generate(&mut rng);
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 43);
        let keys = vec![ApiKey {
            name: "sig".into(),
            scope: Scope::Credentials,
            sha256: hash(&a),
        }];
        assert_eq!(find(&keys, &a).map(|k| k.name.as_str()), Some("sig"));
        assert!(find(&keys, &b).is_none());
        assert!(find(&keys, "").is_none());
    }
}
