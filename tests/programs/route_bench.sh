#!/usr/bin/env bash
# Per-access cost of `record --route inject` and `--route ptrace` against the preload
# route, on the same program in one run (issue 16 item 6): `bench traced`
# (tests/programs/bench.c) makes N 4-byte loads from a traced device page; every route
# records it with --no-patch (every access traps); the static build of the same program
# is recorded by the automatic route (inject). Prints the medians and their ratios. Also
# the cost of a system call the ptrace route stops for in a process that maps a device (a
# one-byte `write` to /dev/null, s_syscalls.c): natively, under the preload, inject and
# ptrace routes, and under the ptrace route in a process that maps no device (no stop).
# Usage: tests/programs/route_bench.sh [RUNS]   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
cargo build --release -q -p mmio-trace
target=${CARGO_TARGET_DIR:-target}
mt="$target/release/mmio-trace"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -pthread -o "$tmp/bench" tests/programs/bench.c
cc -O2 -pthread -static -o "$tmp/bench_s" tests/programs/bench.c
cc -O2 -o "$tmp/sys" tests/programs/s_syscalls.c
head -c 65536 /dev/zero > "$tmp/dev.bin"
N=${N:-100000}

val() { sed -n 's/.*ns_per_op=\([0-9.]*\).*/\1/p'; }
r() { awk "BEGIN { printf \"%.2f\", $1 }"; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rec() { "$mt" record -q -o "$tmp/trace.log" --format binary --no-patch --device "$tmp/dev.bin" "$@"; }

: > "$tmp/preload"; : > "$tmp/ptrace"; : > "$tmp/inject"; : > "$tmp/static"; : > "$tmp/si"; : > "$tmp/sn"; : > "$tmp/sp"; : > "$tmp/st"; : > "$tmp/su"
for _ in $(seq "$runs"); do
    rec --route preload -- "$tmp/bench" traced "$tmp/dev.bin" "$N" | val >> "$tmp/preload"
    rec --route ptrace -- "$tmp/bench" traced "$tmp/dev.bin" "$N" | val >> "$tmp/ptrace"
    rec --route inject -- "$tmp/bench" traced "$tmp/dev.bin" "$N" | val >> "$tmp/inject"
    rec -- "$tmp/bench_s" traced "$tmp/dev.bin" "$N" | val >> "$tmp/static"
    rec --route inject -- "$tmp/sys" "$N" "$tmp/dev.bin" | val >> "$tmp/si"
    "$tmp/sys" "$N" | val >> "$tmp/sn"
    rec --route preload -- "$tmp/sys" "$N" "$tmp/dev.bin" | val >> "$tmp/sp"
    rec --route ptrace -- "$tmp/sys" "$N" "$tmp/dev.bin" | val >> "$tmp/st"
    rec --route ptrace -- "$tmp/sys" "$N" 2>/dev/null | val >> "$tmp/su"
done
p=$(median < "$tmp/preload"); t=$(median < "$tmp/ptrace"); i=$(median < "$tmp/inject")
ss=$(median < "$tmp/static"); si=$(median < "$tmp/si")
sn=$(median < "$tmp/sn"); sp=$(median < "$tmp/sp"); st=$(median < "$tmp/st")
su=$(median < "$tmp/su")
echo "runs: $runs (medians), $(nproc) CPUs, $(uname -r), $N accesses each"
echo "preload route $p ns/access, inject route $i ns/access: ratio $(r "$i / $p") (goal <= 1.1)"
echo "static build, automatic route (inject): $ss ns/access: ratio $(r "$ss / $p")"
echo "ptrace route $t ns/access: ratio $(r "$t / $p")"
echo "write(2) of 1 byte, device mapped: native $sn ns, preload route $sp ns, inject route $si ns (its filter lets it through), ptrace route $st ns (a seccomp stop each)"
echo "write(2) of 1 byte, no device mapped: ptrace route $su ns"
