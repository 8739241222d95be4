//! The client side of TURN, sans-IO: the long-term credential mechanism as a client runs it
//! (RFC 8489 §9.2: the 401 challenge, the key, the signed request, the 438 retry) and the
//! framing of what a client sends and receives on the data path.
//!
//! The relay never uses this module. The bench tool, the integration tests, the core's
//! scenario tests and the fuzz harness do: they differ in how bytes travel (UDP, TCP, TLS,
//! in memory), not in what the bytes are, so the client side is written once, here.

use std::net::SocketAddr;

use crate::stun::attr;
use crate::stun::integrity::{long_term_key_md5, long_term_key_sha256};
use crate::stun::{
    CHANNEL_DATA_HEADER_LEN, ChannelData, Class, Message, MessageBuilder, MessageType, Method,
    TransactionId, write_channel_data_header,
};

/// The password algorithm a client signs with (RFC 8489 §18.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordAlgorithm {
    /// MD5 keys and MESSAGE-INTEGRITY (HMAC-SHA1): what every client supports.
    Md5,
    /// SHA-256 keys and MESSAGE-INTEGRITY-SHA256, with PASSWORD-ALGORITHM(S).
    Sha256,
}

/// A client's long-term credential state: the credential, and the realm, nonce and offered
/// password algorithms of the last challenge.
#[derive(Debug, Clone)]
pub struct LongTermAuth {
    username: String,
    password: String,
    algorithm: PasswordAlgorithm,
    realm: Option<String>,
    nonce: Option<String>,
    offered: Option<Vec<u8>>,
}

impl LongTermAuth {
    /// Creates the state for `username` and `password`, not yet challenged.
    pub fn new(username: &str, password: &str, algorithm: PasswordAlgorithm) -> Self {
        Self {
            username: username.to_owned(),
            password: password.to_owned(),
            algorithm,
            realm: None,
            nonce: None,
            offered: None,
        }
    }

    /// Replaces the credential; realm and nonce stay.
    pub fn set_credential(&mut self, username: &str, password: &str) {
        username.clone_into(&mut self.username);
        password.clone_into(&mut self.password);
    }

    /// Signs with `algorithm` from the next request on.
    pub fn set_algorithm(&mut self, algorithm: PasswordAlgorithm) {
        self.algorithm = algorithm;
    }

    /// Takes REALM, NONCE and PASSWORD-ALGORITHMS from a 401 (Unauthorized) or 438 (Stale
    /// Nonce) response; returns false, changing nothing, when `response` is not such a
    /// challenge.
    pub fn take_challenge(&mut self, response: &Message<'_>) -> bool {
        if !error_code(response).is_some_and(|(code, _)| code == 401 || code == 438) {
            return false;
        }
        let text = |ty| {
            response
                .get(ty)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_owned)
        };
        let (Some(realm), Some(nonce)) = (text(attr::REALM), text(attr::NONCE)) else {
            return false;
        };
        self.realm = Some(realm);
        self.nonce = Some(nonce);
        self.offered = response.get(attr::PASSWORD_ALGORITHMS).map(<[u8]>::to_vec);
        true
    }

    /// Takes over the realm, nonce and offered algorithms of another client's challenge.
    pub fn adopt_challenge(&mut self, other: &Self) {
        self.realm.clone_from(&other.realm);
        self.nonce.clone_from(&other.nonce);
        self.offered.clone_from(&other.offered);
    }

    /// Returns true once a challenge has been taken.
    pub fn is_challenged(&self) -> bool {
        self.realm.is_some() && self.nonce.is_some()
    }

    /// Returns the username.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Returns the realm of the last challenge.
    pub fn realm(&self) -> Option<&str> {
        self.realm.as_deref()
    }

    /// Returns the nonce of the last challenge.
    pub fn nonce(&self) -> Option<&str> {
        self.nonce.as_deref()
    }

    /// Returns the algorithm the client signs with.
    pub fn algorithm(&self) -> PasswordAlgorithm {
        self.algorithm
    }

    /// Returns the long-term key (RFC 8489 §9.2.2) for the challenged realm, or `None` before
    /// a challenge.
    pub fn key(&self) -> Option<Vec<u8>> {
        let realm = self.realm.as_deref()?;
        Some(match self.algorithm {
            PasswordAlgorithm::Md5 => {
                long_term_key_md5(&self.username, realm, &self.password).to_vec()
            }
            PasswordAlgorithm::Sha256 => {
                long_term_key_sha256(&self.username, realm, &self.password).to_vec()
            }
        })
    }

    /// Appends USERNAME, REALM, NONCE, for SHA-256 the PASSWORD-ALGORITHMS the server offered
    /// and the PASSWORD-ALGORITHM picked, and the integrity attribute; returns the key the
    /// response must verify with, or `None` (nothing appended) before a challenge. The
    /// caller adds FINGERPRINT, if it wants one, and finishes the message.
    pub fn sign(&self, b: &mut MessageBuilder) -> Option<Vec<u8>> {
        let key = self.key()?;
        b.add_raw(attr::USERNAME, self.username.as_bytes());
        b.add_raw(attr::REALM, self.realm.as_deref()?.as_bytes());
        b.add_raw(attr::NONCE, self.nonce.as_deref()?.as_bytes());
        match self.algorithm {
            PasswordAlgorithm::Md5 => b.add_message_integrity(&key),
            PasswordAlgorithm::Sha256 => {
                if let Some(offered) = &self.offered {
                    b.add_raw(attr::PASSWORD_ALGORITHMS, offered);
                }
                let [hi, lo] = attr::PASSWORD_ALGORITHM_SHA256.to_be_bytes();
                b.add_raw(attr::PASSWORD_ALGORITHM, &[hi, lo, 0, 0]);
                b.add_message_integrity_sha256(&key);
            }
        }
        Some(key)
    }
}

/// Starts a request of `method` with transaction id `tid`.
pub fn request(method: Method, tid: TransactionId) -> MessageBuilder {
    MessageBuilder::new(MessageType::new(method, Class::Request), tid)
}

/// Appends REQUESTED-TRANSPORT UDP, which every Allocate of a UDP relay carries.
pub fn add_requested_transport_udp(b: &mut MessageBuilder) {
    b.add_raw(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_UDP, 0, 0, 0]);
}

/// Appends CHANNEL-NUMBER `channel` and XOR-PEER-ADDRESS `peer`: a ChannelBind's attributes.
pub fn add_channel_bind(b: &mut MessageBuilder, channel: u16, peer: SocketAddr) {
    let [hi, lo] = channel.to_be_bytes();
    b.add_raw(attr::CHANNEL_NUMBER, &[hi, lo, 0, 0]);
    b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
}

/// Returns the ERROR-CODE (code, reason phrase) of an error response, or `None` for any
/// other message or a malformed ERROR-CODE.
pub fn error_code<'a>(m: &Message<'a>) -> Option<(u16, &'a str)> {
    if m.class() != Class::Error {
        return None;
    }
    attr::decode_error_code(m.get(attr::ERROR_CODE)?).ok()
}

/// Returns every well-formed XOR-encoded address of type `ty` in `m`, in order.
pub fn xor_addresses(m: &Message<'_>, ty: u16) -> Vec<SocketAddr> {
    let tid = m.transaction_id();
    m.attributes()
        .filter(|(t, _)| *t == ty)
        .filter_map(|(_, v)| attr::decode_xor_address(ty, v, &tid).ok())
        .collect()
}

/// Frames `data` as ChannelData on `channel` (unpadded, as over UDP).
///
/// # Panics
///
/// Panics when `data` is longer than a ChannelData message can carry (65,535 bytes).
pub fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).expect("ChannelData carries at most 65,535 bytes");
    let mut out = vec![0u8; CHANNEL_DATA_HEADER_LEN + data.len()];
    write_channel_data_header(&mut out, channel, len);
    out[CHANNEL_DATA_HEADER_LEN..].copy_from_slice(data);
    out
}

/// Encodes a Send indication carrying `data` to `peer`, with FINGERPRINT.
pub fn send_indication(tid: TransactionId, peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut b = MessageBuilder::new(MessageType::new(Method::SEND, Class::Indication), tid);
    b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
    b.add_raw(attr::DATA, data);
    b.add_fingerprint();
    b.finish()
}

/// Data the relay delivered to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relayed {
    /// ChannelData on a channel.
    Channel {
        /// The channel number.
        channel: u16,
        /// The payload.
        data: Vec<u8>,
    },
    /// A Data indication from a peer.
    Data {
        /// XOR-PEER-ADDRESS.
        peer: SocketAddr,
        /// DATA.
        data: Vec<u8>,
    },
}

impl Relayed {
    /// Parses ChannelData or a Data indication with XOR-PEER-ADDRESS and DATA; `None` for
    /// anything else.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        if let Ok(cd) = ChannelData::parse(bytes) {
            return Some(Self::Channel {
                channel: cd.channel,
                data: cd.data.to_vec(),
            });
        }
        let m = Message::parse(bytes).ok()?;
        if (m.method(), m.class()) != (Method::DATA, Class::Indication) {
            return None;
        }
        let peer = xor_addresses(&m, attr::XOR_PEER_ADDRESS)
            .into_iter()
            .next()?;
        let data = m.get(attr::DATA)?.to_vec();
        Some(Self::Data { peer, data })
    }

    /// Returns the payload.
    pub fn data(&self) -> &[u8] {
        match self {
            Self::Channel { data, .. } | Self::Data { data, .. } => data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(code: u16, algorithms: bool) -> Vec<u8> {
        let mut b = MessageBuilder::new(
            MessageType::new(Method::ALLOCATE, Class::Error),
            TransactionId([7; 12]),
        );
        b.add_error_code(code, "Unauthorized");
        b.add_raw(attr::REALM, b"example.org");
        b.add_raw(attr::NONCE, b"nonce-1");
        if algorithms {
            b.add_raw(attr::PASSWORD_ALGORITHMS, &[0, 2, 0, 0, 0, 1, 0, 0]);
        }
        b.finish()
    }

    #[test]
    fn a_401_challenge_is_taken_and_a_signed_request_verifies_with_the_key() {
        let mut auth = LongTermAuth::new("user", "pass", PasswordAlgorithm::Md5);
        let mut b = request(Method::ALLOCATE, TransactionId([1; 12]));
        assert!(
            auth.sign(&mut b).is_none(),
            "nothing to sign with before a challenge"
        );
        let bytes = challenge(401, false);
        assert!(auth.take_challenge(&Message::parse(&bytes).unwrap()));
        assert_eq!(
            (auth.realm(), auth.nonce()),
            (Some("example.org"), Some("nonce-1"))
        );

        let mut b = request(Method::ALLOCATE, TransactionId([2; 12]));
        add_requested_transport_udp(&mut b);
        let key = auth.sign(&mut b).unwrap();
        let signed = b.finish();
        let m = Message::parse(&signed).unwrap();
        assert!(m.verify_integrity(&key));
        assert_eq!(key, long_term_key_md5("user", "example.org", "pass"));
        assert_eq!(m.get(attr::USERNAME), Some(&b"user"[..]));
    }

    #[test]
    fn sha256_signing_echoes_the_offer_and_names_the_algorithm() {
        let mut auth = LongTermAuth::new("user", "pass", PasswordAlgorithm::Sha256);
        assert!(auth.take_challenge(&Message::parse(&challenge(401, true)).unwrap()));
        let mut b = request(Method::REFRESH, TransactionId([3; 12]));
        let key = auth.sign(&mut b).unwrap();
        let signed = b.finish();
        let m = Message::parse(&signed).unwrap();
        assert!(m.has_integrity_sha256() && m.verify_integrity(&key));
        assert_eq!(
            m.get(attr::PASSWORD_ALGORITHMS),
            Some(&[0, 2, 0, 0, 0, 1, 0, 0][..])
        );
        assert_eq!(m.get(attr::PASSWORD_ALGORITHM), Some(&[0, 2, 0, 0][..]));
    }

    #[test]
    fn only_401_and_438_are_challenges() {
        let mut auth = LongTermAuth::new("user", "pass", PasswordAlgorithm::Md5);
        assert!(!auth.take_challenge(&Message::parse(&challenge(403, false)).unwrap()));
        assert!(!auth.is_challenged());
        assert!(auth.take_challenge(&Message::parse(&challenge(438, false)).unwrap()));
        assert!(auth.is_challenged());
    }

    #[test]
    fn relayed_data_parses_both_framings() {
        let peer: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        assert_eq!(
            Relayed::parse(&channel_data(0x4001, b"hi")),
            Some(Relayed::Channel {
                channel: 0x4001,
                data: b"hi".to_vec()
            })
        );
        let mut b = MessageBuilder::new(
            MessageType::new(Method::DATA, Class::Indication),
            TransactionId([9; 12]),
        );
        b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
        b.add_raw(attr::DATA, b"yo");
        assert_eq!(
            Relayed::parse(&b.finish()),
            Some(Relayed::Data {
                peer,
                data: b"yo".to_vec()
            })
        );
        let send = send_indication(TransactionId([4; 12]), peer, b"x");
        assert_eq!(
            Relayed::parse(&send),
            None,
            "a Send indication is not relayed data"
        );
    }
}
