//! Data indication framing in place, in front of a peer's payload. See RFC 8656 §11.4.

use std::net::SocketAddr;
use std::ops::Range;

use super::attr;
use super::{Class, HEADER_LEN, MAGIC_COOKIE, MessageType, Method, TransactionId, padded};

/// The longest Data indication header: STUN header (20) + XOR-PEER-ADDRESS for IPv6 (4 + 20)
/// + DATA attribute header (4).
pub const DATA_INDICATION_MAX_HEADER_LEN: usize = HEADER_LEN + 4 + 20 + 4;

/// Writes a Data indication header (XOR-PEER-ADDRESS `peer`, then the DATA attribute header)
/// into the bytes in front of `buf[payload]`, zeroes the DATA padding after it, and returns the
/// range of the whole message. No allocation: this runs per packet.
///
/// Returns `None` when the header or padding does not fit in `buf` around `payload`, or the
/// message would be longer than a STUN length field can say.
pub fn write_data_indication(
    buf: &mut [u8],
    payload: Range<usize>,
    peer: SocketAddr,
    tid: TransactionId,
) -> Option<Range<usize>> {
    let mut addr = [0u8; 20];
    let addr_len = attr::encode_xor_address(peer, &tid, &mut addr);
    let header = HEADER_LEN + 4 + addr_len + 4;
    let start = payload.start.checked_sub(header)?;
    let len = payload.len();
    let pad = padded(len) - len;
    let end = payload.end + pad;
    if end > buf.len() {
        return None;
    }
    let msg_len = u16::try_from(4 + addr_len + 4 + len + pad).ok()?;
    let data_len = u16::try_from(len).ok()?;
    buf[payload.end..end].fill(0);
    let mut w = start;
    let mut put = |bytes: &[u8]| {
        buf[w..w + bytes.len()].copy_from_slice(bytes);
        w += bytes.len();
    };
    put(&MessageType::new(Method::DATA, Class::Indication)
        .to_u16()
        .to_be_bytes());
    put(&msg_len.to_be_bytes());
    put(&MAGIC_COOKIE.to_be_bytes());
    put(&tid.0);
    put(&attr::XOR_PEER_ADDRESS.to_be_bytes());
    put(&(addr_len as u16).to_be_bytes());
    put(&addr[..addr_len]);
    put(&attr::DATA.to_be_bytes());
    put(&data_len.to_be_bytes());
    debug_assert_eq!(w, payload.start);
    Some(start..end)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::stun::Message;

    #[test]
    fn frames_in_place_and_parses_back() {
        let tid = TransactionId([7; 12]);
        for peer in ["192.0.2.1:9000", "[2001:db8::1]:9000"] {
            let peer: SocketAddr = peer.parse().unwrap();
            let mut buf = [0xEEu8; DATA_INDICATION_MAX_HEADER_LEN + 5 + 3];
            let payload = DATA_INDICATION_MAX_HEADER_LEN..DATA_INDICATION_MAX_HEADER_LEN + 5;
            buf[payload.clone()].copy_from_slice(b"hello");
            let range = write_data_indication(&mut buf, payload, peer, tid).unwrap();
            let m = Message::parse(&buf[range]).unwrap();
            assert_eq!(m.method(), Method::DATA);
            assert_eq!(m.class(), Class::Indication);
            let v = m.get(attr::XOR_PEER_ADDRESS).unwrap();
            assert_eq!(
                attr::decode_xor_address(attr::XOR_PEER_ADDRESS, v, &tid),
                Ok(peer)
            );
            assert_eq!(m.get(attr::DATA), Some(&b"hello"[..]));
        }
    }

    #[test]
    fn refuses_without_headroom_or_tailroom() {
        let peer: SocketAddr = "192.0.2.1:9000".parse().unwrap();
        let tid = TransactionId([1; 12]);
        let mut buf = [0u8; 64];
        assert_eq!(write_data_indication(&mut buf, 10..15, peer, tid), None);
        assert_eq!(write_data_indication(&mut buf, 49..64, peer, tid), None);
    }
}
