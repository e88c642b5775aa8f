#!/usr/bin/env python3
"""Splits a `perf record -C 0 -g -k mono` profile of bench_kernel's toggled stream by segment.

Usage (root, from the repository's root; see docs/benchmarks.md, Kernel):

    perf record -C 0 -g -k mono -o t.data -- chrt -f 10 target/release/bench_kernel \
        --no-per-packet --rate-rounds 0 --toggle-seconds 20 --toggle-log t.log
    tests/perf/split_profile.py t.data t.log.portwatch [ROWS]

bench_kernel writes one line per segment to the log (sequence number, CLOCK_MONOTONIC ns at its
start, datagrams sent in it, the sender's CPU ns in it): 4j is "nothing attached", 4j + 2
"attached", odd numbers are the changes (left out), and 0 is the settling time (left out).
Every sample of the sending thread on CPU 0 is assigned to its segment by time; a
configuration's figure for a function is its samples x the sampling period / the datagrams sent
in that configuration's segments, i.e. ns of the sender's CPU per packet (on a veth the receive
path, a's ingress hook included, runs in the sender's softirq). Prints the sender's CPU per
packet by its own clock and by the samples, the program's inclusive cost (samples whose call
chain passes through a BPF program called from __netif_receive_skb_core, the TC ingress hook),
that cost by leaf function, and the functions whose cost changed most.
"""
import bisect
import collections
import re
import subprocess
import sys

PERIOD_NS = 250_000  # perf record's default 4000 Hz on cpu-clock


def main():
    data, log = sys.argv[1], sys.argv[2]
    rows = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    marks = sorted(
        (int(t), int(k), int(sent), float(cpu))
        for k, t, sent, cpu in (line.split() for line in open(log))
    )
    starts = [m[0] for m in marks]

    def config(seq):
        if seq == 0 or seq % 2:
            return None
        return "nothing" if seq % 4 == 0 else "attached"

    packets = collections.Counter()
    cpu = collections.Counter()
    for _, k, sent, c in marks:
        if config(k):
            packets[config(k)] += sent
            cpu[config(k)] += c
    leaf = {c: collections.Counter() for c in ("nothing", "attached")}
    prog = {c: collections.Counter() for c in ("nothing", "attached")}
    out = subprocess.run(
        ["perf", "script", "-i", data, "--ns", "-F", "comm,tid,time,ip,sym"],
        capture_output=True, text=True, check=True,
    ).stdout
    for block in out.split("\n\n"):
        lines = block.strip().splitlines()
        if not lines:
            continue
        m = re.match(r"\s*(\S+)\s+(\d+)\s+(\d+)\.(\d+):", lines[0])
        # The benchmark's threads: perf names the exec'd process perf-exec, new threads ":TID".
        if not m or not (m.group(1) in ("perf-exec", "bench_kernel") or m.group(1).startswith(":")):
            continue
        t = int(m.group(3)) * 10**9 + int(m.group(4))
        i = bisect.bisect_right(starts, t) - 1
        if i < 0 or i + 1 >= len(marks):
            continue
        c = config(marks[i][1])
        if c is None:
            continue
        syms = [
            re.sub(r"\+0x[0-9a-f]+$", "", x.split(None, 1)[1]) if len(x.split(None, 1)) > 1 else "?"
            for x in lines[1:]
        ]
        if not syms:
            continue
        leaf[c][syms[0]] += 1
        for j, s in enumerate(syms):
            if s.startswith("__netif_receive_skb_core"):
                callee = syms[j - 1] if j > 0 else ""
                if callee.startswith("bpf_prog_") or callee == "[unknown]":
                    prog[c][syms[0]] += 1
                break
    k = {c: PERIOD_NS / packets[c] for c in packets}
    ns = lambda c, n: n * k[c]
    print("sender CPU ns/packet (own clock): nothing %.0f, attached %.0f, difference %+.0f" % (
        cpu["nothing"] / packets["nothing"], cpu["attached"] / packets["attached"],
        cpu["attached"] / packets["attached"] - cpu["nothing"] / packets["nothing"]))
    tot = {c: ns(c, sum(leaf[c].values())) for c in k}
    print("sender CPU ns/packet (samples):   nothing %.0f, attached %.0f, difference %+.0f" % (
        tot["nothing"], tot["attached"], tot["attached"] - tot["nothing"]))
    print("program called from the ingress hook, inclusive: nothing %.1f, attached %.1f" % (
        ns("nothing", sum(prog["nothing"].values())), ns("attached", sum(prog["attached"].values()))))
    for s, n in prog["attached"].most_common(8):
        print("    %7.1f  %s" % (ns("attached", n), s))
    print("functions (leaf, ns/packet): nothing, attached, difference")
    keys = sorted(set(leaf["nothing"]) | set(leaf["attached"]),
                  key=lambda s: -abs(ns("attached", leaf["attached"][s]) - ns("nothing", leaf["nothing"][s])))
    for s in keys[:rows]:
        a, b = ns("nothing", leaf["nothing"][s]), ns("attached", leaf["attached"][s])
        print("    %7.1f %7.1f %+7.1f  %s" % (a, b, b - a, s))


if __name__ == "__main__":
    main()
