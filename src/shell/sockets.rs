//! Socket and process set-up of the shell: UDP sockets with their buffers, the open-file
//! limit.

use std::net::SocketAddr;

/// Binds a non-blocking UDP socket (IPv6 sockets are IPv6-only) and asks for `buffer`-byte
/// receive and send buffers; the kernel caps them at `net.core.{r,w}mem_max`.
pub(super) fn bind_udp(
    addr: SocketAddr,
    buffer: usize,
    reuse_port: bool,
) -> std::io::Result<std::net::UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    let _ = sock.set_recv_buffer_size(buffer);
    let _ = sock.set_send_buffer_size(buffer);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Warns when the kernel gave a socket smaller buffers than `relay.socket_buffer` asked for:
/// a burst larger than the buffer is lost before the relay sees it.
pub(super) fn check_buffers(sock: &std::net::UdpSocket, wanted: usize) {
    let s = socket2::SockRef::from(sock);
    // Linux reports twice the size it was asked for (the other half is bookkeeping).
    for (what, got, sysctl) in [
        ("receive", s.recv_buffer_size(), "net.core.rmem_max"),
        ("send", s.send_buffer_size(), "net.core.wmem_max"),
    ] {
        match got {
            Ok(got) if got / 2 < wanted => {
                tracing::warn!(
                    target: "eeaturn::shell",
                    wanted,
                    got = got / 2,
                    "the kernel capped the UDP {what} buffers below relay.socket_buffer; bursts may be lost: raise it with `sysctl -w {sysctl}={wanted}` (and in /etc/sysctl.d/)"
                );
            }
            Ok(got) => {
                tracing::debug!(target: "eeaturn::shell", what, bytes = got / 2, "UDP socket buffers");
            }
            Err(e) => {
                tracing::debug!(target: "eeaturn::shell", error = %e, "cannot read the socket buffer size");
            }
        }
    }
}

/// Raises the open-file limit to its hard maximum: every allocation holds a socket.
pub(super) fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(target: "eeaturn::shell", limit = n, "open-file limit"),
        Err(e) => {
            tracing::warn!(target: "eeaturn::shell", error = %e, "cannot raise the open-file limit");
        }
    }
}
