//! Verification of node directories: every chain link, seq, manifest, checkpoint and signature.
//!
//! It streams: per node it holds a window of the last 4096 record hashes, the open gaps
//! in the sequence, and an O(log n) Merkle stack, whatever the size of the evidence. Each
//! finding names the file and sequence numbers concerned. Findings that only follow from one
//! already reported (a manifest whose Merkle root no longer matches after a record was
//! deleted) are not reported again.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::layout::{self, SegmentFiles};
use crate::merkle::{MerkleBuilder, leaf_hash};
use crate::record::{Body, Record};
use crate::sign::{PublicKey, TrustSet};
use crate::statement::{SignatureError, Statement};
use crate::time::Timestamp;

/// What to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Skip the records of closed segments that end before this time (their manifests are
    /// still checked, so the chain stays continuous).
    pub from: Option<SystemTime>,
    /// Skip the records of closed segments that start after this time.
    pub to: Option<SystemTime>,
    /// The public keys whose signatures are accepted.
    pub trust: Vec<PublicKey>,
}

/// Progress of a long verification, reported after each segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The node directory being verified.
    pub dir: PathBuf,
    /// Segments of this directory done.
    pub segments_done: usize,
    /// Segments in this directory.
    pub segments_total: usize,
    /// Records read so far, over all directories.
    pub records: u64,
    /// Record bytes read so far, over all directories.
    pub bytes: u64,
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Evidence was changed, removed or cannot be trusted: `verify` fails.
    Failure,
    /// Worth a look, but what is signed is intact (a torn tail after a crash).
    Warning,
    /// Expected: deletion by retention, records not yet under a checkpoint.
    Info,
}

/// One thing `verify` found. Files are relative to the node directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "finding", rename_all = "kebab-case")]
pub enum Finding {
    /// The record's bytes no longer hash to what the next record (or the manifest) chained.
    RecordEdited {
        /// Segment file.
        file: String,
        /// The edited record.
        seq: u64,
    },
    /// Records are missing from inside a segment.
    RecordsDeleted {
        /// Segment file where the gap was seen.
        file: String,
        /// First missing seq.
        from_seq: u64,
        /// Last missing seq.
        to_seq: u64,
    },
    /// A record appears after one with a higher seq.
    RecordsReordered {
        /// Segment file.
        file: String,
        /// The record out of place.
        seq: u64,
    },
    /// The same seq appears twice.
    RecordDuplicated {
        /// Segment file.
        file: String,
        /// The repeated seq.
        seq: u64,
    },
    /// A segment ends before the records its manifest or checkpoint signed.
    SegmentTruncated {
        /// Segment file.
        file: String,
        /// Bytes the signed statement covers.
        expected_bytes: u64,
        /// Bytes found.
        found_bytes: u64,
        /// First missing seq.
        from_seq: u64,
        /// Last missing seq.
        to_seq: u64,
    },
    /// Whole segments are missing (and their records), not explained by retention.
    SegmentMissing {
        /// The segment after the gap, or the orphaned manifest.
        file: String,
        /// First missing seq.
        from_seq: u64,
        /// Last missing seq.
        to_seq: u64,
    },
    /// A segment that is not the open one has no manifest.
    ManifestMissing {
        /// Segment file.
        file: String,
    },
    /// A correctly signed manifest disagrees with the segment in a field.
    ManifestMismatch {
        /// Segment file.
        file: String,
        /// The field that differs.
        field: String,
    },
    /// A manifest's `prev_manifest` is not the hash of the previous manifest.
    ManifestChainBroken {
        /// The manifest.
        file: String,
    },
    /// A correctly signed checkpoint disagrees with the segment in a field.
    CheckpointMismatch {
        /// Segment file.
        file: String,
        /// The field that differs.
        field: String,
    },
    /// A statement is signed by a key that is not trusted.
    UntrustedKey {
        /// The manifest or checkpoint.
        file: String,
        /// Its key fingerprint.
        key: Digest,
    },
    /// A statement's signature is missing or does not verify.
    BadSignature {
        /// The manifest or checkpoint.
        file: String,
    },
    /// A statement or directory cannot be read or parsed.
    Unreadable {
        /// The file.
        file: String,
        /// What went wrong.
        error: String,
    },
    /// A record names another node than the rest of its directory.
    NodeMismatch {
        /// Segment file.
        file: String,
        /// The record.
        seq: u64,
    },
    /// A `pruned` record disagrees with what was actually deleted.
    PruneMismatch {
        /// Segment file.
        file: String,
        /// The `pruned` record.
        seq: u64,
    },
    /// Bytes after a segment's last intact record that are not a complete record: what a
    /// crash leaves. They are not evidence; `chain-resumed` says where the chain went on.
    TornTail {
        /// Segment file.
        file: String,
        /// Byte offset where the torn bytes start.
        offset: u64,
    },
    /// Records up to this seq were deleted by retention, as a signed statement says.
    PrunedByRetention {
        /// The last deleted seq.
        up_to_seq: u64,
    },
    /// Records of the open segment that no checkpoint covers yet (normal for up to one
    /// checkpoint interval).
    LiveRecordsUnsigned {
        /// Segment file.
        file: String,
        /// First uncovered seq.
        from_seq: u64,
        /// Last uncovered seq.
        to_seq: u64,
    },
    /// A file in `segments/` that is not part of the layout.
    UnexpectedFile {
        /// The file.
        file: String,
    },
}

impl Finding {
    /// Returns how much the finding matters.
    pub fn severity(&self) -> Severity {
        match self {
            Self::TornTail { .. } | Self::UnexpectedFile { .. } => Severity::Warning,
            Self::PrunedByRetention { .. } | Self::LiveRecordsUnsigned { .. } => Severity::Info,
            _ => Severity::Failure,
        }
    }
}

/// The result for one node directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeReport {
    /// The directory.
    pub dir: PathBuf,
    /// The node id its records carry.
    pub node: Option<String>,
    /// Lowest seq read.
    pub first_seq: Option<u64>,
    /// Highest seq read.
    pub last_seq: Option<u64>,
    /// Records read.
    pub records: u64,
    /// Segments in the directory.
    pub segments: u64,
    /// Time of the oldest record read.
    pub first_time: Option<Timestamp>,
    /// Time of the newest record read.
    pub last_time: Option<Timestamp>,
    /// Fingerprints of the keys that signed its statements.
    pub key_fingerprints: BTreeSet<Digest>,
    /// Records up to this seq were deleted by retention.
    pub pruned_up_to: Option<u64>,
    /// What was found, in the order found.
    pub findings: Vec<Finding>,
}

/// The result of [`verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// No finding of severity failure.
    pub ok: bool,
    /// Records read.
    pub records: u64,
    /// Record bytes read.
    pub bytes: u64,
    /// Findings of severity failure.
    pub failures: u64,
    /// Per node directory.
    pub nodes: Vec<NodeReport>,
}

impl VerifyReport {
    /// Returns whether nothing real was found (warnings and notes do not count).
    pub fn is_ok(&self) -> bool {
        self.ok
    }

    /// Returns every finding with its directory.
    pub fn findings(&self) -> impl Iterator<Item = (&Path, &Finding)> {
        self.nodes
            .iter()
            .flat_map(|n| n.findings.iter().map(move |f| (n.dir.as_path(), f)))
    }

    /// Returns the report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Verifies node directories, each its own chain.
pub fn verify(
    dirs: &[PathBuf],
    opts: &VerifyOptions,
    progress: &mut dyn FnMut(&Progress),
) -> VerifyReport {
    let trust = TrustSet::new(&opts.trust);
    let mut report = VerifyReport::default();
    for dir in dirs {
        let mut node = NodeVerifier::new(dir, &trust, opts);
        node.run(&mut report, progress);
        report.nodes.push(node.report);
    }
    report.failures = report
        .findings()
        .filter(|(_, f)| f.severity() == Severity::Failure)
        .count() as u64;
    report.ok = report.failures == 0;
    report
}

/// Hashes of recent records, kept to check links in both directions and find reorders.
const WINDOW: usize = 4096;

struct Entry {
    hash: Digest,
    /// The record's `prev`, if it parsed.
    prev: Option<Digest>,
    file: Rc<str>,
    flagged: bool,
}

struct Gap {
    from: u64,
    to: u64,
    file: Rc<str>,
    /// At the first record of a segment whose name says it starts there: a whole segment.
    boundary: bool,
}

struct StartGap {
    to: u64,
    prev: Digest,
    file: Rc<str>,
    boundary: bool,
    resolved: bool,
}

/// The envelope of a record: all `verify` needs of most records.
#[derive(Deserialize)]
struct Envelope<'a> {
    v: u32,
    seq: u64,
    prev: Digest,
    #[serde(borrow)]
    time: &'a str,
    #[serde(borrow)]
    node: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    kind: &'a str,
}

impl<'a> Envelope<'a> {
    /// Reads the envelope. Records are written with a fixed field order, so the prefix is
    /// read directly; anything else goes through the JSON parser.
    fn parse(line: &'a [u8]) -> Option<Self> {
        Self::parse_prefix(line).or_else(|| serde_json::from_slice(line).ok())
    }

    fn parse_prefix(line: &'a [u8]) -> Option<Self> {
        let rest = line.strip_prefix(b"{\"v\":1,\"seq\":")?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 19 {
            return None;
        }
        let seq = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        let rest = rest[digits..].strip_prefix(b",\"prev\":\"")?;
        let prev = Digest::from_hex(std::str::from_utf8(rest.get(..64)?).ok()?)?;
        let rest = rest[64..].strip_prefix(b"\",\"time\":\"")?;
        let time = std::str::from_utf8(rest.get(..24)?).ok()?;
        let rest = rest[24..].strip_prefix(b"\",\"node\":\"")?;
        let (node, rest) = plain_string(rest)?;
        let rest = rest.strip_prefix(b",\"kind\":\"")?;
        let (kind, rest) = plain_string(rest)?;
        if !matches!(rest.first(), Some(b',' | b'}')) {
            return None;
        }
        Some(Self {
            v: 1,
            seq,
            prev,
            time,
            node: std::borrow::Cow::Borrowed(node),
            kind,
        })
    }
}

/// Reads a JSON string body without escapes up to its closing quote; returns it and the rest
/// after the quote.
fn plain_string(s: &[u8]) -> Option<(&str, &[u8])> {
    let end = s.iter().position(|&b| b == b'"' || b == b'\\')?;
    if s[end] != b'"' {
        return None;
    }
    Some((std::str::from_utf8(&s[..end]).ok()?, &s[end + 1..]))
}

struct NodeVerifier<'a> {
    dir: PathBuf,
    trust: &'a TrustSet,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    report: NodeReport,
    window: BTreeMap<u64, Entry>,
    max_seq: Option<u64>,
    gaps: Vec<Gap>,
    start: Option<StartGap>,
    prev_manifest: Option<(Digest, bool)>,
    retained_from: u64,
    records_total: u64,
    bytes_total: u64,
}

/// Per-segment books while streaming it.
struct SegState {
    file: Rc<str>,
    first_seq_by_name: u64,
    count: u64,
    first: bool,
    first_seq: Option<u64>,
    first_prev: Option<Digest>,
    first_time: Option<Timestamp>,
    last_time: Option<Timestamp>,
    max_seq: Option<u64>,
    merkle: MerkleBuilder,
    /// Bytes of complete lines read.
    bytes: u64,
    checkpoint: Option<Statement>,
    /// Findings reported before this segment: later ones mean it is already known bad.
    findings_before: usize,
}

impl SegState {
    /// The state before the first record of the segment `file`, named as starting at
    /// `first_seq_by_name`.
    fn new(
        file: Rc<str>,
        first_seq_by_name: u64,
        checkpoint: Option<Statement>,
        findings_before: usize,
    ) -> Self {
        Self {
            file,
            first_seq_by_name,
            count: 0,
            first: true,
            first_seq: None,
            first_prev: None,
            first_time: None,
            last_time: None,
            max_seq: None,
            merkle: MerkleBuilder::new(),
            bytes: 0,
            checkpoint,
            findings_before,
        }
    }
}

impl<'a> NodeVerifier<'a> {
    fn new(dir: &Path, trust: &'a TrustSet, opts: &VerifyOptions) -> Self {
        Self {
            dir: dir.to_path_buf(),
            trust,
            from: opts.from.map(Timestamp::from_system_time),
            to: opts.to.map(Timestamp::from_system_time),
            report: NodeReport {
                dir: dir.to_path_buf(),
                ..NodeReport::default()
            },
            window: BTreeMap::new(),
            max_seq: None,
            gaps: Vec::new(),
            start: None,
            prev_manifest: None,
            retained_from: 1,
            records_total: 0,
            bytes_total: 0,
        }
    }

    fn find(&mut self, f: Finding) {
        self.report.findings.push(f);
    }

    fn run(&mut self, total: &mut VerifyReport, progress: &mut dyn FnMut(&Progress)) {
        let (segments, strangers) = match layout::list(&self.dir) {
            Ok(l) => l,
            Err(e) => {
                self.find(Finding::Unreadable {
                    file: layout::SEGMENTS.into(),
                    error: e.to_string(),
                });
                return;
            }
        };
        for file in strangers {
            self.find(Finding::UnexpectedFile { file });
        }
        self.report.segments = segments.iter().filter(|s| s.has_records).count() as u64;
        // The newest signed statement says from which seq records are still held.
        if let Some(last) = segments.last() {
            for path in [
                last.name.checkpoint(&self.dir),
                last.name.manifest(&self.dir),
            ] {
                if let Ok((s, _)) = Statement::read(&path)
                    && s.check_signature(self.trust).is_ok()
                {
                    self.retained_from = self.retained_from.max(s.retained_from_seq);
                }
            }
        }
        let last_with_records = segments.iter().rposition(|s| s.has_records);
        for (i, seg) in segments.iter().enumerate() {
            self.segment(seg, Some(i) == last_with_records);
            progress(&Progress {
                dir: self.dir.clone(),
                segments_done: i + 1,
                segments_total: segments.len(),
                records: total.records + self.records_total,
                bytes: total.bytes + self.bytes_total,
            });
        }
        self.finish();
        total.records += self.records_total;
        total.bytes += self.bytes_total;
    }

    /// Reads, parses and checks the signature of a statement; reports what is wrong.
    fn statement(&mut self, path: &Path) -> Option<(Statement, Digest, bool)> {
        let rel = self.rel(path);
        match Statement::read(path) {
            Ok((s, hash)) => {
                self.report.key_fingerprints.insert(s.key);
                let ok = match s.check_signature(self.trust) {
                    Ok(()) => true,
                    Err(SignatureError::UntrustedKey(key)) => {
                        self.find(Finding::UntrustedKey { file: rel, key });
                        false
                    }
                    Err(SignatureError::BadSignature) => {
                        self.find(Finding::BadSignature { file: rel });
                        false
                    }
                };
                Some((s, hash, ok))
            }
            Err(e) => {
                self.find(Finding::Unreadable {
                    file: rel,
                    error: e.to_string(),
                });
                None
            }
        }
    }

    fn rel(&self, path: &Path) -> String {
        path.strip_prefix(&self.dir)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned()
    }

    fn segment(&mut self, seg: &SegmentFiles, is_last: bool) {
        let file: Rc<str> = Rc::from(seg.name.rel());
        let manifest = if seg.has_manifest {
            self.statement(&seg.name.manifest(&self.dir))
        } else {
            None
        };
        let checkpoint = if seg.has_checkpoint {
            self.statement(&seg.name.checkpoint(&self.dir))
        } else {
            None
        };
        if !seg.has_records {
            // A sealed segment wholly outside the period may be present as its signed
            // manifest alone (an export holds no more): it is checked as a skipped segment.
            if let Some((m, hash, true)) = &manifest
                && self.outside_period(m)
                && m.last_seq >= self.retained_from
            {
                self.skip(&file, m);
                self.prev_manifest = Some((*hash, true));
                return;
            }
            self.orphan(&file, manifest.as_ref().or(checkpoint.as_ref()));
            return;
        }
        if !seg.has_manifest && !is_last {
            self.find(Finding::ManifestMissing {
                file: file.to_string(),
            });
        }
        let findings_before = self.report.findings.len();
        // The link to the previous manifest is judged after the records, when it is known
        // whether a whole segment is missing before this one.
        let prev_manifest = self.prev_manifest.take();
        let sealed = manifest
            .as_ref()
            .filter(|(_, _, ok)| *ok)
            .map(|(m, _, _)| m.clone());
        if let Some(m) = &sealed
            && self.outside_period(m)
        {
            self.skip(&file, m);
            self.prev_manifest = manifest.as_ref().map(|(_, h, ok)| (*h, *ok));
            return;
        }
        let valid_checkpoint = checkpoint
            .as_ref()
            .filter(|(_, _, ok)| *ok)
            .map(|(c, _, _)| c.clone());
        let mut st = SegState::new(
            file.clone(),
            seg.name.first_seq,
            valid_checkpoint.clone(),
            findings_before,
        );
        let found_bytes = self.read_records(seg, &mut st, sealed.as_ref());
        let clean = self.segment_clean(&st);
        if let Some(m) = &sealed {
            self.compare_manifest(&mut st, m, found_bytes, clean);
        }
        if let Some(c) = &valid_checkpoint {
            let seen = st.max_seq.unwrap_or(0);
            if st.count < c.count && sealed.is_none() {
                self.find(Finding::SegmentTruncated {
                    file: file.to_string(),
                    expected_bytes: c.bytes,
                    found_bytes,
                    from_seq: seen.max(c.first_seq - 1) + 1,
                    to_seq: c.last_seq,
                });
                self.pretend_seen(c.last_seq, c.head, &file);
            }
        }
        if sealed.is_none() && is_last && seg.has_records {
            let covered = valid_checkpoint.as_ref().map_or(0, |c| c.count);
            if st.count > covered {
                let from_seq = valid_checkpoint
                    .as_ref()
                    .map_or(st.first_seq.unwrap_or(0), |c| c.last_seq + 1);
                self.find(Finding::LiveRecordsUnsigned {
                    file: file.to_string(),
                    from_seq,
                    to_seq: st.max_seq.unwrap_or(0),
                });
            }
        }
        // The previous-manifest link.
        let own = manifest
            .as_ref()
            .filter(|(_, _, ok)| *ok)
            .map(|(m, _, _)| m.prev_manifest)
            .or_else(|| valid_checkpoint.as_ref().map(|c| c.prev_manifest));
        if let (Some(own), Some((expected, trusted))) = (own, prev_manifest) {
            let segment_gap = self.gaps.iter().any(|g| g.boundary && *g.file == *file);
            if own != expected && trusted && !segment_gap {
                self.find(Finding::ManifestChainBroken {
                    file: self.rel(&seg.name.manifest(&self.dir)),
                });
            }
        }
        self.prev_manifest = manifest.as_ref().map(|(_, h, ok)| (*h, *ok));
    }

    /// Streams a segment's records; returns the file length.
    fn read_records(
        &mut self,
        seg: &SegmentFiles,
        st: &mut SegState,
        sealed: Option<&Statement>,
    ) -> u64 {
        let path = seg.name.records(&self.dir);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                self.find(Finding::Unreadable {
                    file: st.file.to_string(),
                    error: e.to_string(),
                });
                return 0;
            }
        };
        let file_len = file.metadata().map_or(0, |m| m.len());
        let mut reader = BufReader::with_capacity(1 << 18, file);
        let mut line = Vec::with_capacity(1024);
        let mut offset = 0u64;
        loop {
            line.clear();
            let n = match reader.read_until(b'\n', &mut line) {
                Ok(n) => n,
                Err(e) => {
                    self.find(Finding::Unreadable {
                        file: st.file.to_string(),
                        error: e.to_string(),
                    });
                    break;
                }
            };
            if n == 0 {
                break;
            }
            let complete = line.last() == Some(&b'\n');
            let body = if complete { &line[..n - 1] } else { &line[..] };
            if let Some(m) = sealed {
                // Past the signed bytes, only records the manifest covers still count.
                if offset >= m.bytes {
                    let covered = complete
                        && serde_json::from_slice::<Envelope<'_>>(body)
                            .is_ok_and(|e| e.seq <= m.last_seq && e.seq >= m.first_seq);
                    if !covered {
                        self.find(Finding::TornTail {
                            file: st.file.to_string(),
                            offset,
                        });
                        break;
                    }
                }
            }
            if !complete {
                if sealed.is_none() {
                    self.find(Finding::TornTail {
                        file: st.file.to_string(),
                        offset,
                    });
                }
                // In a sealed segment a partial line before the signed end is truncation,
                // which the manifest comparison reports.
                break;
            }
            self.record(body, st);
            offset += n as u64;
            st.bytes = offset;
            self.bytes_total += n as u64;
        }
        file_len
    }

    fn record(&mut self, body: &[u8], st: &mut SegState) {
        let hash = leaf_hash(body);
        st.merkle.push(hash);
        st.count += 1;
        self.records_total += 1;
        self.report.records += 1;
        let envelope = Envelope::parse(body).filter(|e| e.v == 1);
        let (seq, prev) = match &envelope {
            Some(e) => (e.seq, Some(e.prev)),
            // A line that does not parse takes the next seq: the link check then names it.
            None => (self.max_seq.map_or(st.first_seq_by_name, |m| m + 1), None),
        };
        if let Some(e) = &envelope {
            match &self.report.node {
                None => self.report.node = Some(e.node.to_string()),
                Some(n) if *n != e.node => self.find(Finding::NodeMismatch {
                    file: st.file.to_string(),
                    seq,
                }),
                Some(_) => {}
            }
            if let Some(t) = Timestamp::parse(e.time) {
                self.report.first_time = Some(self.report.first_time.map_or(t, |f| f.min(t)));
                self.report.last_time = Some(self.report.last_time.map_or(t, |l| l.max(t)));
                st.first_time.get_or_insert(t);
                st.last_time = Some(t);
            }
            if e.kind == "pruned" {
                self.pruned_record(body, seq, &st.file);
            }
        }
        if st.first {
            st.first_seq = Some(seq);
            st.first_prev = prev;
        }
        self.observe(seq, prev, hash, st);
        st.first = false;
        st.max_seq = Some(st.max_seq.map_or(seq, |m| m.max(seq)));
        self.report.first_seq = Some(self.report.first_seq.map_or(seq, |f| f.min(seq)));
        self.report.last_seq = Some(self.report.last_seq.map_or(seq, |l| l.max(seq)));
        if let Some(c) = &st.checkpoint
            && st.count == c.count
        {
            self.compare_checkpoint(st, c.clone(), seq, hash);
        }
    }

    /// Compares the records so far with the checkpoint that covers exactly that many.
    fn compare_checkpoint(&mut self, st: &SegState, c: Statement, seq: u64, hash: Digest) {
        if seq == c.last_seq && hash != c.head {
            // The checkpoint's head stands for the successor of its last record.
            if let Some(e) = self.window.get_mut(&seq)
                && !e.flagged
            {
                e.flagged = true;
                let file = e.file.to_string();
                self.find(Finding::RecordEdited { file, seq });
            }
            return;
        }
        if !self.segment_clean(st) {
            return;
        }
        let field = if st.merkle.root() != c.merkle_root {
            Some("merkle_root")
        } else if hash != c.head {
            Some("head")
        } else if seq != c.last_seq {
            Some("last_seq")
        } else {
            None
        };
        if let Some(field) = field {
            self.find(Finding::CheckpointMismatch {
                file: st.file.to_string(),
                field: field.into(),
            });
        }
    }

    /// Whether nothing was found in this segment so far (open gaps included).
    fn segment_clean(&self, st: &SegState) -> bool {
        self.report.findings.len() == st.findings_before
            && !self.gaps.iter().any(|g| Rc::ptr_eq(&g.file, &st.file))
    }

    /// Places a record in the sequence and checks its links to both neighbours.
    fn observe(&mut self, seq: u64, prev: Option<Digest>, hash: Digest, st: &SegState) {
        let file = &st.file;
        match self.max_seq {
            None => {
                if seq > 1 {
                    self.start = Some(StartGap {
                        to: seq - 1,
                        prev: prev.unwrap_or(Digest::ZERO),
                        file: file.clone(),
                        boundary: st.first && seq == st.first_seq_by_name,
                        resolved: false,
                    });
                }
            }
            Some(max) if seq > max + 1 => self.gaps.push(Gap {
                from: max + 1,
                to: seq - 1,
                file: file.clone(),
                boundary: st.first && seq == st.first_seq_by_name,
            }),
            Some(max) if seq <= max => {
                if let Some(i) = self.gaps.iter().position(|g| g.from <= seq && seq <= g.to) {
                    let g = self.gaps.remove(i);
                    if g.from < seq {
                        self.gaps.push(Gap {
                            to: seq - 1,
                            file: g.file.clone(),
                            ..g
                        });
                    }
                    if seq < g.to {
                        self.gaps.push(Gap { from: seq + 1, ..g });
                    }
                    self.find(Finding::RecordsReordered {
                        file: file.to_string(),
                        seq,
                    });
                } else if self.window.contains_key(&seq) {
                    self.find(Finding::RecordDuplicated {
                        file: file.to_string(),
                        seq,
                    });
                    return;
                } else {
                    self.find(Finding::RecordsReordered {
                        file: file.to_string(),
                        seq,
                    });
                }
            }
            Some(_) => {}
        }
        self.window.insert(
            seq,
            Entry {
                hash,
                prev,
                file: file.clone(),
                flagged: false,
            },
        );
        self.check_link(seq.wrapping_sub(1), seq);
        self.check_link(seq, seq + 1);
        self.max_seq = Some(self.max_seq.map_or(seq, |m| m.max(seq)));
        self.evict();
    }

    /// Checks that record `b` chains to record `a`, if both are in the window.
    fn check_link(&mut self, a: u64, b: u64) {
        let Some(prev) = self.window.get(&b).and_then(|e| e.prev) else {
            return;
        };
        let Some(ea) = self.window.get_mut(&a) else {
            return;
        };
        if ea.hash != prev && !ea.flagged {
            ea.flagged = true;
            let file = ea.file.to_string();
            self.find(Finding::RecordEdited { file, seq: a });
        }
    }

    fn evict(&mut self) {
        while self.window.len() > WINDOW {
            self.window.pop_first();
        }
        let max = self.max_seq.unwrap_or(0);
        if !self.gaps.iter().any(|g| g.to + (WINDOW as u64) < max) {
            return;
        }
        let (old, keep): (Vec<Gap>, Vec<Gap>) = std::mem::take(&mut self.gaps)
            .into_iter()
            .partition(|g| g.to + (WINDOW as u64) < max);
        self.gaps = keep;
        for g in old {
            self.report_gap(g);
        }
    }

    fn report_gap(&mut self, g: Gap) {
        let (file, from_seq, to_seq) = (g.file.to_string(), g.from, g.to);
        self.find(if g.boundary {
            Finding::SegmentMissing {
                file,
                from_seq,
                to_seq,
            }
        } else {
            Finding::RecordsDeleted {
                file,
                from_seq,
                to_seq,
            }
        });
    }

    /// Records that `seq` with head `hash` exists, without its bytes (skipped or truncated).
    fn pretend_seen(&mut self, seq: u64, hash: Digest, file: &Rc<str>) {
        self.window.insert(
            seq,
            Entry {
                hash,
                prev: None,
                file: file.clone(),
                flagged: false,
            },
        );
        self.check_link(seq, seq + 1);
        self.max_seq = Some(self.max_seq.map_or(seq, |m| m.max(seq)));
    }

    /// Whether a sealed segment lies wholly outside the period (its records are not read).
    fn outside_period(&self, m: &Statement) -> bool {
        self.from.is_some_and(|f| m.last_time < f) || self.to.is_some_and(|t| m.first_time > t)
    }

    fn skip(&mut self, file: &Rc<str>, m: &Statement) {
        let st = SegState::new(file.clone(), m.first_seq, None, self.report.findings.len());
        if m.count > 0 {
            // The first record is known only by its seq and prev: check the boundary with it,
            // then stand in the last record's head for the next segment's link.
            if let Some(max) = self.max_seq {
                if m.first_seq > max + 1 {
                    self.gaps.push(Gap {
                        from: max + 1,
                        to: m.first_seq - 1,
                        file: file.clone(),
                        boundary: true,
                    });
                }
            } else if m.first_seq > 1 {
                self.start = Some(StartGap {
                    to: m.first_seq - 1,
                    prev: m.prev_head,
                    file: file.clone(),
                    boundary: true,
                    resolved: false,
                });
            }
            if let Some(e) = self.window.get_mut(&(m.first_seq - 1))
                && e.hash != m.prev_head
                && !e.flagged
            {
                e.flagged = true;
                let (file, seq) = (e.file.to_string(), m.first_seq - 1);
                self.find(Finding::RecordEdited { file, seq });
            }
            self.pretend_seen(m.last_seq, m.head, &st.file);
        }
    }

    fn orphan(&mut self, file: &Rc<str>, statement: Option<&(Statement, Digest, bool)>) {
        let Some((s, hash, _)) = statement else {
            return;
        };
        if s.last_seq < self.retained_from {
            // Left by a pruning that stopped halfway; its records are accounted as pruned.
            return;
        }
        self.find(Finding::SegmentMissing {
            file: file.to_string(),
            from_seq: s.first_seq,
            to_seq: s.last_seq,
        });
        self.pretend_seen(s.last_seq, s.head, file);
        self.prev_manifest = Some((*hash, false));
    }

    fn compare_manifest(
        &mut self,
        st: &mut SegState,
        m: &Statement,
        found_bytes: u64,
        clean: bool,
    ) {
        let file = st.file.to_string();
        let seen = st.max_seq.unwrap_or(m.first_seq.saturating_sub(1));
        if seen < m.last_seq && found_bytes < m.bytes {
            self.find(Finding::SegmentTruncated {
                file,
                expected_bytes: m.bytes,
                found_bytes,
                from_seq: seen.max(m.first_seq - 1) + 1,
                to_seq: m.last_seq,
            });
            self.pretend_seen(m.last_seq, m.head, &st.file);
            return;
        }
        // The manifest's head stands for the last record's successor.
        if let Some(e) = self.window.get_mut(&m.last_seq)
            && e.hash != m.head
            && !e.flagged
        {
            e.flagged = true;
            let seq = m.last_seq;
            self.find(Finding::RecordEdited { file, seq });
            return;
        }
        if !clean {
            return;
        }
        let field = if st.count != m.count {
            Some("count")
        } else if st.first_seq != Some(m.first_seq) && m.count > 0 {
            Some("first_seq")
        } else if st.max_seq.unwrap_or(m.first_seq - 1) != m.last_seq {
            Some("last_seq")
        } else if st.merkle.root() != m.merkle_root {
            Some("merkle_root")
        } else if st.bytes != m.bytes {
            Some("bytes")
        } else if m.count > 0 && st.first_prev != Some(m.prev_head) {
            Some("prev_head")
        } else if m.count > 0
            && (st.first_time != Some(m.first_time) || st.last_time != Some(m.last_time))
        {
            Some("time")
        } else if self.report.node.as_deref().is_some_and(|n| n != m.node) {
            Some("node")
        } else {
            None
        };
        if let Some(field) = field {
            self.find(Finding::ManifestMismatch {
                file: st.file.to_string(),
                field: field.into(),
            });
        }
    }

    fn pruned_record(&mut self, body: &[u8], seq: u64, file: &Rc<str>) {
        let Ok(record) = Record::parse(body) else {
            return;
        };
        let Body::Pruned(p) = record.body else {
            return;
        };
        if let Some(start) = &mut self.start
            && p.up_to_seq == start.to
        {
            if p.up_to_head == start.prev {
                start.resolved = true;
            } else {
                self.report.findings.push(Finding::PruneMismatch {
                    file: file.to_string(),
                    seq,
                });
            }
        }
    }

    fn finish(&mut self) {
        let gaps = std::mem::take(&mut self.gaps);
        for g in gaps {
            self.report_gap(g);
        }
        if let Some(start) = self.start.take() {
            if start.resolved || self.retained_from == start.to + 1 {
                self.report.pruned_up_to = Some(start.to);
                self.find(Finding::PrunedByRetention {
                    up_to_seq: start.to,
                });
            } else {
                self.report_gap(Gap {
                    from: 1,
                    to: start.to,
                    file: start.file,
                    boundary: start.boundary,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_reader_agrees_with_the_json_parser() {
        let line = br#"{"v":1,"seq":42,"prev":"0000000000000000000000000000000000000000000000000000000000000001","time":"2026-12-06T03:14:15.123Z","node":"fra-1","kind":"pruned","x":1}"#;
        let fast = Envelope::parse_prefix(line).unwrap();
        let slow: Envelope<'_> = serde_json::from_slice(line).unwrap();
        assert_eq!(
            (fast.seq, fast.prev, fast.time, &*fast.node, fast.kind),
            (slow.seq, slow.prev, slow.time, &*slow.node, slow.kind)
        );
        let escaped = br#"{"v":1,"seq":42,"prev":"0000000000000000000000000000000000000000000000000000000000000001","time":"2026-12-06T03:14:15.123Z","node":"fr\u0061","kind":"pruned"}"#;
        assert!(Envelope::parse_prefix(escaped).is_none());
        assert_eq!(Envelope::parse(escaped).unwrap().node, "fra");
        assert!(Envelope::parse_prefix(&line[..60]).is_none());
    }
}
