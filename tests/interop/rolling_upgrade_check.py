#!/usr/bin/env python3
"""Check one node's evidence after a drain (tests/interop/rolling-upgrade.sh).

Usage: rolling_upgrade_check.py --dir EVIDENCE_DIR --node NAME --calls CALLS.jsonl
                                --stops drain[,shutdown...]

CALLS.jsonl has one object per turnutils_uclient run that carried a call through this node:
its name, the relayed address on which it sent its data (the last "Received relay addr" it
printed), the UTC times it was started and ended (RFC 3339, milliseconds), and the messages
and bytes it sent and got back. --stops lists the node-stopped reasons expected, oldest first: "drain"
means the drain ended the run ("drained" or "drain-timeout"), anything else is taken as is.

Checks, each printed as "PASS name: detail" or "FAIL name: why":
  - every call's allocation (the newest one created on its relayed address while the call
    ran: a restarted node may give a later call the same port) ended "released", with packets and bytes both ways equal to what the tool sent
    and got back: the relay carried the call to its end, nothing lost on the way;
  - no call was cut: every allocation that ended for any other reason (the drain timeout or
    a stop end the rest with "shutdown") relayed nothing; these are the tool's idle probe
    allocations;
  - every allocation created has ended (a clean stop leaves none open);
  - the node stopped as many times as listed, with these reasons, and node-stopped is the
    last record (the writer flushed and closed the chain before the process exited).
"""

import argparse
import json
import pathlib
import sys


def records(directory):
    out = []
    for path in sorted((pathlib.Path(directory) / "segments").glob("*.jsonl")):
        with open(path, "rb") as f:
            for raw in f:
                if raw.endswith(b"\n"):
                    out.append(json.loads(raw))
    return out


def report(ok, name, detail):
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--calls", required=True)
    ap.add_argument("--stops", required=True)
    args = ap.parse_args()

    recs = records(args.dir)
    created = [r for r in recs if r["kind"] == "allocation-created"]
    ended = {r["allocation"]: r for r in recs if r["kind"] == "allocation-ended"}
    calls = [json.loads(line) for line in open(args.calls) if line.strip()]
    node = args.node
    ok = True

    for call in calls:
        name = f"{node}-evidence-{call['name']}"
        mine = [
            c
            for c in created
            if call["relayed"] in c["relayed"] and call["started"] <= c["time"] <= call["ended"]
        ]
        if not mine:
            ok &= report(
                False,
                name,
                f"no allocation on {call['relayed']} between {call['started']} and {call['ended']}",
            )
            continue
        alloc = mine[-1]["allocation"]
        end = ended.get(alloc)
        if end is None:
            ok &= report(False, name, f"allocation {alloc} never ended")
            continue
        t = end["totals"]
        want = {
            "packets_to_peer": call["sent"],
            "bytes_to_peer": call["sent_bytes"],
            "packets_to_client": call["received"],
            "bytes_to_client": call["received_bytes"],
        }
        got = {k: t[k] for k in want}
        good = end["reason"] == "released" and got == want
        ok &= report(
            good,
            name,
            f"reason {end['reason']}, {got['packets_to_peer']} packets to the peer and "
            f"{got['packets_to_client']} back, {end['duration_ms']} ms"
            + ("" if good else f"; expected released and {want}"),
        )

    cut = []
    idle = 0
    for end in ended.values():
        if end["reason"] == "released":
            continue
        if any(v != 0 for v in end["totals"].values()):
            cut.append(f"{end['allocation']} ({end['reason']}, {end['totals']})")
        else:
            idle += 1
    ok &= report(
        not cut,
        f"{node}-no-call-cut",
        f"{idle} idle allocation(s) ended by the drain or a stop, none had relayed anything"
        if not cut
        else "allocations with traffic ended by the relay: " + "; ".join(cut),
    )

    open_ = [c["allocation"] for c in created if c["allocation"] not in ended]
    ok &= report(
        not open_,
        f"{node}-every-allocation-ended",
        f"{len(created)} created, all ended" if not open_ else f"never ended: {open_}",
    )

    stops = [r["reason"] for r in recs if r["kind"] == "node-stopped"]
    want = args.stops.split(",")
    matches = len(stops) == len(want) and all(
        got in ("drained", "drain-timeout") if w == "drain" else got == w
        for got, w in zip(stops, want)
    )
    last = recs[-1]["kind"] if recs else None
    ok &= report(
        matches and last == "node-stopped",
        f"{node}-stopped-cleanly",
        f"node-stopped reasons {stops} (expected {want}), last record {last}",
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
