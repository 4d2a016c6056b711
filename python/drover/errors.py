"""How a handler ends a job other than with success: raise one of these."""


class Retry(Exception):
    """A transient failure: the job is retried after a delay (exec mode: exit status 75)."""


class Reject(Exception):
    """The job itself is bad: dead-letter it without retrying (exec mode: exit status 65)."""


class Fail(Exception):
    """A failure: retried until the class's max_attempts (exec mode: exit status 1). Any other
    exception raised by a handler counts as this."""


class CheckpointTooLarge(ValueError):
    """A checkpoint whose JSON is larger than Drover carries (MAX_CHECKPOINT_BYTES): store the
    data in your own storage and checkpoint its path."""
