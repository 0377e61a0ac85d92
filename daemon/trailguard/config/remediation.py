"""The config's [remediation] section: policies, modes, the circuit breaker, notifications."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from trailguard.config.checks import (
    _ACCOUNT,
    _RULE_ID,
    InvalidValue,
    _check_arn_glob,
    _check_duplicates,
    _check_nonempty,
)
from trailguard.vocabulary import ActionMode, ActionName, Outcome, RemediationMode, Severity

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
    revert_policy_change: ActionMode | None = None
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
    """``[remediation]``: planning and running jobs that undo a policy removal (or a weakening
    change)."""

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
