"""Reading a config file safely, and turning validation errors into key paths an operator can
act on (``rules[2].suppress[0].user_agent[1]: ...``)."""

from __future__ import annotations

import datetime
import difflib
import re
import types
import typing
from typing import Annotated, Any, Final

import msgspec
from msgspec import UnsetType

from trailguard.config.checks import InvalidValue
from trailguard.errors import ConfigError

#: How deeply a config may nest (arrays and inline tables in one another, parts of one dotted
#: key or table header, levels of the parsed document).  trailguard's own keys need at most 5
#: (``rules[0].suppress[0].actor_arn[0]``).  Deeper input is refused before tomllib sees it:
#: tomllib recurses per level (100,000 nested arrays end in RecursionError) and its cost grows
#: with the square of a dotted key's parts (100,000 parts exhaust memory).
MAX_CONFIG_DEPTH: Final = 16

_TOO_DEEP: Final = f"nested more than {MAX_CONFIG_DEPTH} levels deep: not a trailguard config"
# What the nesting check looks at: strings and comments (skipped whole), brackets, dots and the
# characters that end a key.  Strings are skipped with possessive patterns: linear, whatever
# is in them.
_TOML_TOKEN: Final = re.compile(r"""\"\"\"|'''|["'#\[\]{}.=,\n]""")
_STRING_REST: Final = {
    '"': re.compile(r'(?:[^"\\\n]++|\\.)*+"'),
    "'": re.compile(r"[^'\n]*+'"),
    '"""': re.compile(r'(?:[^"\\]++|\\.|"(?!""))*+"""(?:""?)?+', re.DOTALL),
    "'''": re.compile(r"(?:[^']++|'(?!''))*+'''(?:''?)?+"),
}


def _check_toml_nesting(text: str, file: str) -> None:
    """Refuse TOML nested deeper than :data:`MAX_CONFIG_DEPTH` before tomllib parses it.

    A lexical pass: outside strings and comments, it counts open ``[``/``{`` and the dots of
    one key (reset by ``=``, ``,``, brackets and line ends; a number has at most one dot).  It
    only refuses; anything it cannot follow (an unterminated string) is left to tomllib, whose
    error is then the one reported.
    """
    depth = 0
    dots = 0
    pos = 0
    while (found := _TOML_TOKEN.search(text, pos)) is not None:
        lexeme = found.group()
        pos = found.end()
        if lexeme in _STRING_REST:
            rest = _STRING_REST[lexeme].match(text, pos)
            if rest is None:
                return
            pos = rest.end()
        elif lexeme == "#":
            end = text.find("\n", pos)
            if end < 0:
                return
            pos = end
        elif lexeme == ".":
            dots += 1
            if dots >= MAX_CONFIG_DEPTH:
                line = text.count("\n", 0, found.start()) + 1
                raise ConfigError(
                    file,
                    f"line {line}: a dotted key of more than {MAX_CONFIG_DEPTH} parts: "
                    "not a trailguard config",
                )
        else:
            dots = 0
            if lexeme in "[{":
                depth += 1
                if depth > MAX_CONFIG_DEPTH:
                    line = text.count("\n", 0, found.start()) + 1
                    raise ConfigError(file, f"line {line}: {_TOO_DEEP}")
            elif lexeme in "]}":
                depth = max(0, depth - 1)


def _check_depth(raw: dict[str, Any], file: str) -> None:
    """The parsed document nests at most :data:`MAX_CONFIG_DEPTH` levels (without recursion:
    everything after this -- the credential check, msgspec, error messages -- may recurse)."""
    stack: list[tuple[object, str, int]] = [(raw, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, dict):
            items: list[tuple[str, object]] = [(_join(path, str(k)), v) for k, v in value.items()]
        elif isinstance(value, list):
            items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
        else:
            continue
        if depth >= MAX_CONFIG_DEPTH and items:
            raise ConfigError(file, _TOO_DEEP, path or None)
        stack.extend((item, sub, depth + 1) for sub, item in items)


_CREDENTIAL_KEYS: Final = frozenset(
    {
        "access_key",
        "access_key_id",
        "secret_key",
        "secret_access_key",
        "session_token",
        "security_token",
    }
)


def _reject_credentials(value: object, file: str, path: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            sub = _join(path, str(key))
            normal = str(key).lower().replace("-", "_").removeprefix("aws_")
            if normal in _CREDENTIAL_KEYS:
                raise ConfigError(
                    file,
                    "credentials do not belong in the config file: trailguard takes them from "
                    "the standard AWS environment and profiles through botocore (AWS_PROFILE, "
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, SSO, container or instance roles)",
                    sub,
                )
            _reject_credentials(item, file, sub)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _reject_credentials(item, file, f"{path}[{index}]")


_AT = re.compile(r"(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?", re.DOTALL)
_TOKEN = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")
_TYPE_NAMES: Final = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "a boolean",
    "array": "an array",
    "object": "a table",
    "datetime": "a date-time",
    "date": "a date",
    "time": "a time",
}


def _join(path: str, key: str) -> str:
    if not key:
        return path
    if not path or key.startswith("["):
        return f"{path}{key}"
    return f"{path}.{key}"


def _tokens(path: str) -> list[str | int]:
    return [name if name else int(index) for name, index in _TOKEN.findall(path)]


def _strip(tp: Any) -> Any:
    """Unwrap Annotated and drop None / UNSET from unions."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a not in (type(None), UnsetType)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _type_at(root: type[msgspec.Struct], path: str) -> Any:
    """The schema type at ``path`` (a key path without the file) under ``root``, or None."""
    tp: Any = root
    for token in _tokens(path):
        tp = _strip(tp)
        if isinstance(token, int):
            if typing.get_origin(tp) not in (tuple, list):
                return None
            tp = typing.get_args(tp)[0]
        else:
            if not (isinstance(tp, type) and issubclass(tp, msgspec.Struct)):
                return None
            hints = typing.get_type_hints(tp, include_extras=True)
            if token not in hints:
                return None
            tp = hints[token]
    return _strip(tp)


def _value_at(raw: Any, path: str) -> Any:
    value = raw
    for token in _tokens(path):
        try:
            value = value[token]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _show(value: Any) -> str:
    """A scalar TOML value as an operator would write it; containers are not shown."""
    if isinstance(value, dict | list):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_words(text: str) -> str:
    words = [_TYPE_NAMES.get(part, part) for part in text.split(" | ") if part != "null"]
    return " or ".join(words)


def _explain(
    exc: msgspec.ValidationError, raw: Any, root: type[msgspec.Struct]
) -> tuple[str | None, str]:
    """(key path, message) for a msgspec validation error in a document of type ``root``."""
    matched = _AT.fullmatch(str(exc))
    assert matched is not None  # the pattern matches any string
    message = matched["msg"]
    path = (matched["path"] or "").lstrip(".")
    cause = exc.__cause__
    if isinstance(cause, InvalidValue):
        return _join(path, cause.key) or None, cause.message

    if found := re.fullmatch(r"Object contains unknown field `(.*)`", message):
        key = found[1]
        struct = _type_at(root, path)
        allowed = list(msgspec.structs.fields(struct)) if isinstance(struct, type) else []
        names = [f.encode_name for f in allowed]
        hint = ""
        if close := difflib.get_close_matches(key, names, n=1):
            hint = f"; did you mean {close[0]!r}?"
        elif names:
            hint = f"; known keys here: {', '.join(names)}"
        if path == "aws":
            hint += " (other AWS settings come from the standard AWS environment and profiles)"
        return _join(path, key), f"unknown key {key!r}{hint}"

    if found := re.fullmatch(r"Object missing required field `(.*)`", message):
        return _join(path, found[1]), "required key is missing"

    if found := re.fullmatch(r"Invalid enum value (.*)", message):
        literal = _type_at(root, path)
        allowed_values = ", ".join(repr(a) for a in typing.get_args(literal))
        return path or None, f"unknown value {found[1]}; expected one of: {allowed_values}"

    if found := re.fullmatch(r"Expected `([^`]*)`, got `([^`]*)`", message):
        got = _show(_value_at(raw, path))
        shown = f" {got}" if got else ""
        return path or None, f"expected {_type_words(found[1])}, got {_type_words(found[2])}{shown}"

    if found := re.fullmatch(r"Expected `([^`]*)` (.*)", message):
        got = _show(_value_at(raw, path))
        return path or None, f"expected {_type_words(found[1])} {found[2]}, got {got}"

    return path or None, message
