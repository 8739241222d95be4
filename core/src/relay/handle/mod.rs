//! Input handling, one file per job. See RFC 8656 §7–§12 and RFC 8489 §6–§9.
//!
//! - this module: demultiplexing a client's datagram, and for requests the shared prologue
//!   (retransmitted Allocate, authentication, unknown attributes, the 5-tuple's allocation) and
//!   epilogue (count, SOFTWARE, integrity, FINGERPRINT, send) around one handler per method;
//! - [`data`]: the data path: ChannelData and Send from clients, data from peers;
//! - [`allocate`], [`bind`] (the relay-socket round trip of an Allocate), [`refresh`] and
//!   [`permission`] (CreatePermission and ChannelBind): the request handlers. Each parses its
//!   message into a typed request first, then acts;
//! - [`policy`]: residency decisions for requests, and their rechecks after a reload;
//! - [`respond`]: building and sending responses.

mod allocate;
mod bind;
mod data;
mod permission;
mod policy;
mod refresh;
mod respond;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use rand::RngCore;

use super::auth::{AuthOutcome, ResponseIntegrity};
use super::table::{AllocState, AuthState};
use super::{Command, DropReason, FiveTuple, Now, PeerTransmit, Server, Stage, Transport};
use crate::policy::{Decision, Facts, Rule, Subject};
use crate::stun::attr;
use crate::stun::{Class, ErrorCode, Message, MessageBuilder, Method};

/// Attributes this server understands in requests and indications. Any other
/// comprehension-required attribute is answered with 420. DONT-FRAGMENT is deliberately absent:
/// the relay cannot set DF, which RFC 8656 §7.2 says to signal exactly this way.
const UNDERSTOOD: &[u16] = &[
    attr::USERNAME,
    attr::MESSAGE_INTEGRITY,
    attr::MESSAGE_INTEGRITY_SHA256,
    attr::REALM,
    attr::NONCE,
    attr::PASSWORD_ALGORITHM,
    attr::CHANNEL_NUMBER,
    attr::LIFETIME,
    attr::XOR_PEER_ADDRESS,
    attr::DATA,
    attr::REQUESTED_ADDRESS_FAMILY,
    attr::EVEN_PORT,
    attr::REQUESTED_TRANSPORT,
    attr::RESERVATION_TOKEN,
    attr::PRIORITY,
    attr::USE_CANDIDATE,
];

/// What a request handler that succeeded answers.
#[derive(Debug)]
enum Answer {
    /// This success response, now; the epilogue counts it and adds SOFTWARE, integrity and
    /// FINGERPRINT.
    Respond(MessageBuilder),
    /// Nothing yet: an Allocate answers once its relay sockets are bound (see [`bind`]).
    Deferred,
}

/// Why a request fails: the error code, and a detail after its reason phrase.
#[derive(Debug)]
struct Failure {
    code: ErrorCode,
    detail: Option<Cow<'static, str>>,
    /// ALTERNATE-SERVER, with 300 (Try Alternate).
    alternate: Option<SocketAddr>,
}

impl Failure {
    const fn new(code: ErrorCode) -> Self {
        Self {
            code,
            detail: None,
            alternate: None,
        }
    }

    const fn with(code: ErrorCode, detail: &'static str) -> Self {
        Self {
            code,
            detail: Some(Cow::Borrowed(detail)),
            alternate: None,
        }
    }

    /// A 300 (Try Alternate) naming `alternate`. See RFC 8489 §14.15.
    const fn try_alternate(alternate: SocketAddr) -> Self {
        Self {
            code: ErrorCode::TRY_ALTERNATE,
            detail: Some(Cow::Borrowed("relay draining")),
            alternate: Some(alternate),
        }
    }

    const fn bad_request(detail: &'static str) -> Self {
        Self::with(ErrorCode::BAD_REQUEST, detail)
    }

    /// A 403 whose reason phrase names the subject and the rule, never database content.
    fn forbidden(subject: Subject, rule: Rule) -> Self {
        Self {
            code: ErrorCode::FORBIDDEN,
            detail: Some(Cow::Owned(format!(
                "{} address refused by rule {}",
                subject.name(),
                rule.id()
            ))),
            alternate: None,
        }
    }
}

impl<R: RngCore> Server<R> {
    /// Handles a datagram from a client on a listening socket. Returns where to relay its
    /// payload when it is ChannelData or a Send indication under a valid permission; requests
    /// produce commands instead.
    pub fn handle_client_input(
        &mut self,
        from: FiveTuple,
        bytes: &[u8],
        now: Now,
    ) -> Option<PeerTransmit> {
        match bytes.first().map(|b| b >> 6) {
            Some(0b01) => self.handle_channel_data(from, bytes, now),
            Some(0b00) => {
                let Ok(msg) = Message::parse(bytes) else {
                    self.stats.drop(DropReason::Malformed);
                    return None;
                };
                match msg.class() {
                    Class::Request => {
                        let before = self.commands.len();
                        self.handle_request(from, &msg, now);
                        if let Some(&slot) = self.by_five_tuple.get(&from) {
                            self.sync_kernel_paths_before(slot, before, now);
                        }
                        None
                    }
                    Class::Indication if msg.method() == Method::SEND => {
                        self.handle_send(from, &msg, now)
                    }
                    Class::Indication | Class::Success | Class::Error => {
                        self.stats.drop(DropReason::UnexpectedMessage);
                        None
                    }
                }
            }
            _ => {
                self.stats.drop(DropReason::Malformed);
                None
            }
        }
    }

    /// Answers a request: the prologue every method shares, its handler, and the epilogue.
    fn handle_request(&mut self, from: FiveTuple, msg: &Message<'_>, now: Now) {
        let method = msg.method();
        if method == Method::BINDING {
            self.handle_binding(from, msg, now);
            return;
        }
        if !matches!(
            method,
            Method::ALLOCATE | Method::REFRESH | Method::CREATE_PERMISSION | Method::CHANNEL_BIND
        ) {
            self.send_error(
                from,
                msg,
                &Failure::bad_request("unknown method"),
                None,
                now,
            );
            return;
        }
        if method == Method::ALLOCATE && self.answer_retransmission(from, msg) {
            return;
        }
        let (auth, integrity) = match self.auth.authenticate(msg, from.client.ip(), now.wall) {
            AuthOutcome::Ok {
                username,
                user_key,
                integrity,
            } => (AuthState { username, user_key }, integrity),
            AuthOutcome::Reject {
                code,
                detail,
                reason,
            } => {
                *self.stats.auth_failures.entry(reason).or_default() += 1;
                if let Some((rule, facts)) = self.refused_udp_source(from) {
                    // No nonce for a source the policy refuses: the smallest correct answer.
                    self.refuse_unauthenticated(from, msg, rule, facts, now);
                } else if AuthOutcome::challenges(code) {
                    self.send_challenge(from, msg, code, now);
                } else {
                    let f = Failure {
                        code,
                        detail: detail.map(Cow::Borrowed),
                        alternate: None,
                    };
                    self.send_error(from, msg, &f, None, now);
                }
                return;
            }
        };
        let unknown = unknown_required(msg);
        if !unknown.is_empty() {
            self.send_unknown_attributes(from, msg, &unknown, Some(&integrity), now);
            return;
        }
        match self.dispatch(from, msg, auth, &integrity, now) {
            Ok(Answer::Respond(b)) => {
                self.count_ok(method);
                self.finish_and_send(from, b, Some(&integrity), now);
            }
            Ok(Answer::Deferred) => {}
            Err(f) => self.send_error(from, msg, &f, Some(&integrity), now),
        }
        // Authenticated requests are what add timer entries (and release allocations).
        self.compact_timers();
    }

    /// Answers an Allocate retransmission from the stored response, even if the nonce has
    /// gone stale meanwhile, or ignores it while the first is being bound. Returns true when
    /// `msg` was one. See RFC 8656 §7.2.
    fn answer_retransmission(&mut self, from: FiveTuple, msg: &Message<'_>) -> bool {
        let Some(&slot) = self.by_five_tuple.get(&from) else {
            return false;
        };
        match self.alloc(slot).map(|a| &a.state) {
            Some(AllocState::Active { tid, response }) if *tid == msg.transaction_id() => {
                let bytes = response.clone();
                self.commands
                    .push_back(Command::SendToClient { to: from, bytes });
                true
            }
            Some(AllocState::Pending(p)) => p.tid == msg.transaction_id(),
            _ => false,
        }
    }

    /// Hands an authenticated request to its method's handler, with the 5-tuple's allocation
    /// (Allocate: the lack of one).
    fn dispatch(
        &mut self,
        from: FiveTuple,
        msg: &Message<'_>,
        auth: AuthState,
        integrity: &ResponseIntegrity,
        now: Now,
    ) -> Result<Answer, Failure> {
        let existing = self.by_five_tuple.get(&from).copied();
        let mismatch = Failure::new(ErrorCode::ALLOCATION_MISMATCH);
        let method = msg.method();
        if method == Method::ALLOCATE {
            if existing.is_some() {
                return Err(mismatch);
            }
            return self.handle_allocate(from, msg, auth, integrity, now);
        }
        let slot = existing.ok_or(Failure::new(ErrorCode::ALLOCATION_MISMATCH))?;
        let a = self.alloc(slot).ok_or(mismatch)?;
        if a.auth.username != auth.username {
            return Err(Failure::new(ErrorCode::WRONG_CREDENTIALS));
        }
        if !a.is_active() {
            return Err(Failure::new(ErrorCode::ALLOCATION_MISMATCH));
        }
        match method {
            Method::REFRESH => self.handle_refresh(slot, msg, now),
            Method::CREATE_PERMISSION => self.handle_create_permission(slot, msg, now),
            _ => self.handle_channel_bind(slot, msg, now),
        }
    }

    /// Answers a Binding request with the client's address. See RFC 8489 §3.
    /// A UDP source the residency policy refuses gets no answer: it cannot use the relay, and
    /// the answer would only serve whoever forged that address.
    fn handle_binding(&mut self, from: FiveTuple, msg: &Message<'_>, now: Now) {
        if self.refused_udp_source(from).is_some() {
            self.stats.drop(DropReason::RefusedSource);
            return;
        }
        let unknown = unknown_required(msg);
        if !unknown.is_empty() {
            self.send_unknown_attributes(from, msg, &unknown, None, now);
            return;
        }
        let mut b = self.response(msg, Class::Success);
        b.add_xor_address(attr::XOR_MAPPED_ADDRESS, from.client);
        self.count_ok(Method::BINDING);
        self.finish_and_send(from, b, None, now);
    }

    /// Returns the refusing rule when `from` is a UDP client whose address the residency
    /// policy refuses. Over TCP and TLS the connection was refused already
    /// (`handle_connection_opened`).
    fn refused_udp_source(&self, from: FiveTuple) -> Option<(Rule, Facts)> {
        if from.transport != Transport::Udp {
            return None;
        }
        match self.policy.check_client(from.client.ip()) {
            Decision::Allow { .. } => None,
            Decision::Deny { rule, facts } => Some((rule, facts)),
        }
    }

    /// Answers an unauthenticated request from a refused source with the smallest correct
    /// answer: a 403 whose reason phrase names the subject and the rule (what the user and the
    /// operator need), without REALM, NONCE, PASSWORD-ALGORITHMS, SOFTWARE or FINGERPRINT, so
    /// that the client cannot go on to authenticate; within the source's answer budget. Only
    /// an answered refusal is counted and reported as [`Event::Denied`](super::Event), so
    /// that a flood cannot flood the log and the evidence either.
    fn refuse_unauthenticated(
        &mut self,
        from: FiveTuple,
        msg: &Message<'_>,
        rule: Rule,
        facts: Facts,
        now: Now,
    ) {
        let code = ErrorCode::FORBIDDEN;
        self.count_failure(msg.method(), code);
        let mut b = self.response(msg, Class::Error);
        let reason = format!(
            "{} address refused by rule {}",
            Subject::Client.name(),
            rule.id()
        );
        b.add_error_code(code.code(), &reason);
        if !self.send_unauthenticated(from, b.finish(), now) {
            return;
        }
        let stage = match msg.method() {
            Method::ALLOCATE => Stage::Allocate {
                transport: from.transport,
                user: String::new(),
            },
            Method::REFRESH => Stage::Refresh,
            Method::CREATE_PERMISSION => Stage::CreatePermission,
            _ => Stage::ChannelBind,
        };
        self.deny(
            (None, stage),
            Subject::Client,
            from.client.ip(),
            rule,
            facts,
            now,
        );
    }
}

/// Returns true when `msg` has a comprehension-required attribute this server does not
/// understand (without allocating: the Send path calls it per packet).
fn has_unknown_required(msg: &Message<'_>) -> bool {
    msg.attributes()
        .any(|(ty, _)| attr::is_comprehension_required(ty) && !UNDERSTOOD.contains(&ty))
}

/// Returns the comprehension-required attributes of `msg` this server does not understand.
fn unknown_required(msg: &Message<'_>) -> Vec<u16> {
    let mut out = Vec::new();
    for (ty, _) in msg.attributes() {
        if attr::is_comprehension_required(ty) && !UNDERSTOOD.contains(&ty) && !out.contains(&ty) {
            out.push(ty);
        }
    }
    out
}

/// Decodes LIFETIME, if present.
fn parse_lifetime(msg: &Message<'_>) -> Result<Option<u32>, Failure> {
    msg.get(attr::LIFETIME)
        .map(|v| {
            attr::decode_u32(attr::LIFETIME, v)
                .map_err(|_| Failure::bad_request("malformed LIFETIME"))
        })
        .transpose()
}

/// Decodes XOR-PEER-ADDRESS `value` in its canonical form.
fn parse_peer(value: &[u8], msg: &Message<'_>) -> Option<SocketAddr> {
    attr::decode_xor_address(attr::XOR_PEER_ADDRESS, value, &msg.transaction_id())
        .ok()
        .map(canonical_addr)
}

/// Maps `::ffff:a.b.c.d` to `a.b.c.d` so permissions and peers compare equal across forms.
fn canonical_addr(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(crate::policy::canonical(a.ip()), a.port())
}

fn secs_u32(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}
