"""One exception tree for trailguard.

Every error trailguard raises on purpose derives from :class:`TrailguardError`.  Library errors
(botocore, msgspec, OSError, ...) are caught where they happen and re-raised as one of these with
``raise ... from exc``; the edges (the CLI, the daemon's supervisor) map them to exit codes, log
events and metrics.  Nothing below the edges prints or exits.
"""

from __future__ import annotations


class TrailguardError(Exception):
    """Base of every error trailguard raises on purpose."""


class UsageError(TrailguardError):
    """The command line asked for something impossible (exit code 2)."""


class ConfigError(TrailguardError):
    """A config file is missing, unreadable or invalid (exit code 2).

    ``key_path`` is the dotted path of the offending key (``rules[2].suppress[0].user_agent``),
    or ``None`` when the whole file is at fault (unreadable, not TOML).
    """

    def __init__(self, file: str, message: str, key_path: str | None = None) -> None:
        self.file = file
        self.key_path = key_path
        self.reason = message
        where = f"{file}: {key_path}" if key_path else file
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, str, str | None]]:
        return (type(self), (self.file, self.reason, self.key_path))


class DecodeError(TrailguardError):
    """A CloudTrail log file could not be decoded; an error for that file alone.

    ``source`` names the file (a path, or ``s3://bucket/key``), ``reason`` says what was wrong in
    words an operator can act on.
    """

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")

    # Errors cross process boundaries (the decode pool): keep them picklable.
    def __reduce__(self) -> tuple[type[DecodeError], tuple[str, str]]:
        return (type(self), (self.source, self.reason))


class StateError(TrailguardError):
    """trailguard's own state (dedup store, policy history, jobs) cannot be opened or used.

    Raised for a file that cannot be created or opened, one that is not a database or was written
    by a newer trailguard, and for storage failures while the daemon runs.
    """


class OperationError(TrailguardError):
    """One operation on the outside world failed: fetching or decoding an S3 object, talking to
    SQS, a remediation's call to IAM, CloudTrail or SNS.

    ``stage`` is where (``s3_get``, ``decode``, ``sqs_receive``, ``remediate`` ...), ``reason`` is
    the short, stable cause used in logs and as a bounded metric label (``NoSuchKey``,
    ``too_large``, ``throttled`` ...); ``detail`` is the longer operator-facing explanation.
    Whether trying again may help is the subclass: :class:`TransientError` or
    :class:`PermanentError`.
    """

    transient = False

    def __init__(self, stage: str, reason: str, detail: str | None = None) -> None:
        self.stage = stage
        self.reason = reason
        self.detail = detail or reason
        super().__init__(f"{stage}: {self.detail}")

    def __reduce__(self) -> tuple[type[OperationError], tuple[str, str, str]]:
        return (type(self), (self.stage, self.reason, self.detail))


class TransientError(OperationError):
    """May succeed if tried again: throttling, 5xx, timeouts, connection resets."""

    transient = True


class PermanentError(OperationError):
    """Will fail the same way every time: NoSuchKey, AccessDenied, corrupt or oversized object.

    An ingest failure leaves its message to the queue's redrive policy (dead-letter queue); a
    remediation failure ends its job ``dead``; neither is retried in a hot loop.
    """


class StartupError(TrailguardError):
    """The daemon cannot start: no queue, a queue unreachable, the state store unusable."""


class TelemetryError(TrailguardError):
    """trailguard's own telemetry cannot run: the /metrics and health endpoint cannot listen on
    its ``[http] listen`` address (in use, not an address of this host, a privileged port)."""
