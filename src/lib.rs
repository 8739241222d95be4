//! eeaturn: a TURN/STUN relay that only relays between endpoints inside the EEA.
//!
//! # Layout
//!
//! The protocol and the residency decisions live in the sans-IO core, the `eeaturn-core`
//! crate in `core/` (no sockets, files, clocks or async runtime: its dependency list keeps it
//! so). Its modules are re-exported here (`eeaturn::relay`, `eeaturn::policy`, ...), so the
//! shell and the tests name them as `crate::relay` and `eeaturn::relay`. This package is the
//! edge and the shell around it:
//!
//! - [`config`]: the TOML file → validated settings, including the core's [`relay::ServerConfig`];
//! - [`shell`]: the data-path worker threads, TCP/TLS connections, the coordinator, reloads;
//! - [`api`]: the credential HTTPS API; [`metrics`]: the Prometheus text; [`tls`]: the TLS profile;
//! - `http`: the one HTTP/1.1 accept loop (connection limit, timeouts) that serves the API and
//!   the metrics listener;
//! - [`pii`]: redaction of addresses and escaping of client-chosen text in logs; [`geo_build`]: CSV → `.mmdb` for test geodata.
//!
//! `docs/ARCHITECTURE.md` draws the whole picture.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub use eeaturn_core::{client, credentials, host, policy, relay, stun};

pub mod api;
pub mod config;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "geo-build")]
pub mod geo_build;
mod http;
pub mod metrics;
pub mod pii;
pub mod shell;
pub mod tls;
