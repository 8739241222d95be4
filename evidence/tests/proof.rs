//! Inclusion proofs round-trip, and fail after any change.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use eeaturn_evidence::proof::{Proof, ProofError, prove, verify_proof};

#[test]
fn proof_round_trips_through_json_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = scripted(tmp.path());
    let proof = prove(&dir, "alloc-0005").unwrap();
    assert_eq!(proof.segments.len(), 1);
    assert_eq!(proof.segments[0].records.len(), 6);
    let json = serde_json::to_string_pretty(&proof).unwrap();
    let back: Proof = serde_json::from_str(&json).unwrap();
    let summary = verify_proof(&back, &[signer().public_key()]).unwrap();
    assert_eq!(summary.records, 6);
    assert_eq!(summary.keys, vec![signer().fingerprint()]);
}

#[test]
fn proof_fails_after_a_byte_of_a_record_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = scripted(tmp.path());
    let mut proof = prove(&dir, "alloc-0011").unwrap();
    let line = &mut proof.segments[0].records[5].line;
    *line = line.replacen("\"duration_ms\":61011", "\"duration_ms\":61012", 1);
    let err = verify_proof(&proof, &[signer().public_key()]).unwrap_err();
    assert!(
        matches!(err, ProofError::NotIncluded { index: _, .. }),
        "{err}"
    );
}

#[test]
fn proof_needs_a_trusted_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = scripted(tmp.path());
    let proof = prove(&dir, "alloc-0001").unwrap();
    let (_, other) = eeaturn_evidence::sign::keygen().unwrap();
    assert!(matches!(
        verify_proof(&proof, &[other]),
        Err(ProofError::UntrustedKey { .. })
    ));
    let none = prove(&dir, "no-such-allocation").unwrap();
    assert_eq!(
        verify_proof(&none, &[signer().public_key()]),
        Err(ProofError::Empty)
    );
}

#[test]
fn records_of_the_open_segment_are_proven_against_its_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fra-1");
    let mut log = open(&dir, at(0));
    allocation(&mut log, 1, at(1));
    log.checkpoint(at(2)).unwrap();
    allocation(&mut log, 2, at(3));
    log.flush(true).unwrap();
    let proof = prove(&dir, "alloc-0001").unwrap();
    assert_eq!(
        verify_proof(&proof, &[signer().public_key()])
            .unwrap()
            .records,
        6
    );
    let later = prove(&dir, "alloc-0002").unwrap();
    assert_eq!(later.unsigned_records, 6);
    assert!(later.segments.is_empty());
}
