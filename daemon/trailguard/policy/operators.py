"""The catalogue of IAM condition operators: what one operator name means to the engine.

:func:`parse_operator` reads ``[ForAllValues:|ForAnyValue:]Base[IfExists]`` (operator names
compare without case) into an :class:`Operator`, or None for a name this engine does not know
(such a clause is opaque to the symbolic side and unknown to the concrete one).
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

__all__ = ["Family", "Operator", "parse_operator"]

Family = Literal["string", "arn", "numeric", "date", "bool", "ip", "binary", "null"]
Qualifier = Literal["ForAllValues", "ForAnyValue"]

# canonical name -> (family, negated, positive counterpart)
_BASES: Final[dict[str, tuple[Family, bool, str]]] = {
    "StringEquals": ("string", False, "StringEquals"),
    "StringNotEquals": ("string", True, "StringEquals"),
    "StringEqualsIgnoreCase": ("string", False, "StringEqualsIgnoreCase"),
    "StringNotEqualsIgnoreCase": ("string", True, "StringEqualsIgnoreCase"),
    "StringLike": ("string", False, "StringLike"),
    "StringNotLike": ("string", True, "StringLike"),
    "ArnEquals": ("arn", False, "ArnLike"),
    "ArnLike": ("arn", False, "ArnLike"),
    "ArnNotEquals": ("arn", True, "ArnLike"),
    "ArnNotLike": ("arn", True, "ArnLike"),
    "NumericEquals": ("numeric", False, "NumericEquals"),
    "NumericNotEquals": ("numeric", True, "NumericEquals"),
    "NumericLessThan": ("numeric", False, "NumericLessThan"),
    "NumericLessThanEquals": ("numeric", False, "NumericLessThanEquals"),
    "NumericGreaterThan": ("numeric", False, "NumericGreaterThan"),
    "NumericGreaterThanEquals": ("numeric", False, "NumericGreaterThanEquals"),
    "DateEquals": ("date", False, "DateEquals"),
    "DateNotEquals": ("date", True, "DateEquals"),
    "DateLessThan": ("date", False, "DateLessThan"),
    "DateLessThanEquals": ("date", False, "DateLessThanEquals"),
    "DateGreaterThan": ("date", False, "DateGreaterThan"),
    "DateGreaterThanEquals": ("date", False, "DateGreaterThanEquals"),
    "Bool": ("bool", False, "Bool"),
    "IpAddress": ("ip", False, "IpAddress"),
    "NotIpAddress": ("ip", True, "IpAddress"),
    "BinaryEquals": ("binary", False, "BinaryEquals"),
    "Null": ("null", False, "Null"),
}
_BY_LOWER: Final = {name.lower(): name for name in _BASES}
_QUALIFIERS: Final[dict[str, Qualifier]] = {
    "forallvalues": "ForAllValues",
    "foranyvalue": "ForAnyValue",
}


class Operator(msgspec.Struct, frozen=True, kw_only=True):
    qualifier: Qualifier | None
    #: canonical base name, e.g. StringNotLike
    base: str
    family: Family
    #: a "Not" operator: true where the positive one is false, including when the key is absent
    negated: bool
    #: the positive operator whose value test this one negates (ArnEquals -> ArnLike)
    positive: str
    if_exists: bool

    @property
    def wildcards(self) -> bool:
        return self.positive in ("StringLike", "ArnLike")

    @property
    def variables(self) -> bool:
        """Policy variables are substituted in string and ARN values only."""
        return self.family in ("string", "arn")

    @property
    def name(self) -> str:
        prefix = f"{self.qualifier}:" if self.qualifier else ""
        return prefix + self.base + ("IfExists" if self.if_exists else "")


def parse_operator(text: str) -> Operator | None:
    qualifier: Qualifier | None = None
    head, sep, rest = text.partition(":")
    if sep:
        qualifier = _QUALIFIERS.get(head.lower())
        if qualifier is None:
            return None
        text = rest
    low = text.lower()
    if_exists = low.endswith("ifexists") and low != "ifexists"
    if if_exists:
        low = low[: -len("ifexists")]
    base = _BY_LOWER.get(low)
    if base is None:
        return None
    family, negated, positive = _BASES[base]
    if family == "null" and (if_exists or qualifier):
        return None
    return Operator(
        qualifier=qualifier,
        base=base,
        family=family,
        negated=negated,
        positive=positive,
        if_exists=if_exists,
    )
