//! Verify throughput: `cargo test -p eeaturn-evidence --release --test throughput -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Instant;

use common::*;

#[test]
#[ignore = "a measurement, not a check: run in release with --nocapture"]
fn verify_reads_at_least_200k_records_per_second() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fra-1");
    let mut log = open(&dir, at(0));
    // 50,000 allocations × 7 records over ~14 hours (hourly segments).
    for n in 0..50_000u64 {
        allocation(&mut log, n, at(n * 1000));
        if n % 500 == 0 {
            log.flush(false).unwrap();
            log.checkpoint(at(n * 1000)).unwrap();
        }
    }
    log.close(at(50_000_000), "shutdown").unwrap();

    #[expect(clippy::disallowed_methods, reason = "measuring wall-clock throughput")]
    let start = Instant::now();
    let report = check(&dir);
    let elapsed = start.elapsed();
    assert!(report.is_ok(), "{}", report.to_json());
    let rate = report.records as f64 / elapsed.as_secs_f64();
    eprintln!(
        "verify: {} records, {} bytes ({} B/record), {} segments in {:.3} s: {:.0} records/s",
        report.records,
        report.bytes,
        report.bytes / report.records,
        report.nodes[0].segments,
        elapsed.as_secs_f64(),
        rate
    );
}

#[test]
#[ignore = "a measurement, not a check: run in release with --nocapture"]
fn append_cost_per_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fra-1");
    let mut log = open(&dir, at(0));
    // Warm up the day's pseudonym key and the segment.
    allocation(&mut log, 0, at(0));
    log.flush(false).unwrap();
    let before = log.next_seq();
    #[expect(clippy::disallowed_methods, reason = "measuring wall-clock cost")]
    let start = Instant::now();
    // 20,000 allocations × 7 records, flushed (without fsync) every 500 allocations, as the
    // relay's writer does between batches: pseudonyms, serialisation, hashing and write(2).
    for n in 1..20_000u64 {
        allocation(&mut log, n, at(n));
        if n % 500 == 0 {
            log.flush(false).unwrap();
        }
    }
    log.flush(false).unwrap();
    let elapsed = start.elapsed();
    let records = log.next_seq() - before;
    eprintln!(
        "append: {records} records in {:.3} s: {:.2} µs/record",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / records as f64
    );
}
