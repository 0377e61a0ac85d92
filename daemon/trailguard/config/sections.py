"""The config's plain sections: [aws], [logging], [[sources.sqs]], [outputs], [state], [limits],
[http], [metrics], [history], [snapshot], [shutdown] and [keys]."""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from trailguard.config.checks import (
    _ACCOUNT,
    _BUCKET,
    _REGION,
    InvalidValue,
    _check_duplicates,
    _check_regex,
    _check_url,
)
from trailguard.detect.records import DecodeLimits

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]

# A CloudTrail log file: [prefix/]AWSLogs/[o-orgid/]<account>/CloudTrail/<region>/YYYY/MM/DD/
# <account>_CloudTrail_<region>_<YYYYMMDDTHHMMZ>_<random>.json.gz (digest and Insight files are
# under CloudTrail-Digest/ and CloudTrail-Insight/, so they never match).
DEFAULT_KEY_PATTERN: Final = (
    r"(^|/)AWSLogs/(o-[a-z0-9]{10,32}/)?[0-9]{12}/CloudTrail/[a-z0-9-]+/"
    r"[0-9]{4}/[0-9]{2}/[0-9]{2}/[^/]+\.json(\.gz)?$"
)
#: A config file is read up to this size; a larger one is refused before it is parsed.
MAX_CONFIG_BYTES: Final = 1 << 20
#: How deeply a config may nest (arrays and inline tables in one another, parts of one dotted
#: key or table header, levels of the parsed document).  trailguard's own keys need at most 5
#: (``rules[0].suppress[0].actor_arn[0]``).  Deeper input is refused before tomllib sees it:
#: tomllib recurses per level (100,000 nested arrays end in RecursionError) and its cost grows
#: with the square of a dotted key's parts (100,000 parts exhaust memory).
MAX_CONFIG_DEPTH: Final = 16


class AwsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[aws]``: everything else (credentials, profile, retries) comes from botocore's
    standard environment: AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL, ~/.aws/config ..."""

    region: str | None = None
    endpoint_url: str | None = None

    def __post_init__(self) -> None:
        if self.region is not None and _REGION.fullmatch(self.region) is None:
            raise InvalidValue("region", f"{self.region!r} is not an AWS region name")
        if self.endpoint_url is not None:
            _check_url("endpoint_url", self.endpoint_url, need_path=False)


class LoggingConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[logging]``: ``format = "auto"`` is console on a terminal, JSON otherwise."""

    level: LogLevel = "info"
    format: LogFormat = "auto"


class SqsSourceConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One ``[[sources.sqs]]`` queue."""

    queue_url: str
    name: str | None = None
    wait_time_secs: Annotated[int, Meta(ge=0, le=20)] = 20
    max_messages: Annotated[int, Meta(ge=1, le=10)] = 10
    # >= 2, not 30: short timeouts make redelivery tests quick (the heartbeat keeps a message in
    # progress invisible whatever the value); production wants minutes (see the example config).
    visibility_timeout_secs: Annotated[int, Meta(ge=2, le=43200)] = 300
    heartbeat_fraction: Annotated[float, Meta(ge=0.1, le=0.9)] = 0.5
    pollers: Annotated[int, Meta(ge=1, le=16)] = 1
    #: A message whose objects still failed transiently after their retries is made visible
    #: again after this many seconds, doubled for each earlier receive (at most 900 s).
    release_backoff_secs: Annotated[int, Meta(ge=1, le=900)] = 15
    #: The buckets this queue's notifications may name; empty = any.  A message naming another
    #: bucket is not fetched: it is rejected and left to the queue's redrive policy.
    buckets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_url("queue_url", self.queue_url, need_path=True)
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,80}", self.name):
            raise InvalidValue("name", f"{self.name!r}: use 1-80 letters, digits, '_', '.', '-'")
        for index, bucket in enumerate(self.buckets):
            if _BUCKET.fullmatch(bucket) is None:
                raise InvalidValue(
                    f"buckets[{index}]",
                    f"{bucket!r} is not an S3 bucket name (letters, digits, '.', '_', '-'; "
                    "up to 255 characters)",
                )
        _check_duplicates("buckets[{}]", iter(self.buckets), "bucket")

    @property
    def label(self) -> str:
        """A short name for logs and metric labels: ``name``, else the queue's name."""
        if self.name is not None:
            return self.name
        return urllib.parse.urlsplit(self.queue_url).path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def heartbeat_interval_secs(self) -> float:
        """How often an in-progress message's visibility is extended."""
        return self.visibility_timeout_secs * self.heartbeat_fraction


class SourcesConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[sources]``: where notifications come from."""

    sqs: tuple[SqsSourceConfig, ...] = ()

    def __post_init__(self) -> None:
        _check_duplicates("sqs[{}].queue_url", (q.queue_url for q in self.sqs), "queue_url")
        _check_duplicates("sqs[{}].name", (q.label for q in self.sqs), "queue name")


class JsonlOutputConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[outputs.jsonl]``: detections as JSON Lines."""

    path: str = "-"
    fsync: bool = True

    def __post_init__(self) -> None:
        if self.path == "":
            raise InvalidValue("path", 'must not be empty (use "-" for stdout)')


class OutputsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    jsonl: JsonlOutputConfig = msgspec.field(default_factory=JsonlOutputConfig)


StateBackend = Literal["sqlite", "dynamodb"]

# A DynamoDB table name: 3-255 of letters, digits, '_', '-', '.' (DynamoDB's own rule).
_TABLE_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{3,255}")


class DynamoDbStateConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[state.dynamodb]``: the shared table (docs/DYNAMODB.md).  Region and endpoint come from
    ``[aws]``; credentials from the standard AWS chain, as for every other client."""

    table: str = "trailguard"

    def __post_init__(self) -> None:
        if _TABLE_NAME.fullmatch(self.table) is None:
            raise InvalidValue(
                "table",
                f"{self.table!r} is not a DynamoDB table name "
                "(3-255 letters, digits, '_', '-', '.')",
            )


class StateConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[state]``: where trailguard keeps its state (dedup by eventID, the event ledger, policy
    history, jobs).  ``backend = "sqlite"`` (one process: files under ``path``) or
    ``"dynamodb"`` (every replica shares the table of ``[state.dynamodb]``)."""

    backend: StateBackend = "sqlite"
    path: str = "/var/lib/trailguard/state.sqlite3"
    dedup_ttl_hours: Annotated[int, Meta(ge=1, le=8784)] = 168
    dynamodb: DynamoDbStateConfig = msgspec.field(default_factory=DynamoDbStateConfig)

    def __post_init__(self) -> None:
        if self.path == "":
            raise InvalidValue("path", "must not be empty")


class LimitsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[limits]``: what bounds memory and CPU."""

    max_objects_in_flight: Annotated[int, Meta(ge=1, le=1024)] = 8
    max_object_bytes: Annotated[int, Meta(gt=0)] = 52428800
    #: bytes of objects held at once, fetched and not yet decoded (>= max_object_bytes): many
    #: small objects in flight, few big ones (README "Memory")
    max_bytes_in_flight: Annotated[int, Meta(gt=0)] = 128 << 20
    #: refuse an object that inflates to more than this (a gzip bomb): a 50 MB CloudTrail
    #: object, S3's largest delivery, honestly reaches ~10-20x
    max_inflated_bytes: Annotated[int, Meta(ge=1 << 20)] = 1 << 30
    #: JSON up to this size is decoded in memory; a bigger file as it inflates, in 1 MiB pieces
    #: (the bound on a decode worker's memory: see README "Memory")
    stream_over_bytes: Annotated[int, Meta(ge=1 << 20, le=1 << 30)] = 64 << 20
    #: a record bigger than this is a bad record (CloudTrail omits request parameters over
    #: 100 KB; its records stay far below)
    max_record_bytes: Annotated[int, Meta(ge=64 << 10, le=256 << 20)] = 4 << 20
    #: refuse an object whose candidate records (the ones decoded in full) total more than this
    #: many bytes of JSON: it bounds what one object may hold in memory once decoded
    max_candidate_bytes: Annotated[int, Meta(ge=1 << 20, le=1 << 30)] = 32 << 20
    #: The most objects one SQS message may name.  AWS's own notifications name one (an S3
    #: event notification carries one record; CloudTrail's SNS message lists the files of one
    #: delivery), so a body naming more is forged or broken: it is rejected whole -- nothing
    #: fetched -- and left to the queue's redrive policy.
    max_objects_per_message: Annotated[int, Meta(ge=1, le=10000)] = 100
    decode_workers: Annotated[int, Meta(ge=0, le=256)] = 0
    #: "auto": threads when decoding runs without the GIL (trailguard's C scanner), else
    #: processes; "processes" isolates decoding from the daemon (a crash, memory) at ~0.4 ms of
    #: CPU per object
    decode_in: Literal["auto", "threads", "processes"] = "auto"

    def __post_init__(self) -> None:
        if self.max_bytes_in_flight < self.max_object_bytes:
            raise InvalidValue(
                "max_bytes_in_flight",
                f"{self.max_bytes_in_flight} is less than max_object_bytes "
                f"({self.max_object_bytes}): the biggest object could never be fetched",
            )
        if self.max_record_bytes > self.stream_over_bytes:
            raise InvalidValue(
                "max_record_bytes",
                f"{self.max_record_bytes} is more than stream_over_bytes "
                f"({self.stream_over_bytes})",
            )

    def decode_limits(self) -> DecodeLimits:
        """The limits one decode works under."""
        return DecodeLimits(
            max_input_bytes=self.max_object_bytes,
            max_inflated_bytes=self.max_inflated_bytes,
            stream_over=self.stream_over_bytes,
            max_record_bytes=self.max_record_bytes,
            max_candidate_bytes=self.max_candidate_bytes,
        )

    def decode_worker_count(self) -> int:
        """``decode_workers``, with 0 meaning the CPUs this process may run on."""
        if self.decode_workers:
            return self.decode_workers
        try:
            return len(os.sched_getaffinity(0)) or 1
        except AttributeError:  # not on Linux
            return os.cpu_count() or 1


def parse_listen(value: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``; IPv6 hosts in brackets (``"[::1]:9108"``).

    Raises ValueError with an operator-facing message.  Port 0 (a free port) is accepted here,
    for tests; the config requires 1-65535.
    """
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(
            f'{value!r} is not host:port (e.g. "127.0.0.1:9108", "0.0.0.0:9108", "[::1]:9108")'
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{value!r}: {host!r} in brackets is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f'{value!r}: write an IPv6 address in brackets, e.g. "[::1]:9108"')
    elif not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", host):
        raise ValueError(f"{value!r}: {host!r} is not an IP address or host name")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"{value!r}: port {port} is out of range (1-65535)")
    return host, port


class HttpConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[http]``: the daemon's own HTTP endpoint: /metrics, /healthz, /readyz."""

    enabled: bool = True
    listen: str = "127.0.0.1:9108"
    ready_max_poll_age_secs: Annotated[float, Meta(gt=0, le=86400)] = 120.0

    def __post_init__(self) -> None:
        try:
            _, port = parse_listen(self.listen)
        except ValueError as exc:
            raise InvalidValue("listen", str(exc)) from None
        if port == 0:
            raise InvalidValue("listen", f"{self.listen!r}: give a port (1-65535), not 0")


class MetricsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[metrics]``: what the Prometheus metrics carry."""

    # account and region labels on the *_by_account metrics; switch off for very large orgs
    account_labels: bool = True


class HistoryConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[history]``: the policy history, from which remediation puts removed policies back."""

    enabled: bool = True
    # None: next to [state] path (state.sqlite3 -> state.history.sqlite3)
    path: str | None = None

    def __post_init__(self) -> None:
        if self.path == "":
            raise InvalidValue("path", "must not be empty (leave the key out for the default)")


_SNAPSHOT_ROLE_ARN: Final = re.compile(
    r"arn:aws(-[a-z]+)*:iam::[0-9]{12}:role/([\x21-\x7e]*/)?[\w+=,.@-]{1,64}", re.ASCII
)
_EXTERNAL_ID: Final = re.compile(r"[\w+=,.@:/-]{2,1224}", re.ASCII)


class SnapshotConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[snapshot]``: ``trailguard snapshot`` seeds the policy history from IAM.

    The local account is read with the default credentials; each of ``accounts`` through the
    role ``role_arn_template`` names in it (STS AssumeRole).
    """

    accounts: tuple[str, ...] = ()
    role_arn_template: str = "arn:aws:iam::{account_id}:role/trailguard-snapshot"
    # Not a secret in AWS's model, but it guards against the confused deputy: never logged.
    external_id: str | None = None
    include_aws_managed_policies: bool = False

    def __post_init__(self) -> None:
        for index, account in enumerate(self.accounts):
            if _ACCOUNT.fullmatch(account) is None:
                raise InvalidValue(
                    f"accounts[{index}]", f"{account!r} is not a 12-digit AWS account ID"
                )
        _check_duplicates("accounts[{}]", iter(self.accounts), "account")
        template = self.role_arn_template
        if "{account_id}" not in template:
            raise InvalidValue(
                "role_arn_template",
                f"{template!r} must contain {{account_id}}, e.g. "
                '"arn:aws:iam::{account_id}:role/trailguard-snapshot"',
            )
        try:
            example = self.role_arn("123456789012")
        except (KeyError, IndexError, ValueError):
            example = ""
        if _SNAPSHOT_ROLE_ARN.fullmatch(example) is None:
            raise InvalidValue(
                "role_arn_template",
                f"{template!r} is not an IAM role ARN once {{account_id}} is filled in "
                "(arn:<partition>:iam::{account_id}:role/[path/]<name>; no other {} fields)",
            )
        if self.external_id is not None and _EXTERNAL_ID.fullmatch(self.external_id) is None:
            # The value is not repeated: it may be shared with the role's owner only.
            raise InvalidValue(
                "external_id", "must be 2-1224 of letters, digits and _+=,.@:/- (as STS requires)"
            )

    def role_arn(self, account_id: str) -> str:
        """The role to assume in ``account_id``."""
        return self.role_arn_template.format(account_id=account_id)


class ShutdownConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[shutdown]``: the first SIGTERM/SIGINT drains for at most ``deadline_secs``."""

    deadline_secs: Annotated[float, Meta(ge=0, le=3600)] = 30.0


class KeysConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[keys]``: which S3 keys are downloaded (digest and Insight files never are)."""

    include: tuple[str, ...] = (DEFAULT_KEY_PATTERN,)
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.include:
            raise InvalidValue("include", "must list at least one regex (else nothing is read)")
        for field in ("include", "exclude"):
            for index, pattern in enumerate(getattr(self, field)):
                _check_regex(f"{field}[{index}]", pattern)
