#!/bin/sh
# Fails when the committed bpf/relay.bpf.o is not what bpf/build.sh makes of bpf/relay.bpf.c:
# rebuilds to a temporary file and compares the bytes. `.ci/run` calls it.
set -eu
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bpf/build.sh "$tmp/relay.bpf.o"
if ! cmp -s "$tmp/relay.bpf.o" bpf/relay.bpf.o; then
	echo "bpf/relay.bpf.o is stale: run bpf/build.sh and commit the object with its source" >&2
	exit 1
fi
echo "bpf/relay.bpf.o matches bpf/relay.bpf.c"
