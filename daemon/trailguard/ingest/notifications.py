"""Parse one SQS message body into what it asks trailguard to do.

Pure: no I/O, no asyncio, no AWS SDK.  :func:`parse_body` never raises; a body it does not
understand comes back as ``kind="unknown"`` with a short ``reason`` that is safe to log (it quotes
at most a few characters of the body, through ``repr`` so control characters cannot forge log
lines).

Shapes understood (``ParsedBody.format``):

``s3``
    An S3 event notification, ``{"Records": [{"eventSource": "aws:s3", "s3": {...}}]}``.  Object
    keys are form-encoded (``red flower.jpg`` arrives as ``red+flower.jpg``, ``+`` as ``%2B``) and
    are decoded with :func:`urllib.parse.unquote_plus`.  Only ``ObjectCreated:*`` records name
    objects; other records (``ObjectRemoved:*`` ...) are validated and ignored.
``cloudtrail-sns``
    CloudTrail's own SNS notification, ``{"s3Bucket": ..., "s3ObjectKey": [...]}``.  Keys are
    *not* encoded and are taken as they are.
``sns+s3``, ``sns+cloudtrail-sns``, ``sns+s3-test-event``
    The same inside an SNS envelope (``{"Type": "Notification", "TopicArn": ..., "Message":
    "<JSON text>"}``).  With SNS raw message delivery on, the queue receives the inner message
    itself and the plain formats above apply.
``eventbridge-s3``
    An EventBridge event from ``aws.s3``.  ``Object Created`` names one object whose key is *not*
    encoded (S3's EventBridge events carry the key as stored, unlike its notifications); the
    other S3 detail-types (``Object Deleted`` ...) are understood and name nothing.
``eventbridge-api-call``
    An EventBridge ``AWS API Call via CloudTrail`` event: ``detail`` is one CloudTrail record,
    decoded into :class:`~trailguard.detect.record.Record` (``kind="api_call"``).
``s3-test-event``
    ``{"Service": "Amazon S3", "Event": "s3:TestEvent", ...}``, sent by S3 when a notification
    configuration is written (``kind="test_event"``: acknowledge and ignore).

Strictness: a body must have exactly one of the top-level fields that mark these shapes (a body
with both ``Records`` and ``s3Bucket`` is rejected as ambiguous, not read twice), every field
trailguard reads must have the documented type, and SNS envelopes are unwrapped once and only
around S3 or CloudTrail notifications.  Fields trailguard does not read are ignored.  When a body
is rejected, ``format`` still names the shape it was recognised as (``"unknown"`` when none).
A body naming a key CloudTrail could not have written -- over S3's 1024 bytes, with a control
character or a ``.``/``..`` path segment (:func:`~trailguard.detect.keys.unsafe_key`) -- is
rejected whole: no :class:`ObjectRef` ever holds such a key.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal
from urllib.parse import unquote_plus

import msgspec

from trailguard.detect.frame import MAX_DECODE_DEPTH, depth_of
from trailguard.detect.keys import unsafe_key
from trailguard.detect.record import Record
from trailguard.detect.records import utf8_ok

__all__ = ["Kind", "ObjectRef", "ParsedBody", "parse_body"]

Kind = Literal["objects", "api_call", "test_event", "unknown"]


class ObjectRef(msgspec.Struct, frozen=True):
    """One S3 object a notification names; ``key`` is the real key, already decoded."""

    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None


class ParsedBody(msgspec.Struct, frozen=True):
    """What one message body asks for.

    ``kind``: ``"objects"`` (fetch ``objects``; may be empty when the body only reports events
    that name no new object, e.g. ``ObjectRemoved``), ``"api_call"`` (``record`` goes straight to
    the rules), ``"test_event"`` (acknowledge, nothing to do) or ``"unknown"`` (``reason`` says
    why; leave the message to the redrive policy).
    """

    kind: Kind
    format: str
    objects: tuple[ObjectRef, ...] = ()
    record: Record | None = None
    reason: str | None = None


# S3 bucket names, legacy us-east-1 names included (upper case, '_', up to 255 characters).
_BUCKET_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,255}")
_MAX_KEY_BYTES: Final = 1024  # S3's limit on a key, in UTF-8 bytes
_MAX_REASON: Final = 200

_API_CALL: Final = "AWS API Call via CloudTrail"
_OBJECT_CREATED: Final = "Object Created"
# S3's other EventBridge detail-types: understood, but they name no new object.
_S3_OTHER_DETAIL_TYPES: Final = frozenset(
    {
        "Object Deleted",
        "Object Restore Initiated",
        "Object Restore Completed",
        "Object Restore Expired",
        "Object Storage Class Changed",
        "Object Access Tier Changed",
        "Object ACL Updated",
        "Object Tags Added",
        "Object Tags Deleted",
    }
)

# Top-level fields that mark each shape; a body must show the marks of exactly one.
_MARKS: Final[tuple[tuple[str, frozenset[str]], ...]] = (
    ("sns", frozenset({"Message", "TopicArn"})),
    ("s3", frozenset({"Records"})),
    ("cloudtrail-sns", frozenset({"s3Bucket", "s3ObjectKey"})),
    ("eventbridge", frozenset({"detail-type", "detail"})),
    ("s3-test-event", frozenset({"Event"})),
)
_SNS_INNER: Final = frozenset({"s3", "cloudtrail-sns", "s3-test-event"})


class _Rejected(Exception):
    """Internal: the body is not something trailguard understands."""

    def __init__(self, reason: str, format: str = "unknown") -> None:
        super().__init__(reason)
        self.reason = reason
        self.format = format


def parse_body(body: str | bytes) -> ParsedBody:
    """Parse one SQS message body.  Never raises: anything unexpected is ``kind="unknown"``."""
    try:
        return _parse(body)
    except _Rejected as exc:
        return ParsedBody(kind="unknown", format=exc.format, reason=_clip(exc.reason))
    except Exception as exc:  # noqa: BLE001 - the promise is "never raises"; report, don't crash
        return ParsedBody(
            kind="unknown", format="unknown", reason=f"parser error ({type(exc).__name__})"
        )


# --------------------------------------------------------------------------- dispatch


def _parse(body: str | bytes) -> ParsedBody:
    if not isinstance(body, str | bytes | bytearray | memoryview):
        raise _Rejected(f"body is a {type(body).__name__}, not text")
    doc = _decode_json(body, "body")
    shape = _shape_of(doc, "body")
    if shape != "sns":
        return _parse_shape(shape, doc, prefix="")

    message = _sns_message(doc)
    inner = _decode_json(message, "SNS Message", format="sns")
    inner_shape = _shape_of(inner, "SNS Message", format="sns")
    if inner_shape not in _SNS_INNER:
        raise _Rejected(
            f"SNS Message is a {inner_shape} body, not an S3 or CloudTrail notification", "sns"
        )
    return _parse_shape(inner_shape, inner, prefix="sns+")


def _decode_json(text: str | bytes, what: str, format: str = "unknown") -> dict[str, Any]:
    if not (text.strip() if isinstance(text, str) else bytes(text).strip()):
        raise _Rejected(f"{what} is empty", format)
    # trailguard's own checks first, so that the verdict never depends on what a JSON library
    # tolerates: UTF-8 (msgspec does not look inside strings it skips), and a nesting depth
    # decided here rather than by a recursion limit that depends on the caller's stack
    try:
        raw = text.encode() if isinstance(text, str) else bytes(text)
    except UnicodeEncodeError as exc:  # a str holding a lone surrogate
        raise _Rejected(f"{what} is not valid UTF-8", format) from exc
    if not utf8_ok(raw):
        raise _Rejected(f"{what} is not valid UTF-8", format)
    if depth_of(raw) > MAX_DECODE_DEPTH:
        raise _Rejected(
            f"{what} is nested too deeply (more than {MAX_DECODE_DEPTH} levels)", format
        )
    try:
        doc = msgspec.json.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise _Rejected(f"{what} is not valid JSON: {exc}", format) from exc
    except RecursionError as exc:  # pragma: no cover - the depth was checked above
        raise _Rejected(f"{what} is nested too deeply", format) from exc
    if not isinstance(doc, dict):
        raise _Rejected(f"{what} is a JSON {_json_type(doc)}, not an object", format)
    return doc


def _shape_of(doc: dict[str, Any], what: str, format: str = "unknown") -> str:
    shapes = [name for name, marks in _MARKS if not marks.isdisjoint(doc)]
    if not shapes:
        raise _Rejected(f"{what} has none of the fields of a known notification", format)
    if len(shapes) > 1:
        raise _Rejected(f"{what} is ambiguous: it has fields of {' and '.join(shapes)}", format)
    return shapes[0]


def _parse_shape(shape: str, doc: dict[str, Any], prefix: str) -> ParsedBody:
    if shape == "s3":
        return _s3_notification(doc, prefix + "s3")
    if shape == "cloudtrail-sns":
        return _cloudtrail_sns(doc, prefix + "cloudtrail-sns")
    if shape == "s3-test-event":
        return _s3_test_event(doc, prefix + "s3-test-event")
    if shape == "eventbridge":
        return _eventbridge(doc)
    raise AssertionError(f"unhandled shape {shape}")  # pragma: no cover


# --------------------------------------------------------------------------- shapes


def _sns_message(doc: dict[str, Any]) -> str:
    if doc.get("Type") != "Notification":
        raise _Rejected(
            f"SNS envelope Type is {_brief(doc.get('Type'))}, not 'Notification'", "sns"
        )
    topic = doc.get("TopicArn")
    if not isinstance(topic, str) or not topic.startswith("arn:"):
        raise _Rejected("SNS envelope has no TopicArn", "sns")
    message = doc.get("Message")
    if not isinstance(message, str):
        raise _Rejected("SNS envelope Message is not a string", "sns")
    return message


def _s3_notification(doc: dict[str, Any], fmt: str) -> ParsedBody:
    records = doc["Records"]
    if not isinstance(records, list):
        raise _Rejected("Records is not a list", fmt)
    if not records:
        raise _Rejected("Records is empty", fmt)
    refs: list[ObjectRef] = []
    for i, rec in enumerate(records):
        where = f"Records[{i}]"
        if not isinstance(rec, dict):
            raise _Rejected(f"{where} is not an object", fmt)
        source = rec.get("eventSource")
        if source != "aws:s3":
            raise _Rejected(f"{where}.eventSource is {_brief(source)}, not 'aws:s3'", fmt)
        name = rec.get("eventName")
        if not isinstance(name, str):
            raise _Rejected(f"{where}.eventName is not a string", fmt)
        s3 = _object(rec, "s3", where, fmt)
        bucket = _bucket(_object(s3, "bucket", f"{where}.s3", fmt), f"{where}.s3.bucket", fmt)
        obj = _object(s3, "object", f"{where}.s3", fmt)
        key = _key(
            _string(obj, "key", f"{where}.s3.object", fmt), f"{where}.s3.object.key", fmt, True
        )
        size = _size(obj, f"{where}.s3.object", fmt)
        etag = _optional_string(obj, "eTag", f"{where}.s3.object", fmt)
        # AWS writes "ObjectCreated:Put"; some S3 look-alikes keep the "s3:" prefix.
        if name.removeprefix("s3:").startswith("ObjectCreated:"):
            refs.append(ObjectRef(bucket=bucket, key=key, size=size, etag=etag))
    return ParsedBody(kind="objects", format=fmt, objects=_unique(refs))


def _cloudtrail_sns(doc: dict[str, Any], fmt: str) -> ParsedBody:
    bucket = _bucket(doc, "body", fmt, field="s3Bucket")
    keys = doc.get("s3ObjectKey")
    if not isinstance(keys, list):
        raise _Rejected("s3ObjectKey is not a list", fmt)
    if not keys:
        raise _Rejected("s3ObjectKey is empty", fmt)
    refs: list[ObjectRef] = []
    for i, key in enumerate(keys):
        if not isinstance(key, str):
            raise _Rejected(f"s3ObjectKey[{i}] is not a string", fmt)
        refs.append(ObjectRef(bucket=bucket, key=_key(key, f"s3ObjectKey[{i}]", fmt, False)))
    return ParsedBody(kind="objects", format=fmt, objects=_unique(refs))


def _s3_test_event(doc: dict[str, Any], fmt: str) -> ParsedBody:
    event, service = doc.get("Event"), doc.get("Service")
    if event != "s3:TestEvent" or service != "Amazon S3":
        raise _Rejected(
            f"Event {_brief(event)} from {_brief(service)} is not an S3 test event", fmt
        )
    return ParsedBody(kind="test_event", format=fmt)


def _eventbridge(doc: dict[str, Any]) -> ParsedBody:
    detail_type = doc.get("detail-type")
    source = doc.get("source")
    if not isinstance(detail_type, str):
        raise _Rejected("EventBridge detail-type is not a string", "eventbridge")
    if not isinstance(source, str):
        raise _Rejected("EventBridge source is not a string", "eventbridge")

    if detail_type == _API_CALL:
        fmt = "eventbridge-api-call"
        # Only AWS services may put events with an "aws." source on a bus.
        if not source.startswith("aws."):
            raise _Rejected(f"API-call event from source {_brief(source)}, not an AWS service", fmt)
        detail = doc.get("detail")
        if not isinstance(detail, dict):
            raise _Rejected("detail is not an object", fmt)
        try:
            record = msgspec.convert(detail, Record)
        except msgspec.ValidationError as exc:
            raise _Rejected(f"detail is not a CloudTrail record: {exc}", fmt) from exc
        return ParsedBody(kind="api_call", format=fmt, record=record)

    if source != "aws.s3" or (
        detail_type != _OBJECT_CREATED and detail_type not in _S3_OTHER_DETAIL_TYPES
    ):
        raise _Rejected(
            f"unsupported EventBridge event {_brief(detail_type)} from {_brief(source)}",
            "eventbridge",
        )
    fmt = "eventbridge-s3"
    detail = doc.get("detail")
    if not isinstance(detail, dict):
        raise _Rejected("detail is not an object", fmt)
    if detail_type != _OBJECT_CREATED:
        return ParsedBody(kind="objects", format=fmt)
    bucket = _bucket(_object(detail, "bucket", "detail", fmt), "detail.bucket", fmt)
    obj = _object(detail, "object", "detail", fmt)
    key = _key(_string(obj, "key", "detail.object", fmt), "detail.object.key", fmt, False)
    size = _size(obj, "detail.object", fmt)
    # AWS documents "etag"; moto (and older samples) write "eTag".
    etag = _optional_string(obj, "etag", "detail.object", fmt)
    if etag is None:
        etag = _optional_string(obj, "eTag", "detail.object", fmt)
    ref = ObjectRef(bucket=bucket, key=key, size=size, etag=etag)
    return ParsedBody(kind="objects", format=fmt, objects=(ref,))


# --------------------------------------------------------------------------- fields


def _object(parent: dict[str, Any], name: str, where: str, fmt: str) -> dict[str, Any]:
    value = parent.get(name)
    if not isinstance(value, dict):
        raise _Rejected(f"{where}.{name} is not an object", fmt)
    return value


def _string(parent: dict[str, Any], name: str, where: str, fmt: str) -> str:
    value = parent.get(name)
    if not isinstance(value, str):
        raise _Rejected(f"{where}.{name} is not a string", fmt)
    return value


def _optional_string(parent: dict[str, Any], name: str, where: str, fmt: str) -> str | None:
    value = parent.get(name)
    if value is None or isinstance(value, str):
        return value
    raise _Rejected(f"{where}.{name} is not a string", fmt)


def _size(parent: dict[str, Any], where: str, fmt: str) -> int | None:
    value = parent.get("size")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Rejected(f"{where}.size is not a non-negative integer", fmt)
    return value


def _bucket(parent: dict[str, Any], where: str, fmt: str, field: str = "name") -> str:
    name = parent.get(field)
    if not isinstance(name, str):
        raise _Rejected(f"{where}.{field} is not a string", fmt)
    if not _BUCKET_RE.fullmatch(name):
        raise _Rejected(f"{where}.{field} {_brief(name)} is not a bucket name", fmt)
    return name


def _key(raw: str, where: str, fmt: str, encoded: bool) -> str:
    if encoded:
        try:
            key = unquote_plus(raw, errors="strict")
        except UnicodeDecodeError as exc:
            raise _Rejected(f"{where} is not percent-encoded UTF-8", fmt) from exc
    else:
        key = raw
    if not key:
        raise _Rejected(f"{where} is empty", fmt)
    if len(key.encode("utf-8")) > _MAX_KEY_BYTES:
        raise _Rejected(f"{where} is longer than {_MAX_KEY_BYTES} bytes", fmt)
    if (unsafe := unsafe_key(key)) is not None:
        raise _Rejected(f"{where} {unsafe}", fmt)
    return key


# --------------------------------------------------------------------------- helpers


def _unique(refs: list[ObjectRef]) -> tuple[ObjectRef, ...]:
    """The refs in order, each (bucket, key) once: the first mention wins."""
    seen: set[tuple[str, str]] = set()
    out: list[ObjectRef] = []
    for ref in refs:
        if (ref.bucket, ref.key) not in seen:
            seen.add((ref.bucket, ref.key))
            out.append(ref)
    return tuple(out)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _brief(value: object) -> str:
    """A short, log-safe rendering of a value taken from a body."""
    if isinstance(value, str):
        return repr(value[:24] + "…" if len(value) > 24 else value)
    if value is None:
        return "missing"
    return f"a {_json_type(value)}"


def _clip(reason: str) -> str:
    return reason if len(reason) <= _MAX_REASON else reason[: _MAX_REASON - 1] + "…"
