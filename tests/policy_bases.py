"""Base documents of the policy mutation suite, each with its probes and hand-written mutations.

Shaped like what accounts run: managed-policy-like Allows, guardrail Deny statements with
conditions, a permissions boundary, and one base with policy variables and set operators.  Every
Deny statement carries a *probe*: a request that statement denies and the document's Allows
allow, so dropping or narrowing that Deny is weakening and the probe shows it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trailguard.policy import Request

Doc = dict[str, Any]
ACCOUNT = "123456789012"


def _req(action: str, resource: str = "*", **ctx: str | list[str]) -> Request:
    return Request(
        action=action, resource=resource, context={k.replace("__", ":"): v for k, v in ctx.items()}
    )


@dataclass
class Base:
    name: str
    doc: Doc
    #: Sid of a Deny -> a request it denies and the Allows allow
    deny_probes: dict[str, Request]
    #: hand-written weakening mutations: (name, mutate, probe)
    weakenings: list[tuple[str, Callable[[Doc], None], Request]] = field(default_factory=list)
    #: a request no statement allows (for "add an Allow")
    outside: Request | None = None
    #: the engine cannot decide some changes of this base (variables, set operators)
    opaque: bool = False
    #: hand-written non-weakening mutations
    safe_extra: list[tuple[str, Callable[[Doc], None]]] = field(default_factory=list)


def stmt_by_sid(doc: Doc, sid: str) -> dict[str, Any]:
    return next(s for s in doc["Statement"] if s.get("Sid") == sid)


def _set(sid: str, key: str, value: Any) -> Callable[[Doc], None]:
    def f(doc: Doc) -> None:
        stmt_by_sid(doc, sid)[key] = value

    return f


def _cond(sid: str, op: str, key: str, value: Any) -> Callable[[Doc], None]:
    def f(doc: Doc) -> None:
        stmt_by_sid(doc, sid)["Condition"][op][key] = value

    return f


def _drop_cond(sid: str, op: str | None = None) -> Callable[[Doc], None]:
    def f(doc: Doc) -> None:
        s = stmt_by_sid(doc, sid)
        if op is None:
            del s["Condition"]
        else:
            del s["Condition"][op]
            if not s["Condition"]:
                del s["Condition"]

    return f


def _rename_op(sid: str, old: str, new: str) -> Callable[[Doc], None]:
    def f(doc: Doc) -> None:
        c = stmt_by_sid(doc, sid)["Condition"]
        c[new] = c.pop(old)

    return f


def bases() -> list[Base]:
    out: list[Base] = []
    bucket = "arn:aws:s3:::acme-app-data"
    out.append(
        Base(
            "s3-app",
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "ReadWrite",
                        "Effect": "Allow",
                        "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                        "Resource": f"{bucket}/*",
                    },
                    {
                        "Sid": "List",
                        "Effect": "Allow",
                        "Action": "s3:ListBucket",
                        "Resource": bucket,
                        "Condition": {"StringLike": {"s3:prefix": ["home/*", "shared/*"]}},
                    },
                    {
                        "Sid": "DenyDeleteUnderLegal",
                        "Effect": "Deny",
                        "Action": "s3:DeleteObject",
                        "Resource": f"{bucket}/legal/*",
                    },
                    {
                        "Sid": "DenyInsecure",
                        "Effect": "Deny",
                        "Action": "s3:*",
                        "Resource": "*",
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    },
                ],
            },
            {
                "DenyDeleteUnderLegal": _req("s3:DeleteObject", f"{bucket}/legal/a.pdf"),
                "DenyInsecure": _req("s3:GetObject", f"{bucket}/x", aws__SecureTransport="false"),
            },
            [
                (
                    "widen-action-wildcard",
                    _set("ReadWrite", "Action", ["s3:Get*", "s3:PutObject", "s3:DeleteObject"]),
                    _req("s3:GetObjectAcl", f"{bucket}/x"),
                ),
                (
                    "widen-resource-bucket-star",
                    _set("ReadWrite", "Resource", "arn:aws:s3:::acme-*/*"),
                    _req("s3:GetObject", "arn:aws:s3:::acme-other/x"),
                ),
                ("remove-list-condition", _drop_cond("List"), _req("s3:ListBucket", bucket)),
                (
                    "widen-list-prefix",
                    _cond("List", "StringLike", "s3:prefix", ["*"]),
                    _req("s3:ListBucket", bucket, s3__prefix="private/"),
                ),
                (
                    "narrow-deny-prefix",
                    _set("DenyDeleteUnderLegal", "Resource", f"{bucket}/legal/hold/*"),
                    _req("s3:DeleteObject", f"{bucket}/legal/a.pdf"),
                ),
                (
                    "deny-bool-ifexists-to-plain",
                    lambda d: None,
                    _req("s3:GetObject", f"{bucket}/x"),
                ),
                (
                    "resource-case-change",
                    _set("ReadWrite", "Resource", "arn:aws:s3:::ACME-app-data/*"),
                    _req("s3:GetObject", "arn:aws:s3:::ACME-app-data/x"),
                ),
            ],
            _req("s3:PutBucketPolicy", bucket),
        )
    )
    # the IfExists mutation needs an IfExists in the base: patch the placeholder
    out[-1].weakenings[5] = (
        "insecure-deny-bool-string-true",
        _cond("DenyInsecure", "Bool", "aws:SecureTransport", "true"),
        _req("s3:GetObject", f"{bucket}/x", aws__SecureTransport="false"),
    )
    regions = ["eu-west-1", "us-east-1"]
    out.append(
        Base(
            "admin-guardrails",
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Sid": "Admin", "Effect": "Allow", "Action": "*", "Resource": "*"},
                    {
                        "Sid": "ProtectTrail",
                        "Effect": "Deny",
                        "Action": [
                            "cloudtrail:StopLogging",
                            "cloudtrail:DeleteTrail",
                            "cloudtrail:UpdateTrail",
                        ],
                        "Resource": "*",
                    },
                    {
                        "Sid": "ProtectOrg",
                        "Effect": "Deny",
                        "Action": "organizations:LeaveOrganization",
                        "Resource": "*",
                    },
                    {
                        "Sid": "RegionLock",
                        "Effect": "Deny",
                        "NotAction": ["iam:*", "sts:*", "support:*", "cloudfront:*"],
                        "Resource": "*",
                        "Condition": {"StringNotEquals": {"aws:RequestedRegion": regions}},
                    },
                    {
                        "Sid": "RequireMfaForIam",
                        "Effect": "Deny",
                        "Action": "iam:*",
                        "Resource": "*",
                        "Condition": {"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}},
                    },
                    {
                        "Sid": "ProtectBreakGlass",
                        "Effect": "Deny",
                        "Action": "iam:*",
                        "Resource": f"arn:aws:iam::{ACCOUNT}:role/break-glass*",
                    },
                ],
            },
            {
                "ProtectTrail": _req(
                    "cloudtrail:StopLogging",
                    f"arn:aws:cloudtrail:eu-west-1:{ACCOUNT}:trail/org",
                    aws__RequestedRegion="eu-west-1",
                ),
                "ProtectOrg": _req(
                    "organizations:LeaveOrganization", "*", aws__RequestedRegion="us-east-1"
                ),
                "RegionLock": _req("ec2:RunInstances", "*", aws__RequestedRegion="ap-south-1"),
                "RequireMfaForIam": _req("iam:CreateUser", f"arn:aws:iam::{ACCOUNT}:user/x"),
                "ProtectBreakGlass": _req(
                    "iam:DeleteRole",
                    f"arn:aws:iam::{ACCOUNT}:role/break-glass",
                    aws__MultiFactorAuthPresent="true",
                ),
            },
            [
                (
                    "region-lock-add-region",
                    _cond(
                        "RegionLock",
                        "StringNotEquals",
                        "aws:RequestedRegion",
                        [*regions, "ap-south-1"],
                    ),
                    _req("ec2:RunInstances", "*", aws__RequestedRegion="ap-south-1"),
                ),
                (
                    "region-lock-exempt-ec2",
                    _set(
                        "RegionLock",
                        "NotAction",
                        ["iam:*", "sts:*", "support:*", "cloudfront:*", "ec2:*"],
                    ),
                    _req("ec2:RunInstances", "*", aws__RequestedRegion="ap-south-1"),
                ),
                (
                    "mfa-ifexists-dropped",
                    _rename_op("RequireMfaForIam", "BoolIfExists", "Bool"),
                    _req("iam:CreateUser", f"arn:aws:iam::{ACCOUNT}:user/x"),
                ),
                (
                    "trail-deny-loses-action",
                    _set(
                        "ProtectTrail",
                        "Action",
                        ["cloudtrail:DeleteTrail", "cloudtrail:UpdateTrail"],
                    ),
                    _req("cloudtrail:StopLogging", "*", aws__RequestedRegion="eu-west-1"),
                ),
                (
                    "trail-deny-wildcard-narrowed",
                    _set(
                        "ProtectTrail",
                        "Action",
                        ["cloudtrail:Delete*", "cloudtrail:UpdateTrail", "cloudtrail:StopLoggingX"],
                    ),
                    _req("cloudtrail:StopLogging", "*", aws__RequestedRegion="eu-west-1"),
                ),
                (
                    "breakglass-pattern-narrowed",
                    _set(
                        "ProtectBreakGlass", "Resource", f"arn:aws:iam::{ACCOUNT}:role/break-glass"
                    ),
                    _req(
                        "iam:DeleteRole",
                        f"arn:aws:iam::{ACCOUNT}:role/break-glass-2",
                        aws__MultiFactorAuthPresent="true",
                    ),
                ),
                (
                    "breakglass-account-changed",
                    _set(
                        "ProtectBreakGlass",
                        "Resource",
                        "arn:aws:iam::210987654321:role/break-glass*",
                    ),
                    _req(
                        "iam:DeleteRole",
                        f"arn:aws:iam::{ACCOUNT}:role/break-glass",
                        aws__MultiFactorAuthPresent="true",
                    ),
                ),
            ],
        )
    )
    out.append(
        Base(
            "power-user",
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "AllButIam",
                        "Effect": "Allow",
                        "NotAction": ["iam:*", "organizations:*", "account:*"],
                        "Resource": "*",
                    },
                    {
                        "Sid": "SomeIam",
                        "Effect": "Allow",
                        "Action": [
                            "iam:CreateServiceLinkedRole",
                            "iam:DeleteServiceLinkedRole",
                            "iam:ListRoles",
                            "organizations:DescribeOrganization",
                            "account:ListRegions",
                        ],
                        "Resource": "*",
                    },
                    {
                        "Sid": "NoKmsDelete",
                        "Effect": "Deny",
                        "Action": ["kms:ScheduleKeyDeletion", "kms:DisableKey"],
                        "Resource": "*",
                    },
                ],
            },
            {
                "NoKmsDelete": _req(
                    "kms:ScheduleKeyDeletion", f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/1"
                )
            },
            [
                (
                    "notaction-loses-organizations",
                    _set("AllButIam", "NotAction", ["iam:*", "account:*"]),
                    _req("organizations:ListAccounts"),
                ),
                (
                    "iam-list-to-wildcard",
                    _set(
                        "SomeIam",
                        "Action",
                        [
                            "iam:*ServiceLinkedRole",
                            "iam:List*",
                            "organizations:DescribeOrganization",
                            "account:ListRegions",
                        ],
                    ),
                    _req("iam:ListUsers"),
                ),
                (
                    "question-mark-wildcard",
                    _set(
                        "SomeIam",
                        "Action",
                        [
                            "iam:CreateServiceLinkedRole",
                            "iam:DeleteServiceLinkedRole",
                            "iam:List?oles",
                            "organizations:DescribeOrganization",
                            "account:ListRegions",
                        ],
                    ),
                    _req("iam:ListXoles"),
                ),
            ],
            _req("iam:CreateUser", f"arn:aws:iam::{ACCOUNT}:user/x"),
        )
    )
    inst = f"arn:aws:ec2:*:{ACCOUNT}:instance/*"
    cidrs = ["203.0.113.0/24", "198.51.100.0/24", "2001:db8::/32"]
    out.append(
        Base(
            "ec2-ops",
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "Describe",
                        "Effect": "Allow",
                        "Action": "ec2:Describe*",
                        "Resource": "*",
                    },
                    {
                        "Sid": "StartStop",
                        "Effect": "Allow",
                        "Action": ["ec2:StartInstances", "ec2:StopInstances"],
                        "Resource": inst,
                        "Condition": {"StringEquals": {"aws:ResourceTag/team": "ops"}},
                    },
                    {
                        "Sid": "Reboot",
                        "Effect": "Allow",
                        "Action": "ec2:RebootInstances",
                        "Resource": inst,
                        "Condition": {"NumericLessThanEquals": {"aws:MultiFactorAuthAge": "3600"}},
                    },
                    {
                        "Sid": "OfficeOnly",
                        "Effect": "Deny",
                        "Action": "*",
                        "Resource": "*",
                        "Condition": {
                            "NotIpAddress": {"aws:SourceIp": cidrs},
                            "Bool": {"aws:ViaAWSService": "false"},
                        },
                    },
                ],
            },
            {
                "OfficeOnly": _req(
                    "ec2:DescribeInstances",
                    "*",
                    aws__SourceIp="192.0.2.10",
                    aws__ViaAWSService="false",
                )
            },
            [
                (
                    "office-cidr-widened",
                    _cond(
                        "OfficeOnly", "NotIpAddress", "aws:SourceIp", ["203.0.0.0/16", *cidrs[1:]]
                    ),
                    _req(
                        "ec2:DescribeInstances",
                        "*",
                        aws__SourceIp="203.0.7.7",
                        aws__ViaAWSService="false",
                    ),
                ),
                (
                    "office-v6-added",
                    _cond("OfficeOnly", "NotIpAddress", "aws:SourceIp", [*cidrs, "2001:db9::/32"]),
                    _req(
                        "ec2:DescribeInstances",
                        "*",
                        aws__SourceIp="2001:db9::1",
                        aws__ViaAWSService="false",
                    ),
                ),
                (
                    "tag-condition-ignorecase",
                    _rename_op("StartStop", "StringEquals", "StringEqualsIgnoreCase"),
                    _req(
                        "ec2:StartInstances",
                        f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/i-1",
                        aws__SourceIp="203.0.113.5",
                        **{"aws:ResourceTag/team": "OPS"},
                    ),
                ),
                (
                    "tag-condition-removed",
                    _drop_cond("StartStop"),
                    _req(
                        "ec2:StopInstances",
                        f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/i-1",
                        aws__SourceIp="203.0.113.5",
                    ),
                ),
                (
                    "tag-condition-ifexists",
                    _rename_op("StartStop", "StringEquals", "StringEqualsIfExists"),
                    _req(
                        "ec2:StopInstances",
                        f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/i-1",
                        aws__SourceIp="203.0.113.5",
                    ),
                ),
                (
                    "mfa-age-raised",
                    _cond("Reboot", "NumericLessThanEquals", "aws:MultiFactorAuthAge", "7200"),
                    _req(
                        "ec2:RebootInstances",
                        f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/i-1",
                        aws__SourceIp="203.0.113.5",
                        aws__MultiFactorAuthAge="5000",
                    ),
                ),
                (
                    "mfa-age-off-by-one",
                    _cond("Reboot", "NumericLessThanEquals", "aws:MultiFactorAuthAge", "3601"),
                    _req(
                        "ec2:RebootInstances",
                        f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/i-1",
                        aws__SourceIp="203.0.113.5",
                        aws__MultiFactorAuthAge="3600.5",
                    ),
                ),
                (
                    "instance-arn-region-any-resource",
                    _set("StartStop", "Resource", "*"),
                    _req(
                        "ec2:StartInstances",
                        f"arn:aws:ec2:eu-west-1:{ACCOUNT}:volume/v-1",
                        aws__SourceIp="203.0.113.5",
                        **{"aws:ResourceTag/team": "ops"},
                    ),
                ),
            ],
            _req(
                "ec2:TerminateInstances",
                f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/i-1",
                aws__SourceIp="203.0.113.5",
            ),
        )
    )
    secret = f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:prod/*"
    out.append(
        Base(
            "secrets-reader",
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "ReadProdSecrets",
                        "Effect": "Allow",
                        "Action": [
                            "secretsmanager:GetSecretValue",
                            "secretsmanager:DescribeSecret",
                        ],
                        "Resource": secret,
                        "Condition": {
                            "DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"},
                            "ArnLike": {
                                "aws:SourceArn": f"arn:aws:lambda:*:{ACCOUNT}:function:app-*"
                            },
                        },
                    },
                    {
                        "Sid": "Decrypt",
                        "Effect": "Allow",
                        "Action": "kms:Decrypt",
                        "Resource": f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/*",
                        "Condition": {
                            "StringEquals": {
                                "kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"
                            }
                        },
                    },
                    {
                        "Sid": "StaleMfa",
                        "Effect": "Deny",
                        "Action": "*",
                        "Resource": "*",
                        "Condition": {"NumericGreaterThan": {"aws:MultiFactorAuthAge": 43200}},
                    },
                ],
            },
            {
                "StaleMfa": _req(
                    "kms:Decrypt",
                    f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/k1",
                    aws__MultiFactorAuthAge="50000",
                    kms__ViaService="secretsmanager.eu-west-1.amazonaws.com",
                )
            },
            [
                (
                    "expiry-extended",
                    _cond(
                        "ReadProdSecrets", "DateLessThan", "aws:CurrentTime", "2035-01-01T00:00:00Z"
                    ),
                    _req(
                        "secretsmanager:GetSecretValue",
                        f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:prod/db",
                        aws__CurrentTime="2031-06-01T00:00:00Z",
                        aws__SourceArn=f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:app-x",
                    ),
                ),
                (
                    "source-arn-widened",
                    _cond(
                        "ReadProdSecrets",
                        "ArnLike",
                        "aws:SourceArn",
                        f"arn:aws:lambda:*:{ACCOUNT}:function:*",
                    ),
                    _req(
                        "secretsmanager:GetSecretValue",
                        f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:prod/db",
                        aws__CurrentTime="2029-06-01T00:00:00Z",
                        aws__SourceArn=f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:other",
                    ),
                ),
                (
                    "secret-path-widened",
                    _set(
                        "ReadProdSecrets",
                        "Resource",
                        f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:*",
                    ),
                    _req(
                        "secretsmanager:GetSecretValue",
                        f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:dev/db",
                        aws__CurrentTime="2029-06-01T00:00:00Z",
                        aws__SourceArn=f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:app-x",
                    ),
                ),
                (
                    "via-service-dropped",
                    _drop_cond("Decrypt"),
                    _req("kms:Decrypt", f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/k1"),
                ),
                (
                    "mfa-age-number-raised",
                    _cond("StaleMfa", "NumericGreaterThan", "aws:MultiFactorAuthAge", 86400),
                    _req(
                        "kms:Decrypt",
                        f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/k1",
                        aws__MultiFactorAuthAge="50000",
                        kms__ViaService="secretsmanager.eu-west-1.amazonaws.com",
                    ),
                ),
            ],
            _req("secretsmanager:PutSecretValue", secret),
        )
    )
    boundary_arn = f"arn:aws:iam::{ACCOUNT}:policy/app-boundary"
    out.append(
        Base(
            "boundary",
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "Services",
                        "Effect": "Allow",
                        "Action": [
                            "s3:*",
                            "dynamodb:*",
                            "lambda:*",
                            "logs:*",
                            "cloudwatch:*",
                            "iam:PassRole",
                            "iam:CreateRole",
                            "iam:PutRolePolicy",
                        ],
                        "Resource": "*",
                    },
                    {
                        "Sid": "PassOnlyAppRoles",
                        "Effect": "Deny",
                        "Action": "iam:PassRole",
                        "NotResource": f"arn:aws:iam::{ACCOUNT}:role/app-*",
                    },
                    {
                        "Sid": "BoundaryRequired",
                        "Effect": "Deny",
                        "Action": ["iam:CreateRole", "iam:PutRolePolicy"],
                        "Resource": "*",
                        "Condition": {"ArnNotEquals": {"iam:PermissionsBoundary": boundary_arn}},
                    },
                    {
                        "Sid": "NoPublicBuckets",
                        "Effect": "Deny",
                        "Action": "s3:PutBucketPublicAccessBlock",
                        "Resource": "*",
                    },
                ],
            },
            {
                "PassOnlyAppRoles": _req("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/admin"),
                "BoundaryRequired": _req("iam:CreateRole", f"arn:aws:iam::{ACCOUNT}:role/app-x"),
                "NoPublicBuckets": _req("s3:PutBucketPublicAccessBlock", "arn:aws:s3:::b"),
            },
            [
                (
                    "pass-any-role",
                    _set("PassOnlyAppRoles", "NotResource", f"arn:aws:iam::{ACCOUNT}:role/*"),
                    _req("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/admin"),
                ),
                (
                    "pass-two-patterns",
                    _set(
                        "PassOnlyAppRoles",
                        "NotResource",
                        [f"arn:aws:iam::{ACCOUNT}:role/app-*", f"arn:aws:iam::{ACCOUNT}:role/ad*"],
                    ),
                    _req("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/admin"),
                ),
                (
                    "boundary-any-policy",
                    _cond(
                        "BoundaryRequired",
                        "ArnNotEquals",
                        "iam:PermissionsBoundary",
                        f"arn:aws:iam::{ACCOUNT}:policy/*",
                    ),
                    _req(
                        "iam:CreateRole",
                        f"arn:aws:iam::{ACCOUNT}:role/app-x",
                        iam__PermissionsBoundary=f"arn:aws:iam::{ACCOUNT}:policy/wide",
                    ),
                ),
                (
                    "boundary-services-plus-ec2",
                    _set(
                        "Services",
                        "Action",
                        [
                            "s3:*",
                            "dynamodb:*",
                            "lambda:*",
                            "logs:*",
                            "cloudwatch:*",
                            "iam:PassRole",
                            "iam:CreateRole",
                            "iam:PutRolePolicy",
                            "ec2:*",
                        ],
                    ),
                    _req("ec2:RunInstances"),
                ),
            ],
            _req("ec2:RunInstances"),
        )
    )
    # Bases the engine cannot fully decide: policy variables and set operators.
    out.append(
        Base(
            "home-dirs-variables",
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "OwnHome",
                        "Effect": "Allow",
                        "Action": ["s3:GetObject", "s3:PutObject"],
                        "Resource": "arn:aws:s3:::homes/${aws:username}/*",
                    },
                    {
                        "Sid": "ListOwnHome",
                        "Effect": "Allow",
                        "Action": "s3:ListBucket",
                        "Resource": "arn:aws:s3:::homes",
                        "Condition": {"StringLike": {"s3:prefix": ["${aws:username}/*"]}},
                    },
                    {
                        "Sid": "NoUntaggedRequests",
                        "Effect": "Deny",
                        "Action": "s3:PutObject",
                        "Resource": "*",
                        "Condition": {
                            "ForAnyValue:StringNotEquals": {"aws:TagKeys": ["project", "owner"]}
                        },
                    },
                    {
                        "Sid": "DenyHttp",
                        "Effect": "Deny",
                        "Action": "s3:*",
                        "Resource": "*",
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    },
                    {
                        "Sid": "TagOwnObjects",
                        "Effect": "Allow",
                        "Action": "s3:PutObjectTagging",
                        "Resource": "arn:aws:s3:::homes/${aws:username}/*",
                        "Condition": {
                            "ForAllValues:StringEquals": {"aws:TagKeys": ["project", "owner"]}
                        },
                    },
                ],
            },
            {
                "DenyHttp": _req(
                    "s3:GetObject",
                    "arn:aws:s3:::homes/alice/x",
                    aws__username="alice",
                    aws__SecureTransport="false",
                )
            },
            [
                (
                    "own-home-to-all-homes",
                    _set("OwnHome", "Resource", "arn:aws:s3:::homes/*"),
                    _req("s3:GetObject", "arn:aws:s3:::homes/bob/x", aws__username="alice"),
                ),
                (
                    "tag-deny-dropped",
                    lambda d: d["Statement"].pop(2),
                    _req(
                        "s3:PutObject",
                        "arn:aws:s3:::homes/alice/x",
                        aws__username="alice",
                        aws__TagKeys=["secret"],
                    ),
                ),
                (
                    "tag-keys-widened",
                    _cond(
                        "TagOwnObjects",
                        "ForAllValues:StringEquals",
                        "aws:TagKeys",
                        ["project", "owner", "secret"],
                    ),
                    _req(
                        "s3:PutObjectTagging",
                        "arn:aws:s3:::homes/alice/x",
                        aws__username="alice",
                        aws__TagKeys=["secret"],
                    ),
                ),
            ],
            opaque=True,
            safe_extra=[
                (
                    "tag-keys-narrowed",
                    _cond("TagOwnObjects", "ForAllValues:StringEquals", "aws:TagKeys", ["project"]),
                ),
                (
                    "home-prefix-narrowed",
                    _set("OwnHome", "Resource", "arn:aws:s3:::homes/${aws:username}/docs/*"),
                ),
            ],
        )
    )
    return out
