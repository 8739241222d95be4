//! Decoding errors of the STUN/TURN codec.
//!
//! One flat enum, in the style of rustls' `InvalidMessage`: every variant names what was wrong
//! with the bytes, never where they came from (the caller knows that).

/// Why bytes could not be decoded as a STUN message, an attribute or ChannelData.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the fixed header or a declared length needs.
    #[error("message truncated")]
    Truncated,
    /// The first two bits are not zero or the magic cookie is wrong: not a STUN message.
    #[error("not a STUN message")]
    NotStun,
    /// The header length is not a multiple of four or does not match the datagram.
    #[error("bad message length")]
    BadLength,
    /// An attribute runs past the end of the message.
    #[error("attribute overruns the message")]
    AttributeOverrun,
    /// An attribute other than MESSAGE-INTEGRITY-SHA256 or FINGERPRINT follows
    /// MESSAGE-INTEGRITY, or anything follows FINGERPRINT.
    #[error("attribute after integrity or fingerprint")]
    AttributeAfterIntegrity,
    /// The FINGERPRINT attribute does not match the message.
    #[error("fingerprint mismatch")]
    BadFingerprint,
    /// An attribute value has the wrong size or an invalid field.
    #[error("malformed attribute 0x{0:04x}")]
    BadAttribute(u16),
    /// ChannelData whose channel number is outside 0x4000..=0x7FFF.
    #[error("not ChannelData")]
    NotChannelData,
}
