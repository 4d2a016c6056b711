#!/usr/bin/env python3
"""Drover persistent-mode handler: one long-lived process, one JSON object per line.

Load what is expensive once (a model, say), print {"ready": true}, then answer each job line
on stdin with one result line on stdout: {"id": ..., "status": "ok" | "retry" | "reject" | "fail",
"message": ...}. Logs go to stderr: stdout is the protocol channel.

Demo payload: {"seconds": 2.5, "fail_rate": 0.1} sleeps, and fails transiently at that rate.

Fencing: each job line carries "fence", larger for every later attempt of the job (the
DROVER_FENCE of exec mode). Store it with what the job writes and refuse writes whose fence is
smaller than the stored one: a stale copy's side effects are then rejected (ARCHITECTURE.md).
"""
import json
import random
import sys
import time


def handle(job: dict) -> dict:
    payload = job.get("payload")
    if not isinstance(payload, dict):
        return {"id": job["id"], "status": "reject", "message": "payload must be a JSON object"}
    if random.random() < float(payload.get("fail_rate", 0)):
        return {"id": job["id"], "status": "retry", "message": "transient failure (demo)"}
    time.sleep(float(payload.get("seconds", 0)))
    return {"id": job["id"], "status": "ok"}


def main() -> None:
    # ... load the model here ...
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:  # EOF: Drover is stopping us
        job = json.loads(line)
        try:
            result = handle(job)
        except Exception as e:  # a bug in one job must not take the handler down
            result = {"id": job["id"], "status": "fail", "message": repr(e)}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
