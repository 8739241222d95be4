//! Building, counting and sending responses: the shared tail of every request.

use rand::RngCore;

use super::super::auth::{PASSWORD_ALGORITHMS_VALUE, ResponseIntegrity};
use super::super::{Command, FiveTuple, Now, Server, Transport};
use super::Failure;
use crate::stun::attr;
use crate::stun::{Class, ErrorCode, Message, MessageBuilder, MessageType, Method, TransactionId};

impl<R: RngCore> Server<R> {
    /// Starts a response of `class` to `msg`.
    pub(super) fn response(&self, msg: &Message<'_>, class: Class) -> MessageBuilder {
        MessageBuilder::new(MessageType::new(msg.method(), class), msg.transaction_id())
    }

    /// Adds SOFTWARE, the integrity attribute and FINGERPRINT, and sends the message. An
    /// answer without integrity answers an unauthenticated request: over UDP it is sent only
    /// within its source prefix's budget (see [`send_unauthenticated`](Self::send_unauthenticated)).
    pub(super) fn finish_and_send(
        &mut self,
        to: FiveTuple,
        mut b: MessageBuilder,
        integrity: Option<&ResponseIntegrity>,
        now: Now,
    ) {
        if let Some(s) = &self.cfg.software {
            b.add_raw(attr::SOFTWARE, s.as_bytes());
        }
        if let Some(i) = integrity {
            i.apply(&mut b);
        }
        b.add_fingerprint();
        let bytes = b.finish();
        if integrity.is_some() {
            self.commands.push_back(Command::SendToClient { to, bytes });
        } else {
            self.send_unauthenticated(to, bytes, now);
        }
    }

    /// Sends an answer to an unauthenticated request, over UDP only within the budget of the
    /// client's source prefix: a forged source address must not turn the relay into an
    /// amplifier. TCP and TLS clients have proven their address with the handshake.
    /// Returns false when the answer was dropped.
    pub(super) fn send_unauthenticated(&mut self, to: FiveTuple, bytes: Vec<u8>, now: Now) -> bool {
        if to.transport == Transport::Udp
            && !self
                .answer_limiter
                .allow(to.client.ip(), bytes.len(), now.mono)
        {
            self.stats.answers_rate_limited += 1;
            return false;
        }
        self.commands.push_back(Command::SendToClient { to, bytes });
        true
    }

    /// Answers `msg` with the error `f`.
    pub(super) fn send_error(
        &mut self,
        to: FiveTuple,
        msg: &Message<'_>,
        f: &Failure,
        integrity: Option<&ResponseIntegrity>,
        now: Now,
    ) {
        self.send_error_to(to, msg.transaction_id(), msg.method(), f, integrity, now);
    }

    /// Answers the request `tid` of `method` with the error `f`, after the request itself is
    /// gone (an Allocate whose relay sockets could not be bound).
    pub(super) fn send_error_to(
        &mut self,
        to: FiveTuple,
        tid: TransactionId,
        method: Method,
        f: &Failure,
        integrity: Option<&ResponseIntegrity>,
        now: Now,
    ) {
        self.count_failure(method, f.code);
        let mut b = MessageBuilder::new(MessageType::new(method, Class::Error), tid);
        b.add_error(f.code, f.detail.as_deref());
        if let Some(alternate) = f.alternate {
            b.add_address(attr::ALTERNATE_SERVER, alternate);
        }
        self.finish_and_send(to, b, integrity, now);
    }

    /// Answers 420 listing the attributes `unknown`. See RFC 8489 §14.13.
    pub(super) fn send_unknown_attributes(
        &mut self,
        to: FiveTuple,
        msg: &Message<'_>,
        unknown: &[u16],
        integrity: Option<&ResponseIntegrity>,
        now: Now,
    ) {
        let code = ErrorCode::UNKNOWN_ATTRIBUTE;
        self.count_failure(msg.method(), code);
        let mut b = self.response(msg, Class::Error);
        b.add_error(code, None);
        b.add_unknown_attributes(unknown);
        self.finish_and_send(to, b, integrity, now);
    }

    /// Answers 401 or 438 with REALM, a fresh NONCE and PASSWORD-ALGORITHMS.
    pub(super) fn send_challenge(
        &mut self,
        to: FiveTuple,
        msg: &Message<'_>,
        code: ErrorCode,
        now: Now,
    ) {
        self.count_failure(msg.method(), code);
        let mut b = self.response(msg, Class::Error);
        b.add_error(code, None);
        b.add_raw(attr::REALM, self.cfg.realm.as_bytes());
        let nonce = self.auth.nonce(to.client.ip(), now.wall);
        b.add_raw(attr::NONCE, nonce.as_bytes());
        b.add_raw(attr::PASSWORD_ALGORITHMS, &PASSWORD_ALGORITHMS_VALUE);
        self.finish_and_send(to, b, None, now);
    }

    pub(super) fn count_ok(&mut self, method: Method) {
        *self.stats.requests_ok.entry(method.name()).or_default() += 1;
    }

    pub(super) fn count_failure(&mut self, method: Method, code: ErrorCode) {
        *self
            .stats
            .requests_failed
            .entry((method.name(), code.code()))
            .or_default() += 1;
    }
}
