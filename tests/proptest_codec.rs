//! Property tests of the STUN codec and the TURN REST credentials: encode→parse round trips
//! with arbitrary attributes, addresses and keys; parsers that never panic; FINGERPRINT that
//! catches every single-byte change; credentials that verify with their secret and no other.
//!
//! Integrity and FINGERPRINT values are also recomputed here with `ring` and `crc32fast`
//! directly, so a mistake shared by the builder and the verifier cannot hide.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use proptest::collection::vec;
use proptest::prelude::*;
use ring::hmac;

use eeaturn::credentials::{self, Error as CredError, Secrets};
use eeaturn::stun::attr;
use eeaturn::stun::integrity::fingerprint;
use eeaturn::stun::{
    CHANNEL_DATA_HEADER_LEN, ChannelData, Class, HEADER_LEN, MAGIC_COOKIE, Message, MessageBuilder,
    MessageType, Method, TransactionId, write_channel_data_header,
};

/// One attribute: type and value.
type Attr = (u16, Vec<u8>);

/// Integrity to add after the attributes: MESSAGE-INTEGRITY key, MESSAGE-INTEGRITY-SHA256 key.
#[derive(Debug, Clone)]
struct Trailer {
    sha1: Option<Vec<u8>>,
    sha256: Option<Vec<u8>>,
    fingerprint: bool,
}

proptest! {
    #[test]
    fn arbitrary_messages_round_trip(
        typ in message_type(),
        tid in tid(),
        attrs in vec(attribute(), 0..10),
        trailer in trailer(),
    ) {
        let bytes = build(typ, tid, &attrs, &trailer);
        let m = Message::parse(&bytes).expect("a built message parses");

        prop_assert_eq!(m.message_type(), typ);
        prop_assert_eq!(m.transaction_id(), tid);
        let got: Vec<Attr> = m.attributes().map(|(t, v)| (t, v.to_vec())).collect();
        prop_assert_eq!(&got, &attrs);
        for (ty, _) in &attrs {
            let first = attrs.iter().find(|(t, _)| t == ty).map(|(_, v)| &v[..]);
            prop_assert_eq!(m.get(*ty), first);
            let range = m.value_range(*ty).expect("present");
            prop_assert_eq!(Some(&bytes[range]), first);
        }
        prop_assert_eq!(
            m.has_integrity(),
            trailer.sha1.is_some() || trailer.sha256.is_some()
        );
        prop_assert_eq!(m.has_integrity_sha256(), trailer.sha256.is_some());
        if trailer.fingerprint {
            let pos = bytes.len() - 8;
            prop_assert_eq!(read_u32(&bytes, pos + 4), crc_fingerprint(&bytes[..pos], pos + 8));
        }
    }

    #[test]
    fn integrity_verifies_with_the_right_key_only(
        typ in message_type(),
        tid in tid(),
        attrs in vec(attribute(), 0..6),
        trailer in trailer(),
        flip in any::<prop::sample::Index>(),
    ) {
        let bytes = build(typ, tid, &attrs, &trailer);
        let m = Message::parse(&bytes).expect("a built message parses");

        // MESSAGE-INTEGRITY-SHA256 is what counts when present; else MESSAGE-INTEGRITY.
        let key = trailer.sha256.as_ref().or(trailer.sha1.as_ref());
        match key {
            None => prop_assert!(!m.verify_integrity(b"any key")),
            Some(key) => {
                prop_assert!(m.verify_integrity(key));
                // Same length, one bit different: a different HMAC key, whatever its length.
                let mut wrong = key.clone();
                wrong[flip.index(key.len())] ^= 0x01;
                prop_assert!(!m.verify_integrity(&wrong));
            }
        }
        // The MACs are what an independent HMAC computes.
        let end = attrs_end(&attrs);
        if let Some(k) = &trailer.sha1 {
            let want = hmac_over(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, k, &bytes[..end], end + 24);
            prop_assert_eq!(&bytes[end + 4..end + 24], &want[..]);
        }
        if let Some(k) = &trailer.sha256 {
            let pos = if trailer.sha1.is_some() { end + 24 } else { end };
            let want = hmac_over(hmac::HMAC_SHA256, k, &bytes[..pos], pos + 36);
            prop_assert_eq!(&bytes[pos + 4..pos + 36], &want[..]);
        }
    }

    #[test]
    fn xor_addresses_round_trip(
        addr in socket_addr(),
        tid in tid(),
        ty in prop_oneof![
            Just(attr::XOR_MAPPED_ADDRESS),
            Just(attr::XOR_PEER_ADDRESS),
            Just(attr::XOR_RELAYED_ADDRESS),
        ],
    ) {
        let mut b = MessageBuilder::new(MessageType::new(Method::BINDING, Class::Success), tid);
        b.add_xor_address(ty, addr);
        let bytes = b.finish();
        let m = Message::parse(&bytes).expect("parses");
        let v = m.get(ty).expect("present");

        prop_assert_eq!(attr::decode_xor_address(ty, v, &tid), Ok(addr));
        // The encoding, computed independently (RFC 8489 §14.2).
        let mut want = vec![0u8, 0, 0, 0];
        want[2..4].copy_from_slice(&(addr.port() ^ 0x2112).to_be_bytes());
        match addr.ip() {
            IpAddr::V4(ip) => {
                want[1] = 0x01;
                want.extend((u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes());
            }
            IpAddr::V6(ip) => {
                want[1] = 0x02;
                let key: Vec<u8> = MAGIC_COOKIE.to_be_bytes().into_iter().chain(tid.0).collect();
                want.extend(ip.octets().iter().zip(key).map(|(a, k)| a ^ k));
            }
        }
        prop_assert_eq!(v, &want[..]);
        // A plain (non-XOR) address of the same shape decodes too.
        let plain = plain_address(addr);
        prop_assert_eq!(attr::decode_address(attr::MAPPED_ADDRESS, &plain), Ok(addr));
    }

    #[test]
    fn fingerprint_always_validates_after_building(
        typ in message_type(),
        tid in tid(),
        attrs in vec(attribute(), 0..10),
        sha1 in prop::option::of(key()),
    ) {
        let trailer = Trailer { sha1, sha256: None, fingerprint: true };
        let bytes = build(typ, tid, &attrs, &trailer);
        prop_assert!(Message::parse(&bytes).is_ok());
        let pos = bytes.len() - 8;
        prop_assert_eq!(read_u32(&bytes, pos + 4), fingerprint(&bytes, pos));
    }

    /// CRC-32 catches every error burst of 32 bits or less, so after a single changed byte a
    /// message either fails to parse, or parses with its FINGERPRINT still matching, or the
    /// change took FINGERPRINT out of the message's structure (its type, or a length that
    /// now swallows it) and the attributes still describe the bytes.
    #[test]
    fn a_changed_byte_breaks_the_fingerprint(
        typ in message_type(),
        tid in tid(),
        attrs in vec(attribute(), 0..6),
        sha1 in prop::option::of(key()),
        at in any::<prop::sample::Index>(),
        mask in 1u8..,
    ) {
        let trailer = Trailer { sha1, sha256: None, fingerprint: true };
        let mut bytes = build(typ, tid, &attrs, &trailer);
        let i = at.index(bytes.len());
        bytes[i] ^= mask;

        if let Ok(m) = Message::parse(&bytes) {
            let walked = walk(&bytes);
            let fp = bytes.len() - 8;
            if walked.last().is_some_and(|(t, _)| *t == attr::FINGERPRINT) {
                prop_assert_eq!(read_u32(&bytes, fp + 4), fingerprint(&bytes, fp));
            }
            let counted: Vec<(u16, &[u8])> = walked
                .into_iter()
                .take_while(|(t, _)| !is_trailer(*t))
                .collect();
            prop_assert_eq!(
                m.attributes().collect::<Vec<_>>(),
                counted,
                "byte {} changed by {:#04x}",
                i,
                mask
            );
        }
    }

    #[test]
    fn channel_data_round_trips(
        channel in 0x4000u16..=0x7FFF,
        data in vec(any::<u8>(), 0..1500),
        trailing in vec(any::<u8>(), 0..4),
    ) {
        let len = u16::try_from(data.len()).expect("short");
        let mut buf = vec![0u8; CHANNEL_DATA_HEADER_LEN];
        write_channel_data_header(&mut buf, channel, len);
        buf.extend_from_slice(&data);
        buf.extend_from_slice(&trailing);

        let cd = ChannelData::parse(&buf).expect("parses");
        prop_assert_eq!(cd.channel, channel);
        prop_assert_eq!(cd.data, &data[..]);
        // One byte short of the declared length is truncated.
        let short = &buf[..CHANNEL_DATA_HEADER_LEN + data.len()];
        if !data.is_empty() {
            prop_assert!(ChannelData::parse(&short[..short.len() - 1]).is_err());
        }
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..256)) {
        touch(&bytes);
        let _ = ChannelData::parse(&bytes);
    }

    /// Arbitrary attribute bytes behind a valid header, so that parsing gets past the framing.
    #[test]
    fn parsers_never_panic_on_framed_bytes(
        typ in any::<u16>(),
        tid in tid(),
        words in vec(any::<[u8; 4]>(), 0..48),
    ) {
        let body: Vec<u8> = words.concat();
        let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
        bytes.extend_from_slice(&(typ & 0x3FFF).to_be_bytes());
        bytes.extend_from_slice(&u16::try_from(body.len()).expect("short").to_be_bytes());
        bytes.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        bytes.extend_from_slice(&tid.0);
        bytes.extend_from_slice(&body);
        touch(&bytes);
    }

    #[test]
    fn issued_credentials_verify(
        user in user_id(),
        ttl in 1u64..=86_400,
        now in 0u64..4_000_000_000,
        secret in secret(),
        other in secret(),
    ) {
        prop_assume!(secret != other);
        let max = Duration::from_secs(86_400);
        let now = UNIX_EPOCH + Duration::from_secs(now);
        let secrets = Secrets::parse(&secret).expect("valid secret");
        let c = secrets.issue(&user, Duration::from_secs(ttl), max, now).expect("issued");

        prop_assert_eq!(c.ttl, ttl);
        let parsed = credentials::check_username(&c.username, now, max, Duration::ZERO)
            .expect("a fresh credential is valid");
        prop_assert_eq!(parsed.user, user.as_str());
        prop_assert_eq!(
            parsed.expiry,
            now.duration_since(UNIX_EPOCH).expect("after epoch").as_secs() + ttl
        );
        // The password is base64(HMAC-SHA1(secret, username)), recomputed independently.
        let want = rest_password(secret.as_bytes(), &c.username);
        prop_assert_eq!(&c.password, &want);
        prop_assert_eq!(secrets.passwords(&c.username).next(), Some(want));
        // Another secret gives another password; with both (rotation), the old one verifies.
        let others = Secrets::parse(&other).expect("valid secret");
        prop_assert_ne!(others.passwords(&c.username).next(), Some(c.password.clone()));
        let rotated = Secrets::parse(&format!("{other}\n{secret}\n")).expect("valid");
        prop_assert!(rotated.passwords(&c.username).any(|p| p == c.password));
        // At expiry it is refused.
        let at_expiry = now + Duration::from_secs(ttl);
        prop_assert_eq!(
            credentials::check_username(&c.username, at_expiry, max, Duration::ZERO),
            Err(CredError::Expired)
        );
    }

    #[test]
    fn unusable_user_ids_are_refused(user in "\\PC*") {
        let usable = !user.is_empty()
            && user.len() <= 256
            && user.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        let secrets = Secrets::parse("0123456789abcdef0123").expect("valid");
        let r = secrets.issue(&user, Duration::from_secs(60), Duration::from_secs(60), UNIX_EPOCH);
        prop_assert_eq!(r.is_ok(), usable);
    }

    #[test]
    fn parse_username_never_panics(s in "\\PC*", bytes in vec(any::<u8>(), 0..64)) {
        let _ = credentials::parse_username(&s);
        let lossy = String::from_utf8_lossy(&bytes);
        if let Ok(u) = credentials::parse_username(&lossy) {
            prop_assert!(lossy.ends_with(u.user));
        }
    }

    #[test]
    fn parse_username_reads_what_was_written(expiry in any::<u64>(), user in user_id()) {
        let name = format!("{expiry}:{user}");
        let u = credentials::parse_username(&name).expect("well formed");
        prop_assert_eq!((u.expiry, u.user), (expiry, user.as_str()));
        let bare = expiry.to_string();
        let bare = credentials::parse_username(&bare).expect("bare expiry");
        prop_assert_eq!((bare.expiry, bare.user), (expiry, ""));
    }
}

/// An attribute whose value happens to end with bytes that look like a FINGERPRINT attribute
/// (type 0x8028, length 4) must still be listed. `Message::parse` guesses where the counted
/// attributes end by looking at the last 8 bytes when there is no MESSAGE-INTEGRITY, and
/// drops such an attribute.
#[test]
fn attribute_ending_like_a_fingerprint_is_kept() {
    let tid = TransactionId([1; 12]);
    let value = [0x80, 0x28, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef];
    let mut b = MessageBuilder::new(MessageType::new(Method::BINDING, Class::Request), tid);
    b.add_raw(attr::SOFTWARE, &value);
    let bytes = b.finish();

    let m = Message::parse(&bytes).expect("well-formed message");
    assert_eq!(m.get(attr::SOFTWARE), Some(&value[..]));
    assert_eq!(m.attributes().count(), 1);
}

/// The same attribute, but with FINGERPRINT after it: a change of its length field that
/// swallows FINGERPRINT leaves a message without one (the parse may accept it), but its
/// attributes must still be listed as they are on the wire. `Message::parse` treats the last
/// 8 bytes as FINGERPRINT for listing, without having checked them.
#[test]
fn length_change_swallowing_the_fingerprint_keeps_attributes_honest() {
    let tid = TransactionId([2; 12]);
    let mut b = MessageBuilder::new(MessageType::new(Method::BINDING, Class::Request), tid);
    b.add_raw(attr::SOFTWARE, b"abcd");
    b.add_fingerprint();
    let mut bytes = b.finish();
    bytes[HEADER_LEN + 3] = 12; // SOFTWARE now runs over FINGERPRINT to the end.

    if let Ok(m) = Message::parse(&bytes) {
        assert_eq!(
            m.get(attr::SOFTWARE),
            Some(&bytes[HEADER_LEN + 4..]),
            "the message's only attribute is SOFTWARE, 12 bytes"
        );
    }
}

/// Parses `bytes` and, when that succeeds, runs every accessor and typed decoder.
fn touch(bytes: &[u8]) {
    let Ok(m) = Message::parse(bytes) else {
        return;
    };
    let tid = m.transaction_id();
    let _ = (
        m.message_type(),
        m.has_integrity(),
        m.verify_integrity(b"k"),
    );
    for (ty, v) in m.attributes() {
        let _ = m.value_range(ty);
        let _ = attr::decode_xor_address(ty, v, &tid);
        let _ = attr::decode_address(ty, v);
        let _ = attr::decode_u32(ty, v);
        let _ = attr::decode_requested_transport(v);
        let _ = attr::decode_family(ty, v);
        let _ = attr::decode_even_port(v);
        let _ = attr::decode_reservation_token(v);
        let _ = attr::decode_channel_number(v);
        let _ = attr::decode_text(ty, v, 763);
        let _ = attr::decode_error_code(v);
        let _ = attr::decode_password_algorithm(v);
    }
}

fn build(typ: MessageType, tid: TransactionId, attrs: &[Attr], trailer: &Trailer) -> Vec<u8> {
    let mut b = MessageBuilder::new(typ, tid);
    for (t, v) in attrs {
        b.add_raw(*t, v);
    }
    if let Some(k) = &trailer.sha1 {
        b.add_message_integrity(k);
    }
    if let Some(k) = &trailer.sha256 {
        b.add_message_integrity_sha256(k);
    }
    if trailer.fingerprint {
        b.add_fingerprint();
    }
    b.finish()
}

/// Walks the attributes of a parsed message independently of the codec.
fn walk(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut pos = HEADER_LEN;
    while pos + 4 <= buf.len() {
        let len = usize::from(read_u16(buf, pos + 2));
        let Some(value) = buf.get(pos + 4..pos + 4 + len) else {
            break;
        };
        out.push((read_u16(buf, pos), value));
        pos += 4 + len.div_ceil(4) * 4;
    }
    out
}

fn is_trailer(ty: u16) -> bool {
    matches!(
        ty,
        attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 | attr::FINGERPRINT
    )
}

/// Returns the offset where the attributes end (and integrity would start).
fn attrs_end(attrs: &[Attr]) -> usize {
    HEADER_LEN
        + attrs
            .iter()
            .map(|(_, v)| 4 + v.len().div_ceil(4) * 4)
            .sum::<usize>()
}

/// HMAC of `prefix` with its header length field set so that the message ends at `end`.
fn hmac_over(alg: hmac::Algorithm, key: &[u8], prefix: &[u8], end: usize) -> Vec<u8> {
    let mut data = prefix.to_vec();
    let len = u16::try_from(end - HEADER_LEN).expect("short");
    data[2..4].copy_from_slice(&len.to_be_bytes());
    hmac::sign(&hmac::Key::new(alg, key), &data)
        .as_ref()
        .to_vec()
}

/// FINGERPRINT of `prefix` with its header length field set so that the message ends at `end`.
fn crc_fingerprint(prefix: &[u8], end: usize) -> u32 {
    let mut data = prefix.to_vec();
    let len = u16::try_from(end - HEADER_LEN).expect("short");
    data[2..4].copy_from_slice(&len.to_be_bytes());
    crc32fast::hash(&data) ^ 0x5354_554e
}

fn rest_password(secret: &[u8], username: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, username.as_bytes()))
}

fn plain_address(addr: SocketAddr) -> Vec<u8> {
    let mut v = vec![0u8, 0];
    v.extend_from_slice(&addr.port().to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            v[1] = 0x01;
            v.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            v[1] = 0x02;
            v.extend_from_slice(&ip.octets());
        }
    }
    v
}

fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn message_type() -> impl Strategy<Value = MessageType> {
    let class = prop_oneof![
        Just(Class::Request),
        Just(Class::Indication),
        Just(Class::Success),
        Just(Class::Error),
    ];
    (0u16..0x1000, class).prop_map(|(m, c)| MessageType::new(Method(m), c))
}

fn tid() -> impl Strategy<Value = TransactionId> {
    any::<[u8; 12]>().prop_map(TransactionId)
}

/// Any attribute but the three that end a message (integrity and FINGERPRINT).
fn attribute() -> impl Strategy<Value = Attr> {
    let ty = prop_oneof![
        Just(attr::USERNAME),
        Just(attr::SOFTWARE),
        Just(attr::XOR_PEER_ADDRESS),
        Just(attr::DATA),
        Just(attr::LIFETIME),
        Just(attr::ICE_CONTROLLED),
        any::<u16>(),
    ]
    .prop_filter("not a trailer", |t| !is_trailer(*t));
    // Values that embed the header of an integrity or FINGERPRINT attribute test that
    // attribute boundaries come from the lengths, never from the contents.
    let lookalike = prop_oneof![
        Just([0x80u8, 0x28, 0x00, 0x04]),
        Just([0x00, 0x08, 0x00, 0x14]),
        Just([0x00, 0x1c, 0x00, 0x20]),
    ];
    let value = prop_oneof![
        4 => vec(any::<u8>(), 0..48),
        1 => (vec(any::<[u8; 4]>(), 0..4), lookalike, vec(any::<u8>(), 0..=8))
            .prop_map(|(head, mid, tail)| [head.concat(), mid.to_vec(), tail].concat()),
    ];
    (ty, value)
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    // Up to and beyond HMAC's 64-byte block, where keys are hashed first.
    vec(any::<u8>(), 1..100)
}

fn trailer() -> impl Strategy<Value = Trailer> {
    (
        prop::option::of(key()),
        prop::option::of(key()),
        any::<bool>(),
    )
        .prop_map(|(sha1, sha256, fingerprint)| Trailer {
            sha1,
            sha256,
            fingerprint,
        })
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

/// A user id `Secrets::issue` accepts: 1 to 256 printable ASCII characters without ':'.
fn user_id() -> impl Strategy<Value = String> {
    "[!-9;-~]{1,256}"
}

/// A secret `Secrets::parse` accepts: at least 16 printable characters, no surrounding space,
/// not a comment.
fn secret() -> impl Strategy<Value = String> {
    "[A-Za-z0-9+/=_-][!-~]{15,80}"
}
