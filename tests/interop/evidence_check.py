#!/usr/bin/env python3
"""Compare a node's evidence with what turnutils_uclient reported (tests/interop/evidence.sh).

Usage: evidence_check.py --dir EVIDENCE_DIR --expected EXPECTED.jsonl --relay-host ADDR

EXPECTED.jsonl has one object per run of the tool (written by evidence.sh): its name and
kind ("relayed", "peer-refused", "client-refused"), the relayed addresses it printed (its
probe allocation first, the one carrying data last), the channel numbers it bound, how many
ChannelBinds it sent, its tot_send/recv msgs and bytes, and how many 403s it got for the peer
and for the client. Prints one "PASS name: detail" or "FAIL name: why" line per check.
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


class Checks:
    def __init__(self):
        self.failed = 0

    def check(self, name, problems, detail):
        if problems:
            self.failed += 1
            print(f"FAIL {name}: {'; '.join(problems)}")
        else:
            print(f"PASS {name}: {detail}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--expected", required=True)
    parser.add_argument("--relay-host", required=True)
    args = parser.parse_args()
    runs = [json.loads(l) for l in pathlib.Path(args.expected).read_text().splitlines() if l]
    recs = records(args.dir)
    kinds = [r["kind"] for r in recs]
    by_kind = lambda k: [r for r in recs if r["kind"] == k]
    created = {r["allocation"]: r for r in by_kind("allocation-created")}
    ended = {r["allocation"]: r for r in by_kind("allocation-ended")}
    by_relay = {}
    for a in created.values():
        for relayed in a["relayed"]:
            by_relay.setdefault(relayed, []).append(a["allocation"])
    c = Checks()

    problems = []
    if kinds[:2] != ["node-started", "policy-in-force"] or kinds[-1] != "node-stopped":
        problems.append(f"the run is not framed by node-started/policy-in-force ... node-stopped: {kinds}")
    if [r["seq"] for r in recs] != list(range(1, len(recs) + 1)):
        problems.append("seqs are not 1..n")
    c.check("evidence-framing", problems, f"{len(recs)} records, seq 1 to {len(recs)}")

    # Exactly the allocations the tool made: its relayed addresses, one allocation each.
    expected_relays = [addr for run in runs for addr in run["relays"]]
    problems = []
    for addr in expected_relays:
        if len(by_relay.get(addr, [])) != 1:
            problems.append(f"{addr}: {len(by_relay.get(addr, []))} allocation-created records")
    if sorted(by_relay) != sorted(expected_relays):
        problems.append(f"allocations on record {sorted(by_relay)}, the tool got {sorted(expected_relays)}")
    for a in created.values():
        if (a["country"], a["rule"], a["transport"]) != ("DE", "region", "udp"):
            problems.append(f"{a['allocation']}: {a['country']} {a['rule']} {a['transport']}")
        if not a["client"].startswith("p1:") or not (a.get("user") or "").startswith("u1:"):
            problems.append(f"{a['allocation']}: client or user not pseudonymised")
        if a["allocation"] not in ended:
            problems.append(f"{a['allocation']}: no allocation-ended record")
    if set(ended) != set(created):
        problems.append("allocation-ended records without allocation-created")
    c.check("allocations", problems,
            f"{len(created)} allocations (DE, rule region), each ended, on exactly the tool's relayed addresses")

    denied_total = 0
    for run in runs:
        name = run["name"]
        if run["kind"] == "client-refused":
            continue
        data_alloc = (by_relay.get(run["relays"][-1]) or [None])[0] if run["relays"] else None
        if data_alloc is None:
            c.check(f"{name}/allocation", ["no allocation for the tool's relayed address"], "")
            continue
        perms = [r for r in by_kind("permission") if r["allocation"] == data_alloc]
        chans = [r for r in by_kind("channel-bound") if r["allocation"] == data_alloc]
        peers = ended[data_alloc]["peers"] if data_alloc in ended else None
        probe = [a for addr in run["relays"][:-1] for a in by_relay.get(addr, [])]
        problems = []
        for a in probe:
            e = ended.get(a)
            if e is None or e["peers"] or any(e["totals"].values()):
                problems.append(f"the probe allocation {a} carried traffic or has no end")
        if run["kind"] == "relayed":
            allowed = [p for p in perms if p["decision"] == "allowed"]
            if len(allowed) != len(perms):
                problems.append(f"{len(perms) - len(allowed)} denied permissions")
            if any((p["country"], p["rule"]) != ("FR", "region") for p in perms):
                problems.append("a permission not for FR by rule region")
            if len(allowed) < run["channel_binds"]:
                problems.append(f"{len(allowed)} permissions for {run['channel_binds']} ChannelBinds sent")
            got_channels = sorted(f"{ch['channel']:#06x}" for ch in chans)
            if got_channels != sorted(run["channels"]):
                problems.append(f"channels on record {got_channels}, the tool bound {sorted(run['channels'])}")
            if any(ch["country"] != "FR" for ch in chans):
                problems.append("a channel to a peer outside FR")
            c.check(f"{name}/permissions-and-channels", problems,
                    f"{len(allowed)} permissions allowed (FR, region) for {run['channel_binds']} ChannelBinds, "
                    f"channels {' '.join(got_channels)}")
            problems = []
            if peers is None or len(peers) != 1:
                problems.append(f"expected one peer in allocation-ended, got {peers}")
            else:
                p = peers[0]
                want = {
                    "packets_to_peer": run["sent_msgs"],
                    "bytes_to_peer": run["sent_bytes"],
                    "packets_to_client": run["recv_msgs"],
                    "bytes_to_client": run["recv_bytes"],
                }
                got = {k: p[k] for k in want}
                if got != want:
                    problems.append(f"per-peer counters {got}, the tool counted {want}")
                if ended[data_alloc]["totals"] != got:
                    problems.append(f"totals {ended[data_alloc]['totals']} differ from the peer's {got}")
                if p["peer"] != (chans[0]["peer"] if chans else perms[0]["peer"]):
                    problems.append("the counted peer is not the permitted one")
            c.check(f"{name}/bytes", problems,
                    f"to peer {run['sent_msgs']} packets/{run['sent_bytes']} bytes, to client "
                    f"{run['recv_msgs']} packets/{run['recv_bytes']} bytes, as the tool counted")
        else:  # peer-refused
            denied = [p for p in perms if p["decision"] == "denied"]
            denied_total += len(denied)
            if len(denied) != run["peer_403"] or not denied:
                problems.append(f"{len(denied)} denied permissions for {run['peer_403']} 403s")
            if any(p["decision"] != "denied" for p in perms):
                problems.append("a permission was allowed")
            if any((p["country"], p["rule"]) != ("US", "outside-region") for p in denied):
                problems.append("a denial not for US by rule outside-region")
            if chans:
                problems.append(f"{len(chans)} channels bound")
            if peers is None or peers or any(ended[data_alloc]["totals"].values()):
                problems.append(f"traffic on the refused allocation: {ended.get(data_alloc)}")
            c.check(f"{name}/refusal", problems,
                    f"{len(denied)} denied permission(s) (US, outside-region) for {run['peer_403']} 403(s), "
                    "no channel, no traffic")

    refused = by_kind("allocation-refused")
    expected_refused = sum(run["client_403"] for run in runs)
    problems = []
    client_refused_runs = any(run["kind"] == "client-refused" for run in runs)
    if len(refused) != expected_refused or (client_refused_runs and not refused):
        problems.append(f"{len(refused)} allocation-refused records for {expected_refused} 403s at Allocate")
    for r in refused:
        if (r["stage"], r["country"], r["rule"]) != ("allocate", "US", "outside-region"):
            problems.append(f"{r['stage']} {r['country']} {r['rule']}")
    denied_all = [p for p in by_kind("permission") if p["decision"] == "denied"]
    if len(denied_all) != denied_total:
        problems.append(f"{len(denied_all)} denied permissions on record, {denied_total} expected")
    c.check("refusals", problems,
            f"{len(refused)} allocation-refused (allocate, US, outside-region), "
            f"{len(denied_all)} permission(s) denied, nothing else")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
