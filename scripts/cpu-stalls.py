#!/usr/bin/env python3
"""How often this machine takes a core away from a busy process: spins reading the monotonic clock for a few
seconds and counts the gaps between two reads longer than 100 us and 1 ms. On a quiet bare-metal core both
counts are ~0; on a shared VM they show the scheduling stalls every latency figure on that core includes
(BENCHMARKS.md, open-loop latency). Pin it like the process it stands for:
    taskset -c 0 scripts/cpu-stalls.py [seconds]
Python's own loop costs well under a microsecond per read, so gaps of 100 us are the machine's, not its."""
import json
import sys
import time

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
clock = time.perf_counter_ns
start = prev = clock()
end = start + int(seconds * 1e9)
over_100us = over_1ms = 0
longest = 0
stalled = 0
while prev < end:
    now = clock()
    gap = now - prev
    if gap > 100_000:
        over_100us += 1
        stalled += gap
        if gap > 1_000_000:
            over_1ms += 1
        longest = max(longest, gap)
    prev = now
print(json.dumps({
    "seconds": seconds,
    "stalls_over_100us": over_100us,
    "stalls_over_1ms": over_1ms,
    "longest_us": longest // 1000,
    "stalled_fraction": round(stalled / (prev - start), 4),
}))
