#!/bin/sh
# Builds bpf/relay.bpf.o from bpf/relay.bpf.c with Debian's clang, reproducibly: fixed flags,
# source paths relative to the repository, DWARF stripped (BTF kept: the maps are declared
# with it). Usage: bpf/build.sh [OUTPUT]  (default: bpf/relay.bpf.o)
set -eu
cd "$(dirname "$0")/.."
out=${1:-bpf/relay.bpf.o}
for tool in clang llvm-strip; do
	command -v "$tool" >/dev/null || {
		echo "bpf/build.sh: $tool not found; install it: apt-get install -y clang llvm libbpf-dev" >&2
		exit 1
	}
done
[ -f /usr/include/bpf/bpf_helpers.h ] || {
	echo "bpf/build.sh: libbpf headers not found; install them: apt-get install -y libbpf-dev" >&2
	exit 1
}
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
tmp=$(mktemp "${out}.XXXXXX")
trap 'rm -f "$tmp"' EXIT
clang -target bpf -mcpu=v3 -O2 -g -Wall -Werror \
	-I"/usr/include/$multiarch" \
	-ffile-prefix-map="$PWD"=. -fdebug-compilation-dir=. \
	-c bpf/relay.bpf.c -o "$tmp"
llvm-strip -g "$tmp"
mv "$tmp" "$out"
trap - EXIT
