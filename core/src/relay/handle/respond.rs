//! Building, counting and sending responses: the shared tail of every request.

use rand::RngCore;

use super::super::auth::{PASSWORD_ALGORITHMS_VALUE, ResponseIntegrity};
use super::super::{Command, FiveTuple, Now, Server};
use super::Failure;
use crate::stun::attr;
use crate::stun::{Class, ErrorCode, Message, MessageBuilder, MessageType, Method, TransactionId};

impl<R: RngCore> Server<R> {
    /// Starts a response of `class` to `msg`.
    pub(super) fn response(&self, msg: &Message<'_>, class: Class) -> MessageBuilder {
        MessageBuilder::new(MessageType::new(msg.method(), class), msg.transaction_id())
    }

    /// Adds SOFTWARE, the integrity attribute and FINGERPRINT, and sends the message.
    pub(super) fn finish_and_send(
        &mut self,
        to: FiveTuple,
        mut b: MessageBuilder,
        integrity: Option<&ResponseIntegrity>,
    ) {
        if let Some(s) = &self.cfg.software {
            b.add_raw(attr::SOFTWARE, s.as_bytes());
        }
        if let Some(i) = integrity {
            i.apply(&mut b);
        }
        b.add_fingerprint();
        self.commands.push_back(Command::SendToClient {
            to,
            bytes: b.finish(),
        });
    }

    /// Answers `msg` with the error `f`.
    pub(super) fn send_error(
        &mut self,
        to: FiveTuple,
        msg: &Message<'_>,
        f: &Failure,
        integrity: Option<&ResponseIntegrity>,
    ) {
        self.send_error_to(to, msg.transaction_id(), msg.method(), f, integrity);
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
    ) {
        self.count_failure(method, f.code);
        let mut b = MessageBuilder::new(MessageType::new(method, Class::Error), tid);
        b.add_error(f.code, f.detail.as_deref());
        if let Some(alternate) = f.alternate {
            b.add_address(attr::ALTERNATE_SERVER, alternate);
        }
        self.finish_and_send(to, b, integrity);
    }

    /// Answers 420 listing the attributes `unknown`. See RFC 8489 §14.13.
    pub(super) fn send_unknown_attributes(
        &mut self,
        to: FiveTuple,
        msg: &Message<'_>,
        unknown: &[u16],
        integrity: Option<&ResponseIntegrity>,
    ) {
        let code = ErrorCode::UNKNOWN_ATTRIBUTE;
        self.count_failure(msg.method(), code);
        let mut b = self.response(msg, Class::Error);
        b.add_error(code, None);
        b.add_unknown_attributes(unknown);
        self.finish_and_send(to, b, integrity);
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
        self.finish_and_send(to, b, None);
    }

    pub(super) fn count_ok(&mut self, method: Method) {
        *self.stats.requests_ok.entry(method.name()).or_default() += 1;
    }

    fn count_failure(&mut self, method: Method, code: ErrorCode) {
        *self
            .stats
            .requests_failed
            .entry((method.name(), code.code()))
            .or_default() += 1;
    }
}
