#!/usr/bin/env python3
"""A disaster-recovery orchestrator under quotad, with the `quotad` package (pip install ./python).

The setup of the recovery team in ../../shared/background: at most 20 recovery jobs running at once for the
whole fleet (drs.start_recovery, leases renewed while a job runs) and the DRS API at 10 calls a second
(drs.api), shared by every orchestrator. Against examples/disaster-recovery.toml:

    cargo run --release -p quotad-server -- --config examples/disaster-recovery.toml
    python examples/python/recovery_orchestrator.py --target 127.0.0.1:50051

It starts --jobs recovery jobs from a pool of 40 threads (twice the limit, as a careless deployment would);
each job holds a concurrency lease with auto-renewal and polls the (stand-in) DRS API under the rate limit.
Exits non-zero if more than 20 jobs ever ran at once or the API saw more than 10 calls/s plus the burst.
"""

import argparse
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import quotad

JOB_LIMIT = 20
API_RATE = 10


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--polls", type=int, default=2, help="DRS API calls per job")
    args = parser.parse_args()

    patient = quotad.RetryPolicy(max_attempts=1000, initial_backoff=0.05, max_backoff=1.0, deadline=120.0)
    client = quotad.Client(args.target, client_id="recovery-orchestrator", retry=patient)
    lock = threading.Lock()
    running, peak, api_calls = [0], [0], []

    def drs_api() -> None:
        with lock:
            api_calls.append(time.monotonic())

    def recover(job: int) -> None:
        # max_wait: quotad queues the job (FIFO) until one of the 20 slots frees, instead of polling.
        with client.acquire("drs.start_recovery", max_wait=30.0, auto_renew=True):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            for _ in range(args.polls):
                client.run("drs.api", drs_api)
                time.sleep(0.05)
            with lock:
                running[0] -= 1

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=40) as pool:
        list(pool.map(recover, range(args.jobs)))
    took = time.monotonic() - started
    client.close()

    allowed = API_RATE + API_RATE * took  # the burst plus the rate over the run
    print(f"{args.jobs} jobs in {took:.1f} s: at most {peak[0]} at once (limit {JOB_LIMIT}), "
          f"{len(api_calls)} DRS API calls (at most {allowed:.0f} allowed)")
    if peak[0] > JOB_LIMIT or len(api_calls) > allowed or len(api_calls) != args.jobs * args.polls:
        print("unexpected: the limits were not held", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
