//! Which relay paths may run in the kernel, and the kernel's counters folded back.
//!
//! The shell may relay ChannelData in the kernel (an eBPF program; see
//! `docs/design/kernel-fast-path.md`), but only on paths the core announced with
//! [`Command::InstallKernelPath`] and until it takes them back with
//! [`Command::RemoveKernelPath`]. After every change to an allocation the core computes the
//! paths it would relay ChannelData on and announces the difference, so the kernel never holds
//! a path the core would refuse. No I/O here: the shell owns the maps.

use std::net::SocketAddr;

use rand::RngCore;

use super::table::{Allocation, Slot};
use super::{AllocationId, Command, Event, FiveTuple, Now, Server, TrafficCounters, Transport};
use crate::stun::ChannelNumber;
use crate::stun::attr::Family;

/// One channel of one allocation, relayed both ways: ChannelData on `channel` from the client
/// of `client` goes out of `relay` to `peer`, and data from `peer` to `relay` goes to the
/// client as ChannelData on `channel`. Only UDP over IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelPath {
    /// The allocation it belongs to.
    pub id: AllocationId,
    /// The client's 5-tuple (UDP, IPv4).
    pub client: FiveTuple,
    /// The bound channel.
    pub channel: ChannelNumber,
    /// The relay socket's local address (IPv4).
    pub relay: SocketAddr,
    /// The peer (IPv4; personal data: redact in logs).
    pub peer: SocketAddr,
}

/// An ended allocation whose [`Event::AllocationEnded`] waits for the final counters of its
/// kernel paths.
#[derive(Debug)]
pub(crate) struct Ending {
    /// The event, completed as the paths are reported removed.
    event: Event,
    /// Paths not yet reported removed.
    outstanding: usize,
}

impl<R: RngCore> Server<R> {
    /// Lets the shell relay in the kernel: from now on the core announces the paths it may
    /// relay there with [`Command::InstallKernelPath`] and [`Command::RemoveKernelPath`]. The
    /// shell must answer every `RemoveKernelPath` with
    /// [`Server::handle_kernel_path_removed`] (an allocation's end is reported once all its
    /// paths are). Call before the first input.
    #[must_use]
    pub fn with_kernel_paths(mut self) -> Self {
        self.kernel_paths = true;
        self
    }

    /// Adds what the kernel relayed on `path` since the last call: to the allocation, to its
    /// peer's ledger entry, and to the counters. A path the core no longer knows is ignored.
    pub fn handle_kernel_traffic(&mut self, path: &KernelPath, traffic: TrafficCounters) {
        if traffic == TrafficCounters::default() {
            return;
        }
        self.stats.count_kernel(path.client.transport, &traffic);
        let slot = self.by_five_tuple.get(&path.client).copied();
        if let Some(a) = slot.and_then(|s| self.allocs.get_mut(s))
            && a.id == path.id
        {
            a.traffic.add(&traffic);
            if let Some(p) = a.peers.iter_mut().find(|p| p.peer == path.peer.ip()) {
                p.traffic.add(&traffic);
            }
            return;
        }
        if let Some(Ending {
            event:
                Event::AllocationEnded {
                    traffic: total,
                    peers,
                    ..
                },
            ..
        }) = self.ending.get_mut(&path.id)
        {
            total.add(&traffic);
            if let Some(p) = peers.iter_mut().find(|p| p.peer == path.peer.ip()) {
                p.traffic.add(&traffic);
            }
        }
    }

    /// Reports that the shell carried out [`Command::RemoveKernelPath`] for `path`, with what
    /// the kernel relayed on it since the last [`Server::handle_kernel_traffic`]. The end of
    /// the allocation, if it ended, is reported once its last path is.
    pub fn handle_kernel_path_removed(&mut self, path: &KernelPath, traffic: TrafficCounters) {
        self.handle_kernel_traffic(path, traffic);
        let slot = self.by_five_tuple.get(&path.client).copied();
        if let Some(a) = slot.and_then(|s| self.allocs.get_mut(s))
            && a.id == path.id
        {
            a.kernel_removing = a.kernel_removing.saturating_sub(1);
            return;
        }
        let Some(ending) = self.ending.get_mut(&path.id) else {
            return;
        };
        ending.outstanding = ending.outstanding.saturating_sub(1);
        if ending.outstanding == 0
            && let Some(ending) = self.ending.remove(&path.id)
        {
            self.events.push_back(ending.event);
        }
    }

    /// [`Server::sync_kernel_paths`], with the announcements queued before the commands from
    /// position `at` on (the answer to the request that changed the allocation): a client
    /// that gets its ChannelBind success and sends at once finds its path in the kernel.
    pub(crate) fn sync_kernel_paths_before(&mut self, slot: Slot, at: usize, now: Now) {
        let end = self.commands.len();
        self.sync_kernel_paths(slot, now);
        let at = at.min(end);
        for (i, cmd) in self.commands.split_off(end).into_iter().enumerate() {
            self.commands.insert(at + i, cmd);
        }
    }

    /// Announces the difference between the kernel paths `slot` may have now and those
    /// announced before.
    pub(crate) fn sync_kernel_paths(&mut self, slot: Slot, now: Now) {
        if !self.kernel_paths {
            return;
        }
        let Some(a) = self.allocs.get(slot) else {
            return;
        };
        let want = self.wanted_kernel_paths(a, now);
        if want == a.kernel_paths {
            return;
        }
        let mut removed = 0;
        for p in a.kernel_paths.iter().filter(|p| !want.contains(p)) {
            self.commands.push_back(Command::RemoveKernelPath(*p));
            removed += 1;
        }
        for p in want.iter().filter(|p| !a.kernel_paths.contains(p)) {
            self.commands.push_back(Command::InstallKernelPath(*p));
        }
        if let Some(a) = self.allocs.get_mut(slot) {
            a.kernel_paths = want;
            a.kernel_removing += removed;
        }
    }

    /// The paths the core relays ChannelData on for `a`, both ways: exactly the checks of
    /// the data path (`handle_channel_data`, `handle_peer_input`), restricted to UDP over
    /// IPv4 on a specific listening address.
    fn wanted_kernel_paths(&self, a: &Allocation, now: Now) -> Vec<KernelPath> {
        let five = a.five_tuple;
        let v4 = |addr: SocketAddr| addr.is_ipv4() && !addr.ip().is_unspecified();
        if !a.is_active() || five.transport != Transport::Udp || !v4(five.client) {
            return Vec::new();
        }
        if !v4(five.server) {
            return Vec::new();
        }
        let mut paths: Vec<KernelPath> = a
            .channels
            .iter()
            .filter(|c| c.expires > now.mono && c.peer.is_ipv4())
            .filter_map(|c| {
                let p = a.permission(c.peer.ip(), now.mono)?;
                if p.relay_host && !self.cfg.relay.port_allowed(c.peer) {
                    return None;
                }
                let relay = a.relayed_for(Family::of(c.peer.ip()))?.local;
                v4(relay).then_some(KernelPath {
                    id: a.id,
                    client: five,
                    channel: c.number,
                    relay,
                    peer: c.peer,
                })
            })
            .collect();
        paths.sort_unstable();
        paths
    }

    /// Takes the kernel paths `paths` of the ending allocation `id` back, and holds `ended`
    /// until the shell has reported them removed, together with the `removing` paths it was
    /// already told to remove; returns `ended` when there are none.
    pub(crate) fn end_kernel_paths(
        &mut self,
        id: AllocationId,
        paths: Vec<KernelPath>,
        removing: usize,
        ended: Event,
    ) -> Option<Event> {
        let outstanding = paths.len() + removing;
        if outstanding == 0 {
            return Some(ended);
        }
        for p in &paths {
            self.commands.push_back(Command::RemoveKernelPath(*p));
        }
        self.ending.insert(
            id,
            Ending {
                event: ended,
                outstanding,
            },
        );
        None
    }
}
