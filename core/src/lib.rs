//! eeaturn's sans-IO core: everything that decides, nothing that waits.
//!
//! This crate knows the TURN protocol and the residency policy and decides everything about
//! them, but it never touches a socket, a file or a clock: the `eeaturn` package (the shell)
//! reads the bytes, the time and the databases and hands them in, and carries out what comes
//! out. Its dependency list has no async runtime, socket or file-system crate, so the compiler
//! keeps it that way.
//!
//! # Layout
//!
//! - [`stun`]: the wire bytes: STUN messages, attributes, MESSAGE-INTEGRITY(-SHA256),
//!   FINGERPRINT, ChannelData and Data-indication framing.
//! - [`relay`]: the TURN server state machine ([`relay::Server`]): allocations, permissions,
//!   channels, the request handlers, the long-term credential mechanism, events and counters.
//! - [`policy`]: residency decisions: country and ASN rules over in-memory `.mmdb` snapshots,
//!   special-purpose ranges.
//! - [`host`]: the relay host's own addresses and port range, shared by the relay (where to
//!   bind) and the policy (which of the host's ports peers may reach).
//! - [`credentials`]: TURN REST usernames and passwords.
//! - [`client`]: the client side, sans-IO (signed requests, the challenge, data framing): not
//!   used by the relay; the bench tool, the tests and the fuzz harness share it.
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod client;
pub mod credentials;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod host;
pub mod policy;
pub mod relay;
pub mod stun;
