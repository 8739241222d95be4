//! Signed statements over a segment: the manifest of a closed segment and the checkpoint of
//! the open one. Both have the same fields; they differ in `statement` and in when they are
//! written.
//!
//! What is signed: the bytes `eeaturn-evidence-v1 statement\n` followed by the statement
//! serialised as compact JSON in field order *without* the `signature` field. The file holds
//! the same JSON with `signature` (standard base64 of the 64-byte Ed25519 signature) appended,
//! and a newline.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::digest::Digest;
use crate::sign::{Signer, TrustSet};
use crate::time::Timestamp;

/// Which statement this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatementKind {
    /// Written once when a segment is closed; covers all of it.
    Manifest,
    /// Rewritten while a segment is open; covers the records durable so far.
    Checkpoint,
}

/// A signed statement over the first `count` records of one segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// Format version, 1.
    pub v: u32,
    /// Manifest or checkpoint.
    pub statement: StatementKind,
    /// The node that wrote the segment.
    pub node: String,
    /// The segment's file name (without directory).
    pub segment: String,
    /// Sequence number of the segment's first record.
    pub first_seq: u64,
    /// Sequence number of the last record covered (`first_seq - 1` if none).
    pub last_seq: u64,
    /// Number of records covered.
    pub count: u64,
    /// Time of the first record covered.
    pub first_time: Timestamp,
    /// Time of the last record covered.
    pub last_time: Timestamp,
    /// Bytes of the segment file covered, from its start, newlines included.
    pub bytes: u64,
    /// The `prev` of the segment's first record.
    pub prev_head: Digest,
    /// SHA-256 of the last covered record's line: the chain head.
    pub head: Digest,
    /// RFC 9162 tree head over the covered records' lines.
    pub merkle_root: Digest,
    /// SHA-256 of the previous segment's manifest file; zeros for the node's first.
    pub prev_manifest: Digest,
    /// Records before this sequence number were deleted by retention (1 if none).
    pub retained_from_seq: u64,
    /// When the statement was signed.
    pub signed_at: Timestamp,
    /// Fingerprint of the signing key.
    pub key: Digest,
    /// Base64 Ed25519 signature; absent while unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// Why a statement's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// Signed by a key that is not trusted.
    UntrustedKey(Digest),
    /// The signature is missing or does not verify.
    BadSignature,
}

impl Statement {
    /// Returns the bytes the signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let unsigned = Self {
            signature: None,
            ..self.clone()
        };
        let mut out = SIGNING_CONTEXT.to_vec();
        // A struct of strings and numbers always serialises.
        out.extend_from_slice(&serde_json::to_vec(&unsigned).unwrap_or_default());
        out
    }

    /// Sets `key` to the signer's fingerprint and signs.
    pub fn sign(&mut self, signer: &Signer) {
        self.key = signer.fingerprint();
        self.signature = None;
        self.signature = Some(BASE64.encode(signer.sign(&self.signed_bytes())));
    }

    /// Checks the signature against the trusted keys.
    ///
    /// # Errors
    ///
    /// Returns which check failed.
    pub fn check_signature(&self, trust: &TrustSet) -> Result<(), SignatureError> {
        let key = trust
            .get(&self.key)
            .ok_or(SignatureError::UntrustedKey(self.key))?;
        let sig = self
            .signature
            .as_deref()
            .and_then(|s| BASE64.decode(s).ok())
            .ok_or(SignatureError::BadSignature)?;
        if key.verify(&self.signed_bytes(), &sig) {
            Ok(())
        } else {
            Err(SignatureError::BadSignature)
        }
    }

    /// Returns the file contents: compact JSON and a newline.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Reads a statement file; returns it and the SHA-256 of the file's bytes.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Io`] if it cannot be read, [`Error::Corrupt`] if it does not parse.
    pub fn read(path: &Path) -> Result<(Self, Digest), Error> {
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        let statement: Self = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))?;
        Ok((statement, Digest::of(&bytes)))
    }
}

/// Replaces `path` atomically: writes a temporary file beside it, fsyncs it, renames it over
/// `path` and fsyncs the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(path)
}

/// Fsyncs the directory holding `path`, so a created or renamed entry survives a crash.
pub(crate) fn sync_dir(path: &Path) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

/// Domain separation: a signature over a statement can never be taken for another message.
const SIGNING_CONTEXT: &[u8] = b"eeaturn-evidence-v1 statement\n";
