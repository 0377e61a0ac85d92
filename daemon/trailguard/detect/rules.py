"""The compiled rule engine: which rule matches a record, with what severity and disposition.

Pure: no I/O, no asyncio.  :class:`RuleSet` is built once from validated rules (the built-in
pack, ``rulepack.py``, with the config's overrides) and then evaluates one :class:`Record` at a
time.

Evaluation of one record:

1. Candidate rules come from a dict keyed by ``eventName``; a record whose name no enabled rule
   lists costs one dict lookup.
2. A rule matches when ``eventSource`` equals the rule's (exactly: Organizations' ``DeletePolicy``
   from ``organizations.amazonaws.com`` is not IAM's) and the outcome (``failure`` when the record
   has ``errorCode`` or ``errorMessage``) is one the rule watches.  Of several matching rules the
   one with the highest base severity wins; ties go to the first in order (built-ins first, then
   added rules in file order).
3. Escalations raise the severity to at least their configured level, never lower it: the root
   user, a console session without MFA, permissions-boundary removal, removal of a guardrail
   policy.  They apply to failed attempts too: a compromised key trying and failing to detach its
   own quarantine policy is exactly what should page someone.
4. Suppressions, global ones first, then the winning rule's own.  A suppressed event still
   yields a :class:`Match`, with ``disposition="suppressed"`` and ``suppressed_by`` naming the
   suppression.

*Change rules* (a rule with ``verdicts``: ``iam-policy-weakened``, ``iam-policy-possibly-weakened``)
never match in :meth:`RuleSet.evaluate`: whether a Put*Policy weakened anything depends on the
previous document, which only the policy history knows.  :meth:`RuleSet.evaluate_change` asks
them, with the verdict the comparison gave (detect/changes.py), by the same steps.

Everything is precompiled: regexes, globs (``*`` and ``?`` only, translated to one alternation per
field), networks, and every possible :class:`Match` object, so ``evaluate`` allocates nothing for
a record that no rule wants and at most a regex match object or two for one that a rule wants.

This module does not import :mod:`trailguard.config` at run time; it reads the config objects
by attribute (the shared names are in ``vocabulary.py``, the pack in ``rulepack.py``).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

import msgspec

from trailguard.detect.record import Record
from trailguard.rulepack import DEFAULT_RULES, BuiltinRule
from trailguard.vocabulary import (
    IAM_EVENT_SOURCE,
    IDENTITY_TYPES,
    OUTCOMES,
    PERMISSIONS_BOUNDARY_EVENTS,
    REMOVAL_EVENT_NAMES,
    SEVERITIES,
    SEVERITY_RANK,
    USER_AGENT_PRESETS,
    Disposition,
    IdentityType,
    Outcome,
    Severity,
    UserAgentPreset,
)

if TYPE_CHECKING:
    from trailguard.config import Config
    from trailguard.config.rules import Rule, SeverityConfig, Suppression

__all__ = [
    "DEFAULT_RULES",
    "IAM_EVENT_SOURCE",
    "IDENTITY_TYPES",
    "OUTCOMES",
    "PERMISSIONS_BOUNDARY_EVENTS",
    "POLICY_REMOVAL_EVENTS",
    "PRESETS",
    "SEVERITIES",
    "SEVERITY_RANK",
    "USER_AGENT_PRESETS",
    "BuiltinRule",
    "Disposition",
    "IdentityType",
    "Match",
    "Outcome",
    "RuleSet",
    "Severity",
    "UserAgentPreset",
    "glob_regex",
]

# --------------------------------------------------------------------------------------------
# Vocabulary (defined once in trailguard.vocabulary; re-exported for the rules' readers)
# --------------------------------------------------------------------------------------------

POLICY_REMOVAL_EVENTS: Final[frozenset[str]] = frozenset(REMOVAL_EVENT_NAMES)

# --------------------------------------------------------------------------------------------
# Globs and presets
# --------------------------------------------------------------------------------------------


def glob_regex(glob: str, *, segment: bool = False) -> str:
    """Translate a glob to a regex body: ``*`` any run, ``?`` one character, all else literal.

    With ``segment=True`` the wildcards do not cross ``/`` (for names matched against the last
    path segment of an ARN).  Unlike :func:`fnmatch.translate`, ``[`` is literal: no character
    classes, so what an operator writes is what is matched.
    """
    star, one = ("[^/]*", "[^/]") if segment else (".*", ".")
    return "".join(star if c == "*" else one if c == "?" else re.escape(c) for c in glob)


def _any_glob(globs: Sequence[str], *, segment: bool = False, flags: int = 0) -> re.Pattern[str]:
    """One compiled pattern that fullmatches any of ``globs``."""
    body = "|".join(glob_regex(g, segment=segment) for g in globs)
    return re.compile(f"(?:{body})", flags | re.DOTALL)


# Terraform (and OpenTofu) AWS provider, e.g. "APN/1.0 HashiCorp/1.0 Terraform/1.5.7
# (+https://www.terraform.io) terraform-provider-aws/5.31.0 (+https://registry.terraform.io/
# providers/hashicorp/aws) aws-sdk-go-v2/1.24.0 os/linux lang/go#1.21.5 ..." and, older,
# "aws-sdk-go/1.44.0 (go1.19; linux; amd64) APN/1.0 HashiCorp/1.0 Terraform/0.14.11".
TERRAFORM_USER_AGENT: Final = re.compile(r"\b(?:Terraform|OpenTofu)/\d|\bterraform-provider-aws/")
# Pulumi AWS Native ("APN/1.0 Pulumi/1.0 PulumiAwsNative/0.99 ...") and AWS Classic.
PULUMI_USER_AGENT: Final = re.compile(r"\bPulumi/\d|\bPulumiAwsNative/|\bpulumi-aws/")
CLOUDFORMATION: Final = "cloudformation.amazonaws.com"
# Service-linked roles: assumed-role/AWSServiceRoleFor<Service>/<session> in STS, and
# role/aws-service-role/<service principal>/AWSServiceRoleFor<Service> in IAM.
SERVICE_LINKED_ROLE_ARN: Final = re.compile(
    r"arn:aws[a-z-]*:(?:sts::\d{12}:assumed-role/AWSServiceRoleFor[^/]*/.+"
    r"|iam::\d{12}:role/aws-service-role/.+)",
    re.DOTALL,
)


def _terraform(record: Record) -> bool:
    ua = record.user_agent
    return ua is not None and TERRAFORM_USER_AGENT.search(ua) is not None


def _pulumi(record: Record) -> bool:
    ua = record.user_agent
    return ua is not None and PULUMI_USER_AGENT.search(ua) is not None


def _cloudformation(record: Record) -> bool:
    # CloudFormation sends this exact user agent, and AWS itself sets invokedBy: requiring both
    # means a forged user agent alone does not match.
    ident = record.user_identity
    return (
        record.user_agent == CLOUDFORMATION
        and ident is not None
        and ident.invoked_by == CLOUDFORMATION
    )


def _service_linked_role(record: Record) -> bool:
    ident = record.user_identity
    if ident is None:
        return False
    if ident.type == "AWSService":
        return True
    if ident.arn is not None and SERVICE_LINKED_ROLE_ARN.fullmatch(ident.arn) is not None:
        return True
    context = ident.session_context
    issuer = context.session_issuer if context is not None else None
    return (
        issuer is not None
        and issuer.arn is not None
        and SERVICE_LINKED_ROLE_ARN.fullmatch(issuer.arn) is not None
    )


PRESETS: Final[Mapping[UserAgentPreset, Callable[[Record], bool]]] = {
    "terraform": _terraform,
    "pulumi": _pulumi,
    "cloudformation": _cloudformation,
    "aws-service-linked-role": _service_linked_role,
}

# --------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------


class Match(msgspec.Struct, frozen=True):
    """What the rules decided about one record."""

    rule: str  # rule id
    severity: Severity
    outcome: Outcome
    disposition: Disposition
    suppressed_by: str | None  # e.g. "suppress[0] (terraform-ci)", "rules[x].suppress[1]"


@functools.lru_cache(maxsize=4096)
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """sourceIPAddress as an address, or None (it may be a service name such as
    "cloudformation.amazonaws.com", or "AWS Internal")."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _true(value: str | bool | None) -> bool:
    """CloudTrail writes booleans as "true"/"false"; some samples use JSON booleans."""
    if isinstance(value, bool):
        return value
    return value is not None and value.lower() == "true"


class _Suppressor:
    """One compiled suppression: every set field must match (AND), any value of a field (OR)."""

    __slots__ = (
        "accounts",
        "actor_arn",
        "identity_types",
        "invoked_by",
        "label",
        "networks",
        "presets",
        "user_agents",
    )

    def __init__(self, suppression: Suppression, label: str) -> None:
        s = suppression
        self.label = label
        self.accounts = frozenset(s.account_id) if s.account_id is not None else None
        self.identity_types = frozenset(s.identity_type) if s.identity_type is not None else None
        self.actor_arn = _any_glob(s.actor_arn) if s.actor_arn is not None else None
        self.invoked_by = _any_glob(s.invoked_by) if s.invoked_by is not None else None
        self.presets = (
            tuple(PRESETS[p] for p in s.user_agent_preset)
            if s.user_agent_preset is not None
            else None
        )
        self.user_agents = (
            tuple(re.compile(p) for p in s.user_agent) if s.user_agent is not None else None
        )
        self.networks = (
            tuple(ipaddress.ip_network(n) for n in s.source_ip) if s.source_ip is not None else None
        )

    def matches(self, record: Record) -> bool:
        ident = record.user_identity
        if self.accounts is not None and record.recipient_account_id not in self.accounts:
            return False
        if self.identity_types is not None and (
            ident is None or ident.type not in self.identity_types
        ):
            return False
        if self.actor_arn is not None and (
            ident is None or ident.arn is None or self.actor_arn.fullmatch(ident.arn) is None
        ):
            return False
        if self.invoked_by is not None and (
            ident is None
            or ident.invoked_by is None
            or self.invoked_by.fullmatch(ident.invoked_by) is None
        ):
            return False
        if self.presets is not None:
            for preset in self.presets:
                if preset(record):
                    break
            else:
                return False
        if self.user_agents is not None:
            ua = record.user_agent
            if ua is None:
                return False
            for pattern in self.user_agents:
                if pattern.search(ua) is not None:
                    break
            else:
                return False
        if self.networks is not None:
            text = record.source_ip_address
            address = _ip(text) if text is not None else None
            if address is None:
                return False
            for network in self.networks:
                if address in network:
                    break
            else:
                return False
        return True


def _suppression_label(prefix: str, index: int, name: str | None) -> str:
    label = f"{prefix}suppress[{index}]"
    return f"{label} ({name})" if name else label


# Match tables are indexed [outcome][severity rank]; outcome 0 = success, 1 = failure.
_MatchTable = tuple[tuple[Match, ...], tuple[Match, ...]]


def _match_table(rule_id: str, disposition: Disposition, label: str | None) -> _MatchTable:
    success, failure = (
        tuple(Match(rule_id, severity, outcome, disposition, label) for severity in SEVERITIES)
        for outcome in OUTCOMES
    )
    return success, failure


class _CompiledRule:
    __slots__ = ("alerts", "event_source", "id", "outcome_ok", "ranks", "suppressors", "verdicts")

    def __init__(self, rule: Rule, global_suppressors: tuple[_Suppressor, ...]) -> None:
        self.id = rule.id
        self.verdicts = frozenset(rule.verdicts)
        self.event_source = rule.event_source
        self.outcome_ok = ("success" in rule.outcomes, "failure" in rule.outcomes)
        self.ranks = (SEVERITY_RANK[rule.severity_success], SEVERITY_RANK[rule.severity_failure])
        own = tuple(
            _Suppressor(s, _suppression_label(f"rules[{rule.id}].", i, s.name))
            for i, s in enumerate(rule.suppress)
        )
        self.suppressors = tuple(
            (sup, _match_table(rule.id, "suppressed", sup.label))
            for sup in (*global_suppressors, *own)
        )
        self.alerts = _match_table(rule.id, "alert", None)


class RuleSet:
    """The compiled rules, escalations and suppressions of one config."""

    __slots__ = (
        "_boundary_rank",
        "_by_name",
        "_changes_by_name",
        "_console_rank",
        "_event_names",
        "_guardrail",
        "_guardrail_rank",
        "_root_rank",
        "_rules",
    )

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        suppress: Sequence[Suppression] = (),
        severity: SeverityConfig,
    ) -> None:
        """Compile resolved rules (see ``Config.resolved_rules``), global suppressions and the
        escalation settings.  Inputs are assumed valid: the config module validated them."""
        self._rules: tuple[Rule, ...] = tuple(rules)
        global_suppressors = tuple(
            _Suppressor(s, _suppression_label("", i, s.name)) for i, s in enumerate(suppress)
        )
        by_name: dict[str, list[_CompiledRule]] = {}
        changes_by_name: dict[str, list[_CompiledRule]] = {}
        for rule in self._rules:
            if not rule.enabled:
                continue
            compiled = _CompiledRule(rule, global_suppressors)
            table = changes_by_name if rule.verdicts else by_name
            for name in dict.fromkeys(rule.event_names):
                table.setdefault(name, []).append(compiled)
        self._by_name: dict[str, tuple[_CompiledRule, ...]] = {
            name: tuple(compiled) for name, compiled in by_name.items()
        }
        self._changes_by_name: dict[str, tuple[_CompiledRule, ...]] = {
            name: tuple(compiled) for name, compiled in changes_by_name.items()
        }
        self._event_names = frozenset(self._by_name) | frozenset(self._changes_by_name)
        self._root_rank = SEVERITY_RANK[severity.root]
        self._console_rank = SEVERITY_RANK[severity.console_without_mfa]
        self._boundary_rank = SEVERITY_RANK[severity.permissions_boundary_removal]
        self._guardrail_rank = SEVERITY_RANK[severity.guardrail_policy_removal]
        # A policy name, or an ARN whose last path segment is the name; case-insensitive because
        # IAM names are unique regardless of case.
        self._guardrail = (
            re.compile(
                "(?:.*/)?" + _any_glob(severity.guardrail_policies, segment=True).pattern,
                re.IGNORECASE | re.DOTALL,
            )
            if severity.guardrail_policies
            else None
        )

    @classmethod
    def from_config(cls, config: Config) -> RuleSet:
        return cls(config.resolved_rules(), suppress=config.suppress, severity=config.severity)

    @property
    def event_names(self) -> frozenset[str]:
        """Every event name an enabled rule lists: the decoder decodes their records in full."""
        return self._event_names

    @property
    def removal_event_names(self) -> frozenset[str]:
        """The event names an enabled rule without verdicts (a removal rule) lists."""
        return frozenset(self._by_name)

    @property
    def change_event_names(self) -> frozenset[str]:
        """The event names an enabled change rule lists: the changes worth comparing."""
        return frozenset(self._changes_by_name)

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The resolved rules, in evaluation order, disabled ones included."""
        return self._rules

    def evaluate(self, record: Record) -> Match | None:
        """The match for ``record``, or None when no enabled rule wants it (change rules never
        match here: see :meth:`evaluate_change`)."""
        name = record.event_name
        if name is None:
            return None
        candidates = self._by_name.get(name)
        if candidates is None:
            return None
        return self._decide(record, name, candidates)

    def evaluate_change(self, record: Record, verdict: str) -> Match | None:
        """The match for a policy change whose comparison gave ``verdict``, or None when no
        enabled change rule wants that verdict for the record's event."""
        name = record.event_name
        if name is None:
            return None
        candidates = self._changes_by_name.get(name)
        if candidates is None:
            return None
        wanted = tuple(rule for rule in candidates if verdict in rule.verdicts)
        return self._decide(record, name, wanted) if wanted else None

    def _decide(
        self, record: Record, name: str, candidates: tuple[_CompiledRule, ...]
    ) -> Match | None:
        outcome = 1 if (record.error_code or record.error_message) else 0
        source = record.event_source
        best: _CompiledRule | None = None
        rank = -1
        for rule in candidates:
            if (
                rule.event_source == source
                and rule.outcome_ok[outcome]
                and rule.ranks[outcome] > rank
            ):
                best, rank = rule, rule.ranks[outcome]
        if best is None:
            return None
        rank = self._escalate(record, name, rank)
        for suppressor, table in best.suppressors:
            if suppressor.matches(record):
                return table[outcome][rank]
        return best.alerts[outcome][rank]

    def _escalate(self, record: Record, name: str, rank: int) -> int:
        ident = record.user_identity
        if rank < self._root_rank and ident is not None:
            arn = ident.arn
            if ident.type == "Root" or (arn is not None and arn.endswith(":root")):
                rank = self._root_rank
        if (
            rank < self._console_rank
            and _true(record.session_credential_from_console)
            and not _mfa(record)
        ):
            rank = self._console_rank
        if rank < self._boundary_rank and name in PERMISSIONS_BOUNDARY_EVENTS:
            rank = self._boundary_rank
        if rank < self._guardrail_rank and self._guardrail is not None:
            policy = record.param("policyName") or record.param("policyArn")
            if policy is not None and self._guardrail.fullmatch(policy) is not None:
                rank = self._guardrail_rank
        return rank


def _mfa(record: Record) -> bool:
    ident = record.user_identity
    context = ident.session_context if ident is not None else None
    attributes = context.attributes if context is not None else None
    return attributes is not None and _true(attributes.mfa_authenticated)
