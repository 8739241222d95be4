//! Attribute types and typed decoding of attribute values (RFC 8489 §14, RFC 8656 §18).
//!
//! Decoders take the raw value returned by [`super::Message::get`] and return a typed value or
//! [`DecodeError::BadAttribute`]; encoders live on [`super::MessageBuilder`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{DecodeError, MAGIC_COOKIE, TransactionId, read_u16, read_u32};

/// MAPPED-ADDRESS. See RFC 8489 §14.1.
pub const MAPPED_ADDRESS: u16 = 0x0001;
/// USERNAME. See RFC 8489 §14.3.
pub const USERNAME: u16 = 0x0006;
/// MESSAGE-INTEGRITY. See RFC 8489 §14.5.
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
/// ERROR-CODE. See RFC 8489 §14.8.
pub const ERROR_CODE: u16 = 0x0009;
/// UNKNOWN-ATTRIBUTES. See RFC 8489 §14.13.
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
/// CHANNEL-NUMBER. See RFC 8656 §18.1.
pub const CHANNEL_NUMBER: u16 = 0x000C;
/// LIFETIME. See RFC 8656 §18.2.
pub const LIFETIME: u16 = 0x000D;
/// XOR-PEER-ADDRESS. See RFC 8656 §18.3.
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
/// DATA. See RFC 8656 §18.4.
pub const DATA: u16 = 0x0013;
/// REALM. See RFC 8489 §14.9.
pub const REALM: u16 = 0x0014;
/// NONCE. See RFC 8489 §14.10.
pub const NONCE: u16 = 0x0015;
/// XOR-RELAYED-ADDRESS. See RFC 8656 §18.5.
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
/// REQUESTED-ADDRESS-FAMILY. See RFC 8656 §18.6.
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
/// EVEN-PORT. See RFC 8656 §18.7.
pub const EVEN_PORT: u16 = 0x0018;
/// REQUESTED-TRANSPORT. See RFC 8656 §18.8.
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
/// DONT-FRAGMENT. See RFC 8656 §18.9.
pub const DONT_FRAGMENT: u16 = 0x001A;
/// MESSAGE-INTEGRITY-SHA256. See RFC 8489 §14.6.
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
/// PASSWORD-ALGORITHM. See RFC 8489 §14.12.
pub const PASSWORD_ALGORITHM: u16 = 0x001D;
/// USERHASH. See RFC 8489 §14.4.
pub const USERHASH: u16 = 0x001E;
/// XOR-MAPPED-ADDRESS. See RFC 8489 §14.2.
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// RESERVATION-TOKEN. See RFC 8656 §18.10.
pub const RESERVATION_TOKEN: u16 = 0x0022;
/// PRIORITY (ICE). See RFC 8445 §16.1.
pub const PRIORITY: u16 = 0x0024;
/// USE-CANDIDATE (ICE). See RFC 8445 §16.1.
pub const USE_CANDIDATE: u16 = 0x0025;
/// ADDITIONAL-ADDRESS-FAMILY. See RFC 8656 §18.11.
pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
/// ADDRESS-ERROR-CODE. See RFC 8656 §18.12.
pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
/// PASSWORD-ALGORITHMS. See RFC 8489 §14.11.
pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
/// SOFTWARE. See RFC 8489 §14.14.
pub const SOFTWARE: u16 = 0x8022;
/// ALTERNATE-SERVER: where to retry, with a 300 (Try Alternate). See RFC 8489 §14.15.
pub const ALTERNATE_SERVER: u16 = 0x8023;
/// FINGERPRINT. See RFC 8489 §14.7.
pub const FINGERPRINT: u16 = 0x8028;
/// ICE-CONTROLLED. See RFC 8445 §16.1.
pub const ICE_CONTROLLED: u16 = 0x8029;
/// ICE-CONTROLLING. See RFC 8445 §16.1.
pub const ICE_CONTROLLING: u16 = 0x802A;

/// Address family value for IPv4 in address attributes. See RFC 8489 §14.1.
pub const FAMILY_IPV4: u8 = 0x01;
/// Address family value for IPv6 in address attributes. See RFC 8489 §14.1.
pub const FAMILY_IPV6: u8 = 0x02;

/// IANA protocol number of UDP, the value of REQUESTED-TRANSPORT for UDP relaying.
pub const TRANSPORT_UDP: u8 = 17;

/// PASSWORD-ALGORITHM value for MD5. See RFC 8489 §18.5.
pub const PASSWORD_ALGORITHM_MD5: u16 = 0x0001;
/// PASSWORD-ALGORITHM value for SHA-256. See RFC 8489 §18.5.
pub const PASSWORD_ALGORITHM_SHA256: u16 = 0x0002;

/// Returns true for comprehension-required attribute types (0x0000–0x7FFF).
pub const fn is_comprehension_required(ty: u16) -> bool {
    ty < 0x8000
}

/// The IP address family of an address attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4 (0x01 on the wire).
    V4,
    /// IPv6 (0x02 on the wire).
    V6,
}

impl Family {
    /// Returns the family of an address.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    /// Returns the wire value (0x01 / 0x02).
    pub fn to_wire(self) -> u8 {
        match self {
            Self::V4 => FAMILY_IPV4,
            Self::V6 => FAMILY_IPV6,
        }
    }
}

/// Decodes an XOR-encoded address (XOR-MAPPED/PEER/RELAYED-ADDRESS). See RFC 8489 §14.2.
///
/// # Errors
///
/// Returns [`DecodeError::BadAttribute`] on a wrong length or unknown family.
pub fn decode_xor_address(
    ty: u16,
    value: &[u8],
    tid: &TransactionId,
) -> Result<SocketAddr, DecodeError> {
    let bad = DecodeError::BadAttribute(ty);
    if value.len() < 4 {
        return Err(bad);
    }
    let port = read_u16(value, 2) ^ (MAGIC_COOKIE >> 16) as u16;
    match value[1] {
        FAMILY_IPV4 if value.len() == 8 => {
            let ip = read_u32(value, 4) ^ MAGIC_COOKIE;
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        FAMILY_IPV6 if value.len() == 20 => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&value[4..20]);
            for (b, k) in ip.iter_mut().zip(xor_key(tid)) {
                *b ^= k;
            }
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => Err(bad),
    }
}

/// Decodes a plain (non-XOR) address attribute such as MAPPED-ADDRESS. See RFC 8489 §14.1.
///
/// # Errors
///
/// Returns [`DecodeError::BadAttribute`] on a wrong length or unknown family.
pub fn decode_address(ty: u16, value: &[u8]) -> Result<SocketAddr, DecodeError> {
    let bad = DecodeError::BadAttribute(ty);
    if value.len() < 4 {
        return Err(bad);
    }
    let port = read_u16(value, 2);
    match value[1] {
        FAMILY_IPV4 if value.len() == 8 => Ok(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::from(read_u32(value, 4))),
            port,
        )),
        FAMILY_IPV6 if value.len() == 20 => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&value[4..20]);
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => Err(bad),
    }
}

/// Writes the plain (non-XOR) value of `addr` (family, port, address) into `out` and returns
/// its length: 8 for IPv4, 20 for IPv6. See RFC 8489 §14.1.
pub(crate) fn encode_address(addr: SocketAddr, out: &mut [u8; 20]) -> usize {
    out[0] = 0;
    out[2..4].copy_from_slice(&addr.port().to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = FAMILY_IPV4;
            out[4..8].copy_from_slice(&ip.octets());
            8
        }
        IpAddr::V6(ip) => {
            out[1] = FAMILY_IPV6;
            out[4..20].copy_from_slice(&ip.octets());
            20
        }
    }
}

/// Writes the XOR-encoded value of `addr` (family, port, address) into `out` and returns its
/// length: 8 for IPv4, 20 for IPv6. See RFC 8489 §14.2.
pub(crate) fn encode_xor_address(
    addr: SocketAddr,
    tid: &TransactionId,
    out: &mut [u8; 20],
) -> usize {
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    out[0] = 0;
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = FAMILY_IPV4;
            out[4..8].copy_from_slice(&(u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes());
            8
        }
        IpAddr::V6(ip) => {
            out[1] = FAMILY_IPV6;
            for ((o, b), k) in out[4..].iter_mut().zip(ip.octets()).zip(xor_key(tid)) {
                *o = b ^ k;
            }
            20
        }
    }
}

/// Returns the 16-byte key that XOR-encoded IPv6 addresses use: cookie ‖ transaction id.
pub(crate) fn xor_key(tid: &TransactionId) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    key[4..].copy_from_slice(&tid.0);
    key
}

/// Decodes a 32-bit unsigned value (LIFETIME, FINGERPRINT, PRIORITY).
///
/// # Errors
///
/// Returns [`DecodeError::BadAttribute`] when the value is not four bytes.
pub fn decode_u32(ty: u16, value: &[u8]) -> Result<u32, DecodeError> {
    if value.len() != 4 {
        return Err(DecodeError::BadAttribute(ty));
    }
    Ok(read_u32(value, 0))
}

/// Decodes REQUESTED-TRANSPORT: returns the protocol number. See RFC 8656 §18.8.
///
/// # Errors
///
/// Returns [`DecodeError::BadAttribute`] when the value is not four bytes.
pub fn decode_requested_transport(value: &[u8]) -> Result<u8, DecodeError> {
    if value.len() != 4 {
        return Err(DecodeError::BadAttribute(REQUESTED_TRANSPORT));
    }
    Ok(value[0])
}

/// Decodes REQUESTED-ADDRESS-FAMILY or ADDITIONAL-ADDRESS-FAMILY. See RFC 8656 §18.6.
///
/// # Errors
///
/// Returns [`DecodeError::BadAttribute`] on a wrong length or an unknown family value; the
/// server answers the latter with 440 where the RFC asks for it.
pub fn decode_family(ty: u16, value: &[u8]) -> Result<Family, DecodeError> {
    if value.len() != 4 {
        return Err(DecodeError::BadAttribute(ty));
    }
    match value[0] {
        FAMILY_IPV4 => Ok(Family::V4),
        FAMILY_IPV6 => Ok(Family::V6),
        _ => Err(DecodeError::BadAttribute(ty)),
    }
}

/// Decodes EVEN-PORT: returns the R (reserve) bit. See RFC 8656 §18.7.
///
/// # Errors
///
/// Returns [`DecodeError::BadAttribute`] when the value is not one byte.
pub fn decode_even_port(value: &[u8]) -> Result<bool, DecodeError> {
    if value.len() != 1 {
        return Err(DecodeError::BadAttribute(EVEN_PORT));
    }
    Ok(value[0] & 0x80 != 0)
}

/// Decodes RESERVATION-TOKEN (8 opaque bytes). See RFC 8656 §18.10.
///
/// # Errors
///
/// Returns [`DecodeError::BadAttribute`] when the value is not eight bytes.
pub fn decode_reservation_token(value: &[u8]) -> Result<u64, DecodeError> {
    let bytes: [u8; 8] = value
        .try_into()
        .map_err(|_| DecodeError::BadAttribute(RESERVATION_TOKEN))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Decodes CHANNEL-NUMBER. See RFC 8656 §18.1.
///
/// # Errors
///
/// Returns [`DecodeError::BadAttribute`] when the value is not four bytes.
pub fn decode_channel_number(value: &[u8]) -> Result<u16, DecodeError> {
    if value.len() != 4 {
        return Err(DecodeError::BadAttribute(CHANNEL_NUMBER));
    }
    Ok(read_u16(value, 0))
}

/// Decodes a UTF-8 text attribute (USERNAME, REALM, NONCE, SOFTWARE) of at most `max` bytes.
///
/// # Errors
///
/// Returns [`DecodeError::BadAttribute`] when the value is too long or not UTF-8.
pub fn decode_text(ty: u16, value: &[u8], max: usize) -> Result<&str, DecodeError> {
    if value.len() > max {
        return Err(DecodeError::BadAttribute(ty));
    }
    std::str::from_utf8(value).map_err(|_| DecodeError::BadAttribute(ty))
}

/// Decodes ERROR-CODE into `(code, reason)`. See RFC 8489 §14.8.
///
/// # Errors
///
/// Returns [`DecodeError::BadAttribute`] on a short value, a code outside 300..=699 or a
/// reason that is not UTF-8.
pub fn decode_error_code(value: &[u8]) -> Result<(u16, &str), DecodeError> {
    let bad = DecodeError::BadAttribute(ERROR_CODE);
    if value.len() < 4 {
        return Err(bad);
    }
    let class = u16::from(value[2] & 0x07);
    let number = u16::from(value[3]);
    if !(3..=6).contains(&class) || number > 99 {
        return Err(bad);
    }
    let reason = std::str::from_utf8(&value[4..]).map_err(|_| bad)?;
    Ok((class * 100 + number, reason))
}

/// Decodes PASSWORD-ALGORITHM: returns the algorithm number. See RFC 8489 §14.12.
///
/// # Errors
///
/// Returns [`DecodeError::BadAttribute`] when the value is too short or its parameter length
/// does not match.
pub fn decode_password_algorithm(value: &[u8]) -> Result<u16, DecodeError> {
    if value.len() < 4 || usize::from(read_u16(value, 2)) != value.len() - 4 {
        return Err(DecodeError::BadAttribute(PASSWORD_ALGORITHM));
    }
    Ok(read_u16(value, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_code_decodes() {
        assert_eq!(decode_error_code(&[0, 0, 4, 1, b'x']), Ok((401, "x")));
        assert!(decode_error_code(&[0, 0, 7, 1]).is_err());
        assert!(decode_error_code(&[0, 0, 4, 100]).is_err());
    }

    #[test]
    fn families_decode() {
        assert_eq!(
            decode_family(REQUESTED_ADDRESS_FAMILY, &[1, 0, 0, 0]),
            Ok(Family::V4)
        );
        assert_eq!(
            decode_family(REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]),
            Ok(Family::V6)
        );
        assert!(decode_family(REQUESTED_ADDRESS_FAMILY, &[3, 0, 0, 0]).is_err());
    }
}
