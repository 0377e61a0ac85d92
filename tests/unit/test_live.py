"""trailguard/live.py: a changed section goes to the parts that read it, with exactly their
sections; what no part reads, and every key a part keeps, waits for a restart."""

from __future__ import annotations

import msgspec
import pytest

from trailguard.config import Config, LoggingConfig, parse_config
from trailguard.live import LivePart, apply_reload

OLD_TEXT = """
[logging]
level = "info"

[[sources.sqs]]
queue_url = "https://sqs.eu-west-1.amazonaws.com/123456789012/trail"

[remediation]
workers = 2
mode = "dry-run"
"""
OLD = parse_config(OLD_TEXT, file="old.toml")


def changed(**sections: object) -> Config:
    return msgspec.structs.replace(OLD, **sections)


def test_a_section_no_part_reads_needs_a_restart_and_keeps_its_value() -> None:
    calls: list[object] = []

    def logging(section: object) -> tuple[str, ...]:
        calls.append(section)
        return ()

    part = LivePart("logging", ("logging",), logging)
    new = changed(
        sources=parse_config(
            '[[sources.sqs]]\nqueue_url = "https://sqs.eu-west-1.amazonaws.com/123456789012/x"\n',
            file="new.toml",
        ).sources
    )
    outcome = apply_reload(OLD, new, [part])
    assert outcome.applied == ()
    assert outcome.restart_required == ("sources",)
    assert outcome.config == OLD
    assert calls == []  # its section did not change: not called


def test_a_part_gets_exactly_the_new_values_of_its_sections() -> None:
    seen: list[tuple[object, ...]] = []

    def detection(rules: object, suppress: object, severity: object) -> tuple[str, ...]:
        seen.append((rules, suppress, severity))
        return ()

    new = parse_config(
        OLD_TEXT
        + '\n[[suppress]]\nname = "ci"\nactor_arn = ["arn:aws:iam::123456789012:role/ci"]\n',
        file="new.toml",
    )
    outcome = apply_reload(
        OLD, new, [LivePart("detection", ("rules", "suppress", "severity"), detection)]
    )
    assert seen == [(new.rules, new.suppress, new.severity)]
    assert outcome.applied == ("suppress",)
    assert outcome.restart_required == ()
    assert outcome.config.suppress == new.suppress


def test_a_kept_key_keeps_its_running_value_and_is_reported() -> None:
    new_remediation = msgspec.structs.replace(OLD.remediation, workers=8, mode="enforce")

    def remediation(section: object) -> tuple[str, ...]:
        assert section == new_remediation
        return ("remediation.workers",)

    outcome = apply_reload(
        OLD,
        changed(remediation=new_remediation),
        [LivePart("remediation", ("remediation",), remediation)],
    )
    assert outcome.applied == ("remediation",)
    assert outcome.restart_required == ("remediation.workers",)
    assert outcome.config.remediation.workers == 2  # the running value
    assert outcome.config.remediation.mode == "enforce"  # the new one


def test_a_section_whose_only_change_was_kept_is_not_applied() -> None:
    new_remediation = msgspec.structs.replace(OLD.remediation, workers=8)
    outcome = apply_reload(
        OLD,
        changed(remediation=new_remediation),
        [LivePart("remediation", ("remediation",), lambda s: ("remediation.workers",))],
    )
    assert outcome.applied == ()
    assert outcome.restart_required == ("remediation.workers",)
    assert outcome.config == OLD


def test_a_part_that_keeps_a_key_outside_its_sections_is_a_bug() -> None:
    with pytest.raises(ValueError, match="not a key of a section it reads"):
        apply_reload(
            OLD,
            changed(logging=LoggingConfig(level="debug")),
            [LivePart("logging", ("logging",), lambda s: ("limits.max_object_bytes",))],
        )
