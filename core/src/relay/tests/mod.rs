//! Core scenarios: every request method and its error paths, driven through [`Server`] with a
//! hand-advanced clock and a seeded RNG. No sockets, no sleeps.
//!
//! Each test builds a [`TestServer`] (realm `eeaturn.test`, relays on 127.0.0.1 and ::1, ports
//! 50000-50019, small limits), talks to it through [`Client`]s that do the long-term
//! credential dance, and asserts the exact responses, commands and events. The harness and
//! helpers are here; the tests are in one file per request method.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::{
    AnswerLimit, BindResult, BindToken, Command, EndReason, Event, FiveTuple, KernelPath, Limits,
    Now, PEER_HEADROOM, PEER_TAILROOM, PeerTransmit, Server, ServerConfig, Shared, TrafficCounters,
    Transport,
};
use crate::credentials::Secrets;
use crate::host::RelayAddresses;
use crate::policy::{Policy, Rule, Subject};
use crate::stun::attr;
use crate::stun::integrity::{fingerprint, long_term_key_md5, long_term_key_sha256};
use crate::stun::{
    ChannelData, Class, Message, MessageBuilder, MessageType, Method, TransactionId,
};

mod allocate;
mod amplification;
mod auth;
mod binding;
mod channels;
mod data;
mod determinism;
mod drain;
mod evidence;
mod kernel_paths;
mod leaks;
mod permissions;
mod refresh;
mod stream;

const REALM: &str = "eeaturn.test";
const SECRET: &str = "current-secret-0123456789";
const OLD_SECRET: &str = "previous-secret-0123456789";
const WALL_START: u64 = 1_700_000_000;
const SEED: u64 = 7;
const NONCE_KEY: [u8; 32] = [0x5a; 32];
const PORTS: RangeInclusive<u16> = 50000..=50019;
/// What the server offers in PASSWORD-ALGORITHMS: SHA-256, then MD5.
const PASSWORD_ALGORITHMS_OFFER: [u8; 8] = [0, 2, 0, 0, 0, 1, 0, 0];
const UDP: [u8; 4] = [attr::TRANSPORT_UDP, 0, 0, 0];
const FAMILY_V6: [u8; 4] = [attr::FAMILY_IPV6, 0, 0, 0];

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn five_tuple(client: &str) -> FiveTuple {
    FiveTuple {
        transport: Transport::Udp,
        client: addr(client),
        server: addr("127.0.0.1:3478"),
    }
}

/// Relays on 127.0.0.1 and ::1, ports 50000-50019; at most 4 allocations, 2 per user,
/// 3 permissions and 2 channels per allocation; lifetimes 600 s default, 3600 s max.
fn config() -> ServerConfig {
    ServerConfig {
        realm: REALM.to_owned(),
        software: Some("eeaturn-test".to_owned()),
        relay: RelayAddresses {
            v4: Some(ip("127.0.0.1")),
            v6: Some(ip("::1")),
            external_v4: None,
            external_v6: None,
            ports: PORTS,
        },
        limits: Limits {
            max_allocations: 4,
            max_allocations_per_user: 2,
            max_allocations_per_source: 8,
            ipv6_source_prefix: 64,
            max_permissions_per_allocation: 3,
            max_channels_per_allocation: 2,
            default_lifetime: secs(600),
            max_lifetime: secs(3600),
        },
        nonce_lifetime: secs(600),
        max_credential_ttl: secs(86_400),
        alternate_servers: Vec::new(),
        answer_limit: AnswerLimit::OFF,
    }
}

/// [`config`] with allocation quotas out of the way.
fn roomy_config() -> ServerConfig {
    let mut cfg = config();
    cfg.limits.max_allocations = 10;
    cfg.limits.max_allocations_per_user = 10;
    cfg.limits.max_allocations_per_source = 10;
    cfg
}

/// Loopback peers allowed (127.0.0.0/8, ::1) except 127.0.5.0/24; clients in 127.0.9.0/24
/// refused.
fn policy() -> Policy {
    Policy::dangerous_without_geo(
        vec!["127.0.5.0/24".parse().unwrap()],
        vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        vec!["127.0.9.0/24".parse().unwrap()],
    )
}

/// A server plus the clock, the secrets clients get credentials from, and everything it said.
struct TestServer {
    server: Server<SmallRng>,
    now: Now,
    /// Issues client credentials (the first secret signs).
    secrets: Secrets,
    /// How [`Command::BindRelay`] is completed automatically; `None` leaves it to the test.
    bind: Option<BindResult>,
    /// Events not yet taken by the test.
    events: Vec<Event>,
    /// Every command the server produced, in order.
    log: Vec<Command>,
    tids: u64,
    /// A model of the kernel's path map, changed only by the server's kernel-path commands
    /// (with [`TestServer::kernel_paths`]).
    kernel: BTreeSet<KernelPath>,
    /// What the "kernel" relayed on each path and the server has not been told yet.
    kernel_unread: BTreeMap<KernelPath, TrafficCounters>,
}

impl TestServer {
    fn new() -> Self {
        Self::with_config(config())
    }

    fn with_config(cfg: ServerConfig) -> Self {
        Self::build(cfg, policy(), SECRET, SEED)
    }

    fn build(cfg: ServerConfig, policy: Policy, secrets: &str, seed: u64) -> Self {
        let secrets = Secrets::parse(secrets).expect("test secrets parse");
        let server = Server::new(
            cfg,
            secrets.clone(),
            policy,
            NONCE_KEY,
            SmallRng::seed_from_u64(seed),
        );
        #[expect(
            clippy::disallowed_methods,
            reason = "an arbitrary origin for the test clock"
        )]
        let mono = Instant::now();
        Self {
            server,
            now: Now {
                mono,
                wall: UNIX_EPOCH + secs(WALL_START),
            },
            secrets,
            bind: Some(BindResult::Bound),
            events: Vec::new(),
            log: Vec::new(),
            tids: 0,
            kernel: BTreeSet::new(),
            kernel_unread: BTreeMap::new(),
        }
    }

    /// Makes the server share `shared` with others, as the workers of a relay do.
    fn sharing(mut self, shared: Arc<Shared>) -> Self {
        self.server = self.server.with_shared(shared);
        self
    }

    /// The server announces kernel paths; `drain` keeps [`TestServer::kernel`] as the shell
    /// keeps the kernel's map, and reports removals with their unread counters.
    fn kernel_paths(mut self) -> Self {
        self.server = self.server.with_kernel_paths();
        self
    }

    fn next_tid(&mut self) -> TransactionId {
        self.tids += 1;
        let mut t = [0u8; 12];
        t[..4].copy_from_slice(b"test");
        t[4..].copy_from_slice(&self.tids.to_be_bytes());
        TransactionId(t)
    }

    /// A client of user "alice" at 127.0.0.1:`port` with a one-hour REST credential.
    fn client(&self, port: u16) -> Client {
        self.client_as(&format!("127.0.0.1:{port}"), "alice")
    }

    /// A client of `user` at `from` with a one-hour REST credential.
    fn client_as(&self, from: &str, user: &str) -> Client {
        let cred = self
            .secrets
            .issue(user, secs(3600), secs(86_400), self.now.wall)
            .unwrap();
        Client {
            five_tuple: five_tuple(from),
            creds: Creds {
                username: cred.username,
                password: cred.password,
                realm: REALM.to_owned(),
                sha256: false,
            },
            nonce: None,
        }
    }

    /// A client at `from` with any `username`, its password signed by the first of `secrets`.
    fn client_with(&self, from: &str, username: &str, secrets: &Secrets) -> Client {
        Client {
            five_tuple: five_tuple(from),
            creds: Creds {
                username: username.to_owned(),
                password: secrets.passwords(username).next().unwrap(),
                realm: REALM.to_owned(),
                sha256: false,
            },
            nonce: None,
        }
    }

    /// Feeds a request datagram and returns the commands it caused (relay binds completed per
    /// `self.bind`).
    #[track_caller]
    fn send(&mut self, from: FiveTuple, bytes: &[u8]) -> Vec<Command> {
        let relayed = self.server.handle_client_input(from, bytes, self.now);
        assert_eq!(relayed, None, "a request is answered, never relayed");
        let cmds = self.drain();
        for cmd in &cmds {
            if let Command::SendToClient { to, .. } = cmd {
                assert_eq!(*to, from, "responses go back to the requester");
            }
        }
        cmds
    }

    /// Drains commands (completing relay binds per `self.bind`) and events.
    fn drain(&mut self) -> Vec<Command> {
        let mut cmds = Vec::new();
        while let Some(cmd) = self.server.poll_command() {
            if let (Command::BindRelay { token, addrs, .. }, Some(result)) = (&cmd, self.bind) {
                self.server
                    .handle_relay_bound(*token, addrs, result, self.now);
            }
            match &cmd {
                Command::InstallKernelPath(p) => {
                    assert!(self.kernel.insert(*p), "installed twice: {p:?}");
                }
                Command::RemoveKernelPath(p) => {
                    assert!(self.kernel.remove(p), "removed but not installed: {p:?}");
                    let unread = self.kernel_unread.remove(p).unwrap_or_default();
                    self.server.handle_kernel_path_removed(p, unread);
                }
                _ => {}
            }
            cmds.push(cmd);
        }
        while let Some(e) = self.server.poll_event() {
            self.events.push(e);
        }
        self.log.extend(cmds.iter().cloned());
        cmds
    }

    fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Sends `req` without credentials and returns the one response.
    #[track_caller]
    fn unauthenticated(&mut self, from: FiveTuple, req: &Req) -> Resp {
        let tid = req.tid.unwrap_or_else(|| self.next_tid());
        response(&self.send(from, &req.encode(tid, None)))
    }

    /// Gets a nonce the way a client does: an unauthenticated request answered with 401.
    #[track_caller]
    fn fetch_nonce(&mut self, c: &mut Client, method: Method) -> Resp {
        let r = self.unauthenticated(c.five_tuple, &Req::new(method));
        r.assert_error(401);
        c.nonce = Some(r.nonce().expect("a 401 carries NONCE"));
        r
    }

    /// One authenticated attempt (fetching a nonce first if the client has none).
    fn exchange(&mut self, c: &mut Client, req: &Req) -> Vec<Command> {
        if c.nonce.is_none() {
            self.fetch_nonce(c, req.method);
        }
        let tid = req.tid.unwrap_or_else(|| self.next_tid());
        let bytes = req.encode(tid, Some(&c.auth()));
        self.send(c.five_tuple, &bytes)
    }

    /// An authenticated request as a client makes it: retried once with the fresh nonce of a
    /// 438. Returns the final response and the commands of the final attempt.
    #[track_caller]
    fn call_cmds(&mut self, c: &mut Client, req: &Req) -> (Resp, Vec<Command>) {
        let cmds = self.exchange(c, req);
        let r = response(&cmds);
        if r.code() == Some(438) {
            c.nonce = Some(r.nonce().expect("a 438 carries NONCE"));
            let cmds = self.exchange(c, req);
            return (response(&cmds), cmds);
        }
        (r, cmds)
    }

    #[track_caller]
    fn call(&mut self, c: &mut Client, req: &Req) -> Resp {
        self.call_cmds(c, req).0
    }

    /// Allocates and returns the (IPv4) relayed address.
    #[track_caller]
    fn allocate(&mut self, c: &mut Client) -> SocketAddr {
        let r = self.call(c, &Req::allocate());
        r.assert_ok();
        r.xor(attr::XOR_RELAYED_ADDRESS).unwrap()
    }

    #[track_caller]
    fn permit(&mut self, c: &mut Client, peers: &[&str]) {
        self.call(c, &Req::permission(peers)).assert_ok();
    }

    #[track_caller]
    fn bind_channel(&mut self, c: &mut Client, number: u16, peer: &str) {
        self.call(c, &Req::channel_bind(number, peer)).assert_ok();
    }

    /// Moves both clocks forward and handles the timeout; returns the resulting commands.
    fn advance(&mut self, d: Duration) -> Vec<Command> {
        self.now.mono += d;
        self.now.wall += d;
        self.server.handle_timeout(self.now);
        self.drain()
    }

    /// A Send indication to `peer` carrying `data`.
    fn send_indication(&mut self, peer: &str, data: &[u8]) -> Vec<u8> {
        let tid = self.next_tid();
        let mut req = Req::new(Method::SEND).peer(peer).attr(attr::DATA, data);
        req.class = Class::Indication;
        req.encode(tid, None)
    }

    /// Feeds a client's ChannelData or Send indication; the data path never makes commands.
    #[track_caller]
    fn client_input(&mut self, c: &Client, bytes: &[u8]) -> Option<PeerTransmit> {
        let out = self
            .server
            .handle_client_input(c.five_tuple, bytes, self.now);
        let cmds = self.drain();
        assert!(cmds.is_empty(), "{cmds:?}");
        out
    }

    /// Feeds a peer datagram into a buffer with the required head- and tailroom (filled with
    /// junk) and returns the destination and the framed bytes.
    #[track_caller]
    fn peer_input(
        &mut self,
        relay: SocketAddr,
        peer: SocketAddr,
        payload: &[u8],
    ) -> Option<(FiveTuple, Vec<u8>)> {
        let mut buf = vec![0xEE; PEER_HEADROOM + payload.len() + PEER_TAILROOM];
        let range = PEER_HEADROOM..PEER_HEADROOM + payload.len();
        buf[range.clone()].copy_from_slice(payload);
        let out = self
            .server
            .handle_peer_input(relay, peer, &mut buf, range, self.now);
        let cmds = self.drain();
        assert!(cmds.is_empty(), "{cmds:?}");
        out.map(|t| (t.to, buf[t.range].to_vec()))
    }
}

/// A client's credentials.
#[derive(Debug, Clone)]
struct Creds {
    username: String,
    password: String,
    realm: String,
    /// Use PASSWORD-ALGORITHM SHA-256 and MESSAGE-INTEGRITY-SHA256.
    sha256: bool,
}

impl Creds {
    fn key(&self) -> Vec<u8> {
        if self.sha256 {
            long_term_key_sha256(&self.username, &self.realm, &self.password).to_vec()
        } else {
            long_term_key_md5(&self.username, &self.realm, &self.password).to_vec()
        }
    }
}

#[derive(Debug, Clone)]
struct Client {
    five_tuple: FiveTuple,
    creds: Creds,
    nonce: Option<String>,
}

impl Client {
    /// The authentication attributes a well-behaved client sends.
    fn auth(&self) -> Auth {
        let sha = self.creds.sha256;
        Auth {
            username: self.creds.username.clone(),
            realm: self.creds.realm.clone(),
            nonce: self.nonce.clone(),
            algorithms: sha.then(|| PASSWORD_ALGORITHMS_OFFER.to_vec()),
            algorithm: sha.then_some(attr::PASSWORD_ALGORITHM_SHA256),
            key: self.creds.key(),
            sha256_integrity: sha,
        }
    }
}

/// The authentication part of a request, field by field, so tests can break any of it.
#[derive(Debug, Clone)]
struct Auth {
    username: String,
    realm: String,
    nonce: Option<String>,
    algorithms: Option<Vec<u8>>,
    algorithm: Option<u16>,
    key: Vec<u8>,
    sha256_integrity: bool,
}

/// A request or indication before encoding.
#[derive(Debug, Clone)]
struct Req {
    method: Method,
    class: Class,
    /// Fixed transaction id (for retransmissions); a fresh one per send otherwise.
    tid: Option<TransactionId>,
    attrs: Vec<ReqAttr>,
}

#[derive(Debug, Clone)]
enum ReqAttr {
    Raw(u16, Vec<u8>),
    Xor(u16, SocketAddr),
}

impl Req {
    fn new(method: Method) -> Self {
        Self {
            method,
            class: Class::Request,
            tid: None,
            attrs: Vec::new(),
        }
    }

    /// Allocate for UDP.
    fn allocate() -> Self {
        Self::new(Method::ALLOCATE).attr(attr::REQUESTED_TRANSPORT, &UDP)
    }

    fn refresh() -> Self {
        Self::new(Method::REFRESH)
    }

    fn permission(peers: &[&str]) -> Self {
        peers
            .iter()
            .fold(Self::new(Method::CREATE_PERMISSION), |r, p| r.peer(p))
    }

    fn channel_bind(number: u16, peer: &str) -> Self {
        let n = number.to_be_bytes();
        Self::new(Method::CHANNEL_BIND)
            .attr(attr::CHANNEL_NUMBER, &[n[0], n[1], 0, 0])
            .peer(peer)
    }

    fn attr(mut self, ty: u16, value: &[u8]) -> Self {
        self.attrs.push(ReqAttr::Raw(ty, value.to_vec()));
        self
    }

    fn peer(mut self, peer: &str) -> Self {
        self.attrs
            .push(ReqAttr::Xor(attr::XOR_PEER_ADDRESS, addr(peer)));
        self
    }

    fn lifetime(self, secs: u32) -> Self {
        self.attr(attr::LIFETIME, &secs.to_be_bytes())
    }

    fn tid(mut self, tid: TransactionId) -> Self {
        self.tid = Some(tid);
        self
    }

    /// Encodes with `tid`: attributes, then USERNAME, REALM, NONCE, PASSWORD-ALGORITHMS,
    /// PASSWORD-ALGORITHM and the integrity attribute per `auth`, then FINGERPRINT.
    fn encode(&self, tid: TransactionId, auth: Option<&Auth>) -> Vec<u8> {
        let mut b = MessageBuilder::new(MessageType::new(self.method, self.class), tid);
        for a in &self.attrs {
            match a {
                ReqAttr::Raw(ty, v) => b.add_raw(*ty, v),
                ReqAttr::Xor(ty, addr) => b.add_xor_address(*ty, *addr),
            }
        }
        if let Some(a) = auth {
            b.add_raw(attr::USERNAME, a.username.as_bytes());
            b.add_raw(attr::REALM, a.realm.as_bytes());
            if let Some(nonce) = &a.nonce {
                b.add_raw(attr::NONCE, nonce.as_bytes());
            }
            if let Some(v) = &a.algorithms {
                b.add_raw(attr::PASSWORD_ALGORITHMS, v);
            }
            if let Some(alg) = a.algorithm {
                let v = alg.to_be_bytes();
                b.add_raw(attr::PASSWORD_ALGORITHM, &[v[0], v[1], 0, 0]);
            }
            if a.sha256_integrity {
                b.add_message_integrity_sha256(&a.key);
            } else {
                b.add_message_integrity(&a.key);
            }
        }
        b.add_fingerprint();
        b.finish()
    }
}

/// ChannelData on `number`, padded to a multiple of four as over a stream.
fn channel_data(number: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).unwrap();
    let mut v = Vec::with_capacity(4 + payload.len() + 3);
    v.extend_from_slice(&number.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(payload);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

/// A response the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resp(Vec<u8>);

impl Resp {
    fn msg(&self) -> Message<'_> {
        Message::parse(&self.0).expect("the server's messages parse (incl. FINGERPRINT)")
    }

    fn class(&self) -> Class {
        self.msg().class()
    }

    fn error(&self) -> Option<(u16, String)> {
        let v = self.msg().get(attr::ERROR_CODE)?;
        let (code, reason) = attr::decode_error_code(v).expect("ERROR-CODE decodes");
        Some((code, reason.to_owned()))
    }

    fn code(&self) -> Option<u16> {
        self.error().map(|e| e.0)
    }

    fn get(&self, ty: u16) -> Option<Vec<u8>> {
        self.msg().get(ty).map(<[u8]>::to_vec)
    }

    fn xors(&self, ty: u16) -> Vec<SocketAddr> {
        let m = self.msg();
        let tid = m.transaction_id();
        m.attributes()
            .filter(|(t, _)| *t == ty)
            .map(|(_, v)| attr::decode_xor_address(ty, v, &tid).expect("address decodes"))
            .collect()
    }

    fn xor(&self, ty: u16) -> Option<SocketAddr> {
        self.xors(ty).first().copied()
    }

    fn lifetime(&self) -> Option<u32> {
        let v = self.msg().get(attr::LIFETIME)?;
        Some(attr::decode_u32(attr::LIFETIME, v).unwrap())
    }

    fn nonce(&self) -> Option<String> {
        self.get(attr::NONCE).map(|v| String::from_utf8(v).unwrap())
    }

    #[track_caller]
    fn assert_ok(&self) {
        assert_eq!(
            self.class(),
            Class::Success,
            "expected success, got {:?}",
            self.error()
        );
    }

    #[track_caller]
    fn assert_error(&self, code: u16) {
        assert_eq!(
            self.class(),
            Class::Error,
            "expected error {code}, got success"
        );
        assert_eq!(self.code(), Some(code), "got {:?}", self.error());
    }
}

/// The only response among `cmds`.
#[track_caller]
fn response(cmds: &[Command]) -> Resp {
    let mut rs = responses(cmds);
    assert_eq!(rs.len(), 1, "expected exactly one response in {cmds:?}");
    rs.remove(0)
}

fn responses(cmds: &[Command]) -> Vec<Resp> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::SendToClient { bytes, .. } => Some(Resp(bytes.clone())),
            _ => None,
        })
        .collect()
}

fn bind_requests(cmds: &[Command]) -> Vec<(BindToken, Vec<SocketAddr>)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::BindRelay { token, addrs, .. } => Some((*token, addrs.clone())),
            _ => None,
        })
        .collect()
}

fn closed(cmds: &[Command]) -> Vec<SocketAddr> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::CloseRelay { addr } => Some(*addr),
            _ => None,
        })
        .collect()
}
