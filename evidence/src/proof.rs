//! Inclusion proofs: one allocation's records, each with its RFC 9162 audit path (§2.1.3)
//! to the Merkle root of a signed manifest or checkpoint, checkable offline.

use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::digest::Digest;
use crate::layout;
use crate::merkle::{inclusion_path, leaf_hash, root_from_path};
use crate::record::Record;
use crate::sign::{PublicKey, TrustSet};
use crate::statement::{SignatureError, Statement};

/// An allocation's records with inclusion proofs, as `eeaturn evidence prove` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proof {
    /// Format version, 1.
    pub v: u32,
    /// The allocation id.
    pub allocation: String,
    /// Per segment holding its records: the signed statement and the records.
    pub segments: Vec<SegmentProof>,
    /// Records of the allocation found after the last signed statement, not provable yet.
    pub unsigned_records: u64,
}

/// The records of one segment and the statement they are proven against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentProof {
    /// The segment's manifest, or its checkpoint while it is open.
    pub statement: Statement,
    /// The allocation's records in it.
    pub records: Vec<ProvenRecord>,
}

/// One record and its audit path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvenRecord {
    /// The leaf index in the segment's tree (`seq - first_seq`).
    pub index: u64,
    /// The exact record line (without the newline).
    pub line: String,
    /// Sibling hashes from the leaf up (RFC 9162 §2.1.3.1).
    pub path: Vec<Digest>,
}

/// What a valid proof shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofSummary {
    /// The allocation's records proven.
    pub records: usize,
    /// Key fingerprints of the statements.
    pub keys: Vec<Digest>,
}

/// Why a proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// A statement is signed by a key the verifier does not trust.
    #[error("{segment}: signed by an untrusted key {key}")]
    UntrustedKey {
        /// The segment.
        segment: String,
        /// The key fingerprint.
        key: Digest,
    },
    /// A statement's signature does not verify.
    #[error("{segment}: bad signature")]
    BadSignature {
        /// The segment.
        segment: String,
    },
    /// A record's audit path does not lead to the signed root.
    #[error("{segment}: record {index} is not in the signed tree")]
    NotIncluded {
        /// The segment.
        segment: String,
        /// The leaf index.
        index: u64,
    },
    /// A record is not a valid record of this allocation at this position.
    #[error("{segment}: record {index} is not a record of the allocation at that position")]
    WrongRecord {
        /// The segment.
        segment: String,
        /// The leaf index.
        index: u64,
    },
    /// The proof holds no record.
    #[error("the proof holds no record")]
    Empty,
}

/// Collects an allocation's records from a node directory with their inclusion proofs.
///
/// Memory: the leaf hashes of one segment at a time (32 bytes per record).
///
/// # Errors
///
/// Returns [`Error::Io`] or [`Error::Corrupt`] if a segment or statement cannot be read.
pub fn prove(dir: &Path, allocation: &str) -> Result<Proof, Error> {
    let needle = serde_json::to_string(allocation)
        .map(|quoted| format!("\"allocation\":{quoted}"))
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let (segments, _) = layout::list(dir)?;
    let mut proof = Proof {
        v: 1,
        allocation: allocation.to_owned(),
        segments: Vec::new(),
        unsigned_records: 0,
    };
    for seg in segments.iter().filter(|s| s.has_records) {
        let statement = if seg.has_manifest {
            Some(Statement::read(&seg.name.manifest(dir))?.0)
        } else if seg.has_checkpoint {
            Some(Statement::read(&seg.name.checkpoint(dir))?.0)
        } else {
            None
        };
        let covered = statement.as_ref().map_or(0, |s| s.count);
        let path = seg.name.records(dir);
        let mut reader = BufReader::new(File::open(&path).map_err(|e| Error::io(&path, e))?);
        let mut leaves = Vec::new();
        let mut found = Vec::new();
        let mut line = Vec::new();
        let mut index = 0u64;
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| Error::io(&path, e))?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            let body = &line[..n - 1];
            let mine = contains(body, needle.as_bytes())
                && Record::parse(body).is_ok_and(|r| r.allocation() == Some(allocation));
            if index < covered {
                leaves.push(leaf_hash(body));
                if mine {
                    found.push((index, String::from_utf8_lossy(body).into_owned()));
                }
            } else if mine {
                proof.unsigned_records += 1;
            }
            index += 1;
        }
        let Some(statement) = statement else {
            continue;
        };
        if found.is_empty() {
            continue;
        }
        let records = found
            .into_iter()
            .map(|(index, line)| {
                let path = usize::try_from(index)
                    .ok()
                    .and_then(|i| inclusion_path(&leaves, i))
                    .ok_or_else(|| {
                        Error::Corrupt(format!(
                            "{}: fewer records than its statement",
                            seg.name.rel()
                        ))
                    })?;
                Ok(ProvenRecord { index, line, path })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        proof.segments.push(SegmentProof { statement, records });
    }
    Ok(proof)
}

/// Checks a proof offline: each statement's signature by a trusted key, each record's leaf
/// hash up its audit path to the signed root, and that each record belongs to the allocation
/// at the position it claims.
///
/// # Errors
///
/// Returns the first check that fails.
pub fn verify_proof(proof: &Proof, trust: &[PublicKey]) -> Result<ProofSummary, ProofError> {
    let trust = TrustSet::new(trust);
    let mut summary = ProofSummary {
        records: 0,
        keys: Vec::new(),
    };
    for seg in &proof.segments {
        let s = &seg.statement;
        let segment = s.segment.clone();
        match s.check_signature(&trust) {
            Ok(()) => {}
            Err(SignatureError::UntrustedKey(key)) => {
                return Err(ProofError::UntrustedKey { segment, key });
            }
            Err(SignatureError::BadSignature) => return Err(ProofError::BadSignature { segment }),
        }
        if !summary.keys.contains(&s.key) {
            summary.keys.push(s.key);
        }
        for r in &seg.records {
            let leaf = leaf_hash(r.line.as_bytes());
            if root_from_path(leaf, r.index, s.count, &r.path) != Some(s.merkle_root) {
                return Err(ProofError::NotIncluded {
                    segment,
                    index: r.index,
                });
            }
            let record = Record::parse(r.line.as_bytes());
            let fits = record.is_ok_and(|rec| {
                rec.allocation() == Some(proof.allocation.as_str())
                    && rec.seq == s.first_seq + r.index
                    && rec.node == s.node
            });
            if !fits {
                return Err(ProofError::WrongRecord {
                    segment,
                    index: r.index,
                });
            }
            summary.records += 1;
        }
    }
    if summary.records == 0 {
        return Err(ProofError::Empty);
    }
    Ok(summary)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
