//! Residency evidence for eeaturn.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::path::{Path, PathBuf};

pub mod digest;
mod layout;
pub mod log;
pub mod merkle;
pub mod proof;
pub mod pseudonym;
pub mod record;
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
