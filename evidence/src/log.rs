//! The append-only writer of one node's evidence directory.
//!
//! [`Log::append`] only serialises into memory; [`Log::flush`] writes (and optionally fsyncs)
//! what is buffered. A failed write keeps every record that did not fully reach the file
//! buffered, and remembers how many bytes of the buffer did, so a later `flush` continues at
//! exactly that byte: nothing is lost or written twice. The caller bounds the buffer with
//! [`Log::pending_bytes`] and fails closed beyond it.
//!
//! Drive contract (one writer thread): `append` records as events arrive; `flush` per batch
//! (`fsync` per the configured policy); `checkpoint` every checkpoint interval; `roll_if_due`
//! on a timer, so a segment is closed even when no records come (a flush already starts a
//! new segment for a record from a later interval); `prune` hourly; `close` at shutdown.
//! No clock is read here.
//!
//! One writer per directory: [`Log::open`] takes an exclusive lock on `<dir>/lock` (an
//! advisory `flock`, which the kernel releases when the process dies, so a crash leaves no
//! stale lock) and holds it until [`Log::close`] succeeds or the `Log` is dropped. A second
//! writer (a second relay on the same directory, `eeaturn evidence prune` against a running
//! relay) fails at open with [`LOCKED`] as the kind of its I/O error. Readers (`verify`,
//! `prove`) take no lock.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::Error;
use crate::digest::Digest;
use crate::layout::{self, SegmentName};
use crate::merkle::{MerkleBuilder, leaf_hash};
use crate::pseudonym::{AddressMode, KeySource, Pseudonymizer, SystemKeySource};
use crate::record::{Body, ChainResumed, NodeStarted, NodeStopped, Pruned, Record, TornTail};
use crate::sign::{PublicKey, Signer};
use crate::statement::{Statement, StatementKind, write_atomic};
use crate::time::Timestamp;

/// The [`std::io::ErrorKind`] of the [`Error::Io`] that [`Log::open`] returns when another
/// writer holds the directory's lock. The error's path is the lock file.
pub const LOCKED: std::io::ErrorKind = std::io::ErrorKind::WouldBlock;

/// How the log is set up (from the `[evidence]` configuration and the node's identity).
#[derive(Debug, Clone)]
pub struct Options {
    /// The node id written in every record.
    pub node: String,
    /// The site, for `node-started`/`node-stopped`.
    pub site: String,
    /// The software version, for `node-started`/`node-stopped`.
    pub version: String,
    /// SHA-256 of the effective configuration.
    pub config_digest: Digest,
    /// How addresses and user ids are written.
    pub addresses: AddressMode,
    /// Segments roll when the clock enters a new interval of this length (aligned to the
    /// Unix epoch, so hourly segments cover clock hours). Default one hour.
    pub roll_interval: Duration,
    /// Segments roll once they hold this many bytes. Default 64 MiB.
    pub max_segment_bytes: u64,
    /// The configured retention, stated in `node-started` (`retention_s`); `None` leaves it
    /// out.
    pub retention: Option<Duration>,
}

impl Options {
    /// Options with the defaults: pseudonyms, hourly segments, 64 MiB.
    pub fn new(node: &str, site: &str, version: &str, config_digest: Digest) -> Self {
        Self {
            node: node.to_owned(),
            site: site.to_owned(),
            version: version.to_owned(),
            config_digest,
            addresses: AddressMode::Pseudonym,
            roll_interval: Duration::from_secs(3600),
            max_segment_bytes: 64 << 20,
            retention: None,
        }
    }
}

/// What [`Log::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The `chain-resumed` record written, or `None` for a new directory.
    pub resumed: Option<ChainResumed>,
    /// A segment left open by the previous run that `open` closed with a manifest.
    pub closed_segment: Option<String>,
}

/// What [`Log::prune`] deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneOutcome {
    /// Segment files deleted, oldest first.
    pub segments: Vec<String>,
    /// All records up to this seq are gone now (`None` if no segment was deleted).
    pub up_to_seq: Option<u64>,
    /// The UTC days whose pseudonym keys were destroyed.
    pub key_days: Vec<String>,
    /// The seq of the `pruned` record written, if anything was deleted.
    pub record_seq: Option<u64>,
}

/// The writer of one node directory.
pub struct Log {
    dir: PathBuf,
    /// The open lock file while this log is the directory's writer.
    lock: Option<File>,
    opts: Options,
    signer: Signer,
    pseudonyms: Pseudonymizer,
    next_seq: u64,
    /// Hash of the last appended record, buffered or not.
    head: Digest,
    /// Hash of the last manifest file written.
    prev_manifest: Digest,
    retained_from_seq: u64,
    current: Option<OpenSegment>,
    /// Serialised records not yet (fully) written, each followed by a newline.
    pending: Vec<u8>,
    pending_meta: VecDeque<Pending>,
    /// Bytes of `pending` already in the current segment file.
    written: usize,
    /// Bytes of `pending` that belong to records already counted in the segment.
    accounted: usize,
    unsynced: bool,
    stop_appended: bool,
    closed: bool,
    /// Test hook: bytes that may still be written before writes fail as if the disk were full.
    #[cfg(test)]
    pub(crate) space_left: Option<usize>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("next_seq", &self.next_seq)
            .field("pending_records", &self.pending_meta.len())
            .finish_non_exhaustive()
    }
}

struct Pending {
    /// Offset in `pending` just past this record's newline.
    end: usize,
    seq: u64,
    time: Timestamp,
    prev: Digest,
    /// The record's hash: its RFC 9162 leaf hash, which is also the next record's `prev`.
    hash: Digest,
}

struct OpenSegment {
    name: SegmentName,
    file: File,
    created_unsynced: bool,
    first_time: Timestamp,
    last_time: Timestamp,
    last_seq: u64,
    count: u64,
    /// Bytes of complete records in the file.
    bytes: u64,
    prev_head: Digest,
    head: Digest,
    merkle: MerkleBuilder,
}

impl Log {
    /// Opens (or creates) a node directory with system-random pseudonym day keys.
    ///
    /// See [`open_with_keys`](Self::open_with_keys).
    ///
    /// # Errors
    ///
    /// As [`open_with_keys`](Self::open_with_keys).
    pub fn open(
        dir: &Path,
        opts: Options,
        signer: Signer,
        now: SystemTime,
    ) -> Result<(Self, Recovery), Error> {
        Self::open_with_keys(dir, opts, signer, Box::new(SystemKeySource), now)
    }

    /// Opens (or creates) a node directory, taking new day keys from `keys`.
    ///
    /// The directory's lock is taken first (see the module documentation).
    ///
    /// If the directory holds records, the chain continues from the last intact one: a
    /// segment the previous run left open is scanned, closed with a manifest covering only its
    /// intact records (torn bytes after them are left in place for `verify` to report), and
    /// `chain-resumed` is appended. `node-started` is always appended. Both are buffered:
    /// call [`flush`](Self::flush).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Io`] if the directory cannot be read or the manifest not written (of
    /// kind [`LOCKED`] if another writer holds the directory), [`Error::Corrupt`] if the last
    /// manifest does not parse.
    pub fn open_with_keys(
        dir: &Path,
        opts: Options,
        signer: Signer,
        keys: Box<dyn KeySource>,
        now: SystemTime,
    ) -> Result<(Self, Recovery), Error> {
        let seg_dir = dir.join(layout::SEGMENTS);
        fs::create_dir_all(&seg_dir).map_err(|e| Error::io(&seg_dir, e))?;
        let lock = lock(dir)?;
        let pseudonyms = Pseudonymizer::new(&dir.join(layout::KEYS), opts.addresses, keys)?;
        let mut log = Self {
            dir: dir.to_path_buf(),
            lock: Some(lock),
            opts,
            signer,
            pseudonyms,
            next_seq: 1,
            head: Digest::ZERO,
            prev_manifest: Digest::ZERO,
            retained_from_seq: 1,
            current: None,
            pending: Vec::new(),
            pending_meta: VecDeque::new(),
            written: 0,
            accounted: 0,
            unsynced: false,
            stop_appended: false,
            closed: false,
            #[cfg(test)]
            space_left: None,
        };
        let recovery = log.recover(now)?;
        if let Some(resumed) = &recovery.resumed {
            log.append(Body::ChainResumed(resumed.clone()), now)?;
        }
        let started = Body::NodeStarted(NodeStarted {
            site: log.opts.site.clone(),
            version: log.opts.version.clone(),
            config_digest: log.opts.config_digest,
            key_fingerprint: log.signer.fingerprint(),
            retention_s: log.opts.retention.map(|r| r.as_secs()),
        });
        log.append(started, now)?;
        Ok((log, recovery))
    }

    /// Buffers a record; returns its seq. Nothing is written until [`flush`](Self::flush).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Invalid`] after [`close`](Self::close).
    pub fn append(&mut self, body: Body, now: SystemTime) -> Result<u64, Error> {
        if self.closed || self.stop_appended {
            return Err(Error::Invalid("the log is closed".into()));
        }
        let record = Record {
            v: crate::record::SCHEMA_VERSION,
            seq: self.next_seq,
            prev: self.head,
            time: Timestamp::from_system_time(now),
            node: self.opts.node.clone(),
            body,
        };
        let start = self.pending.len();
        if let Err(e) = serde_json::to_writer(&mut self.pending, &record) {
            self.pending.truncate(start);
            return Err(Error::Invalid(format!("record does not serialise: {e}")));
        }
        let line = &self.pending[start..];
        // The record's hash is its RFC 9162 leaf hash: one SHA-256 serves the chain and the tree.
        let hash = leaf_hash(line);
        self.pending.push(b'\n');
        self.pending_meta.push_back(Pending {
            end: self.pending.len(),
            seq: record.seq,
            time: record.time,
            prev: record.prev,
            hash,
        });
        self.head = hash;
        self.next_seq += 1;
        Ok(record.seq)
    }

    /// Writes every buffered record to the open segment (creating it if needed) and, with
    /// `fsync`, makes it durable.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Io`] on a failed write or fsync. Records not fully written stay
    /// buffered and a later call continues where this one stopped.
    pub fn flush(&mut self, fsync: bool) -> Result<(), Error> {
        while self.written < self.pending.len() {
            let Some(front) = self.pending_meta.front() else {
                break;
            };
            let (front_seq, front_prev, front_time) = (front.seq, front.prev, front.time);
            // A record from a later interval (or beyond the size limit) starts a new segment,
            // unless part of a record is already in the file.
            if let Some(cur) = &self.current
                && self.written == self.accounted
                && self.roll_due(cur, front_time)
            {
                self.seal_written(front_time.to_system_time())?;
            }
            if self.current.is_none() {
                let name = SegmentName::new(front_seq, front_time);
                self.current = Some(self.create_segment(name, front_prev, front_time)?);
            }
            let n = self.write_some()?;
            self.written += n;
            self.unsynced = true;
            self.account_written();
        }
        if self.written >= self.pending.len() {
            self.pending.clear();
            self.pending_meta.clear();
            self.written = 0;
            self.accounted = 0;
        }
        if fsync && self.unsynced {
            if let Some(cur) = &mut self.current {
                let path = cur.name.records(&self.dir);
                cur.file.sync_data().map_err(|e| Error::io(&path, e))?;
                if cur.created_unsynced {
                    crate::statement::sync_dir(&path)?;
                    cur.created_unsynced = false;
                }
            }
            self.unsynced = false;
        }
        Ok(())
    }

    /// Closes the open segment with a signed manifest if it is due: its clock interval has
    /// passed or it reached the size limit. Returns whether it rolled. The next flush starts a
    /// new segment.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Io`] if flushing or writing the manifest fails; the segment then stays
    /// open and a later call retries.
    pub fn roll_if_due(&mut self, now: SystemTime) -> Result<bool, Error> {
        let Some(cur) = &self.current else {
            return Ok(false);
        };
        if !self.roll_due(cur, Timestamp::from_system_time(now)) {
            return Ok(false);
        }
        self.seal(now)?;
        Ok(true)
    }

    /// Flushes with fsync and writes the open segment's signed checkpoint, covering every
    /// record written so far (atomically replacing the previous one).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Io`] if flushing or writing fails.
    pub fn checkpoint(&mut self, now: SystemTime) -> Result<(), Error> {
        self.flush(true)?;
        if let Some(cur) = &self.current {
            let statement = self.statement(cur, StatementKind::Checkpoint, now);
            write_atomic(&cur.name.checkpoint(&self.dir), &statement.to_file_bytes())?;
        }
        Ok(())
    }

    /// Deletes closed segments whose last record is older than `now - retention`, with their
    /// manifests and checkpoints, and the pseudonym keys of the days no kept record is from.
    ///
    /// The `pruned` record (what, up to which seq and head, which key days) is appended and
    /// made durable under a new checkpoint *before* anything is deleted, so a crash halfway
    /// leaves a statement of intent rather than an unexplained gap.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Invalid`] for a zero retention, [`Error::Io`] if a file cannot be
    /// read or deleted (a later call continues the job).
    pub fn prune(&mut self, retention: Duration, now: SystemTime) -> Result<PruneOutcome, Error> {
        if retention.is_zero() {
            return Err(Error::Invalid(
                "a retention of zero would delete all evidence".into(),
            ));
        }
        let cutoff = Timestamp::from_system_time(
            now.checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH),
        );
        let (segments, _) = layout::list(&self.dir)?;
        let current = self.current.as_ref().map(|c| c.name.stem.clone());
        let mut doomed = Vec::new();
        let mut first_kept_time = None;
        for seg in &segments {
            if Some(&seg.name.stem) == current.as_ref() || !seg.has_manifest {
                first_kept_time = Some(seg.name.start);
                break;
            }
            let (m, hash) = Statement::read(&seg.name.manifest(&self.dir))?;
            if m.last_time >= cutoff {
                first_kept_time = Some(m.first_time);
                break;
            }
            doomed.push((seg.clone(), m, hash));
        }
        let first_kept_day = first_kept_time
            .or_else(|| self.pending_meta.front().map(|p| p.time))
            .unwrap_or_else(|| Timestamp::from_system_time(now))
            .day();
        let key_days = self.key_days_before(&first_kept_day)?;
        let mut outcome = PruneOutcome {
            key_days: key_days.clone(),
            ..PruneOutcome::default()
        };
        if let Some((_, last, last_hash)) = doomed.last() {
            self.retained_from_seq = last.last_seq + 1;
            outcome.up_to_seq = Some(last.last_seq);
            outcome.segments = doomed
                .iter()
                .filter(|(s, _, _)| s.has_records)
                .map(|(s, _, _)| s.name.file())
                .collect();
            let body = Body::Pruned(Pruned {
                segments: outcome.segments.clone(),
                up_to_seq: last.last_seq,
                up_to_head: last.head,
                last_manifest: *last_hash,
                key_days,
                retention_s: retention.as_secs(),
            });
            outcome.record_seq = Some(self.append(body, now)?);
        } else if !key_days.is_empty() {
            let body = Body::Pruned(Pruned {
                segments: Vec::new(),
                up_to_seq: self.retained_from_seq - 1,
                up_to_head: Digest::ZERO,
                last_manifest: Digest::ZERO,
                key_days,
                retention_s: retention.as_secs(),
            });
            outcome.record_seq = Some(self.append(body, now)?);
        } else {
            return Ok(outcome);
        }
        self.checkpoint(now)?;
        for (seg, _, _) in &doomed {
            for path in [
                seg.name.records(&self.dir),
                seg.name.checkpoint(&self.dir),
                seg.name.manifest(&self.dir),
            ] {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(&path, e)),
                }
            }
        }
        if !doomed.is_empty() {
            crate::statement::sync_dir(&self.dir.join(layout::SEGMENTS).join("x"))?;
        }
        self.pseudonyms.destroy_keys_before(&first_kept_day)?;
        Ok(outcome)
    }

    /// Appends `node-stopped`, flushes with fsync and closes the segment with its manifest.
    /// After success, further appends fail. Safe to call again after an error.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Io`] if writing fails.
    pub fn close(&mut self, now: SystemTime, reason: &str) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        if !self.stop_appended {
            let body = Body::NodeStopped(NodeStopped {
                site: self.opts.site.clone(),
                version: self.opts.version.clone(),
                config_digest: self.opts.config_digest,
                key_fingerprint: self.signer.fingerprint(),
                reason: reason.to_owned(),
            });
            self.append(body, now)?;
            self.stop_appended = true;
        }
        self.seal(now)?;
        self.closed = true;
        // Dropping the file releases the lock: another writer may open the directory now.
        self.lock = None;
        Ok(())
    }

    /// Returns the pseudonymizer, to turn addresses and user ids into record fields.
    pub fn pseudonyms(&mut self) -> &mut Pseudonymizer {
        &mut self.pseudonyms
    }

    /// Returns the seq the next appended record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Returns the hash of the last appended record (zeros before the first).
    pub fn head(&self) -> Digest {
        self.head
    }

    /// Returns how many records are buffered and not yet fully written.
    pub fn pending_records(&self) -> usize {
        self.pending_meta.len()
    }

    /// Returns how many bytes are buffered and not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len() - self.written
    }

    /// Returns the public key of the signing key (what an auditor trusts).
    pub fn public_key(&self) -> PublicKey {
        self.signer.public_key()
    }

    /// Returns the node directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns the open segment's path relative to the node directory, if one is open.
    pub fn current_segment(&self) -> Option<String> {
        self.current.as_ref().map(|c| c.name.rel())
    }

    // ---- helpers ----

    fn recover(&mut self, now: SystemTime) -> Result<Recovery, Error> {
        let (segments, _) = layout::list(&self.dir)?;
        let mut with_records = segments.iter().filter(|s| s.has_records || s.has_manifest);
        let Some(first) = with_records.next() else {
            return Ok(Recovery {
                resumed: None,
                closed_segment: None,
            });
        };
        self.retained_from_seq = first.name.first_seq;
        let Some(last) = segments.iter().rev().find(|s| s.has_records) else {
            return Err(Error::Corrupt("manifests without segment files".into()));
        };
        let mut recovery = Recovery {
            resumed: None,
            closed_segment: None,
        };
        let mut torn_tail = None;
        if last.has_manifest {
            let (m, hash) = Statement::read(&last.name.manifest(&self.dir))?;
            self.next_seq = m.last_seq + 1;
            self.head = m.head;
            self.prev_manifest = hash;
            self.retained_from_seq = self.retained_from_seq.max(m.retained_from_seq);
        } else {
            // The state before this segment: from its checkpoint, else the previous manifest.
            let previous = segments
                .iter()
                .rev()
                .find(|s| s.name < last.name && s.has_manifest)
                .map(|s| Statement::read(&s.name.manifest(&self.dir)))
                .transpose()?;
            let checkpoint = if last.has_checkpoint {
                Some(Statement::read(&last.name.checkpoint(&self.dir))?.0)
            } else {
                None
            };
            self.prev_manifest = match (&checkpoint, &previous) {
                (Some(c), _) => c.prev_manifest,
                (None, Some((_, hash))) => *hash,
                (None, None) => Digest::ZERO,
            };
            if let Some(c) = &checkpoint {
                self.retained_from_seq = self.retained_from_seq.max(c.retained_from_seq);
            } else if let Some((m, _)) = &previous {
                self.retained_from_seq = self.retained_from_seq.max(m.retained_from_seq);
            }
            let expected_prev = previous.as_ref().map(|(m, _)| m.head);
            let (seg, file_len) = self.scan(&last.name, expected_prev)?;
            if seg.bytes < file_len {
                torn_tail = Some(TornTail {
                    file: last.name.rel(),
                    offset: seg.bytes,
                    bytes: file_len - seg.bytes,
                });
            }
            self.next_seq = seg.last_seq + 1;
            self.head = seg.head;
            let manifest = self.statement(&seg, StatementKind::Manifest, now);
            let bytes = manifest.to_file_bytes();
            write_atomic(&last.name.manifest(&self.dir), &bytes)?;
            self.prev_manifest = Digest::of(&bytes);
            recovery.closed_segment = Some(last.name.rel());
        }
        recovery.resumed = Some(ChainResumed {
            last_seq: self.next_seq - 1,
            last_head: self.head,
            torn_tail,
        });
        Ok(recovery)
    }

    /// Reads a segment left open; returns its intact records' state and the file length.
    fn scan(
        &self,
        name: &SegmentName,
        expected_prev: Option<Digest>,
    ) -> Result<(OpenSegment, u64), Error> {
        let path = name.records(&self.dir);
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let mut seg = OpenSegment {
            name: name.clone(),
            // Only for the type; the scanned segment is never written again.
            file: File::open(&path).map_err(|e| Error::io(&path, e))?,
            created_unsynced: false,
            first_time: name.start,
            last_time: name.start,
            last_seq: name.first_seq - 1,
            count: 0,
            bytes: 0,
            prev_head: expected_prev.unwrap_or(Digest::ZERO),
            head: expected_prev.unwrap_or(Digest::ZERO),
            merkle: MerkleBuilder::new(),
        };
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| Error::io(&path, e))?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            let body = &line[..line.len() - 1];
            let Ok(record) = Record::parse(body) else {
                break;
            };
            let chains = if seg.count == 0 {
                expected_prev.is_none_or(|p| p == record.prev)
            } else {
                record.prev == seg.head
            };
            if record.seq != seg.last_seq + 1 || !chains {
                break;
            }
            if seg.count == 0 {
                seg.prev_head = record.prev;
                seg.first_time = record.time;
            }
            seg.count += 1;
            seg.last_seq = record.seq;
            seg.last_time = record.time;
            let leaf = leaf_hash(body);
            seg.head = leaf;
            seg.merkle.push(leaf);
            seg.bytes += n as u64;
        }
        Ok((seg, file_len))
    }

    fn create_segment(
        &self,
        name: SegmentName,
        prev: Digest,
        time: Timestamp,
    ) -> Result<OpenSegment, Error> {
        let path = name.records(&self.dir);
        let file = fs::OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(OpenSegment {
            last_seq: name.first_seq - 1,
            name,
            file,
            created_unsynced: true,
            first_time: time,
            last_time: time,
            count: 0,
            bytes: 0,
            prev_head: prev,
            head: prev,
            merkle: MerkleBuilder::new(),
        })
    }

    /// One write of the unwritten part of the buffer; returns the bytes taken.
    fn write_some(&mut self) -> Result<usize, Error> {
        let Some(cur) = &mut self.current else {
            return Err(Error::Invalid("no open segment".into()));
        };
        #[cfg_attr(not(test), allow(unused_mut))]
        let mut buf = &self.pending[self.written..];
        #[cfg(test)]
        if let Some(left) = self.space_left {
            if left == 0 {
                let e = std::io::Error::from_raw_os_error(28); // ENOSPC
                return Err(Error::io(&cur.name.records(&self.dir), e));
            }
            buf = &buf[..buf.len().min(left)];
        }
        loop {
            match cur.file.write(buf) {
                Ok(0) => {
                    let e = std::io::Error::from(std::io::ErrorKind::WriteZero);
                    return Err(Error::io(&cur.name.records(&self.dir), e));
                }
                Ok(n) => {
                    #[cfg(test)]
                    if let Some(left) = &mut self.space_left {
                        *left -= n;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(&cur.name.records(&self.dir), e)),
            }
        }
    }

    /// Moves records that are now completely in the file from the buffer's books to the
    /// segment's.
    fn account_written(&mut self) {
        let Some(cur) = &mut self.current else {
            return;
        };
        let mut line_start = self.accounted;
        while let Some(front) = self.pending_meta.front() {
            if front.end > self.written {
                break;
            }
            if cur.count == 0 {
                cur.first_time = front.time;
                cur.prev_head = front.prev;
            }
            cur.count += 1;
            cur.last_seq = front.seq;
            cur.last_time = front.time;
            cur.head = front.hash;
            cur.merkle.push(front.hash);
            cur.bytes += (front.end - line_start) as u64;
            line_start = front.end;
            self.pending_meta.pop_front();
        }
        self.accounted = line_start;
    }

    fn statement(&self, seg: &OpenSegment, kind: StatementKind, now: SystemTime) -> Statement {
        let mut s = Statement {
            v: 1,
            statement: kind,
            node: self.opts.node.clone(),
            segment: seg.name.file(),
            first_seq: seg.name.first_seq,
            last_seq: seg.last_seq,
            count: seg.count,
            first_time: seg.first_time,
            last_time: seg.last_time,
            bytes: seg.bytes,
            prev_head: seg.prev_head,
            head: seg.head,
            merkle_root: seg.merkle.root(),
            prev_manifest: self.prev_manifest,
            retained_from_seq: self.retained_from_seq,
            signed_at: Timestamp::from_system_time(now),
            key: self.signer.fingerprint(),
            signature: None,
        };
        s.sign(&self.signer);
        s
    }

    fn seal(&mut self, now: SystemTime) -> Result<(), Error> {
        self.flush(true)?;
        self.seal_written(now)
    }

    /// Closes the open segment with its manifest; every record meant for it is written.
    fn seal_written(&mut self, now: SystemTime) -> Result<(), Error> {
        let Some(cur) = &mut self.current else {
            return Ok(());
        };
        let path = cur.name.records(&self.dir);
        if self.unsynced {
            cur.file.sync_data().map_err(|e| Error::io(&path, e))?;
            self.unsynced = false;
        }
        if cur.created_unsynced {
            crate::statement::sync_dir(&path)?;
            cur.created_unsynced = false;
        }
        let Some(cur) = &self.current else {
            return Ok(());
        };
        let manifest = self.statement(cur, StatementKind::Manifest, now);
        let bytes = manifest.to_file_bytes();
        write_atomic(&cur.name.manifest(&self.dir), &bytes)?;
        self.prev_manifest = Digest::of(&bytes);
        self.current = None;
        Ok(())
    }

    /// Whether a record at `t` belongs in a new segment.
    fn roll_due(&self, cur: &OpenSegment, t: Timestamp) -> bool {
        let interval = u64::try_from(self.opts.roll_interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1000);
        cur.bytes >= self.opts.max_segment_bytes
            || t.unix_millis() / interval != cur.name.start.unix_millis() / interval
    }

    fn key_days_before(&self, first_kept_day: &str) -> Result<Vec<String>, Error> {
        let keys = self.dir.join(layout::KEYS);
        let mut days = Vec::new();
        for entry in fs::read_dir(&keys).map_err(|e| Error::io(&keys, e))? {
            let entry = entry.map_err(|e| Error::io(&keys, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(day) = name.strip_suffix(".key")
                && day.len() == 10
                && day < first_kept_day
            {
                days.push(day.to_owned());
            }
        }
        days.sort();
        Ok(days)
    }
}

/// Takes the exclusive lock of `dir`, creating the lock file if needed.
fn lock(dir: &Path) -> Result<File, Error> {
    let path = dir.join(layout::LOCK);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(Error::io(
            &path,
            std::io::Error::new(
                LOCKED,
                "another process writes this evidence directory (it holds the lock)",
            ),
        )),
        Err(fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pseudonym::tests::CountingKeys;
    use crate::record::{AllocationEnded, Traffic};

    pub(crate) fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_515_200 + secs)
    }

    pub(crate) fn signer() -> Signer {
        Signer::from_pkcs8_file(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/keys/test-signing-key.pem"
        )))
        .unwrap()
    }

    fn open(dir: &Path, now: SystemTime) -> (Log, Recovery) {
        let opts = Options::new("fra-1", "Frankfurt", "0.1.0", Digest::of(b"config"));
        Log::open_with_keys(dir, opts, signer(), Box::new(CountingKeys(0)), now).unwrap()
    }

    fn ended(n: u64) -> Body {
        Body::AllocationEnded(AllocationEnded {
            allocation: format!("a{n}"),
            reason: "released".into(),
            duration_ms: n,
            peers: Vec::new(),
            totals: Traffic::default(),
        })
    }

    fn lines(dir: &Path) -> Vec<Record> {
        let (segs, _) = layout::list(dir).unwrap();
        let mut out = Vec::new();
        for s in segs.iter().filter(|s| s.has_records) {
            let text = fs::read_to_string(s.name.records(dir)).unwrap();
            for l in text.lines() {
                out.push(Record::parse(l.as_bytes()).unwrap());
            }
        }
        out
    }

    #[test]
    fn a_failed_write_loses_and_duplicates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path(), t(0));
        log.flush(true).unwrap();
        // The disk fills up in the middle of the third record.
        log.space_left = Some(250);
        for i in 0..5 {
            log.append(ended(i), t(1)).unwrap();
        }
        let err = log.flush(true).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(log.pending_records() > 0);
        assert!(log.flush(true).is_err());
        log.append(ended(5), t(2)).unwrap();
        // Space returns.
        log.space_left = None;
        log.flush(true).unwrap();
        assert_eq!(log.pending_records(), 0);
        log.close(t(3), "shutdown").unwrap();
        let records = lines(dir.path());
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
        for pair in records.windows(2) {
            let line = serde_json::to_vec(&pair[0]).unwrap();
            assert_eq!(pair[1].prev, leaf_hash(&line));
        }
    }

    #[test]
    fn a_close_that_fails_to_write_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path(), t(0));
        log.flush(true).unwrap();
        log.space_left = Some(0);
        assert!(log.close(t(1), "shutdown").is_err());
        assert!(
            log.append(ended(1), t(1)).is_err(),
            "closing: node-stopped is the last record"
        );
        log.space_left = None;
        log.close(t(2), "shutdown").unwrap();
        log.close(t(2), "shutdown").unwrap();
        let records = lines(dir.path());
        let kinds: Vec<&str> = records.iter().map(|r| r.body.kind()).collect();
        assert_eq!(kinds, ["node-started", "node-stopped"]);
    }

    #[test]
    fn restart_resumes_the_chain_and_rolls_hourly() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, recovery) = open(dir.path(), t(0));
        assert_eq!(recovery.resumed, None);
        log.append(ended(1), t(10)).unwrap();
        log.flush(false).unwrap();
        assert!(!log.roll_if_due(t(3599)).unwrap());
        log.checkpoint(t(3599)).unwrap();
        assert!(log.roll_if_due(t(3600)).unwrap());
        log.append(ended(2), t(3600)).unwrap();
        log.flush(true).unwrap();
        let head = log.head();
        drop(log); // a crash: the second segment has no manifest
        let (log, recovery) = open(dir.path(), t(4000));
        let resumed = recovery.resumed.unwrap();
        assert_eq!(
            (resumed.last_seq, resumed.last_head, resumed.torn_tail),
            (3, head, None)
        );
        assert_eq!(log.next_seq(), 6);
        let (segs, _) = layout::list(dir.path()).unwrap();
        assert_eq!(segs.len(), 2);
        assert!(segs.iter().all(|s| s.has_manifest));
    }

    #[test]
    fn a_second_writer_is_refused_until_the_first_closes_or_drops() {
        let dir = tempfile::tempdir().unwrap();
        let (mut first, _) = open(dir.path(), t(0));
        let opts = Options::new("fra-1", "Frankfurt", "0.1.0", Digest::of(b"config"));
        let second =
            Log::open_with_keys(dir.path(), opts, signer(), Box::new(CountingKeys(0)), t(1));
        match second {
            Err(Error::Io { path, source }) => {
                assert_eq!(path, dir.path().join("lock"));
                assert_eq!(source.kind(), LOCKED);
            }
            other => panic!("a second writer opened the directory: {other:?}"),
        }
        first.close(t(2), "shutdown").unwrap();
        let (third, _) = open(dir.path(), t(3));
        // A crash (drop without close) releases the lock as well.
        drop(third);
        let (mut fourth, recovery) = open(dir.path(), t(4));
        assert!(recovery.resumed.is_some());
        fourth.close(t(5), "shutdown").unwrap();
    }

    #[test]
    fn prune_refuses_zero() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path(), t(0));
        assert!(matches!(
            log.prune(Duration::ZERO, t(0)),
            Err(Error::Invalid(_))
        ));
    }
}
