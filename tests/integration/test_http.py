"""The HealthServer on a real event loop and a real socket, queried with aiohttp's client."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator, Sequence

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from trailguard.errors import TelemetryError
from trailguard.telemetry.http import HealthServer, stale_queue_reasons
from trailguard.telemetry.metrics import Metrics

pytestmark = pytest.mark.integration


class Readiness:
    """A readiness check the test can flip."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def __call__(self) -> Sequence[str]:
        return list(self.reasons)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(queues=["trail"])


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_metrics_healthz_readyz(metrics: Metrics, client: aiohttp.ClientSession) -> None:
    readiness = Readiness()
    metrics.records(7)
    async with HealthServer("127.0.0.1:0", metrics, readiness) as server:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}"

        async with client.get(f"{server.url}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await response.text()
        names = {f.name for f in text_string_to_metric_families(text)}
        assert {"trailguard_build_info", "trailguard_records_scanned"} <= names
        assert "trailguard_records_scanned_total 7.0" in text

        async with client.get(f"{server.url}/healthz") as response:
            assert (response.status, await response.text()) == (200, "ok\n")

        async with client.get(f"{server.url}/readyz") as response:
            assert (response.status, await response.text()) == (200, "ready\n")

        readiness.reasons = ["sqs: queue trail not polled successfully yet", "state: read-only"]
        async with client.get(f"{server.url}/readyz") as response:
            assert response.status == 503
            assert await response.text() == (
                "not ready\nsqs: queue trail not polled successfully yet\nstate: read-only\n"
            )

        async with client.get(f"{server.url}/nope") as response:
            assert response.status == 404
        async with client.get(f"{server.url}/") as response:
            assert "/metrics" in await response.text()


async def test_metrics_gzip_and_openmetrics(metrics: Metrics) -> None:
    # auto_decompress=False: the test sees the body as sent.
    async with (
        HealthServer("127.0.0.1:0", metrics) as server,
        aiohttp.ClientSession(auto_decompress=False) as raw,
    ):
        headers = {"Accept-Encoding": "gzip"}
        async with raw.get(f"{server.url}/metrics", headers=headers) as response:
            assert response.status == 200
            assert response.headers["Content-Encoding"] == "gzip"
            body = gzip.decompress(await response.read())
        assert b"trailguard_build_info" in body

        headers = {"Accept-Encoding": "identity"}
        async with raw.get(f"{server.url}/metrics", headers=headers) as response:
            assert "Content-Encoding" not in response.headers
            assert b"trailguard_build_info" in await response.read()

        headers = {
            "Accept": "application/openmetrics-text; version=1.0.0",
            "Accept-Encoding": "identity",
        }
        async with raw.get(f"{server.url}/metrics", headers=headers) as response:
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            assert (await response.read()).endswith(b"# EOF\n")


async def test_async_slow_and_broken_readiness_checks(
    metrics: Metrics, client: aiohttp.ClientSession
) -> None:
    async def ready_async() -> list[str]:
        await asyncio.sleep(0)
        return ["stopping"]

    async def hangs() -> list[str]:
        await asyncio.sleep(60)
        return []

    def broken() -> list[str]:
        raise RuntimeError("database is locked")

    async with (
        HealthServer("127.0.0.1:0", metrics, ready_async) as server,
        client.get(f"{server.url}/readyz") as response,
    ):
        assert (response.status, await response.text()) == (503, "not ready\nstopping\n")
    async with HealthServer("127.0.0.1:0", metrics, hangs, readiness_timeout=0.2) as server:
        async with client.get(f"{server.url}/readyz") as response:
            assert response.status == 503
            assert "did not answer within 0.2s" in await response.text()
        # A hanging readiness check does not block liveness.
        async with client.get(f"{server.url}/healthz") as response:
            assert response.status == 200
    async with (
        HealthServer("127.0.0.1:0", metrics, broken) as server,
        client.get(f"{server.url}/readyz") as response,
    ):
        assert response.status == 503
        assert "RuntimeError: database is locked" in await response.text()


async def test_no_readiness_check_means_ready(
    metrics: Metrics, client: aiohttp.ClientSession
) -> None:
    async with (
        HealthServer(("127.0.0.1", 0), metrics) as server,
        client.get(f"{server.url}/readyz") as response,
    ):
        assert response.status == 200


async def test_port_in_use_is_a_clear_telemetry_error(metrics: Metrics) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(TelemetryError, match=rf"cannot listen on 127\.0\.0\.1:{port}"):
            async with HealthServer(f"127.0.0.1:{port}", metrics):
                pass


async def test_bad_listen_address_is_a_telemetry_error(metrics: Metrics) -> None:
    with pytest.raises(TelemetryError, match="is not host:port"):
        HealthServer("9108", metrics)
    with pytest.raises(TelemetryError, match=r"cannot listen on 192\.0\.2\.1"):
        # TEST-NET-1 is never an address of this host: bind fails, nothing is sent.
        async with HealthServer("192.0.2.1:0", metrics):
            pass


async def test_server_stops_and_releases_the_port(metrics: Metrics) -> None:
    server = HealthServer("127.0.0.1:0", metrics)
    await server.start()
    port = server.port
    await server.stop()
    await server.stop()  # idempotent
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))


async def test_metrics_stay_live_while_other_tasks_run(
    metrics: Metrics, client: aiohttp.ClientSession
) -> None:
    """Scrapes are answered while the loop has other (cooperative) work."""

    async def busy() -> None:
        while True:
            metrics.records(1)
            await asyncio.sleep(0)

    task = asyncio.create_task(busy())
    try:
        async with HealthServer("127.0.0.1:0", metrics) as server:
            for _ in range(5):
                async with client.get(f"{server.url}/metrics") as response:
                    assert response.status == 200
    finally:
        task.cancel()


def test_stale_queue_reasons() -> None:
    now = 1_000_000.0
    polls = {"a": now - 10, "b": now - 500}
    assert stale_queue_reasons(polls, ["a"], 120, now=now) == []
    assert stale_queue_reasons(polls, ["a", "b", "c"], 120, now=now) == [
        "sqs: queue b last polled successfully 500s ago (limit 120s)",
        "sqs: queue c not polled successfully yet",
    ]
