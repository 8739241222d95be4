#!/usr/bin/env python3
"""Checks the PromQL of the Grafana dashboard (and of the alert rules) against docs/metrics.md.

Every metric name a query uses must be listed in docs/metrics.md (or be Prometheus's own `up`),
and every label a query groups by (`by (...)`) or matches on (`{label=...}`) must be one the
doc lists for a metric of that query (or `job` / `instance`, which Prometheus adds). The
dashboard must parse as JSON, have panels with queries, and use the datasource variable.

Usage: check_queries.py DOCS_METRICS_MD DASHBOARD_JSON [ALERTS_YML]
Exit status 0 when everything checks out; otherwise every problem is printed and it is 1.
"""

import json
import re
import sys

# Words of PromQL that are not metric names when they are not followed by "(".
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "offset", "bool", "inf", "nan"}
# Labels every scraped series has.
TARGET_LABELS = {"job", "instance"}
# Prometheus's own series.
BUILTIN_METRICS = {"up": set()}


def documented(path):
    """Returns {metric name: set of labels} from the table of docs/metrics.md."""
    metrics = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("| `"):
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            name = cells[0].strip("`")
            if not (name.startswith("eeaturn_") or name.startswith("process_")):
                continue
            labels = set(re.findall(r"`([a-z_]+)`", cells[2])) if len(cells) > 2 else set()
            metrics[name] = labels
    return metrics


def strip_strings(expr):
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def names_and_labels(expr):
    """Returns (metric names, grouping/matcher labels) used in one PromQL expression."""
    e = strip_strings(expr)
    e = re.sub(r"\$\{?\w+\}?", "", e)  # Grafana variables ($__rate_interval, $instance)
    labels = set()
    for inner in re.findall(r"\{([^}]*)\}", e):
        labels |= set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", inner))
    for kw in ("by", "without", "on", "ignoring", "group_left", "group_right"):
        for inner in re.findall(r"\b%s\s*\(([^)]*)\)" % kw, e):
            labels |= {w.strip() for w in inner.split(",") if w.strip()}
        e = re.sub(r"\b%s\s*\([^)]*\)" % kw, " ", e)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        word = m.group(0)
        rest = e[m.end():].lstrip()
        if rest.startswith("("):
            continue  # a function
        if word.lower() in KEYWORDS:
            continue
        if m.start() > 0 and (e[m.start() - 1].isdigit() or e[m.start() - 1] == "."):
            continue  # exponent or unit of a number, e.g. 1e3
        names.add(word)
    return names, labels


def check(expr, where, metrics, problems):
    names, labels = names_and_labels(expr)
    if not names:
        problems.append(f"{where}: no metric in {expr!r}")
    known = {}
    for n in names:
        if n in metrics:
            known[n] = metrics[n]
        elif n in BUILTIN_METRICS:
            known[n] = BUILTIN_METRICS[n]
        else:
            problems.append(f"{where}: {n} is not in docs/metrics.md ({expr!r})")
    allowed = set(TARGET_LABELS)
    for ls in known.values():
        allowed |= ls
    for label in labels - allowed:
        problems.append(
            f"{where}: label {label!r} is not a label of {sorted(known)} in docs/metrics.md")


def panels_of(dash):
    for p in dash.get("panels", []):
        yield p
        for q in p.get("panels", []):  # collapsed rows hold their panels
            yield q


def main(argv):
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    metrics = documented(argv[1])
    problems = []
    if len(metrics) < 10:
        problems.append(f"{argv[1]}: only {len(metrics)} metrics found in its table")
    with open(argv[2], encoding="utf-8") as f:
        dash = json.load(f)
    queries = 0
    for p in panels_of(dash):
        if p.get("type") == "row":
            continue
        title = p.get("title", "?")
        targets = p.get("targets", [])
        if not targets:
            problems.append(f"panel {title!r}: no query")
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"panel {title!r}: does not use the datasource variable")
        for t in targets:
            queries += 1
            check(t.get("expr", ""), f"panel {title!r} {t.get('refId')}", metrics, problems)
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("definition") or v.get("query", {}).get("query", "")
            inner = re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", q)
            check(inner, f"variable {v.get('name')!r}", metrics, problems)
    if queries < 20:
        problems.append(f"the dashboard has only {queries} queries")
    if len(argv) == 4:
        import yaml  # Debian python3-yaml
        with open(argv[3], encoding="utf-8") as f:
            rules = yaml.safe_load(f)
        for g in rules["groups"]:
            for r in g["rules"]:
                check(str(r["expr"]), f"alert {r.get('alert')!r}", metrics, problems)
    for pr in problems:
        print(pr, file=sys.stderr)
    if problems:
        return 1
    print(f"ok: {queries} dashboard queries use only the {len(metrics)} documented metrics and their labels")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
