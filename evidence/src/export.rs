//! What leaves a node directory: the files of an export for a period, one at a time, and the
//! retention state (oldest record held, what retention deleted).
//!
//! An export holds what `verify --from --to` needs to check the period offline: every
//! segment that overlaps the period with its records and statements, and, for each sealed
//! segment before the period, its signed manifest alone (the chain of manifests stays
//! continuous, and [`verify`](crate::verify::verify) checks such a segment through its
//! manifest). Segments that start at or after the end of the period are left out. Day keys
//! (`keys/`) never leave the node: verification does not need them.
//!
//! The directory may be written while it is read: a statement is read before the length of
//! its records file is taken, so a checkpoint never covers more than the exported records,
//! and the open segment's records are cut after the last complete line.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;

use crate::Error;
use crate::layout::{self, SEGMENTS, SegmentName};
use crate::record::Record;
use crate::statement::Statement;
use crate::time::Timestamp;

/// One file of an export.
#[derive(Debug)]
pub struct ExportFile {
    /// The path inside the node directory, `segments/<name>`.
    pub name: String,
    /// Its content.
    pub content: Content,
}

/// The content of an exported file.
#[derive(Debug)]
pub enum Content {
    /// A statement (manifest or checkpoint), read whole: they are small.
    Bytes(Vec<u8>),
    /// A records file: its first `len` bytes (complete lines only).
    File {
        /// The open file, positioned at its start.
        file: File,
        /// How many bytes to copy.
        len: u64,
    },
}

/// Calls `each` with every file an export of `dir` for the period `[from, to)` holds, oldest
/// segment first; returns how many files were handed over.
///
/// # Errors
///
/// Returns [`Error::Io`] if the directory or a file cannot be read (a file that vanished
/// meanwhile, deleted by retention, is skipped), or the error `each` returned, as
/// [`Error::Io`] on the file's path.
pub fn export_files(
    dir: &Path,
    from: Timestamp,
    to: Timestamp,
    each: &mut dyn FnMut(ExportFile) -> std::io::Result<()>,
) -> Result<usize, Error> {
    let (segments, _) = layout::list(dir)?;
    let mut n = 0;
    let mut emit = |file: ExportFile, path: &Path| -> Result<(), Error> {
        n += 1;
        each(file).map_err(|e| Error::io(path, e))
    };
    for seg in &segments {
        if seg.name.start >= to {
            break;
        }
        let manifest_path = seg.name.manifest(dir);
        let manifest = read_optional(&manifest_path)?;
        let checkpoint_path = seg.name.checkpoint(dir);
        // A segment closed while this runs has lost its checkpoint and gained a manifest:
        // whichever is there now is taken.
        let checkpoint = if manifest.is_some() {
            None
        } else {
            read_optional(&checkpoint_path)?
        };
        let before_period = manifest.as_deref().is_some_and(|bytes| {
            serde_json::from_slice::<Statement>(bytes).is_ok_and(|m| m.last_time < from)
        });
        if let Some(bytes) = manifest {
            emit(statement_file(&seg.name, "manifest", bytes), &manifest_path)?;
        }
        if before_period {
            continue;
        }
        if let Some(bytes) = checkpoint {
            emit(
                statement_file(&seg.name, "checkpoint", bytes),
                &checkpoint_path,
            )?;
        }
        let records = seg.name.records(dir);
        let file = match File::open(&records) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&records, e)),
        };
        let len = complete_length(&file).map_err(|e| Error::io(&records, e))?;
        emit(
            ExportFile {
                name: format!("{SEGMENTS}/{}", seg.name.file()),
                content: Content::File { file, len },
            },
            &records,
        )?;
    }
    Ok(n)
}

/// What retention left in a node directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retained {
    /// The seq of the oldest record held.
    pub oldest_seq: Option<u64>,
    /// Its time.
    pub oldest_time: Option<Timestamp>,
    /// Records before this seq were deleted by retention, as the newest signed statement
    /// says (1: none).
    pub retained_from_seq: u64,
}

/// Reads what retention left in `dir`: the oldest record held (the first line of the first
/// records file) and the newest statement's `retained_from_seq`. Signatures are not checked
/// here; `verify` does that.
///
/// # Errors
///
/// Returns [`Error::Io`] if the directory cannot be listed.
pub fn retained(dir: &Path) -> Result<Retained, Error> {
    let (segments, _) = layout::list(dir)?;
    let mut out = Retained {
        retained_from_seq: 1,
        ..Retained::default()
    };
    let first = segments.iter().find(|s| s.has_records);
    if let Some(mut file) = first.and_then(|s| File::open(s.name.records(dir)).ok()) {
        let mut head = vec![0u8; 64 << 10];
        let n = read_up_to(&mut file, &mut head).map_err(|e| Error::io(dir, e))?;
        let line = head[..n]
            .iter()
            .position(|&b| b == b'\n')
            .map(|end| &head[..end]);
        if let Some(r) = line.and_then(|l| Record::parse(l).ok()) {
            out.oldest_seq = Some(r.seq);
            out.oldest_time = Some(r.time);
        }
    }
    if let Some(last) = segments.last() {
        for path in [last.name.checkpoint(dir), last.name.manifest(dir)] {
            if let Ok((s, _)) = Statement::read(&path) {
                out.retained_from_seq = out.retained_from_seq.max(s.retained_from_seq);
            }
        }
    }
    Ok(out)
}

fn statement_file(name: &SegmentName, kind: &str, bytes: Vec<u8>) -> ExportFile {
    ExportFile {
        name: format!("{SEGMENTS}/{}.{kind}.json", name.stem),
        content: Content::Bytes(bytes),
    }
}

/// The file's bytes, or `None` if it does not exist.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The length of `file` up to and including its last newline (what the writer has written
/// whole); the file is left at its start.
fn complete_length(mut file: &File) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0u8; 64 << 10];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        file.seek(SeekFrom::Start(start))?;
        let want = usize::try_from(end - start).unwrap_or(buf.len());
        file.read_exact(&mut buf[..want])?;
        if let Some(i) = buf[..want].iter().rposition(|&b| b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    file.seek(SeekFrom::Start(0))?;
    Ok(end)
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
