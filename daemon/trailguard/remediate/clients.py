"""AWS clients for the account a job acts in: :class:`AwsClients`, per account through the role
``[remediation] role_arn_template`` names (assumed with :func:`trailguard.aws.assume_role`), or
the daemon's own credentials for its own account.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Final

from aiobotocore.config import AioConfig

from trailguard.aws import (
    USER_AGENT_EXTRA,
    assume_role,
    caller_account,
    client_kwargs,
    make_session,
)
from trailguard.config import Config
from trailguard.remediate.actions import NoRoleForAccount
from trailguard.telemetry.logging import get_logger

if TYPE_CHECKING:
    from aiobotocore.session import AioSession
    from types_aiobotocore_cloudtrail.client import CloudTrailClient
    from types_aiobotocore_iam.client import IAMClient
    from types_aiobotocore_sns.client import SNSClient
    from types_aiobotocore_sts.client import STSClient

__all__ = ["IAM_REGION", "AwsClients"]

log = get_logger(__name__)

IAM_REGION: Final = "us-east-1"  # IAM is global; its endpoint lives in us-east-1
_REFRESH_MARGIN_SECS: Final = 300.0
_ASSUME_DURATION_SECS: Final = 3600


class _Entry:
    def __init__(self, stack: AsyncExitStack, client: Any, expires: float | None) -> None:
        self.stack = stack
        self.client = client
        self.expires = expires


class AwsClients:
    """:class:`~trailguard.remediate.actions.ClientSource` for real AWS (or moto).

    With ``role_arn_template`` set, every account's clients use that role, assumed through STS
    (credentials cached until ``_REFRESH_MARGIN_SECS`` + one job timeout before they expire).
    Without it, the daemon's own credentials serve its own account only (learned once through
    GetCallerIdentity); any other account raises :class:`NoRoleForAccount`.  Clients carry the
    user-agent marker (``aws.USER_AGENT_EXTRA``) and IAM clients use botocore's adaptive retries.
    """

    def __init__(
        self,
        config: Config,
        *,
        session: AioSession | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._remediation = config.remediation
        self._kwargs = client_kwargs(config.aws.region, config.aws.endpoint_url)
        self._endpoint_url = config.aws.endpoint_url
        self._session = session or make_session()
        self._clock = clock
        self._clients: dict[tuple[str, str, str], _Entry] = {}
        self._retired: list[tuple[float, _Entry]] = []
        self._own_account: str | None = None
        self._lock = asyncio.Lock()
        self._stack = AsyncExitStack()
        self._sts: STSClient | None = None

    def _config(self, service: str) -> AioConfig:
        retries: Any = (
            {"mode": "adaptive", "max_attempts": 5}
            if service == "iam"
            else {"mode": "standard", "max_attempts": 3}
        )
        return AioConfig(
            user_agent_extra=USER_AGENT_EXTRA,
            retries=retries,
            connect_timeout=10,
            read_timeout=30,
            max_pool_connections=10,
        )

    async def _default_sts(self) -> STSClient:
        if self._sts is None:
            kwargs = dict(self._kwargs)
            kwargs.setdefault("region_name", IAM_REGION)
            self._sts = await self._stack.enter_async_context(
                self._session.create_client("sts", config=self._config("sts"), **kwargs)
            )
        return self._sts

    async def own_account(self) -> str:
        if self._own_account is None:
            self._own_account = await caller_account(await self._default_sts(), stage="remediate")
        return self._own_account

    async def iam(self, account_id: str) -> IAMClient:
        client: IAMClient = await self._client("iam", account_id, IAM_REGION)
        return client

    async def cloudtrail(self, account_id: str, region: str) -> CloudTrailClient:
        client: CloudTrailClient = await self._client("cloudtrail", account_id, region)
        return client

    async def sns(self, region: str) -> SNSClient:
        """SNS with the daemon's own credentials (the topic is trailguard's, not the target's)."""
        client: SNSClient = await self._client("sns", "", region)
        return client

    async def _client(self, service: str, account_id: str, region: str) -> Any:
        async with self._lock:
            now = self._clock()
            self._close_retired_soon(now)
            key = (service, account_id, region)
            entry = self._clients.get(key)
            if entry is not None and (
                entry.expires is None or entry.expires - now > self._margin()
            ):
                return entry.client
            if entry is not None:  # credentials about to expire: new client, old one retires
                self._retired.append((now + 2 * self._remediation.job_timeout_secs, entry))
                del self._clients[key]
            credentials, expires = await self._credentials(account_id)
            kwargs = dict(self._kwargs)
            kwargs["region_name"] = (
                region if service != "iam" else self._kwargs.get("region_name", region)
            )
            kwargs.update(credentials)
            stack = AsyncExitStack()
            session: Any = self._session  # create_client is overloaded per literal service name
            client = await stack.enter_async_context(
                session.create_client(service, config=self._config(service), **kwargs)
            )
            self._clients[key] = _Entry(stack, client, expires)
            return client

    def _margin(self) -> float:
        return _REFRESH_MARGIN_SECS + self._remediation.job_timeout_secs

    async def _credentials(self, account_id: str) -> tuple[dict[str, str], float | None]:
        """Client keyword arguments with credentials for ``account_id`` ("" = the daemon's)."""
        template = self._remediation.role_arn_template
        if not account_id:
            return {}, None
        if not template:
            if account_id != await self.own_account():
                raise NoRoleForAccount(account_id)
            return {}, None
        role_arn = template.format(account_id=account_id)
        assumed = await assume_role(
            await self._default_sts(),
            role_arn,
            session_name=self._remediation.role_session_name,
            duration_secs=_ASSUME_DURATION_SECS,
            external_id=self._remediation.external_id,
            stage="remediate",
        )
        log.info(
            "remediation.role_assumed",
            account_id=account_id,
            role_arn=role_arn,
            expires=dt.datetime.fromtimestamp(assumed.expires, dt.UTC).isoformat(),
        )
        return assumed.client_kwargs, assumed.expires

    def _close_retired_soon(self, now: float) -> None:
        due = [entry for at, entry in self._retired if at <= now]
        self._retired = [(at, entry) for at, entry in self._retired if at > now]
        for entry in due:
            task = asyncio.get_running_loop().create_task(entry.stack.aclose())
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def close(self) -> None:
        entries = [*self._clients.values(), *(entry for _, entry in self._retired)]
        self._clients.clear()
        self._retired.clear()
        for entry in entries:
            with contextlib.suppress(Exception):
                await entry.stack.aclose()
        await self._stack.aclose()
