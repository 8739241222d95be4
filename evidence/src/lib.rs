//! Residency evidence for eeaturn.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod digest;
pub mod record;
pub mod time;
