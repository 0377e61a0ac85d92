"""Seeded generator of realistic CloudTrail log files for the benchmarks.

Files look like S3 deliveries: gzip'd ``{"Records": [...]}`` in CloudTrail's compact JSON, about
1.3 KB per record on average, with assumed-role sessions, SDK user agents, TLS details and the
request parameters of busy services (S3 GetObject, EC2 DescribeInstances, STS AssumeRole, KMS
Decrypt, ...), spread over many accounts and regions.  The share of IAM events and of IAM policy
removals is tunable.  Output goes to ``bench/.cache/<set>/`` (gitignored) and is reused while the
parameters (recorded in ``manifest.json``) are unchanged.

    python -m bench.generate                 # the two default sets
    python -m bench.generate --files 50 --records 2000 --removal-share 0.01 --name custom
"""

from __future__ import annotations

import argparse
import base64
import gzip
import random
import uuid
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from trailguard.vocabulary import REMOVAL_EVENT_NAMES

CACHE = Path(__file__).resolve().parent / ".cache"
GENERATOR_VERSION = 4  # bump when the records change: cached sets are then rebuilt

REMOVAL_NAMES: tuple[str, ...] = REMOVAL_EVENT_NAMES

POLICY_WRITE_NAMES: tuple[str, ...] = (
    "PutUserPolicy",
    "PutRolePolicy",
    "PutGroupPolicy",
    "AttachUserPolicy",
    "AttachRolePolicy",
    "AttachGroupPolicy",
    "CreatePolicy",
    "CreatePolicyVersion",
    "PutRolePermissionsBoundary",
)

REGIONS = (
    "us-east-1",
    "us-east-2",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "eu-north-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "ap-south-1",
    "ca-central-1",
    "sa-east-1",
)

USER_AGENTS = (
    "aws-sdk-go-v2/1.24.1 os/linux lang/go#1.21.6 md/GOOS#linux md/GOARCH#amd64 api/s3#1.48.0",
    "aws-sdk-go/1.50.8 (go1.21.6; linux; amd64) exec-env/AWS_ECS_FARGATE",
    "Boto3/1.34.11 md/Botocore#1.34.11 ua/2.0 os/linux#5.10.205-195.807.amzn2.x86_64 "
    "md/arch#x86_64 lang/python#3.11.6 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.34.11",
    "aws-cli/2.15.10 Python/3.11.6 Linux/6.5.0-1014-aws exe/x86_64.ubuntu.22 prompt/off "
    "command/s3.cp",
    "aws-sdk-java/2.21.29 Linux/5.10.205-195.807.amzn2.x86_64 "
    "OpenJDK_64-Bit_Server_VM/17.0.9+8-LTS Java/17.0.9 vendor/Amazon.com_Inc. io/sync "
    "http/Apache cfg/retry-mode/legacy",
    "aws-sdk-js/3.490.0 ua/2.0 os/linux#5.10.205 lang/js md/nodejs#20.10.0 api/kms#3.490.0",
    "terraform-provider-aws/5.31.0 (+https://registry.terraform.io/providers/hashicorp/aws) "
    "aws-sdk-go-v2/1.24.0 os/linux lang/go#1.21.5 md/GOOS#linux md/GOARCH#amd64 api/iam#1.28.5",
    "console.amazonaws.com",
    "AWS Internal",
    "aws-sdk-go/1.44.122 (go1.19.3; linux; amd64)",
    "Boto3/1.26.0 Python/3.9.16 Linux/4.14.355 Botocore/1.29.0",
)

TLS_CIPHERS = ("TLS_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "TLS_AES_256_GCM_SHA384")

INSTANCE_STATES = ("running", "stopped", "pending")


@dataclass(frozen=True)
class SetSpec:
    """Parameters of one generated set; the manifest stores them to detect stale caches."""

    name: str
    files: int = 200
    records: int = 1000
    seed: int = 20240601
    iam_share: float = 0.03  # share of records that are IAM calls (reads, attaches, puts)
    removal_share: float = 0.0  # share of records that are IAM policy removals
    removals_per_file: int = 0  # exactly this many removals per file, at random positions
    policy_share: float = 0.0  # share of records that are IAM policy writes (Put*/Attach*/...)


#: The issue's default corpus: an organisation trail where 0.1 % of the records are IAM policy
#: writes (Put*/Attach*/Create*: what the policy history records) and 0.01 % are removals.
DEFAULT = SetSpec(name="default", iam_share=0.0, policy_share=0.001, removal_share=0.0001)

DEFAULT_SETS = (
    DEFAULT,
    SetSpec(name="no-candidates"),
    SetSpec(name="one-removal-per-file", removals_per_file=1),
)


class _Gen:
    """Builds records; every random choice comes from one seeded ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.accounts = [f"{rng.randrange(10**11, 10**12):012d}" for _ in range(40)]
        self.roles = [
            "ci-deployer",
            "eks-node-group-NodeInstanceRole-1X2Y3Z",
            "AWSReservedSSO_AdministratorAccess_0123abcd4567ef89",
            "lambda-ingest-execution",
            "data-pipeline-worker",
            "OrganizationAccountAccessRole",
            "karpenter-controller",
            "grafana-cloudwatch-reader",
        ]
        self.users = ["alice", "bob", "deploy-bot", "backup-svc", "carol.admin"]
        self.buckets = ["prod-assets", "data-lake-raw", "tf-state-123", "logs-archive", "ml-feat"]

    # -- small helpers -------------------------------------------------------------------------
    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def hexs(self, n: int) -> str:
        return f"{self.rng.getrandbits(4 * n):0{n}x}"

    def alnum(self, n: int, upper: bool = True) -> str:
        text = base64.b32encode(self.rng.randbytes(n * 5 // 8 + 1)).decode()[:n]
        return text if upper else text.lower()

    def ip(self) -> str:
        r = self.rng
        return f"{r.randrange(3, 223)}.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}"

    def new_file(self, account: str, when: datetime) -> None:
        """Per-file pools: a real five-minute file repeats principals, hosts and resources."""
        self.pool_identities = [self._identity(account, when) for _ in range(16)]
        self.pool_ips = [self.ip() for _ in range(16)]
        self.pool_instances = ["i-0" + self.hexs(16) for _ in range(40)]
        self.pool_objects = [
            f"year=2024/month={self.rng.randrange(1, 13):02d}/part-{self.hexs(8)}.parquet"
            for _ in range(80)
        ]
        self.pool_kms = [self.uid() for _ in range(6)]

    def identity(self) -> dict[str, Any]:
        return self.rng.choice(self.pool_identities)

    def _identity(self, account: str, when: datetime) -> dict[str, Any]:
        r = self.rng
        roll = r.random()
        if roll < 0.45:
            role = r.choice(self.roles)
            session = r.choice(
                ["botocore-session-" + str(r.randrange(10**9, 10**10)), "i-0" + self.hexs(16)]
            )
            principal = "AROA" + self.alnum(17)
            return {
                "type": "AssumedRole",
                "principalId": f"{principal}:{session}",
                "arn": f"arn:aws:sts::{account}:assumed-role/{role}/{session}",
                "accountId": account,
                "accessKeyId": "ASIA" + self.alnum(16),
                "sessionContext": {
                    "sessionIssuer": {
                        "type": "Role",
                        "principalId": principal,
                        "arn": f"arn:aws:iam::{account}:role/{role}",
                        "accountId": account,
                        "userName": role,
                    },
                    "webIdFederationData": {},
                    "attributes": {
                        "creationDate": (when - timedelta(minutes=r.randrange(1, 55))).strftime(
                            "%Y-%m-%dT%H:%M:%SZ"
                        ),
                        "mfaAuthenticated": "false",
                    },
                    **({"ec2RoleDelivery": "2.0"} if session.startswith("i-") else {}),
                },
            }
        if roll < 0.58:
            user = r.choice(self.users)
            return {
                "type": "IAMUser",
                "principalId": "AIDA" + self.alnum(17),
                "arn": f"arn:aws:iam::{account}:user/{user}",
                "accountId": account,
                "accessKeyId": "AKIA" + self.alnum(16),
                "userName": user,
            }
        svc = r.choice(["ec2.amazonaws.com", "lambda.amazonaws.com", "ecs-tasks.amazonaws.com"])
        return {"type": "AWSService", "invokedBy": svc}

    # -- per-service request bodies ------------------------------------------------------------
    def s3_get_object(self, account: str, region: str) -> dict[str, Any]:
        r = self.rng
        bucket = r.choice(self.buckets) + "-" + account[-4:]
        key = r.choice(self.pool_objects)
        return {
            "eventSource": "s3.amazonaws.com",
            "eventName": "GetObject",
            "eventCategory": "Data",
            "readOnly": True,
            "managementEvent": False,
            "requestParameters": {
                "bucketName": bucket,
                "Host": f"{bucket}.s3.{region}.amazonaws.com",
                "key": key,
            },
            "responseElements": None,
            "additionalEventData": {
                "SignatureVersion": "SigV4",
                "CipherSuite": "TLS_AES_128_GCM_SHA256",
                "bytesTransferredIn": 0,
                "AuthenticationMethod": "AuthHeader",
                "x-amz-id-2": self.alnum(32, upper=False),
                "bytesTransferredOut": r.randrange(100, 10**8),
            },
            "resources": [
                {"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{bucket}/{key}"},
                {
                    "accountId": account,
                    "type": "AWS::S3::Bucket",
                    "ARN": f"arn:aws:s3:::{bucket}",
                },
            ],
        }

    def ec2_describe_instances(self, account: str, region: str) -> dict[str, Any]:
        r = self.rng
        ids = [{"instanceId": r.choice(self.pool_instances)} for _ in range(r.randrange(0, 3))]
        return {
            "eventSource": "ec2.amazonaws.com",
            "eventName": "DescribeInstances",
            "readOnly": True,
            "managementEvent": True,
            "eventCategory": "Management",
            "requestParameters": {
                "instancesSet": {"items": ids} if ids else {},
                "filterSet": {
                    "items": [
                        {
                            "name": "instance-state-name",
                            "valueSet": {"items": [{"value": r.choice(INSTANCE_STATES)}]},
                        }
                    ]
                }
                if r.random() < 0.5
                else {},
            },
            "responseElements": None,
        }

    def sts_assume_role(self, account: str, region: str) -> dict[str, Any]:
        role = self.rng.choice(self.roles)
        session = "session-" + self.hexs(12)
        return {
            "eventSource": "sts.amazonaws.com",
            "eventName": "AssumeRole",
            "readOnly": True,
            "managementEvent": True,
            "eventCategory": "Management",
            "requestParameters": {
                "roleArn": f"arn:aws:iam::{account}:role/{role}",
                "roleSessionName": session,
                "durationSeconds": 3600,
            },
            "responseElements": {
                "credentials": {
                    "accessKeyId": "ASIA" + self.alnum(16),
                    "sessionToken": "IQoJb3JpZ2luX2VjE" + self.alnum(48),
                    "expiration": "Jun 1, 2024, 1:00:00 PM",
                },
                "assumedRoleUser": {
                    "assumedRoleId": "AROA" + self.alnum(17) + ":" + session,
                    "arn": f"arn:aws:sts::{account}:assumed-role/{role}/{session}",
                },
            },
            "resources": [
                {
                    "accountId": account,
                    "type": "AWS::IAM::Role",
                    "ARN": f"arn:aws:iam::{account}:role/{role}",
                }
            ],
        }

    def kms_decrypt(self, account: str, region: str) -> dict[str, Any]:
        key = self.rng.choice(self.pool_kms)
        return {
            "eventSource": "kms.amazonaws.com",
            "eventName": "Decrypt",
            "readOnly": True,
            "managementEvent": True,
            "eventCategory": "Management",
            "requestParameters": {
                "encryptionAlgorithm": "SYMMETRIC_DEFAULT",
                "encryptionContext": {
                    "aws:lambda:FunctionArn": f"arn:aws:lambda:{region}:{account}:function:"
                    + self.rng.choice(["ingest", "api-authorizer", "thumbnailer"])
                },
            },
            "responseElements": None,
            "resources": [
                {
                    "accountId": account,
                    "type": "AWS::KMS::Key",
                    "ARN": f"arn:aws:kms:{region}:{account}:key/{key}",
                }
            ],
        }

    def lambda_invoke(self, account: str, region: str) -> dict[str, Any]:
        fn = self.rng.choice(["ingest", "api-authorizer", "thumbnailer", "nightly-report"])
        return {
            "eventSource": "lambda.amazonaws.com",
            "eventName": "Invoke",
            "readOnly": False,
            "managementEvent": False,
            "eventCategory": "Data",
            "requestParameters": {
                "functionName": f"arn:aws:lambda:{region}:{account}:function:{fn}",
                "sourceArn": f"arn:aws:sqs:{region}:{account}:{fn}-queue",
            },
            "responseElements": None,
            "resources": [
                {
                    "accountId": account,
                    "type": "AWS::Lambda::Function",
                    "ARN": f"arn:aws:lambda:{region}:{account}:function:{fn}",
                }
            ],
        }

    def iam_other(self, account: str, region: str) -> dict[str, Any]:
        """IAM calls that are not removals: reads, attaches, puts (with a policy document)."""
        r = self.rng
        role = r.choice(self.roles)
        name = r.choice(
            [
                "GetRole",
                "ListAttachedRolePolicies",
                "AttachRolePolicy",
                "PutRolePolicy",
                "GetPolicy",
            ]
        )
        params: dict[str, Any] = {"roleName": role}
        read_only = name.startswith(("Get", "List"))
        if name == "AttachRolePolicy":
            params["policyArn"] = "arn:aws:iam::aws:policy/ReadOnlyAccess"
        elif name == "PutRolePolicy":
            params["policyName"] = "inline-" + self.hexs(6)
            params["policyDocument"] = msgspec.json.encode(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": ["s3:GetObject", "s3:ListBucket"],
                            "Resource": f"arn:aws:s3:::{r.choice(self.buckets)}/*",
                        }
                    ],
                }
            ).decode()
        elif name == "GetPolicy":
            params = {"policyArn": f"arn:aws:iam::{account}:policy/app-{self.hexs(4)}"}
        return {
            "eventSource": "iam.amazonaws.com",
            "eventName": name,
            "awsRegion": "us-east-1",
            "readOnly": read_only,
            "managementEvent": True,
            "eventCategory": "Management",
            "requestParameters": params,
            "responseElements": None,
        }

    def iam_policy_write(self, account: str, region: str) -> dict[str, Any]:
        """The IAM calls the policy history records: inline puts, attaches, managed policies."""
        r = self.rng
        name = r.choice(POLICY_WRITE_NAMES)
        role = r.choice(self.roles)
        user = r.choice(self.users)
        policy_arn = f"arn:aws:iam::{account}:policy/app-{self.hexs(4)}"
        document = msgspec.json.encode(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["s3:GetObject", "s3:ListBucket", "kms:Decrypt"],
                        "Resource": f"arn:aws:s3:::{r.choice(self.buckets)}/*",
                    }
                ],
            }
        ).decode()
        params: dict[str, Any]
        response: dict[str, Any] | None = None
        who = {
            "User": ("userName", user),
            "Role": ("roleName", role),
            "Group": ("groupName", "ops"),
        }
        if name.startswith("Put") and name.endswith("PermissionsBoundary"):
            key, value = who["Role" if "Role" in name else "User"]
            params = {key: value, "permissionsBoundary": policy_arn}
        elif name.startswith("Put"):
            key, value = who[name[len("Put") : -len("Policy")]]
            params = {key: value, "policyName": "inline-" + self.hexs(6)}
            params["policyDocument"] = document
        elif name.startswith("Attach"):
            key, value = who[name[len("Attach") : -len("Policy")]]
            params = {key: value, "policyArn": policy_arn}
        elif name == "CreatePolicy":
            params = {"policyName": "app-" + self.hexs(4), "policyDocument": document}
            response = {"policy": {"arn": policy_arn, "defaultVersionId": "v1"}}
        else:  # CreatePolicyVersion
            params = {"policyArn": policy_arn, "policyDocument": document, "setAsDefault": True}
            response = {"policyVersion": {"versionId": f"v{r.randrange(2, 5)}"}}
        return {
            "eventSource": "iam.amazonaws.com",
            "eventName": name,
            "awsRegion": "us-east-1",
            "readOnly": False,
            "managementEvent": True,
            "eventCategory": "Management",
            "requestParameters": params,
            "responseElements": response,
        }

    def iam_removal(self, account: str, region: str) -> dict[str, Any]:
        r = self.rng
        name = r.choice(REMOVAL_NAMES)
        role = r.choice(self.roles)
        user = r.choice(self.users)
        policy_arn = f"arn:aws:iam::{account}:policy/app-{self.hexs(4)}"
        params: dict[str, Any]
        if name in ("DeletePolicy", "DeletePolicyVersion"):
            params = {"policyArn": policy_arn}
            if name == "DeletePolicyVersion":
                params["versionId"] = f"v{r.randrange(1, 5)}"
        elif name.startswith("Detach"):
            who = {"User": "userName", "Role": "roleName", "Group": "groupName"}
            kind = name[len("Detach") : -len("Policy")]
            params = {who[kind]: role if kind == "Role" else user, "policyArn": policy_arn}
        elif name.endswith("PermissionsBoundary"):
            params = {"roleName": role} if "Role" in name else {"userName": user}
        else:
            kind = name[len("Delete") : -len("Policy")]
            key = {"User": "userName", "Role": "roleName", "Group": "groupName"}[kind]
            params = {key: role if kind == "Role" else user, "policyName": "inline-" + self.hexs(6)}
        return {
            "eventSource": "iam.amazonaws.com",
            "eventName": name,
            "awsRegion": "us-east-1",
            "readOnly": False,
            "managementEvent": True,
            "eventCategory": "Management",
            "requestParameters": params,
            "responseElements": None,
        }

    # -- whole records -------------------------------------------------------------------------
    def record(
        self, body: Callable[[str, str], dict[str, Any]], account: str, when: datetime
    ) -> dict[str, Any]:
        r = self.rng
        region = r.choice(REGIONS)
        b = body(account, region)
        region = b.pop("awsRegion", region)
        identity = self.identity()
        ua = identity.get("invokedBy") or r.choice(USER_AGENTS)
        source = b["eventSource"]
        rec: dict[str, Any] = {
            "eventVersion": r.choice(("1.08", "1.09", "1.10")),
            "userIdentity": identity,
            "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventSource": source,
            "eventName": b.pop("eventName"),
            "awsRegion": region,
            "sourceIPAddress": ua if ua.endswith(".amazonaws.com") else r.choice(self.pool_ips),
            "userAgent": ua,
            "requestParameters": b.pop("requestParameters"),
            "responseElements": b.pop("responseElements"),
            "requestID": self.uid() if r.random() < 0.5 else self.alnum(16),
            "eventID": self.uid(),
        }
        rec.update(b)
        rec["eventType"] = "AwsApiCall"
        rec["recipientAccountId"] = account
        if r.random() < 0.1:
            rec["errorCode"] = "AccessDenied"
            rec["errorMessage"] = "User is not authorized to perform this operation"
        if r.random() < 0.1:
            rec["vpcEndpointId"] = "vpce-0" + self.hexs(16)
        if "invokedBy" not in identity and ua != "AWS Internal":  # AWS's own calls carry none
            host = source.replace(".amazonaws.com", f".{region}.amazonaws.com")
            rec["tlsDetails"] = {
                "tlsVersion": "TLSv1.3" if r.random() < 0.7 else "TLSv1.2",
                "cipherSuite": r.choice(TLS_CIPHERS),
                "clientProvidedHostHeader": host,
            }
        if ua == "console.amazonaws.com":
            rec["sessionCredentialFromConsole"] = "true"
        return rec


def _bodies(gen: _Gen) -> tuple[list[Callable[[str, str], dict[str, Any]]], list[float]]:
    return (
        [
            gen.s3_get_object,
            gen.ec2_describe_instances,
            gen.sts_assume_role,
            gen.kms_decrypt,
            gen.lambda_invoke,
        ],
        [0.26, 0.26, 0.14, 0.22, 0.12],
    )


def build_file(spec: SetSpec, index: int) -> bytes:
    """The gzip'd bytes of file ``index`` of ``spec`` (deterministic)."""
    raw = msgspec.json.encode({"Records": file_records(spec, index)})
    return gzip.compress(raw, compresslevel=6, mtime=0)


def file_records(spec: SetSpec, index: int) -> list[dict[str, Any]]:
    """The records of file ``index`` of ``spec`` (deterministic)."""
    rng = random.Random(f"{spec.seed}:{spec.name}:{index}")
    gen = _Gen(random.Random(spec.seed))  # same accounts/roles in every file of a set
    gen.rng = rng
    bodies, weights = _bodies(gen)
    start = datetime(2024, 6, 1, tzinfo=UTC) + timedelta(minutes=5 * index)
    account = rng.choice(gen.accounts)
    gen.new_file(account, start)
    removal_at = set(rng.sample(range(spec.records), min(spec.removals_per_file, spec.records)))
    records = []
    for i in range(spec.records):
        when = start + timedelta(seconds=rng.uniform(0, 300))
        roll = rng.random()
        body: Callable[[str, str], dict[str, Any]]
        if i in removal_at or roll < spec.removal_share:
            body = gen.iam_removal
        elif roll < spec.removal_share + spec.policy_share:
            body = gen.iam_policy_write
        elif roll < spec.removal_share + spec.policy_share + spec.iam_share:
            body = gen.iam_other
        else:
            body = rng.choices(bodies, weights)[0]
        records.append(gen.record(body, account, when))
    return records


def ensure_set(spec: SetSpec, cache: Path = CACHE) -> list[Path]:
    """Generate ``spec`` into ``cache/<name>/`` unless an up-to-date copy exists; return paths."""
    folder = cache / spec.name
    manifest = folder / "manifest.json"
    want = msgspec.json.encode({"generator": GENERATOR_VERSION, **asdict(spec)})
    paths = [folder / f"{spec.name}-{i:04d}.json.gz" for i in range(spec.files)]
    if manifest.exists() and manifest.read_bytes() == want and all(p.exists() for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.json.gz"):
        stale.unlink()
    for i, path in enumerate(paths):
        path.write_bytes(build_file(spec, i))
    manifest.write_bytes(want)
    return paths


def ensure_big_file(
    megabytes: int = 50, spec: SetSpec = DEFAULT, cache: Path = CACHE
) -> tuple[Path, int]:
    """One gzip'd ``{"Records": [...]}`` file of at most ``megabytes`` MB compressed (CloudTrail's
    largest), made of the records of ``spec``'s files in turn; returns (path, record count).

    Written as a stream (one gzip member, compression level 6), cached like the sets."""
    folder = cache / f"big-{megabytes}mb"
    path = folder / f"big-{megabytes}mb.json.gz"
    manifest = folder / "manifest.json"
    stem = {"generator": GENERATOR_VERSION, "megabytes": megabytes, **asdict(spec)}
    if manifest.exists() and path.exists():
        saved = msgspec.json.decode(manifest.read_bytes())
        if {k: v for k, v in saved.items() if k != "records_written"} == stem:
            return path, int(saved["records_written"])
    folder.mkdir(parents=True, exist_ok=True)
    limit = megabytes * 1_000_000
    packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    written = records = index = 0
    step = 0  # compressed bytes of the last batch: stop before the next one could pass the limit
    with path.open("wb") as out:

        def put(data: bytes) -> None:
            nonlocal written
            written += len(data)
            out.write(data)

        put(packer.compress(b'{"Records":['))
        while written + 2 * step < limit:
            batch = file_records(spec, index)
            before = written
            text = msgspec.json.encode(batch)[1:-1]
            put(packer.compress((b"," if index else b"") + text))
            put(packer.flush(zlib.Z_SYNC_FLUSH))
            step = max(step, written - before)
            records += len(batch)
            index += 1
        put(packer.compress(b"]}"))
        put(packer.flush())
    manifest.write_bytes(msgspec.json.encode({**stem, "records_written": records}))
    return path, records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--name", help="generate one custom set with this name")
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=SetSpec.seed)
    parser.add_argument("--iam-share", type=float, default=SetSpec.iam_share)
    parser.add_argument("--removal-share", type=float, default=0.0)
    parser.add_argument("--removals-per-file", type=int, default=0)
    args = parser.parse_args(argv)
    if args.name:
        specs: tuple[SetSpec, ...] = (
            SetSpec(
                name=args.name,
                files=args.files,
                records=args.records,
                seed=args.seed,
                iam_share=args.iam_share,
                removal_share=args.removal_share,
                removals_per_file=args.removals_per_file,
            ),
        )
    else:
        specs = DEFAULT_SETS
    for spec in specs:
        paths = ensure_set(spec)
        size = sum(p.stat().st_size for p in paths)
        print(f"{spec.name}: {len(paths)} files, {size / 1e6:.1f} MB gzip in {paths[0].parent}")


if __name__ == "__main__":
    main()
