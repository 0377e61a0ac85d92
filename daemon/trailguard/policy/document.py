"""Parsing a policy document's text into typed statements, or saying exactly why it cannot be.

Input is the text CloudTrail recorded (``requestParameters.policyDocument``) or IAM returned
(``GetPolicyVersion``: URL-encoded per RFC 3986).  :func:`parse_document` accepts both, never
raises, and returns either a :class:`Document` or a :class:`Malformed` reason.

The grammar is IAM's, read strictly where a lenient reading could hide something:

* top level: ``Version`` (``2012-10-17``, ``2008-10-17`` or absent: policy variables are on only
  for ``2012-10-17``), ``Id``, ``Statement`` (one object or a list of them); nothing else;
* statement: ``Sid``, ``Effect`` (``Allow``/``Deny``, exactly), one of ``Action``/``NotAction``,
  one of ``Resource``/``NotResource``, optional ``Condition``, and ``Principal``/``NotPrincipal``
  (kept as text: an identity policy should not have them, the engine treats them as opaque);
* ``Condition``: operator -> key -> value or list of values (strings, numbers, booleans);
* a JSON object with the same key twice is malformed (which one would IAM read?), and so is a
  document over the :class:`~trailguard.policy.limits.Limits`.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any, Literal

import msgspec

from trailguard.policy.limits import Limits

__all__ = ["Clause", "Document", "Malformed", "Statement", "parse_document"]

Effect = Literal["Allow", "Deny"]
_STATEMENT_KEYS = frozenset(
    {
        "Sid",
        "Effect",
        "Principal",
        "NotPrincipal",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
    }
)
_TOP_KEYS = frozenset({"Version", "Id", "Statement"})
_VERSIONS = frozenset({"2012-10-17", "2008-10-17"})


class Clause(msgspec.Struct, frozen=True, kw_only=True):
    """One operator applied to one key: ``"StringLike": {"s3:prefix": ["a/*", "b/*"]}``."""

    #: the operator as written, e.g. ``ForAnyValue:StringNotLikeIfExists``
    operator: str
    #: the condition key as written; ``key`` is its lower-case form (keys ignore case)
    key_text: str
    key: str
    values: tuple[str, ...]


class Statement(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    sid: str | None
    effect: Effect
    actions: tuple[str, ...]
    not_action: bool
    resources: tuple[str, ...]
    not_resource: bool
    #: canonical JSON of Principal/NotPrincipal ("NotPrincipal:" prefixed), None when absent
    principal: str | None
    conditions: tuple[Clause, ...]

    @property
    def label(self) -> str:
        """How a report names the statement: its Sid, else its position."""
        return self.sid if self.sid else f"#{self.index}"


class Document(msgspec.Struct, frozen=True, kw_only=True):
    version: str | None
    statements: tuple[Statement, ...]

    @property
    def variables(self) -> bool:
        """Whether ``${...}`` is a policy variable (Version 2012-10-17) or plain text."""
        return self.version == "2012-10-17"


class Malformed(msgspec.Struct, frozen=True, kw_only=True):
    reason: str


class _Bad(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Bad(f"key {k!r} appears twice in one object")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise _Bad(f"{name} is not JSON")


class _Number(str):
    """A JSON number kept as its text (condition values compare as text or parsed later)."""


def decode_text(text: str | bytes, limits: Limits) -> str:
    """The JSON text: bytes as UTF-8, URL-decoded when it is URL-encoded."""
    if isinstance(text, bytes | bytearray):
        if len(text) > limits.max_document_chars:
            raise _Bad(f"longer than {limits.max_document_chars} characters")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Bad("not UTF-8") from exc
    if not isinstance(text, str):
        raise _Bad(f"a document is text, not {type(text).__name__}")
    if len(text) > limits.max_document_chars:
        raise _Bad(f"longer than {limits.max_document_chars} characters")
    stripped = text.strip()
    if stripped[:3].upper() == "%7B":
        stripped = urllib.parse.unquote(stripped, errors="strict").strip()
    if not stripped.startswith("{"):
        raise _Bad("not a JSON object (nor a URL-encoded one)")
    return stripped


def parse_document(text: str | bytes, limits: Limits | None = None) -> Document | Malformed:
    """Parse and validate; a :class:`Malformed` says what is wrong, nothing raises."""
    limits = limits or Limits()
    try:
        raw = json.loads(
            decode_text(text, limits),
            object_pairs_hook=_no_duplicates,
            parse_int=_Number,
            parse_float=_Number,
            parse_constant=_no_constant,
        )
        return _document(raw, limits)
    except _Bad as exc:
        return Malformed(reason=str(exc))
    except RecursionError:
        return Malformed(reason="nested too deeply")
    except (ValueError, UnicodeDecodeError) as exc:
        return Malformed(reason=f"not JSON: {exc}"[:200])


def _document(raw: Any, limits: Limits) -> Document:
    if not isinstance(raw, dict):
        raise _Bad("the document is not a JSON object")
    extra = set(raw) - _TOP_KEYS
    if extra:
        raise _Bad(f"unknown top-level element {sorted(extra)[0]!r}")
    version = raw.get("Version")
    if version is not None and (not isinstance(version, str) or version not in _VERSIONS):
        raise _Bad(f"unknown Version {version!r}"[:200])
    if "Id" in raw and not isinstance(raw["Id"], str):
        raise _Bad("Id is not a string")
    if "Statement" not in raw:
        raise _Bad("no Statement element")
    body = raw["Statement"]
    items = body if isinstance(body, list) else [body]
    if len(items) > limits.max_statements:
        raise _Bad(f"more than {limits.max_statements} statements")
    counter = [0]
    statements = tuple(_statement(i, item, limits, counter) for i, item in enumerate(items))
    return Document(version=version, statements=statements)


def _strings(value: Any, where: str, limits: Limits, counter: list[int]) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if not isinstance(item, str) or isinstance(item, _Number):
            raise _Bad(f"{where}: {type(item).__name__} where a string belongs")
        out.append(_bounded(item, where, limits, counter))
    return tuple(out)


def _bounded(text: str, where: str, limits: Limits, counter: list[int]) -> str:
    if len(text) > limits.max_pattern_chars:
        raise _Bad(f"{where}: a value longer than {limits.max_pattern_chars} characters")
    counter[0] += 1
    if counter[0] > limits.max_values:
        raise _Bad(f"more than {limits.max_values} values in the document")
    return str(text)


def _one_of(stmt: dict[str, Any], a: str, b: str, where: str) -> tuple[Any, bool]:
    if (a in stmt) == (b in stmt):
        raise _Bad(f"{where}: needs exactly one of {a} and {b}")
    return (stmt[a], False) if a in stmt else (stmt[b], True)


def _statement(index: int, stmt: Any, limits: Limits, counter: list[int]) -> Statement:
    where = f"statement {index}"
    if not isinstance(stmt, dict):
        raise _Bad(f"{where} is not a JSON object")
    extra = set(stmt) - _STATEMENT_KEYS
    if extra:
        raise _Bad(f"{where}: unknown element {sorted(extra)[0]!r}"[:200])
    sid = stmt.get("Sid")
    if sid is not None and (not isinstance(sid, str) or isinstance(sid, _Number)):
        raise _Bad(f"{where}: Sid is not a string")
    effect = stmt.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise _Bad(f"{where}: Effect must be Allow or Deny")
    actions, not_action = _one_of(stmt, "Action", "NotAction", where)
    resources, not_resource = _one_of(stmt, "Resource", "NotResource", where)
    principal: str | None = None
    if "Principal" in stmt and "NotPrincipal" in stmt:
        raise _Bad(f"{where}: both Principal and NotPrincipal")
    for name in ("Principal", "NotPrincipal"):
        if name in stmt:
            text = json.dumps(stmt[name], sort_keys=True, separators=(",", ":"))
            principal = ("NotPrincipal:" if name == "NotPrincipal" else "") + text
            _bounded(text, where, limits, counter)
    conditions = _conditions(stmt.get("Condition"), where, limits, counter)
    return Statement(
        index=index,
        sid=sid if isinstance(sid, str) else None,
        effect=effect,
        actions=_strings(actions, f"{where} Action", limits, counter),
        not_action=not_action,
        resources=_strings(resources, f"{where} Resource", limits, counter),
        not_resource=not_resource,
        principal=principal,
        conditions=conditions,
    )


def _condition_value(item: Any, where: str) -> str:
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, str):
        return str(item)
    raise _Bad(f"{where}: a condition value is a {type(item).__name__}")


def _conditions(block: Any, where: str, limits: Limits, counter: list[int]) -> tuple[Clause, ...]:
    if block is None:
        return ()
    if not isinstance(block, dict):
        raise _Bad(f"{where}: Condition is not a JSON object")
    out: list[Clause] = []
    for operator, keys in block.items():
        if not isinstance(keys, dict):
            raise _Bad(f"{where}: Condition {operator!r} does not map keys to values"[:200])
        _bounded(operator, where, limits, counter)
        for key, value in keys.items():
            _bounded(key, where, limits, counter)
            items = value if isinstance(value, list) else [value]
            values = tuple(
                _bounded(_condition_value(v, where), where, limits, counter) for v in items
            )
            out.append(Clause(operator=operator, key_text=key, key=key.lower(), values=values))
            if len(out) > limits.max_clauses:
                raise _Bad(f"{where}: more than {limits.max_clauses} condition clauses")
    return tuple(out)
