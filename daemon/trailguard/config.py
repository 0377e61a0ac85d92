"""trailguard's configuration: one TOML file, typed, frozen and validated when loaded.

``load_config(path)`` / ``parse_config(text, file=...)`` return a :class:`Config` or raise
:class:`~trailguard.errors.ConfigError` naming the file and the exact key path
(``rules[2].suppress[0].user_agent[1]``).  Every section is a frozen msgspec Struct that forbids
unknown keys; numeric ranges are msgspec constraints, everything that needs parsing (URLs, ARN
globs, CIDRs, regexes, account ids) is checked in ``__post_init__`` with the offending sub-key.

Rules have two layers.  :class:`RuleEntry` is a ``[[rules]]`` table exactly as written: a key
the file leaves out is ``msgspec.UNSET``, so an entry whose id is a built-in rule's overrides only
the keys it sets.  :meth:`Config.resolved_rules` merges the entries over the built-in pack
(:data:`trailguard.detect.rules.DEFAULT_RULES`) into complete :class:`Rule` objects.

The file never holds credentials: they come from botocore's standard chain (environment,
profiles, SSO, container and instance roles), as do all AWS settings except ``[aws] region`` and
``endpoint_url``.
"""

from __future__ import annotations

import datetime
import difflib
import ipaddress
import os
import re
import tomllib
import types
import typing
import urllib.parse
from collections.abc import Iterator
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, UnsetType

from trailguard.detect.records import DecodeLimits
from trailguard.detect.rules import (
    DEFAULT_RULES,
    IAM_EVENT_SOURCE,
    OUTCOMES,
    IdentityType,
    Outcome,
    Severity,
    UserAgentPreset,
)
from trailguard.errors import ConfigError

__all__ = [
    "ACTION_NAMES",
    "DEFAULT_KEY_PATTERN",
    "DEFAULT_QUARANTINE_POLICY_ARN",
    "ActionMode",
    "ActionModes",
    "ActionName",
    "AwsConfig",
    "CircuitBreakerConfig",
    "Config",
    "HistoryConfig",
    "HttpConfig",
    "JsonlOutputConfig",
    "KeysConfig",
    "LimitsConfig",
    "LogFormat",
    "LogLevel",
    "LoggingConfig",
    "MetricsConfig",
    "NotifyConfig",
    "OutputsConfig",
    "RemediationConfig",
    "RemediationMode",
    "RemediationPolicy",
    "Rule",
    "RuleEntry",
    "SeverityConfig",
    "ShutdownConfig",
    "SnapshotConfig",
    "SourcesConfig",
    "SqsSourceConfig",
    "StateConfig",
    "Suppression",
    "load_config",
    "parse_config",
    "parse_listen",
    "unconfirmed_writes_warning",
]

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

_T = TypeVar("_T")


class InvalidValue(ValueError):
    """Raised by ``__post_init__`` validators; ``key`` is relative to the struct that raised.

    msgspec wraps it in a ValidationError whose path points at the struct; :func:`parse_config`
    joins the two so the error names the exact key.  Constructing a config struct in code with
    a bad value raises this directly.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


# --------------------------------------------------------------------------------------------
# Small validators
# --------------------------------------------------------------------------------------------

_REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+)+")
_ACCOUNT = re.compile(r"[0-9]{12}")
_RULE_ID = re.compile(r"[a-z0-9][a-z0-9-]*")
_EVENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_EVENT_SOURCE = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)+")
_ARN_PARTITION = re.compile(r"[a-z*?-]+")
_ARN_SERVICE = re.compile(r"[a-z0-9*?-]+")
_ARN_REGION = re.compile(r"[a-z0-9*?-]*")
_ARN_ACCOUNT = re.compile(r"|[0-9]{12}|aws|[0-9*?]*[*?][0-9*?]*")
# An S3 bucket name as notifications carry it (legacy us-east-1 names included: upper case, '_',
# up to 255 characters), as ingest/notifications.py accepts it.
_BUCKET = re.compile(r"[A-Za-z0-9._-]{1,255}")


def _check_url(key: str, value: str, *, need_path: bool) -> None:
    parts = urllib.parse.urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() for c in value)
    ):
        raise InvalidValue(key, f"{value!r} is not an http:// or https:// URL")
    if need_path and parts.path.strip("/") == "":
        raise InvalidValue(
            key,
            f"{value!r} has no queue path (https://sqs.<region>.amazonaws.com/<account>/<queue>)",
        )


def _check_regex(key: str, pattern: str) -> None:
    if pattern == "":
        raise InvalidValue(key, "an empty regex matches everything; leave the key out instead")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise InvalidValue(key, f"invalid regex {pattern!r}: {exc}") from None


def _check_nonempty(key: str, values: tuple[Any, ...] | None) -> None:
    if values is not None and not values:
        raise InvalidValue(key, "must list at least one value (leave the key out to not use it)")


def _check_arn_glob(key: str, glob: str) -> None:
    parts = glob.split(":", 5)
    if parts[0] != "arn" or len(parts) != 6:
        raise InvalidValue(
            key,
            f"{glob!r} is not an ARN glob: expected arn:<partition>:<service>:<region>:<account>:"
            "<resource> (six colon-separated parts; * and ? are wildcards)",
        )
    _, partition, service, region, account, resource = parts
    for part, pattern, what in (
        (partition, _ARN_PARTITION, "partition (aws, aws-cn, aws-us-gov, ...)"),
        (service, _ARN_SERVICE, "service (iam, sts, ...)"),
        (region, _ARN_REGION, "region (empty for IAM and STS)"),
        (account, _ARN_ACCOUNT, "account (12 digits, empty, or a wildcard)"),
    ):
        if pattern.fullmatch(part) is None:
            raise InvalidValue(key, f"{glob!r}: {part!r} is not a valid ARN {what}")
    if resource == "":
        raise InvalidValue(key, f"{glob!r} has an empty resource part")


def _check_duplicates(key: str, values: Iterator[str], what: str) -> None:
    seen: set[str] = set()
    for index, value in enumerate(values):
        if value in seen:
            raise InvalidValue(key.format(index), f"duplicate {what} {value!r}")
        seen.add(value)


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


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


class StateConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[state]``: the SQLite store (dedup by eventID, policy history, jobs)."""

    path: str = "/var/lib/trailguard/state.sqlite3"
    dedup_ttl_hours: Annotated[int, Meta(ge=1, le=8784)] = 168

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


class SeverityConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[severity]``: escalations raise a detection's severity to at least these levels."""

    root: Severity = "critical"
    console_without_mfa: Severity = "high"
    permissions_boundary_removal: Severity = "high"
    guardrail_policy_removal: Severity = "critical"
    guardrail_policies: tuple[str, ...] = ("AWSCompromisedKeyQuarantine*",)

    def __post_init__(self) -> None:
        for index, glob in enumerate(self.guardrail_policies):
            key = f"guardrail_policies[{index}]"
            if glob == "":
                raise InvalidValue(key, "must not be empty")
            if "/" in glob or glob.startswith("arn:"):
                raise InvalidValue(
                    key,
                    f"{glob!r}: write a policy name glob, not an ARN or path (it is matched "
                    "against policyName or the last segment of policyArn)",
                )


class Suppression(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One ``[[suppress]]`` / ``[[rules.suppress]]`` table.

    Every field that is set must match (AND); within a field, any listed value is enough (OR).
    A field that the record lacks (no userAgent, say) does not match.
    """

    name: str | None = None
    actor_arn: tuple[str, ...] | None = None
    identity_type: tuple[IdentityType, ...] | None = None
    invoked_by: tuple[str, ...] | None = None
    user_agent: tuple[str, ...] | None = None
    user_agent_preset: tuple[UserAgentPreset, ...] | None = None
    source_ip: tuple[str, ...] | None = None
    account_id: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.name is not None and not self.name.strip():
            raise InvalidValue("name", "must not be blank")
        fields = (
            "actor_arn",
            "identity_type",
            "invoked_by",
            "user_agent",
            "user_agent_preset",
            "source_ip",
            "account_id",
        )
        if all(getattr(self, f) is None for f in fields):
            raise InvalidValue("", f"a suppression must set at least one of: {', '.join(fields)}")
        for f in fields:
            _check_nonempty(f, getattr(self, f))
        for index, glob in enumerate(self.actor_arn or ()):
            _check_arn_glob(f"actor_arn[{index}]", glob)
        for index, glob in enumerate(self.invoked_by or ()):
            if glob == "":
                raise InvalidValue(f"invoked_by[{index}]", "must not be empty")
        for index, pattern in enumerate(self.user_agent or ()):
            _check_regex(f"user_agent[{index}]", pattern)
        for index, cidr in enumerate(self.source_ip or ()):
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                raise InvalidValue(
                    f"source_ip[{index}]", f"{cidr!r} is not an IPv4/IPv6 CIDR: {exc}"
                ) from None
        for index, account in enumerate(self.account_id or ()):
            if _ACCOUNT.fullmatch(account) is None:
                raise InvalidValue(
                    f"account_id[{index}]", f"{account!r} is not a 12-digit AWS account ID"
                )


class RuleEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One ``[[rules]]`` table as written; keys left out are ``UNSET``.

    With a built-in rule's id it overrides just the keys it sets; with a new id it adds a rule
    and must give ``event_names`` (the rest default as for :class:`Rule`).
    """

    id: str
    enabled: bool | UnsetType = UNSET
    description: str | UnsetType = UNSET
    event_names: tuple[str, ...] | UnsetType = UNSET
    event_source: str | UnsetType = UNSET
    outcomes: tuple[Outcome, ...] | UnsetType = UNSET
    severity_success: Severity | UnsetType = UNSET
    severity_failure: Severity | UnsetType = UNSET
    suppress: tuple[Suppression, ...] | UnsetType = UNSET

    def __post_init__(self) -> None:
        if len(self.id) > 64 or _RULE_ID.fullmatch(self.id) is None:
            raise InvalidValue(
                "id", f"{self.id!r}: use 1-64 of a-z, 0-9 and '-', starting with a letter or digit"
            )
        if not isinstance(self.event_names, UnsetType):
            if not self.event_names:
                raise InvalidValue("event_names", "must list at least one event name")
            for index, name in enumerate(self.event_names):
                if _EVENT_NAME.fullmatch(name) is None:
                    hint = ""
                    if ":" in name:
                        hint = (
                            f" (write the CloudTrail eventName, {name.rsplit(':', 1)[-1]!r}; "
                            "the service goes in event_source)"
                        )
                    raise InvalidValue(
                        f"event_names[{index}]", f"{name!r} is not a CloudTrail eventName{hint}"
                    )
        if (
            not isinstance(self.event_source, UnsetType)
            and _EVENT_SOURCE.fullmatch(self.event_source) is None
        ):
            raise InvalidValue(
                "event_source",
                f"{self.event_source!r} is not an event source such as {IAM_EVENT_SOURCE!r}",
            )
        if not isinstance(self.outcomes, UnsetType) and not self.outcomes:
            raise InvalidValue("outcomes", 'must list "success", "failure" or both')


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    """A complete rule: a built-in with its overrides applied, or an added rule."""

    id: str
    enabled: bool = True
    description: str = ""
    event_names: tuple[str, ...]
    event_source: str = IAM_EVENT_SOURCE
    outcomes: tuple[Outcome, ...] = OUTCOMES
    severity_success: Severity = "high"
    severity_failure: Severity = "medium"
    suppress: tuple[Suppression, ...] = ()
    builtin: bool = False


def _set(value: _T | UnsetType, default: _T) -> _T:
    return default if isinstance(value, UnsetType) else value


def _check_remediation_rules(config: Config) -> None:
    """Every rule id a ``[[remediation.policies]]`` table names must exist."""
    known = _BUILTIN_IDS | {entry.id for entry in config.rules}
    for p_index, policy in enumerate(config.remediation.policies):
        for index, rule_id in enumerate(policy.rules):
            if rule_id != "*" and rule_id not in known:
                close = difflib.get_close_matches(rule_id, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise InvalidValue(
                    f"remediation.policies[{p_index}].rules[{index}]",
                    f"no rule {rule_id!r}{hint}",
                )


_BUILTIN_IDS: Final = frozenset(rule.id for rule in DEFAULT_RULES)


# --------------------------------------------------------------------------------------------
# [remediation]
# --------------------------------------------------------------------------------------------

RemediationMode = Literal["dry-run", "approve", "enforce"]
ActionMode = Literal["dry-run", "approve", "enforce", "off"]
ActionName = Literal[
    "restore_inline_policy",
    "reattach_managed_policy",
    "restore_policy_version",
    "recreate_managed_policy",
    "restore_permissions_boundary",
    "quarantine_actor",
    "audit_actor",
    "notify",
]
ACTION_NAMES: Final[tuple[ActionName, ...]] = typing.get_args(ActionName)
DEFAULT_QUARANTINE_POLICY_ARN: Final = "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3"

_ROLE_TEMPLATE = re.compile(r"arn:aws[a-z-]*:iam::\{account_id\}:role/[\w+=,.@/-]+")
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}")
_POLICY_ARN = re.compile(r"arn:aws[a-z-]*:iam::(aws|[0-9]{12}):policy/[\w+=,.@/-]+")
_SNS_TOPIC_ARN = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[\w-]{1,256}")


def _check_webhook_url(key: str, value: str) -> None:
    """https://, or http:// to a loopback address; the URL itself is never echoed (it usually
    embeds a secret token), only its scheme and host."""
    parts = urllib.parse.urlsplit(value)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host or any(c.isspace() for c in value):
        raise InvalidValue(key, "is not an https:// URL (value not shown: it may hold a secret)")
    if parts.scheme == "http":
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise InvalidValue(
                key,
                f"http://{host}/...: use https:// (plain http is allowed only to a loopback "
                "address such as 127.0.0.1, for a local relay)",
            )


class RemediationPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One ``[[remediation.policies]]`` table: which detections plan which actions.

    A detection (disposition "alert" only) matches when its rule is in ``rules`` (``"*"``: any
    rule), its outcome in ``outcomes``, its severity at least ``min_severity`` and, when set,
    its account in ``accounts``.  Every matching table contributes its actions; an action that
    does not fit the event (``restore_inline_policy`` for a DetachRolePolicy) is not planned.
    """

    name: str | None = None
    rules: tuple[str, ...]
    outcomes: tuple[Outcome, ...] = ("success",)
    min_severity: Severity = "high"
    accounts: tuple[str, ...] | None = None
    actions: tuple[ActionName, ...]

    def __post_init__(self) -> None:
        if not self.rules:
            raise InvalidValue("rules", 'must list at least one rule id (or "*" for every rule)')
        for index, rule_id in enumerate(self.rules):
            if rule_id != "*" and _RULE_ID.fullmatch(rule_id) is None:
                raise InvalidValue(f"rules[{index}]", f"{rule_id!r} is not a rule id")
        if not self.outcomes:
            raise InvalidValue("outcomes", 'must list "success", "failure" or both')
        if not self.actions:
            raise InvalidValue("actions", "must list at least one action")
        _check_duplicates("actions[{}]", iter(self.actions), "action")
        _check_nonempty("accounts", self.accounts)
        for index, account in enumerate(self.accounts or ()):
            if _ACCOUNT.fullmatch(account) is None:
                raise InvalidValue(
                    f"accounts[{index}]", f"{account!r} is not a 12-digit AWS account ID"
                )


class ActionModes(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[remediation.action_modes]``: per-action overrides of ``[remediation] mode``."""

    restore_inline_policy: ActionMode | None = None
    reattach_managed_policy: ActionMode | None = None
    restore_policy_version: ActionMode | None = None
    recreate_managed_policy: ActionMode | None = None
    restore_permissions_boundary: ActionMode | None = None
    quarantine_actor: ActionMode | None = None
    audit_actor: ActionMode | None = None
    notify: ActionMode | None = None


class CircuitBreakerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[remediation.circuit_breaker]``: at most ``max_restores`` restores of one target per
    ``window_secs``; beyond that the target is left alone (job skipped "circuit_open")."""

    max_restores: Annotated[int, Meta(ge=1, le=1000)] = 3
    window_secs: Annotated[float, Meta(gt=0, le=30 * 86400)] = 3600.0


class NotifyConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[remediation.notify]``: where the ``notify`` action sends its summary."""

    webhook_url: str | None = None
    slack_format: bool = False
    sns_topic_arn: str | None = None
    timeout_secs: Annotated[float, Meta(gt=0, le=120)] = 10.0

    def __post_init__(self) -> None:
        if self.webhook_url is not None:
            _check_webhook_url("webhook_url", self.webhook_url)
        if self.sns_topic_arn is not None and _SNS_TOPIC_ARN.fullmatch(self.sns_topic_arn) is None:
            raise InvalidValue(
                "sns_topic_arn",
                f"{self.sns_topic_arn!r} is not an SNS topic ARN "
                "(arn:aws:sns:<region>:<account>:<topic>)",
            )


class RemediationConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[remediation]``: planning and running jobs that undo a policy removal."""

    mode: RemediationMode = "dry-run"
    action_modes: ActionModes = msgspec.field(default_factory=ActionModes)
    policies: tuple[RemediationPolicy, ...] = ()
    workers: Annotated[int, Meta(ge=1, le=64)] = 2
    max_attempts: Annotated[int, Meta(ge=1, le=100)] = 5
    backoff_base_secs: Annotated[float, Meta(gt=0, le=86400)] = 30.0
    backoff_cap_secs: Annotated[float, Meta(gt=0, le=7 * 86400)] = 3600.0
    job_timeout_secs: Annotated[float, Meta(ge=1, le=3600)] = 120.0
    poll_interval_secs: Annotated[float, Meta(gt=0, le=300)] = 5.0
    role_arn_template: str = ""
    role_session_name: str = "trailguard-remediation"
    external_id: str | None = None
    own_identity_arns: tuple[str, ...] = ()
    allowlist_arns: tuple[str, ...] = ()
    quarantine_policy_arn: str = DEFAULT_QUARANTINE_POLICY_ARN
    quarantine_method: Literal["attach_policy", "deactivate_key"] = "attach_policy"
    access_key_max_age_days: Annotated[int, Meta(ge=1, le=3650)] = 90
    access_key_max_unused_days: Annotated[int, Meta(ge=1, le=3650)] = 90
    iam_rate_per_sec: Annotated[float, Meta(gt=0, le=100)] = 5.0
    #: Before a restore (or quarantine) writes, confirm through CloudTrail LookupEvents the
    #: removal event and every trail fact whose content is written; false trusts every file.
    confirm_events: bool = True
    #: How long after its eventTime an event LookupEvents does not show yet is waited for
    #: (the job is retried) before the job waits for approval instead.
    confirm_wait_secs: Annotated[float, Meta(ge=0, le=86400)] = 900.0
    circuit_breaker: CircuitBreakerConfig = msgspec.field(default_factory=CircuitBreakerConfig)
    notify: NotifyConfig = msgspec.field(default_factory=NotifyConfig)

    def __post_init__(self) -> None:
        if self.backoff_cap_secs < self.backoff_base_secs:
            raise InvalidValue("backoff_cap_secs", "must be at least backoff_base_secs")
        if self.role_arn_template and _ROLE_TEMPLATE.fullmatch(self.role_arn_template) is None:
            raise InvalidValue(
                "role_arn_template",
                f"{self.role_arn_template!r} is not a role ARN template such as "
                '"arn:aws:iam::{account_id}:role/trailguard-remediation" ("" = use the default '
                "credentials, for the daemon's own account only)",
            )
        if _SESSION_NAME.fullmatch(self.role_session_name) is None:
            raise InvalidValue("role_session_name", "use 2-64 letters, digits and any of _+=,.@-")
        if self.external_id is not None and not 2 <= len(self.external_id) <= 1224:
            raise InvalidValue("external_id", "must be 2-1224 characters")
        for field in ("own_identity_arns", "allowlist_arns"):
            for index, glob in enumerate(getattr(self, field)):
                _check_arn_glob(f"{field}[{index}]", glob)
        if _POLICY_ARN.fullmatch(self.quarantine_policy_arn) is None:
            raise InvalidValue(
                "quarantine_policy_arn",
                f"{self.quarantine_policy_arn!r} is not a managed policy ARN",
            )

    def action_mode(self, action: ActionName) -> ActionMode:
        """The mode ``action`` runs in: its override, else the global ``mode``."""
        override: ActionMode | None = getattr(self.action_modes, action)
        return self.mode if override is None else override


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The whole file.  ``Config()`` is the default configuration."""

    aws: AwsConfig = msgspec.field(default_factory=AwsConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    sources: SourcesConfig = msgspec.field(default_factory=SourcesConfig)
    outputs: OutputsConfig = msgspec.field(default_factory=OutputsConfig)
    state: StateConfig = msgspec.field(default_factory=StateConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    shutdown: ShutdownConfig = msgspec.field(default_factory=ShutdownConfig)
    keys: KeysConfig = msgspec.field(default_factory=KeysConfig)
    severity: SeverityConfig = msgspec.field(default_factory=SeverityConfig)
    history: HistoryConfig = msgspec.field(default_factory=HistoryConfig)
    snapshot: SnapshotConfig = msgspec.field(default_factory=SnapshotConfig)
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    suppress: tuple[Suppression, ...] = ()
    rules: tuple[RuleEntry, ...] = ()
    remediation: RemediationConfig = msgspec.field(default_factory=RemediationConfig)

    def __post_init__(self) -> None:
        _check_remediation_rules(self)
        _check_duplicates("rules[{}].id", (entry.id for entry in self.rules), "rule id")
        for index, entry in enumerate(self.rules):
            if entry.id not in _BUILTIN_IDS and isinstance(entry.event_names, UnsetType):
                close = difflib.get_close_matches(entry.id, sorted(_BUILTIN_IDS), n=1)
                hint = (
                    f"; did you mean the built-in rule {close[0]!r}?"
                    if close
                    else f" (built-in ids: {', '.join(rule.id for rule in DEFAULT_RULES)})"
                )
                raise InvalidValue(
                    f"rules[{index}].event_names",
                    f"rule {entry.id!r} is not a built-in rule, so it must list event_names{hint}",
                )

    def resolved_rules(self) -> tuple[Rule, ...]:
        """The built-in pack with this file's overrides applied, then the added rules."""
        entries = {entry.id: entry for entry in self.rules}
        resolved: list[Rule] = []
        for builtin in DEFAULT_RULES:
            entry = entries.get(builtin.id)
            if entry is None:
                resolved.append(
                    Rule(
                        id=builtin.id,
                        description=builtin.description,
                        event_names=builtin.event_names,
                        event_source=builtin.event_source,
                        outcomes=builtin.outcomes,
                        severity_success=builtin.severity_success,
                        severity_failure=builtin.severity_failure,
                        builtin=True,
                    )
                )
                continue
            resolved.append(
                Rule(
                    id=builtin.id,
                    enabled=_set(entry.enabled, True),
                    description=_set(entry.description, builtin.description),
                    event_names=_set(entry.event_names, builtin.event_names),
                    event_source=_set(entry.event_source, builtin.event_source),
                    outcomes=_set(entry.outcomes, builtin.outcomes),
                    severity_success=_set(entry.severity_success, builtin.severity_success),
                    severity_failure=_set(entry.severity_failure, builtin.severity_failure),
                    suppress=_set(entry.suppress, ()),
                    builtin=True,
                )
            )
        for entry in self.rules:
            if entry.id in _BUILTIN_IDS:
                continue
            assert not isinstance(entry.event_names, UnsetType)  # checked in __post_init__
            resolved.append(
                Rule(
                    id=entry.id,
                    enabled=_set(entry.enabled, True),
                    description=_set(entry.description, ""),
                    event_names=entry.event_names,
                    event_source=_set(entry.event_source, IAM_EVENT_SOURCE),
                    outcomes=_set(entry.outcomes, OUTCOMES),
                    severity_success=_set(entry.severity_success, "high"),
                    severity_failure=_set(entry.severity_failure, "medium"),
                    suppress=_set(entry.suppress, ()),
                )
            )
        return tuple(resolved)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def unconfirmed_writes_warning(config: Config) -> str | None:
    """Why this config lets a forged trail file or queue message make trailguard write to IAM,
    or None: ``confirm_events = false`` with an action that writes in a mode that can act.

    The daemon logs it at start-up and after a reload (``remediation.confirm_events_off``);
    ``trailguard check-config`` prints it."""
    remediation = config.remediation
    if remediation.confirm_events or not remediation.policies:
        return None
    writing = {
        action
        for policy in remediation.policies
        for action in policy.actions
        if action not in ("audit_actor", "notify")
        and remediation.action_mode(action) in ("enforce", "approve")
    }
    if not writing:
        return None
    return (
        "[remediation] confirm_events = false: "
        + ", ".join(sorted(writing))
        + " will write to IAM on the word of any file in the trail bucket or message in the "
        "queue, unconfirmed by CloudTrail (anyone who can write there can make trailguard "
        "grant a forged document, or quarantine anyone); only event-ledger conflicts still "
        "stop a write"
    )


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate a config file; ``None`` gives the defaults."""
    if path is None:
        return Config()
    file = os.fspath(path)
    try:
        with open(file, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(file, "no such file") from None
    except IsADirectoryError:
        raise ConfigError(file, "is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(file, f"cannot read: {exc.strerror or exc}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            file,
            f"larger than {MAX_CONFIG_BYTES} bytes (1 MiB, the most a config file may be): "
            "not a config file",
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(file, f"not UTF-8 text (invalid byte at offset {exc.start})") from None
    return parse_config(text, file=file)


def parse_config(text: str, *, file: str) -> Config:
    """Validate TOML text; ``file`` names it in errors."""
    _check_toml_nesting(text, file)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, f"not valid TOML: {exc}") from None
    except RecursionError:  # not expected after the check above; never a traceback
        raise ConfigError(file, _TOO_DEEP) from None
    _check_depth(raw, file)
    _reject_credentials(raw, file, "")
    try:
        return msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        key_path, message = _explain(exc, raw)
        raise ConfigError(file, message, key_path) from exc


# --------------------------------------------------------------------------------------------
# Hostile files: nesting that would exhaust the stack or the memory before validation
# --------------------------------------------------------------------------------------------

_TOO_DEEP: Final = f"nested more than {MAX_CONFIG_DEPTH} levels deep: not a trailguard config"
# What the nesting check looks at: strings and comments (skipped whole), brackets, dots and the
# characters that end a key.  Strings are skipped with possessive patterns: linear, whatever
# is in them.
_TOML_TOKEN: Final = re.compile(r"""\"\"\"|'''|["'#\[\]{}.=,\n]""")
_STRING_REST: Final = {
    '"': re.compile(r'(?:[^"\\\n]++|\\.)*+"'),
    "'": re.compile(r"[^'\n]*+'"),
    '"""': re.compile(r'(?:[^"\\]++|\\.|"(?!""))*+"""(?:""?)?+', re.DOTALL),
    "'''": re.compile(r"(?:[^']++|'(?!''))*+'''(?:''?)?+"),
}


def _check_toml_nesting(text: str, file: str) -> None:
    """Refuse TOML nested deeper than :data:`MAX_CONFIG_DEPTH` before tomllib parses it.

    A lexical pass: outside strings and comments, it counts open ``[``/``{`` and the dots of
    one key (reset by ``=``, ``,``, brackets and line ends; a number has at most one dot).  It
    only refuses; anything it cannot follow (an unterminated string) is left to tomllib, whose
    error is then the one reported.
    """
    depth = 0
    dots = 0
    pos = 0
    while (found := _TOML_TOKEN.search(text, pos)) is not None:
        lexeme = found.group()
        pos = found.end()
        if lexeme in _STRING_REST:
            rest = _STRING_REST[lexeme].match(text, pos)
            if rest is None:
                return
            pos = rest.end()
        elif lexeme == "#":
            end = text.find("\n", pos)
            if end < 0:
                return
            pos = end
        elif lexeme == ".":
            dots += 1
            if dots >= MAX_CONFIG_DEPTH:
                line = text.count("\n", 0, found.start()) + 1
                raise ConfigError(
                    file,
                    f"line {line}: a dotted key of more than {MAX_CONFIG_DEPTH} parts: "
                    "not a trailguard config",
                )
        else:
            dots = 0
            if lexeme in "[{":
                depth += 1
                if depth > MAX_CONFIG_DEPTH:
                    line = text.count("\n", 0, found.start()) + 1
                    raise ConfigError(file, f"line {line}: {_TOO_DEEP}")
            elif lexeme in "]}":
                depth = max(0, depth - 1)


def _check_depth(raw: dict[str, Any], file: str) -> None:
    """The parsed document nests at most :data:`MAX_CONFIG_DEPTH` levels (without recursion:
    everything after this -- the credential check, msgspec, error messages -- may recurse)."""
    stack: list[tuple[object, str, int]] = [(raw, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, dict):
            items: list[tuple[str, object]] = [(_join(path, str(k)), v) for k, v in value.items()]
        elif isinstance(value, list):
            items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
        else:
            continue
        if depth >= MAX_CONFIG_DEPTH and items:
            raise ConfigError(file, _TOO_DEEP, path or None)
        stack.extend((item, sub, depth + 1) for sub, item in items)


_CREDENTIAL_KEYS: Final = frozenset(
    {
        "access_key",
        "access_key_id",
        "secret_key",
        "secret_access_key",
        "session_token",
        "security_token",
    }
)


def _reject_credentials(value: object, file: str, path: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            sub = _join(path, str(key))
            normal = str(key).lower().replace("-", "_").removeprefix("aws_")
            if normal in _CREDENTIAL_KEYS:
                raise ConfigError(
                    file,
                    "credentials do not belong in the config file: trailguard takes them from "
                    "the standard AWS environment and profiles through botocore (AWS_PROFILE, "
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, SSO, container or instance roles)",
                    sub,
                )
            _reject_credentials(item, file, sub)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _reject_credentials(item, file, f"{path}[{index}]")


# --------------------------------------------------------------------------------------------
# Turning msgspec's errors into key paths and operator-friendly messages
# --------------------------------------------------------------------------------------------

_AT = re.compile(r"(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?", re.DOTALL)
_TOKEN = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")
_TYPE_NAMES: Final = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "a boolean",
    "array": "an array",
    "object": "a table",
    "datetime": "a date-time",
    "date": "a date",
    "time": "a time",
}


def _join(path: str, key: str) -> str:
    if not key:
        return path
    if not path or key.startswith("["):
        return f"{path}{key}"
    return f"{path}.{key}"


def _tokens(path: str) -> list[str | int]:
    return [name if name else int(index) for name, index in _TOKEN.findall(path)]


def _strip(tp: Any) -> Any:
    """Unwrap Annotated and drop None / UNSET from unions."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a not in (type(None), UnsetType)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _type_at(path: str) -> Any:
    """The schema type at ``path`` (a key path without the file), or None if unknown."""
    tp: Any = Config
    for token in _tokens(path):
        tp = _strip(tp)
        if isinstance(token, int):
            if typing.get_origin(tp) not in (tuple, list):
                return None
            tp = typing.get_args(tp)[0]
        else:
            if not (isinstance(tp, type) and issubclass(tp, msgspec.Struct)):
                return None
            hints = typing.get_type_hints(tp, include_extras=True)
            if token not in hints:
                return None
            tp = hints[token]
    return _strip(tp)


def _value_at(raw: Any, path: str) -> Any:
    value = raw
    for token in _tokens(path):
        try:
            value = value[token]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _show(value: Any) -> str:
    """A scalar TOML value as an operator would write it; containers are not shown."""
    if isinstance(value, dict | list):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_words(text: str) -> str:
    words = [_TYPE_NAMES.get(part, part) for part in text.split(" | ") if part != "null"]
    return " or ".join(words)


def _explain(exc: msgspec.ValidationError, raw: Any) -> tuple[str | None, str]:
    """(key path, message) for a msgspec validation error."""
    matched = _AT.fullmatch(str(exc))
    assert matched is not None  # the pattern matches any string
    message = matched["msg"]
    path = (matched["path"] or "").lstrip(".")
    cause = exc.__cause__
    if isinstance(cause, InvalidValue):
        return _join(path, cause.key) or None, cause.message

    if found := re.fullmatch(r"Object contains unknown field `(.*)`", message):
        key = found[1]
        struct = _type_at(path)
        allowed = list(msgspec.structs.fields(struct)) if isinstance(struct, type) else []
        names = [f.encode_name for f in allowed]
        hint = ""
        if close := difflib.get_close_matches(key, names, n=1):
            hint = f"; did you mean {close[0]!r}?"
        elif names:
            hint = f"; known keys here: {', '.join(names)}"
        if path == "aws":
            hint += " (other AWS settings come from the standard AWS environment and profiles)"
        return _join(path, key), f"unknown key {key!r}{hint}"

    if found := re.fullmatch(r"Object missing required field `(.*)`", message):
        return _join(path, found[1]), "required key is missing"

    if found := re.fullmatch(r"Invalid enum value (.*)", message):
        literal = _type_at(path)
        allowed_values = ", ".join(repr(a) for a in typing.get_args(literal))
        return path or None, f"unknown value {found[1]}; expected one of: {allowed_values}"

    if found := re.fullmatch(r"Expected `([^`]*)`, got `([^`]*)`", message):
        got = _show(_value_at(raw, path))
        shown = f" {got}" if got else ""
        return path or None, f"expected {_type_words(found[1])}, got {_type_words(found[2])}{shown}"

    if found := re.fullmatch(r"Expected `([^`]*)` (.*)", message):
        got = _show(_value_at(raw, path))
        return path or None, f"expected {_type_words(found[1])} {found[2]}, got {got}"

    return path or None, message
