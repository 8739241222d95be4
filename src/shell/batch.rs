//! Batched UDP I/O: `recvmmsg` and `sendmmsg` (through `nix`'s safe wrappers) over one buffer
//! a worker keeps for its lifetime.
//!
//! The buffer holds [`BATCH`] slots of [`SLOT`] bytes. A datagram from a client is read to the
//! start of a slot; a datagram from a peer is read at [`PEER_HEADROOM`] so the core can frame
//! it in place. Slots are as large as the largest datagram, so nothing is ever truncated; only
//! the pages a datagram touches become resident.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};

use crate::relay::{PEER_HEADROOM, PEER_TAILROOM};

/// Largest UDP payload.
pub(super) const MAX_DATAGRAM: usize = 65_535;
/// Datagrams read or sent by one system call.
pub(super) const BATCH: usize = 32;
/// One slot of the buffer: room for the largest datagram with the peer framing around it.
pub(super) const SLOT: usize = PEER_HEADROOM + MAX_DATAGRAM + PEER_TAILROOM;

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
}

impl Batch {
    pub(super) fn new() -> Self {
        Self {
            buf: vec![0u8; BATCH * SLOT].into_boxed_slice(),
            got: [(0, None); BATCH],
            recv_headers_v4: MultiHeaders::preallocate(BATCH, None),
            recv_headers_v6: MultiHeaders::preallocate(BATCH, None),
            send_headers: MultiHeaders::preallocate(BATCH, None),
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
    /// `sock`, as few calls as it takes; returns how many the kernel took. A full send buffer
    /// drops the rest, as the network would.
    pub(super) fn send(
        &mut self,
        sock: &impl AsRawFd,
        msgs: &[(std::ops::Range<usize>, SocketAddr)],
    ) -> usize {
        let mut sent = 0;
        for chunk in msgs.chunks(BATCH) {
            let Self {
                buf, send_headers, ..
            } = self;
            let iovs: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|i| {
                [IoSlice::new(
                    chunk
                        .get(i)
                        .and_then(|(r, _)| buf.get(r.clone()))
                        .unwrap_or_default(),
                )]
            });
            let addrs: [Option<SockaddrStorage>; BATCH] =
                std::array::from_fn(|i| chunk.get(i).map(|(_, to)| SockaddrStorage::from(*to)));
            match sendmmsg(
                sock.as_raw_fd(),
                send_headers,
                &iovs[..chunk.len()],
                &addrs[..chunk.len()],
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
    fn a_batch_goes_out_and_comes_back_whole() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        let to = b.local_addr().unwrap();
        let mut batch = Batch::new();
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
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut received = Vec::new();
        loop {
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
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(received, sizes);
    }

    /// One batch serves sockets of both families in turn without cutting an address short.
    #[test]
    fn ipv4_then_ipv6_sources_come_back_whole() {
        let mut batch = Batch::new();
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
}
