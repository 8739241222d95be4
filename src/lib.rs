//! eeaturn: a TURN/STUN relay that only relays between endpoints inside the EEA.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
pub mod api;
pub mod config;
pub mod credentials;
#[doc(hidden)]
pub mod fuzzing;
pub mod geo_build;
pub mod metrics;
pub mod pii;
pub mod policy;
pub mod relay;
pub mod shell;
pub mod stun;
pub mod tls;
