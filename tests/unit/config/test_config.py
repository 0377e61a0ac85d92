"""Config loading: defaults, the example file, and every validation error with its key path."""

from __future__ import annotations

import pickle
import re
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trailguard.config import (
    DEFAULT_KEY_PATTERN,
    Config,
    InvalidValue,
    RuleEntry,
    SqsSourceConfig,
    Suppression,
    load_config,
    parse_config,
    parse_listen,
)
from trailguard.detect.rules import DEFAULT_RULES
from trailguard.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "config" / "trailguard.example.toml"
FILE = "cfg.toml"
QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/trail"


def error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, file=FILE)
    return info.value


# --------------------------------------------------------------------------------------------
# Defaults
# --------------------------------------------------------------------------------------------


def test_none_and_empty_file_are_the_defaults() -> None:
    assert load_config(None) == Config()
    assert parse_config("", file=FILE) == Config()
    assert parse_config("# nothing\n[aws]\n[limits]\n", file=FILE) == Config()


def test_default_values() -> None:
    c = Config()
    assert c.aws.region is None
    assert c.aws.endpoint_url is None
    assert (c.logging.level, c.logging.format) == ("info", "auto")
    assert c.sources.sqs == ()
    assert (c.outputs.jsonl.path, c.outputs.jsonl.fsync) == ("-", True)
    assert c.state.path == "/var/lib/trailguard/state.sqlite3"
    assert c.state.dedup_ttl_hours == 168
    assert c.limits.max_objects_in_flight == 8
    assert c.limits.max_object_bytes == 50 * 1024 * 1024
    assert c.limits.decode_workers == 0
    assert c.limits.decode_worker_count() >= 1
    assert c.shutdown.deadline_secs == 30
    assert c.keys.include == (DEFAULT_KEY_PATTERN,)
    assert c.keys.exclude == ()
    assert c.severity.root == "critical"
    assert c.severity.console_without_mfa == "high"
    assert c.severity.permissions_boundary_removal == "high"
    assert c.severity.guardrail_policy_removal == "critical"
    assert c.severity.guardrail_policies == ("AWSCompromisedKeyQuarantine*",)
    assert c.suppress == ()
    assert c.rules == ()


def test_default_rules_are_the_builtin_pack_and_suppress_nothing() -> None:
    rules = Config().resolved_rules()
    assert [r.id for r in rules] == [r.id for r in DEFAULT_RULES]
    assert all(r.enabled and r.builtin and r.suppress == () for r in rules)
    assert all(r.event_source == "iam.amazonaws.com" for r in rules)


def test_default_key_pattern_matches_cloudtrail_logs_only() -> None:
    pattern = re.compile(DEFAULT_KEY_PATTERN)
    log = "AWSLogs/o-abcdefghij/111122223333/CloudTrail/us-east-1/2026/11/01/x.json.gz"
    assert pattern.search(log)
    assert pattern.search("prefix/" + log)
    assert not pattern.search(log.replace("CloudTrail/", "CloudTrail-Digest/"))
    assert not pattern.search(log.replace("CloudTrail/", "CloudTrail-Insight/"))
    assert not pattern.search("AWSLogs/111122223333/elasticloadbalancing/x.log.gz")


def test_sqs_source_defaults_and_label() -> None:
    config = parse_config(f'[[sources.sqs]]\nqueue_url = "{QUEUE}"\n', file=FILE)
    (src,) = config.sources.sqs
    assert src == SqsSourceConfig(queue_url=QUEUE)
    assert (src.wait_time_secs, src.max_messages, src.visibility_timeout_secs) == (20, 10, 300)
    assert src.label == "trail"
    assert src.heartbeat_interval_secs == 150
    named = SqsSourceConfig(queue_url="http://127.0.0.1:5000/123456789012/q", name="local")
    assert named.label == "local"


def test_config_is_frozen_picklable_and_round_trips() -> None:
    config = load_config(EXAMPLE)
    with pytest.raises(AttributeError):
        config.logging = config.logging  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(config)) == config  # the decode pool pickles it
    assert msgspec.convert(msgspec.to_builtins(config), Config) == config


def test_ints_are_accepted_for_floats() -> None:
    config = parse_config("[shutdown]\ndeadline_secs = 5\n", file=FILE)
    assert config.shutdown.deadline_secs == 5.0


# --------------------------------------------------------------------------------------------
# The example file
# --------------------------------------------------------------------------------------------


def test_example_loads() -> None:
    config = load_config(EXAMPLE)
    assert [s.name for s in config.suppress] == [
        "terraform-ci",
        "cloudformation-pipeline",
        "service-linked-roles",
    ]
    ci = config.suppress[0]
    assert ci.actor_arn
    assert ci.user_agent_preset == ("terraform",)


def test_example_restates_the_defaults() -> None:
    config = load_config(EXAMPLE)
    default = Config()
    for section in ("aws", "logging", "outputs", "state", "limits", "shutdown", "keys", "severity"):
        assert getattr(config, section) == getattr(default, section), section
    (src,) = config.sources.sqs
    assert src == SqsSourceConfig(queue_url=src.queue_url)
    # The [[rules]] tables restate built-in rules; only their suppressions differ (the
    # Terraform pipeline's on the change rules).
    resolved = config.resolved_rules()
    assert [msgspec.structs.replace(r, suppress=()) for r in resolved] == list(
        default.resolved_rules()
    )
    assert [r.id for r in resolved if r.suppress] == [
        "iam-delete-role-policy",
        "iam-policy-weakened",
        "iam-policy-possibly-weakened",
    ]


def _schema_keys(tp: Any, prefix: str) -> list[tuple[str, str]]:
    """(table, key) for every key of the schema, tables named as in TOML headers."""
    keys: list[tuple[str, str]] = []
    for field in msgspec.structs.fields(tp):
        inner = field.type
        while typing.get_origin(inner) in (typing.Union, typing.Annotated, tuple) or (
            type(inner).__name__ == "UnionType"
        ):
            args = [a for a in typing.get_args(inner) if a not in (type(None), msgspec.UnsetType)]
            inner = args[0]
        if isinstance(inner, type) and issubclass(inner, msgspec.Struct):
            keys.extend(_schema_keys(inner, f"{prefix}.{field.name}".lstrip(".")))
        else:
            keys.append((prefix, field.name))
    return keys


def test_example_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    missing = []
    for table, key in _schema_keys(Config, ""):
        # Active (`key =`) or commented (`# key =`, or the key table of rules / suppressions).
        if not re.search(rf"^[# ]*{re.escape(key)}\s*(=|\s)", text, re.MULTILINE):
            missing.append(f"{table}.{key}")
    assert missing == []


def test_example_warns_that_user_agent_alone_is_spoofable() -> None:
    text = EXAMPLE.read_text()
    assert "spoof" in text or "chosen by the caller" in text
    assert "combine it with actor_arn" in text


# --------------------------------------------------------------------------------------------
# Every validation error names the file and the exact key path
# --------------------------------------------------------------------------------------------

S = "[[suppress]]\n"
NEW_RULE = '[[rules]]\nid = "r0"\nevent_names = ["A"]\n'

CASES: list[tuple[str, str, str | None, str]] = [
    # (case id, TOML, key path, message fragment)
    ("unknown-top", "colour = 1\n", "colour", "unknown key 'colour'"),
    (
        "unknown-section-key",
        "[limits]\nmax_object_byte = 1\n",
        "limits.max_object_byte",
        "did you mean 'max_object_bytes'",
    ),
    ("unknown-aws-key", '[aws]\nprofile = "x"\n', "aws.profile", "standard AWS environment"),
    ("unknown-suppress-key", S + 'actor = ["x"]\n', "suppress[0].actor", "unknown key"),
    (
        "unknown-rule-key",
        '[[rules]]\nid = "iam-delete-policy"\nseverity = "high"\n',
        "rules[0].severity",
        "unknown key",
    ),
    (
        "wrong-type-int",
        '[limits]\nmax_objects_in_flight = "8"\n',
        "limits.max_objects_in_flight",
        "expected an integer, got a string '8'",
    ),
    (
        "wrong-type-bool",
        '[outputs.jsonl]\nfsync = "yes"\n',
        "outputs.jsonl.fsync",
        "expected a boolean",
    ),
    (
        "bool-for-int",
        "[limits]\ndecode_workers = true\n",
        "limits.decode_workers",
        "expected an integer, got a boolean",
    ),
    (
        "wrong-type-list",
        '[[suppress]]\nactor_arn = "arn:aws:iam::123456789012:user/x"\n',
        "suppress[0].actor_arn",
        "expected an array",
    ),
    ("wrong-type-table", '[[aws]]\nregion = "us-east-1"\n', "aws", "expected a table"),
    (
        "date-for-string",
        "[aws]\nregion = 2026-01-01\n",
        "aws.region",
        "expected a string, got a date 2026-01-01",
    ),
    (
        "list-item-type",
        S + "account_id = [123456789012]\n",
        "suppress[0].account_id[0]",
        "expected a string",
    ),
    ("region", '[aws]\nregion = "US East"\n', "aws.region", "not an AWS region"),
    (
        "endpoint-scheme",
        '[aws]\nendpoint_url = "ftp://x"\n',
        "aws.endpoint_url",
        "not an http:// or https:// URL",
    ),
    ("endpoint-nohost", '[aws]\nendpoint_url = "http://"\n', "aws.endpoint_url", "URL"),
    ("log-level", '[logging]\nlevel = "verbose"\n', "logging.level", "'debug', 'info'"),
    ("log-format", '[logging]\nformat = "xml"\n', "logging.format", "unknown value 'xml'"),
    (
        "queue-missing",
        "[[sources.sqs]]\nwait_time_secs = 1\n",
        "sources.sqs[0].queue_url",
        "required key is missing",
    ),
    (
        "queue-url",
        '[[sources.sqs]]\nqueue_url = "sqs://q"\n',
        "sources.sqs[0].queue_url",
        "not an http:// or https:// URL",
    ),
    (
        "queue-nopath",
        '[[sources.sqs]]\nqueue_url = "https://sqs.us-east-1.amazonaws.com/"\n',
        "sources.sqs[0].queue_url",
        "no queue path",
    ),
    (
        "wait-time",
        f'[[sources.sqs]]\nqueue_url = "{QUEUE}"\nwait_time_secs = 21\n',
        "sources.sqs[0].wait_time_secs",
        "<= 20, got 21",
    ),
    (
        "wait-negative",
        f'[[sources.sqs]]\nqueue_url = "{QUEUE}"\nwait_time_secs = -1\n',
        "sources.sqs[0].wait_time_secs",
        ">= 0",
    ),
    (
        "max-messages",
        f'[[sources.sqs]]\nqueue_url = "{QUEUE}"\nmax_messages = 11\n',
        "sources.sqs[0].max_messages",
        "<= 10",
    ),
    (
        "max-messages-0",
        f'[[sources.sqs]]\nqueue_url = "{QUEUE}"\nmax_messages = 0\n',
        "sources.sqs[0].max_messages",
        ">= 1",
    ),
    (
        "visibility",
        f'[[sources.sqs]]\nqueue_url = "{QUEUE}"\nvisibility_timeout_secs = 1\n',
        "sources.sqs[0].visibility_timeout_secs",
        ">= 2",
    ),
    (
        "visibility-max",
        f'[[sources.sqs]]\nqueue_url = "{QUEUE}"\nvisibility_timeout_secs = 43201\n',
        "sources.sqs[0].visibility_timeout_secs",
        "<= 43200",
    ),
    (
        "heartbeat",
        f'[[sources.sqs]]\nqueue_url = "{QUEUE}"\nheartbeat_fraction = 1.0\n',
        "sources.sqs[0].heartbeat_fraction",
        "<= 0.9",
    ),
    (
        "pollers",
        f'[[sources.sqs]]\nqueue_url = "{QUEUE}"\npollers = 0\n',
        "sources.sqs[0].pollers",
        ">= 1",
    ),
    (
        "queue-name",
        f'[[sources.sqs]]\nqueue_url = "{QUEUE}"\nname = "a b"\n',
        "sources.sqs[0].name",
        "letters",
    ),
    (
        "queue-dup",
        f'[[sources.sqs]]\nqueue_url = "{QUEUE}"\n[[sources.sqs]]\nqueue_url = "{QUEUE}"\n',
        "sources.sqs[1].queue_url",
        "duplicate queue_url",
    ),
    (
        "queue-name-dup",
        f'[[sources.sqs]]\nqueue_url = "{QUEUE}"\n[[sources.sqs]]\n'
        f'queue_url = "{QUEUE}2"\nname = "trail"\n',
        "sources.sqs[1].name",
        "duplicate queue name",
    ),
    ("jsonl-path", '[outputs.jsonl]\npath = ""\n', "outputs.jsonl.path", "must not be empty"),
    ("state-path", '[state]\npath = ""\n', "state.path", "must not be empty"),
    ("dedup-ttl", "[state]\ndedup_ttl_hours = 0\n", "state.dedup_ttl_hours", ">= 1"),
    ("in-flight", "[limits]\nmax_objects_in_flight = 0\n", "limits.max_objects_in_flight", ">= 1"),
    ("object-bytes", "[limits]\nmax_object_bytes = 0\n", "limits.max_object_bytes", "got 0"),
    ("object-bytes-neg", "[limits]\nmax_object_bytes = -5\n", "limits.max_object_bytes", "got -5"),
    ("workers", "[limits]\ndecode_workers = -1\n", "limits.decode_workers", ">= 0"),
    ("deadline", "[shutdown]\ndeadline_secs = -1\n", "shutdown.deadline_secs", ">= 0"),
    ("keys-empty", "[keys]\ninclude = []\n", "keys.include", "at least one regex"),
    ("keys-regex", '[keys]\ninclude = ["ok", "("]\n', "keys.include[1]", "invalid regex"),
    ("keys-exclude", '[keys]\nexclude = ["[a-"]\n', "keys.exclude[0]", "invalid regex"),
    (
        "severity-level",
        '[severity]\nroot = "urgent"\n',
        "severity.root",
        "unknown value 'urgent'; expected one of: 'info', 'low', 'medium', 'high', 'critical'",
    ),
    (
        "guardrail-arn",
        '[severity]\nguardrail_policies = ["x", "arn:aws:iam::aws:policy/Q"]\n',
        "severity.guardrail_policies[1]",
        "policy name glob",
    ),
    (
        "guardrail-empty",
        '[severity]\nguardrail_policies = [""]\n',
        "severity.guardrail_policies[0]",
        "must not be empty",
    ),
    # Suppressions
    ("supp-nothing", S + 'name = "only a name"\n', "suppress[0]", "at least one of"),
    ("supp-empty-list", S + "actor_arn = []\n", "suppress[0].actor_arn", "at least one value"),
    ("supp-blank-name", S + 'name = " "\nidentity_type = ["Root"]\n', "suppress[0].name", "blank"),
    (
        "arn-prefix",
        S + 'actor_arn = ["aws:iam::123456789012:user/x"]\n',
        "suppress[0].actor_arn[0]",
        "not an ARN glob",
    ),
    (
        "arn-parts",
        S + 'actor_arn = ["arn:aws:iam:123456789012:user/x"]\n',
        "suppress[0].actor_arn[0]",
        "six colon-separated parts",
    ),
    ("arn-star-only", S + 'actor_arn = ["arn:*"]\n', "suppress[0].actor_arn[0]", "not an ARN glob"),
    (
        "arn-account",
        S + 'actor_arn = ["arn:aws:iam::12345:user/x"]\n',
        "suppress[0].actor_arn[0]",
        "ARN account",
    ),
    (
        "arn-partition",
        S + 'actor_arn = ["arn::iam::123456789012:user/x"]\n',
        "suppress[0].actor_arn[0]",
        "ARN partition",
    ),
    (
        "arn-service",
        S + 'actor_arn = ["arn:aws:IAM::123456789012:user/x"]\n',
        "suppress[0].actor_arn[0]",
        "ARN service",
    ),
    (
        "arn-resource",
        S + 'actor_arn = ["arn:aws:iam::123456789012:"]\n',
        "suppress[0].actor_arn[0]",
        "empty resource",
    ),
    (
        "identity-type",
        S + 'identity_type = ["IAMUser", "iamuser"]\n',
        "suppress[0].identity_type[1]",
        "unknown value 'iamuser'",
    ),
    ("invoked-by-empty", S + 'invoked_by = [""]\n', "suppress[0].invoked_by[0]", "empty"),
    (
        "ua-regex",
        S + 'user_agent = ["ok", "(unclosed"]\n',
        "suppress[0].user_agent[1]",
        "invalid regex '(unclosed'",
    ),
    (
        "ua-empty-regex",
        S + 'user_agent = [""]\n',
        "suppress[0].user_agent[0]",
        "matches everything",
    ),
    (
        "preset",
        S + 'user_agent_preset = ["terrafrom"]\n',
        "suppress[0].user_agent_preset[0]",
        "'terraform', 'pulumi', 'cloudformation', 'aws-service-linked-role'",
    ),
    (
        "cidr",
        S + 'source_ip = ["10.0.0.0/8", "10.0.0.0/33"]\n',
        "suppress[0].source_ip[1]",
        "not an IPv4/IPv6 CIDR",
    ),
    ("cidr-host-bits", S + 'source_ip = ["10.0.0.1/8"]\n', "suppress[0].source_ip[0]", "host bits"),
    (
        "cidr-name",
        S + 'source_ip = ["cloudformation.amazonaws.com"]\n',
        "suppress[0].source_ip[0]",
        "CIDR",
    ),
    ("account", S + 'account_id = ["12345678901a"]\n', "suppress[0].account_id[0]", "12-digit"),
    # Rules
    ("rule-id-missing", "[[rules]]\nenabled = false\n", "rules[0].id", "required key"),
    ("rule-id", '[[rules]]\nid = "Bad_Id"\nevent_names = ["A"]\n', "rules[0].id", "a-z, 0-9"),
    ("rule-id-dup", NEW_RULE + NEW_RULE, "rules[1].id", "duplicate rule id 'r0'"),
    (
        "rule-new-no-names",
        NEW_RULE + '[[rules]]\nid = "brand-new"\n',
        "rules[1].event_names",
        "must list event_names",
    ),
    (
        "rule-typo-builtin",
        '[[rules]]\nid = "iam-delete-polcy"\nenabled = false\n',
        "rules[0].event_names",
        "did you mean the built-in rule 'iam-delete-policy'",
    ),
    (
        "rule-empty-names",
        '[[rules]]\nid = "iam-delete-policy"\nevent_names = []\n',
        "rules[0].event_names",
        "at least one event name",
    ),
    (
        "rule-iam-action",
        '[[rules]]\nid = "x"\nevent_names = ["iam:DeleteUserPolicy"]\n',
        "rules[0].event_names[0]",
        "'DeleteUserPolicy'; the service goes in event_source",
    ),
    (
        "rule-source",
        '[[rules]]\nid = "iam-delete-policy"\nevent_source = "iam"\n',
        "rules[0].event_source",
        "not an event source",
    ),
    (
        "rule-outcomes-empty",
        '[[rules]]\nid = "iam-delete-policy"\noutcomes = []\n',
        "rules[0].outcomes",
        '"success", "failure"',
    ),
    (
        "rule-outcome",
        '[[rules]]\nid = "iam-delete-policy"\noutcomes = ["failed"]\n',
        "rules[0].outcomes[0]",
        "unknown value 'failed'",
    ),
    (
        "rule-severity",
        '[[rules]]\nid = "iam-delete-policy"\nseverity_failure = "hgih"\n',
        "rules[0].severity_failure",
        "unknown value 'hgih'",
    ),
    (
        "rule-enabled",
        '[[rules]]\nid = "iam-delete-policy"\nenabled = "no"\n',
        "rules[0].enabled",
        "expected a boolean",
    ),
    (
        "rule-suppress-regex",
        NEW_RULE + '[[rules]]\nid = "iam-delete-policy"\n[[rules]]\nid = "r2"\n'
        'event_names = ["B"]\n[[rules.suppress]]\nidentity_type = ["Root"]\n[[rules.suppress]]\n'
        'user_agent = ["fine", "(bad"]\n',
        "rules[2].suppress[1].user_agent[1]",
        "invalid regex",
    ),
    (
        "rule-suppress-nothing",
        '[[rules]]\nid = "iam-delete-policy"\n[[rules.suppress]]\nname = "x"\n',
        "rules[0].suppress[0]",
        "at least one of",
    ),
]


@pytest.mark.parametrize(("text", "key_path", "fragment"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])  # fmt: skip
def test_validation_error(text: str, key_path: str, fragment: str) -> None:
    err = error(text)
    assert err.file == FILE
    assert err.key_path == key_path
    assert str(err).startswith(f"{FILE}: {key_path}: ")
    assert fragment in str(err)


def test_toml_syntax_error_names_file_and_line() -> None:
    err = error('[aws]\nregion = "us-east-1\n')
    assert err.key_path is None
    assert str(err).startswith(f"{FILE}: not valid TOML: ")
    assert "line 2" in str(err)


@pytest.mark.parametrize(
    ("text", "key_path"),
    [
        ('[aws]\naws_access_key_id = "AKIA..."\n', "aws.aws_access_key_id"),
        ('[aws]\naws_secret_access_key = "x"\n', "aws.aws_secret_access_key"),
        ('[aws]\naws_session_token = "x"\n', "aws.aws_session_token"),
        ('aws_access_key_id = "x"\n', "aws_access_key_id"),
        ('[[sources.sqs]]\nqueue_url = "https://q/1/q"\nsecret_access_key = "x"\n',
         "sources.sqs[0].secret_access_key"),
        ('[outputs.jsonl]\nSession-Token = "x"\n', "outputs.jsonl.Session-Token"),
        ('[[rules]]\nid = "x"\n[[rules.suppress]]\nAWS_SECURITY_TOKEN = "x"\n',
         "rules[0].suppress[0].AWS_SECURITY_TOKEN"),
    ],
)  # fmt: skip
def test_credentials_are_rejected_anywhere(text: str, key_path: str) -> None:
    err = error(text)
    assert err.key_path == key_path
    assert "credentials" in err.reason
    assert "standard AWS environment and profiles" in err.reason


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('[logging]\nlevel = "debug"\n')
    assert load_config(path).logging.level == "debug"
    assert load_config(str(path)).logging.level == "debug"


def test_load_config_accepts_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_bytes(b'\xef\xbb\xbf[logging]\nlevel = "error"\n')
    assert load_config(path).logging.level == "error"


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file"):
        load_config(missing)
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=r"bin\.toml: not UTF-8"):
        load_config(binary)
    huge = tmp_path / "huge.toml"
    huge.write_bytes(b"#" * (2 << 20))
    with pytest.raises(ConfigError, match="larger than"):
        load_config(huge)
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\nmax_messages = 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert info.value.file == str(bad)
    assert info.value.key_path == "limits.max_messages"


# --------------------------------------------------------------------------------------------
# Rules: the raw layer and the merge
# --------------------------------------------------------------------------------------------


def test_override_changes_only_the_keys_it_sets() -> None:
    config = parse_config(
        '[[rules]]\nid = "iam-delete-policy-version"\nenabled = false\n', file=FILE
    )
    (entry,) = config.rules
    assert entry.enabled is False
    assert entry.severity_success is msgspec.UNSET  # unset, not the default
    rules = {r.id: r for r in config.resolved_rules()}
    builtin = {r.id: r for r in DEFAULT_RULES}["iam-delete-policy-version"]
    rule = rules["iam-delete-policy-version"]
    assert rule.enabled is False
    assert rule.builtin
    assert (rule.event_names, rule.severity_success, rule.severity_failure) == (
        builtin.event_names,
        builtin.severity_success,
        builtin.severity_failure,
    )
    assert all(r.enabled for r in rules.values() if r.id != "iam-delete-policy-version")


def test_override_of_severity_and_outcomes() -> None:
    config = parse_config(
        '[[rules]]\nid = "iam-detach-role-policy"\nseverity_failure = "critical"\n'
        'outcomes = ["failure"]\n',
        file=FILE,
    )
    rule = next(r for r in config.resolved_rules() if r.id == "iam-detach-role-policy")
    assert (rule.severity_success, rule.severity_failure) == ("high", "critical")
    assert rule.outcomes == ("failure",)
    assert rule.event_names == ("DetachRolePolicy",)


def test_added_rule_takes_defaults_and_comes_after_the_builtins() -> None:
    config = parse_config(
        '[[rules]]\nid = "org-detach-policy"\nevent_names = ["DetachPolicy"]\n'
        'event_source = "organizations.amazonaws.com"\n',
        file=FILE,
    )
    rules = config.resolved_rules()
    assert len(rules) == len(DEFAULT_RULES) + 1
    added = rules[-1]
    assert added.id == "org-detach-policy"
    assert not added.builtin
    assert added.enabled
    assert (added.severity_success, added.severity_failure) == ("high", "medium")
    assert added.outcomes == ("success", "failure")
    assert added.event_source == "organizations.amazonaws.com"


def test_programmatic_construction_validates_too() -> None:
    with pytest.raises(InvalidValue) as info:
        Suppression(account_id=("1",))
    assert info.value.key == "account_id[0]"
    with pytest.raises(InvalidValue):
        Config(rules=(RuleEntry(id="not-builtin"),))
    assert Config(rules=(RuleEntry(id="iam-delete-policy", enabled=False),)).rules[0].id


def test_valid_suppression_fields_are_accepted() -> None:
    config = parse_config(
        S + 'name = "all"\nactor_arn = ["arn:aws:sts::123456789012:assumed-role/ci/*",'
        ' "arn:aws*:iam::*:user/?ob", "arn:aws:iam::aws:policy/x"]\n'
        'identity_type = ["AssumedRole", "AWSService", "IdentityCenterUser", "Directory"]\n'
        'invoked_by = ["*.amazonaws.com"]\nuser_agent = ["^aws-cli/", "(?i)boto"]\n'
        'user_agent_preset = ["terraform", "pulumi", "cloudformation", "aws-service-linked-role"]\n'
        'source_ip = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]\n'
        'account_id = ["123456789012"]\n',
        file=FILE,
    )
    (s,) = config.suppress
    assert s.source_ip == ("10.0.0.0/8", "2001:db8::/32", "192.0.2.7")
    assert s.invoked_by == ("*.amazonaws.com",)


# --------------------------------------------------------------------------------------------
# Robustness: any TOML document yields a Config or a ConfigError, never anything else
# --------------------------------------------------------------------------------------------

_KEYS = st.sampled_from(
    ["aws", "region", "sources", "sqs", "queue_url", "rules", "id", "suppress", "actor_arn",
     "limits", "severity", "root", "user_agent", "source_ip", "event_names", "x", "keys"]
)  # fmt: skip
_SCALARS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.text(max_size=20),
    st.floats(allow_nan=False),
    st.sampled_from(["iam-delete-policy", "arn:aws:iam::123456789012:user/x", "10.0.0.0/8"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if not isinstance(value, float) or value == value else "nan"
    if isinstance(value, str):
        return '"' + value.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES, max_size=5))
def test_arbitrary_documents_never_crash(doc: dict[str, Any]) -> None:
    text = "".join(f"{k} = {_toml(v)}\n" for k, v in doc.items())
    try:
        parse_config(text, file=FILE)
    except ConfigError as exc:
        message = str(exc)
    else:
        return
    assert message.startswith(f"{FILE}: ")


# --------------------------------------------------------------------------------------------
# [http] and [metrics]
# --------------------------------------------------------------------------------------------


def test_http_and_metrics_defaults_and_example() -> None:
    c = Config()
    assert (c.http.enabled, c.http.listen, c.http.ready_max_poll_age_secs) == (
        True,
        "127.0.0.1:9108",
        120.0,
    )
    assert c.metrics.account_labels is True
    example = load_config(EXAMPLE)
    assert (example.http, example.metrics) == (c.http, c.metrics)


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9108", ("127.0.0.1", 9108)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:9108", ("::1", 9108)),
        ("[::]:9108", ("::", 9108)),
    ],
)
def test_http_listen_accepted(listen: str, expected: tuple[str, int]) -> None:
    config = parse_config(f'[http]\nlisten = "{listen}"\n', file=FILE)
    assert parse_listen(config.http.listen) == expected


@pytest.mark.parametrize(
    ("listen", "fragment"),
    [
        ("9108", "is not host:port"),
        (":9108", "is not host:port"),
        ("127.0.0.1:", "is not host:port"),
        ("127.0.0.1:http", "is not host:port"),
        ("127.0.0.1:65536", "out of range"),
        ("127.0.0.1:0", "not 0"),
        ("::1:9108", "in brackets"),
        ("[not-v6]:9108", "not an IPv6 address"),
        ("bad host:9108", "not an IP address or host name"),
    ],
)
def test_http_listen_rejected(listen: str, fragment: str) -> None:
    err = error(f'[http]\nlisten = "{listen}"\n')
    assert err.key_path == "http.listen"
    assert fragment in str(err)


def test_http_and_metrics_type_errors() -> None:
    assert error("[http]\nready_max_poll_age_secs = 0\n").key_path == "http.ready_max_poll_age_secs"
    assert error('[http]\nenabled = "yes"\n').key_path == "http.enabled"
    assert error("[metrics]\naccount_labels = 1\n").key_path == "metrics.account_labels"
    assert error("[metrics]\nlabels = true\n").key_path == "metrics.labels"


def test_parse_listen_allows_port_zero_for_tests() -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)


# --------------------------------------------------------------------------------------------
# Hostile files: refused with a config error, never a RecursionError or an exhausted memory
# (the same files through the real CLI: tests/integration/test_replay_cli.py)
# --------------------------------------------------------------------------------------------

DEEP = 100_000


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("x = " + "[" * DEEP + "]" * DEEP, "line 1: nested more than 16 levels deep"),
        ("x = " + "{a=" * DEEP + "1" + "}" * DEEP, "line 1: nested more than 16 levels deep"),
        ("\n\nx = [[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]", "line 3: nested more than 16"),
        # tomllib's cost grows with the square of a dotted key's parts: never reached
        (".".join(["a"] * DEEP) + " = 1", "line 1: a dotted key of more than 16 parts"),
        (".".join(['"a"'] * DEEP) + " = 1", "a dotted key of more than 16 parts"),
        (" . ".join(["a"] * DEEP) + " = 1", "a dotted key of more than 16 parts"),
        ("[" + ".".join(["a"] * DEEP) + "]", "a dotted key of more than 16 parts"),
        ("[[" + ".".join(["a"] * DEEP) + "]]", "a dotted key of more than 16 parts"),
        ("x = {y = {" + ".".join(["a"] * DEEP) + " = 1}}", "a dotted key of more than 16"),
    ],
    ids=[
        "arrays",
        "inline-tables",
        "line-number",
        "dotted-key",
        "quoted-dotted-key",
        "spaced-dotted-key",
        "table-header",
        "array-of-tables-header",
        "dotted-key-in-inline-table",
    ],
)
def test_deep_toml_is_a_config_error(text: str, fragment: str) -> None:
    caught = error(text)
    assert fragment in str(caught)
    assert caught.key_path is None


def test_depth_made_of_allowed_pieces_is_refused_with_its_key_path() -> None:
    """15 dotted parts inside 15 inline tables: each piece allowed, the document 225 deep."""
    part = ".".join(["a"] * 15)
    caught = error("x = " + f"{{{part} = " * 15 + "1" + "}" * 15)
    assert "nested more than 16 levels deep" in str(caught)
    assert caught.key_path == "x" + ".a" * 15
    # ... and in a key msgspec converts: the document, not msgspec, says no.
    caught = error('[[rules]]\nid = "x"\nevent_names = ' + "[" * 15 + "]" * 15)
    assert caught.key_path == "rules[0].event_names" + "[0]" * 13


@pytest.mark.parametrize(
    "text",
    [
        # brackets, dots and '#' inside strings and comments are not structure
        'name = "' + "[{." * 100 + '"',
        "name = '" + "[{." * 100 + "'",
        'name = """\n' + "[{.\n" * 100 + '"""',
        "name = '''\n" + "[{.\n" * 100 + "'''",
        'name = """a\\"""' + "[" * 20 + '"""',  # an escaped quote does not end it
        'name = """' + "[" * 20 + '""""',  # a quote just inside the closing delimiter
        "# " + "[{." * 100 + "\nname = 'x'",
        'name = "a#' + "[" * 20 + '"',
    ],
)
def test_strings_and_comments_do_not_count_as_nesting(text: str) -> None:
    config = parse_config(f"[[suppress]]\n{text}\naccount_id = ['123456789012']\n", file=FILE)
    assert config.suppress[0].name is not None


def test_the_deepest_real_config_is_accepted() -> None:
    text = (
        'rules = [{id = "iam-delete-role-policy", suppress = [{actor_arn = '
        '["arn:aws:iam::123456789012:role/a.b.c"], source_ip = ["10.0.0.0/8"]}]}]\n'
        "limits.max_object_bytes = 1000\n"
    )
    config = parse_config(text, file=FILE)
    assert config.rules[0].suppress


def test_load_config_refuses_a_device_that_never_ends() -> None:
    with pytest.raises(ConfigError, match="larger than 1048576 bytes"):
        load_config("/dev/zero")


# --------------------------------------------------------------------------------------------
# What one message may name: [limits] max_objects_per_message, [[sources.sqs]] buckets
# --------------------------------------------------------------------------------------------


def test_objects_per_message_and_buckets_defaults() -> None:
    config = parse_config(f'[[sources.sqs]]\nqueue_url = "{QUEUE}"\n', file=FILE)
    assert config.limits.max_objects_per_message == 100
    assert config.sources.sqs[0].buckets == ()  # any bucket


def test_buckets_are_kept_in_order() -> None:
    config = parse_config(
        f'[[sources.sqs]]\nqueue_url = "{QUEUE}"\nbuckets = ["trail-a", "Legacy_Trail.B"]\n'
        "[limits]\nmax_objects_per_message = 1\n",
        file=FILE,
    )
    assert config.sources.sqs[0].buckets == ("trail-a", "Legacy_Trail.B")
    assert config.limits.max_objects_per_message == 1


@pytest.mark.parametrize(
    ("text", "key_path", "fragment"),
    [
        (
            'buckets = ["trail", "../etc"]',
            "sources.sqs[0].buckets[1]",
            "'../etc' is not an S3 bucket name",
        ),
        ('buckets = ["s3://trail"]', "sources.sqs[0].buckets[0]", "is not an S3 bucket name"),
        ('buckets = [""]', "sources.sqs[0].buckets[0]", "is not an S3 bucket name"),
        (f'buckets = ["{"b" * 256}"]', "sources.sqs[0].buckets[0]", "is not an S3 bucket name"),
        ('buckets = ["a", "b", "a"]', "sources.sqs[0].buckets[2]", "duplicate bucket 'a'"),
        ('buckets = "trail"', "sources.sqs[0].buckets", "expected an array"),
    ],
)
def test_bad_buckets(text: str, key_path: str, fragment: str) -> None:
    caught = error(f'[[sources.sqs]]\nqueue_url = "{QUEUE}"\n{text}\n')
    assert caught.key_path == key_path
    assert fragment in caught.reason


@pytest.mark.parametrize("value", ["0", "10001", "-1", '"100"'])
def test_bad_max_objects_per_message(value: str) -> None:
    caught = error(f"[limits]\nmax_objects_per_message = {value}\n")
    assert caught.key_path == "limits.max_objects_per_message"
