//! Fuzz entry points: one function per cargo-fuzz target in `fuzz/fuzz_targets/`, also run
//! over `tests/vectors/` and mutations of them by `tests/fuzz_corpus.rs`, so that the stable
//! toolchain exercises them too.
//!
//! Every function accepts arbitrary bytes. None may panic except through its own assertions:
//! a failed assertion here is a bug found in the codec or the server, not in the input.
//! Not part of the API (hidden from the docs); nothing outside tests and `fuzz/` calls it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, UNIX_EPOCH};

use ipnet::IpNet;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::credentials::{self, Secrets};
use crate::host::RelayAddresses;
use crate::policy::Policy;
use crate::relay::{
    AnswerLimit, BindResult, Command, FiveTuple, Limits, Now, PEER_HEADROOM, PEER_TAILROOM, Server,
    ServerConfig, Transport,
};
use crate::stun;
use crate::stun::attr::{self, Family};
use crate::stun::integrity::{long_term_key_md5, long_term_key_sha256};
use crate::stun::{
    CHANNEL_DATA_HEADER_LEN, ChannelData, Class, HEADER_LEN, Message, MessageBuilder, MessageType,
    Method, TransactionId, looks_like_stun, write_channel_data_header,
};

/// Parses `data` as a STUN message. When it parses: checks the attribute list against an
/// independent walk of the bytes, runs every typed decoder over every attribute (re-encoding
/// what decodes, where the encoding is unique), and re-encodes the whole message with
/// [`MessageBuilder`], which must parse back to the same type, transaction id and attributes.
pub fn stun_parse(data: &[u8]) {
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    assert!(looks_like_stun(data), "a parsed message looks like STUN");
    let tid = msg.transaction_id();
    let typ = msg.message_type();
    assert_eq!(
        typ.to_u16(),
        u16::from_be_bytes([data[0], data[1]]),
        "the message type round-trips"
    );
    assert_eq!((typ.method, typ.class), (msg.method(), msg.class()));

    let walked = walk_attributes(data);
    let counted: Vec<(u16, &[u8])> = walked
        .iter()
        .copied()
        .take_while(|(t, _)| !is_trailer(*t))
        .collect();
    let got: Vec<(u16, &[u8])> = msg.attributes().collect();
    assert_eq!(
        got, counted,
        "Message::attributes must yield every attribute before MESSAGE-INTEGRITY(-SHA256) and \
         FINGERPRINT"
    );
    assert_eq!(
        msg.has_integrity(),
        walked
            .iter()
            .any(|(t, _)| matches!(*t, attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256)),
    );
    // Any key: the result does not matter, the call must not panic.
    let _ = msg.verify_integrity(FUZZ_KEY);

    for &(ty, value) in &got {
        let first = got.iter().find(|(t, _)| *t == ty).map(|(_, v)| *v);
        assert_eq!(
            msg.get(ty),
            first,
            "get returns the first attribute of a type"
        );
        let range = msg
            .value_range(ty)
            .expect("a present attribute has a range");
        assert_eq!(Some(&data[range]), first, "value_range agrees with get");
        decode_every_way(ty, value, &tid);
    }

    // Re-encode. Padding bytes and integrity values are not preserved, the attributes are.
    if data.len() > usize::from(u16::MAX) - 64 {
        return;
    }
    let mut b = MessageBuilder::new(typ, tid);
    for &(ty, value) in &got {
        b.add_raw(ty, value);
    }
    if msg.has_integrity() {
        b.add_message_integrity(FUZZ_KEY);
    }
    let had_fingerprint = walked.last().is_some_and(|(t, _)| *t == attr::FINGERPRINT);
    if had_fingerprint {
        b.add_fingerprint();
    }
    let bytes = b.finish();
    let again = Message::parse(&bytes).expect("a re-encoded message parses");
    assert_eq!(again.message_type(), typ);
    assert_eq!(again.transaction_id(), tid);
    assert_eq!(again.attributes().collect::<Vec<_>>(), got);
    assert_eq!(again.has_integrity(), msg.has_integrity());
    if msg.has_integrity() {
        assert!(again.verify_integrity(FUZZ_KEY));
    }
}

/// Parses `data` as ChannelData and checks the result against the bytes; a parsed message
/// re-encodes to the same header and payload.
pub fn channel_data(data: &[u8]) {
    let parsed = ChannelData::parse(data);
    let framed = data.len() >= CHANNEL_DATA_HEADER_LEN && data[0] >> 6 == 0b01;
    let Ok(cd) = parsed else {
        if framed {
            let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
            assert!(
                data.len() < CHANNEL_DATA_HEADER_LEN + len,
                "complete ChannelData is rejected"
            );
        }
        return;
    };
    assert!(framed, "only 0b01 starts ChannelData");
    assert!((0x4000..=0x7FFF).contains(&cd.channel));
    assert_eq!(cd.channel, u16::from_be_bytes([data[0], data[1]]));
    let end = CHANNEL_DATA_HEADER_LEN + cd.data.len();
    assert_eq!(cd.data, &data[CHANNEL_DATA_HEADER_LEN..end]);

    let len = u16::try_from(cd.data.len()).expect("the length came from a u16");
    let mut out = vec![0u8; end];
    write_channel_data_header(&mut out, cd.channel, len);
    out[CHANNEL_DATA_HEADER_LEN..].copy_from_slice(cd.data);
    assert_eq!(out, &data[..end]);
    assert_eq!(ChannelData::parse(&out), Ok(cd));
}

/// Feeds `data` to a [`Server`] with a fixed configuration: as client input from a fixed
/// 5-tuple and as peer input on a relay address that has no allocation; then, on a server
/// holding an allocation with permissions and channels, as the payload of ChannelData and of
/// a Send indication (which must reach the peer intact), as raw client input, re-signed with
/// valid credentials when it is a request (an Allocate from a second client port), and as peer
/// data on the allocation's relays.
/// Drains commands and events after each step and checks what comes out is well formed.
pub fn server_input(data: &[u8]) {
    let mut h = Harness::new();
    h.server.handle_client_input(h.client, data, h.now);
    h.peer_input(relay_v4(1), peer_v4(), data);
    h.drain();

    let mut h = Harness::new();
    h.establish();
    h.relay_payload(data);
    if let Some(t) = h.server.handle_client_input(h.client, data, h.now) {
        assert!(
            t.range.end <= data.len(),
            "a relayed range lies within the datagram"
        );
        assert!(
            h.relays.contains(&t.relay),
            "relayed from a bound relay address"
        );
    }
    h.drain();
    if let Some(signed) = h.sign(data) {
        // An Allocate comes from a second client port, which has no allocation yet.
        let allocate = Message::parse(&signed).is_ok_and(|m| m.method() == Method::ALLOCATE);
        let from = if allocate {
            h.second_client()
        } else {
            h.client
        };
        h.server.handle_client_input(from, &signed, h.now);
        h.drain();
    }
    for relay in h.relays.clone() {
        let peer = if relay.is_ipv4() {
            peer_v4()
        } else {
            peer_v6()
        };
        h.peer_input(relay, peer, data);
        h.peer_input(relay, SocketAddr::new(peer.ip(), 9), data);
    }
    h.drain();
    for secs in [301, 601, 3601, 86_401] {
        let now = h.at(secs);
        h.server.handle_timeout(now);
        h.drain();
        if let Some(deadline) = h.server.poll_timeout() {
            assert!(deadline > now.mono, "no deadline left behind in the past");
        }
    }
    assert_eq!(
        h.server.allocation_count(),
        0,
        "everything expires in a day"
    );
}

/// Splits `data` into frames as a TCP/TLS connection does ([`stream_frame_len`]), fed in
/// pieces of every size from 1 to 7 bytes and all at once: every split gives the same frames;
/// each frame is at least a header long, a STUN frame is 20 + its length, a ChannelData frame
/// is 4 + its length padded to 4; and a complete frame parses as what its first bits say, or
/// is refused by the parser alone (never by a panic). Then feeds the frames to a server as a
/// stream client's input.
pub fn stream_framing(data: &[u8]) {
    let whole = frames(data, data.len().max(1));
    for piece in 1..=7 {
        assert_eq!(
            frames(data, piece),
            whole,
            "framing does not depend on how bytes arrive"
        );
    }
    let (frames, _) = &whole;
    let mut h = Harness::new();
    h.client.transport = Transport::Tcp;
    let from = h.client;
    assert!(
        h.server.handle_connection_opened(from, h.now),
        "the fixed client may connect"
    );
    for f in frames {
        let frame = &data[f.clone()];
        match frame[0] >> 6 {
            0b00 => {
                assert_eq!(
                    frame.len(),
                    HEADER_LEN + usize::from(u16::from_be_bytes([frame[2], frame[3]]))
                );
                stun_parse(frame);
            }
            0b01 => {
                let len = usize::from(u16::from_be_bytes([frame[2], frame[3]]));
                assert_eq!(frame.len(), CHANNEL_DATA_HEADER_LEN + len.div_ceil(4) * 4);
                let cd = ChannelData::parse(frame).expect("a complete ChannelData frame parses");
                assert_eq!(cd.data.len(), len);
            }
            _ => unreachable!("only 00 and 01 frame"),
        }
        let _ = h.server.handle_client_input(from, frame, h.now);
        h.drain();
    }
    h.server.handle_connection_closed(from, h.now);
    h.drain();
    assert_eq!(
        h.server.allocation_count(),
        0,
        "a closed connection leaves nothing"
    );
}

/// The frames of `data` fed `piece` bytes at a time, as a connection's read loop keeps them:
/// their ranges, and whether the stream ended in an error.
fn frames(data: &[u8], piece: usize) -> (Vec<std::ops::Range<usize>>, bool) {
    let mut out = Vec::new();
    let (mut start, mut have) = (0, 0);
    while have < data.len() || start < have {
        have = (have + piece).min(data.len());
        loop {
            match stun::stream_frame_len(&data[start..have]) {
                Ok(Some(len)) if start + len <= have => {
                    assert!(
                        len >= CHANNEL_DATA_HEADER_LEN,
                        "a frame is at least a header"
                    );
                    out.push(start..start + len);
                    start += len;
                }
                Ok(_) => break,
                Err(_) => return (out, true),
            }
        }
        if have == data.len() {
            break;
        }
    }
    (out, false)
}

/// Parses `data` (as UTF-8, lossily) as a TURN REST username and checks it against a fixed
/// clock: a parsed username re-assembles to the input; the expiry is the decimal before the
/// first ':'; an accepted one is in the future and within the allowed lifetime; and a
/// credential issued for a valid user id parses back to that user id.
pub fn rest_username(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let now = UNIX_EPOCH + Duration::from_secs(WALL_SECS);
    let max = Duration::from_secs(86_400);
    if let Ok(u) = credentials::parse_username(&text) {
        let rebuilt = if text.contains(':') {
            format!("{}:{}", text.split(':').next().unwrap_or(""), u.user)
        } else {
            text.to_string()
        };
        assert_eq!(rebuilt, text, "the parts make the username");
        let ts = text.split(':').next().unwrap_or("");
        assert_eq!(
            ts.parse::<u64>().ok(),
            Some(u.expiry),
            "the expiry is the decimal before ':'"
        );
    }
    if let Ok(u) = credentials::check_username(&text, now, max, Duration::ZERO) {
        assert!(u.expiry > WALL_SECS && u.expiry - WALL_SECS <= max.as_secs());
    }
    let secrets = Secrets::parse(SECRET).expect("the fixed secret is valid");
    if credentials::valid_user_id(&text) && text.len() <= 128 {
        let c = secrets
            .issue(&text, Duration::from_secs(60), max, now)
            .expect("a valid user id can be issued a credential");
        let u = credentials::check_username(&c.username, now, max, Duration::ZERO)
            .expect("an issued username checks");
        assert_eq!(u.user, text, "the user id comes back");
        assert!(
            secrets.passwords(&c.username).any(|p| p == c.password),
            "the issued password is one the relay accepts"
        );
    }
}

/// A server with a fixed configuration, a client, and the state of its allocation.
struct Harness {
    server: Server<StdRng>,
    start: Instant,
    now: Now,
    client: FiveTuple,
    relays: Vec<SocketAddr>,
    username: String,
    password: String,
    nonce: Option<String>,
}

impl Harness {
    fn new() -> Self {
        let secrets = Secrets::parse(SECRET).expect("the fixed secret is valid");
        let start = start_instant();
        let now = Now {
            mono: start,
            wall: UNIX_EPOCH + Duration::from_secs(WALL_SECS),
        };
        let credential = secrets
            .issue(
                "fuzz-user",
                Duration::from_secs(3600),
                Duration::from_secs(86_400),
                now.wall,
            )
            .expect("the fixed credential can be issued");
        let cfg = ServerConfig {
            realm: REALM.to_owned(),
            software: Some("eeaturn fuzzing".to_owned()),
            relay: RelayAddresses {
                v4: Some(IpAddr::V4(RELAY_V4)),
                v6: Some(IpAddr::V6(RELAY_V6)),
                external_v4: None,
                external_v6: None,
                ports: RELAY_PORTS,
            },
            limits: Limits {
                max_allocations: 4,
                max_allocations_per_user: 2,
                max_allocations_per_source: 8,
                ipv6_source_prefix: 64,
                max_permissions_per_allocation: 4,
                max_channels_per_allocation: 3,
                default_lifetime: Duration::from_secs(600),
                max_lifetime: Duration::from_secs(3600),
            },
            nonce_lifetime: Duration::from_secs(3600),
            max_credential_ttl: Duration::from_secs(86_400),
            alternate_servers: Vec::new(),
            answer_limit: AnswerLimit::OFF,
        };
        let net = |s: &str| s.parse::<IpNet>().expect("fixed network");
        let policy = Policy::dangerous_without_geo(
            vec![net("192.0.2.128/25")],
            vec![net("192.0.2.0/24"), net("2001:db8:ffff::/48")],
            vec![net("198.51.100.128/25")],
        );
        let server = Server::new(cfg, secrets, policy, [7; 32], StdRng::seed_from_u64(0x5EED));
        Self {
            server,
            start,
            now,
            client: FiveTuple {
                transport: Transport::Udp,
                client: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 40_000),
                server: SocketAddr::new(IpAddr::V4(RELAY_V4), 3478),
            },
            relays: Vec::new(),
            username: credential.username,
            password: credential.password,
            nonce: None,
        }
    }

    /// Returns the same client on another port: the nonce (bound to the IP) stays valid.
    fn second_client(&self) -> FiveTuple {
        let mut t = self.client;
        t.client.set_port(t.client.port() + 1);
        t
    }

    /// Returns the time `secs` after the start.
    fn at(&self, secs: u64) -> Now {
        Now {
            mono: self.start + Duration::from_secs(secs),
            wall: self.now.wall + Duration::from_secs(secs),
        }
    }

    /// Allocates on both families, then binds a channel (which installs a permission) to one
    /// peer of each family. Every step must succeed: the harness is only as good as this state.
    fn establish(&mut self) {
        let allocate = |tid: u8| {
            let typ = MessageType::new(Method::ALLOCATE, Class::Request);
            let mut b = MessageBuilder::new(typ, TransactionId([tid; 12]));
            b.add_raw(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_UDP, 0, 0, 0]);
            b.add_family(attr::ADDITIONAL_ADDRESS_FAMILY, Family::V6);
            b.finish()
        };
        assert_eq!(self.request(&allocate(1), false), Some(401), "challenged");
        assert!(self.nonce.is_some(), "the challenge carries a nonce");
        assert_eq!(self.request(&allocate(2), true), Some(0), "allocated");
        assert_eq!(self.relays.len(), 2, "one relay per family");
        for (i, peer) in [(0u8, peer_v4()), (1, peer_v6())] {
            let typ = MessageType::new(Method::CHANNEL_BIND, Class::Request);
            let mut b = MessageBuilder::new(typ, TransactionId([3 + i; 12]));
            b.add_raw(attr::CHANNEL_NUMBER, &[0x40, i, 0, 0]);
            b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
            assert_eq!(self.request(&b.finish(), true), Some(0), "bound {peer}");
        }
    }

    /// Sends a request (signed first when `sign`), drains the server and returns the
    /// response's error code (0 for success), if a response came.
    fn request(&mut self, bytes: &[u8], sign: bool) -> Option<u16> {
        let tid = Message::parse(bytes).ok()?.transaction_id();
        let signed;
        let bytes = if sign {
            signed = self.sign(bytes)?;
            &signed[..]
        } else {
            bytes
        };
        self.server
            .handle_client_input(self.client, bytes, self.now);
        self.drain()
            .into_iter()
            .find(|(t, _)| *t == tid)
            .map(|(_, code)| code)
    }

    /// Re-signs a STUN request with the harness's credentials: drops any USERNAME, REALM and
    /// NONCE, adds the valid ones, and MESSAGE-INTEGRITY-SHA256 or MESSAGE-INTEGRITY (by the
    /// low bit of the transaction id) and FINGERPRINT. Returns `None` for anything else.
    fn sign(&self, data: &[u8]) -> Option<Vec<u8>> {
        let msg = Message::parse(data).ok()?;
        if msg.class() != Class::Request || data.len() > 60_000 {
            return None;
        }
        let nonce = self.nonce.as_deref()?;
        let tid = msg.transaction_id();
        let mut b = MessageBuilder::new(msg.message_type(), tid);
        for (t, v) in msg.attributes() {
            if !matches!(t, attr::USERNAME | attr::REALM | attr::NONCE) {
                b.add_raw(t, v);
            }
        }
        b.add_raw(attr::USERNAME, self.username.as_bytes());
        b.add_raw(attr::REALM, REALM.as_bytes());
        b.add_raw(attr::NONCE, nonce.as_bytes());
        // The server picks the key the way RFC 8489 §9.2.4 says: SHA-256 only when asked.
        let sha256_key = msg
            .get(attr::PASSWORD_ALGORITHM)
            .and_then(|v| attr::decode_password_algorithm(v).ok())
            == Some(attr::PASSWORD_ALGORITHM_SHA256);
        let key = if sha256_key {
            long_term_key_sha256(&self.username, REALM, &self.password).to_vec()
        } else {
            long_term_key_md5(&self.username, REALM, &self.password).to_vec()
        };
        if tid.0[11] & 1 == 1 {
            b.add_message_integrity_sha256(&key);
        } else {
            b.add_message_integrity(&key);
        }
        b.add_fingerprint();
        Some(b.finish())
    }

    /// Sends `data` to each bound peer as ChannelData and in a Send indication: the server
    /// must relay exactly `data`, out of the relay of the peer's family.
    fn relay_payload(&mut self, data: &[u8]) {
        let Ok(len) = u16::try_from(data.len()) else {
            return;
        };
        if data.len() > 60_000 {
            return;
        }
        for (channel, peer) in [(0x4000, peer_v4()), (0x4001, peer_v6())] {
            let mut cd = vec![0u8; CHANNEL_DATA_HEADER_LEN];
            write_channel_data_header(&mut cd, channel, len);
            cd.extend_from_slice(data);
            let t = self
                .server
                .handle_client_input(self.client, &cd, self.now)
                .expect("ChannelData on a bound channel is relayed");
            assert_eq!((t.peer, &cd[t.range]), (peer, data));
            assert!(self.relays.contains(&t.relay) && t.relay.is_ipv4() == peer.is_ipv4());

            let typ = MessageType::new(Method::SEND, Class::Indication);
            let mut b = MessageBuilder::new(typ, TransactionId([9; 12]));
            b.add_xor_address(attr::XOR_PEER_ADDRESS, peer);
            b.add_raw(attr::DATA, data);
            let send = b.finish();
            let t = self
                .server
                .handle_client_input(self.client, &send, self.now)
                .expect("a Send indication to a permitted peer is relayed");
            assert_eq!((t.peer, &send[t.range]), (peer, data));
            assert!(self.relays.contains(&t.relay) && t.relay.is_ipv4() == peer.is_ipv4());
        }
        self.drain();
    }

    /// Feeds `data` as a datagram from `peer` on `relay` and checks the framing the server
    /// writes around it.
    fn peer_input(&mut self, relay: SocketAddr, peer: SocketAddr, data: &[u8]) {
        let mut buf = vec![0u8; PEER_HEADROOM + data.len() + PEER_TAILROOM];
        let payload = PEER_HEADROOM..PEER_HEADROOM + data.len();
        buf[payload.clone()].copy_from_slice(data);
        let Some(t) =
            self.server
                .handle_peer_input(relay, peer, &mut buf, payload.clone(), self.now)
        else {
            return;
        };
        assert!(
            self.relays.contains(&relay),
            "only allocated relays forward"
        );
        assert!(t.to == self.client || t.to == self.second_client());
        assert!(t.range.start <= payload.start && t.range.end >= payload.end);
        assert!(t.range.end <= buf.len());
        check_framed(&buf[t.range], peer, data);
    }

    /// Carries out commands (binding every relay successfully), records the nonce of
    /// challenges, checks every message sent, and returns `(transaction id, error code or 0)`
    /// of each response.
    fn drain(&mut self) -> Vec<(TransactionId, u16)> {
        let mut responses = Vec::new();
        while let Some(cmd) = self.server.poll_command() {
            match cmd {
                Command::SendToClient { to, bytes } => {
                    assert!(
                        to == self.client || to == self.second_client(),
                        "to a client"
                    );
                    responses.push(self.check_response(&bytes));
                }
                Command::BindRelay {
                    token,
                    addrs,
                    reserve,
                } => {
                    assert!(!addrs.is_empty() && addrs.len() <= 2);
                    if let Some(r) = reserve {
                        assert_eq!(addrs.len(), 1, "a reservation comes with one family");
                        assert_eq!(r.ip(), addrs[0].ip());
                        assert_eq!(r.port(), addrs[0].port() + 1, "the next port is reserved");
                    }
                    for a in addrs.iter().chain(&reserve) {
                        assert!(a.ip() == IpAddr::V4(RELAY_V4) || a.ip() == IpAddr::V6(RELAY_V6));
                        assert!(RELAY_PORTS.contains(&a.port()), "relay port {a} in range");
                    }
                    self.relays.retain(|r| !addrs.contains(r));
                    self.relays.extend(addrs.iter().copied());
                    self.server
                        .handle_relay_bound(token, &addrs, BindResult::Bound, self.now);
                }
                Command::CloseRelay { addr } => {
                    self.relays.retain(|r| *r != addr);
                }
                Command::ReleaseReserved { addr } => {
                    assert!(
                        RELAY_PORTS.contains(&addr.port()),
                        "reserved port {addr} in range"
                    );
                    assert!(
                        !self.relays.contains(&addr),
                        "a reserved port is not relaying"
                    );
                }
                Command::InstallKernelPath(_) | Command::RemoveKernelPath(_) => {
                    unreachable!("kernel paths are announced only after with_kernel_paths")
                }
            }
        }
        while self.server.poll_event().is_some() {}
        responses
    }

    /// Checks a message the server sent and returns its transaction id and error code.
    fn check_response(&mut self, bytes: &[u8]) -> (TransactionId, u16) {
        let msg = Message::parse(bytes).expect("the server sends well-formed STUN");
        let walked = walk_attributes(bytes);
        assert_eq!(
            walked.last().map(|(t, _)| *t),
            Some(attr::FINGERPRINT),
            "every response ends with FINGERPRINT"
        );
        let code = match msg.class() {
            Class::Success => 0,
            Class::Error => {
                let v = msg
                    .get(attr::ERROR_CODE)
                    .expect("an error carries ERROR-CODE");
                let (code, _) = attr::decode_error_code(v).expect("ERROR-CODE decodes");
                if let Some(n) = msg.get(attr::NONCE) {
                    let n = attr::decode_text(attr::NONCE, n, 763).expect("NONCE is text");
                    self.nonce = Some(n.to_owned());
                }
                code
            }
            Class::Request | Class::Indication => panic!("the server only sends responses"),
        };
        (msg.transaction_id(), code)
    }
}

/// Checks a peer datagram framed by the server: ChannelData on a bound channel or a Data
/// indication naming the peer, either way carrying exactly `payload`.
fn check_framed(framed: &[u8], peer: SocketAddr, payload: &[u8]) {
    if framed[0] >> 6 == 0b01 {
        let cd = ChannelData::parse(framed).expect("framed ChannelData parses");
        assert_eq!(cd.data, payload);
        assert_eq!(framed.len(), CHANNEL_DATA_HEADER_LEN + payload.len());
        return;
    }
    let msg = Message::parse(framed).expect("a framed Data indication parses");
    assert_eq!(
        msg.message_type(),
        MessageType::new(Method::DATA, Class::Indication)
    );
    assert_eq!(msg.get(attr::DATA), Some(payload));
    let tid = msg.transaction_id();
    let v = msg.get(attr::XOR_PEER_ADDRESS).expect("XOR-PEER-ADDRESS");
    let from = attr::decode_xor_address(attr::XOR_PEER_ADDRESS, v, &tid).expect("decodes");
    assert_eq!(from, peer);
}

/// Runs every typed decoder over one attribute value; whatever decodes must describe the bytes
/// (and re-encode to them where the encoding is unique).
fn decode_every_way(ty: u16, value: &[u8], tid: &TransactionId) {
    let _ = attr::is_comprehension_required(ty);
    if let Ok(addr) = attr::decode_xor_address(ty, value, tid) {
        let mut b = MessageBuilder::new(MessageType::new(Method::BINDING, Class::Success), *tid);
        b.add_xor_address(ty, addr);
        let bytes = b.finish();
        // The first byte is reserved: the decoder ignores it and the encoder writes zero.
        assert_eq!(
            &bytes[HEADER_LEN + 5..],
            &value[1..],
            "XOR address re-encodes"
        );
    }
    if let Ok(addr) = attr::decode_address(ty, value) {
        let len = if addr.is_ipv4() { 8 } else { 20 };
        assert_eq!(value.len(), len);
        assert_eq!(addr.port(), u16::from_be_bytes([value[2], value[3]]));
    }
    if let Ok(v) = attr::decode_u32(ty, value) {
        assert_eq!(v.to_be_bytes(), value);
    }
    if let Ok(p) = attr::decode_requested_transport(value) {
        assert_eq!((value.len(), p), (4, value[0]));
    }
    if let Ok(f) = attr::decode_family(ty, value) {
        assert_eq!(f.to_wire(), value[0]);
        assert!(f == Family::V4 || value[0] == attr::FAMILY_IPV6);
    }
    if let Ok(r) = attr::decode_even_port(value) {
        assert_eq!((value.len(), r), (1, value[0] & 0x80 != 0));
    }
    if let Ok(token) = attr::decode_reservation_token(value) {
        assert_eq!(token.to_be_bytes(), value);
    }
    if let Ok(n) = attr::decode_channel_number(value) {
        assert_eq!(n.to_be_bytes(), value[..2]);
    }
    if let Ok(s) = attr::decode_text(ty, value, 763) {
        assert_eq!(s.as_bytes(), value);
    }
    if let Ok((code, reason)) = attr::decode_error_code(value) {
        assert!((300..=699).contains(&code));
        let canonical = value[..2] == [0, 0] && value[2] & 0xF8 == 0 && reason.len() <= 127 * 4;
        if canonical {
            let mut b = MessageBuilder::new(MessageType::new(Method::BINDING, Class::Error), *tid);
            b.add_error_code(code, reason);
            let bytes = b.finish();
            let m = Message::parse(&bytes).expect("built");
            assert_eq!(
                m.get(attr::ERROR_CODE),
                Some(value),
                "ERROR-CODE re-encodes"
            );
        }
    }
    if let Ok(alg) = attr::decode_password_algorithm(value) {
        assert_eq!(alg.to_be_bytes(), value[..2]);
    }
}

/// Walks the attributes of a message that [`Message::parse`] accepted, independently of it:
/// every `(type, value)` up to the end, integrity and FINGERPRINT included.
fn walk_attributes(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut pos = HEADER_LEN;
    while pos < buf.len() {
        let ty = u16::from_be_bytes([buf[pos], buf[pos + 1]]);
        let len = usize::from(u16::from_be_bytes([buf[pos + 2], buf[pos + 3]]));
        out.push((ty, &buf[pos + 4..pos + 4 + len]));
        pos += 4 + len.div_ceil(4) * 4;
    }
    assert_eq!(pos, buf.len(), "attributes fill a parsed message exactly");
    out
}

/// Returns true for the attributes that end the counted part of a message.
fn is_trailer(ty: u16) -> bool {
    matches!(
        ty,
        attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 | attr::FINGERPRINT
    )
}

#[expect(
    clippy::disallowed_methods,
    reason = "fuzzing needs one monotonic base; the server only sees offsets from it"
)]
fn start_instant() -> Instant {
    Instant::now()
}

fn relay_v4(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(RELAY_V4), port)
}

/// A peer the policy allows (exempted documentation range).
fn peer_v4() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 5000)
}

/// A peer the policy allows (exempted documentation range).
fn peer_v6() -> SocketAddr {
    SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x10)),
        5000,
    )
}

/// Key for integrity checks on fuzzed messages.
const FUZZ_KEY: &[u8] = b"fuzzing-key";
/// The REST secret of the fuzzed server.
const SECRET: &str = "fuzzing-secret-0123456789";
/// The realm of the fuzzed server.
const REALM: &str = "fuzz.example";
/// 2023-11-14T22:13:20Z: the fuzzed server's wall clock.
const WALL_SECS: u64 = 1_700_000_000;
const RELAY_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const RELAY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// A small range, so that running out of ports is reachable.
const RELAY_PORTS: std::ops::RangeInclusive<u16> = 49_152..=49_161;
