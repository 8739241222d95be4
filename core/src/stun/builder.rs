//! Encoding of STUN messages into a caller-owned buffer.

use std::net::SocketAddr;

use super::attr::{self, Family};
use super::{ErrorCode, HEADER_LEN, MAGIC_COOKIE, MessageType, TransactionId, integrity, padded};

/// Builds one STUN message, keeping the header length field current after every attribute.
#[derive(Debug)]
pub struct MessageBuilder {
    buf: Vec<u8>,
    tid: TransactionId,
}

impl MessageBuilder {
    /// Starts a message of type `typ` with transaction id `tid`.
    pub fn new(typ: MessageType, tid: TransactionId) -> Self {
        Self::with_buffer(Vec::with_capacity(128), typ, tid)
    }

    /// Starts a message in `buf` (cleared first), reusing its allocation.
    pub fn with_buffer(mut buf: Vec<u8>, typ: MessageType, tid: TransactionId) -> Self {
        buf.clear();
        buf.extend_from_slice(&typ.to_u16().to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&tid.0);
        Self { buf, tid }
    }

    /// Appends an attribute with a raw value (padded with zeros).
    ///
    /// # Panics
    ///
    /// Panics if `value` is longer than 65,535 bytes (a caller bug; every caller bounds it).
    pub fn add_raw(&mut self, ty: u16, value: &[u8]) {
        let len = u16::try_from(value.len()).expect("attribute values are bounded by callers");
        self.buf.extend_from_slice(&ty.to_be_bytes());
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(value);
        let pad = padded(value.len()) - value.len();
        self.buf.extend_from_slice(&[0u8; 3][..pad]);
        self.update_length();
    }

    /// Appends a 32-bit value (LIFETIME and the like).
    pub fn add_u32(&mut self, ty: u16, v: u32) {
        self.add_raw(ty, &v.to_be_bytes());
    }

    /// Appends an XOR-encoded address (XOR-MAPPED/PEER/RELAYED-ADDRESS).
    pub fn add_xor_address(&mut self, ty: u16, addr: SocketAddr) {
        let mut v = [0u8; 20];
        let len = attr::encode_xor_address(addr, &self.tid, &mut v);
        self.add_raw(ty, &v[..len]);
    }

    /// Appends a plain (non-XOR) address attribute (ALTERNATE-SERVER, MAPPED-ADDRESS).
    pub fn add_address(&mut self, ty: u16, addr: SocketAddr) {
        let mut v = [0u8; 20];
        let len = attr::encode_address(addr, &mut v);
        self.add_raw(ty, &v[..len]);
    }

    /// Appends ERROR-CODE with `code` (300..=699) and a reason phrase.
    pub fn add_error_code(&mut self, code: u16, reason: &str) {
        let mut v = Vec::with_capacity(4 + reason.len());
        v.extend_from_slice(&[0, 0, (code / 100) as u8, (code % 100) as u8]);
        // A reason phrase is at most 127 characters. See RFC 8489 §14.8.
        v.extend_from_slice(truncate_utf8(reason, 127 * 4).as_bytes());
        self.add_raw(attr::ERROR_CODE, &v);
    }

    /// Appends ERROR-CODE with `code`'s standard reason phrase, followed by `": detail"` when
    /// a detail is given.
    pub fn add_error(&mut self, code: ErrorCode, detail: Option<&str>) {
        match detail {
            None => self.add_error_code(code.code(), code.reason()),
            Some(d) => self.add_error_code(code.code(), &format!("{}: {d}", code.reason())),
        }
    }

    /// Appends UNKNOWN-ATTRIBUTES listing `types`.
    pub fn add_unknown_attributes(&mut self, types: &[u16]) {
        let v: Vec<u8> = types.iter().flat_map(|t| t.to_be_bytes()).collect();
        self.add_raw(attr::UNKNOWN_ATTRIBUTES, &v);
    }

    /// Appends an address-family attribute (REQUESTED-ADDRESS-FAMILY and the like).
    pub fn add_family(&mut self, ty: u16, family: Family) {
        self.add_raw(ty, &[family.to_wire(), 0, 0, 0]);
    }

    /// Appends ADDRESS-ERROR-CODE for `family` with `code`'s standard reason phrase. See
    /// RFC 8656 §18.12.
    pub fn add_address_error_code(&mut self, family: Family, code: ErrorCode) {
        let (reason, code) = (code.reason(), code.code());
        let mut v = vec![family.to_wire(), 0, (code / 100) as u8, (code % 100) as u8];
        v.extend_from_slice(reason.as_bytes());
        self.add_raw(attr::ADDRESS_ERROR_CODE, &v);
    }

    /// Appends MESSAGE-INTEGRITY computed with `key`. Only MESSAGE-INTEGRITY-SHA256 and
    /// FINGERPRINT may follow.
    pub fn add_message_integrity(&mut self, key: &[u8]) {
        let pos = self.buf.len();
        self.add_raw(attr::MESSAGE_INTEGRITY, &[0u8; 20]);
        let mac = integrity::hmac_sha1(&self.buf, pos, key);
        self.buf[pos + 4..pos + 24].copy_from_slice(&mac);
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 (32 bytes) computed with `key`.
    pub fn add_message_integrity_sha256(&mut self, key: &[u8]) {
        let pos = self.buf.len();
        self.add_raw(attr::MESSAGE_INTEGRITY_SHA256, &[0u8; 32]);
        let mac = integrity::hmac_sha256(&self.buf, pos, 32, key);
        self.buf[pos + 4..pos + 36].copy_from_slice(&mac);
    }

    /// Appends FINGERPRINT; nothing may follow.
    pub fn add_fingerprint(&mut self) {
        let pos = self.buf.len();
        self.add_raw(attr::FINGERPRINT, &[0u8; 4]);
        let crc = integrity::fingerprint(&self.buf, pos);
        self.buf[pos + 4..pos + 8].copy_from_slice(&crc.to_be_bytes());
    }

    /// Returns the encoded message.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    fn update_length(&mut self) {
        let len = u16::try_from(self.buf.len() - HEADER_LEN).unwrap_or(u16::MAX);
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }
}

/// Returns the longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::{Class, Message, Method};

    #[test]
    fn xor_addresses_round_trip() {
        let tid = TransactionId([9; 12]);
        for addr in ["192.0.2.1:32853", "[2001:db8::1]:3478"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut b = MessageBuilder::new(MessageType::new(Method::BINDING, Class::Success), tid);
            b.add_xor_address(attr::XOR_MAPPED_ADDRESS, addr);
            let bytes = b.finish();
            let m = Message::parse(&bytes).unwrap();
            let v = m.get(attr::XOR_MAPPED_ADDRESS).unwrap();
            assert_eq!(
                attr::decode_xor_address(attr::XOR_MAPPED_ADDRESS, v, &tid),
                Ok(addr)
            );
        }
    }

    #[test]
    fn integrity_round_trips() {
        let tid = TransactionId([3; 12]);
        let mut b = MessageBuilder::new(MessageType::new(Method::ALLOCATE, Class::Request), tid);
        b.add_raw(attr::USERNAME, b"u");
        b.add_message_integrity(b"k1");
        let sha1_only = Message::parse(&b.finish()).unwrap().as_bytes().to_vec();
        assert!(Message::parse(&sha1_only).unwrap().verify_integrity(b"k1"));
        assert!(!Message::parse(&sha1_only).unwrap().verify_integrity(b"k2"));
        let mut b = MessageBuilder::new(MessageType::new(Method::ALLOCATE, Class::Request), tid);
        b.add_raw(attr::USERNAME, b"u");
        b.add_message_integrity(b"k1");
        b.add_message_integrity_sha256(b"k2");
        b.add_fingerprint();
        let bytes = b.finish();
        let m = Message::parse(&bytes).unwrap();
        assert!(m.verify_integrity(b"k2"));
        assert!(!m.verify_integrity(b"k1"));
        assert_eq!(m.get(attr::USERNAME), Some(&b"u"[..]));
    }
}
