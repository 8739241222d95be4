//! Batched UDP I/O: `recvmmsg` and `sendmmsg` (through `nix`'s safe wrappers) over one buffer
//! a worker keeps for its lifetime, UDP GSO for runs of datagrams to one destination, and
//! `sendto` for a datagram that goes out alone.
//!
//! The buffer holds [`BATCH`] slots of [`SLOT`] bytes. A datagram from a client is read to the
//! start of a slot; a datagram from a peer is read at [`PEER_HEADROOM`] so the core can frame
//! it in place. Slots are as large as the largest datagram, so nothing is ever truncated; only
//! the pages a datagram touches become resident.
//!
//! Sending, consecutive datagrams to the same destination whose sizes are equal (the last of
//! a run may be shorter) go out as one UDP GSO message (`UDP_SEGMENT`): the kernel builds,
//! routes and queues one buffer and cuts it into the datagrams at the device, or at the
//! receiving socket on loopback, instead of walking its send path once per datagram. What
//! goes on the wire is the same datagrams in the same order. A kernel or device that refuses
//! GSO gets the plain path.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, sendto,
};

use crate::relay::{PEER_HEADROOM, PEER_TAILROOM};

/// Largest UDP payload.
pub(super) const MAX_DATAGRAM: usize = 65_535;
/// Datagrams read or sent by one system call.
pub(super) const BATCH: usize = 32;
/// One slot of the buffer: room for the largest datagram with the peer framing around it.
pub(super) const SLOT: usize = PEER_HEADROOM + MAX_DATAGRAM + PEER_TAILROOM;
/// Datagrams in one GSO message (the kernel's `UDP_MAX_SEGMENTS`).
const GSO_MAX_SEGMENTS: usize = 64;
/// Bytes in one GSO message: the payload of one IP packet, less room for headers.
const GSO_MAX_BYTES: usize = 65_000;
/// Largest datagram sent with GSO: each piece must fit the device's MTU unfragmented; 1452
/// bytes fit a 1500-byte Ethernet MTU under IPv6 and UDP headers. Larger datagrams (rare in
/// media) take the plain path.
const GSO_MAX_SEGMENT: usize = 1452;

/// The receive buffer and the system-call headers of one worker.
pub(super) struct Batch {
    /// `BATCH` slots of `SLOT` bytes.
    pub(super) buf: Box<[u8]>,
    /// Length and source of each datagram of the last receive.
    pub(super) got: [(usize, Option<SocketAddr>); BATCH],
    /// One set of receive headers per address family: the kernel shrinks each header's
    /// address length to what it wrote, and `nix` does not reset it, so a header that once
    /// held an IPv4 address would cut an IPv6 one short.
    recv_headers_v4: MultiHeaders<SockaddrStorage>,
    recv_headers_v6: MultiHeaders<SockaddrStorage>,
    send_headers: MultiHeaders<SockaddrStorage>,
    /// The destinations of one `sendmmsg` (kept: an address is 128 bytes to build).
    send_addrs: Vec<Option<SockaddrStorage>>,
    /// One header with room for the `UDP_SEGMENT` control message.
    gso_headers: MultiHeaders<SockaddrStorage>,
    /// Whether to send runs with GSO: configured (`relay.gso`), and turned off for good when
    /// the kernel says it cannot.
    gso: bool,
    /// GSO messages sent so far (what the tests look at).
    #[cfg(test)]
    gso_messages: u64,
}

impl Batch {
    /// A buffer and headers; `gso`: send runs of datagrams with UDP GSO.
    pub(super) fn new(gso: bool) -> Self {
        Self {
            buf: vec![0u8; BATCH * SLOT].into_boxed_slice(),
            got: [(0, None); BATCH],
            recv_headers_v4: MultiHeaders::preallocate(BATCH, None),
            recv_headers_v6: MultiHeaders::preallocate(BATCH, None),
            send_headers: MultiHeaders::preallocate(BATCH, None),
            send_addrs: Vec::with_capacity(BATCH),
            gso_headers: MultiHeaders::preallocate(1, Some(nix::cmsg_space!(u16))),
            gso,
            #[cfg(test)]
            gso_messages: 0,
        }
    }

    /// Reads up to [`BATCH`] datagrams from `sock` (an IPv6 socket when `v6`) in one call,
    /// each to `offset` in its slot; returns how many. `WouldBlock` when none is waiting.
    pub(super) fn recv(
        &mut self,
        sock: &impl AsRawFd,
        v6: bool,
        offset: usize,
    ) -> io::Result<usize> {
        let Self {
            buf,
            got,
            recv_headers_v4,
            recv_headers_v6,
            ..
        } = self;
        let recv_headers = if v6 { recv_headers_v6 } else { recv_headers_v4 };
        let mut slots = buf.chunks_mut(SLOT);
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            let slot = slots.next().unwrap_or_default();
            let end = (offset + MAX_DATAGRAM).min(slot.len());
            [IoSliceMut::new(
                slot.get_mut(offset..end).unwrap_or_default(),
            )]
        });
        let results = recvmmsg(
            sock.as_raw_fd(),
            recv_headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        let mut n = 0;
        for (i, msg) in results.enumerate() {
            got[i] = (msg.bytes, msg.address.and_then(to_std));
            n = i + 1;
        }
        Ok(n)
    }

    /// The slot of datagram `i`, mutable.
    pub(super) fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.buf[i * SLOT..(i + 1) * SLOT]
    }

    /// Sends the datagrams `msgs` (absolute ranges of the buffer, and destinations) from
    /// `sock`, in order; returns how many the kernel took. Runs of datagrams to one
    /// destination go as GSO messages (see the module's documentation), so callers that
    /// group a destination's datagrams together, keeping their order, send fewest. A full send
    /// buffer drops what does not fit, as the network would.
    pub(super) fn send(
        &mut self,
        sock: &impl AsRawFd,
        msgs: &[(std::ops::Range<usize>, SocketAddr)],
    ) -> usize {
        if !self.gso {
            return self.send_plain(sock, msgs);
        }
        let mut sent = 0;
        // msgs[plain..i] wait to go out the plain way.
        let mut plain = 0;
        let mut i = 0;
        while i < msgs.len() {
            let end = i + gso_run(&msgs[i..]);
            if end - i >= 2 {
                sent += self.send_plain(sock, &msgs[plain..i]);
                sent += match self.send_gso(sock, &msgs[i..end]) {
                    Ok(()) => end - i,
                    Err(Errno::EAGAIN) => 0,
                    Err(e) => {
                        // EIO: the route's device cannot checksum GSO; ENOPROTOOPT or
                        // EOPNOTSUPP: a kernel without UDP GSO. Neither changes while we run.
                        if matches!(e, Errno::EIO | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP) {
                            tracing::debug!(target: "eeaturn::shell", error = %e, "UDP GSO refused by the kernel; sending datagram by datagram");
                            self.gso = false;
                        }
                        self.send_plain(sock, &msgs[i..end])
                    }
                };
                plain = end;
            }
            i = end;
        }
        sent + self.send_plain(sock, &msgs[plain..])
    }

    /// Sends `msgs` (2 or more, one destination, one GSO run) as one GSO message.
    fn send_gso(
        &mut self,
        sock: &impl AsRawFd,
        msgs: &[(std::ops::Range<usize>, SocketAddr)],
    ) -> Result<(), Errno> {
        let Some((first, to)) = msgs.first() else {
            return Err(Errno::EINVAL);
        };
        let segment = u16::try_from(first.len()).map_err(|_| Errno::EINVAL)?;
        let Self {
            buf, gso_headers, ..
        } = self;
        let iovs: [IoSlice<'_>; GSO_MAX_SEGMENTS] = std::array::from_fn(|i| {
            IoSlice::new(
                msgs.get(i)
                    .and_then(|(r, _)| buf.get(r.clone()))
                    .unwrap_or_default(),
            )
        });
        let n = msgs.len().min(GSO_MAX_SEGMENTS);
        let messages = [&iovs[..n]];
        let addrs = [Some(SockaddrStorage::from(*to))];
        let cmsgs = [ControlMessage::UdpGsoSegments(&segment)];
        let sent = sendmmsg(
            sock.as_raw_fd(),
            gso_headers,
            &messages,
            addrs,
            cmsgs,
            MsgFlags::MSG_DONTWAIT,
        )?
        .count();
        if sent != 1 {
            return Err(Errno::EAGAIN);
        }
        #[cfg(test)]
        {
            self.gso_messages += 1;
        }
        Ok(())
    }

    /// Sends `msgs` one datagram each, up to [`BATCH`] per system call.
    fn send_plain(
        &mut self,
        sock: &impl AsRawFd,
        msgs: &[(std::ops::Range<usize>, SocketAddr)],
    ) -> usize {
        if let [(range, to)] = msgs {
            return self.send_one(sock, range.clone(), *to);
        }
        let mut sent = 0;
        for chunk in msgs.chunks(BATCH) {
            let Self {
                buf,
                send_headers,
                send_addrs,
                ..
            } = self;
            let iovs: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|i| {
                [IoSlice::new(
                    chunk
                        .get(i)
                        .and_then(|(r, _)| buf.get(r.clone()))
                        .unwrap_or_default(),
                )]
            });
            send_addrs.clear();
            send_addrs.extend(chunk.iter().map(|(_, to)| Some(SockaddrStorage::from(*to))));
            match sendmmsg(
                sock.as_raw_fd(),
                send_headers,
                &iovs[..chunk.len()],
                &send_addrs[..],
                [],
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(results) => {
                    let n = results.count();
                    sent += n;
                    if n < chunk.len() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::trace!(target: "eeaturn::relay", error = %e, "sendmmsg failed");
                    break;
                }
            }
        }
        sent
    }

    /// Sends one datagram with `sendto`: with many allocations most datagrams of a batch go
    /// out alone from their relay socket, and for one datagram `sendmmsg` costs more, in the
    /// kernel (a message header and an iovec array to copy in) and here (the headers to fill).
    fn send_one(
        &self,
        sock: &impl AsRawFd,
        range: std::ops::Range<usize>,
        to: SocketAddr,
    ) -> usize {
        let Some(bytes) = self.buf.get(range) else {
            return 0;
        };
        match sendto(
            sock.as_raw_fd(),
            bytes,
            &SockaddrStorage::from(to),
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(_) => 1,
            Err(e) => {
                tracing::trace!(target: "eeaturn::relay", error = %e, "sendto failed");
                0
            }
        }
    }
}

/// How many datagrams from the start of `msgs` make one GSO run: one destination, the same
/// size (the last may be shorter), within the kernel's limits. 1 when the first cannot start
/// a run.
fn gso_run(msgs: &[(std::ops::Range<usize>, SocketAddr)]) -> usize {
    let Some((first, to)) = msgs.first() else {
        return 0;
    };
    let segment = first.len();
    if segment == 0 || segment > GSO_MAX_SEGMENT {
        return 1;
    }
    let mut total = segment;
    let mut n = 1;
    for (r, dest) in &msgs[1..] {
        let len = r.len();
        if dest != to || len == 0 || len > segment || total + len > GSO_MAX_BYTES {
            break;
        }
        total += len;
        n += 1;
        if len < segment || n == GSO_MAX_SEGMENTS {
            break;
        }
    }
    n
}

fn to_std(a: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[expect(
        clippy::disallowed_methods,
        reason = "a test's deadline for datagrams still in the kernel, read from the clock"
    )]
    fn a_batch_goes_out_and_comes_back_whole() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        let to = b.local_addr().unwrap();
        let mut batch = Batch::new(false);
        // A full batch of datagrams of different sizes, one of them as large as UDP allows.
        let sizes: Vec<usize> = (0..BATCH)
            .map(|i| {
                if i == 7 {
                    MAX_DATAGRAM - 28
                } else {
                    1 + i * 37
                }
            })
            .collect();
        let mut msgs = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            batch.slot_mut(i)[..n].fill(u8::try_from(i).unwrap());
            msgs.push((i * SLOT..i * SLOT + n, to));
        }
        assert_eq!(batch.send(&a, &msgs), BATCH);
        // Loopback delivers in softirq, which a busy machine defers to ksoftirqd: keep reading
        // until every datagram is in or a generous deadline passes (no fixed sleep).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut received = Vec::new();
        while received.len() < sizes.len() && std::time::Instant::now() < deadline {
            match batch.recv(&b, false, PEER_HEADROOM) {
                Ok(n) => {
                    for i in 0..n {
                        let (len, from) = batch.got[i];
                        assert_eq!(from, Some(a.local_addr().unwrap()));
                        let slot = batch.slot_mut(i);
                        let first = slot[PEER_HEADROOM];
                        assert!(
                            slot[PEER_HEADROOM..PEER_HEADROOM + len]
                                .iter()
                                .all(|&x| x == first)
                        );
                        received.push(len);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(received, sizes);
    }

    /// One batch serves sockets of both families in turn without cutting an address short.
    #[test]
    fn ipv4_then_ipv6_sources_come_back_whole() {
        let mut batch = Batch::new(false);
        for (family, v6) in [
            ("127.0.0.1:0", false),
            ("[::1]:0", true),
            ("127.0.0.1:0", false),
            ("[::1]:0", true),
        ] {
            let a = std::net::UdpSocket::bind(family).unwrap();
            let b = std::net::UdpSocket::bind(family).unwrap();
            a.send_to(b"x", b.local_addr().unwrap()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            b.set_nonblocking(true).unwrap();
            assert_eq!(batch.recv(&b, v6, 0).unwrap(), 1);
            assert_eq!(batch.got[0], (1, Some(a.local_addr().unwrap())));
        }
    }

    fn run_of(sizes: &[(usize, u8)]) -> usize {
        let dest = |d: u8| SocketAddr::from(([127, 0, 0, d], 9));
        let mut at = 0;
        let msgs: Vec<_> = sizes
            .iter()
            .map(|&(len, d)| {
                at += SLOT;
                (at..at + len, dest(d))
            })
            .collect();
        gso_run(&msgs)
    }

    #[test]
    fn a_gso_run_is_one_destination_of_one_size_with_a_shorter_last() {
        assert_eq!(run_of(&[]), 0);
        assert_eq!(run_of(&[(100, 1)]), 1);
        assert_eq!(run_of(&[(100, 1); 5]), 5);
        // A shorter datagram ends the run and belongs to it; a longer one starts another.
        assert_eq!(run_of(&[(100, 1), (100, 1), (40, 1), (100, 1)]), 3);
        assert_eq!(run_of(&[(100, 1), (100, 1), (140, 1)]), 2);
        // Another destination ends it.
        assert_eq!(run_of(&[(100, 1), (100, 2), (100, 1)]), 1);
        // Empty datagrams and datagrams too large for one MTU are never in a run.
        assert_eq!(run_of(&[(0, 1), (0, 1)]), 1);
        assert_eq!(run_of(&[(100, 1), (0, 1)]), 1);
        assert_eq!(run_of(&[(GSO_MAX_SEGMENT + 1, 1); 3]), 1);
        // The kernel's limits: 64 datagrams, 64 KiB.
        assert_eq!(run_of(&[(10, 1); 100]), GSO_MAX_SEGMENTS);
        assert_eq!(run_of(&[(1400, 1); 60]), GSO_MAX_BYTES / 1400);
    }

    /// Whatever the mix of destinations and sizes, every destination receives exactly its
    /// datagrams, in the order they were given, whether they went as GSO runs or one by one.
    #[test]
    fn gso_sends_arrive_as_the_same_datagrams_in_order() {
        gso_round_trip("127.0.0.1:0", false);
        gso_round_trip("[::1]:0", true);
    }

    fn gso_round_trip(family: &str, v6: bool) {
        use rand::{Rng, SeedableRng};
        let a = std::net::UdpSocket::bind(family).unwrap();
        let peers: Vec<_> = (0..3)
            .map(|_| {
                let p = std::net::UdpSocket::bind(family).unwrap();
                p.set_nonblocking(true).unwrap();
                p
            })
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut batch = Batch::new(true);
        let mut rx = Batch::new(false);
        for round in 0..40 {
            let mut msgs = Vec::new();
            let mut expected: Vec<Vec<(usize, u8)>> = vec![Vec::new(); peers.len()];
            let mut size = 1 + rng.random_range(0..1400);
            for i in 0..BATCH {
                // Mostly runs of one size to one peer, sometimes a change of either.
                let p = if rng.random_bool(0.2) {
                    rng.random_range(0..peers.len())
                } else {
                    i % 2
                };
                if rng.random_bool(0.15) {
                    size = 1 + rng.random_range(0..1400);
                }
                let len = if rng.random_bool(0.1) {
                    1 + rng.random_range(0..size)
                } else {
                    size
                };
                let mark = u8::try_from((round * BATCH + i) % 251).unwrap();
                batch.slot_mut(i)[..len].fill(mark);
                msgs.push((i * SLOT..i * SLOT + len, peers[p].local_addr().unwrap()));
                expected[p].push((len, mark));
            }
            // Grouped by destination, each in its order, as the worker hands them over.
            msgs.sort_by_key(|(_, to)| *to);
            assert_eq!(batch.send(&a, &msgs), BATCH);
            assert!(batch.gso, "loopback takes GSO");
            std::thread::sleep(std::time::Duration::from_millis(5));
            for (p, sock) in peers.iter().enumerate() {
                let mut got = Vec::new();
                while let Ok(n) = rx.recv(sock, v6, 0) {
                    for i in 0..n {
                        let (len, from) = rx.got[i];
                        assert_eq!(from, Some(a.local_addr().unwrap()));
                        let slot = rx.slot_mut(i);
                        assert!(slot[..len].iter().all(|&x| x == slot[0]));
                        got.push((len, slot[0]));
                    }
                }
                assert_eq!(got, expected[p], "{family} round {round}, peer {p}");
            }
        }
        assert!(batch.gso_messages > 40, "runs went as GSO messages");
    }

    /// With GSO off (`relay.gso = false`) the same goes out one datagram at a time.
    #[test]
    fn without_gso_runs_go_datagram_by_datagram() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        let mut batch = Batch::new(false);
        let to = b.local_addr().unwrap();
        let msgs: Vec<_> = (0..10).map(|i| (i * SLOT..i * SLOT + 100, to)).collect();
        assert_eq!(batch.send(&a, &msgs), 10);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(batch.recv(&b, false, 0).unwrap(), 10);
        assert!(batch.got[..10].iter().all(|&(len, _)| len == 100));
    }

    #[test]
    fn a_lone_datagram_goes_out_whole_to_either_family() {
        for (family, v6) in [("127.0.0.1:0", false), ("[::1]:0", true)] {
            for gso in [true, false] {
                let a = std::net::UdpSocket::bind(family).unwrap();
                let b = std::net::UdpSocket::bind(family).unwrap();
                b.set_nonblocking(true).unwrap();
                let mut batch = Batch::new(gso);
                let payload: Vec<u8> = (0..=255).collect();
                let at = 3 * SLOT + 17;
                batch.buf[at..at + payload.len()].copy_from_slice(&payload);
                let msgs = [(at..at + payload.len(), b.local_addr().unwrap())];
                assert_eq!(batch.send(&a, &msgs), 1, "{family} gso {gso}");
                std::thread::sleep(std::time::Duration::from_millis(20));
                assert_eq!(batch.recv(&b, v6, 0).unwrap(), 1);
                assert_eq!(batch.got[0], (256, Some(a.local_addr().unwrap())));
                assert_eq!(&batch.buf[..256], &payload[..]);
            }
        }
    }

    #[test]
    fn a_lone_datagram_that_cannot_go_counts_as_not_sent() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batch = Batch::new(false);
        // An IPv6 destination from an IPv4 socket: the kernel refuses it.
        let msgs = [(0..10, SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 9)))];
        assert_eq!(batch.send(&a, &msgs), 0);
    }
}
