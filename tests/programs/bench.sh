#!/usr/bin/env bash
# Benchmarks of `mmio-trace record`, as ratios measured in the same run (see issue 4):
#   (a) one traced access vs the minimal trap-and-emulate floor       (target <= 1.3x)
#   (b) untraced code under record vs native                          (target <= 1.05x)
#   (d) two threads trapping: per-thread cost and total throughput vs one thread
# (c), recorder throughput, is `cargo bench -p mmio-trace-record --bench throughput`.
# Usage: tests/programs/bench.sh [RUNS]   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-7}
cargo build --release -q -p mmio-trace
target=${CARGO_TARGET_DIR:-target}
mt="$target/release/mmio-trace"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -pthread -o "$tmp/bench" tests/programs/bench.c
head -c 65536 /dev/zero > "$tmp/dev.bin"
N=300000

val() { sed -n 's/.*ns_per_op=\([0-9.]*\).*/\1/p'; }
r() { awk "BEGIN { printf \"%.3f\", $1 }"; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rec() { "$mt" record -q -o "$tmp/trace.log" --device "$tmp/dev.bin" -- "$@"; }

: > "$tmp/floor"; : > "$tmp/traced"; : > "$tmp/native"; : > "$tmp/under"
: > "$tmp/floor2"; : > "$tmp/traced2"
for _ in $(seq "$runs"); do
    "$tmp/bench" floor "$tmp/dev.bin" $N | val >> "$tmp/floor"
    rec "$tmp/bench" traced "$tmp/dev.bin" $N | val >> "$tmp/traced"
    "$tmp/bench" compute "$tmp/dev.bin" 50000000 | val >> "$tmp/native"
    # The device is not declared: the warning that nothing was traced is expected.
    "$mt" record -q -o "$tmp/none.log" -- "$tmp/bench" compute "$tmp/dev.bin" 50000000 2>/dev/null | val >> "$tmp/under"
    "$tmp/bench" floor "$tmp/dev.bin" $N 2 | val >> "$tmp/floor2"
    rec "$tmp/bench" traced "$tmp/dev.bin" $N 2 | val >> "$tmp/traced2"
done
f=$(median < "$tmp/floor"); t=$(median < "$tmp/traced")
n=$(median < "$tmp/native"); u=$(median < "$tmp/under")
f2=$(median < "$tmp/floor2"); t2=$(median < "$tmp/traced2")
echo "runs: $runs (medians), $(nproc) CPUs, $(uname -r)"
echo "(a) floor $f ns/access, traced $t ns/access: ratio $(r "$t / $f") (target <= 1.3)"
echo "(b) untraced work native $n ns/op, under record $u ns/op: ratio $(r "$u / $n") (target <= 1.05)"
echo "(d) 2 threads, wall per access per thread: floor $f2 ns, traced $t2 ns;"
echo "    total throughput vs 1 thread: floor $(r "2 * $f / $f2")x, traced $(r "2 * $t / $t2")x"
