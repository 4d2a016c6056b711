#!/usr/bin/env python3
"""A persistent handler as an ML team writes it with the `drover` package (pip install ./python).

- setup() "loads a model" once per process (a sleep and a big allocation stand in for it), then
  Drover is told {"ready": true} and sends jobs one at a time;
- each job runs `steps` steps, reports progress after each (a heartbeat too: set the class's
  heartbeat_timeout to catch a hung GPU), and saves a checkpoint every `checkpoint_every` steps;
- a job interrupted by a drain, a requeue or a quarantine comes back with its last checkpoint,
  on this worker or another, and resumes there: a drain costs at most the steps since it.

Payload: {"steps": 30, "step_seconds": 1.0, "checkpoint_every": 5, "output_dir": "/data/out"}.
With output_dir, each step's output is written to <output_dir>/<job id>/step-<n>.json and
appended to work.log there (what the tests and the benchmark count).

    [classes.train]
    mode = "persistent"
    command = ["python3", "examples/ml_handler.py", "--load-seconds", "5", "--load-mb", "512"]
    timeout = "40m"
    heartbeat_timeout = "2m"
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

try:
    import drover
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
    import drover


class FakeModel(drover.Handler):
    def __init__(self, load_seconds: float, load_mb: int):
        self.load_seconds = load_seconds
        self.load_mb = load_mb
        self.weights = None

    def setup(self):
        time.sleep(self.load_seconds)
        self.weights = bytearray(self.load_mb * 1024 * 1024)  # "the model", kept across jobs
        print(f"model loaded ({self.load_mb} MiB) in pid {os.getpid()}", file=sys.stderr)

    def handle(self, job: drover.Job):
        p = job.payload if isinstance(job.payload, dict) else {}
        steps = int(p.get("steps", 30))
        if steps < 1:
            raise drover.Reject("steps must be at least 1")
        pause = float(p.get("step_seconds", 1.0))
        every = max(1, int(p.get("checkpoint_every", 5)))
        out = Path(p["output_dir"]) / job.id if p.get("output_dir") else None
        if out:
            out.mkdir(parents=True, exist_ok=True)

        state = job.checkpoint or {"step": 0}
        step = int(state["step"])
        if step:
            print(f"job {job.id}: resuming at step {step}", file=sys.stderr)
        while step < steps:
            time.sleep(pause)  # the forward/backward pass
            step += 1
            if out:
                record = {"step": step, "attempt": job.attempt, "fence": job.fence, "unit": os.environ.get("DROVER_UNIT")}
                (out / f"step-{step}.json").write_text(json.dumps(record))
                with open(out / "work.log", "a") as log:
                    log.write(json.dumps(record) + "\n")
            if step % every == 0 or step == steps:
                job.save_checkpoint({"step": step})
            job.progress(step / steps, note=f"step {step}/{steps}")
        return f"{steps} steps"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--load-seconds", type=float, default=2.0)
    ap.add_argument("--load-mb", type=int, default=256)
    a = ap.parse_args()
    FakeModel(a.load_seconds, a.load_mb).run()


if __name__ == "__main__":
    main()
