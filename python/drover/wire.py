"""The wire format, as constants: the one place this package names a header, an environment
variable, an exit code or a protocol field. docs/wire-format.md describes each; the project's
tests hold these to the Rust constants and to that document."""

# Headers of a job on the broker (AMQP message headers).
H_ATTEMPT = "x-drover-attempt"
H_SUBMITTED = "x-drover-submitted-at-ms"
H_DEADLINE = "x-drover-deadline-ms"
H_TENANT = "x-drover-tenant"
H_CLASS = "x-drover-class"
H_FAILED_ON = "x-drover-failed-on"
H_FAILURES = "x-drover-failures"
H_HAND_BACKS = "x-drover-hand-backs"
H_HANDED_BACK_AT = "x-drover-handed-back-at-ms"
H_CHECKPOINT = "x-drover-checkpoint"
H_DEAD_REASON = "x-drover-dead-reason"
H_DEAD_DETAIL = "x-drover-dead-detail"
H_DEAD_AT = "x-drover-dead-at-ms"
H_DEAD_HOST = "x-drover-dead-host"
H_DEAD_UNIT = "x-drover-dead-unit"

# Exec mode: environment variables of each attempt.
ENV_JOB_ID = "DROVER_JOB_ID"
ENV_CLASS = "DROVER_CLASS"
ENV_ATTEMPT = "DROVER_ATTEMPT"
ENV_FENCE = "DROVER_FENCE"
ENV_DEADLINE = "DROVER_DEADLINE"
ENV_TENANT = "DROVER_TENANT"
ENV_HOST = "DROVER_HOST"
ENV_UNIT = "DROVER_UNIT"
ENV_CHECKPOINT_FILE = "DROVER_CHECKPOINT_FILE"

# Exec mode: exit statuses.
EXIT_OK = 0
EXIT_RETRY = 75
EXIT_REJECT = 65
EXIT_FAIL = 1

# Persistent mode: result statuses.
STATUS_OK = "ok"
STATUS_RETRY = "retry"
STATUS_REJECT = "reject"
STATUS_FAIL = "fail"

# The largest checkpoint Drover carries, in bytes of compact JSON.
MAX_CHECKPOINT_BYTES = 65536

# Version of the job events' JSON.
EVENTS_VERSION = 1


def work_queue(prefix: str, job_class: str) -> str:
    return f"{prefix}.jobs.{job_class}"


def events_exchange(prefix: str) -> str:
    return f"{prefix}.events"


def event_routing_key(event: str, job_class: str, host: str) -> str:
    return f"{event}.{job_class.replace('.', '_')}.{host.replace('.', '_')}"
