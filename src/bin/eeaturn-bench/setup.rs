//! Allocation-path measurements: the setup rate (allocations per second, each with its 401
//! round and the authenticated Allocate) and the server's memory per idle allocation.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::time::Instant;

use crate::hist::Histogram;
use crate::load::release_all;
use crate::procstat::ProcReader;
use crate::turn::{Dialer, Session};
use crate::{Clock, bounded};

/// Time the server gets to settle before its memory is read.
const SETTLE: Duration = Duration::from_secs(1);

/// The result of a setup-rate run.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct SetupReport {
    pub(crate) allocations: usize,
    pub(crate) concurrency: usize,
    pub(crate) ok: usize,
    pub(crate) failed: usize,
    pub(crate) first_error: Option<String>,
    pub(crate) secs: f64,
    pub(crate) allocs_per_s: f64,
    /// Time from the first request of one allocation to its success response.
    pub(crate) setup_p50_us: f64,
    pub(crate) setup_p99_us: f64,
    pub(crate) server_cpu_s: Option<f64>,
    pub(crate) server_us_per_alloc: Option<f64>,
    /// CPU of this tool while allocating, percent of one core: near 100 means the tool may
    /// have been the limit.
    pub(crate) tool_cpu_pct: f64,
    pub(crate) release_secs: f64,
    pub(crate) released: usize,
}

/// Makes `allocations` allocations, `concurrency` at a time, each on its own connection and
/// with its own user id; then releases them all.
///
/// # Errors
///
/// Fails when the server cannot be sampled; failed allocations are counted, not fatal.
pub(crate) async fn run_setup(
    dialer: &Dialer,
    allocations: usize,
    concurrency: usize,
    server_pid: Option<u32>,
) -> anyhow::Result<SetupReport> {
    let proc = ProcReader::new();
    let pid = server_pid.map(|p| p.to_string());
    let cpu0 = pid.as_deref().map(|p| proc.cpu_s(p)).transpose()?;
    let tool0 = proc.cpu_s("self")?;
    let clock = Clock::new();
    let t0 = Instant::now();
    let d = dialer.clone();
    let made = bounded(allocations, concurrency, move |i| {
        let d = d.clone();
        async move {
            let start = clock.nanos();
            let s = Session::open(&d, &format!("setup{i}")).await?;
            Ok((s, clock.nanos() - start))
        }
    })
    .await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = pid.as_deref().map(|p| proc.cpu_s(p)).transpose()?;
    let tool1 = proc.cpu_s("self")?;

    let mut hist = Histogram::new();
    let mut sessions = Vec::new();
    let mut first_error = None;
    for r in made {
        match r {
            Ok((s, ns)) => {
                hist.record(ns);
                sessions.push(s);
            }
            Err(e) => {
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    let ok = sessions.len();
    let t1 = Instant::now();
    let released = release_all(sessions, concurrency).await;
    let server_cpu_s = cpu0.zip(cpu1).map(|(a, b)| b - a);
    Ok(SetupReport {
        allocations,
        concurrency,
        ok,
        failed: allocations - ok,
        first_error,
        secs,
        allocs_per_s: ok as f64 / secs,
        setup_p50_us: hist.quantile(0.5) as f64 / 1000.0,
        setup_p99_us: hist.quantile(0.99) as f64 / 1000.0,
        server_cpu_s,
        server_us_per_alloc: server_cpu_s.filter(|_| ok > 0).map(|c| c * 1e6 / ok as f64),
        tool_cpu_pct: 100.0 * (tool1 - tool0) / secs,
        release_secs: t1.elapsed().as_secs_f64(),
        released,
    })
}

/// The result of a memory run.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct MemoryReport {
    pub(crate) allocations: usize,
    pub(crate) ok: usize,
    pub(crate) rss_before_kib: u64,
    pub(crate) rss_loaded_kib: u64,
    pub(crate) rss_released_kib: u64,
    pub(crate) smaps_rss_before_kib: u64,
    pub(crate) smaps_rss_loaded_kib: u64,
    /// `(VmRSS loaded - VmRSS before) / ok`, bytes.
    pub(crate) bytes_per_allocation: f64,
    /// The same from `smaps_rollup`.
    pub(crate) smaps_bytes_per_allocation: f64,
}

/// Makes `allocations` allocations, each with one permission and one channel (a ChannelBind
/// to `peer`), and reads the server's RSS before, with them, and after releasing them.
///
/// # Errors
///
/// Fails when any allocation fails (the figure would be wrong) or the server cannot be read.
pub(crate) async fn run_memory(
    dialer: &Dialer,
    allocations: usize,
    concurrency: usize,
    peer: SocketAddr,
    server_pid: u32,
) -> anyhow::Result<MemoryReport> {
    let proc = ProcReader::new();
    let pid = server_pid.to_string();
    let before = proc.sample(&pid)?;
    let d = dialer.clone();
    let made = bounded(allocations, concurrency, move |i| {
        let d = d.clone();
        async move {
            let mut s = Session::open(&d, &format!("mem{i}")).await?;
            s.channel_bind(0x4000, peer).await?;
            Ok(s)
        }
    })
    .await;
    let mut sessions = Vec::with_capacity(allocations);
    let mut errors = 0;
    let mut first_error = None;
    for r in made {
        match r {
            Ok(s) => sessions.push(s),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    tokio::time::sleep(SETTLE).await;
    let loaded = proc.sample(&pid)?;
    let ok = sessions.len();
    release_all(sessions, concurrency).await;
    tokio::time::sleep(SETTLE).await;
    let released = proc.sample(&pid)?;
    if let Some(e) = first_error {
        return Err(e).context(format!("{errors} of {allocations} allocations failed"));
    }
    if ok == 0 {
        bail!("no allocation");
    }
    let per = |a: u64, b: u64| (b as f64 - a as f64) * 1024.0 / ok as f64;
    Ok(MemoryReport {
        allocations,
        ok,
        rss_before_kib: before.vm_rss_kib,
        rss_loaded_kib: loaded.vm_rss_kib,
        rss_released_kib: released.vm_rss_kib,
        smaps_rss_before_kib: before.smaps_rss_kib,
        smaps_rss_loaded_kib: loaded.smaps_rss_kib,
        bytes_per_allocation: per(before.vm_rss_kib, loaded.vm_rss_kib),
        smaps_bytes_per_allocation: per(before.smaps_rss_kib, loaded.smaps_rss_kib),
    })
}
