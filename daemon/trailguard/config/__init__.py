"""trailguard's configuration: one TOML file, typed, frozen and validated when loaded.

``load_config(path)`` / ``parse_config(text, file=...)`` return a :class:`Config` or raise
:class:`~trailguard.errors.ConfigError` naming the file and the exact key path
(``rules[2].suppress[0].user_agent[1]``).  Every section is a frozen msgspec Struct that forbids
unknown keys; numeric ranges are msgspec constraints, everything that needs parsing (URLs, ARN
globs, CIDRs, regexes, account ids) is checked in ``__post_init__`` with the offending sub-key.

Rules have two layers.  :class:`RuleEntry` is a ``[[rules]]`` table exactly as written: a key
the file leaves out is ``msgspec.UNSET``, so an entry whose id is a built-in rule's overrides only
the keys it sets.  :meth:`Config.resolved_rules` merges the entries over the built-in pack
(:data:`trailguard.rulepack.DEFAULT_RULES`) into complete :class:`Rule` objects.

The file never holds credentials: they come from botocore's standard chain (environment,
profiles, SSO, container and instance roles), as do all AWS settings except ``[aws] region`` and
``endpoint_url``.

The package is split by job: ``sections.py`` (the plain sections), ``rules.py`` (severity,
suppressions and rules), ``remediation.py``, ``checks.py`` (the validators they share) and
``loading.py`` (reading a file safely, explaining errors); this module is the root
(:class:`Config`) and the entry points.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from typing import Final

import msgspec

from trailguard.config.checks import InvalidValue
from trailguard.config.loading import (
    _TOO_DEEP,
    _check_depth,
    _check_toml_nesting,
    _explain,
    _reject_credentials,
)
from trailguard.config.remediation import (
    DEFAULT_QUARANTINE_POLICY_ARN,
    ActionModes,
    CircuitBreakerConfig,
    NotifyConfig,
    RemediationConfig,
    RemediationPolicy,
)
from trailguard.config.rules import (
    BUILTIN_IDS,
    Rule,
    RuleEntry,
    SeverityConfig,
    Suppression,
    check_rule_entries,
    resolve_rules,
)
from trailguard.config.sections import (
    DEFAULT_KEY_PATTERN,
    AwsConfig,
    DynamoDbStateConfig,
    HistoryConfig,
    HttpConfig,
    JsonlOutputConfig,
    KeysConfig,
    LimitsConfig,
    LogFormat,
    LoggingConfig,
    LogLevel,
    MetricsConfig,
    OutputsConfig,
    ShutdownConfig,
    SnapshotConfig,
    SourcesConfig,
    SqsSourceConfig,
    StateBackend,
    StateConfig,
    parse_listen,
)
from trailguard.errors import ConfigError
from trailguard.vocabulary import ACTION_NAMES, ActionMode, ActionName, RemediationMode

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
    "DynamoDbStateConfig",
    "HistoryConfig",
    "HttpConfig",
    "InvalidValue",
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
    "StateBackend",
    "StateConfig",
    "Suppression",
    "load_config",
    "parse_config",
    "parse_listen",
    "unconfirmed_writes_warning",
]

#: A config file is read up to this size; a larger one is refused before it is parsed.
MAX_CONFIG_BYTES: Final = 1 << 20


def _check_remediation_rules(config: Config) -> None:
    """Every rule id a ``[[remediation.policies]]`` table names must exist."""
    known = BUILTIN_IDS | {entry.id for entry in config.rules}
    for p_index, policy in enumerate(config.remediation.policies):
        for index, rule_id in enumerate(policy.rules):
            if rule_id != "*" and rule_id not in known:
                close = difflib.get_close_matches(rule_id, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise InvalidValue(
                    f"remediation.policies[{p_index}].rules[{index}]",
                    f"no rule {rule_id!r}{hint}",
                )


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
        check_rule_entries(self.rules)

    def resolved_rules(self) -> tuple[Rule, ...]:
        """The built-in pack with this file's overrides applied, then the added rules."""
        return resolve_rules(self.rules)


def unconfirmed_writes_warning(remediation: RemediationConfig) -> str | None:
    """Why this config lets a forged trail file or queue message make trailguard write to IAM,
    or None: ``confirm_events = false`` with an action that writes in a mode that can act.

    The daemon logs it at start-up and after a reload (``remediation.confirm_events_off``);
    ``trailguard check-config`` prints it."""
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
        key_path, message = _explain(exc, raw, Config)
        raise ConfigError(file, message, key_path) from exc
