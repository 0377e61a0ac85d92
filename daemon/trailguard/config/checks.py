"""The small validators config sections share, and the error they raise."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from typing import Any

__all__ = ["InvalidValue"]


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
