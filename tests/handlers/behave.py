#!/usr/bin/env python3
"""A handler for Drover's integration tests: behaves as the job's payload says.

Exec mode by default; `behave.py persistent` speaks the persistent protocol. Payload keys:
  sleep: seconds to work               fail_attempts: transient failure while attempt <= n
  always_fail: exit 1 / "fail"         reject: exit 65 / "reject"
  noise: print non-JSON lines first    break_attempts: persistent: reply without an id
  die_attempts: the handler process dies while attempt <= n
  kill_worker: SIGKILL the worker running the handler (a job that runs its host out of memory)
  child_pidfile: start a grandchild `sleep 600` and write its pid there (orphan checks)
  term_sleep: on SIGTERM, go on for that many seconds before exiting (a handler saving its work)
  lock_dir: take the job's lock file <lock_dir>/<job id>.lock for the run, and append
    "take <job id> <pid> <fence> <unix time> <previous holder's pid or 0> <alive|dead|none>"
    to <lock_dir>/runs.log (the test checks that two runs of a job never overlap)
  first_sleep: with lock_dir, the first run (no lock found) sleeps this long instead of `sleep`
  until_file: after `sleep`, work on until that file exists (at most 300 s)
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


def state_of(pid):
    """"alive", or "dead" for a process that can run no more code of its own: gone, a zombie,
    exiting (PF_EXITING), or with a SIGKILL pending (it never returns to user space)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X", "x") or int(fields[6]) & 0x4:
            return "dead"
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & (1 << 8):
                    return "dead"
    except (OSError, ValueError, IndexError):
        return "dead"
    return "alive"


def take_lock(lock_dir, job_id, fence):
    path = os.path.join(lock_dir, f"{job_id}.lock")
    prev, state = 0, "none"
    try:
        with open(path) as f:
            prev = int(f.read().split()[0])
        state = state_of(prev)
    except (OSError, ValueError, IndexError):
        pass
    with open(path + ".tmp", "w") as f:
        f.write(f"{os.getpid()} {fence}\n")
    os.replace(path + ".tmp", path)
    with open(os.path.join(lock_dir, "runs.log"), "a") as f:
        f.write(f"take {job_id} {os.getpid()} {fence} {time.time():.6f} {prev} {state}\n")
    return path, state


def on_term_sleep(seconds):
    def handler(signum, frame):
        time.sleep(seconds)
        os._exit(1)
    signal.signal(signal.SIGTERM, handler)


def work(job_id, attempt, payload, persistent, fence=""):
    """Returns an exit-status-like code: 0, 75, 65 or 1; may never return."""
    log("start", job_id, attempt)
    lock = None
    if payload.get("term_sleep"):
        on_term_sleep(float(payload["term_sleep"]))
    sleep = float(payload.get("sleep", 0))
    if payload.get("lock_dir"):
        lock, found = take_lock(payload["lock_dir"], job_id, fence)
        if found == "none" and "first_sleep" in payload:
            sleep = float(payload["first_sleep"])
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
    time.sleep(sleep)
    if payload.get("until_file"):
        give_up = time.time() + 300
        while not os.path.exists(payload["until_file"]) and time.time() < give_up:
            time.sleep(0.1)
    if payload.get("reject"):
        return 65
    if payload.get("always_fail"):
        return 1
    if attempt <= int(payload.get("fail_attempts", 0)):
        return 75
    if lock:
        os.remove(lock)
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
        code = work(job["id"], job["attempt"], payload, True, str(job.get("fence", "")))
        print(json.dumps({"id": job["id"], "status": STATUS[code], "message": f"code {code}"}), flush=True)


def exec_mode():
    raw = sys.stdin.read()
    payload = json.loads(raw) if raw.strip() else {}
    code = work(os.environ["DROVER_JOB_ID"], int(os.environ["DROVER_ATTEMPT"]), payload, False,
                os.environ.get("DROVER_FENCE", ""))
    if code:
        print(f"behave: code {code}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    persistent() if sys.argv[1:] == ["persistent"] else exec_mode()
