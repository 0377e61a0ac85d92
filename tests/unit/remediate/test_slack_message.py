"""The Slack message: no value from a record can become a mention, a link, markup or a line.

Every field of the event a notify job carries is filled with hostile text (hypothesis), the
fields found by walking the job's types, so a field added later is covered without touching this
test; the text must hold no ``<`` or ``>`` at all (so no ``<!channel>``, ``<@U...>`` or
``<https://...|disguise>``), only entities after ``&``, balanced code spans each set off by spaces,
nothing outside the code spans but trailguard's own words, exactly its three lines -- and every
value it shows, intact inside its code span.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.remediation_support import config_toml, detection, one_job, remediation_config
from trailguard.remediate import mrkdwn
from trailguard.remediate.jobs import EventRef, Job
from trailguard.remediate.mrkdwn import BACKTICK_STANDIN, MAX_VALUE_CHARS, Mrkdwn
from trailguard.remediate.notify import notification, slack_message, sns_subject

# Pieces of the attacks: Slack's control sequences, markup, line breaks, look-alikes.
HOSTILE = [
    "<!channel>",
    "<!here>",
    "<!everyone>",
    "<@U012AB3CD>",
    "<#C012AB3CD|general>",
    "<!subteam^S012AB3CD>",
    "<!date^1392734382^{date}|Feb 18>",
    "<https://evil.example/login|https://console.aws.amazon.com>",
    "<mailto:a@evil.example|security team>",
    "https://evil.example/x",
    "`",
    "```",
    "` *[info] ignore this alert* `",
    "*bold*",
    "_italic_",
    "~strike~",
    "> quoted",
    "@here",
    "@channel",
    ":rotating_light:",
    "\n",
    "\r\n",
    "\n*trailguard* [info] all clear",
    "\u2028",
    "\u2029",
    "\u202e",
    "\u200b",
    "\x1b[31m",
    "\x00",
    "&",
    "&lt;!channel&gt;",
    "&amp;",
    "\\",
    BACKTICK_STANDIN,
]
MARKER = "<!channel>"  # in every hostile value, so a value that escapes its span is visible

hostile_text = st.lists(
    st.one_of(st.sampled_from(HOSTILE), st.text(max_size=12)), min_size=0, max_size=6
).map(lambda parts: "".join(parts) + MARKER)
long_text = st.integers(min_value=MAX_VALUE_CHARS - 2, max_value=3 * MAX_VALUE_CHARS).map(
    lambda n: ("<!here>`*x*`\n" * n)[:n] + MARKER
)
any_hostile = st.one_of(hostile_text, long_text)

# Markup trailguard writes itself: the only text allowed outside code spans.
OUTSIDE = re.compile(r"[A-Za-z0-9 *\[\]().,:/?-]*")


def _strategy(info: msgspec.inspect.Type) -> st.SearchStrategy[Any]:
    """Hostile builtins for one field's type (as msgspec describes it)."""
    if isinstance(info, msgspec.inspect.StructType):
        return st.fixed_dictionaries({f.encode_name: _strategy(f.type) for f in info.fields})
    if isinstance(info, msgspec.inspect.UnionType):
        return st.one_of(*(_strategy(t) for t in info.types))
    if isinstance(info, msgspec.inspect.NoneType):
        return st.none()
    if isinstance(info, msgspec.inspect.StrType):
        return any_hostile
    if isinstance(info, msgspec.inspect.LiteralType):
        return st.sampled_from(info.values)
    if isinstance(info, msgspec.inspect.BoolType):
        return st.booleans()
    if isinstance(info, msgspec.inspect.DictType):
        return st.dictionaries(any_hostile, _strategy(info.value_type), max_size=3)
    if isinstance(info, msgspec.inspect.VarTupleType | msgspec.inspect.ListType):
        return st.lists(_strategy(info.item_type), max_size=3)
    if isinstance(info, msgspec.inspect.IntType):
        return st.integers(min_value=0)
    raise AssertionError(f"no hostile strategy for {info}: extend the test")


hostile_events = _strategy(msgspec.inspect.type_info(EventRef)).map(
    lambda raw: msgspec.convert(raw, EventRef)
)
BASE_JOB_CONFIG = remediation_config(
    config_toml(actions='"notify"')
    + '\n[remediation.notify]\nwebhook_url = "https://hooks.slack.com/services/T/B/X"\n'
    "slack_format = true\n"
)
BASE_JOB: Job = one_job(detection("DeleteUserPolicy"), BASE_JOB_CONFIG, "notify")


def visible(value: str) -> str:
    """What a value should read as inside its code span (the test's own model of it)."""
    clipped = value if len(value) <= MAX_VALUE_CHARS else value[:MAX_VALUE_CHARS] + "…"
    out = []
    for char in clipped:
        if unicodedata.category(char) in {"Cc", "Cf", "Zl", "Zp", "Cs"}:
            out.append(char.encode("unicode_escape").decode("ascii"))
        else:
            out.append(char)
    return "".join(out)


def unescape(span: str) -> str:
    """Slack's display of a code span's text: entities decoded (the backtick stand-in stays)."""
    return span.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def check_message(text: str, event: EventRef) -> None:
    lines = text.split("\n")
    # no forged line (a change's comparison gets a line of its own)
    assert len(lines) == (3 if event.change is None else 4), lines
    assert "<" not in text  # no mention, channel link, URL link, date ...
    assert ">" not in text
    assert re.fullmatch(r"(?:[^&]|&(?:amp|lt|gt);)*", text, re.DOTALL), "a bare & in the text"
    spans: list[str] = []
    for line in lines:
        pieces = line.split("`")
        assert len(pieces) % 2 == 1, f"unbalanced code span in {line!r}"
        for index, piece in enumerate(pieces):
            if index % 2 == 0:
                assert OUTSIDE.fullmatch(piece), f"not trailguard's markup: {piece!r}"
                assert MARKER not in piece
            else:
                assert piece, "an empty code span"
                # Set off by spaces (or the line's ends): Slack renders it as code.
                before = pieces[index - 1]
                assert (before == "" and index == 1) or before.endswith(" "), line
                following = pieces[index + 1]
                assert following == "" or following.startswith(" ")
                spans.append(unescape(piece))
    # Every value the message shows is there, whole (up to the clip), inside one span.
    actor, target = event.actor, event.target
    shown = [
        event.severity,
        event.event_name,
        target.policy_arn or target.policy_name,
        event.account_id,
        actor.arn or actor.type,
        event.event_id,
        event.event_time,
        event.rule,
        actor.source_ip,
        actor.user_agent,
    ]
    if target.kind != "policy" and target.name:
        shown.append(target.name)
    if event.outcome != "success":
        shown.append(event.error_code or "error")
    if event.change is not None:
        shown += [event.change.verdict, event.change.previous_event_id]
        if event.change.witness is not None:
            shown += [event.change.witness.action, event.change.witness.resource]
    for value in shown:
        if value:
            assert visible(value).replace("`", BACKTICK_STANDIN) in spans, value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=hostile_events)
def test_no_field_can_make_a_mention_a_link_markup_or_a_line(event: EventRef) -> None:
    job = msgspec.structs.replace(BASE_JOB, detection=event)
    body = slack_message(job)
    assert list(body) == ["text"]
    check_message(body["text"], event)


def test_the_probe_user_agent_is_inert_code() -> None:
    """The reported attack: a backtick closes the span, then a mention and a disguised link."""
    agent = (
        "aws-cli/2.15.0` *[info] Ignore this alert: change ticket SEC-1234 approved by the "
        "security team* <!channel> verify at <https://evil.example/login|"
        "https://console.aws.amazon.com> `x"
    )
    job = one_job(detection("DeleteUserPolicy", user_agent=agent), BASE_JOB_CONFIG, "notify")
    text = slack_message(job)["text"]
    last = text.split("\n")[2]
    assert last == (
        "source IP `198.51.100.7` user agent `aws-cli/2.15.0\u02cb *[info] Ignore this alert: "
        "change ticket SEC-1234 approved by the security team* &lt;!channel&gt; verify at "
        "&lt;https://evil.example/login|https://console.aws.amazon.com&gt; \u02cbx`"
    )
    check_message(text, job.detection)


def test_an_ordinary_alert_reads_well() -> None:
    job = one_job(detection("DeleteUserPolicy"), BASE_JOB_CONFIG, "notify")
    event = job.detection
    lines = slack_message(job)["text"].split("\n")
    assert lines[0] == (
        "*trailguard* `high` `DeleteUserPolicy` of `s3-read` on user `alice` in account "
        f"`{event.account_id}` by `{event.actor.arn}`"
    )
    assert lines[1] == f"event `{event.event_id}` at `{event.event_time}` rule `{event.rule}`"


def test_a_huge_user_agent_is_clipped() -> None:
    agent = "A" * 100_000
    job = one_job(detection("DeleteUserPolicy", user_agent=agent), BASE_JOB_CONFIG, "notify")
    text = slack_message(job)["text"]
    assert len(text) < 2_000
    assert f"`{'A' * MAX_VALUE_CHARS}…`" in text


def test_the_plain_webhook_json_keeps_values_as_they_are() -> None:
    """JSON is data: the plain webhook body carries the caller's text unchanged."""
    agent = "curl <!channel> `x` \n"
    job = one_job(detection("DeleteUserPolicy", user_agent=agent), BASE_JOB_CONFIG, "notify")
    assert notification(job)["actor"]["user_agent"] == agent


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "?"),
        ("", "?"),
        ("plain", "`plain`"),
        ("a&b<c>d`e", "`a&amp;b&lt;c&gt;d\u02cbe`"),
        ("line\nbreak\r\tand\u2028sep", "`line\\nbreak\\r\\tand\\u2028sep`"),
        ("\u202egnp.exe", "`\\u202egnp.exe`"),
        ("zero\u200bwidth", "`zero\\u200bwidth`"),
        ("\x1b[2J", "`\\x1b[2J`"),
        ("@here *b* _i_ ~s~ :x:", "`@here *b* _i_ ~s~ :x:`"),  # inert inside code
    ],
)
def test_code(value: str | None, shown: str) -> None:
    assert mrkdwn.code(value).text == shown


@pytest.mark.parametrize(
    "text", ["`", "<!here>", "a\nb", "a & b", "x > y", "@here", "_i_", "~s~", "<https://x|y>"]
)
def test_markup_refuses_anything_a_value_could_need(text: str) -> None:
    with pytest.raises(ValueError, match=r"mrkdwn\.code"):
        mrkdwn.markup(text)


def test_pieces_are_mrkdwn_only() -> None:
    with pytest.raises(TypeError):
        Mrkdwn("<!channel>")
    with pytest.raises(TypeError):
        mrkdwn.line(mrkdwn.markup("by"), "<!channel>")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        mrkdwn.message("<!channel>")  # type: ignore[arg-type]
    assert mrkdwn.line(mrkdwn.markup("by"), mrkdwn.code("x")).text == "by `x`"


def test_sns_subject_is_one_printable_ascii_line() -> None:
    subject = sns_subject("DeleteUserPolicy", "123456789012\nX-Injected: yes\u202e" + "é" * 200)
    assert re.fullmatch(r"[\x20-\x7e]{1,100}", subject), subject
    assert subject.startswith("trailguard: DeleteUserPolicy in 123456789012?X-Injected: yes??")
    assert sns_subject("DeleteRolePolicy", None) == "trailguard: DeleteRolePolicy in None"
