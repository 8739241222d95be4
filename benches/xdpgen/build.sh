#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Builds xdpgen (user space) and xdpgen.bpf.o (its XDP programs) into one directory:
#   bash benches/xdpgen/build.sh [OUTDIR]      (default: benches/xdpgen/out)
# The tool finds xdpgen.bpf.o next to its own executable. Installs clang and libbpf-dev
# with apt-get when they are missing. XDPGEN_CFLAGS adds flags to both compilers (.ci/run
# builds with -Werror).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$HERE/out}"

missing=()
command -v clang >/dev/null 2>&1 || missing+=(clang)
[ -f /usr/include/bpf/libbpf.h ] || missing+=(libbpf-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "build.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends clang libbpf-dev ||
    { apt-get update && apt-get install -y --no-install-recommends clang libbpf-dev; }
fi
CC="${CC:-cc}"
command -v "$CC" >/dev/null 2>&1 || CC=clang

# asm/types.h lives in the multiarch include directory on Debian.
MULTIARCH="$( (gcc -print-multiarch || dpkg-architecture -qDEB_HOST_MULTIARCH) 2>/dev/null || true)"
[ -n "$MULTIARCH" ] || MULTIARCH="$(uname -m)-linux-gnu"

mkdir -p "$OUT"
# shellcheck disable=SC2086 # XDPGEN_CFLAGS is a list of flags
clang -O2 -g -Wall ${XDPGEN_CFLAGS:-} -target bpf -I"/usr/include/$MULTIARCH" -c "$HERE/xdpgen.bpf.c" -o "$OUT/xdpgen.bpf.o"
# shellcheck disable=SC2086
"$CC" -O2 -Wall -Wextra ${XDPGEN_CFLAGS:-} -o "$OUT/xdpgen" "$HERE/xdpgen.c" -lbpf
echo "build.sh: built $OUT/xdpgen and $OUT/xdpgen.bpf.o" >&2
