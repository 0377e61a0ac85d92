"""Integration fixtures: a real moto server over HTTP on 127.0.0.1.

moto's in-process mock patches botocore and does not work with aiobotocore, so every integration
test talks to a ``ThreadedMotoServer`` on a free port instead, exactly as the daemon would talk to
AWS.  The session gets dummy credentials and ``AWS_ENDPOINT_URL`` pointing at the server, so no
client can reach real AWS by accident.

Fixtures:

``moto_server`` (session)
    The running server: ``.endpoint_url``, ``.region``, ``.reset()``.
``clean_moto`` (function)
    The same server with all its state (buckets, queues, topics, rules ...) reset before the test.
``boto3_session_clients`` (session)
    Synchronous boto3 clients (``.s3``, ``.sqs``, ``.sns``, ``.events``, ``.iam``) against it, for
    arranging and inspecting test state.
"""

from __future__ import annotations

import logging
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from moto.dynamodb.responses import DynamoHandler
from moto.server import ThreadedMotoServer

from tests.integration.proxy import FaultProxy

if TYPE_CHECKING:
    from mypy_boto3_events.client import EventBridgeClient
    from mypy_boto3_iam.client import IAMClient
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_sns.client import SNSClient
    from mypy_boto3_sqs.client import SQSClient

    from tests.integration.proxy import FaultProxy

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account

_DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    # Never read a developer's ~/.aws: point the SDKs at files that do not exist.
    "AWS_CONFIG_FILE": "/nonexistent/trailguard-tests/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/trailguard-tests/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}
_UNSET_ENV = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")


@dataclass(frozen=True)
class MotoServer:
    host: str
    port: int
    region: str = REGION
    account_id: str = ACCOUNT_ID

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        """Forget every resource on the server (moto's ``/moto-api/reset``)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status != 200:
                raise RuntimeError(f"moto reset failed: HTTP {response.status}")


@dataclass(frozen=True)
class Boto3Clients:
    s3: S3Client
    sqs: SQSClient
    sns: SNSClient
    events: EventBridgeClient
    iam: IAMClient


def _serialise_dynamodb(mp: pytest.MonkeyPatch) -> None:
    """DynamoDB applies each request to an item atomically: a conditional write is checked and
    made in one step.  moto's threaded server runs requests in parallel threads with no lock,
    so two conditional claims of one item can both pass their check (seen under load, four test
    workers on two cores).  One lock around moto's DynamoDB requests gives the tests the
    service's guarantee (and nothing more: requests still interleave between calls)."""
    lock = threading.Lock()
    original = DynamoHandler.call_action

    def call_action(self: DynamoHandler) -> Any:
        with lock:
            return original(self)

    mp.setattr(DynamoHandler, "call_action", call_action)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """A moto server on 127.0.0.1 and a free port, with dummy AWS settings for the session."""
    werkzeug_log = logging.getLogger("werkzeug")
    level = werkzeug_log.level
    werkzeug_log.setLevel(logging.WARNING)  # one INFO line per request otherwise
    with pytest.MonkeyPatch.context() as mp:
        for name, value in _DUMMY_ENV.items():
            mp.setenv(name, value)
        for name in _UNSET_ENV:
            mp.delenv(name, raising=False)
        _serialise_dynamodb(mp)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()  # returns once the socket listens
        try:
            host, port = server.get_host_and_port()
            moto = MotoServer(host=host, port=port)
            mp.setenv("AWS_ENDPOINT_URL", moto.endpoint_url)
            yield moto
        finally:
            server.stop()
            werkzeug_log.setLevel(level)


@pytest.fixture
def clean_moto(moto_server: MotoServer) -> MotoServer:
    """The moto server, emptied before the test runs."""
    moto_server.reset()
    return moto_server


@pytest.fixture(scope="session")
def boto3_session_clients(moto_server: MotoServer) -> Boto3Clients:
    session = boto3.session.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name=moto_server.region,
    )
    config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5)
    url = moto_server.endpoint_url
    return Boto3Clients(
        s3=session.client("s3", endpoint_url=url, config=config),
        sqs=session.client("sqs", endpoint_url=url, config=config),
        sns=session.client("sns", endpoint_url=url, config=config),
        events=session.client("events", endpoint_url=url, config=config),
        iam=session.client("iam", endpoint_url=url, config=config),
    )


# The bucket the daemon tests' trail lands in (test_daemon.py, test_daemon_ops.py).
TRAIL_BUCKET = "trail-bucket"


@pytest.fixture
def aws(clean_moto: MotoServer, boto3_session_clients: Boto3Clients) -> Boto3Clients:
    """A clean moto with the trail bucket (modules may override it with their own)."""
    boto3_session_clients.s3.create_bucket(Bucket=TRAIL_BUCKET)
    return boto3_session_clients


@pytest.fixture
def proxy(clean_moto: MotoServer) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the clean moto server."""
    with FaultProxy(clean_moto.endpoint_url) as running:
        yield running
