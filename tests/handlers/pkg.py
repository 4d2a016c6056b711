#!/usr/bin/env python3
"""A handler written with the `drover` package, for the tests of the package itself.

Payload {"record": PATH}: appends what the handler was given (class, attempt, tenant, payload,
checkpoint) as one JSON line to PATH. Payload {"hang_after": N}: reports progress N times, then
goes silent (a hung handler) for an hour. Payload {"resume": PATH}: the first attempt reports
progress, saves a checkpoint and asks for a retry; the next appends the checkpoint it was given
and its attempt to PATH."""
import json
import sys
import time
from pathlib import Path

try:
    import drover
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
    import drover


@drover.handler
def handle(job):
    p = job.payload if isinstance(job.payload, dict) else {}
    if "record" in p:
        seen = {
            "class": job.job_class,
            "attempt": job.attempt,
            "tenant": job.tenant,
            "payload": job.payload,
            "checkpoint": job.checkpoint,
            "deadline": job.deadline,
            "module": drover.__file__,
        }
        with open(p["record"], "a") as f:
            f.write(json.dumps(seen, sort_keys=True) + "\n")
        return "recorded"
    if "resume" in p:
        if job.checkpoint is None:
            job.progress(0.5, note="half way")
            job.save_checkpoint({"step": 5, "attempt": job.attempt})
            raise drover.Retry("come back later")
        with open(p["resume"], "a") as f:
            f.write(json.dumps({"checkpoint": job.checkpoint, "attempt": job.attempt}) + "\n")
        return "resumed"
    for i in range(int(p.get("hang_after", 0))):
        job.progress((i + 1) / 100, note=f"beat {i + 1}")
        time.sleep(0.1)
    time.sleep(3600)


if __name__ == "__main__":
    handle.run()
