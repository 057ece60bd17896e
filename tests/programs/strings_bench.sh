#!/usr/bin/env bash
# A whole `rep stosq` / `rep movsq` of 4 KiB into a traced buffer (one trap, one record per
# run of elements) vs the per-element cost it had as separate accesses (512 `movq` stores,
# a trap each), and vs the same `rep stosq` untraced; ratios measured in the same run
# (issue 15 item 3). Logs go to a file in the binary format unless FORMAT=text.
# Usage: tests/programs/strings_bench.sh [RUNS]   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
format=${FORMAT:-binary}
cargo build --release -q -p mmio-trace
target=${CARGO_TARGET_DIR:-target}
mt="$target/release/mmio-trace"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -o "$tmp/bench" tests/programs/strings_bench.c
head -c 4096 /dev/zero > "$tmp/dev.bin"
N=2000
val() { sed -n 's/.*ns_per_op=\([0-9.]*\).*/\1/p'; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rec() {
    "$mt" record -q --format "$format" -o "$tmp/trace.log" --device "$tmp/dev.bin" -- "$@"
    echo "$2 x$4: $(stat -c %s "$tmp/trace.log") bytes" >> "$tmp/sizes"
}
for k in stos movs loop native step; do : > "$tmp/$k"; done
for _ in $(seq "$runs"); do
    rec "$tmp/bench" stos "$tmp/dev.bin" $N | val >> "$tmp/stos"
    rec "$tmp/bench" movs "$tmp/dev.bin" $N | val >> "$tmp/movs"
    rec "$tmp/bench" loop "$tmp/dev.bin" $((N / 10)) | val >> "$tmp/loop"
    MMIO_TRACE_PATH=step rec "$tmp/bench" stos "$tmp/dev.bin" $((N / 100)) | val >> "$tmp/step"
    "$tmp/bench" native "$tmp/dev.bin" $N | val >> "$tmp/native"
done
m() { median < "$tmp/$1"; }
r() { awk "BEGIN { printf \"%.1f\", $1 }"; }
echo "per 4 KiB (512 quadwords), medians of $runs, $format log:"
echo "rep stosq, traced:              $(m stos) ns"
echo "rep movsq (ram->dev), traced:   $(m movs) ns"
echo "512 movq stores, traced:        $(m loop) ns  ($(r "$(m loop) / $(m stos)")x rep stosq)"
echo "rep stosq, step path:           $(m step) ns  ($(r "$(m step) / $(m stos)")x rep stosq)"
echo "rep stosq, native:              $(m native) ns"
echo "log sizes, last run (N ops of 4 KiB each):"
tail -n 4 "$tmp/sizes"
