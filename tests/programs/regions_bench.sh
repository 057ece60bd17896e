#!/usr/bin/env bash
# The fault path's cost with many traced regions vs one (issue 13): the same traced
# access with 1, 1000, 3000 and 40,000 regions registered, as ratios to 1 (medians).
# Thread CPU time per access (the program times itself), so a loaded machine skews less.
# Usage: tests/programs/regions_bench.sh [RUNS]   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
cargo build --release -q -p mmio-trace -p mmio-trace-preload
target=${CARGO_TARGET_DIR:-target}
mt="$target/release/mmio-trace"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -o "$tmp/bench" tests/programs/regions_bench.c
head -c 65536 /dev/zero > "$tmp/dev.bin"
N=200000
val() { sed -n 's/.*ns_per_access=\([0-9.]*\).*/\1/p'; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
base=
for maps in 1 1000 3000 40000; do
    : > "$tmp/t"
    for _ in $(seq "$runs"); do
        "$mt" record -q -o "$tmp/trace.log" --device "$tmp/dev.bin" -- \
            "$tmp/bench" "$tmp/dev.bin" "$maps" "$N" | val >> "$tmp/t"
    done
    t=$(median < "$tmp/t")
    base=${base:-$t}
    echo "regions $maps: $t ns/access, ratio to 1 region $(awk "BEGIN { printf \"%.3f\", $t / $base }")"
done
