"""The shared table: one aiobotocore DynamoDB client, the error mapping, the readiness check, the
schema item and ``trailguard state init`` (docs/DYNAMODB.md).

Every call the stores make goes through :meth:`DynamoTable.call`, which maps botocore's errors
into trailguard's tree: a failed condition is :class:`ConditionFailed` (the stores decide what it
means: "not new", "lease lost" ...), everything else a :class:`~trailguard.errors.StateError`
naming the table and the operation (:func:`trailguard.aws.classify` says why).  The calls used
are exactly the permissions contract of docs/DYNAMODB.md: GetItem, PutItem, UpdateItem,
DeleteItem, Query, TransactWriteItems (whose parts need PutItem/UpdateItem/ConditionCheckItem)
and DescribeTable; :func:`create_table` alone (``state init``, an administrator's credentials)
uses CreateTable, UpdateTimeToLive, DescribeTimeToLive and UpdateContinuousBackups.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError

from trailguard.aws import USER_AGENT_EXTRA, check_region, classify, client_kwargs, make_session
from trailguard.errors import StateError
from trailguard.telemetry.logging import get_logger

if TYPE_CHECKING:
    from aiobotocore.session import AioSession
    from types_aiobotocore_dynamodb.client import DynamoDBClient

    from trailguard.config import Config

__all__ = [
    "INDEXES",
    "SCHEMA",
    "ConditionFailed",
    "DynamoTable",
    "Item",
    "create_table",
    "n",
    "num",
    "opt_n",
    "opt_s",
    "replica_id",
    "s",
]

log = get_logger(__name__)

#: What a raw DynamoDB item is here: attribute name -> ``{"S": ...}`` / ``{"N": ...}`` ...
Item = dict[str, Any]

#: The table's secondary indexes: name -> (partition key, sort key).
INDEXES: Final = {"claim": ("gsi1pk", "gsi1sk"), "by_state": ("gsi2pk", "gsi2sk")}
#: Each component's schema version in the ``META``/``SCHEMA`` item (docs/DYNAMODB.md section 8).
SCHEMA: Final = {"dedup": 1, "ledger": 1, "history": 1, "jobs": 1}
#: How many calls one store keeps in flight at once (a batch of keys becomes this many calls).
CONCURRENCY: Final = 16


class ConditionFailed(Exception):
    """A conditional write's condition was false (or a transaction was cancelled by one)."""

    def __init__(self, item: Item | None = None) -> None:
        super().__init__("condition failed")
        self.item = item  # the item as it is, when DynamoDB returned it


def s(value: str) -> dict[str, str]:
    return {"S": value}


def num(value: float | int) -> dict[str, str]:
    """A Number attribute: ``repr`` of the float (exact, and read back equal)."""
    if isinstance(value, bool):
        raise TypeError("a bool is not a number here")
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def n(item: Mapping[str, Any], name: str) -> float:
    """The Number attribute ``name`` of ``item`` (KeyError when absent)."""
    return float(Decimal(item[name]["N"]))


def opt_n(item: Mapping[str, Any], name: str) -> float | None:
    value = item.get(name)
    return None if value is None or "N" not in value else float(Decimal(value["N"]))


def opt_s(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    return None if value is None or "S" not in value else str(value["S"])


def replica_id() -> str:
    """This process's identity in ``owner`` attributes: ``<pod or host name>/<random>``, new at
    every start (docs/DYNAMODB.md: unique per process start)."""
    host = os.environ.get("HOSTNAME") or socket.gethostname() or "host"
    return f"{host[:64]}/{secrets.token_hex(6)}"


class DynamoTable:
    """The table trailguard's DynamoDB stores share (one client, one owner id, one clock)."""

    def __init__(
        self,
        client: DynamoDBClient,
        name: str,
        *,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.name = name
        self.owner = owner or replica_id()
        self.clock = clock
        self._slots = asyncio.Semaphore(CONCURRENCY)

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        config: Config,
        *,
        session: AioSession | None = None,
        check: bool = True,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
    ) -> AsyncIterator[DynamoTable]:
        """A client for ``[state.dynamodb] table`` (region and endpoint from ``[aws]``).

        ``check``: the table is ready (DescribeTable) and its schema item known (created if
        absent); a table that is missing, not active, of another shape, or written by a newer
        trailguard raises :class:`StateError`.
        """
        session = session or make_session()
        kwargs = client_kwargs(check_region(session, config.aws.region), config.aws.endpoint_url)
        async with session.create_client("dynamodb", config=_client_config(), **kwargs) as client:
            table = cls(client, config.state.dynamodb.table, clock=clock, owner=owner)
            if check:
                await table.check_ready()
                await table.check_schema()
            yield table

    # -- calls ------------------------------------------------------------------------------

    async def call(self, operation: str, **request: Any) -> dict[str, Any]:
        """One DynamoDB call (``get_item`` ...) on this table; errors mapped (module doc)."""
        if operation != "transact_write_items":
            request.setdefault("TableName", self.name)
        method = getattr(self.client, operation)
        async with self._slots:
            try:
                response: dict[str, Any] = await method(**request)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code == "ConditionalCheckFailedException":
                    found: Item | None = exc.response.get("Item")  # type: ignore[assignment]
                    raise ConditionFailed(found) from None
                if code == "TransactionCanceledException" and _cancelled_by_condition(exc):
                    raise ConditionFailed() from None
                raise self.error(exc, operation) from exc
            except Exception as exc:
                raise self.error(exc, operation) from exc
        return response

    def error(self, exc: BaseException, operation: str) -> StateError:
        op = classify(exc, stage="state", what=f"dynamodb {_api_name(operation)}")
        return StateError(f"DynamoDB table {self.name}: {op.detail}")

    async def gather(self, calls: Sequence[Any]) -> list[Any]:
        """Run coroutines concurrently (bounded by the table's slots); the first error is
        raised once all are done, so none is left running."""
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return list(results)

    async def query_all(self, *, limit_items: int | None = None, **request: Any) -> list[Item]:
        """Every item a Query returns, following ``LastEvaluatedKey`` (at most ``limit_items``)."""
        items: list[Item] = []
        while True:
            response = await self.call("query", **request)
            items.extend(response.get("Items", []))
            last = response.get("LastEvaluatedKey")
            if not last or (limit_items is not None and len(items) >= limit_items):
                return items if limit_items is None else items[:limit_items]
            request["ExclusiveStartKey"] = last

    # -- readiness and schema -----------------------------------------------------------------

    async def check_ready(self) -> None:
        """DescribeTable: the table ``ACTIVE``, keyed ``pk``/``sk``, both indexes ``ACTIVE``."""
        try:
            response = await self.client.describe_table(TableName=self.name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                raise StateError(
                    f"DynamoDB table {self.name} does not exist: create it with "
                    "`trailguard state init --config FILE` (administrator credentials) or the "
                    "CloudFormation stack config/aws/trailguard.yaml"
                ) from None
            raise self.error(exc, "describe_table") from exc
        except Exception as exc:
            raise self.error(exc, "describe_table") from exc
        problem = table_problem(dict(response["Table"]))
        if problem is not None:
            raise StateError(f"DynamoDB table {self.name}: {problem}")

    async def check_schema(self) -> None:
        """The ``META``/``SCHEMA`` item: created when absent; newer components are refused."""
        key = {"pk": s("META"), "sk": s("SCHEMA")}
        response = await self.call("get_item", Key=key, ConsistentRead=True)
        item = response.get("Item")
        if item is None:
            try:
                await self.call(
                    "put_item",
                    Item={**key, **{name: num(v) for name, v in SCHEMA.items()}},
                    ConditionExpression="attribute_not_exists(pk)",
                )
            except ConditionFailed:
                pass  # another replica wrote it first: read it below
            else:
                return
            item = (await self.call("get_item", Key=key, ConsistentRead=True)).get("Item") or {}
        for component, known in SCHEMA.items():
            found = opt_n(item, component)
            if found is not None and found > known:
                raise StateError(
                    f"DynamoDB table {self.name}: {component} schema version {found:g} is newer "
                    f"than this trailguard understands ({known})"
                )


def table_problem(table: Mapping[str, Any]) -> str | None:
    """Why a DescribeTable answer is not a table trailguard can use, or None."""
    if table.get("TableStatus") != "ACTIVE":
        return f"status {table.get('TableStatus')}, not ACTIVE"
    keys = {k["AttributeName"]: k["KeyType"] for k in table.get("KeySchema", [])}
    if keys != {"pk": "HASH", "sk": "RANGE"}:
        return f"key schema {keys}, expected pk (HASH) and sk (RANGE)"
    indexes = {i["IndexName"]: i for i in table.get("GlobalSecondaryIndexes", [])}
    for name, (hash_key, range_key) in INDEXES.items():
        index = indexes.get(name)
        if index is None:
            return f"no index {name!r} (see docs/DYNAMODB.md)"
        found = {k["AttributeName"]: k["KeyType"] for k in index.get("KeySchema", [])}
        if found != {hash_key: "HASH", range_key: "RANGE"}:
            return f"index {name!r} is keyed {found}, expected {hash_key}/{range_key}"
        if index.get("IndexStatus", "ACTIVE") != "ACTIVE":
            return f"index {name!r} is {index.get('IndexStatus')}, not ACTIVE"
    return None


def _cancelled_by_condition(exc: ClientError) -> bool:
    reasons = exc.response.get("CancellationReasons") or []
    if any(r.get("Code") == "ConditionalCheckFailed" for r in reasons):
        return True
    # Some emulators give the reasons only in the message.
    return "ConditionalCheckFailed" in str(exc.response.get("Error", {}).get("Message", ""))


def _api_name(operation: str) -> str:
    return "".join(word.capitalize() for word in operation.split("_"))


def _client_config() -> AioConfig:
    # Throttling and 5xx are retried by botocore (standard mode) before a StateError.
    return AioConfig(
        user_agent_extra=USER_AGENT_EXTRA,
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=5,
        read_timeout=15,
        max_pool_connections=CONCURRENCY * 2,
    )


# ---------------------------------------------------------------------------------------------
# trailguard state init
# ---------------------------------------------------------------------------------------------


def table_definition(name: str) -> dict[str, Any]:
    """CreateTable's request: the table config/aws/trailguard.yaml creates (keys, indexes,
    on-demand, SSE with the AWS managed key, deletion protection)."""
    attributes = ["pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk"]
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in attributes],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": "claim",
                "KeySchema": [
                    {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                    {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            },
            {
                "IndexName": "by_state",
                "KeySchema": [
                    {"AttributeName": "gsi2pk", "KeyType": "HASH"},
                    {"AttributeName": "gsi2sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["action"]},
            },
        ],
        "SSESpecification": {"Enabled": True, "SSEType": "KMS"},
        "DeletionProtectionEnabled": True,
    }


async def create_table(
    config: Config,
    *,
    session: AioSession | None = None,
    wait_secs: float = 300.0,
    poll_secs: float = 2.0,
) -> list[str]:
    """Create the table of ``[state.dynamodb]`` if it does not exist, wait until it is active,
    and make sure TTL on ``expires_at`` and point-in-time recovery are on.  Idempotent: returns
    what it did (empty when everything was there already).  Needs CreateTable,
    DescribeTable, UpdateTimeToLive, DescribeTimeToLive, UpdateContinuousBackups: an
    administrator's credentials, not the daemon's."""
    session = session or make_session()
    kwargs = client_kwargs(check_region(session, config.aws.region), config.aws.endpoint_url)
    name = config.state.dynamodb.table
    done: list[str] = []
    async with session.create_client("dynamodb", config=_client_config(), **kwargs) as client:
        table = DynamoTable(client, name)
        try:
            await client.create_table(**table_definition(name))
            done.append(f"created table {name} (on demand, indexes claim and by_state)")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
                raise table.error(exc, "create_table") from exc
        except Exception as exc:
            raise table.error(exc, "create_table") from exc
        deadline = time.monotonic() + wait_secs
        while True:
            try:
                await table.check_ready()
                break
            except StateError as exc:
                if time.monotonic() >= deadline:
                    raise StateError(f"{exc} (waited {wait_secs:g} s)") from exc
                await asyncio.sleep(poll_secs)
        try:
            ttl = await client.describe_time_to_live(TableName=name)
            status = ttl.get("TimeToLiveDescription", {})
            if status.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
                await client.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
                )
                done.append("turned on TTL on expires_at")
            elif status.get("AttributeName") != "expires_at":
                raise StateError(
                    f"DynamoDB table {name}: TTL is on attribute "
                    f"{status.get('AttributeName')!r}, trailguard needs 'expires_at'"
                )
            backups = await client.describe_continuous_backups(TableName=name)
            pitr = backups.get("ContinuousBackupsDescription", {}).get(
                "PointInTimeRecoveryDescription", {}
            )
            if pitr.get("PointInTimeRecoveryStatus") != "ENABLED":
                await client.update_continuous_backups(
                    TableName=name,
                    PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
                )
                done.append("turned on point-in-time recovery")
        except StateError:
            raise
        except Exception as exc:
            raise table.error(exc, "update_time_to_live") from exc
        await table.check_schema()
    return done
