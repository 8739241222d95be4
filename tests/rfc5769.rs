//! RFC 5769 test vectors against our codec: every sample message parses, its attributes
//! decode to the values the RFC states, its MESSAGE-INTEGRITY verifies with the stated key
//! and not with another, and its FINGERPRINT is checked. `MessageBuilder` reproduces the
//! RFC's XOR-MAPPED-ADDRESS encodings and, where the sample pads with zeros, the whole message.
//!
//! The vectors live in `tests/vectors/rfc5769-*.hex`, transcribed from the RFC with its
//! annotations as comments.

#[path = "common/vectors.rs"]
mod vectors;

use std::net::SocketAddr;

use eeaturn::stun::attr;
use eeaturn::stun::integrity::{fingerprint, long_term_key_md5};
use eeaturn::stun::{
    Class, DecodeError, HEADER_LEN, Message, MessageBuilder, MessageType, Method, TransactionId,
};

/// The short-term password of §2.1–§2.3.
const PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

const REQUEST: &str = include_str!("vectors/rfc5769-2.1-request.hex");
const IPV4_RESPONSE: &str = include_str!("vectors/rfc5769-2.2-ipv4-response.hex");
const IPV6_RESPONSE: &str = include_str!("vectors/rfc5769-2.3-ipv6-response.hex");
const LONG_TERM_REQUEST: &str = include_str!("vectors/rfc5769-2.4-long-term-request.hex");

/// The transaction id of §2.1–§2.3.
const TID: TransactionId = TransactionId([
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
]);

#[test]
fn sample_request_decodes() {
    let bytes = vectors::decode(REQUEST);
    assert_eq!(bytes.len(), 108);
    let m = Message::parse(&bytes).expect("§2.1 parses");

    assert_eq!(
        m.message_type(),
        MessageType::new(Method::BINDING, Class::Request)
    );
    assert_eq!(m.transaction_id(), TID);
    let types: Vec<u16> = m.attributes().map(|(t, _)| t).collect();
    assert_eq!(
        types,
        [
            attr::SOFTWARE,
            attr::PRIORITY,
            attr::ICE_CONTROLLED,
            attr::USERNAME
        ]
    );
    assert_eq!(text(&m, attr::SOFTWARE), "STUN test client");
    assert_eq!(text(&m, attr::USERNAME), "evtj:h6vY");
    let priority = m.get(attr::PRIORITY).expect("PRIORITY");
    assert_eq!(attr::decode_u32(attr::PRIORITY, priority), Ok(0x6e00_01ff));
    let tie_breaker = m.get(attr::ICE_CONTROLLED).expect("ICE-CONTROLLED");
    assert_eq!(tie_breaker, 0x932f_f9b1_5126_3b36_u64.to_be_bytes());
}

#[test]
fn sample_request_integrity_and_fingerprint() {
    let bytes = vectors::decode(REQUEST);
    let m = Message::parse(&bytes).expect("§2.1 parses");

    assert!(m.has_integrity());
    assert!(!m.has_integrity_sha256());
    assert!(
        m.verify_integrity(PASSWORD),
        "short-term key is the password"
    );
    assert!(!m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBT"));
    assert_fingerprint(&bytes, 0xe57a_3bcf);
}

#[test]
fn ipv4_response_decodes() {
    let bytes = vectors::decode(IPV4_RESPONSE);
    assert_eq!(bytes.len(), 80);
    let m = Message::parse(&bytes).expect("§2.2 parses");

    assert_eq!(
        m.message_type(),
        MessageType::new(Method::BINDING, Class::Success)
    );
    assert_eq!(m.transaction_id(), TID);
    assert_eq!(text(&m, attr::SOFTWARE), "test vector");
    assert_eq!(mapped(&m), sock("192.0.2.1:32853"));
    assert!(m.verify_integrity(PASSWORD));
    assert!(!m.verify_integrity(b"wrong"));
    assert_fingerprint(&bytes, 0xc07d_4c96);
}

#[test]
fn ipv6_response_decodes() {
    let bytes = vectors::decode(IPV6_RESPONSE);
    assert_eq!(bytes.len(), 92);
    let m = Message::parse(&bytes).expect("§2.3 parses");

    assert_eq!(
        m.message_type(),
        MessageType::new(Method::BINDING, Class::Success)
    );
    assert_eq!(m.transaction_id(), TID);
    assert_eq!(text(&m, attr::SOFTWARE), "test vector");
    assert_eq!(
        mapped(&m),
        sock("[2001:db8:1234:5678:11:2233:4455:6677]:32853")
    );
    assert!(m.verify_integrity(PASSWORD));
    assert!(!m.verify_integrity(b"wrong"));
    assert_fingerprint(&bytes, 0xc8fb_0b4c);
}

#[test]
fn builder_reproduces_xor_mapped_address_encodings() {
    for (vector, addr) in [
        (IPV4_RESPONSE, "192.0.2.1:32853"),
        (
            IPV6_RESPONSE,
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
        ),
    ] {
        let rfc = vectors::decode(vector);
        let mut b = MessageBuilder::new(MessageType::new(Method::BINDING, Class::Success), TID);
        b.add_xor_address(attr::XOR_MAPPED_ADDRESS, sock(addr));
        let ours = b.finish();

        // Ours holds just the attribute; the RFC's has SOFTWARE (16 bytes) in front of it.
        let attr_len = ours.len() - HEADER_LEN;
        let at = HEADER_LEN + 16;
        assert_eq!(
            ours[HEADER_LEN..],
            rfc[at..at + attr_len],
            "XOR-MAPPED-ADDRESS of {addr}"
        );
    }
}

#[test]
fn long_term_request_decodes() {
    let bytes = vectors::decode(LONG_TERM_REQUEST);
    assert_eq!(bytes.len(), 116);
    let m = Message::parse(&bytes).expect("§2.4 parses");

    assert_eq!(
        m.message_type(),
        MessageType::new(Method::BINDING, Class::Request)
    );
    assert_eq!(
        m.transaction_id(),
        TransactionId([
            0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72, 0xc0, 0x29, 0xda, 0x41, 0x2e
        ])
    );
    assert_eq!(text(&m, attr::USERNAME), "マトリックス");
    assert_eq!(text(&m, attr::NONCE), "f//499k954d6OL34oL9FSTvy64sA");
    assert_eq!(text(&m, attr::REALM), "example.org");
    assert!(m.has_integrity());
    assert_eq!(
        bytes[bytes.len() - 24..][..2],
        attr::MESSAGE_INTEGRITY.to_be_bytes(),
        "§2.4 has no FINGERPRINT: MESSAGE-INTEGRITY is last"
    );
}

#[test]
fn long_term_request_integrity() {
    let bytes = vectors::decode(LONG_TERM_REQUEST);
    let m = Message::parse(&bytes).expect("§2.4 parses");

    // "TheMatrIX" is the password after SASLprep (RFC 5769 §2.4).
    let key = long_term_key_md5("マトリックス", "example.org", "TheMatrIX");
    assert!(m.verify_integrity(&key));
    assert!(!m.verify_integrity(&long_term_key_md5(
        "マトリックス",
        "example.org",
        "TheMatrix"
    )));
    assert!(!m.verify_integrity(&long_term_key_md5(
        "マトリックス",
        "example.com",
        "TheMatrIX"
    )));
    assert!(!m.verify_integrity(b"TheMatrIX"), "not the short-term key");
}

#[test]
fn builder_reproduces_long_term_request() {
    // §2.4 pads with zeros, as the builder does, so the whole message is reproducible.
    let rfc = vectors::decode(LONG_TERM_REQUEST);
    let m = Message::parse(&rfc).expect("§2.4 parses");

    let mut b = MessageBuilder::new(
        MessageType::new(Method::BINDING, Class::Request),
        m.transaction_id(),
    );
    b.add_raw(attr::USERNAME, "マトリックス".as_bytes());
    b.add_raw(attr::NONCE, b"f//499k954d6OL34oL9FSTvy64sA");
    b.add_raw(attr::REALM, b"example.org");
    b.add_message_integrity(&long_term_key_md5(
        "マトリックス",
        "example.org",
        "TheMatrIX",
    ));

    assert_eq!(b.finish(), rfc);
}

#[test]
fn corrupted_vectors_are_refused() {
    for vector in [REQUEST, IPV4_RESPONSE, IPV6_RESPONSE] {
        let good = vectors::decode(vector);
        // Any change under the FINGERPRINT fails the parse.
        for i in [0, 3, 8, 19, 20, 40, good.len() - 9, good.len() - 1] {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert!(Message::parse(&bad).is_err(), "byte {i} flipped");
        }
        let mut bad = good.clone();
        bad[HEADER_LEN + 5] ^= 0x20;
        assert_eq!(
            Message::parse(&bad).unwrap_err(),
            DecodeError::BadFingerprint
        );

        // A changed MAC with a recomputed FINGERPRINT parses but does not verify.
        let mut bad = good.clone();
        let fp = bad.len() - 8;
        bad[fp - 1] ^= 0x80;
        let crc = fingerprint(&bad, fp);
        bad[fp + 4..].copy_from_slice(&crc.to_be_bytes());
        let m = Message::parse(&bad).expect("FINGERPRINT recomputed");
        assert!(!m.verify_integrity(PASSWORD));
    }

    let mut bad = vectors::decode(LONG_TERM_REQUEST);
    bad[30] ^= 0x01;
    let m = Message::parse(&bad).expect("no FINGERPRINT in §2.4");
    let key = long_term_key_md5("マトリックス", "example.org", "TheMatrIX");
    assert!(!m.verify_integrity(&key), "USERNAME changed under the MAC");
}

/// Asserts that the last attribute is FINGERPRINT with `value`, and that it is what the codec
/// computes.
fn assert_fingerprint(bytes: &[u8], value: u32) {
    let pos = bytes.len() - 8;
    assert_eq!(bytes[pos..pos + 4], [0x80, 0x28, 0x00, 0x04]);
    assert_eq!(bytes[pos + 4..], value.to_be_bytes());
    assert_eq!(fingerprint(bytes, pos), value);
}

fn mapped(m: &Message<'_>) -> SocketAddr {
    let v = m.get(attr::XOR_MAPPED_ADDRESS).expect("XOR-MAPPED-ADDRESS");
    attr::decode_xor_address(attr::XOR_MAPPED_ADDRESS, v, &m.transaction_id())
        .expect("XOR-MAPPED-ADDRESS decodes")
}

fn text<'a>(m: &Message<'a>, ty: u16) -> &'a str {
    let v = m.get(ty).expect("attribute present");
    attr::decode_text(ty, v, 763).expect("UTF-8 text")
}

fn sock(s: &str) -> SocketAddr {
    s.parse().expect("socket address literal")
}
