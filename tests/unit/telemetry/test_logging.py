"""Log lines and the replay summary: a value from a record, a key or a body is one line of text,
never a forged line or an escape sequence on the operator's terminal."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from trailguard.ingest.replay import ReplaySummary
from trailguard.telemetry.logging import configure_logging, get_logger, printable

HOSTILE_KEY = "AWSLogs/1/a\nFAKE level=error event=daemon.stopped\x1b[2J\r\u202e\x00.json.gz"


@pytest.fixture(autouse=True)
def _restore_structlog() -> object:
    yield None
    structlog.reset_defaults()


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_a_hostile_value_is_one_line_without_control_characters(fmt: str) -> None:
    out = io.StringIO()
    configure_logging("info", fmt, stream=out)  # type: ignore[arg-type]
    get_logger("test").warning(
        "s3.object_failed", key=HOSTILE_KEY, bucket="b\x1b]0;pwned\x07", reason="NoSuchKey"
    )
    text = out.getvalue()
    assert text.count("\n") == 1
    assert text.endswith("\n")
    line = text[:-1]
    assert all(ch.isprintable() for ch in line), repr(line)
    if fmt == "json":
        assert json.loads(line)["key"] == HOSTILE_KEY  # JSON escapes by itself; data intact
    else:
        assert f"key={HOSTILE_KEY!r}" in line
        # No space in it, so structlog alone would print it raw: an OSC sequence retitling the
        # terminal.
        assert "bucket='b\\x1b]0;pwned\\x07'" in line
        assert "reason=NoSuchKey" in line


def test_printable() -> None:
    assert printable("plain café 日本 +/") == "plain café 日本 +/"
    assert printable("a\nb\tc\x1b\x7f\x85\u2028\u200b") == "a\\nb\\tc\\x1b\\x7f\\x85\\u2028\\u200b"


def test_replay_summary_failed_lines_stay_one_line_each() -> None:
    summary = ReplaySummary(files=2)
    summary.failed.append((f"s3://trail/{HOSTILE_KEY}", "NoSuchKey\nFAILED forged"))
    lines = summary.render().split("\n")
    failed = [line for line in lines if line.startswith("FAILED")]
    assert len(failed) == 1
    assert failed[0].endswith("NoSuchKey\\nFAILED forged")
    assert all(ch.isprintable() for line in lines for ch in line)
