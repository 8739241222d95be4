#!/usr/bin/env python3
"""Interop: the TURN client of Python's aioice over TCP and TLS against a running server.

Run by tests/interop/stream.sh, which starts the server. Talks to loopback
addresses only. Each check prints one line, "PASS stream/<tag>-<check>" or
"FAIL stream/<tag>-<check>: why"; the exit status is 1 if any check failed.

aioice (0.13) speaks TURN over a stream with create_turn_endpoint(...,
transport="tcp"), and over TLS when an ssl.SSLContext is passed as ssl=. It
pads what it sends to 4 bytes and expects the server's ChannelData padded
(RFC 8656 section 12.5); it binds a channel per peer and sends ChannelData.

Checks (per transport):
  allocate    Allocate over the stream (401 challenge, then authenticated);
              the relayed address is on the expected host and in the relay
              port range; the mapped address is the client's TCP address
  verify      (TLS only) the handshake verified the server certificate
              against the given CA file and name, with an AES-GCM suite
  roundtrip   payloads of odd and even sizes to an echo peer and back
              (ChannelData both ways, padding included), unchanged
  burst       50 datagrams written back to back all come back
  deallocate  closing the transport deletes the allocation (Refresh with
              LIFETIME 0) and the relayed port is released
  conn-close  a second allocation whose TCP connection is aborted without
              any Refresh: the server ends the allocation with the
              connection and the relayed port is released (RFC 8656 3.7)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import ipaddress
import os
import socket
import ssl
import sys
import time

try:
    from aioice import stun
    from aioice.turn import create_turn_endpoint
except ImportError as exc:  # pragma: no cover - reported, not raised
    print(f"FAIL stream/aioice-import: {exc} (pip install 'aioice==0.*')", flush=True)
    sys.exit(1)

USER = "interop-aioice-stream"
FAILED = 0
TAG = "aioice-tcp"


def report(ok: bool, check: str, detail: str = "") -> bool:
    global FAILED
    if not ok:
        FAILED += 1
    word = "PASS" if ok else "FAIL"
    print(f"{word} stream/{TAG}-{check}{': ' + detail if detail else ''}", flush=True)
    return ok


def same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def error_of(exc: BaseException) -> str:
    if isinstance(exc, stun.TransactionFailed):
        return f"error response {exc.response.attributes.get('ERROR-CODE')}"
    return f"{type(exc).__name__}: {exc}"


def credentials(secret_file: str) -> tuple[str, str]:
    with open(secret_file, encoding="utf-8") as f:
        secret = next(line.strip() for line in f if line.strip())
    username = f"{int(time.time()) + 3600}:{USER}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


class EchoPeer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.sources: list[tuple[str, int]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        self.transport = transport

    def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
        self.sources.append((addr[0], addr[1]))
        assert self.transport is not None
        self.transport.sendto(data, addr)


class TurnUser(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.errors: list[BaseException] = []
        self.lost = asyncio.get_running_loop().create_future()

    def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
        self.queue.put_nowait((bytes(data), (addr[0], addr[1])))

    def error_received(self, exc):  # type: ignore[no-untyped-def]
        self.errors.append(exc)

    def connection_lost(self, exc):  # type: ignore[no-untyped-def]
        if not self.lost.done():
            self.lost.set_result(exc)


async def recv_one(user: TurnUser, timeout: float):
    try:
        return await asyncio.wait_for(user.queue.get(), timeout)
    except asyncio.TimeoutError:
        return None


async def port_released(relayed: tuple[str, int], seconds: float = 5) -> bool:
    """True once the relayed UDP port can be bound again (the relay let it go)."""
    fam = socket.AF_INET6 if ":" in relayed[0] else socket.AF_INET
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            s.bind(relayed)
            return True
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                return False
        finally:
            s.close()
        await asyncio.sleep(0.1)


def inner_of(transport):  # type: ignore[no-untyped-def]
    """aioice's TURN client protocol behind a TurnTransport (name-mangled attribute)."""
    return getattr(transport, "_TurnTransport__inner_protocol", None)


async def allocate(args, ctx, username, password):  # type: ignore[no-untyped-def]
    return await asyncio.wait_for(
        create_turn_endpoint(
            TurnUser, (args.server_host, args.server_port), username, password,
            lifetime=600, ssl=ctx, transport="tcp",
        ),
        30,
    )


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    lo, hi = (int(x) for x in args.port_range.split("-"))
    username, password = credentials(args.secret_file)
    ctx = None
    if args.tls:
        ctx = ssl.create_default_context(cafile=args.ca_file)
        ctx.check_hostname = True  # the server name is the IP literal, in the certificate's SAN

    peer_t, peer = await loop.create_datagram_endpoint(EchoPeer, local_addr=(args.peer_host, 0))
    peer_addr = peer_t.get_extra_info("sockname")[:2]
    try:
        # --- allocate ---
        try:
            transport, user = await allocate(args, ctx, username, password)
        except (Exception, asyncio.TimeoutError) as exc:  # noqa: BLE001 - reported
            report(False, "allocate", f"create_turn_endpoint over {TAG}: {error_of(exc)}")
            return
        relayed = tuple(transport.get_extra_info("sockname")[:2])
        mapped = transport.get_extra_info("related_address")
        inner = inner_of(transport)
        local = inner.transport.get_extra_info("sockname")[:2] if inner else None
        why = ""
        if not same_ip(relayed[0], args.expect_relay_host):
            why = f"relayed address {relayed} is not on {args.expect_relay_host}"
        elif not lo <= relayed[1] <= hi:
            why = f"relayed port {relayed[1]} is outside {args.port_range}"
        elif local is not None and (not same_ip(mapped[0], local[0]) or mapped[1] != local[1]):
            why = f"mapped address {mapped} is not the client's TCP address {local}"
        report(not why, "allocate", why or f"relayed {relayed[0]}:{relayed[1]}, mapped {mapped[0]}:{mapped[1]}")

        # --- tls-verify ---
        if args.tls and inner is not None:
            sslobj = inner.transport.get_extra_info("ssl_object")
            cipher = sslobj.cipher() if sslobj else None
            ok = sslobj is not None and cipher is not None and "GCM" in cipher[0]
            report(ok, "verify", f"{sslobj.version() if sslobj else '-'} {cipher[0] if cipher else '-'}, "
                   f"certificate verified against {os.path.basename(args.ca_file)}")

        # --- roundtrip ---
        why = ""
        sizes = [1, 2, 3, 4, 5, 13, 100, 501, 1200]
        for i, size in enumerate(sizes):
            data = (f"#{i}#".encode() + os.urandom(size))[:size]
            transport.sendto(data, peer_addr)
            got = await recv_one(user, 5)
            if got is None:
                why = f"no echo within 5 s for {size} bytes"
            elif got != (data, peer_addr):
                why = f"echo mismatch for {size} bytes: got {len(got[0])} bytes from {got[1]}"
            elif user.errors:
                why = f"send failed: {error_of(user.errors[0])}"
            if why:
                break
        if not why and any(s != relayed for s in peer.sources):
            why = f"the peer saw datagrams from {set(peer.sources) - {relayed}}, not only {relayed}"
        report(not why, "roundtrip", why or f"{len(sizes)} sizes (1..1200 bytes) echoed through {relayed[0]}:{relayed[1]}")

        # --- burst ---
        if not why:
            sent = [f"burst-{i}-".encode() + os.urandom(37 + i % 4) for i in range(50)]
            for data in sent:
                transport.sendto(data, peer_addr)
            got_back = []
            deadline = loop.time() + 5
            while len(got_back) < len(sent) and loop.time() < deadline:
                item = await recv_one(user, max(0.01, deadline - loop.time()))
                if item is not None:
                    got_back.append(item[0])
            ok = sorted(got_back) == sorted(sent)
            report(ok, "burst", f"{len(got_back)} of {len(sent)} echoed" + ("" if ok else " (or payloads differ)"))

        # --- deallocate: Refresh LIFETIME=0, then the connection closes ---
        transport.close()
        try:
            await asyncio.wait_for(user.lost, 30)
            released = await port_released(relayed)
            report(released, "deallocate",
                   "allocation deleted, relayed port released" if released else f"{relayed} is still bound after 5 s")
        except asyncio.TimeoutError:
            report(False, "deallocate", "the transport did not close within 30 s")

        # --- conn-close: abort the connection, no Refresh ---
        try:
            transport2, user2 = await allocate(args, ctx, username, password)
        except (Exception, asyncio.TimeoutError) as exc:  # noqa: BLE001 - reported
            report(False, "conn-close", f"second allocation failed: {error_of(exc)}")
            return
        relayed2 = tuple(transport2.get_extra_info("sockname")[:2])
        transport2.sendto(b"before the abort", peer_addr)
        got = await recv_one(user2, 5)
        inner2 = inner_of(transport2)
        if got != (b"before the abort", peer_addr) or inner2 is None:
            report(False, "conn-close", f"no echo on the second allocation ({got!r})")
            return
        inner2.transport.abort()  # RST/FIN without any TURN message
        released = await port_released(relayed2)
        report(released, "conn-close",
               f"relayed port {relayed2[1]} released once the connection dropped" if released
               else f"{relayed2} is still bound 5 s after the connection dropped")
    finally:
        peer_t.close()


def main() -> int:
    global TAG
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tag", default="aioice-tcp", help="prefix of the check names")
    ap.add_argument("--secret-file", required=True)
    ap.add_argument("--server-host", default="127.0.0.1")
    ap.add_argument("--server-port", type=int, required=True)
    ap.add_argument("--tls", action="store_true", help="TURN over TLS (TURNS)")
    ap.add_argument("--ca-file", help="PEM file the server certificate must verify against (with --tls)")
    ap.add_argument("--peer-host", default="127.0.2.5")
    ap.add_argument("--expect-relay-host", default="127.0.0.1")
    ap.add_argument("--port-range", required=True, help="LO-HI, the server's relay port range")
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args()
    TAG = args.tag
    if args.tls and not args.ca_file:
        ap.error("--tls needs --ca-file")
    for host in [args.server_host, args.expect_relay_host, args.peer_host]:
        if not ipaddress.ip_address(host).is_loopback:
            ap.error(f"{host} is not a loopback address; this test only talks to loopback")
    try:
        asyncio.run(asyncio.wait_for(run(args), args.timeout))
    except asyncio.TimeoutError:
        report(False, "timeout", f"the checks did not finish within {args.timeout} s")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
