#!/usr/bin/env python3
"""Work lost per drain, with and without checkpoints: a 30-step job of examples/ml_handler.py is
drained at several points (SIGTERM to its `drover work`, drain deadline 1 s), resumes on a second
worker, and the steps run twice are counted from its work log. Prints a Markdown table.

    eval "$(scripts/services.sh env)"; cargo build --release
    scripts/bench-drain-loss.py [--drover target/release/drover] [--steps 30] [--step-seconds 0.2]

Needs the broker of scripts/services.sh (DROVER_AMQP_URL, default loopback)."""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIG = """
[broker]
url = "{url}"
prefix = "{prefix}"
queue_expires = "10m"
[worker]
drain_deadline = "1s"
kill_grace = "1s"
[classes.ml]
mode = "persistent"
command = ["python3", "{example}", "--load-seconds", "0.2", "--load-mb", "16"]
timeout = "10m"
drain_early_requeue = false
"""


def wait(what, limit, cond):
    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            sys.exit(f"timed out waiting for {what} (logs in target/drover-drain-loss-*)")
        time.sleep(0.05)


def steps_by(log: Path):
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def one_drain(drover, cfg, out, steps, step_s, every, at_step, tag):
    def work(instance):
        return subprocess.Popen(
            [drover, "work", "--config", cfg, "--class", "ml", "--instance", instance],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(out / f"{tag}-{instance}.log", "w"),
        )

    w1 = work("ml-1")
    payload = json.dumps({"steps": steps, "step_seconds": step_s, "checkpoint_every": every, "output_dir": str(out)})
    job = subprocess.run([drover, "submit", "--config", cfg, "--class", "ml", "--payload", payload],
                         check=True, capture_output=True, text=True).stdout.strip()
    log = out / job / "work.log"
    wait("the job to reach its drain point", 120, lambda: len(steps_by(log)) >= at_step)
    w1.send_signal(signal.SIGTERM)
    w1.wait(60)
    # Within the drain deadline the job may have finished on ml-1: nothing was lost then.
    if not any(r["step"] == steps for r in steps_by(log)):
        w2 = work("ml-2")
        wait("the job to finish elsewhere", 300, lambda: any(r["step"] == steps for r in steps_by(log)))
        w2.send_signal(signal.SIGTERM)
        w2.wait(60)
    print(f"{tag}: drained at step {at_step}, {len(steps_by(log)) - steps} steps redone", file=sys.stderr)
    return len(steps_by(log)) - steps  # steps run twice


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--drover", default=str(REPO / "target/release/drover"))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--step-seconds", type=float, default=0.2)
    ap.add_argument("--every", type=int, default=5, help="checkpoint every N steps")
    a = ap.parse_args()
    url = os.environ.get("DROVER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
    points = [round(a.steps * f) for f in (0.2, 0.35, 0.5, 0.65, 0.8, 0.95)]
    rows = []
    (REPO / "target").mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="drover-drain-loss-", dir=REPO / "target"))
    if True:
        cfg = tmp / "drover.toml"
        cfg.write_text(CONFIG.format(url=url, prefix=f"bench-{uuid.uuid4().hex[:8]}", example=REPO / "examples/ml_handler.py"))
        for name, every in ((f"checkpoint every {a.every} steps", a.every), ("no checkpoint", a.steps + 1)):
            redone = [one_drain(a.drover, str(cfg), tmp, a.steps, a.step_seconds, every, p, f"{every}-{p}") for p in points]
            rows.append((name, redone))
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"{a.steps}-step job, {a.step_seconds} s a step, drained once at step {', '.join(map(str, points))} "
          f"(drain deadline 1 s), resumed on another worker\n")
    print("| handler | steps redone per drain (each point) | mean | max | mean work lost |")
    print("|---|---|---|---|---|")
    for name, redone in rows:
        mean = statistics.mean(redone)
        print(f"| {name} | {' '.join(map(str, redone))} | {mean:.1f} | {max(redone)} | "
              f"{mean / a.steps * 100:.0f}% of the job ({mean * a.step_seconds:.1f} s) |")


if __name__ == "__main__":
    main()
