#!/usr/bin/env bash
# Hot-site patching on the inject route against the preload route, per access, in one run:
# tests/programs/patch_bench.c's one-site modes recorded patched (a) by the preload route
# (dynamic build), (b) by `--route inject` (the same dynamic build) and (c) by the
# automatic route of its static build (inject), plus (d) the static build with --no-patch
# (every access traps) for scale. The bursts never fill the ring (the access path's own
# cost); the sustained modes run at the recorder's drain rate once the ring is full.
# A patched run whose site was never rewritten is marked "(not patched)".
# Usage: tests/programs/inject_patch_bench.sh [RUNS]   (builds the release binary first;
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
cc -O2 -pthread -static -o "$tmp/bench_s" tests/programs/patch_bench.c
head -c 65536 /dev/zero > "$tmp/dev.bin"

# One measurement: how (preload|inject|static|trap), the mode. Appends its ns_per_op to
# $tmp/how-mode and notes a patched run whose site stayed as it was.
measure() {
    local how=$1 m=$2 line
    local rec=("$MT" record -q --format binary -o /dev/null --device "$tmp/dev.bin")
    case $how in
        preload) line=$("${rec[@]}" -- "$tmp/bench" "$m" "$tmp/dev.bin") ;;
        inject) line=$("${rec[@]}" --route inject -- "$tmp/bench" "$m" "$tmp/dev.bin") ;;
        static) line=$("${rec[@]}" -- "$tmp/bench_s" "$m" "$tmp/dev.bin") ;;
        trap) line=$("${rec[@]}" --no-patch -- "$tmp/bench_s" "$m" "$tmp/dev.bin") ;;
    esac
    echo "$line" | sed -n 's/.*ns_per_op=\([0-9.]*\).*/\1/p' >> "$tmp/$how-$m"
    if [ "$how" != trap ] && ! echo "$line" | grep -q 'patched=yes'; then
        touch "$tmp/$how-$m.unpatched"
    fi
}
med() { sort -g "$tmp/$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
r() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
note() { [ -e "$tmp/$1.unpatched" ] && echo " (not patched)" || true; }

modes="load-burst store-burst load store"
for _ in $(seq "$runs"); do
    for m in $modes; do
        for how in preload inject static trap; do
            measure "$how" "$m"
        done
    done
done

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
echo "patching by route: $runs runs (medians) of ${MS} ms, $(nproc) CPUs ($cpu), $(uname -r)"
printf '%-12s %9s %9s %9s %11s %13s %12s\n' "ns/access" preload inject static trap-static \
    inject/preload static/preload
for m in $modes; do
    p=$(med "preload-$m"); i=$(med "inject-$m"); s=$(med "static-$m"); t=$(med "trap-$m")
    printf '%-12s %9s %9s %9s %11s %13s %12s%s%s%s\n' "$m" "$(r "$p")" "$(r "$i")" "$(r "$s")" \
        "$(r "$t" 1)" "$(r "$i / $p")x" "$(r "$s / $p")x" \
        "$(note "preload-$m")" "$(note "inject-$m")" "$(note "static-$m")"
done
echo "    goal: inject/preload <= 1.1 (bursts: the access path's own cost; the others run at"
echo "    the recorder's drain rate once the ring is full)"
