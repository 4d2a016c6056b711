#!/usr/bin/env python3
"""A handler for Drover's integration tests: behaves as the job's payload says.

Exec mode by default; `behave.py persistent` speaks the persistent protocol. Payload keys:
  sleep: seconds to work               fail_attempts: transient failure while attempt <= n
  always_fail: exit 1 / "fail"         reject: exit 65 / "reject"
  noise: print non-JSON lines first    break_attempts: persistent: reply without an id
  die_attempts: the handler process dies while attempt <= n
  kill_worker: SIGKILL the worker running the handler (a job that runs its host out of memory)
  child_pidfile: start a grandchild `sleep 600` and write its pid there (orphan checks)
BEHAVE_BAD set in the environment: every job hangs (a misconfigured host).
BEHAVE_BAD_IF=<path>: every job hangs while that file exists (a misconfiguration, then fixed).
BEHAVE_FAIL_IF=<path>: every job fails while that file exists (a shared outage).
Every run appends "<event> <job id> <attempt> <pid>" to $BEHAVE_LOG when that is set.
"""
import json
import os
import signal
import subprocess
import sys
import time


def log(event, job_id, attempt):
    path = os.environ.get("BEHAVE_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{event} {job_id} {attempt} {os.getpid()}\n")


def work(job_id, attempt, payload, persistent):
    """Returns an exit-status-like code: 0, 75, 65 or 1; may never return."""
    log("start", job_id, attempt)
    outage = os.environ.get("BEHAVE_FAIL_IF")
    if outage and os.path.exists(outage):
        # A shared dependency is down: every job fails, everywhere.
        return 1
    bad_if = os.environ.get("BEHAVE_BAD_IF")
    if os.environ.get("BEHAVE_BAD") or (bad_if and os.path.exists(bad_if)):
        # A misconfigured host: every job hangs until its timeout.
        time.sleep(3600)
    if payload.get("child_pidfile"):
        child = subprocess.Popen(["sleep", "600"])
        with open(payload["child_pidfile"], "w") as f:
            f.write(str(child.pid))
    if payload.get("kill_worker"):
        log("kill", job_id, attempt)
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(3600)
    if attempt <= int(payload.get("die_attempts", 0)):
        log("die", job_id, attempt)
        os._exit(3)
    time.sleep(float(payload.get("sleep", 0)))
    if payload.get("reject"):
        return 65
    if payload.get("always_fail"):
        return 1
    if attempt <= int(payload.get("fail_attempts", 0)):
        return 75
    log("done", job_id, attempt)
    return 0


STATUS = {0: "ok", 75: "retry", 65: "reject", 1: "fail"}


def persistent():
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        payload = job.get("payload") or {}
        if payload.get("noise"):
            print("some debug print on stdout", flush=True)
        if job["attempt"] <= int(payload.get("break_attempts", 0)):
            print(json.dumps({"status": "ok"}), flush=True)
            continue
        code = work(job["id"], job["attempt"], payload, True)
        print(json.dumps({"id": job["id"], "status": STATUS[code], "message": f"code {code}"}), flush=True)


def exec_mode():
    raw = sys.stdin.read()
    payload = json.loads(raw) if raw.strip() else {}
    code = work(os.environ["DROVER_JOB_ID"], int(os.environ["DROVER_ATTEMPT"]), payload, False)
    if code:
        print(f"behave: code {code}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    persistent() if sys.argv[1:] == ["persistent"] else exec_mode()
