//! Residency evidence for eeaturn: the storage engine and verifier.
//!
//! Synchronous and deterministic: no async runtime, no clock reads (every function that needs
//! the time takes a [`SystemTime`](std::time::SystemTime)), randomness injectable. The relay
//! drives it from one writer thread. `docs/evidence-format.md` defines the files.
//!
//! # Layout
//!
//! - [`record`]: the version-1 record kinds ([`record::Record`], [`record::Body`]).
//! - [`log`]: [`log::Log`], the append-only writer of one node directory: buffering, flush
//!   and fsync, segment rolling, checkpoints, crash recovery, retention.
//! - [`pseudonym`]: per-day keyed pseudonyms for addresses and user ids.
//! - [`statement`]: the signed manifest and checkpoint of a segment.
//! - [`sign`]: Ed25519 keys, public key files, the trusted key set.
//! - [`merkle`]: the RFC 9162 Merkle tree, incremental root and inclusion proofs.
//! - [`verify`]: streaming verification of node directories into a [`verify::VerifyReport`].
//! - [`proof`]: an allocation's records with inclusion proofs, checked offline.
//! - [`export`]: the files of an export for a period, and the retention state.
//! - [`report`]: residency reports (HTML, JSON, CSV) folded from verified records.
//! - [`time`], [`digest`]: millisecond RFC 3339 timestamps and hex SHA-256 digests.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::path::{Path, PathBuf};

pub mod digest;
pub mod export;
mod layout;
pub mod log;
pub mod merkle;
pub mod proof;
pub mod pseudonym;
pub mod record;
pub mod report;
pub mod sign;
pub mod statement;
pub mod time;
pub mod verify;

/// Errors of the evidence store. I/O errors carry the path; the relay fails closed on them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A signing or day key is missing or malformed, or randomness failed.
    #[error("key: {0}")]
    Key(String),
    /// Stored evidence cannot be read back (a statement or record that does not parse).
    #[error("corrupt evidence: {0}")]
    Corrupt(String),
    /// The call is not allowed with these arguments or in this state.
    #[error("invalid use: {0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
