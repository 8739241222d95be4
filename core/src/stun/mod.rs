//! STUN and TURN wire codec (RFC 8489, RFC 8656): the one place that reads and writes STUN,
//! TURN and ChannelData framing. The relay composes messages from the typed pieces here
//! ([`MessageBuilder`], [`attr`], [`ErrorCode`], [`write_channel_data`],
//! [`write_data_indication`]) and never writes a header, an attribute header or an address
//! itself; the few opaque attribute values it owns (the PASSWORD-ALGORITHMS offer, a
//! RESERVATION-TOKEN, SOFTWARE) it hands to [`MessageBuilder::add_raw`].
//!
//! Parsing is zero-copy: [`Message::parse`] validates the framing of a borrowed buffer and
//! records where the integrity attributes are; attribute values are decoded on demand by the
//! functions in [`attr`]. Encoding writes into a caller-owned buffer ([`MessageBuilder`]).
//! No I/O, no clock, no allocation on the parse path.

pub mod attr;
mod builder;
mod channel_data;
mod data_indication;
mod error;
mod error_code;
pub mod integrity;

pub use builder::MessageBuilder;
pub use channel_data::{
    CHANNEL_DATA_HEADER_LEN, ChannelData, ChannelNumber, write_channel_data,
    write_channel_data_header,
};
pub use data_indication::{DATA_INDICATION_MAX_HEADER_LEN, write_data_indication};
pub use error::DecodeError;
pub use error_code::ErrorCode;

/// The fixed value in bytes 4..8 of every RFC 5389/8489 message. See RFC 8489 §5.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// Length of the STUN header. See RFC 8489 §5.
pub const HEADER_LEN: usize = 20;

/// The class of a STUN message. See RFC 8489 §5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request, answered by a success or error response.
    Request,
    /// An indication, never answered.
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

/// A STUN method (12 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method(pub u16);

impl Method {
    /// Binding. See RFC 8489 §18.2.
    pub const BINDING: Self = Self(0x001);
    /// Allocate. See RFC 8656 §17.
    pub const ALLOCATE: Self = Self(0x003);
    /// Refresh. See RFC 8656 §17.
    pub const REFRESH: Self = Self(0x004);
    /// Send (indication only). See RFC 8656 §17.
    pub const SEND: Self = Self(0x006);
    /// Data (indication only). See RFC 8656 §17.
    pub const DATA: Self = Self(0x007);
    /// CreatePermission. See RFC 8656 §17.
    pub const CREATE_PERMISSION: Self = Self(0x008);
    /// ChannelBind. See RFC 8656 §17.
    pub const CHANNEL_BIND: Self = Self(0x009);

    /// Returns a short name for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::BINDING => "binding",
            Self::ALLOCATE => "allocate",
            Self::REFRESH => "refresh",
            Self::SEND => "send",
            Self::DATA => "data",
            Self::CREATE_PERMISSION => "create_permission",
            Self::CHANNEL_BIND => "channel_bind",
            _ => "other",
        }
    }
}

/// A STUN message type: method and class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageType {
    /// The method (12 bits; interleaved with the class on the wire).
    pub method: Method,
    /// The class (2 bits).
    pub class: Class,
}

impl MessageType {
    /// Creates a message type.
    pub const fn new(method: Method, class: Class) -> Self {
        Self { method, class }
    }

    /// Decodes the 14-bit type field (the two top bits must already be known to be zero).
    pub fn from_u16(v: u16) -> Self {
        let class = match ((v >> 7) & 0b10) | ((v >> 4) & 0b01) {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        };
        let method = (v & 0x000F) | ((v >> 1) & 0x0070) | ((v >> 2) & 0x0F80);
        Self {
            method: Method(method),
            class,
        }
    }

    /// Encodes the type field. See RFC 8489 §5, figure 3.
    pub fn to_u16(self) -> u16 {
        let m = self.method.0 & 0x0FFF;
        let c: u16 = match self.class {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        };
        (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
    }
}

/// The 96-bit transaction id of a STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(pub [u8; 12]);

/// A validated STUN message borrowed from a buffer.
///
/// The framing, the attribute layout and FINGERPRINT (if present) have been checked;
/// MESSAGE-INTEGRITY(-SHA256) are located but verified only by [`Message::verify_integrity`].
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    buf: &'a [u8],
    typ: MessageType,
    tid: TransactionId,
    /// End of the attributes that count (before MESSAGE-INTEGRITY or
    /// MESSAGE-INTEGRITY-SHA256, whichever comes first).
    attrs_end: usize,
    /// Offset of the MESSAGE-INTEGRITY attribute header.
    integrity: Option<usize>,
    /// Offset of the MESSAGE-INTEGRITY-SHA256 attribute header.
    integrity_sha256: Option<usize>,
}

impl<'a> Message<'a> {
    /// Parses one complete STUN message that fills `buf` exactly (a datagram or a framed
    /// stream message).
    ///
    /// # Errors
    ///
    /// Returns a [`DecodeError`] when the bytes are not a well-formed STUN message or the
    /// FINGERPRINT does not match.
    pub fn parse(buf: &'a [u8]) -> Result<Self, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::Truncated);
        }
        if buf[0] & 0xC0 != 0 || read_u32(buf, 4) != MAGIC_COOKIE {
            return Err(DecodeError::NotStun);
        }
        let len = usize::from(read_u16(buf, 2));
        if len % 4 != 0 || HEADER_LEN + len != buf.len() {
            return Err(DecodeError::BadLength);
        }
        let typ = MessageType::from_u16(read_u16(buf, 0));
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&buf[8..20]);

        let mut attrs_end = None;
        let mut integrity = None;
        let mut integrity_sha256 = None;
        let mut fingerprint_at = None;
        let mut pos = HEADER_LEN;
        while pos < buf.len() {
            if buf.len() - pos < 4 {
                return Err(DecodeError::AttributeOverrun);
            }
            let ty = read_u16(buf, pos);
            let vlen = usize::from(read_u16(buf, pos + 2));
            let next = pos + 4 + padded(vlen);
            if next > buf.len() {
                return Err(DecodeError::AttributeOverrun);
            }
            match ty {
                attr::FINGERPRINT => {
                    if next != buf.len() || vlen != 4 {
                        return Err(DecodeError::AttributeAfterIntegrity);
                    }
                    if integrity::fingerprint(buf, pos) != read_u32(buf, pos + 4) {
                        return Err(DecodeError::BadFingerprint);
                    }
                    fingerprint_at = Some(pos);
                }
                attr::MESSAGE_INTEGRITY => {
                    if integrity.is_some() || integrity_sha256.is_some() || vlen != 20 {
                        return Err(DecodeError::AttributeAfterIntegrity);
                    }
                    integrity = Some(pos);
                    attrs_end.get_or_insert(pos);
                }
                attr::MESSAGE_INTEGRITY_SHA256 => {
                    if integrity_sha256.is_some() || !(16..=32).contains(&vlen) || vlen % 4 != 0 {
                        return Err(DecodeError::BadAttribute(ty));
                    }
                    integrity_sha256 = Some(pos);
                    attrs_end.get_or_insert(pos);
                }
                _ if attrs_end.is_some() => return Err(DecodeError::AttributeAfterIntegrity),
                _ => {}
            }
            pos = next;
        }
        // Without integrity the counted attributes end at FINGERPRINT, if any.
        let attrs_end = attrs_end.or(fingerprint_at).unwrap_or(buf.len());
        Ok(Self {
            buf,
            typ,
            tid: TransactionId(tid),
            attrs_end,
            integrity,
            integrity_sha256,
        })
    }

    /// Returns the message type.
    pub fn message_type(&self) -> MessageType {
        self.typ
    }

    /// Returns the method.
    pub fn method(&self) -> Method {
        self.typ.method
    }

    /// Returns the class.
    pub fn class(&self) -> Class {
        self.typ.class
    }

    /// Returns the transaction id.
    pub fn transaction_id(&self) -> TransactionId {
        self.tid
    }

    /// Returns the whole message.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Iterates over the attributes before any integrity attribute, as `(type, value)`.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes {
            buf: &self.buf[..self.attrs_end],
            pos: HEADER_LEN,
        }
    }

    /// Returns the value of the first attribute of type `ty` (before any integrity attribute).
    pub fn get(&self, ty: u16) -> Option<&'a [u8]> {
        self.attributes().find(|(t, _)| *t == ty).map(|(_, v)| v)
    }

    /// Returns the offset of the value of the first attribute of type `ty`, and its length.
    pub fn value_range(&self, ty: u16) -> Option<std::ops::Range<usize>> {
        let mut it = self.attributes();
        loop {
            let start = it.pos + 4;
            let (t, v) = it.next()?;
            if t == ty {
                return Some(start..start + v.len());
            }
        }
    }

    /// Returns true when the message carries MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256.
    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some() || self.integrity_sha256.is_some()
    }

    /// Returns true when the message carries MESSAGE-INTEGRITY-SHA256.
    pub fn has_integrity_sha256(&self) -> bool {
        self.integrity_sha256.is_some()
    }

    /// Verifies the message's integrity with the long-term `key`.
    ///
    /// When MESSAGE-INTEGRITY-SHA256 is present it alone is checked; otherwise
    /// MESSAGE-INTEGRITY is. Returns false when neither is present or the check fails.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        if let Some(pos) = self.integrity_sha256 {
            integrity::verify_sha256(self.buf, pos, key)
        } else if let Some(pos) = self.integrity {
            integrity::verify_sha1(self.buf, pos, key)
        } else {
            false
        }
    }
}

/// Iterator over `(type, value)` of a message's attributes.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos + 4 > self.buf.len() {
            return None;
        }
        let ty = read_u16(self.buf, self.pos);
        let len = usize::from(read_u16(self.buf, self.pos + 2));
        let start = self.pos + 4;
        // `Message::parse` checked that every attribute fits.
        let value = self.buf.get(start..start + len)?;
        self.pos = start + padded(len);
        Some((ty, value))
    }
}

/// Returns the length of the first frame on a stream transport (RFC 8656 §3.7): a STUN
/// message (20 + its length) or ChannelData (4 + its length, padded to 4). `Ok(None)` means
/// more bytes are needed to know.
///
/// # Errors
///
/// Returns [`DecodeError::NotStun`] when the first two bits are neither `00` nor `01`, and
/// [`DecodeError::BadLength`] for a STUN length that is not a multiple of four.
pub fn stream_frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = usize::from(read_u16(buf, 2));
    match buf[0] >> 6 {
        0b00 => {
            if len % 4 != 0 {
                return Err(DecodeError::BadLength);
            }
            Ok(Some(HEADER_LEN + len))
        }
        0b01 => Ok(Some(CHANNEL_DATA_HEADER_LEN + padded(len))),
        _ => Err(DecodeError::NotStun),
    }
}

/// Returns true when `buf` starts like a STUN message (top bits zero, magic cookie).
pub fn looks_like_stun(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN && buf[0] & 0xC0 == 0 && read_u32(buf, 4) == MAGIC_COOKIE
}

/// Rounds an attribute length up to the 4-byte boundary.
pub(crate) const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

pub(crate) fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

pub(crate) fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_round_trips_all_methods_and_classes() {
        for m in 0..0x1000u16 {
            for class in [
                Class::Request,
                Class::Indication,
                Class::Success,
                Class::Error,
            ] {
                let t = MessageType::new(Method(m), class);
                assert_eq!(MessageType::from_u16(t.to_u16()), t);
                assert_eq!(t.to_u16() & 0xC000, 0);
            }
        }
    }

    #[test]
    fn stream_frames() {
        assert_eq!(stream_frame_len(&[0, 1, 0]), Ok(None));
        assert_eq!(stream_frame_len(&[0x00, 0x01, 0x00, 0x08]), Ok(Some(28)));
        assert_eq!(
            stream_frame_len(&[0x00, 0x01, 0x00, 0x07]),
            Err(DecodeError::BadLength)
        );
        assert_eq!(stream_frame_len(&[0x40, 0x00, 0x00, 0x05]), Ok(Some(12)));
        assert_eq!(stream_frame_len(&[0x40, 0x00, 0x00, 0x08]), Ok(Some(12)));
        assert_eq!(
            stream_frame_len(&[0x80, 0x00, 0x00, 0x00]),
            Err(DecodeError::NotStun)
        );
    }

    #[test]
    fn known_type_values() {
        let t = |m, c| MessageType::new(m, c).to_u16();
        assert_eq!(t(Method::BINDING, Class::Request), 0x0001);
        assert_eq!(t(Method::BINDING, Class::Success), 0x0101);
        assert_eq!(t(Method::BINDING, Class::Error), 0x0111);
        assert_eq!(t(Method::ALLOCATE, Class::Request), 0x0003);
        assert_eq!(t(Method::SEND, Class::Indication), 0x0016);
        assert_eq!(t(Method::DATA, Class::Indication), 0x0017);
        assert_eq!(t(Method::CHANNEL_BIND, Class::Success), 0x0109);
    }

    #[test]
    fn rejects_bad_framing() {
        assert_eq!(Message::parse(&[0; 4]).unwrap_err(), DecodeError::Truncated);
        let mut b = MessageBuilder::new(
            MessageType::new(Method::BINDING, Class::Request),
            TransactionId([7; 12]),
        )
        .finish();
        b[4] = 0;
        assert_eq!(Message::parse(&b).unwrap_err(), DecodeError::NotStun);
        let mut b = MessageBuilder::new(
            MessageType::new(Method::BINDING, Class::Request),
            TransactionId([7; 12]),
        )
        .finish();
        b.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(Message::parse(&b).unwrap_err(), DecodeError::BadLength);
        // Attribute longer than the message.
        let mut b = MessageBuilder::new(
            MessageType::new(Method::BINDING, Class::Request),
            TransactionId([7; 12]),
        );
        b.add_raw(attr::SOFTWARE, b"abcd");
        let mut b = b.finish();
        b[23] = 40;
        assert_eq!(
            Message::parse(&b).unwrap_err(),
            DecodeError::AttributeOverrun
        );
    }

    #[test]
    fn fingerprint_is_checked() {
        let mut b = MessageBuilder::new(
            MessageType::new(Method::BINDING, Class::Request),
            TransactionId([1; 12]),
        );
        b.add_raw(attr::SOFTWARE, b"x");
        b.add_fingerprint();
        let mut bytes = b.finish();
        assert!(Message::parse(&bytes).is_ok());
        bytes[25] ^= 1;
        assert_eq!(
            Message::parse(&bytes).unwrap_err(),
            DecodeError::BadFingerprint
        );
    }

    #[test]
    fn attributes_after_integrity_are_rejected() {
        let mut b = MessageBuilder::new(
            MessageType::new(Method::ALLOCATE, Class::Request),
            TransactionId([1; 12]),
        );
        b.add_message_integrity(b"key");
        b.add_raw(attr::SOFTWARE, b"late");
        assert_eq!(
            Message::parse(&b.finish()).unwrap_err(),
            DecodeError::AttributeAfterIntegrity
        );
    }
}
