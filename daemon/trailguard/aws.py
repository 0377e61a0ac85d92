"""AWS clients (aiobotocore) and the mapping of AWS errors into trailguard's error tree.

Credentials, profiles, region and endpoint come from botocore's standard chain (AWS_PROFILE,
AWS_REGION, AWS_ENDPOINT_URL, instance/container roles ...); the config file may set only
``[aws] region`` and ``endpoint_url``.  trailguard never reads or logs a credential itself.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

import aiobotocore.session
from aiobotocore.config import AioConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from trailguard import __version__
from trailguard.errors import OperationError, PermanentError, StartupError, TransientError

USER_AGENT_EXTRA = f"trailguard/{__version__}"

# Error codes that will not change by trying again.  Everything else from a 4xx is treated as
# permanent too; throttling codes and 5xx are transient.
_THROTTLING = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeoutException",
    "PriorRequestNotComplete",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "KMS.ThrottlingException",
}


def make_session() -> aiobotocore.session.AioSession:
    return aiobotocore.session.get_session()


def check_region(session: aiobotocore.session.AioSession, region: str | None) -> str:
    """The region clients will use, or a StartupError saying how to set one."""
    resolved = region or session.get_config_variable("region")
    if not resolved:
        raise StartupError(
            "no AWS region: set [aws] region in the config, or AWS_REGION / AWS_DEFAULT_REGION, "
            "or a region in the AWS profile"
        )
    return str(resolved)


def client_config(*, read_timeout: float = 60, max_pool: int = 32) -> AioConfig:
    """botocore's own standard retries handle the first few throttles; ours wrap them.

    Four attempts per call, unless ``AWS_MAX_ATTEMPTS`` (botocore's own setting: attempts in
    all) says otherwise."""
    retries: Any = {"mode": "standard"}
    if not os.environ.get("AWS_MAX_ATTEMPTS"):
        retries["max_attempts"] = 3  # retries after the first attempt: 4 in all
    return AioConfig(
        user_agent_extra=USER_AGENT_EXTRA,
        retries=retries,
        connect_timeout=10,
        read_timeout=read_timeout,
        max_pool_connections=max_pool,
    )


def client_kwargs(region: str | None, endpoint_url: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if region:
        kwargs["region_name"] = region
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    return kwargs


def error_code(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return str(error.get("Code") or "Unknown")


def classify(exc: BaseException, *, stage: str, what: str) -> OperationError:
    """Map an exception from botocore/aiohttp into Transient/PermanentError."""
    if isinstance(exc, OperationError):
        return exc
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        message = exc.response.get("Error", {}).get("Message") or code
        detail = f"{what}: {code} ({status}): {message}"
        if code in _THROTTLING or status >= 500 or status == 429:
            return TransientError(stage, code, detail)
        return PermanentError(stage, code, detail)
    if isinstance(exc, NoCredentialsError):
        return PermanentError(stage, "NoCredentials", f"{what}: no AWS credentials found")
    if isinstance(
        exc,
        EndpointConnectionError | ConnectionClosedError | ConnectTimeoutError | ReadTimeoutError,
    ):
        return TransientError(stage, "connection", f"{what}: {exc}")
    if isinstance(exc, asyncio.TimeoutError | ConnectionError | OSError):
        return TransientError(stage, "connection", f"{what}: {type(exc).__name__}: {exc}")
    if isinstance(exc, BotoCoreError):
        return TransientError(stage, type(exc).__name__, f"{what}: {exc}")
    # aiohttp raises its own ClientError family for resets and payload errors.
    module = type(exc).__module__
    if module.startswith("aiohttp"):
        return TransientError(stage, "connection", f"{what}: {type(exc).__name__}: {exc}")
    return PermanentError(stage, type(exc).__name__, f"{what}: {type(exc).__name__}: {exc}")


@dataclass(frozen=True, slots=True)
class AssumedRole:
    """Credentials for one assumed role: client keyword arguments and when they expire."""

    role_arn: str
    client_kwargs: dict[str, str]
    expires: float


async def caller_account(sts: Any, *, stage: str) -> str:
    """The account of the credentials ``sts`` was made with (sts:GetCallerIdentity)."""
    try:
        identity = await sts.get_caller_identity()
    except Exception as exc:
        raise classify(exc, stage=stage, what="sts:GetCallerIdentity") from exc
    return str(identity["Account"])


async def assume_role(
    sts: Any,
    role_arn: str,
    *,
    session_name: str,
    duration_secs: int,
    external_id: str | None,
    stage: str,
) -> AssumedRole:
    """sts:AssumeRole -- the one place trailguard assumes a role (remediation and snapshots);
    the credentials go only into client keyword arguments, never into a log or an error."""
    request: dict[str, Any] = {
        "RoleArn": role_arn,
        "RoleSessionName": session_name,
        "DurationSeconds": duration_secs,
    }
    if external_id:
        request["ExternalId"] = external_id
    try:
        response = await sts.assume_role(**request)
    except Exception as exc:
        raise classify(exc, stage=stage, what=f"sts:AssumeRole {role_arn}") from exc
    creds = response["Credentials"]
    return AssumedRole(
        role_arn=role_arn,
        client_kwargs={
            "aws_access_key_id": creds["AccessKeyId"],
            "aws_secret_access_key": creds["SecretAccessKey"],
            "aws_session_token": creds["SessionToken"],
        },
        expires=creds["Expiration"].timestamp(),
    )
