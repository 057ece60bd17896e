#!/usr/bin/env bash
# Benchmarks of `record --pid` (issue 16, item 6), in one run, for each route
# (`--route ptrace`, the default, and `--route inject`):
#   - attach and detach time on a 16-thread target (tests/programs/a_loop.c: the main
#     thread and 15 workers, each making two device accesses then sleeping 1 ms), as
#     `record --pid` reports them on stderr: from the first ptrace call to every thread
#     running traced, and from the stop request to the last thread detached; median of
#     RUNS cycles on the same target, which must finish with correct results;
#   - what tracing by attach costs the program (tests/programs/a_bench.c, N of each):
#     a system call (getppid: every call stops the process twice under PTRACE_SYSCALL;
#     untouched with the injected core) and a device access (a trap completed from outside
#     by ptrace, or in process by the injected core), against the same program run
#     natively and under the preload route (`record -- PROGRAM`).
# Usage: tests/programs/attach_bench.sh [RUNS]    (builds the release binary first;
#        MT=path/to/mmio-trace uses that one instead; N=calls per measurement)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-7}
n=${N:-20000}
if [ -z "${MT:-}" ]; then
    cargo build --release -q -p mmio-trace
    MT="${CARGO_TARGET_DIR:-target}/release/mmio-trace"
fi
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
cc -O2 -pthread -o "$tmp/a_loop" tests/programs/a_loop.c
cc -O2 -pthread -o "$tmp/a_bench" tests/programs/a_bench.c
head -c 4096 /dev/zero > "$tmp/dev.bin"
med() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
wait_file() { for _ in $(seq 6000); do [ -e "$1" ] && return 0; sleep 0.01; done; echo "timeout: $1" >&2; exit 1; }

routes="ptrace inject"
# Attach/detach on 16 threads.
mkdir "$tmp/loop"
"$tmp/a_loop" "$tmp/dev.bin" "$tmp/loop" 1000 15 > "$tmp/loop.out" 2>&1 &
target=$!
pids+=("$target")
wait_file "$tmp/loop/ready"
for _ in $(seq "$runs"); do
    for route in $routes; do
        "$MT" record --pid "$target" --route "$route" --duration 0.2 --format binary \
            -o "$tmp/t.bin" --device "$tmp/dev.bin" 2>> "$tmp/cycles.$route"
    done
done
touch "$tmp/loop/stop"
wait "$target" || { echo "the target failed: $(cat "$tmp/loop.out")" >&2; exit 1; }
grep -q 'errors 0' "$tmp/loop.out" || { echo "the target saw errors: $(cat "$tmp/loop.out")" >&2; exit 1; }
for route in $routes; do
    c="$tmp/cycles.$route"
    threads=$(sed -n 's/.*attached to [0-9]* (\([0-9]*\) threads.*/\1/p' "$c" | head -1)
    attach=$(sed -n 's/.*attached to .* in \([0-9.]*\) ms/\1/p' "$c" | med)
    detach=$(sed -n 's/.*detached in \([0-9.]*\) ms/\1/p' "$c" | med)
    echo "--route $route: attach, $threads threads: ${attach} ms; detach: ${detach} ms (median of $runs cycles)"
done

# Per-call and per-access costs.
val() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
for _ in $(seq "$runs"); do
    "$tmp/a_bench" "$tmp/dev.bin" "$n" >> "$tmp/native"
    "$MT" record -q --no-patch --format binary -o /dev/null --device "$tmp/dev.bin" -- \
        "$tmp/a_bench" "$tmp/dev.bin" "$n" >> "$tmp/preload" 2>/dev/null
    for route in $routes; do
        rm -rf "$tmp/b"
        mkdir "$tmp/b"
        "$tmp/a_bench" "$tmp/dev.bin" "$n" "$tmp/b" >> "$tmp/attached.$route" &
        b=$!
        wait_file "$tmp/b/ready"
        "$MT" record --pid "$b" --route "$route" --format binary -o /dev/null \
            --device "$tmp/dev.bin" 2> "$tmp/rec.err" &
        r=$!
        for _ in $(seq 6000); do grep -q 'attached to' "$tmp/rec.err" && break; sleep 0.01; done
        touch "$tmp/b/go"
        wait "$b"
        wait "$r" || true
    done
done
for what in syscall access; do
    nat=$(val "${what}_ns" < "$tmp/native" | med)
    pre=$(val "${what}_ns" < "$tmp/preload" | med)
    for route in $routes; do
        att=$(val "${what}_ns" < "$tmp/attached.$route" | med)
        awk -v w="$what" -v r="$route" -v a="$nat" -v b="$pre" -v c="$att" 'BEGIN {
            printf "%-7s native %8.1f ns   preload route %8.1f ns (%.1fx)   attached, --route %-6s %8.1f ns (%.1fx native, %.2fx preload)\n",
                w, a, b, b / a, r, c, c / a, c / b }'
    done
done
