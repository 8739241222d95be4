//! The files of one node directory:
//!
//! ```text
//! <dir>/segments/<first seq, 20 digits>-<start, YYYYMMDDTHHMMSSZ>.jsonl   records
//! <dir>/segments/<same stem>.manifest.json                                 closed segment
//! <dir>/segments/<same stem>.checkpoint.json                               open segment
//! <dir>/keys/<YYYY-MM-DD>.key                                              pseudonym day keys
//! <dir>/lock                                                               the writer's lock
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::time::Timestamp;

/// The directory holding segments, manifests and checkpoints.
pub(crate) const SEGMENTS: &str = "segments";
/// The directory holding day keys.
pub(crate) const KEYS: &str = "keys";
/// The empty file the one writer of a directory holds an exclusive lock on.
pub(crate) const LOCK: &str = "lock";

/// One segment's names, parsed from its stem.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SegmentName {
    /// The seq of its first record, from the name.
    pub(crate) first_seq: u64,
    /// `<seq>-<time>`.
    pub(crate) stem: String,
    /// When it was started (second precision), from the name.
    pub(crate) start: Timestamp,
}

impl SegmentName {
    pub(crate) fn new(first_seq: u64, start: Timestamp) -> Self {
        Self {
            first_seq,
            stem: format!("{first_seq:020}-{}", start.compact()),
            start: Timestamp::from_unix_millis(start.unix_millis() / 1000 * 1000),
        }
    }

    pub(crate) fn parse_stem(stem: &str) -> Option<Self> {
        let (seq, time) = stem.split_once('-')?;
        if seq.len() != 20 || time.len() != 16 {
            return None;
        }
        let first_seq = seq.parse().ok()?;
        let t = time.as_bytes();
        let text = format!(
            "{}-{}-{}T{}:{}:{}.000Z",
            &time[0..4],
            &time[4..6],
            &time[6..8],
            &time[9..11],
            &time[11..13],
            &time[13..15]
        );
        if t[8] != b'T' || t[15] != b'Z' {
            return None;
        }
        Some(Self {
            first_seq,
            stem: stem.to_owned(),
            start: Timestamp::parse(&text)?,
        })
    }

    /// `<stem>.jsonl`.
    pub(crate) fn file(&self) -> String {
        format!("{}.jsonl", self.stem)
    }

    /// `segments/<stem>.jsonl`, as findings and records name it.
    pub(crate) fn rel(&self) -> String {
        format!("{SEGMENTS}/{}.jsonl", self.stem)
    }

    pub(crate) fn records(&self, dir: &Path) -> PathBuf {
        dir.join(SEGMENTS).join(self.file())
    }

    pub(crate) fn manifest(&self, dir: &Path) -> PathBuf {
        dir.join(SEGMENTS)
            .join(format!("{}.manifest.json", self.stem))
    }

    pub(crate) fn checkpoint(&self, dir: &Path) -> PathBuf {
        dir.join(SEGMENTS)
            .join(format!("{}.checkpoint.json", self.stem))
    }
}

/// What the segments directory holds for one stem.
#[derive(Debug, Clone)]
pub(crate) struct SegmentFiles {
    pub(crate) name: SegmentName,
    pub(crate) has_records: bool,
    pub(crate) has_manifest: bool,
    pub(crate) has_checkpoint: bool,
}

/// Lists every stem in `<dir>/segments`, ordered by first seq; files that do not follow the
/// naming are returned separately.
pub(crate) fn list(dir: &Path) -> Result<(Vec<SegmentFiles>, Vec<String>), Error> {
    let seg_dir = dir.join(SEGMENTS);
    let mut found: std::collections::BTreeMap<SegmentName, SegmentFiles> = Default::default();
    let mut strangers = Vec::new();
    let entries = match fs::read_dir(&seg_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), strangers)),
        Err(e) => return Err(Error::io(&seg_dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&seg_dir, e))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        let (stem, which) = if let Some(s) = file.strip_suffix(".manifest.json") {
            (s, 1)
        } else if let Some(s) = file.strip_suffix(".checkpoint.json") {
            (s, 2)
        } else if let Some(s) = file.strip_suffix(".jsonl") {
            (s, 0)
        } else if file.ends_with(".tmp") {
            continue;
        } else {
            strangers.push(format!("{SEGMENTS}/{file}"));
            continue;
        };
        let Some(name) = SegmentName::parse_stem(stem) else {
            strangers.push(format!("{SEGMENTS}/{file}"));
            continue;
        };
        let slot = found.entry(name.clone()).or_insert(SegmentFiles {
            name,
            has_records: false,
            has_manifest: false,
            has_checkpoint: false,
        });
        match which {
            0 => slot.has_records = true,
            1 => slot.has_manifest = true,
            _ => slot.has_checkpoint = true,
        }
    }
    strangers.sort();
    Ok((found.into_values().collect(), strangers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let n = SegmentName::new(42, Timestamp::from_unix_millis(1_796_526_855_123));
        assert_eq!(n.file(), "00000000000000000042-20261206T031415Z.jsonl");
        assert_eq!(SegmentName::parse_stem(&n.stem), Some(n));
        assert_eq!(SegmentName::parse_stem("42-20261206T031415Z"), None);
    }
}
