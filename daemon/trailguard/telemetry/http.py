"""The daemon's own HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz``.

It runs on the daemon's event loop (aiohttp, already a dependency through aiobotocore), on
purpose: ``/healthz`` answering proves the loop is not stuck, and the CPU-heavy decoding runs in
worker processes, so a scrape is never starved.

::

    async with HealthServer("127.0.0.1:9108", metrics, readiness) as server:
        ...  # server.port is the bound port (useful with port 0)

``/metrics``
    The :class:`~trailguard.telemetry.metrics.Metrics` registry in Prometheus text format
    (OpenMetrics when the scraper's ``Accept`` asks for it), gzip-compressed when the request
    accepts gzip.  ``before_scrape`` (optional) runs first, to refresh what is read from a
    store rather than counted from events (the remediation queue's depth).
``/healthz``
    200 ``ok``: the process is alive and its event loop answers.
``/readyz``
    200 ``ready`` when ``readiness()`` returns no reasons; 503 with one reason per line
    otherwise.  ``readiness`` is a plain or async callable returning the reasons (config not
    loaded, a queue not polled successfully for too long, the state store not writable,
    stopping); :func:`stale_queue_reasons` builds the polling part.  A check that raises or takes
    longer than ``readiness_timeout`` is itself a reason.

A listen address that cannot be bound raises :class:`~trailguard.errors.TelemetryError`.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Final

from aiohttp import web

from trailguard.config import parse_listen
from trailguard.errors import TelemetryError
from trailguard.telemetry.logging import get_logger
from trailguard.telemetry.metrics import Metrics

__all__ = ["HealthServer", "ReadinessCheck", "stale_queue_reasons"]

log = get_logger(__name__)

ReadinessCheck = Callable[[], Sequence[str] | Awaitable[Sequence[str]]]

TEXT: Final = "text/plain; charset=utf-8"
INDEX: Final = (
    "trailguard\n\n"
    "/metrics  Prometheus metrics\n"
    "/healthz  200 when the daemon's event loop answers\n"
    "/readyz   200 when ready to process messages, else 503 with the reasons\n"
)


def stale_queue_reasons(
    last_poll_ok: Mapping[str, float],
    queues: Iterable[str],
    max_age_secs: float,
    *,
    now: float | None = None,
) -> list[str]:
    """One reason per queue that has not been polled successfully within ``max_age_secs``.

    ``last_poll_ok`` maps a queue label to the Unix time of its last successful receive
    (``DaemonState.last_poll_ok``); a queue missing from it was never polled successfully.
    """
    now = time.time() if now is None else now
    reasons = []
    for queue in queues:
        last = last_poll_ok.get(queue)
        if last is None:
            reasons.append(f"sqs: queue {queue} not polled successfully yet")
        elif now - last > max_age_secs:
            reasons.append(
                f"sqs: queue {queue} last polled successfully {now - last:.0f}s ago "
                f"(limit {max_age_secs:g}s)"
            )
    return reasons


class HealthServer:
    """An aiohttp server for ``/metrics``, ``/healthz`` and ``/readyz`` on the running loop."""

    def __init__(
        self,
        listen: str | tuple[str, int],
        metrics: Metrics,
        readiness: ReadinessCheck | None = None,
        *,
        readiness_timeout: float = 5.0,
        before_scrape: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        if isinstance(listen, str):
            try:
                self._host, self._port = parse_listen(listen)
            except ValueError as exc:
                raise TelemetryError(f"http listen address {exc}") from None
        else:
            self._host, self._port = listen
        self.metrics = metrics
        self._readiness = readiness
        self._readiness_timeout = readiness_timeout
        self._before_scrape = before_scrape
        self._runner: web.AppRunner | None = None
        self.addresses: list[tuple[str, int]] = []

        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._app = app

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def listen(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self._port}"

    @property
    def port(self) -> int:
        """The bound port (the real one when started with port 0)."""
        return self.addresses[0][1] if self.addresses else self._port

    @property
    def url(self) -> str:
        """``http://host:port`` of the first bound address."""
        host = self.addresses[0][0] if self.addresses else self._host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        # access_log=None: a scrape every few seconds is not worth a log line.
        runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise TelemetryError(
                f"cannot listen on {self.listen} for /metrics and health checks "
                f"([http] listen): {exc.strerror or exc}"
            ) from exc
        self._runner = runner
        self.addresses = [(str(a[0]), int(a[1])) for a in runner.addresses]
        log.info("http.listening", listen=self.listen, url=self.url)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            log.info("http.stopped", listen=self.listen)

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- handlers ------------------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text=INDEX, content_type="text/plain")

    async def _metrics(self, request: web.Request) -> web.Response:
        if self._before_scrape is not None:
            # e.g. the remediation queue's depth, read from its store now; a slow or failing
            # store costs those gauges their freshness, never the scrape
            try:
                async with asyncio.timeout(self._readiness_timeout):
                    await self._before_scrape()
            except Exception as exc:  # noqa: BLE001
                log.warning("http.scrape_refresh_failed", error=repr(exc))
        body, content_type = self.metrics.render(request.headers.get("Accept"))
        response = web.Response(body=body, headers={"Content-Type": content_type})
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression(web.ContentCoding.gzip)
        return response

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n", content_type="text/plain")

    async def _readyz(self, request: web.Request) -> web.Response:
        reasons = await self.not_ready_reasons()
        if reasons:
            text = "not ready\n" + "".join(f"{reason}\n" for reason in reasons)
            return web.Response(status=503, text=text, content_type="text/plain")
        return web.Response(text="ready\n", content_type="text/plain")

    async def not_ready_reasons(self) -> list[str]:
        """What ``/readyz`` reports: empty when ready."""
        if self._readiness is None:
            return []
        try:
            async with asyncio.timeout(self._readiness_timeout):
                result = self._readiness()
                if inspect.isawaitable(result):
                    result = await result
                return [str(reason) for reason in result]
        except TimeoutError:
            return [f"readiness check did not answer within {self._readiness_timeout:g}s"]
        except Exception as exc:  # noqa: BLE001 -- a broken check means "not ready", not a 500
            log.warning("http.readiness_check_failed", error=repr(exc))
            return [f"readiness check failed: {type(exc).__name__}: {exc}"]
