#!/usr/bin/env python3
"""Drover exec-mode handler: one process per job.

The payload arrives on stdin; the job's identity in DROVER_* variables. The exit status is the
result: 0 done, 75 transient failure (retry), 65 the job itself is bad (dead-letter it).

Demo payload: {"seconds": 2.5, "fail_rate": 0.1} sleeps, and fails transiently at that rate.

Fencing: Drover runs a job at least once, and never two copies knowingly at once, but AMQP
cannot rule out a few milliseconds of overlap when the broker drops a worker's connection
(ARCHITECTURE.md). DROVER_FENCE is larger for every later attempt of the job: store it with
whatever the job writes, and refuse a write whose fence is smaller than the one stored, e.g.
    UPDATE results SET ..., fence = :fence WHERE job_id = :id AND fence <= :fence
"""
import json
import os
import random
import sys
import time

EX_TEMPFAIL, EX_DATAERR = 75, 65


def main() -> int:
    raw = sys.stdin.read()
    try:
        payload = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as e:
        print(f"payload is not JSON: {e}", file=sys.stderr)
        return EX_DATAERR
    if random.random() < float(payload.get("fail_rate", 0)):
        print("transient failure (demo)", file=sys.stderr)
        return EX_TEMPFAIL
    time.sleep(float(payload.get("seconds", 0)))
    print(f"job {os.environ['DROVER_JOB_ID']} attempt {os.environ['DROVER_ATTEMPT']} "
          f"(fence {os.environ.get('DROVER_FENCE', '?')}) done on {os.environ['DROVER_UNIT']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
