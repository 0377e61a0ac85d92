"""The demo's AWS: an embedded moto server on loopback, provisioned like a real account.

A trail bucket whose notifications reach an SQS queue (with a dead-letter queue), and IAM users,
roles, groups and managed policies carrying the guardrails the demo's attacker will strip.
Everything is created through the real AWS APIs (boto3 against the emulator's HTTP endpoint), so
the daemon meets exactly what it would meet in an account.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from trailguard.demo.records import ACCOUNT
from trailguard.errors import TrailguardError

REGION = "us-east-1"
BUCKET = "demo-org-trail"
QUEUE = "trailguard-demo"
DLQ = "trailguard-demo-dlq"

DENY_EXFIL = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyDataExfiltration",
                "Effect": "Deny",
                "Action": ["s3:PutBucketPolicy", "s3:PutBucketAcl", "s3:PutObjectAcl"],
                "Resource": "*",
            }
        ],
    },
    indent=2,
)
DENY_IAM_WRITE = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Action": ["iam:Create*", "iam:Put*", "iam:Attach*", "iam:Update*"],
                "Resource": "*",
            }
        ],
    }
)
LOGS_WRITE = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": "arn:aws:logs:*:*:*",
            }
        ],
    }
)
READ_ONLY_OPS = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Action": "ec2:Terminate*", "Resource": "*"}],
    }
)
# The payments role may read its bucket but never the cardholder data: the attacker's rewrite
# drops the Deny (a PutRolePolicy that looks like routine maintenance).
PAYMENTS_GUARD = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadPayments",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:ListBucket"],
                "Resource": ["arn:aws:s3:::payments-data", "arn:aws:s3:::payments-data/*"],
            },
            {
                "Sid": "NeverCardholderData",
                "Effect": "Deny",
                "Action": "s3:*",
                "Resource": "arn:aws:s3:::payments-data/cardholder/*",
            },
        ],
    }
)
PAYMENTS_WEAKENED = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadPayments",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:ListBucket"],
                "Resource": ["arn:aws:s3:::payments-data", "arn:aws:s3:::payments-data/*"],
            }
        ],
    }
)
ASSUME_LAMBDA = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)
DENY_EXFIL_ARN = f"arn:aws:iam::{ACCOUNT}:policy/DenyDataExfil"


class DemoError(TrailguardError):
    """The demo could not start (moto missing, no free port ...)."""


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when it is free on 127.0.0.1, else any free port."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            bound: int = sock.getsockname()[1]
            return bound
    raise DemoError("no free TCP port on 127.0.0.1")


@dataclass
class Emulator:
    """A running moto server and boto3 clients bound to it."""

    server: Any
    endpoint_url: str
    clients: dict[str, Any]
    queue_url: str

    @classmethod
    def start(cls) -> Emulator:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            raise DemoError(
                "the demo needs moto's server: pip install 'trailguard[demo]' "
                "(make demo installs it)"
            ) from exc
        import boto3

        # The demo's credentials are the emulator's dummies; nothing here reaches AWS.
        os.environ.update(
            {
                "AWS_ACCESS_KEY_ID": "demo",
                "AWS_SECRET_ACCESS_KEY": "demo",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
            }
        )
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            os.environ.pop(name, None)
        # The emulator's own request log would drown the demo's output.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        endpoint = f"http://127.0.0.1:{port}"
        session = boto3.session.Session(region_name=REGION)
        clients = {
            name: session.client(name, endpoint_url=endpoint)
            for name in ("s3", "sqs", "iam", "sts")
        }
        emulator = cls(server=server, endpoint_url=endpoint, clients=clients, queue_url="")
        emulator.provision()
        return emulator

    def stop(self) -> None:
        self.server.stop()

    def provision(self) -> None:
        s3, sqs, iam = self.clients["s3"], self.clients["sqs"], self.clients["iam"]
        s3.create_bucket(Bucket=BUCKET)
        dlq_url = sqs.create_queue(QueueName=DLQ)["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})
        self.queue_url = sqs.create_queue(
            QueueName=QUEUE, Attributes={"RedrivePolicy": redrive, "VisibilityTimeout": "60"}
        )["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        s3.put_bucket_notification_configuration(
            Bucket=BUCKET,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": queue_arn,
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {
                            "Key": {"FilterRules": [{"Name": "prefix", "Value": "AWSLogs/"}]}
                        },
                    }
                ]
            },
        )
        # IAM: the guardrails the scenarios strip, and the pipeline's own churn.
        iam.create_policy(PolicyName="DenyDataExfil", PolicyDocument=DENY_EXFIL)
        iam.create_role(RoleName="prod-app", AssumeRolePolicyDocument=ASSUME_LAMBDA)
        iam.attach_role_policy(RoleName="prod-app", PolicyArn=DENY_EXFIL_ARN)
        iam.create_role(RoleName="payments", AssumeRolePolicyDocument=ASSUME_LAMBDA)
        iam.put_role_policy(
            RoleName="payments", PolicyName="data-guard", PolicyDocument=PAYMENTS_GUARD
        )
        iam.create_role(RoleName="lambda-exec", AssumeRolePolicyDocument=ASSUME_LAMBDA)
        iam.put_role_policy(
            RoleName="lambda-exec", PolicyName="logs-write", PolicyDocument=LOGS_WRITE
        )
        iam.create_user(UserName="build-bot")
        iam.put_user_policy(
            UserName="build-bot", PolicyName="deny-iam-write", PolicyDocument=DENY_IAM_WRITE
        )
        iam.create_group(GroupName="operators")
        iam.put_group_policy(
            GroupName="operators", PolicyName="no-terminate", PolicyDocument=READ_ONLY_OPS
        )
        for user in ("mallory", "intern"):
            iam.create_user(UserName=user)
