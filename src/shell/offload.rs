//! The kernel fast path's user-space side: loads the committed XDP program
//! (`bpf/relay.bpf.o`, built from `bpf/relay.bpf.c`), attaches it to the interfaces that carry
//! the relay's IPv4 addresses (loopback interfaces in generic mode with the program that sends
//! back out of `lo`; others in native mode where the driver has it, with the program that
//! redirects where the kernel's route lookup says), and keeps its maps as the core's
//! [`Command::InstallKernelPath`](crate::relay::Command::InstallKernelPath) and
//! `RemoveKernelPath` say. It decides nothing: which paths may be in the kernel is the core's
//! call (`relay::kernel`). See `docs/design/kernel-fast-path.md`.
//!
//! Keys and values are byte arrays in the layout `bpf/relay.bpf.c` documents, so no `unsafe`
//! is needed here (aya implements `Pod` for `[u8; N]`). The maps are shared by the workers
//! behind one lock, taken when a path is installed or removed and twice a second to read the
//! counters, never per packet.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use aya::Ebpf;
use aya::maps::{Array, DevMapHash, HashMap, MapData};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{Xdp, XdpMode};

use crate::relay::{KernelPath, TrafficCounters};

/// Paths the maps hold at most (`MAX_PATHS` in `bpf/relay.bpf.c`).
const MAX_PATHS: u32 = 65_536;
/// The program for loopback interfaces (`XDP_TX` back into `lo`).
const PROGRAM_LO: &str = "eeaturn_lo";
/// The program for every other interface (route lookup and redirect).
const PROGRAM_ROUTED: &str = "eeaturn_routed";
/// The sysctl that lets the routed program's route lookup answer (see `bpf/relay.bpf.c`).
const LO_FORWARDING: &str = "/proc/sys/net/ipv4/conf/lo/forwarding";

/// `to_peer`: client, listening address, channel, two zero bytes → relay, peer, slot.
type ToPeer = HashMap<MapData, [u8; 16], [u8; 16]>;
/// `to_client`: relay, peer → client, listening address, channel, two zero bytes, slot.
type ToClient = HashMap<MapData, [u8; 12], [u8; 20]>;
/// `counters`: four `u64` in host order per slot.
type Counters = Array<MapData, [u8; 32]>;

/// Why the kernel fast path is not available. Each variant says the cause in its message and
/// the fix in [`OffloadError::fix`], so that one log line (or the refusal to start under
/// `"required"`) tells the operator both.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OffloadError {
    /// The process lacks the capabilities to load and attach the program.
    #[error("the relay runs without {missing} (loading and attaching an XDP program needs them)")]
    Privileges {
        /// The missing capabilities, e.g. `CAP_BPF CAP_NET_ADMIN`.
        missing: String,
    },
    /// The network interfaces could not be listed (netlink).
    #[error("cannot list the network interfaces: {0}")]
    Interfaces(String),
    /// No interface carries the relay's IPv4 address.
    #[error("no network interface holds relay address {0}")]
    NoInterface(IpAddr),
    /// A relay address is on an interface other than loopback, where the program looks up
    /// routes, and the kernel answers those lookups only with forwarding on for `lo`.
    #[error(
        "relay address {address} is on {interface}, where the fast path looks up each \
         packet's route in the kernel, and the kernel answers such lookups only with \
         net.ipv4.conf.lo.forwarding = 1 (it is {value})"
    )]
    Forwarding {
        /// The address.
        address: IpAddr,
        /// Its interface.
        interface: String,
        /// What the sysctl says now.
        value: String,
    },
    /// The object did not load (no BPF in the kernel, verifier refusal).
    #[error("cannot load the XDP program: {0}")]
    Load(String),
    /// The program did not attach.
    #[error(
        "cannot attach the XDP program to {interface} (only one can be attached in generic \
         mode: is another relay or XDP program on it? `ip link show {interface}`): {reason}"
    )]
    Attach {
        /// The interface.
        interface: String,
        /// What the kernel said.
        reason: String,
    },
    /// Offload needs an IPv4 relay address.
    #[error("the kernel fast path relays IPv4 only and relay.addresses has no IPv4 address")]
    NoIpv4,
}

impl OffloadError {
    /// What the operator can do about it, in a few words.
    pub(crate) fn fix(&self) -> &'static str {
        match self {
            Self::Privileges { .. } => {
                "run as root or grant CAP_BPF and CAP_NET_ADMIN (systemd: the offload drop-in in \
                 docs/operations.md), or set relay.offload = \"off\""
            }
            Self::Interfaces(_) => {
                "allow netlink sockets (systemd: RestrictAddressFamilies=AF_NETLINK, in the \
                 offload drop-in of docs/operations.md), or set relay.offload = \"off\""
            }
            Self::NoInterface(_) | Self::NoIpv4 => {
                "give relay.addresses an IPv4 address of this host, or set relay.offload = \"off\""
            }
            Self::Forwarding { .. } => {
                "sysctl -w net.ipv4.conf.lo.forwarding=1 and keep it in /etc/sysctl.d (it forwards \
                 nothing: lo receives only this host's own packets; see docs/operations.md), or \
                 set relay.offload = \"off\""
            }
            Self::Load(_) => {
                "a kernel with BPF and BTF (Linux 5.18 or later: bpf_xdp_get_buff_len) and \
                 CAP_BPF + CAP_NET_ADMIN, or set relay.offload = \"off\""
            }
            Self::Attach { .. } => {
                "detach the other XDP program (`ip link set dev IFACE xdp off`) or stop the other \
                 relay, or set relay.offload = \"off\" on this one"
            }
        }
    }
}

/// The loaded program and its maps, shared by the workers.
pub(crate) struct KernelMaps {
    inner: Mutex<Inner>,
    /// The interfaces the program is attached to, with the mode (for the log).
    interfaces: Vec<String>,
}

struct Inner {
    /// Keeps the program and its attachments alive; they go when the relay does.
    _ebpf: Ebpf,
    to_peer: ToPeer,
    to_client: ToClient,
    counters: Counters,
    /// Counter slots given back, reused first.
    free: Vec<u32>,
    /// The next slot never used.
    next: u32,
}

impl KernelMaps {
    /// Loads the program and attaches it to every interface holding one of `addrs` (the
    /// relay's and the listeners' IPv4 addresses): `eeaturn_lo` in generic mode to loopback
    /// interfaces, `eeaturn_routed` to the others, in native mode where every one of them
    /// takes it and otherwise in generic mode on all of them (a native program could not
    /// redirect to an interface without native XDP).
    ///
    /// The checks that need no BPF come first (capabilities, interfaces, the forwarding
    /// sysctl), so that a relay that cannot offload finds out without touching the kernel's
    /// BPF subsystem.
    ///
    /// # Errors
    ///
    /// Returns why the kernel fast path is not available.
    pub(crate) fn load(addrs: &[IpAddr]) -> Result<Arc<Self>, OffloadError> {
        check_capabilities()?;
        let interfaces = interfaces_of(addrs)?;
        if let Some(routed) = interfaces.iter().find(|i| !i.loopback) {
            let value = std::fs::read_to_string(LO_FORWARDING)
                .map_or_else(|e| format!("unreadable: {e}"), |v| v.trim().to_owned());
            if value != "1" {
                return Err(OffloadError::Forwarding {
                    address: routed.address,
                    interface: routed.name.clone(),
                    value,
                });
            }
        }
        let mut ebpf = Ebpf::load(aya::include_bytes_aligned!("../../bpf/relay.bpf.o"))
            .map_err(|e| OffloadError::Load(with_sources(&e)))?;
        let mut attached = Vec::new();
        let lo: Vec<&Interface> = interfaces.iter().filter(|i| i.loopback).collect();
        let routed: Vec<&Interface> = interfaces.iter().filter(|i| !i.loopback).collect();
        if !lo.is_empty() {
            let program = program(&mut ebpf, PROGRAM_LO)?;
            for interface in lo {
                attach(program, &interface.name, XdpMode::Skb)?;
                attached.push(format!("{} (generic)", interface.name));
            }
        }
        if !routed.is_empty() {
            let program = program(&mut ebpf, PROGRAM_ROUTED)?;
            let mut links = Vec::new();
            let mut mode = XdpMode::Driver;
            for interface in &routed {
                match attach(program, &interface.name, XdpMode::Driver) {
                    Ok(link) => links.push(link),
                    Err(e) => {
                        tracing::debug!(target: "eeaturn::offload", interface = %interface.name, error = %e, "no native XDP: generic mode on every routed interface");
                        mode = XdpMode::Skb;
                        break;
                    }
                }
            }
            if mode == XdpMode::Skb {
                for link in links {
                    let _ = program.detach(link);
                }
                for interface in &routed {
                    attach(program, &interface.name, XdpMode::Skb)?;
                }
            }
            let kind = if mode == XdpMode::Driver {
                "native"
            } else {
                "generic"
            };
            attached.extend(routed.iter().map(|i| format!("{} ({kind})", i.name)));
            let mut egress = take(&mut ebpf, "egress", DevMapHash::try_from)?;
            for interface in &routed {
                egress
                    .insert(interface.index, interface.index, None, 0)
                    .map_err(|e| OffloadError::Load(format!("map egress: {e}")))?;
            }
            // Filled once; the loaded program holds the map (and its entries) from here on,
            // so this handle is not kept.
            drop(egress);
        }
        let to_peer = take(&mut ebpf, "to_peer", ToPeer::try_from)?;
        let to_client = take(&mut ebpf, "to_client", ToClient::try_from)?;
        let counters = take(&mut ebpf, "counters", Counters::try_from)?;
        Ok(Arc::new(Self {
            inner: Mutex::new(Inner {
                _ebpf: ebpf,
                to_peer,
                to_client,
                counters,
                free: Vec::new(),
                next: 0,
            }),
            interfaces: attached,
        }))
    }

    /// The interfaces the program is attached to, each with its mode.
    pub(crate) fn interfaces(&self) -> &[String] {
        &self.interfaces
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One worker's paths in the kernel, with the counters last read of each.
pub(crate) struct WorkerPaths {
    maps: Arc<KernelMaps>,
    paths: BTreeMap<KernelPath, (u32, TrafficCounters)>,
}

impl WorkerPaths {
    pub(crate) fn new(maps: Arc<KernelMaps>) -> Self {
        Self {
            maps,
            paths: BTreeMap::new(),
        }
    }

    /// Puts `path` into the kernel. When it does not fit (the maps are full) it stays in
    /// user space, which relays it as before.
    pub(crate) fn install(&mut self, path: KernelPath) {
        let Some(keys) = Keys::of(&path) else {
            return;
        };
        let mut inner = self.maps.lock();
        let Some(slot) = inner.free.pop().or_else(|| {
            let n = inner.next;
            (n < MAX_PATHS).then(|| {
                inner.next += 1;
                n
            })
        }) else {
            tracing::debug!(target: "eeaturn::offload", "kernel path maps full: relayed in user space");
            return;
        };
        let result = inner
            .counters
            .set(slot, [0u8; 32], 0)
            .and_then(|()| {
                inner
                    .to_client
                    .insert(keys.client, keys.client_value(slot), 0)
            })
            .and_then(|()| inner.to_peer.insert(keys.peer, keys.peer_value(slot), 0));
        if let Err(e) = result {
            let _ = inner.to_client.remove(&keys.client);
            let _ = inner.to_peer.remove(&keys.peer);
            inner.free.push(slot);
            tracing::warn!(target: "eeaturn::offload", error = %e, "cannot install a kernel path: relayed in user space");
            return;
        }
        drop(inner);
        self.paths.insert(path, (slot, TrafficCounters::default()));
    }

    /// Takes `path` out of the kernel and returns what it relayed since the last read.
    pub(crate) fn remove(&mut self, path: &KernelPath) -> TrafficCounters {
        let Some((slot, last)) = self.paths.remove(path) else {
            return TrafficCounters::default();
        };
        let Some(keys) = Keys::of(path) else {
            return TrafficCounters::default();
        };
        let mut inner = self.maps.lock();
        // The entries first, so that no packet is counted after the last read but one a CPU
        // is relaying at this instant (see the design note).
        let _ = inner.to_peer.remove(&keys.peer);
        let _ = inner.to_client.remove(&keys.client);
        let now = read(&inner.counters, slot);
        inner.free.push(slot);
        since(&now, &last)
    }

    /// Reads every path's counters and returns what each relayed since the last read.
    pub(crate) fn fold(&mut self, out: &mut Vec<(KernelPath, TrafficCounters)>) {
        if self.paths.is_empty() {
            return;
        }
        let inner = self.maps.lock();
        for (path, (slot, last)) in &mut self.paths {
            let now = read(&inner.counters, *slot);
            let delta = since(&now, last);
            if delta != TrafficCounters::default() {
                *last = now;
                out.push((*path, delta));
            }
        }
    }
}

/// The two map keys of a path (IPv4 only).
struct Keys {
    peer: [u8; 16],
    client: [u8; 12],
    client_addr: [u8; 6],
    server_addr: [u8; 6],
    relay_addr: [u8; 6],
    peer_addr: [u8; 6],
    channel: [u8; 2],
}

impl Keys {
    fn of(path: &KernelPath) -> Option<Self> {
        let client_addr = v4(path.client.client)?;
        let server_addr = v4(path.client.server)?;
        let relay_addr = v4(path.relay)?;
        let peer_addr = v4(path.peer)?;
        let channel = path.channel.get().to_be_bytes();
        let mut peer = [0u8; 16];
        peer[..6].copy_from_slice(&client_addr);
        peer[6..12].copy_from_slice(&server_addr);
        peer[12..14].copy_from_slice(&channel);
        let mut client = [0u8; 12];
        client[..6].copy_from_slice(&relay_addr);
        client[6..].copy_from_slice(&peer_addr);
        Some(Self {
            peer,
            client,
            client_addr,
            server_addr,
            relay_addr,
            peer_addr,
            channel,
        })
    }

    /// The `to_peer` value: relay, peer, slot.
    fn peer_value(&self, slot: u32) -> [u8; 16] {
        let mut v = [0u8; 16];
        v[..6].copy_from_slice(&self.relay_addr);
        v[6..12].copy_from_slice(&self.peer_addr);
        v[12..].copy_from_slice(&slot.to_ne_bytes());
        v
    }

    /// The `to_client` value: client, listening address, channel, zero, slot.
    fn client_value(&self, slot: u32) -> [u8; 20] {
        let mut v = [0u8; 20];
        v[..6].copy_from_slice(&self.client_addr);
        v[6..12].copy_from_slice(&self.server_addr);
        v[12..14].copy_from_slice(&self.channel);
        v[16..].copy_from_slice(&slot.to_ne_bytes());
        v
    }
}

/// An IPv4 address and port as the program reads them: four address bytes, the port big-endian.
fn v4(addr: SocketAddr) -> Option<[u8; 6]> {
    let SocketAddr::V4(a) = addr else {
        return None;
    };
    let mut out = [0u8; 6];
    out[..4].copy_from_slice(&a.ip().octets());
    out[4..].copy_from_slice(&a.port().to_be_bytes());
    Some(out)
}

fn read(counters: &Counters, slot: u32) -> TrafficCounters {
    let Ok(v) = counters.get(&slot, 0) else {
        return TrafficCounters::default();
    };
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&v[8 * i..8 * i + 8]);
        u64::from_ne_bytes(b)
    };
    TrafficCounters {
        packets_to_peer: word(0),
        bytes_to_peer: word(1),
        packets_to_client: word(2),
        bytes_to_client: word(3),
    }
}

fn since(now: &TrafficCounters, last: &TrafficCounters) -> TrafficCounters {
    TrafficCounters {
        packets_to_peer: now.packets_to_peer.wrapping_sub(last.packets_to_peer),
        bytes_to_peer: now.bytes_to_peer.wrapping_sub(last.bytes_to_peer),
        packets_to_client: now.packets_to_client.wrapping_sub(last.packets_to_client),
        bytes_to_client: now.bytes_to_client.wrapping_sub(last.bytes_to_client),
    }
}

/// `e` and the errors under it, as one line.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The program `name` in the object, loaded into the kernel.
fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp, OffloadError> {
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| OffloadError::Load(format!("no program {name} in the object")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| OffloadError::Load(e.to_string()))?;
    program
        .load()
        .map_err(|e| OffloadError::Load(with_sources(&e)))?;
    Ok(program)
}

fn attach(program: &mut Xdp, interface: &str, mode: XdpMode) -> Result<XdpLinkId, OffloadError> {
    program
        .attach(interface, mode)
        .map_err(|e| OffloadError::Attach {
            interface: interface.to_owned(),
            reason: with_sources(&e),
        })
}

fn take<M>(
    ebpf: &mut Ebpf,
    name: &str,
    convert: impl FnOnce(aya::maps::Map) -> Result<M, aya::maps::MapError>,
) -> Result<M, OffloadError> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| OffloadError::Load(format!("no map {name} in the object")))?;
    convert(map).map_err(|e| OffloadError::Load(format!("map {name}: {e}")))
}

/// `CAP_NET_ADMIN`'s bit in the capability sets (capabilities(7)): attaching to an interface.
const CAP_NET_ADMIN: u32 = 12;
/// `CAP_SYS_ADMIN`'s bit: covered what `CAP_BPF` does before Linux 5.8.
const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_BPF`'s bit: loading programs and creating maps.
const CAP_BPF: u32 = 39;

/// Fails when the process's effective capabilities (`CapEff` in `/proc/self/status`) lack
/// what loading and attaching the program takes. Without `/proc` the check is left to the
/// kernel (the load fails with its own error).
fn check_capabilities() -> Result<(), OffloadError> {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return Ok(());
    };
    let Some(effective) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    else {
        return Ok(());
    };
    missing_capabilities(effective)
        .map_or(Ok(()), |missing| Err(OffloadError::Privileges { missing }))
}

/// The capabilities missing from the set `effective`, by name, or `None`.
fn missing_capabilities(effective: u64) -> Option<String> {
    let has = |bit: u32| effective & (1 << bit) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    (!missing.is_empty()).then(|| missing.join(" and "))
}

/// An interface holding one of the relay's addresses.
struct Interface {
    name: String,
    index: u32,
    loopback: bool,
    /// The first of the relay's addresses found on it (for the messages).
    address: IpAddr,
}

/// The interfaces holding `addrs` (by address or, for loopback, by prefix), each once.
fn interfaces_of(addrs: &[IpAddr]) -> Result<Vec<Interface>, OffloadError> {
    let mut found: Vec<Interface> = Vec::new();
    let ifaddrs: Vec<_> = nix::ifaddrs::getifaddrs()
        .map_err(|e| OffloadError::Interfaces(e.to_string()))?
        .collect();
    for &addr in addrs {
        let IpAddr::V4(want) = addr else { continue };
        let name = ifaddrs
            .iter()
            .find_map(|i| {
                let a = i.address.as_ref()?.as_sockaddr_in()?.ip();
                let mask = i.netmask.as_ref()?.as_sockaddr_in()?.ip();
                let on_link = a == want || (want.is_loopback() && a.is_loopback());
                let same_net = u32::from(a) & u32::from(mask) == u32::from(want) & u32::from(mask);
                (on_link || (want.is_loopback() && same_net)).then(|| i.interface_name.clone())
            })
            .ok_or(OffloadError::NoInterface(addr))?;
        if found.iter().any(|i| i.name == name) {
            continue;
        }
        let loopback = ifaddrs.iter().any(|i| {
            i.interface_name == name
                && i.flags
                    .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK)
        });
        let index = nix::net::if_::if_nametoindex(name.as_str())
            .map_err(|e| OffloadError::Interfaces(format!("{name}: {e}")))?;
        found.push(Interface {
            name,
            index,
            loopback,
            address: addr,
        });
    }
    if found.is_empty() {
        return Err(OffloadError::NoIpv4);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{AllocationId, FiveTuple, Transport};
    use crate::stun::ChannelNumber;

    #[test]
    fn keys_and_values_are_in_the_programs_layout() {
        let path = KernelPath {
            id: AllocationId(1),
            client: FiveTuple {
                transport: Transport::Udp,
                client: "127.0.0.2:40000".parse().unwrap(),
                server: "127.0.0.1:3478".parse().unwrap(),
            },
            channel: ChannelNumber::new(0x4001).unwrap(),
            relay: "127.0.0.1:50000".parse().unwrap(),
            peer: "127.0.0.5:6000".parse().unwrap(),
        };
        let k = Keys::of(&path).unwrap();
        // The same bytes as tests/offload/xdp-lo.sh writes with bpftool.
        assert_eq!(
            k.peer,
            [
                127, 0, 0, 2, 0x9c, 0x40, 127, 0, 0, 1, 0x0d, 0x96, 0x40, 0x01, 0, 0
            ]
        );
        assert_eq!(
            k.client,
            [127, 0, 0, 1, 0xc3, 0x50, 127, 0, 0, 5, 0x17, 0x70]
        );
        let slot = 7u32.to_ne_bytes();
        assert_eq!(k.peer_value(7)[..12], k.client[..]);
        assert_eq!(k.peer_value(7)[12..], slot);
        assert_eq!(k.client_value(7)[..12], k.peer[..12]);
        assert_eq!(k.client_value(7)[12..16], [0x40, 0x01, 0, 0]);
        assert_eq!(k.client_value(7)[16..], slot);
    }

    #[test]
    fn ipv6_paths_have_no_keys() {
        let path = KernelPath {
            id: AllocationId(1),
            client: FiveTuple {
                transport: Transport::Udp,
                client: "[::1]:40000".parse().unwrap(),
                server: "[::1]:3478".parse().unwrap(),
            },
            channel: ChannelNumber::new(0x4000).unwrap(),
            relay: "[::1]:50000".parse().unwrap(),
            peer: "[::1]:6000".parse().unwrap(),
        };
        assert!(Keys::of(&path).is_none());
    }

    #[test]
    fn capabilities_are_read_from_the_effective_set() {
        // Root's full set, a plain user's empty one, and a unit granting exactly the two.
        assert_eq!(missing_capabilities(0x1ff_ffff_ffff), None);
        assert_eq!(
            missing_capabilities(0).as_deref(),
            Some("CAP_BPF and CAP_NET_ADMIN")
        );
        assert_eq!(missing_capabilities((1 << 39) | (1 << 12)), None);
        assert_eq!(
            missing_capabilities(1 << 39).as_deref(),
            Some("CAP_NET_ADMIN")
        );
        // CAP_SYS_ADMIN stands in for CAP_BPF (kernels before 5.8).
        assert_eq!(missing_capabilities((1 << 21) | (1 << 12)), None);
    }

    #[test]
    fn every_cause_names_a_fix() {
        let e = OffloadError::Privileges {
            missing: "CAP_BPF".to_owned(),
        };
        assert!(e.to_string().contains("CAP_BPF"));
        assert!(e.fix().contains("relay.offload = \"off\""));
        let e = OffloadError::Forwarding {
            address: "198.18.2.1".parse().unwrap(),
            interface: "eth0".to_owned(),
            value: "0".to_owned(),
        };
        assert!(e.to_string().contains("eth0"));
        assert!(e.fix().contains("net.ipv4.conf.lo.forwarding=1"));
    }

    #[test]
    fn deltas_wrap_like_the_kernels_counters() {
        let last = TrafficCounters {
            packets_to_peer: u64::MAX,
            ..TrafficCounters::default()
        };
        let now = TrafficCounters {
            packets_to_peer: 1,
            bytes_to_client: 5,
            ..TrafficCounters::default()
        };
        let d = since(&now, &last);
        assert_eq!((d.packets_to_peer, d.bytes_to_client), (2, 5));
    }
}
