//! Streaming the records of one node directory, oldest segment first, one line at a time.

use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::Path;

use crate::Error;
use crate::layout;
use crate::record::Record;
use crate::time::Timestamp;

/// Calls `each` with every record of `dir` that parses, in segment order, with the record
/// bytes read so far; returns the bytes read.
///
/// Segments that start at or after `until` are not read. Lines that do not parse (a torn
/// tail after a crash, an edited record) are skipped: [`verify`](crate::verify::verify)
/// reports them, and the report says whether the evidence verified.
///
/// # Errors
///
/// Returns [`Error::Io`] if the directory or a segment cannot be read.
pub fn read_records(
    dir: &Path,
    until: Option<Timestamp>,
    each: &mut dyn FnMut(&Record, u64),
) -> Result<u64, Error> {
    let (segments, _) = layout::list(dir)?;
    let mut bytes = 0u64;
    let mut line = Vec::with_capacity(1024);
    for seg in segments.iter().filter(|s| s.has_records) {
        if until.is_some_and(|u| seg.name.start >= u) {
            break;
        }
        let path = seg.name.records(dir);
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let mut reader = BufReader::with_capacity(256 << 10, file);
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| Error::io(&path, e))?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            if line.last() != Some(&b'\n') {
                break; // a torn final line
            }
            if let Ok(record) = Record::parse(&line[..n - 1]) {
                each(&record, bytes);
            }
        }
    }
    Ok(bytes)
}
