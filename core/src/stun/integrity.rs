//! MESSAGE-INTEGRITY (HMAC-SHA1), MESSAGE-INTEGRITY-SHA256, FINGERPRINT and the long-term
//! credential keys. See RFC 8489 §9.2, §14.5–§14.7.
//!
//! Integrity is computed over the message up to the integrity attribute with the header length
//! field patched to end just after that attribute; the buffer is never copied.

use md5::{Digest, Md5};
use ring::{digest, hmac};

use super::{HEADER_LEN, read_u16};

/// The value XORed into the CRC-32 of FINGERPRINT ("STUN"). See RFC 8489 §14.7.
const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// Derives the MD5 long-term key: `MD5(username ":" realm ":" password)`. See RFC 8489 §9.2.2.
///
/// The TURN REST scheme's usernames and base64 passwords are ASCII, for which OpaqueString
/// preparation (RFC 8265) is the identity, so no preparation is applied.
pub fn long_term_key_md5(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// Derives the SHA-256 long-term key: `SHA-256(username ":" realm ":" password)`.
/// See RFC 8489 §9.2.2.
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    let mut c = digest::Context::new(&digest::SHA256);
    c.update(username.as_bytes());
    c.update(b":");
    c.update(realm.as_bytes());
    c.update(b":");
    c.update(password.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(c.finish().as_ref());
    out
}

/// Computes the FINGERPRINT value of `buf[..pos]`, where `pos` is the offset of the
/// FINGERPRINT attribute header.
pub fn fingerprint(buf: &[u8], pos: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&patched_header(buf, pos + 8));
    h.update(&buf[HEADER_LEN..pos]);
    h.finalize() ^ FINGERPRINT_XOR
}

/// Computes HMAC-SHA1 over `buf[..pos]` as MESSAGE-INTEGRITY at offset `pos` requires.
pub fn hmac_sha1(buf: &[u8], pos: usize, key: &[u8]) -> [u8; 20] {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mut c = hmac::Context::with_key(&key);
    c.update(&patched_header(buf, pos + 24));
    c.update(&buf[HEADER_LEN..pos]);
    let mut out = [0u8; 20];
    out.copy_from_slice(c.sign().as_ref());
    out
}

/// Computes HMAC-SHA256 over `buf[..pos]` as MESSAGE-INTEGRITY-SHA256 of `value_len` bytes at
/// offset `pos` requires.
pub fn hmac_sha256(buf: &[u8], pos: usize, value_len: usize, key: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut c = hmac::Context::with_key(&key);
    c.update(&patched_header(buf, pos + 4 + value_len));
    c.update(&buf[HEADER_LEN..pos]);
    let mut out = [0u8; 32];
    out.copy_from_slice(c.sign().as_ref());
    out
}

/// Verifies MESSAGE-INTEGRITY whose attribute header is at `pos`.
pub fn verify_sha1(buf: &[u8], pos: usize, key: &[u8]) -> bool {
    let Some(got) = buf.get(pos + 4..pos + 24) else {
        return false;
    };
    constant_time_eq(&hmac_sha1(buf, pos, key), got)
}

/// Verifies MESSAGE-INTEGRITY-SHA256 (possibly truncated to 16..32 bytes) at `pos`.
pub fn verify_sha256(buf: &[u8], pos: usize, key: &[u8]) -> bool {
    let len = usize::from(read_u16(buf, pos + 2));
    let Some(got) = buf.get(pos + 4..pos + 4 + len) else {
        return false;
    };
    let want = hmac_sha256(buf, pos, len, key);
    constant_time_eq(&want[..len.min(32)], got)
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Returns the first 20 bytes of `buf` with the length field set so that the message ends at
/// `end`.
fn patched_header(buf: &[u8], end: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&buf[..HEADER_LEN]);
    let len = u16::try_from(end - HEADER_LEN).unwrap_or(u16::MAX);
    h[2..4].copy_from_slice(&len.to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_key_matches_rfc5769_long_term_example() {
        // RFC 5769 §2.4: username "マトリックス" is prepared by SASLprep; the ASCII part of
        // the vector is checked in tests/rfc5769.rs. Here: a plain known MD5.
        let k = long_term_key_md5("user", "realm", "pass");
        assert_eq!(k.len(), 16);
        assert_ne!(k, long_term_key_md5("user", "realm", "pasS"));
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
