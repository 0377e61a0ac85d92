"""The config's rule sections: [severity], [[suppress]] and [[rules]] (the built-in pack's
overrides and added rules), and the effective rules they resolve to."""

from __future__ import annotations

import difflib
import ipaddress
from typing import Final, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from trailguard.config.checks import (
    _ACCOUNT,
    _EVENT_NAME,
    _EVENT_SOURCE,
    _RULE_ID,
    InvalidValue,
    _check_arn_glob,
    _check_duplicates,
    _check_nonempty,
    _check_regex,
)
from trailguard.rulepack import DEFAULT_RULES
from trailguard.vocabulary import (
    CHANGE_EVENT_NAMES,
    IAM_EVENT_SOURCE,
    OUTCOMES,
    ChangeVerdict,
    IdentityType,
    Outcome,
    Severity,
    UserAgentPreset,
)

_T = TypeVar("_T")


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
    verdicts: tuple[ChangeVerdict, ...] | UnsetType = UNSET
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
        if not isinstance(self.verdicts, UnsetType):
            if not self.verdicts:
                raise InvalidValue(
                    "verdicts",
                    'must list "weakened", "possibly_weakened" or both (leave the key out for a '
                    "rule that matches records)",
                )
            _check_duplicates("verdicts[{}]", iter(self.verdicts), "verdict")


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
    #: empty: the rule matches records; else it matches policy changes whose comparison with
    #: the previous document gave one of these verdicts (see trailguard.rulepack)
    verdicts: tuple[ChangeVerdict, ...] = ()
    suppress: tuple[Suppression, ...] = ()
    builtin: bool = False

    @property
    def is_change_rule(self) -> bool:
        return bool(self.verdicts)


def _set(value: _T | UnsetType, default: _T) -> _T:
    return default if isinstance(value, UnsetType) else value


BUILTIN_IDS: Final = frozenset(rule.id for rule in DEFAULT_RULES)


def check_rule_entries(entries: tuple[RuleEntry, ...]) -> None:
    """``[[rules]]``: ids unique; an entry that is not a built-in rule lists its event names."""
    _check_duplicates("rules[{}].id", (entry.id for entry in entries), "rule id")
    for index, entry in enumerate(entries):
        if entry.id not in BUILTIN_IDS and isinstance(entry.event_names, UnsetType):
            close = difflib.get_close_matches(entry.id, sorted(BUILTIN_IDS), n=1)
            hint = (
                f"; did you mean the built-in rule {close[0]!r}?"
                if close
                else f" (built-in ids: {', '.join(rule.id for rule in DEFAULT_RULES)})"
            )
            raise InvalidValue(
                f"rules[{index}].event_names",
                f"rule {entry.id!r} is not a built-in rule, so it must list event_names{hint}",
            )
    _check_change_rules(entries)


def _check_change_rules(entries: tuple[RuleEntry, ...]) -> None:
    """A rule with ``verdicts`` judges IAM policy changes: its event names must be changes
    (detect/changes.py compares nothing else), its source IAM, its outcomes include success."""
    by_id = {rule.id: rule for rule in resolve_rules(entries)}
    for index, entry in enumerate(entries):
        rule = by_id[entry.id]
        if not rule.verdicts:
            continue
        others = [name for name in rule.event_names if name not in CHANGE_EVENT_NAMES]
        if others:
            raise InvalidValue(
                f"rules[{index}].event_names",
                f"{others[0]!r}: a rule with verdicts judges policy changes, and only "
                f"{', '.join(CHANGE_EVENT_NAMES)} are compared with a previous document",
            )
        if rule.event_source != IAM_EVENT_SOURCE:
            raise InvalidValue(
                f"rules[{index}].event_source",
                f"a rule with verdicts judges IAM policy changes: it must be {IAM_EVENT_SOURCE!r}",
            )
        if "success" not in rule.outcomes:
            raise InvalidValue(
                f"rules[{index}].outcomes",
                'a rule with verdicts must include "success" (a failed call changed nothing)',
            )


def resolve_rules(entries: tuple[RuleEntry, ...]) -> tuple[Rule, ...]:
    """The built-in pack with the ``[[rules]]`` overrides applied, then the added rules."""
    by_id = {entry.id: entry for entry in entries}
    resolved: list[Rule] = []
    for builtin in DEFAULT_RULES:
        entry = by_id.get(builtin.id)
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
                    verdicts=builtin.verdicts,
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
                verdicts=_set(entry.verdicts, builtin.verdicts),
                suppress=_set(entry.suppress, ()),
                builtin=True,
            )
        )
    for entry in entries:
        if entry.id in BUILTIN_IDS:
            continue
        assert not isinstance(entry.event_names, UnsetType)  # checked by check_rule_entries
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
                verdicts=_set(entry.verdicts, ()),
                suppress=_set(entry.suppress, ()),
            )
        )
    return tuple(resolved)
