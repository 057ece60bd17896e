#!/usr/bin/env bash
# Out-of-line execution vs emulation, ratios measured in the same run (issue 14 item 7):
#   an out-of-line access vs an emulated one (the same `mov` load forced out of line with
#   MMIO_TRACE_PATH=ool, and `popcnt`/`pextrd` vs the emulated `mov`)   (goal <= 1.3x)
#   strlen of a 64-byte string in device memory: out of line vs the step path that ran it
#   before (MMIO_TRACE_PATH=step)
# Usage: tests/programs/ool_bench.sh [RUNS]   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
cargo build --release -q -p mmio-trace
target=${CARGO_TARGET_DIR:-target}
mt="$target/release/mmio-trace"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -o "$tmp/bench" tests/programs/ool_bench.c
python3 - "$tmp/dev.bin" <<'PY'
import sys
b = bytearray(4096)
s = b"hello, device world! this string is sixty-four bytes long......."
b[0x100:0x140] = s
open(sys.argv[1], "wb").write(b)
PY
N=100000
val() { sed -n 's/.*ns_per_op=\([0-9.]*\).*/\1/p'; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rec() { "$mt" record -q -o "$tmp/trace.log" --device "$tmp/dev.bin" -- "$@"; }
for k in mov mov_ool popcnt pextrd strlen strlen_step; do : > "$tmp/$k"; done
for _ in $(seq "$runs"); do
    rec "$tmp/bench" mov "$tmp/dev.bin" $N | val >> "$tmp/mov"
    MMIO_TRACE_PATH=ool rec "$tmp/bench" mov "$tmp/dev.bin" $N | val >> "$tmp/mov_ool"
    rec "$tmp/bench" popcnt "$tmp/dev.bin" $N | val >> "$tmp/popcnt"
    rec "$tmp/bench" pextrd "$tmp/dev.bin" $N | val >> "$tmp/pextrd"
    rec "$tmp/bench" strlen "$tmp/dev.bin" $((N / 10)) | val >> "$tmp/strlen"
    MMIO_TRACE_PATH=step rec "$tmp/bench" strlen "$tmp/dev.bin" $((N / 10)) | val >> "$tmp/strlen_step"
done
m() { median < "$tmp/$1"; }
r() { awk "BEGIN { printf \"%.2f\", $1 }"; }
echo "emulated mov:           $(m mov) ns"
echo "mov out of line:        $(m mov_ool) ns  ($(r "$(m mov_ool) / $(m mov)")x)"
echo "popcnt out of line:     $(m popcnt) ns  ($(r "$(m popcnt) / $(m mov)")x)"
echo "pextrd out of line:     $(m pextrd) ns  ($(r "$(m pextrd) / $(m mov)")x)"
echo "strlen (64 B), stepped: $(m strlen_step) ns"
echo "strlen (64 B), ool:     $(m strlen) ns  ($(r "$(m strlen_step) / $(m strlen)")x faster)"
