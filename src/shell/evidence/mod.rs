//! The evidence writer: one thread owning the [`Log`] of the node's evidence directory.
//!
//! Workers hand it their core events over a bounded queue ([`Sink`]) and never block: what
//! does not fit stays in the worker's own bounded buffer and is retried at its next loop
//! turn. The writer maps events to records ([`records`]), appends them, flushes per batch
//! (fsync per `evidence.fsync`), checkpoints every `evidence.checkpoint_interval`, rolls
//! segments on time, and prunes at start and hourly. It must not decide anything about TURN and must not
//! drop a record: when writing fails it closes admission everywhere ([`Status`]), keeps the
//! records in memory up to `evidence.memory_limit` and writes them once it can (then admission
//! reopens); beyond that bound it asks every worker to end its allocations with
//! `evidence-unavailable`, which is recorded once writing works again.

#[cfg(test)]
mod golden;
mod records;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use eeaturn_evidence::digest::Digest;
use eeaturn_evidence::log::{LOCKED, Log, Options, Recovery};
use eeaturn_evidence::record::Body;
use eeaturn_evidence::sign::{PublicKey, Signer};

use super::now;
use crate::config::{Config, EvidenceConfig, Fsync};
use crate::policy::Policy;
use crate::relay::Event;

/// Events a worker buffers when the queue is full before it closes its own admission; at
/// twice this it ends its allocations (`evidence-unavailable`). Never reached while the writer
/// thread runs: it empties the queue into its own bounded memory.
const WORKER_BUFFER: usize = 65_536;
/// Records appended per flush at most.
const BATCH: usize = 4096;
/// The longest the writer sleeps: fsync (interval mode), roll and retry cadence.
const TICK: Duration = Duration::from_secs(1);
/// While events keep coming, the writer sleeps this long between batches instead of waiting
/// on the queue. A writer blocked on the queue must be woken by the worker that sends, which
/// costs that worker a system call and, on a busy core, a context switch for each event; a
/// writer that sleeps is never woken, and each wake-up writes a batch with one system call.
/// Records reach the file at most this much later (fsync comes later still, see `TICK`).
const GATHER: Duration = Duration::from_millis(10);
/// How often retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// The 508 reason while admission is closed.
pub(super) const CLOSED_REASON: &str = "evidence unavailable";

/// What the writer tells the workers and the metrics. Written by the writer, read by all.
#[derive(Debug, Default)]
pub(crate) struct Status {
    /// Admission is closed everywhere: evidence cannot be written.
    pub(crate) admission_closed: AtomicBool,
    /// Bumped when every allocation must end with `evidence-unavailable`.
    pub(crate) end_epoch: AtomicU64,
    /// Records appended and written.
    pub(crate) records_written: AtomicU64,
    /// Events queued to the writer and not yet taken.
    pub(crate) queue_depth: AtomicU64,
    /// Duration of the last and the longest fsync, microseconds.
    pub(crate) fsync_last_us: AtomicU64,
    pub(crate) fsync_max_us: AtomicU64,
    /// Failed writes, fsyncs, checkpoints and prunes.
    pub(crate) write_errors: AtomicU64,
    /// Wall time of the last checkpoint, Unix milliseconds (0: none yet).
    pub(crate) last_checkpoint_ms: AtomicU64,
    /// Wall time of the last completed fsync, Unix milliseconds (0: none yet).
    pub(crate) last_fsync_ms: AtomicU64,
    /// Bytes of records held in memory, not yet written.
    pub(crate) pending_bytes: AtomicU64,
    /// The chain head written so far, for `/v1/evidence/status`: set after each flush and
    /// checkpoint (a lock once per batch, on the writer thread only).
    pub(crate) head: Mutex<Option<Head>>,
    /// Records up to this seq were deleted by retention in this run (0: not yet).
    pub(crate) pruned_up_to_seq: AtomicU64,
    /// When retention last deleted records in this run, Unix milliseconds (0: not yet).
    pub(crate) last_prune_ms: AtomicU64,
}

/// The newest record written: its seq and the SHA-256 of its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    /// The record's seq.
    pub(crate) seq: u64,
    /// SHA-256 of its line.
    pub(crate) hash: Digest,
}

/// A message to the writer.
pub(super) enum Msg {
    /// A core event from a worker.
    Event(Event),
    /// The policy now in force (at start and after every successful reload).
    Policy(Policy),
    /// Why the relay stops, for `node-stopped` (`shutdown` unless told otherwise).
    StopReason(&'static str),
}

/// The running writer, held by the coordinator.
pub(super) struct Writer {
    tx: SyncSender<Msg>,
    pub(super) status: Arc<Status>,
    /// The public half of the signing key.
    pub(super) public_key: PublicKey,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// Opens the evidence directory (continuing its chain; `node-started` is appended with
    /// the digest of the configuration file) and starts the writer thread.
    ///
    /// # Errors
    ///
    /// Fails when the signing key cannot be read or the directory cannot be opened.
    pub(super) fn start(
        config: &Config,
        ev: &EvidenceConfig,
        policy: &Policy,
    ) -> anyhow::Result<Self> {
        let (mut log, recovery) = match open_log(config, ev, now().wall) {
            Err(e) if e.downcast_ref::<DirectoryInUse>().is_some() => {
                return Err(e.context(
                    "two relays must never share an evidence directory: give each node its own",
                ));
            }
            other => other?,
        };
        if let Some(r) = &recovery.resumed {
            tracing::warn!(target: "eeaturn::evidence", last_seq = r.last_seq, torn = r.torn_tail.is_some(), "evidence chain resumed after an unclean stop");
        }
        let in_force = records::policy_in_force(policy);
        log.append(in_force.clone(), now().wall)
            .context("appending policy-in-force")?;
        let public_key = log.public_key();
        let status = Arc::new(Status::default());
        let (tx, rx) = mpsc::sync_channel(ev.queue_capacity);
        let mut thread = Thread {
            log,
            rx,
            status: status.clone(),
            cfg: ev.clone(),
            live: records::Live::default(),
            failing: false,
            stop_reason: "shutdown",
            ended: false,
            last_time: UNIX_EPOCH,
            unsynced_since: None,
            policy: Some(in_force),
        };
        // Write node-started and policy-in-force now, so a directory that cannot be written
        // closes admission before the first client arrives.
        thread.flush();
        let thread = std::thread::Builder::new()
            .name("eeaturn-evidence".into())
            .spawn(move || thread.run())
            .context("starting the evidence writer thread")?;
        tracing::info!(target: "eeaturn::evidence", directory = %ev.directory.display(), node = %ev.node_id, "writing evidence");
        Ok(Self {
            tx,
            status,
            public_key,
            thread: Some(thread),
        })
    }

    /// The writer's state for the metrics.
    pub(super) fn metrics(&self) -> crate::metrics::EvidenceMetrics {
        let s = &self.status;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let checkpoint = load(&s.last_checkpoint_ms);
        crate::metrics::EvidenceMetrics {
            records_written: load(&s.records_written),
            queue_depth: load(&s.queue_depth),
            fsync_last: Duration::from_micros(load(&s.fsync_last_us)),
            fsync_max: Duration::from_micros(load(&s.fsync_max_us)),
            last_fsync: match load(&s.last_fsync_ms) {
                0 => None,
                ms => Some(UNIX_EPOCH + Duration::from_millis(ms)),
            },
            write_errors: load(&s.write_errors),
            last_checkpoint: (checkpoint > 0)
                .then(|| UNIX_EPOCH + Duration::from_millis(checkpoint)),
            admission_closed: s.admission_closed.load(Ordering::Relaxed),
            pending_bytes: load(&s.pending_bytes),
        }
    }

    /// A sink for one worker.
    pub(super) fn sink(&self) -> Sink {
        Sink {
            tx: self.tx.clone(),
            status: self.status.clone(),
            buffer: VecDeque::new(),
            seen_epoch: 0,
        }
    }

    /// Puts a reloaded policy on record (waits while the queue is full, off the runtime's
    /// threads).
    pub(super) async fn policy(&self, policy: Policy) {
        self.status.queue_depth.fetch_add(1, Ordering::Relaxed);
        let tx = self.tx.clone();
        let _ = tokio::task::spawn_blocking(move || tx.send(Msg::Policy(policy)).is_ok()).await;
    }

    /// Stops the writer after every worker has stopped: it writes what is queued, then
    /// `node-stopped` with `reason` (`shutdown`, `drained`, ...), and closes the segment with
    /// its manifest.
    pub(super) async fn stop(mut self, reason: &'static str) {
        let Some(t) = self.thread.take() else { return };
        self.status.queue_depth.fetch_add(1, Ordering::Relaxed);
        let tx = self.tx.clone();
        let _ = tokio::task::spawn_blocking(move || tx.send(Msg::StopReason(reason)).is_ok()).await;
        drop(self.tx);
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
}

/// Another process (a relay, or `eeaturn evidence prune`) holds the directory's lock.
#[derive(Debug, thiserror::Error)]
#[error(
    "evidence.directory {} is in use by another eeaturn process (it holds {}): a directory has \
     one writer at a time",
    directory.display(),
    directory.join("lock").display()
)]
pub struct DirectoryInUse {
    /// The node evidence directory.
    pub directory: PathBuf,
}

/// Opens the node evidence directory of `ev` as its one writer: reads the signing key, takes
/// the directory's lock, continues the chain and appends `node-started` (with the digest of
/// the configuration file), all buffered until the first flush. The relay's writer thread and
/// `eeaturn evidence prune` open it alike.
///
/// # Errors
///
/// Fails when the signing key or the configuration file cannot be read, with
/// [`DirectoryInUse`] when another process writes the directory, and when the directory
/// cannot be opened.
pub fn open_log(
    config: &Config,
    ev: &EvidenceConfig,
    now: SystemTime,
) -> anyhow::Result<(Log, Recovery)> {
    let signer = Signer::from_pkcs8_file(&ev.signing_key_file).with_context(|| {
        format!(
            "evidence.signing_key_file {}: make a key with `eeaturn evidence keygen`",
            ev.signing_key_file.display()
        )
    })?;
    let config_digest = match &config.source {
        Some(path) => Digest::of(
            &std::fs::read(path)
                .with_context(|| format!("reading {} for its digest", path.display()))?,
        ),
        None => Digest::ZERO,
    };
    let mut opts = Options::new(
        &ev.node_id,
        &ev.site,
        env!("CARGO_PKG_VERSION"),
        config_digest,
    );
    opts.addresses = ev.addresses;
    opts.roll_interval = ev.segment_interval;
    opts.max_segment_bytes = ev.segment_max_size;
    opts.retention = Some(ev.retention);
    match Log::open(&ev.directory, opts, signer, now) {
        Ok(opened) => Ok(opened),
        Err(eeaturn_evidence::Error::Io { source, .. }) if source.kind() == LOCKED => {
            Err(DirectoryInUse {
                directory: ev.directory.clone(),
            }
            .into())
        }
        Err(e) => {
            Err(e).with_context(|| format!("opening evidence.directory {}", ev.directory.display()))
        }
    }
}

/// A worker's end of the queue, with its overflow buffer.
pub(super) struct Sink {
    tx: SyncSender<Msg>,
    pub(super) status: Arc<Status>,
    buffer: VecDeque<Event>,
    seen_epoch: u64,
}

/// What a worker must do after a turn of its sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Verdict {
    /// Refuse new allocations.
    pub(super) close_admission: bool,
    /// End every allocation with `evidence-unavailable`.
    pub(super) end_all: bool,
}

impl Sink {
    /// Queues `ev` behind whatever is buffered; never blocks.
    pub(super) fn push(&mut self, ev: Event) {
        if self.buffer.is_empty() {
            match self.tx.try_send(Msg::Event(ev)) {
                Ok(()) => {
                    self.status.queue_depth.fetch_add(1, Ordering::Relaxed);
                }
                Err(
                    TrySendError::Full(Msg::Event(ev)) | TrySendError::Disconnected(Msg::Event(ev)),
                ) => {
                    self.buffer.push_back(ev);
                }
                Err(
                    TrySendError::Full(Msg::Policy(_) | Msg::StopReason(_))
                    | TrySendError::Disconnected(Msg::Policy(_) | Msg::StopReason(_)),
                ) => {}
            }
        } else {
            self.buffer.push_back(ev);
        }
    }

    /// Retries the buffered events (never blocks) and says what the worker must do.
    pub(super) fn turn(&mut self) -> Verdict {
        while let Some(ev) = self.buffer.pop_front() {
            match self.tx.try_send(Msg::Event(ev)) {
                Ok(()) => {
                    self.status.queue_depth.fetch_add(1, Ordering::Relaxed);
                }
                Err(
                    TrySendError::Full(Msg::Event(ev)) | TrySendError::Disconnected(Msg::Event(ev)),
                ) => {
                    self.buffer.push_front(ev);
                    break;
                }
                Err(
                    TrySendError::Full(Msg::Policy(_) | Msg::StopReason(_))
                    | TrySendError::Disconnected(Msg::Policy(_) | Msg::StopReason(_)),
                ) => {}
            }
        }
        let epoch = self.status.end_epoch.load(Ordering::Acquire);
        let ended = epoch != self.seen_epoch;
        self.seen_epoch = epoch;
        Verdict {
            close_admission: self.status.admission_closed.load(Ordering::Acquire)
                || self.buffer.len() >= WORKER_BUFFER,
            end_all: ended || self.buffer.len() >= 2 * WORKER_BUFFER,
        }
    }

    /// Hands every buffered event to the writer, waiting while the queue is full (at
    /// shutdown, after the worker's last allocation ended).
    pub(super) fn finish(&mut self) {
        for ev in self.buffer.drain(..) {
            self.status.queue_depth.fetch_add(1, Ordering::Relaxed);
            if self.tx.send(Msg::Event(ev)).is_err() {
                break;
            }
        }
    }
}

/// The writer thread's state.
struct Thread {
    log: Log,
    rx: Receiver<Msg>,
    status: Arc<Status>,
    cfg: EvidenceConfig,
    live: records::Live,
    /// Writing failed and has not worked since.
    failing: bool,
    /// The `reason` of `node-stopped`.
    stop_reason: &'static str,
    /// Every allocation was asked to end during this failure.
    ended: bool,
    /// The time of the last record: records never go back in time (events of different
    /// workers may arrive a little out of order).
    last_time: SystemTime,
    /// When records were first written without fsync (interval mode).
    unsynced_since: Option<Instant>,
    /// The last `policy-in-force` written: stated again after a prune, so that retention
    /// never deletes the record of the policy and databases still in force.
    policy: Option<Body>,
}

impl Thread {
    fn run(mut self) {
        let start = now();
        let mut next_checkpoint = start.mono + self.cfg.checkpoint_interval;
        let mut next_prune = start.mono + PRUNE_EVERY;
        self.checkpoint();
        // Prune at start as well as hourly: a relay restarted more often than hourly (a crash
        // loop, frequent rolling upgrades) must still delete on time.
        self.prune();
        // Idle, the writer waits on the queue (the first event wakes it); while events keep
        // coming it gathers them by sleeping (GATHER), so that senders need not wake it.
        let mut gathering = false;
        loop {
            let first = if gathering {
                std::thread::sleep(GATHER);
                match self.rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => break,
                }
            } else {
                match self.rx.recv_timeout(TICK) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            let mut n = 0;
            let mut next = first;
            while let Some(m) = next.take() {
                self.status.queue_depth.fetch_sub(1, Ordering::Relaxed);
                self.handle(m);
                n += 1;
                if n >= BATCH {
                    break;
                }
                next = self.rx.try_recv().ok();
            }
            gathering = n > 0;
            if n > 0 || self.failing {
                self.flush();
            }
            let t = now();
            if self.cfg.fsync == Fsync::Interval
                && self
                    .unsynced_since
                    .is_some_and(|s| t.mono.saturating_duration_since(s) >= TICK)
            {
                self.sync();
            }
            if t.mono >= next_checkpoint {
                next_checkpoint = t.mono + self.cfg.checkpoint_interval;
                self.checkpoint();
            }
            if !self.failing {
                let at = self.time(t.wall);
                if let Err(e) = self.log.roll_if_due(at) {
                    self.failed(&e);
                }
            }
            if t.mono >= next_prune && !self.failing {
                next_prune = t.mono + PRUNE_EVERY;
                self.prune();
            }
        }
        self.close();
    }

    fn handle(&mut self, msg: Msg) {
        let appended = match msg {
            Msg::Event(ev) => match records::record(&ev, &mut self.live, self.log.pseudonyms()) {
                Ok(Some((body, at))) => self.append(body, at),
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            },
            Msg::Policy(p) => {
                let body = records::policy_in_force(&p);
                self.policy = Some(body.clone());
                self.append(body, now().wall)
            }
            Msg::StopReason(reason) => {
                self.stop_reason = reason;
                Ok(())
            }
        };
        if let Err(e) = appended {
            self.failed(&e);
        }
    }

    fn append(&mut self, body: Body, at: SystemTime) -> Result<(), eeaturn_evidence::Error> {
        let at = self.time(at);
        self.log.append(body, at)?;
        self.status.records_written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// `at`, or the last record's time if that is later.
    fn time(&mut self, at: SystemTime) -> SystemTime {
        self.last_time = self.last_time.max(at);
        self.last_time
    }

    /// Writes what is buffered (fsync in `always` mode); on failure closes admission, and
    /// beyond the memory bound asks every worker to end its allocations.
    fn flush(&mut self) {
        let always = self.cfg.fsync == Fsync::Always;
        let had = self.log.pending_bytes() > 0;
        let started = now().mono;
        match self.log.flush(always) {
            Ok(()) => {
                self.publish_head();
                if always && had {
                    self.fsync_took(started);
                } else if had && self.unsynced_since.is_none() {
                    self.unsynced_since = Some(now().mono);
                }
                if self.failing {
                    self.failing = false;
                    self.ended = false;
                    self.status.admission_closed.store(false, Ordering::Release);
                    tracing::info!(target: "eeaturn::evidence", "evidence is written again; admission reopened");
                }
            }
            Err(e) => self.failed(&e),
        }
        self.status
            .pending_bytes
            .store(self.log.pending_bytes() as u64, Ordering::Relaxed);
    }

    fn sync(&mut self) {
        let started = now().mono;
        match self.log.flush(true) {
            Ok(()) => {
                self.fsync_took(started);
                self.unsynced_since = None;
            }
            Err(e) => self.failed(&e),
        }
    }

    fn fsync_took(&self, started: Instant) {
        let us = u64::try_from(now().mono.saturating_duration_since(started).as_micros())
            .unwrap_or(u64::MAX);
        self.status.fsync_last_us.store(us, Ordering::Relaxed);
        self.status.fsync_max_us.fetch_max(us, Ordering::Relaxed);
        self.status
            .last_fsync_ms
            .store(unix_ms(now().wall), Ordering::Relaxed);
    }

    fn checkpoint(&mut self) {
        if self.failing {
            return;
        }
        let wall = now().wall;
        let at = self.time(wall);
        match self.log.checkpoint(at) {
            Ok(()) => {
                self.publish_head();
                self.unsynced_since = None;
                self.status
                    .last_checkpoint_ms
                    .store(unix_ms(wall), Ordering::Relaxed);
            }
            Err(e) => self.failed(&e),
        }
    }

    fn prune(&mut self) {
        let at = self.time(now().wall);
        match self.log.prune(self.cfg.retention, at) {
            Ok(out) if out.record_seq.is_some() => {
                if let Some(seq) = out.up_to_seq {
                    self.status.pruned_up_to_seq.store(seq, Ordering::Relaxed);
                    self.status
                        .last_prune_ms
                        .store(unix_ms(at), Ordering::Relaxed);
                }
                tracing::info!(target: "eeaturn::evidence", segments = out.segments.len(), key_days = out.key_days.len(), "evidence pruned by retention");
                // The pruned segments may have held the only statement of the policy in
                // force: state it again.
                if let Some(body) = self.policy.clone()
                    && let Err(e) = self.append(body, at)
                {
                    self.failed(&e);
                }
            }
            Ok(_) => {}
            Err(e) => self.failed(&e),
        }
    }

    /// Publishes the chain head once nothing is buffered (what is on disk).
    fn publish_head(&self) {
        if self.log.pending_records() > 0 {
            return;
        }
        let Some(seq) = self.log.next_seq().checked_sub(1).filter(|s| *s > 0) else {
            return;
        };
        let head = Head {
            seq,
            hash: self.log.head(),
        };
        *self
            .status
            .head
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(head);
    }

    /// Writing failed: close admission everywhere, and beyond the memory bound end every
    /// allocation (once per failure).
    fn failed(&mut self, e: &eeaturn_evidence::Error) {
        self.status.write_errors.fetch_add(1, Ordering::Relaxed);
        if !self.failing {
            self.failing = true;
            self.status.admission_closed.store(true, Ordering::Release);
            tracing::error!(target: "eeaturn::evidence", error = %e, "evidence cannot be written: admission closed (508) until it can");
        }
        let pending = self.log.pending_bytes();
        if pending > self.cfg.memory_limit && !self.ended {
            self.ended = true;
            self.status.end_epoch.fetch_add(1, Ordering::AcqRel);
            tracing::error!(
                target: "eeaturn::evidence",
                pending_bytes = pending,
                memory_limit = self.cfg.memory_limit,
                allocations = self.live.len(),
                "evidence held in memory exceeds evidence.memory_limit: ending every allocation (evidence-unavailable)"
            );
        }
    }

    /// Clean shutdown: `node-stopped`, flush with fsync, manifest.
    fn close(mut self) {
        let at = self.time(now().wall);
        match self.log.close(at, self.stop_reason) {
            Ok(()) => {
                tracing::info!(target: "eeaturn::evidence", "evidence closed");
            }
            Err(e) => {
                self.status.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    target: "eeaturn::evidence",
                    error = %e,
                    pending_records = self.log.pending_records(),
                    "evidence could not be closed: records held in memory are lost"
                );
            }
        }
    }
}

/// `t` as Unix milliseconds (0 before 1970).
fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
