"""facts_from_record: every IAM policy event, failures, omitted/truncated fields, crafted input."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.factories import ACCOUNT, REMOVALS, make_record
from trailguard.detect.policy_facts import (
    HISTORY_EVENT_NAMES,
    PolicyFact,
    event_time_key,
    facts_from_record,
    is_json_object_text,
    is_policy_arn,
    managed_policy_arn,
    path_from_policy_arn,
)
from trailguard.detect.record import Record

# As CloudTrail writes it: the text exactly as submitted, whitespace and all.
DOC = (
    '{\n    "Version": "2012-10-17",\n    "Statement": [\n        {\n'
    '            "Effect": "Deny",\n            "Action": "s3:*",\n'
    '            "Resource": "*"\n        }\n    ]\n}'
)
DOC2 = (
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:Describe*",'
    '"Resource":"*"}]}'
)
POLICY_ARN = f"arn:aws:iam::{ACCOUNT}:policy/team/Guardrail"
TIME = "2026-11-01T12:00:00Z"


def decode(record: dict[str, Any]) -> Record:
    """The way the daemon builds a Record: msgspec decoding of the JSON text."""
    return msgspec.json.decode(json.dumps(record).encode(), type=Record)


def facts(event_name: str, params: Any, **extra: Any) -> list[PolicyFact]:
    extra.setdefault("event_id", "evt-1")
    return facts_from_record(decode(make_record(event_name, params, **extra)))


def one(event_name: str, params: Any, **extra: Any) -> PolicyFact:
    """The one fact of the record; its eventName is checked here, so that :func:`expected`
    can leave it out."""
    found = facts(event_name, params, **extra)
    assert len(found) == 1, found
    assert found[0].event_name == event_name
    return msgspec.structs.replace(found[0], event_name=None)


def expected(**fields: Any) -> PolicyFact:
    base: dict[str, Any] = {
        "op": "put",
        "account_id": ACCOUNT,
        "principal_kind": None,
        "principal_name": None,
        "policy_name": None,
        "policy_arn": None,
        "version_id": None,
        "document": None,
        "path": None,
        "set_as_default": None,
        "event_id": "evt-1",
        "event_time": TIME,
    }
    base.update(fields)
    return PolicyFact(**base)


# --------------------------------------------------------------------------------------------
# Every event type
# --------------------------------------------------------------------------------------------


def test_event_names_cover_the_puts_and_all_ten_removals() -> None:
    puts = {
        "PutUserPolicy",
        "PutRolePolicy",
        "PutGroupPolicy",
        "CreatePolicy",
        "CreatePolicyVersion",
        "SetDefaultPolicyVersion",
        "AttachUserPolicy",
        "AttachRolePolicy",
        "AttachGroupPolicy",
        "PutUserPermissionsBoundary",
        "PutRolePermissionsBoundary",
    }
    assert puts <= HISTORY_EVENT_NAMES
    assert set(REMOVALS) <= HISTORY_EVENT_NAMES
    assert HISTORY_EVENT_NAMES - puts - set(REMOVALS) == {"CreateUser", "CreateRole"}


@pytest.mark.parametrize(
    ("event_name", "kind", "param"),
    [
        ("PutUserPolicy", "user", "userName"),
        ("PutRolePolicy", "role", "roleName"),
        ("PutGroupPolicy", "group", "groupName"),
    ],
)
def test_put_inline_policy_keeps_the_document_text_exactly(
    event_name: str, kind: str, param: str
) -> None:
    fact = one(event_name, {param: "app", "policyName": "deny-s3", "policyDocument": DOC})
    assert fact == expected(
        kind="inline_policy",
        principal_kind=kind,
        principal_name="app",
        policy_name="deny-s3",
        document=DOC,
    )


@pytest.mark.parametrize(
    ("event_name", "kind", "param"),
    [
        ("DeleteUserPolicy", "user", "userName"),
        ("DeleteRolePolicy", "role", "roleName"),
        ("DeleteGroupPolicy", "group", "groupName"),
    ],
)
def test_delete_inline_policy(event_name: str, kind: str, param: str) -> None:
    fact = one(event_name, {param: "app", "policyName": "deny-s3"})
    assert fact == expected(
        kind="inline_policy",
        op="delete",
        principal_kind=kind,
        principal_name="app",
        policy_name="deny-s3",
    )


@pytest.mark.parametrize(
    ("event_name", "op", "kind", "param"),
    [
        ("AttachUserPolicy", "put", "user", "userName"),
        ("AttachRolePolicy", "put", "role", "roleName"),
        ("AttachGroupPolicy", "put", "group", "groupName"),
        ("DetachUserPolicy", "delete", "user", "userName"),
        ("DetachRolePolicy", "delete", "role", "roleName"),
        ("DetachGroupPolicy", "delete", "group", "groupName"),
    ],
)
def test_attach_and_detach(event_name: str, op: str, kind: str, param: str) -> None:
    arn = "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3"
    fact = one(event_name, {param: "bob", "policyArn": arn})
    assert fact == expected(
        kind="attachment",
        op=op,
        principal_kind=kind,
        principal_name="bob",
        policy_name="AWSCompromisedKeyQuarantineV3",
        policy_arn=arn,
    )


@pytest.mark.parametrize(
    ("event_name", "kind", "param"),
    [
        ("PutUserPermissionsBoundary", "user", "userName"),
        ("PutRolePermissionsBoundary", "role", "roleName"),
        ("CreateUser", "user", "userName"),
        ("CreateRole", "role", "roleName"),
    ],
)
def test_boundary_set(event_name: str, kind: str, param: str) -> None:
    params = {param: "dev", "permissionsBoundary": POLICY_ARN}
    if event_name == "CreateRole":
        params["assumeRolePolicyDocument"] = DOC2
    fact = one(event_name, params)
    assert fact == expected(
        kind="boundary",
        principal_kind=kind,
        principal_name="dev",
        policy_name="Guardrail",
        policy_arn=POLICY_ARN,
    )


def test_create_user_or_role_without_a_boundary_is_no_fact() -> None:
    assert facts("CreateUser", {"userName": "dev"}) == []
    assert facts("CreateRole", {"roleName": "dev", "assumeRolePolicyDocument": DOC2}) == []


@pytest.mark.parametrize(
    ("event_name", "kind", "param"),
    [
        ("DeleteUserPermissionsBoundary", "user", "userName"),
        ("DeleteRolePermissionsBoundary", "role", "roleName"),
    ],
)
def test_boundary_delete(event_name: str, kind: str, param: str) -> None:
    fact = one(event_name, {param: "dev"})
    assert fact == expected(kind="boundary", op="delete", principal_kind=kind, principal_name="dev")


def create_policy_response(arn: str = POLICY_ARN) -> dict[str, Any]:
    return {
        "policy": {
            "policyName": "Guardrail",
            "policyId": "ANPAEXAMPLEPOLICYID01",
            "arn": arn,
            "path": "/team/",
            "defaultVersionId": "v1",
            "attachmentCount": 0,
            "permissionsBoundaryUsageCount": 0,
            "isAttachable": True,
            "createDate": "Nov 1, 2026, 12:00:00 PM",
            "updateDate": "Nov 1, 2026, 12:00:00 PM",
        }
    }


def test_create_policy_takes_the_arn_from_the_response() -> None:
    params = {"policyName": "Guardrail", "path": "/team/", "policyDocument": DOC}
    fact = one("CreatePolicy", params, responseElements=create_policy_response())
    assert fact == expected(
        kind="managed_policy",
        policy_name="Guardrail",
        policy_arn=POLICY_ARN,
        version_id="v1",
        document=DOC,
        path="/team/",
        set_as_default=True,
    )


def test_create_policy_without_response_builds_the_arn() -> None:
    fact = one("CreatePolicy", {"policyName": "Guardrail", "policyDocument": DOC})
    assert fact.policy_arn == f"arn:aws:iam::{ACCOUNT}:policy/Guardrail"
    assert (fact.path, fact.version_id, fact.set_as_default) == ("/", "v1", True)
    omitted = {"reason": "responseElements too large", "omitted": True}
    fact = one(
        "CreatePolicy",
        {"policyName": "Guardrail", "path": "/team/", "policyDocument": DOC},
        responseElements=omitted,
    )
    assert fact.policy_arn == POLICY_ARN


def test_create_policy_arn_uses_the_callers_partition() -> None:
    ident = {
        "type": "IAMUser",
        "arn": f"arn:aws-cn:iam::{ACCOUNT}:user/ops",
        "accountId": ACCOUNT,
    }
    fact = one(
        "CreatePolicy",
        {"policyName": "Guardrail", "path": "/team/", "policyDocument": DOC},
        user_identity=ident,
    )
    assert fact.policy_arn == f"arn:aws-cn:iam::{ACCOUNT}:policy/team/Guardrail"
    assert managed_policy_arn("aws-us-gov", ACCOUNT, "/", "X") == (
        f"arn:aws-us-gov:iam::{ACCOUNT}:policy/X"
    )


def test_create_policy_version_reads_the_version_from_the_response() -> None:
    params = {"policyArn": POLICY_ARN, "policyDocument": DOC2, "setAsDefault": True}
    response = {
        "policyVersion": {
            "versionId": "v2",
            "isDefaultVersion": True,
            "createDate": "Nov 1, 2026, 12:00:00 PM",
        }
    }
    fact = one("CreatePolicyVersion", params, responseElements=response)
    assert fact == expected(
        kind="policy_version",
        policy_name="Guardrail",
        policy_arn=POLICY_ARN,
        version_id="v2",
        document=DOC2,
        path="/team/",
        set_as_default=True,
    )


@pytest.mark.parametrize(
    ("set_as_default", "response_default", "want"),
    [
        (None, None, False),  # the API's default
        (False, None, False),
        (True, None, True),
        ("true", None, True),
        (False, True, True),  # the response is what happened
        (True, False, False),
    ],
)
def test_create_policy_version_default_flag(
    set_as_default: Any, response_default: Any, want: bool
) -> None:
    params: dict[str, Any] = {"policyArn": POLICY_ARN, "policyDocument": DOC2}
    if set_as_default is not None:
        params["setAsDefault"] = set_as_default
    version: dict[str, Any] = {"versionId": "v3"}
    if response_default is not None:
        version["isDefaultVersion"] = response_default
    fact = one("CreatePolicyVersion", params, responseElements={"policyVersion": version})
    assert fact.set_as_default is want


def test_create_policy_version_without_response_has_no_version_id() -> None:
    params = {"policyArn": POLICY_ARN, "policyDocument": DOC2, "setAsDefault": True}
    omitted = {"omitted": True, "reason": "responseElements too large"}
    responses: list[Any] = [None, omitted, "x", []]
    for response in responses:
        fact = one("CreatePolicyVersion", params, responseElements=response)
        assert fact.version_id is None
        assert fact.document == DOC2
        assert fact.set_as_default is True


def test_policy_level_removals_and_set_default() -> None:
    assert one("DeletePolicy", {"policyArn": POLICY_ARN}) == expected(
        kind="managed_policy",
        op="delete",
        policy_name="Guardrail",
        policy_arn=POLICY_ARN,
        path="/team/",
    )
    assert one("DeletePolicyVersion", {"policyArn": POLICY_ARN, "versionId": "v3"}) == expected(
        kind="policy_version",
        op="delete",
        policy_name="Guardrail",
        policy_arn=POLICY_ARN,
        path="/team/",
        version_id="v3",
    )
    assert one("SetDefaultPolicyVersion", {"policyArn": POLICY_ARN, "versionId": "v2"}) == expected(
        kind="default_version",
        policy_name="Guardrail",
        policy_arn=POLICY_ARN,
        path="/team/",
        version_id="v2",
        set_as_default=True,
    )


def test_every_removal_in_the_factories_yields_a_delete_fact() -> None:
    for event_name in REMOVALS:
        (fact,) = facts(event_name, None)
        assert fact.op == "delete", event_name


# --------------------------------------------------------------------------------------------
# What yields nothing
# --------------------------------------------------------------------------------------------


def test_failed_calls_yield_nothing() -> None:
    params = {"userName": "app", "policyName": "p", "policyDocument": DOC}
    assert facts("PutUserPolicy", params, error_code="AccessDenied") == []
    assert facts("PutUserPolicy", params, errorMessage="denied") == []
    assert facts("PutUserPolicy", params, errorCode="NoSuchEntity") == []
    assert len(facts("PutUserPolicy", params)) == 1


def test_other_sources_and_events_yield_nothing() -> None:
    arn = "arn:aws:organizations::111122223333:policy/o-abc/service_control_policy/p-1"
    org = "organizations.amazonaws.com"
    assert facts("DeletePolicy", {"policyId": "p-1"}, event_source=org) == []
    assert facts("DeletePolicy", {"policyArn": arn}) == []  # not an IAM policy ARN
    assert facts("GetUserPolicy", {"userName": "a", "policyName": "p"}) == []
    assert facts("PutUserPolicy", {"userName": "a", "policyName": "p"}, event_source="iam") == []


@pytest.mark.parametrize("event_id", [None, "", 7, "x" * 300])
def test_no_usable_event_id_yields_nothing(event_id: Any) -> None:
    record = make_record("DeleteUserPolicy")
    record["eventID"] = event_id
    assert facts_from_record(decode_lenient(record)) == []


@pytest.mark.parametrize("event_time", [None, "", "yesterday", "2026-13-01T00:00:00Z", 5])
def test_no_usable_event_time_yields_nothing(event_time: Any) -> None:
    record = make_record("DeleteUserPolicy")
    record["eventTime"] = event_time
    assert facts_from_record(decode_lenient(record)) == []


def decode_lenient(record: dict[str, Any]) -> Record:
    """A Record even where msgspec would reject the types: built field by field."""
    try:
        return decode(record)
    except msgspec.ValidationError:
        return Record(
            event_name=record.get("eventName"),
            event_source=record.get("eventSource"),
            event_id=record.get("eventID"),
            event_time=record.get("eventTime"),
            recipient_account_id=record.get("recipientAccountId"),
            request_parameters=record.get("requestParameters"),
            response_elements=record.get("responseElements"),
        )


def test_account_falls_back_to_the_caller_then_the_policy_arn() -> None:
    record = make_record("DeleteUserPolicy")
    del record["recipientAccountId"]
    (fact,) = facts_from_record(decode(record))
    assert fact.account_id == ACCOUNT  # userIdentity.accountId
    record = make_record("DeletePolicy", {"policyArn": "arn:aws:iam::444455556666:policy/P"})
    del record["recipientAccountId"]
    record["userIdentity"] = {"type": "AWSService", "invokedBy": "x.amazonaws.com"}
    (fact,) = facts_from_record(decode(record))
    assert fact.account_id == "444455556666"
    record = make_record("DeleteUserPolicy")
    del record["recipientAccountId"]
    record["userIdentity"] = {"type": "AWSService"}
    assert facts_from_record(decode(record)) == []


# --------------------------------------------------------------------------------------------
# Omitted and truncated fields
# --------------------------------------------------------------------------------------------

OMITTED = {"reason": "requestParameters too large", "omitted": True, "originalSize": 131072}


@pytest.mark.parametrize("event_name", sorted(HISTORY_EVENT_NAMES))
def test_omitted_request_parameters_yield_nothing(event_name: str) -> None:
    assert facts(event_name, dict(OMITTED)) == []
    assert facts(event_name, {"omitted": "true"}) == []


@pytest.mark.parametrize(
    "document",
    [
        {"omitted": True},  # a field CloudTrail dropped
        DOC[: len(DOC) // 2],  # cut short
        "",
        "[]",
        '"a string"',
        "null",
        "not json",
        "{" * 5000,  # deeper than any decoder allows
        42,
        None,
        ["{}"],
    ],
)
def test_a_document_that_is_not_a_json_object_text_is_left_out(document: Any) -> None:
    fact = one("PutRolePolicy", {"roleName": "r", "policyName": "p", "policyDocument": document})
    assert fact.document is None
    assert (fact.principal_name, fact.policy_name) == ("r", "p")
    params = {"policyArn": POLICY_ARN, "policyDocument": document}
    assert one("CreatePolicyVersion", params).document is None


def test_json_object_text() -> None:
    assert is_json_object_text(DOC)
    assert is_json_object_text("{}")
    assert not is_json_object_text(" [1] ")
    assert not is_json_object_text(b"{}")


# --------------------------------------------------------------------------------------------
# Crafted records: wrong types anywhere never raise
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"userName": 5, "policyName": "p", "policyDocument": DOC},
        {"userName": "a", "policyName": ["p"], "policyDocument": DOC},
        {"userName": "a/b", "policyName": "p"},  # not an IAM name
        {"userName": "", "policyName": "p"},
        {"userName": "a" * 129, "policyName": "p"},
        {"userName": None, "policyName": None},
        {},
    ],
)
def test_bad_names_yield_nothing(params: dict[str, Any]) -> None:
    assert facts("PutUserPolicy", params) == []


@pytest.mark.parametrize(
    "arn",
    [1, "Guardrail", "arn:aws:iam::12345:policy/X", "arn:aws:s3:::bucket", f"{POLICY_ARN}/"],
)
def test_a_bad_policy_arn_yields_nothing(arn: Any) -> None:
    assert facts("SetDefaultPolicyVersion", {"policyArn": arn, "versionId": "v2"}) == []
    assert facts("AttachRolePolicy", {"roleName": "r", "policyArn": arn}) == []
    assert facts("PutRolePermissionsBoundary", {"roleName": "r", "permissionsBoundary": arn}) == []
    assert facts("DeletePolicy", {"policyArn": arn}) == []


@pytest.mark.parametrize("version_id", [3, "3", "", "v0", "V2", None])
def test_a_bad_version_id_yields_nothing(version_id: Any) -> None:
    params = {"policyArn": POLICY_ARN, "versionId": version_id}
    assert facts("SetDefaultPolicyVersion", params) == []
    assert facts("DeletePolicyVersion", params) == []


@pytest.mark.parametrize("path", ["team", "/team", "//", 7, "/a b/"])
def test_create_policy_with_a_bad_path_yields_nothing(path: Any) -> None:
    assert facts("CreatePolicy", {"policyName": "P", "path": path, "policyDocument": DOC}) == []


def test_a_record_built_with_wrong_types_never_raises() -> None:
    weird: list[Any] = [None, 0, 1.5, True, "", "x", [], {}, ["a"], {"omitted": True}, b"\x00"]
    for value in weird:
        for name in [*sorted(HISTORY_EVENT_NAMES), value]:
            record = Record(
                event_name=name,
                event_source=value if value else "iam.amazonaws.com",
                event_id="e",
                event_time=TIME,
                recipient_account_id=value,
                request_parameters=value,
                response_elements=value,
                error_code=None,
            )
            assert facts_from_record(record) == []  # request parameters unusable
            record = Record(
                event_name=name,
                event_source="iam.amazonaws.com",
                event_id=value,
                event_time=value,
                user_identity=value,
                request_parameters={
                    "userName": value,
                    "roleName": "r",
                    "policyName": "p",
                    "policyArn": POLICY_ARN,
                    "policyDocument": value,
                    "setAsDefault": value,
                    "versionId": value,
                    "path": value,
                },
                response_elements={"policy": value, "policyVersion": value},
            )
            facts_from_record(record)  # no exception is the point


_scalar = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_json = st.recursive(
    _scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_param_keys = st.sampled_from(
    [
        "userName",
        "roleName",
        "groupName",
        "policyName",
        "policyArn",
        "policyDocument",
        "permissionsBoundary",
        "versionId",
        "setAsDefault",
        "path",
        "omitted",
    ]
)
_plausible = st.sampled_from(["app", "p", POLICY_ARN, DOC, "v2", "/team/", True, "", None])


@settings(max_examples=300, deadline=None)
@given(
    event_name=st.sampled_from(sorted(HISTORY_EVENT_NAMES)),
    params=st.dictionaries(_param_keys, _plausible | _json, max_size=8),
    response=_json,
    account=_plausible | _json,
)
def test_fuzzed_records_never_raise(
    event_name: str, params: dict[str, Any], response: Any, account: Any
) -> None:
    record = make_record(event_name, params, event_id="fuzz", responseElements=response)
    record["recipientAccountId"] = account
    built = decode_lenient(record)
    for fact in facts_from_record(built):
        assert isinstance(fact, PolicyFact)
        assert fact.event_id == "fuzz"
        assert fact.document is None or is_json_object_text(fact.document)
        assert fact.account_id.isdigit()
        assert len(fact.account_id) == 12
        assert fact.policy_arn is None or is_policy_arn(fact.policy_arn)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def test_event_time_key_sorts_in_time_order() -> None:
    assert event_time_key("2026-11-01T12:00:00Z") == "2026-11-01T12:00:00.000000Z"
    assert event_time_key("2026-11-01T12:00:00.5Z") == "2026-11-01T12:00:00.500000Z"
    assert event_time_key("2026-11-01T14:00:00+02:00") == "2026-11-01T12:00:00.000000Z"
    assert event_time_key("2026-11-01T12:00:00") == "2026-11-01T12:00:00.000000Z"
    keys = [
        str(event_time_key(t))
        for t in ("2026-11-01T09:59:59Z", "2026-11-01T10:00:00Z", "2026-11-01T10:00:00.000001Z")
    ]
    assert keys == sorted(keys)
    for bad in (None, 5, "", "x" * 41, "2026-02-30T00:00:00Z", "0001-01-01T00:00:00+01:00"):
        assert event_time_key(bad) is None


def test_policy_arn_helpers() -> None:
    assert path_from_policy_arn(POLICY_ARN) == "/team/"
    assert path_from_policy_arn(f"arn:aws:iam::{ACCOUNT}:policy/P") == "/"
    assert path_from_policy_arn("arn:aws:iam::aws:policy/service-role/X") == "/service-role/"
    assert path_from_policy_arn("nope") is None
    assert is_policy_arn("arn:aws-us-gov:iam::aws:policy/ReadOnlyAccess")
    assert not is_policy_arn(f"arn:aws:iam::{ACCOUNT}:role/x")
