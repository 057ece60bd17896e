#!/usr/bin/env python3
"""Checks a `mmio-trace record` log of tests/vm/edu_driver.c against the device's
documented behaviour and against what the program printed (scripts/vm-test).

usage: vm-check-edu.py edu|edu-threads|edu-mremap|edu-static|edu-static-threads|edu-attach
                       TRACE PROGRAM_OUTPUT
(edu-static*: the driver built static, traced by the inject route (the tracer core put in
at its exec); edu-attach: the static
driver attached to by `record --pid` while it waited, with its BAR already mapped.)
Exits 1 with the reason on the first mismatch."""
import sys

kind, trace_path, out_path = sys.argv[1:4]
# The static and attached runs make the same accesses as the plain ones.
base = {"edu-static": "edu", "edu-static-threads": "edu-threads", "edu-attach": "edu"}.get(kind, kind)
lines = open(trace_path).read().splitlines()
printed = open(out_path).read().splitlines()


def fail(msg):
    print(f"vm-check-edu {kind}: {msg}", file=sys.stderr)
    sys.exit(1)


pcidev = [l.split() for l in lines if l.startswith("PCIDEV ") and l.split()[2] == "123411e8"]
if len(pcidev) != 1:
    fail("no PCIDEV line for edu (1234:11e8)")
bar0 = int(pcidev[0][4], 16) & ~0xF
maps = [l.split() for l in lines if l.startswith("MAP ")]
if not maps or int(maps[0][3], 16) != bar0:
    fail(f"MAP lines {maps} do not start at edu BAR0 {bar0:#x}")
# The recorder names each mapping's file in a MARK, and says when the driver refused the
# alias mapping (sysfs BARs allow it).
named = [l.split(None, 2)[2].split() for l in lines if l.startswith("MARK ") and l.split()[2] == "map"]
if not named or named[0][1] != "1" or not named[0][2].endswith("/resource0"):
    fail(f"no MARK naming map 1's file .../resource0: {named}")
if any("alias" in " ".join(m) for m in named):
    fail(f"the alias mapping of edu's BAR0 was refused: {named}")
if base == "edu-mremap" and not any(m[2:4] == ["continues", "map"] for m in named[1:]):
    fail(f"no MARK saying the mremap'd mapping continues map 1: {named}")
acc = []
for l in lines:
    f = l.split()
    if f[0] in ("R", "W"):
        if f[1] != "4":
            fail(f"width {f[1]} in {l!r}: the driver makes only 32-bit accesses")
        off = int(f[4], 16) - bar0
        pc, tid = int(f[6], 16), int(f[7])
        if pc == 0 or tid == 0:
            fail(f"PC and thread id must be filled: {l!r}")
        acc.append((f[0], off, int(f[5], 16), tid))
    elif f[0] == "UNKNOWN":
        fail(f"undecoded access: {l!r}")

i = 0


def take(d, off, value=None):
    global i
    if i >= len(acc):
        fail(f"trace ends; expected {d} {off:#x}")
    a = acc[i]
    if a[0] != d or a[1] != off or (value is not None and a[2] != value):
        want = f"{d} {off:#x}" + (f" {value:#x}" if value is not None else "")
        fail(f"access {i}: expected {want}, got {a[0]} {a[1]:#x} {a[2]:#x}")
    i += 1
    return a


route = [l.split(None, 2)[2] for l in lines if l.startswith("MARK ") and "mmio-trace: route " in l]
if kind.startswith("edu-static") and route != ["mmio-trace: route inject (static executable)"]:
    fail(f"the static driver's trace does not name the inject route: {route}")
if kind == "edu-attach" and not any(l.startswith("MARK ") and "mmio-trace: attached to " in l and "1 device mapping" in l for l in lines):
    fail("no MARK saying the recorder attached to the process and its one device mapping")
take("R", 0x00, 0x010000ED)
take("W", 0x04, 0x12345678)
take("R", 0x04, 0xEDCBA987)
if base == "edu-threads":
    # Each write of 0x04 is followed by the read of its complement, same thread.
    seen = 0
    while i < len(acc) and acc[i][1] == 0x04:
        w = take("W", 0x04)
        r = take("R", 0x04, (~w[2]) & 0xFFFFFFFF)
        if r[3] != w[3]:
            fail(f"pair {seen}: write by thread {w[3]}, read by {r[3]}")
        seen += 1
    if seen != 100:
        fail(f"{seen} liveness pairs traced, the program made 100")
    if len({a[3] for a in acc}) < 3:
        fail("expected accesses from the main thread and two workers")
if base == "edu-mremap":
    if len(maps) < 2 and "moved" in printed:
        pass  # a move keeps the same MAP; accesses must still come
    take("R", 0x00, 0x010000ED)
take("W", 0x08, 5)
polls = 0
while i < len(acc) and acc[i][1] == 0x20:
    a = take("R", 0x20)
    polls += 1
    if a[2] & 1 == 0:
        break
if polls == 0:
    fail("no status poll traced")
take("R", 0x08, 120)
if i != len(acc):
    fail(f"{len(acc) - i} unexpected accesses after the factorial: {acc[i:i+5]}")
if "fact 5 120" not in printed:
    fail(f"the program printed {printed!r}")
print(f"vm-check-edu {kind}: {len(acc)} accesses as expected ({polls} status polls)", file=sys.stderr)
