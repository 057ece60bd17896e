#!/usr/bin/env bash
# Benchmarks of the fault paths (issue 14, item 7), as ratios measured in the same run:
#   (a) one traced access vs the raw trap floor (bench.c floor/traced)          bar <= 1.2x
#   (b) an access completed out of line vs one emulated: `mov r32,[m]` with
#       MMIO_TRACE_PATH=ool vs =emulate, and `popcnt r32,[m]` (which the emulator does
#       not do) on the default path vs `mov` emulated                            goal <= 1.3x
#   (c) strlen() of a 64-byte string in device memory, traced, per call: the default
#       path vs MMIO_TRACE_PATH=step (the single step every vector form took before)
# Each line says how many accesses per operation were single-stepped (the recorder's own
# count) and logged UNKNOWN: while out-of-line execution is missing, `ool` falls to the
# step path. Times are medians of RUNS interleaved runs; on a loaded machine they drift.
# Usage: tests/programs/paths_bench.sh [RUNS]   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
cargo build --release -q -p mmio-trace
target=${CARGO_TARGET_DIR:-target}
mt="$target/release/mmio-trace"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -pthread -o "$tmp/bench" tests/programs/bench.c
cc -O2 -o "$tmp/pb" tests/programs/paths_bench.c
head -c 65536 /dev/zero > "$tmp/dev.bin"
N=300000    # emulated accesses per run
NS=20000    # accesses that may be stepped
NC=2000     # strlen calls

val() { sed -n 's/.*ns_per_op=\([0-9.]*\).*/\1/p'; }
r() { awk "BEGIN { printf \"%.2f\", $1 }"; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# rec NAME PATH PROGRAM ARGS...: records with MMIO_TRACE_PATH=PATH ("" = unset), appends
# ns/op to $tmp/NAME, and keeps in $tmp/NAME.steps how many accesses were single-stepped
# (the recorder's closing line) and in $tmp/NAME.unk how many were logged UNKNOWN.
rec() {
    local name=$1 path=$2
    shift 2
    local e=(env -u MMIO_TRACE_PATH)
    [ -n "$path" ] && e=(env MMIO_TRACE_PATH="$path")
    "${e[@]}" "$mt" record -o "$tmp/$name.log" --device "$tmp/dev.bin" -- "$@" 2> "$tmp/$name.err" | val >> "$tmp/$name"
    sed -n 's/^mmio-trace: \([0-9]*\) access.* single-stepped.*/\1/p' "$tmp/$name.err" > "$tmp/$name.steps"
    [ -s "$tmp/$name.steps" ] || echo 0 > "$tmp/$name.steps"
    grep -c '^UNKNOWN' "$tmp/$name.log" > "$tmp/$name.unk" || true
}
for _ in $(seq "$runs"); do
    "$tmp/bench" floor "$tmp/dev.bin" $N | val >> "$tmp/floor"
    rec traced "" "$tmp/bench" traced "$tmp/dev.bin" $N
    rec mov_emu emulate "$tmp/pb" mov "$tmp/dev.bin" $N
    rec mov_ool ool "$tmp/pb" mov "$tmp/dev.bin" $NS
    rec pop_def "" "$tmp/pb" popcnt "$tmp/dev.bin" $NS
    rec strlen_def "" "$tmp/pb" strlen "$tmp/dev.bin" $NC
    rec strlen_step step "$tmp/pb" strlen "$tmp/dev.bin" $NC
done
m() { median < "$tmp/$1"; }
# steps/unknowns per operation of the last run: "S stepped, U UNKNOWN per op"
su() { echo "$(r "$(cat "$tmp/$1.steps") / $2") stepped, $(r "$(cat "$tmp/$1.unk") / $2") UNKNOWN /op"; }
f=$(m floor); t=$(m traced); me=$(m mov_emu); mo=$(m mov_ool); pd=$(m pop_def)
sd=$(m strlen_def); ss=$(m strlen_step)
echo "runs: $runs (medians), $(nproc) CPUs, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
row() { printf '%-44s %10s %6s  %-24s %s\n' "$@"; }
row "" "ns/op" "ratio" "target" "path taken (last run)"
row "(a) raw trap floor (untraced)" "$f" "" "" ""
row "    movl traced, default path" "$t" "$(r "$t / $f")" "<= 1.2 vs floor" "$(su traced $N)"
row "(b) movl, MMIO_TRACE_PATH=emulate" "$me" "" "" "$(su mov_emu $N)"
row "    movl, MMIO_TRACE_PATH=ool" "$mo" "$(r "$mo / $me")" "<= 1.3 vs emulate" "$(su mov_ool $NS)"
row "    popcnt r32,[m], default path" "$pd" "$(r "$pd / $me")" "<= 1.3 vs movl emulate" "$(su pop_def $NS)"
row "(c) strlen(64 B), MMIO_TRACE_PATH=step" "$ss" "" "" "$(su strlen_step $NC)"
row "    strlen(64 B), default path" "$sd" "$(r "$sd / $ss")" "vs step (pre-issue 14)" "$(su strlen_def $NC)"
