//! STUN error codes and their standard reason phrases. See RFC 8489 §14.8 and RFC 8656 §19.

/// An error code of an ERROR-CODE attribute, with its standard reason phrase.
///
/// Only the codes this server sends exist as values; a detail may follow the phrase on the wire
/// (`"Bad Request: LIFETIME malformed"`, see [`super::MessageBuilder::add_error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(u16);

impl ErrorCode {
    /// 300: the server is going away; the client should retry at the ALTERNATE-SERVER. See
    /// RFC 8489 §14.8 and RFC 8656 §10.
    pub const TRY_ALTERNATE: Self = Self(300);
    /// 400: the request was malformed. See RFC 8489 §14.8.
    pub const BAD_REQUEST: Self = Self(400);
    /// 401: the request lacks valid credentials. See RFC 8489 §14.8, which renamed the phrase
    /// "Unauthenticated"; the RFC 5389 phrase is kept on the wire.
    pub const UNAUTHORIZED: Self = Self(401);
    /// 403: the request is valid but refused (here: by the residency policy). See RFC 8656 §19.
    pub const FORBIDDEN: Self = Self(403);
    /// 420: a comprehension-required attribute is not understood. See RFC 8489 §14.8.
    pub const UNKNOWN_ATTRIBUTE: Self = Self(420);
    /// 437: the request does not fit the 5-tuple's allocation (or lack of one). See RFC 8656
    /// §19.
    pub const ALLOCATION_MISMATCH: Self = Self(437);
    /// 438: the nonce is no longer valid. See RFC 8489 §14.8.
    pub const STALE_NONCE: Self = Self(438);
    /// 440: the requested address family is not offered. See RFC 8656 §19.
    pub const ADDRESS_FAMILY_NOT_SUPPORTED: Self = Self(440);
    /// 441: the credentials differ from the allocation's. See RFC 8656 §19.
    pub const WRONG_CREDENTIALS: Self = Self(441);
    /// 442: the requested transport is not offered. See RFC 8656 §19.
    pub const UNSUPPORTED_TRANSPORT_PROTOCOL: Self = Self(442);
    /// 443: the peer's family differs from the relayed address's. See RFC 8656 §19.
    pub const PEER_ADDRESS_FAMILY_MISMATCH: Self = Self(443);
    /// 486: the user has as many allocations as allowed. See RFC 8656 §19.
    pub const ALLOCATION_QUOTA_REACHED: Self = Self(486);
    /// 500: the server failed. See RFC 8489 §14.8.
    pub const SERVER_ERROR: Self = Self(500);
    /// 508: the server is out of some resource (allocations, ports, channels, permissions).
    /// See RFC 8656 §19.
    pub const INSUFFICIENT_CAPACITY: Self = Self(508);

    /// Returns the numeric code (300..=699).
    pub const fn code(self) -> u16 {
        self.0
    }

    /// Returns the standard reason phrase.
    pub const fn reason(self) -> &'static str {
        match self.0 {
            300 => "Try Alternate",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            420 => "Unknown Attribute",
            437 => "Allocation Mismatch",
            438 => "Stale Nonce",
            440 => "Address Family not Supported",
            441 => "Wrong Credentials",
            442 => "Unsupported Transport Protocol",
            443 => "Peer Address Family Mismatch",
            486 => "Allocation Quota Reached",
            500 => "Server Error",
            _ => "Insufficient Capacity",
        }
    }
}

impl From<ErrorCode> for u16 {
    fn from(c: ErrorCode) -> Self {
        c.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_own_phrase() {
        let all = [
            ErrorCode::TRY_ALTERNATE,
            ErrorCode::BAD_REQUEST,
            ErrorCode::UNAUTHORIZED,
            ErrorCode::FORBIDDEN,
            ErrorCode::UNKNOWN_ATTRIBUTE,
            ErrorCode::ALLOCATION_MISMATCH,
            ErrorCode::STALE_NONCE,
            ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
            ErrorCode::WRONG_CREDENTIALS,
            ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL,
            ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
            ErrorCode::ALLOCATION_QUOTA_REACHED,
            ErrorCode::SERVER_ERROR,
            ErrorCode::INSUFFICIENT_CAPACITY,
        ];
        let mut phrases: Vec<&str> = all.iter().map(|c| c.reason()).collect();
        phrases.sort_unstable();
        phrases.dedup();
        assert_eq!(phrases.len(), all.len());
        assert_eq!(
            ErrorCode::INSUFFICIENT_CAPACITY.reason(),
            "Insufficient Capacity"
        );
        assert_eq!(u16::from(ErrorCode::STALE_NONCE), 438);
    }
}
