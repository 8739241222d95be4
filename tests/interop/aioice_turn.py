#!/usr/bin/env python3
"""Interop: the TURN client of Python's aioice against a running TURN server.

Run by tests/interop/aioice.sh, which starts the server. Talks to loopback
addresses only. Each check prints one line, "PASS aioice/<tag>-<check>" or
"FAIL aioice/<tag>-<check>: why"; the exit status is 1 if any check failed.

Checks:
  credentials   `eeaturn credentials issue --json` prints the TURN REST
                credential: username "<expiry>:<user>", expiry = now + ttl,
                password = base64(HMAC-SHA1(first secret line, username))
                (skipped, credentials computed here, when --bin is not given)
  allocate      aioice's create_turn_endpoint() allocates over UDP (401
                challenge, then authenticated Allocate); the relayed address is
                on the expected host, inside the relay port range; the mapped
                address is the client's host
  roundtrip     datagrams of several sizes to two echo peers through the relay
                (aioice binds a channel per peer and sends ChannelData); every
                echo comes back unchanged from the right peer, and the peers
                saw them coming from the relayed address
  burst         50 datagrams sent back to back all come back
  permission-any-port
                a permitted peer IP sending from another port reaches the
                client (permissions are per IP address, RFC 8656 section 9)
  no-permission a host without a permission sending to the relayed address
                does not reach the client (checked on the raw socket, before
                aioice's own filtering)
  refresh       a Refresh of the allocation succeeds and returns LIFETIME
  deallocate    closing the transport deletes the allocation (Refresh with
                LIFETIME 0 succeeds) and the relayed port is released
  wrong-password, expired-username
                Allocate is refused with 401 (and REALM of the server)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time

try:
    from aioice import stun
    from aioice import turn as aioice_turn
    from aioice.turn import create_turn_endpoint
except ImportError as exc:  # pragma: no cover - reported, not raised
    print(f"FAIL aioice/import: {exc} (pip install 'aioice==0.*')", flush=True)
    sys.exit(1)

USER = "interop-aioice"
FAILED = 0
TAG = "udp"


def report(ok: bool, check: str, detail: str = "") -> bool:
    global FAILED
    if not ok:
        FAILED += 1
    word = "PASS" if ok else "FAIL"
    print(f"{word} aioice/{TAG}-{check}{': ' + detail if detail else ''}", flush=True)
    return ok


def info(msg: str) -> None:
    print(f"    {msg}", flush=True)


def same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def rest_password(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def read_secrets(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\r\n") for line in f if line.strip()]


def error_of(exc: BaseException) -> str:
    if isinstance(exc, stun.TransactionFailed):
        code = exc.response.attributes.get("ERROR-CODE")
        return f"error response {code}"
    return f"{type(exc).__name__}: {exc}"


class LogCapture(logging.Handler):
    """Keeps aioice.turn's log messages, to see how an allocation ended."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class RawRecorder:
    """Records every datagram the TURN client socket gets from the server,
    before aioice demultiplexes (and filters) them."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []
        original = aioice_turn.TurnClientMixin.datagram_received
        recorder = self

        def patched(proto, data, addr):  # type: ignore[no-untyped-def]
            recorder.packets.append(bytes(data))
            return original(proto, data, addr)

        aioice_turn.TurnClientMixin.datagram_received = patched  # type: ignore[method-assign]

    def data_indications_from(self, host: str) -> int:
        count = 0
        for data in self.packets:
            if len(data) < 20 or data[0] & 0xC0:
                continue  # ChannelData
            try:
                msg = stun.parse_message(data)
            except ValueError:
                continue
            if (
                msg.message_method == stun.Method.DATA
                and msg.message_class == stun.Class.INDICATION
                and same_ip(msg.attributes.get("XOR-PEER-ADDRESS", ("", 0))[0], host)
            ):
                count += 1
        return count


class EchoPeer(asyncio.DatagramProtocol):
    """A UDP peer that sends every datagram back to where it came from."""

    def __init__(self) -> None:
        self.sources: list[tuple[str, int]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        self.transport = transport

    def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
        self.sources.append((addr[0], addr[1]))
        assert self.transport is not None
        self.transport.sendto(data, addr)


class Sink(asyncio.DatagramProtocol):
    def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
        pass


class TurnUser(asyncio.DatagramProtocol):
    """What the application sees through aioice's TURN transport."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.errors: list[BaseException] = []

    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        pass

    def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
        self.queue.put_nowait((bytes(data), (addr[0], addr[1])))

    def error_received(self, exc):  # type: ignore[no-untyped-def]
        self.errors.append(exc)


def issue_credentials(args: argparse.Namespace, secrets: list[str]) -> tuple[str, str] | None:
    if not args.bin:
        username = f"{int(time.time()) + 3600}:{USER}"
        info(f"credentials computed here (no --bin): {username}")
        return username, rest_password(secrets[0], username)
    cmd = [
        args.bin, "credentials", "issue", "--user", USER, "--ttl", "1h",
        "--config", args.config, "--json",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        report(False, "credentials", f"{' '.join(cmd)}: {exc}")
        return None
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    why = ""
    data: dict = {}
    if proc.returncode != 0:
        why = f"exit status {proc.returncode}"
    elif len(lines) != 1:
        why = f"expected one line of JSON on stdout, got {len(lines)}"
    else:
        try:
            data = json.loads(lines[0])
        except ValueError as exc:
            why = f"not JSON ({exc})"
    if not why:
        username, password, ttl = data.get("username"), data.get("password"), data.get("ttl")
        m = re.fullmatch(r"(\d+):" + re.escape(USER), username or "")
        now = time.time()
        if not isinstance(username, str) or not isinstance(password, str) or m is None:
            why = f"bad username/password fields: {data!r}"
        elif ttl != 3600:
            why = f"ttl is {ttl!r}, expected 3600"
        elif not now + 3600 - 120 <= int(m.group(1)) <= now + 3600 + 120:
            why = f"expiry {m.group(1)} is not now + 3600 s (now {int(now)})"
        elif password != rest_password(secrets[0], username):
            why = "password is not base64(HMAC-SHA1(first secret line, username))"
    if why:
        report(False, "credentials", f"{why}; stdout={proc.stdout!r} stderr={proc.stderr[-500:]!r}")
        return None
    report(True, "credentials", f"username {data['username']}")
    return data["username"], data["password"]


async def expect_refused(check: str, server, username: str, password: str, realm: str) -> None:
    try:
        transport, _ = await asyncio.wait_for(
            create_turn_endpoint(TurnUser, server, username, password), 30
        )
    except stun.TransactionFailed as exc:
        code = exc.response.error_code
        got_realm = exc.response.attributes.get("REALM")
        if code == 401 and got_realm == realm and "NONCE" in exc.response.attributes:
            report(True, check, "Allocate refused with 401")
        else:
            report(False, check, f"expected 401 with REALM {realm!r} and NONCE, got {error_of(exc)}, "
                   f"REALM {got_realm!r}")
        return
    except (Exception, asyncio.TimeoutError) as exc:  # noqa: BLE001 - reported
        report(False, check, f"expected a 401 error response, got {error_of(exc)}")
        return
    report(False, check, f"allocation granted: {transport.get_extra_info('sockname')}")
    transport.close()
    await asyncio.sleep(0.5)


async def recv_one(user: TurnUser, timeout: float) -> tuple[bytes, tuple[str, int]] | None:
    try:
        return await asyncio.wait_for(user.queue.get(), timeout)
    except asyncio.TimeoutError:
        return None


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    secrets = read_secrets(args.secret_file)
    server = (args.server_host, args.server_port)
    lo, hi = (int(x) for x in args.port_range.split("-"))
    capture = LogCapture()
    logging.getLogger("aioice.turn").addHandler(capture)
    logging.getLogger("aioice.turn").setLevel(logging.INFO)
    raw = RawRecorder()

    creds = issue_credentials(args, secrets)
    if creds is None:
        return
    username, password = creds

    # Echo peers, and two plain sockets: a permitted host on another port, and a
    # host that never gets a permission.
    peers = []
    for host in args.peer_hosts:
        t, p = await loop.create_datagram_endpoint(EchoPeer, local_addr=(host, 0))
        peers.append((t, p, t.get_extra_info("sockname")[:2]))
    other_port_t, _ = await loop.create_datagram_endpoint(Sink, local_addr=(args.peer_hosts[0], 0))
    stranger_t, _ = await loop.create_datagram_endpoint(Sink, local_addr=(args.stranger_host, 0))

    # --- allocate ---
    try:
        transport, user = await asyncio.wait_for(
            create_turn_endpoint(TurnUser, server, username, password, lifetime=600), 30
        )
    except (Exception, asyncio.TimeoutError) as exc:  # noqa: BLE001 - reported
        report(False, "allocate", f"create_turn_endpoint({server}) failed: {error_of(exc)}")
        return
    relayed = transport.get_extra_info("sockname")
    mapped = transport.get_extra_info("related_address")
    why = ""
    if not same_ip(relayed[0], args.expect_relay_host):
        why = f"relayed address {relayed} is not on {args.expect_relay_host}"
    elif not lo <= relayed[1] <= hi:
        why = f"relayed port {relayed[1]} is outside {args.port_range}"
    elif not same_ip(mapped[0], args.server_host):
        why = f"mapped address {mapped} is not on the client's host {args.server_host}"
    report(not why, "allocate", why or f"relayed {relayed[0]}:{relayed[1]}, mapped {mapped[0]}:{mapped[1]}")
    relayed = (relayed[0], relayed[1])

    try:
        # --- roundtrip ---
        why = ""
        sizes = [1, 13, 100, 500, 1200]
        for _, _, peer_addr in peers:
            for i, size in enumerate(sizes):
                payload = (f"{peer_addr[0]}#{i}#".encode() + os.urandom(size))[:size]
                transport.sendto(payload, peer_addr)
                got = await recv_one(user, 5)
                if got is None:
                    why = f"no echo within 5 s for {size} bytes to {peer_addr}"
                elif got != (payload, peer_addr):
                    why = f"echo mismatch for {size} bytes: got {len(got[0])} bytes from {got[1]}, " \
                          f"expected {size} bytes from {peer_addr}"
                if user.errors:
                    why = f"send failed: {error_of(user.errors[0])}"
                if why:
                    break
            if why:
                break
        if not why:
            for _, p, peer_addr in peers:
                wrong = [s for s in p.sources if s != relayed]
                if wrong:
                    why = f"peer {peer_addr} got datagrams from {wrong[0]}, not from the relayed address {relayed}"
        report(not why, "roundtrip", why or f"{len(sizes)} sizes x {len(peers)} peers, via {relayed[0]}:{relayed[1]}")

        # --- burst ---
        if not why:
            peer_addr = peers[0][2]
            sent = [f"burst-{i}-".encode() + os.urandom(80) for i in range(50)]
            for payload in sent:
                transport.sendto(payload, peer_addr)
            got_back = []
            deadline = loop.time() + 5
            while len(got_back) < len(sent) and loop.time() < deadline:
                item = await recv_one(user, max(0.01, deadline - loop.time()))
                if item is not None:
                    got_back.append(item[0])
            ok = sorted(got_back) == sorted(sent)
            report(ok, "burst", f"{len(got_back)} of {len(sent)} echoed" + ("" if ok else " (or payloads differ)"))

        # --- permission-any-port: the first peer's IP has a permission ---
        other_addr = other_port_t.get_extra_info("sockname")[:2]
        other_port_t.sendto(b"from-another-port", relayed)
        got = await recv_one(user, 3)
        ok = got == (b"from-another-port", (other_addr[0], other_addr[1]))
        report(ok, "permission-any-port", f"got {got!r}" if not ok else f"delivered from {other_addr[0]}:{other_addr[1]}")

        # --- no-permission: nobody asked for a permission for this host ---
        stranger_t.sendto(b"from-a-stranger", relayed)
        await asyncio.sleep(1.0)
        leaked = raw.data_indications_from(args.stranger_host)
        # The datagram from the permitted host's other port came as a Data
        # indication: that shows the raw recorder works.
        seen = raw.data_indications_from(args.peer_hosts[0])
        if leaked:
            report(False, "no-permission",
                   f"{leaked} Data indication(s) from {args.stranger_host}, which has no permission")
        elif not seen:
            report(False, "no-permission", "inconclusive: no Data indication was seen on the raw socket at all")
        else:
            report(True, "no-permission", f"{args.stranger_host} without a permission was dropped")

        # --- refresh (through aioice's own request machinery) ---
        inner = getattr(transport, "_TurnTransport__inner_protocol", None)
        if inner is None:
            info("refresh: skipped, this aioice has no inner protocol attribute")
        else:
            request = stun.Message(message_method=stun.Method.REFRESH, message_class=stun.Class.REQUEST)
            request.attributes["LIFETIME"] = 600
            try:
                response, _ = await asyncio.wait_for(inner.request_with_retry(request), 30)
                lifetime = response.attributes.get("LIFETIME")
                report(isinstance(lifetime, int) and lifetime > 0, "refresh", f"LIFETIME {lifetime}")
            except (Exception, asyncio.TimeoutError) as exc:  # noqa: BLE001 - reported
                report(False, "refresh", f"Refresh failed: {error_of(exc)}")
    finally:
        # --- deallocate ---
        transport.close()
        deadline = loop.time() + 40
        outcome = None
        while loop.time() < deadline and outcome is None:
            for m in capture.messages:
                if m.startswith("TURN allocation deleted") or m.startswith("TURN allocation deletion failed"):
                    outcome = m
            await asyncio.sleep(0.05)
        freed = False
        if outcome and "deleted" in outcome and "failed" not in outcome:
            fam = socket.AF_INET6 if ":" in relayed[0] else socket.AF_INET
            for _ in range(30):
                s = socket.socket(fam, socket.SOCK_DGRAM)
                try:
                    s.bind(relayed)
                    freed = True
                    break
                except OSError:
                    await asyncio.sleep(0.1)
                finally:
                    s.close()
        if outcome is None:
            report(False, "deallocate", "no outcome of the deleting Refresh (LIFETIME 0) within 40 s")
        elif "failed" in outcome:
            report(False, "deallocate", outcome)
        elif not freed:
            report(False, "deallocate", f"allocation deleted, but {relayed} is still bound after 3 s")
        else:
            report(True, "deallocate", "Refresh LIFETIME=0 succeeded and the relayed port is free again")
        for t, _, _ in peers:
            t.close()
        other_port_t.close()
        stranger_t.close()

    # --- refusals ---
    await expect_refused("wrong-password", server, username, "not-the-password", args.realm)
    expired = f"{int(time.time()) - 60}:{USER}"
    await expect_refused("expired-username", server, expired, rest_password(secrets[0], expired), args.realm)


def main() -> int:
    global TAG
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tag", default="udp", help="prefix of the check names")
    ap.add_argument("--bin", help="eeaturn binary, for `credentials issue` (else computed here)")
    ap.add_argument("--config", help="server config file (with --bin)")
    ap.add_argument("--secret-file", required=True)
    ap.add_argument("--realm", default="eeaturn.dev")
    ap.add_argument("--server-host", default="127.0.0.1")
    ap.add_argument("--server-port", type=int, required=True)
    ap.add_argument("--peer-hosts", nargs="+", default=["127.0.2.2", "127.0.2.3"])
    ap.add_argument("--stranger-host", default="127.0.2.4")
    ap.add_argument("--expect-relay-host", default="127.0.0.1")
    ap.add_argument("--port-range", required=True, help="LO-HI, the server's relay port range")
    ap.add_argument("--timeout", type=float, default=150)
    args = ap.parse_args()
    TAG = args.tag
    for host in [args.server_host, args.expect_relay_host, args.stranger_host, *args.peer_hosts]:
        if not ipaddress.ip_address(host).is_loopback:
            ap.error(f"{host} is not a loopback address; this test only talks to loopback")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        asyncio.run(asyncio.wait_for(run(args), args.timeout))
    except asyncio.TimeoutError:
        report(False, "timeout", f"the checks did not finish within {args.timeout} s")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
