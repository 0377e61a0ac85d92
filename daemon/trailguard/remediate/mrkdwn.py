"""Slack mrkdwn that values from a CloudTrail record cannot turn into mentions, links or markup.

Every value in an alert -- user agent, ARNs, user and role names, policy names, error codes,
source IPs, even eventIDs and account IDs -- comes from a log record or a queue message, and so
from whoever made the call (or forged the file).  In Slack's mrkdwn, ``<!channel>`` is a mention,
``<https://evil|https://console.aws.amazon.com>`` a disguised link, a backtick ends a code span
and a newline starts a line of the attacker's choosing.

So a message is built only from :class:`Mrkdwn` pieces, and there are two ways to make one:

* :func:`code` -- the one way in for a value: shown as inline code (no bold, italics, strike,
  emoji, bare-URL links or mentions inside), ``&`` ``<`` ``>`` escaped as Slack documents
  (``&amp;`` ``&lt;`` ``&gt;``), a backtick replaced by U+02CB (modifier letter grave accent)
  so it cannot close the span, line breaks, control and invisible format characters (bidi
  overrides, zero-width ...) shown as ``\\n``, ``\\x1b``, ``\\u202e``, and at most
  :data:`MAX_VALUE_CHARS` characters;
* :func:`markup` -- trailguard's own words and formatting (``*trailguard*``), checked at run time
  to hold nothing but letters, digits, spaces and ``*[]().,:/-``, so even a value passed there by
  mistake cannot carry a mention, a link, a code span or a line break.

:func:`line` joins pieces with single spaces (so a code span never touches a word character,
which would stop Slack rendering it as code) and :func:`message` joins lines.  Neither accepts a
plain ``str``: mypy rejects it, and so does the run-time check.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

__all__ = ["MAX_VALUE_CHARS", "Mrkdwn", "code", "line", "markup", "message"]

#: A value longer than this is cut (with "…"): an attacker's 100 KB user agent must not push
#: the rest of the alert out of Slack's 40,000-character message, or make Slack reject it.
MAX_VALUE_CHARS: Final = 256
#: What a backtick in a value is shown as: MODIFIER LETTER GRAVE ACCENT, which ends no code span.
BACKTICK_STANDIN: Final = "\u02cb"
#: What a missing value is shown as.
MISSING: Final = "?"

_ENTITIES: Final = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "`": BACKTICK_STANDIN}
# Control (Cc), format (Cf: bidi overrides, zero-width characters ...), line and paragraph
# separators (Zl, Zp) and surrogates (Cs) are shown escaped, never passed through.
_HIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_MARKUP: Final = re.compile(r"[A-Za-z0-9 *\[\]().,:/-]*")


class Mrkdwn:
    """A piece of Slack mrkdwn that is safe to send; made only by :func:`code` and
    :func:`markup` (and combined by :func:`line`)."""

    __slots__ = ("_text",)

    def __init__(self, text: str, *, _made_here: object = None) -> None:
        if _made_here is not _TOKEN:
            raise TypeError("Mrkdwn is made by mrkdwn.code() or mrkdwn.markup(), not directly")
        self._text = text

    @property
    def text(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"Mrkdwn({self._text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mrkdwn) and other._text == self._text

    def __hash__(self) -> int:
        return hash(self._text)


_TOKEN: Final = object()


def _shown(char: str) -> str:
    if char in _ENTITIES:
        return _ENTITIES[char]
    if unicodedata.category(char) in _HIDDEN_CATEGORIES:
        # \n, \t, \x1b, \u202e, \u2028 ...: visible, and nothing Slack interprets
        return char.encode("unicode_escape", "backslashreplace").decode("ascii")
    return char


def code(value: str | None) -> Mrkdwn:
    """A value from a record or a message, as inline code that nothing in it can escape."""
    if value is None or value == "":
        return Mrkdwn(MISSING, _made_here=_TOKEN)
    clipped = value if len(value) <= MAX_VALUE_CHARS else value[:MAX_VALUE_CHARS] + "…"
    inner = "".join(_shown(char) for char in clipped)
    return Mrkdwn(f"`{inner}`", _made_here=_TOKEN)


def markup(text: str) -> Mrkdwn:
    """trailguard's own words and formatting (never a value from a record)."""
    if not isinstance(text, str) or _MARKUP.fullmatch(text) is None:
        raise ValueError(f"not plain markup (values go through mrkdwn.code()): {text!r}")
    return Mrkdwn(text, _made_here=_TOKEN)


def line(*parts: Mrkdwn) -> Mrkdwn:
    """One line: the pieces separated by single spaces."""
    for part in parts:
        if not isinstance(part, Mrkdwn):
            raise TypeError(f"a line is made of Mrkdwn pieces, not {type(part).__name__}")
    return Mrkdwn(" ".join(part.text for part in parts), _made_here=_TOKEN)


def message(*lines: Mrkdwn) -> str:
    """The message text: the lines, one per line."""
    for part in lines:
        if not isinstance(part, Mrkdwn):
            raise TypeError(f"a message is made of Mrkdwn lines, not {type(part).__name__}")
    return "\n".join(part.text for part in lines)
