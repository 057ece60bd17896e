#!/usr/bin/env bash
# Benchmarks of hot-site patching (issue 15, item 6), as ratios measured in the same run:
#   - one access through the same instruction: trap-only (--no-patch) vs patched
#     (goals: >= 100x, patched <= 25 ns), loads and stores, sustained (bounded by how
#     fast the recorder drains the ring once it is full) and in bursts that never fill it;
#   - an untraced address through a patched site vs natively (goal <= 3 ns);
#   - 1, 2 and 4 threads hammering one patched site: total accesses/s (should grow with
#     threads, unlike traps, which the kernel serialises per process);
#   - a GPU runtime's "pushbuffer" submission (64 movntdq 16-byte stores, a 4 KiB memset,
#     3 GPFIFO 8-byte writes, a 4-byte doorbell): traced vs native per iteration.
# Each figure is the median of RUNS runs of tests/programs/patch_bench.c (MS ms each).
# A patched run whose sites were never rewritten is marked "(not patched)".
# Usage: tests/programs/patch_bench.sh [RUNS]     (builds the release binary first;
#        MT=path/to/mmio-trace uses that one instead, MS=milliseconds per measurement)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
export MS=${MS:-200}
if [ -z "${MT:-}" ]; then
    cargo build --release -q -p mmio-trace
    MT="${CARGO_TARGET_DIR:-target}/release/mmio-trace"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -pthread -o "$tmp/bench" tests/programs/patch_bench.c
head -c 65536 /dev/zero > "$tmp/dev.bin"

# One measurement: how (native|trap|patch), then the program's arguments. Appends its
# ns_per_op to $tmp/how-args and notes a patched run whose sites stayed as they were.
measure() {
    local how=$1 key
    shift
    key="$how-$(echo "$*" | tr ' ' '-')"
    local line
    case $how in
        native) line=$("$tmp/bench" "$1" "$tmp/dev.bin" "${@:2}") ;;
        trap) line=$("$MT" record -q --no-patch --format binary -o /dev/null \
            --device "$tmp/dev.bin" -- "$tmp/bench" "$1" "$tmp/dev.bin" "${@:2}") ;;
        patch) line=$("$MT" record -q --format binary -o /dev/null \
            --device "$tmp/dev.bin" -- "$tmp/bench" "$1" "$tmp/dev.bin" "${@:2}") ;;
    esac
    echo "$line" | sed -n 's/.*ns_per_op=\([0-9.]*\).*/\1/p' >> "$tmp/$key"
    if [ "$how" = patch ] && ! echo "$line" | grep -q 'patched=yes'; then
        touch "$tmp/$key.unpatched"
    fi
}
med() { sort -g "$tmp/$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
r() { awk "BEGIN { printf \"%.${2:-1}f\", $1 }"; }
note() { [ -e "$tmp/$1.unpatched" ] && echo " (not patched)" || true; }

for _ in $(seq "$runs"); do
    for m in store load store-burst load-burst heap pushbuffer; do
        measure native "$m"
        measure trap "$m"
        measure patch "$m"
    done
    for t in 1 2 4; do
        measure trap threads "$t"
        measure patch threads "$t"
    done
done

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
echo "hot-site patching: $runs runs (medians) of ${MS} ms, $(nproc) CPUs ($cpu), $(uname -r)"
printf '%-44s %10s %12s %10s %12s\n' "" native trap-only patched trap/patched
for m in store load store-burst load-burst; do
    n=$(med "native-$m"); t=$(med "trap-$m"); p=$(med "patch-$m")
    printf '%-44s %10s %12s %10s %11sx%s\n' "$m, same instruction (ns/access)" \
        "$(r "$n" 2)" "$(r "$t")" "$(r "$p" 2)" "$(r "$t / $p")" "$(note "patch-$m")"
done
echo "    goals: trap/patched >= 100x, patched <= 25 ns (the bursts never fill the ring: the"
echo "    access path's own cost; the others run at the recorder's drain rate once it is full)"
n=$(med native-heap); p=$(med patch-heap)
printf '%-44s %10s %12s %10s   patched-native %s ns%s\n' "untraced address via the site (ns/access)" \
    "$(r "$n" 2)" "" "$(r "$p" 2)" "$(r "$p - $n" 2)" "$(note patch-heap)"
echo "    goal: <= 3 ns through a patched site"
t1=$(med trap-threads-1); p1=$(med patch-threads-1)
for t in 1 2 4; do
    tt=$(med "trap-threads-$t"); pt=$(med "patch-threads-$t")
    printf '%-44s %10s %12s %10s   patched x%s, trap-only x%s vs 1 thread%s\n' \
        "$t thread(s) hammering (M accesses/s, total)" "" "$(r "1000 / $tt" 3)" \
        "$(r "1000 / $pt" 3)" "$(r "$p1 / $pt" 2)" "$(r "$t1 / $tt" 2)" "$(note "patch-threads-$t")"
done
n=$(med native-pushbuffer); t=$(med trap-pushbuffer); p=$(med patch-pushbuffer)
printf '%-44s %10s %12s %10s   patched/native %sx%s\n' "pushbuffer (ns/iteration)" \
    "$(r "$n")" "$(r "$t")" "$(r "$p")" "$(r "$p / $n" 2)" "$(note patch-pushbuffer)"
