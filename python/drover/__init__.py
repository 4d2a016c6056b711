"""Drover's Python package: write handlers (persistent and exec mode) and submit jobs.

The handler side uses the standard library only; `drover.submit` needs the `amqp` extra.
docs/wire-format.md in Drover's repository is the protocol this package speaks."""

from .errors import CheckpointTooLarge, Fail, Reject, Retry
from .handler import Handler, Job, exec_job, exit_status, handler, run_exec, serve
from .submit import SubmitError, parse_duration, submit

__all__ = [
    "CheckpointTooLarge",
    "Fail",
    "Handler",
    "Job",
    "Reject",
    "Retry",
    "SubmitError",
    "exec_job",
    "exit_status",
    "handler",
    "parse_duration",
    "run_exec",
    "serve",
    "submit",
]
