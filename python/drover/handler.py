"""Handlers: one class (or one decorated function) that runs in both of Drover's modes.

    import drover

    class Infer(drover.Handler):
        def setup(self):                  # once per process, before the first job
            self.model = load_model()
        def handle(self, job):            # once per job
            step = job.checkpoint or 0    # where an interrupted attempt left off
            while step < 30:
                self.model.step(job.payload, step)
                step += 1
                job.save_checkpoint(step)
                job.progress(step / 30, note=f"step {step}")
            return "done"

    if __name__ == "__main__":
        Infer().run()

`run()` serves jobs as a persistent handler (JSON lines on stdin and stdout, `{"ready": true}`
once `setup()` returned), or runs the one job of an exec-mode attempt when `DROVER_JOB_ID` is
set, and exits with the status Drover expects. docs/wire-format.md has the protocol.
"""

import base64
import json
import os
import sys
import threading
import traceback
from typing import Any, Callable, Optional

from . import wire
from .errors import CheckpointTooLarge, Fail, Reject, Retry


def _encode_checkpoint(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"))
    if len(text.encode()) > wire.MAX_CHECKPOINT_BYTES:
        raise CheckpointTooLarge(
            f"checkpoint of {len(text.encode())} bytes; at most {wire.MAX_CHECKPOINT_BYTES} are carried"
        )
    return text


class Job:
    """One attempt of a job, as the handler sees it."""

    def __init__(
        self,
        id: str,
        job_class: str,
        attempt: int,
        fence: int,
        deadline: str,
        tenant: Optional[str],
        payload: Any,
        body: bytes,
        checkpoint: Any = None,
        _beat: Optional[Callable[[dict], None]] = None,
        _save: Optional[Callable[[str], None]] = None,
    ):
        self.id = id
        self.job_class = job_class
        self.attempt = attempt
        #: Larger for every later attempt of this job: store it with side effects and refuse
        #: writes carrying a smaller one.
        self.fence = fence
        self.deadline = deadline
        self.tenant = tenant
        #: The payload parsed as JSON, or None when the body is not JSON (see `body`).
        self.payload = payload
        self.body = body
        #: The last checkpoint saved by an earlier, interrupted attempt (or by this one).
        self.checkpoint = checkpoint
        self._beat = _beat
        self._save = _save

    def progress(self, fraction: Optional[float] = None, note: Optional[str] = None) -> None:
        """Reports progress (0.0 to 1.0) and is a heartbeat: with a class's heartbeat_timeout,
        a handler silent for longer is treated as hung."""
        line: dict = {}
        if fraction is not None:
            line["progress"] = min(1.0, max(0.0, float(fraction)))
        if note is not None:
            line["note"] = str(note)
        if self._beat is not None:
            self._beat(line)

    def heartbeat(self, note: Optional[str] = None) -> None:
        """A heartbeat without progress."""
        self.progress(None, note)

    def save_checkpoint(self, value: Any) -> None:
        """Saves a small JSON value (a step number, a path in your own storage): an attempt
        interrupted later (drain, requeue, lease lost, quarantine) goes back with it, and the
        next attempt finds it in `job.checkpoint`."""
        text = _encode_checkpoint(value)
        self.checkpoint = value
        if self._save is not None:
            self._save(text)


class Handler:
    """Subclass and override `setup` (optional) and `handle`; then call `run()`.

    `handle(job)` returns None or a message (success), or raises Retry, Reject or Fail; any
    other exception is a failure with its traceback as the message."""

    def setup(self) -> None:
        pass

    def handle(self, job: Job) -> Any:
        raise NotImplementedError("override handle(job)")

    def run(self) -> None:
        if os.environ.get(wire.ENV_JOB_ID):
            sys.exit(run_exec(self))
        serve(self)


class _Function(Handler):
    def __init__(self, fn: Callable[[Job], Any], setup: Optional[Callable[[], None]]):
        self._fn = fn
        self._setup = setup
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", "handler")

    def setup(self) -> None:
        if self._setup is not None:
            self._setup()

    def handle(self, job: Job) -> Any:
        return self._fn(job)

    def __call__(self, job: Job) -> Any:
        return self._fn(job)


def handler(fn: Optional[Callable[[Job], Any]] = None, *, setup: Optional[Callable[[], None]] = None):
    """Makes a function a handler: `@drover.handler` or `@drover.handler(setup=load_model)`;
    then `fn.run()`."""
    if fn is None:
        return lambda f: _Function(f, setup)
    return _Function(fn, setup)


def _outcome(handle: Callable[[], Any]) -> "tuple[str, str]":
    """Runs a handler's job and says how it went: (status, message)."""
    try:
        result = handle()
    except Retry as e:
        return wire.STATUS_RETRY, str(e)
    except Reject as e:
        return wire.STATUS_REJECT, str(e)
    except Fail as e:
        return wire.STATUS_FAIL, str(e)
    except Exception:  # a bug in one job must not take the handler down
        return wire.STATUS_FAIL, traceback.format_exc(limit=20)
    return wire.STATUS_OK, "" if result is None else str(result)


def serve(h: Handler, stdin=None, stdout=None) -> None:
    """Persistent mode: `setup()` once, `{"ready": true}`, then one result line per job line
    until stdin ends. While a job runs, `print()` goes to stderr (the log): stdout carries the
    protocol only."""
    proto = stdout or sys.stdout
    lines = stdin or sys.stdin
    sys.stdout = sys.stderr
    lock = threading.Lock()

    def send(obj: dict) -> None:
        with lock:
            proto.write(json.dumps(obj, separators=(",", ":")) + "\n")
            proto.flush()

    h.setup()
    send({"ready": True})
    for line in lines:  # end of input: Drover is stopping us
        line = line.strip()
        if not line:
            continue
        msg = json.loads(line)
        job_id = msg["id"]
        body = b""
        if "payload_b64" in msg:
            body = base64.b64decode(msg["payload_b64"])
            payload = None
        else:
            payload = msg.get("payload")
            body = json.dumps(payload).encode()
        job = Job(
            id=job_id,
            job_class=msg.get("class", ""),
            attempt=int(msg.get("attempt", 1)),
            fence=int(msg.get("fence", 0)),
            deadline=msg.get("deadline", ""),
            tenant=msg.get("tenant"),
            payload=payload,
            body=body,
            checkpoint=msg.get("checkpoint"),
            _beat=lambda fields, i=job_id: send({"id": i, **fields}),
            _save=lambda text, i=job_id: send({"id": i, "checkpoint": json.loads(text)}),
        )
        status, message = _outcome(lambda: h.handle(job))
        result = {"id": job_id, "status": status}
        if message:
            result["message"] = message
        send(result)


def exec_job(stdin=None, environ=None) -> Job:
    """Exec mode: this attempt's job, from the environment and the payload on stdin. Progress
    goes to stdout as JSON lines; checkpoints to the file named by DROVER_CHECKPOINT_FILE."""
    env = os.environ if environ is None else environ
    body = (stdin or sys.stdin.buffer).read()
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = None
    path = env.get(wire.ENV_CHECKPOINT_FILE) or None
    checkpoint = None
    if path and os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            checkpoint = json.loads(text) if text.strip() else None
        except (OSError, ValueError):
            checkpoint = None
    out = sys.stdout
    lock = threading.Lock()

    def beat(fields: dict) -> None:
        with lock:
            out.write(json.dumps(fields, separators=(",", ":")) + "\n")
            out.flush()

    def save(text: str) -> None:
        if not path:
            return
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: a kill mid-write leaves the previous checkpoint

    return Job(
        id=env.get(wire.ENV_JOB_ID, ""),
        job_class=env.get(wire.ENV_CLASS, ""),
        attempt=int(env.get(wire.ENV_ATTEMPT) or 1),
        fence=int(env.get(wire.ENV_FENCE) or 0),
        deadline=env.get(wire.ENV_DEADLINE, ""),
        tenant=env.get(wire.ENV_TENANT) or None,
        payload=payload,
        body=body,
        checkpoint=checkpoint,
        _beat=beat,
        _save=save,
    )


def exit_status(status: str) -> int:
    """The exec-mode exit status of a result status."""
    return {
        wire.STATUS_OK: wire.EXIT_OK,
        wire.STATUS_RETRY: wire.EXIT_RETRY,
        wire.STATUS_REJECT: wire.EXIT_REJECT,
    }.get(status, wire.EXIT_FAIL)


def run_exec(h: Handler) -> int:
    """Exec mode: `setup()`, the one job, and the exit status for Drover."""
    job = exec_job()
    sys.stdout = sys.stderr
    status, message = _outcome(lambda: (h.setup(), h.handle(job))[1])
    if message and status != wire.STATUS_OK:
        print(message, file=sys.stderr)
    return exit_status(status)
