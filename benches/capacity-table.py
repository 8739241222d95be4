#!/usr/bin/env python3
"""Renders benches/veth-capacity.sh's capacity.jsonl as Markdown tables.

    python3 benches/capacity-table.py DIR/capacity.jsonl [SERVER_CPU [LOAD_CPU]]

One table per load (fixed rate, saturating). Each cell is the median over the runs (the
spread, min–max, in brackets when there is more than one run): delivered msg/s, loss, the
one-way latency p50 and p99 through the relay host (kernel clock, from xdpgen's frames), the
relay core's busy share and busy microseconds per delivered packet, and the load core's busy
share. Ratios are against user-space eeaturn and coturn from the same runs.
"""

import json
import statistics
import sys
from collections import defaultdict

ORDER = ["coturn", "eeaturn", "eeaturn-kernel"]


def core(cell, cpu):
    for c in cell.get("cpu", []):
        if c["cpu"] == cpu:
            return c
    return None


def metrics(cell, server_cpu, load_cpu):
    m = {
        "delivered": cell["delivered_pps"],
        "loss": cell["loss_pct"],
        "p50": cell["lat_p50_us"],
        "p99": cell["lat_p99_us"],
    }
    s = core(cell, server_cpu)
    if s is not None:
        m["core"] = s["busy_pct"]
        if cell["delivered"] > 0:
            m["us"] = s["busy_jiffies"] / cell["clk_tck"] * 1e6 / cell["delivered"]
    t = core(cell, load_cpu)
    if t is not None:
        m["load"] = t["busy_pct"]
    m["drops"] = cell.get("drops", {})
    return m


def fmt(values, spec):
    if not values:
        return "–"
    med = format(statistics.median(values), spec)
    if len(values) == 1:
        return med
    return f"{med} ({format(min(values), spec)}–{format(max(values), spec)})"


LOSS_BOUND = 0.1


def main():
    path = sys.argv[1]
    server_cpu = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    load_cpu = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    cells = defaultdict(list)
    with open(path) as f:
        for line in f:
            if line.strip():
                c = json.loads(line)
                cells[(c["load"], c["rate"], c["direction"], c["server"])].append(
                    metrics(c, server_cpu, load_cpu))
    order = lambda s: ORDER.index(s) if s in ORDER else 99
    directions = sorted({k[2] for k in cells}, key=lambda d: d != "to-peer")

    for rate in sorted({k[1] for k in cells if k[0] == "fixed"}):
        print(f"\n### fixed rate, {rate:,} msg/s offered\n")
        print("| direction | server | delivered msg/s | loss % | p50 µs | p99 µs "
              f"| relay core (CPU {server_cpu}) % | relay core µs/pkt | load core (CPU {load_cpu}) % "
              "| µs/pkt ÷ coturn | µs/pkt ÷ eeaturn | p99 ÷ eeaturn |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for d in directions:
            servers = sorted({k[3] for k in cells if k[:3] == ("fixed", rate, d)}, key=order)
            med = {s: {k: statistics.median(v) for k in ("us", "p99")
                       if (v := [m[k] for m in cells[("fixed", rate, d, s)] if k in m])}
                   for s in servers}
            for s in servers:
                ms = cells[("fixed", rate, d, s)]
                col = lambda k, spec: fmt([m[k] for m in ms if k in m], spec)
                def ratio(base, k):
                    b, v = med.get(base, {}).get(k), med[s].get(k)
                    return f"{v / b:.2f}" if b and v is not None else "–"
                print(f"| {d} | {s} | {col('delivered', ',.0f')} "
                      f"| {col('loss', '.3f')} | {col('p50', '.0f')} | {col('p99', '.0f')} "
                      f"| {col('core', '.0f')} | {col('us', '.2f')} | {col('load', '.0f')} "
                      f"| {ratio('coturn', 'us')} | {ratio('eeaturn', 'us')} | {ratio('eeaturn', 'p99')} |")

    rates = sorted({k[1] for k in cells if k[0] == "sweep"})
    if not rates:
        return
    print("\n### sweep: delivered msg/s (loss %) at each offered rate\n")
    print("| direction | server | " + " | ".join(f"{r:,}" for r in rates)
          + f" | most delivered | highest rate with loss < {LOSS_BOUND} % "
          "| most delivered ÷ eeaturn | ÷ coturn |")
    print("| --- | --- | " + " | ".join("---:" for _ in rates) + " | ---: | ---: | ---: | ---: |")
    for d in directions:
        servers = sorted({k[3] for k in cells if k[0] == "sweep" and k[2] == d}, key=order)
        best = {}
        for s in servers:
            per_rate = {}
            for r in rates:
                ms = cells.get(("sweep", r, d, s), [])
                if ms:
                    per_rate[r] = (statistics.median(m["delivered"] for m in ms),
                                   statistics.median(m["loss"] for m in ms))
            most = max((v[0] for v in per_rate.values()), default=None)
            clean = [r for r, v in per_rate.items() if v[1] < LOSS_BOUND]
            best[s] = (most, max(clean) if clean else None, per_rate)
        for s in servers:
            most, clean, per_rate = best[s]
            row = " | ".join(f"{per_rate[r][0]:,.0f} ({per_rate[r][1]:.2f})" if r in per_rate
                             else "–" for r in rates)
            ratio = lambda b: (f"{most / best[b][0]:.2f}" if b in best and best[b][0] else "–")
            print(f"| {d} | {s} | {row} | {most:,.0f} | "
                  f"{f'{clean:,}' if clean else 'none'} | {ratio('eeaturn')} | {ratio('coturn')} |")


    # The relay's transmit drops (veth tx_dropped) include its XDP transmit errors; receive
    # queue drops on either side never occurred here, but are in the JSON.
    kinds = [("into_relay_ring", "full ring into the relay (rc)"),
             ("relay_sockets", "full socket buffers of the relay"),
             ("out_of_relay_skb", "full ring out of the relay (to o)")]
    print("\n### sweep: where frames were dropped (medians per cell, warm-up and drain included)\n")
    print("| direction | server | offered msg/s | " + " | ".join(k[1] for k in kinds) + " |")
    print("| --- | --- | ---: | " + " | ".join("---:" for _ in kinds) + " |")
    for d in directions:
        servers = sorted({k[3] for k in cells if k[0] == "sweep" and k[2] == d}, key=order)
        for s in servers:
            for r in rates:
                ms = cells.get(("sweep", r, d, s), [])
                if not ms:
                    continue
                vals = [f"{statistics.median(m['drops'].get(k, 0) for m in ms):,.0f}"
                        for k, _ in kinds]
                print(f"| {d} | {s} | {r:,} | " + " | ".join(vals) + " |")


if __name__ == "__main__":
    main()
