//! Reads a process's CPU time and memory from `/proc` (Linux only).
//!
//! CPU time is `utime + stime` of `/proc/PID/stat`, which counts every thread of the process,
//! in clock ticks. The tick rate is read from the auxiliary vector (`AT_CLKTCK` in
//! `/proc/self/auxv`), which is what `sysconf(_SC_CLK_TCK)` returns without calling libc
//! (`unsafe` is forbidden in this crate); when that fails we assume 100 Hz, the value on
//! every Linux x86_64 and arm64 kernel (`USER_HZ`). Memory is `VmRSS` of `/proc/PID/status`
//! and `Rss` of `/proc/PID/smaps_rollup`, both in KiB.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Context as _, bail};

/// `AT_CLKTCK` in the auxiliary vector. See `getauxval(3)`.
const AT_CLKTCK: u64 = 17;
/// `USER_HZ` on Linux x86_64 and arm64, used when the auxiliary vector cannot be read.
const DEFAULT_CLK_TCK: u64 = 100;

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Sample {
    /// User plus system CPU time, in seconds.
    pub(crate) cpu_s: f64,
    /// `VmRSS`, KiB.
    pub(crate) vm_rss_kib: u64,
    /// `Rss` of `smaps_rollup`, KiB (0 when the file is missing).
    pub(crate) smaps_rss_kib: u64,
}

/// Reads CPU time and memory of processes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcReader {
    ticks_per_s: u64,
}

impl ProcReader {
    /// Creates a reader, learning the clock tick rate.
    pub(crate) fn new() -> Self {
        Self {
            ticks_per_s: clk_tck().unwrap_or(DEFAULT_CLK_TCK),
        }
    }

    /// Returns the clock tick rate in use.
    pub(crate) fn ticks_per_s(&self) -> u64 {
        self.ticks_per_s
    }

    /// Reads CPU time and memory of `pid` ("self" for this process).
    ///
    /// # Errors
    ///
    /// Fails when the process does not exist or its files cannot be parsed.
    pub(crate) fn sample(&self, pid: &str) -> anyhow::Result<Sample> {
        let ticks = cpu_ticks(pid)?;
        Ok(Sample {
            cpu_s: ticks as f64 / self.ticks_per_s as f64,
            vm_rss_kib: vm_rss_kib(pid)?,
            smaps_rss_kib: smaps_rss_kib(pid).unwrap_or(0),
        })
    }

    /// Reads only the CPU time of `pid`, in seconds.
    ///
    /// # Errors
    ///
    /// Fails when the process does not exist or its stat file cannot be parsed.
    pub(crate) fn cpu_s(&self, pid: &str) -> anyhow::Result<f64> {
        Ok(cpu_ticks(pid)? as f64 / self.ticks_per_s as f64)
    }
}

/// Returns the busy and total clock ticks of CPU `cpu` from `/proc/stat`. Busy is everything
/// but idle and iowait: user, nice, system, irq, softirq, steal. This includes the kernel's
/// softirq work (such as loopback delivery) that is charged to no process.
///
/// # Errors
///
/// Fails when the line is missing or malformed.
pub(crate) fn core_ticks(cpu: usize) -> anyhow::Result<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .with_context(|| format!("/proc/stat has no {name} line"))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    if v.len() < 8 {
        bail!("/proc/stat: short {name} line");
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v[4];
    Ok((total - idle, total))
}

/// Returns the CPU this process is pinned to, when its affinity is exactly one CPU.
pub(crate) fn pinned_cpu() -> Option<usize> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    list.parse().ok()
}

/// Returns the receive-buffer drops summed over the UDP sockets whose local address
/// `matches`, from `/proc/net/udp` and `/proc/net/udp6` (this network namespace). A datagram
/// counted here arrived at a full socket buffer and was discarded by the kernel.
///
/// # Errors
///
/// Fails when `/proc/net/udp` cannot be read.
pub(crate) fn udp_drops(matches: impl Fn(SocketAddr) -> bool) -> anyhow::Result<u64> {
    let mut total = 0;
    for (path, v6) in [("/proc/net/udp", false), ("/proc/net/udp6", true)] {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(_) if v6 => continue,
            Err(e) => return Err(e).context(format!("reading {path}")),
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(drops)) = (f.get(1), f.get(12)) else {
                continue;
            };
            if let (Some(addr), Ok(d)) = (parse_proc_addr(local), drops.parse::<u64>())
                && matches(addr)
            {
                total += d;
            }
        }
    }
    Ok(total)
}

/// Parses `0100007F:4E20` (IPv4) or 32 hex digits and a port (IPv6): the address as the
/// kernel prints it, 32-bit words in host byte order, the port in hex.
fn parse_proc_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Returns `utime + stime` of `/proc/PID/stat` in clock ticks.
fn cpu_ticks(pid: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may contain spaces: split after the
    // last ')'. What follows starts with field 3 (state); utime and stime are fields 14, 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("{path}: no ')'"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("{path}: field {n} missing"))
    };
    Ok(field(14)? + field(15)?)
}

fn vm_rss_kib(pid: &str) -> anyhow::Result<u64> {
    kib_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

fn smaps_rss_kib(pid: &str) -> anyhow::Result<u64> {
    kib_field(&format!("/proc/{pid}/smaps_rollup"), "Rss:")
}

/// Returns the number of a `Name:   1234 kB` line.
fn kib_field(path: &str, name: &str) -> anyhow::Result<u64> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(name) {
            let mut words = rest.split_whitespace();
            let value = words.next().and_then(|v| v.parse().ok());
            return match (value, words.next()) {
                (Some(v), Some("kB")) => Ok(v),
                _ => bail!("{path}: cannot parse {name} {rest}"),
            };
        }
    }
    bail!("{path}: no {name} line")
}

/// Reads `AT_CLKTCK` from this process's auxiliary vector: pairs of native-endian u64
/// (type, value), ended by type 0.
fn clk_tck() -> Option<u64> {
    let auxv = fs::read("/proc/self/auxv").ok()?;
    let word = |c: &[u8]| c.try_into().ok().map(u64::from_ne_bytes);
    for pair in auxv.chunks_exact(16) {
        let (ty, value) = (word(&pair[..8])?, word(&pair[8..])?);
        match ty {
            0 => return None,
            AT_CLKTCK if value > 0 => return Some(value),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_itself() {
        let r = ProcReader::new();
        assert!(r.ticks_per_s() > 0);
        let s = r.sample("self").unwrap();
        assert!(s.vm_rss_kib > 0);
    }

    #[test]
    fn parses_proc_net_udp_addresses() {
        assert_eq!(
            parse_proc_addr("0100007F:4E20"),
            Some("127.0.0.1:20000".parse().unwrap())
        );
        assert_eq!(
            parse_proc_addr("00000000000000000000000001000000:0D96"),
            Some("[::1]:3478".parse().unwrap())
        );
    }
}
