#!/usr/bin/env bash
# Benchmark of replay (issue 19): one replayed access against one traced access, as a
# ratio measured in the same run. The program (paths_bench.c `mov`) makes N 32-bit
# loads over 1024 registers of a file-backed device: recorded (`record --no-patch`:
# every access traps, as under replay, which turns patching off), then run against its
# own recording (`replay`), whose model serves every load. Times are the program's own
# ns per load, medians of RUNS interleaved runs; on a loaded machine they drift.
# Usage: tests/programs/replay_bench.sh [RUNS]   (builds the release binary first;
#        MT=path/to/mmio-trace uses that binary, with its preload library beside it)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
if [ -z "${MT:-}" ]; then
    cargo build --release -q -p mmio-trace -p mmio-trace-preload
    MT="${CARGO_TARGET_DIR:-target}/release/mmio-trace"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -o "$tmp/pb" tests/programs/paths_bench.c
head -c 65536 /dev/zero > "$tmp/dev.bin"
N=${N:-100000}

val() { sed -n 's/.*ns_per_op=\([0-9.]*\).*/\1/p'; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for i in $(seq "$runs"); do
    "$MT" record -q --no-patch -o "$tmp/rec.log" --device "$tmp/dev.bin" -- \
        "$tmp/pb" mov "$tmp/dev.bin" $N | val >> "$tmp/traced"
    "$MT" replay -q "$tmp/rec.log" -o "$tmp/rep.log" --device "$tmp/dev.bin" -- \
        "$tmp/pb" mov "$tmp/dev.bin" $N | val >> "$tmp/replayed"
done
t=$(median < "$tmp/traced"); p=$(median < "$tmp/replayed")
echo "runs: $runs (medians), N=$N loads, $(nproc) CPUs, $(uname -r)"
printf '%-40s %10s\n' "" "ns/load"
printf '%-40s %10s\n' "traced (record --no-patch)" "$t"
printf '%-40s %10s\n' "replayed (served by the model)" "$p"
awk "BEGIN { printf \"replayed / traced: %.2fx (target <= 1.0x, within noise)\n\", $p / $t }"
