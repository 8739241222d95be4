#!/usr/bin/env python3
"""Validate every line of eeaturn evidence segments against the published record schema.

Usage: check-schema.py [--schema docs/evidence/record.schema.json] PATH...

Each PATH is a .jsonl segment or a directory searched for them. Exits 1 if any line is
invalid (each is reported with file and line number), 2 if no line was checked.
"""

import argparse
import json
import pathlib
import sys

import jsonschema

DEFAULT_SCHEMA = pathlib.Path(__file__).resolve().parents[2] / "docs/evidence/record.schema.json"


def segments(paths):
    for p in map(pathlib.Path, paths):
        if p.is_dir():
            yield from sorted(p.rglob("*.jsonl"))
        else:
            yield p


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schema", default=DEFAULT_SCHEMA, type=pathlib.Path)
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args()
    schema = json.loads(args.schema.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    checked = invalid = 0
    kinds = set()
    for path in segments(args.paths):
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                if not raw.endswith(b"\n"):
                    print(f"{path}:{number}: torn final line (no newline), not checked")
                    continue
                checked += 1
                try:
                    record = json.loads(raw)
                except ValueError as e:
                    invalid += 1
                    print(f"{path}:{number}: not JSON: {e}")
                    continue
                errors = list(validator.iter_errors(record))
                if errors:
                    invalid += 1
                    best = jsonschema.exceptions.best_match(errors)
                    print(f"{path}:{number}: {record.get('kind')}: {best.message}")
                else:
                    kinds.add(record["kind"])
    print(f"{checked} records checked, {invalid} invalid; kinds seen: {', '.join(sorted(kinds))}")
    if checked == 0:
        return 2
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())
