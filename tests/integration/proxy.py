"""A fault-injecting HTTP reverse proxy in front of the moto server, for daemon tests.

The daemon's ``[aws] endpoint_url`` points here; every request is forwarded to moto unchanged
(moto does not verify SigV4, so the rewritten Host header does not matter) unless a rule matches
it first.  Rules are per test:

* ``delay``  — wait ``secs`` before forwarding (a slow object);
* ``hold``   — wait until the test calls :meth:`Rule.release`, then forward (a slow object whose
  end the test chooses: deterministic, whatever the machine's speed);
* ``stall``  — never answer; drop the connection when released, without forwarding (a request
  lost with its client: a DeleteMessage that never reached SQS because the daemon was killed);
* ``status`` — answer with an HTTP error (503 ``SlowDown`` by default) instead of forwarding;
* ``reset``  — drop the connection without answering (a connection reset).

moto's CloudTrail answers ``LookupEvents`` with HTTP 500.  :meth:`FaultProxy.serve_lookup_events`
puts a stand-in in front of it: a :class:`LookupEventsStandIn` holding the events CloudTrail
"really" recorded (raw records the test registers) answers LookupEvents by EventId, shaped as
AWS answers it (JSON 1.1, ``CloudTrailEvent`` the record's JSON text); every other request still
goes to moto.  An event the test has not registered is not found -- as a forged one would not be.

A rule matches on the method, a substring of the (URL-decoded) path, and/or the AWS operation
(``X-Amz-Target`` of JSON protocols, or ``Action=`` of query protocols), and applies to its first
``times`` matching requests (all of them when ``times`` is None).  Every request is recorded in
:attr:`FaultProxy.requests`, with what the proxy did to it, so tests can assert what the daemon
asked for ("no GET for a digest key", "exactly one GET for the slow object").

The proxy runs an aiohttp server and client on an event loop in a background thread; the test
thread talks to it only through thread-safe methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web
from yarl import URL

Action = Literal["delay", "hold", "stall", "status", "reset"]

# Headers that describe one hop, not the message: never forwarded.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)

_S3_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
    "<Message>injected by the test proxy</Message><RequestId>proxy</RequestId></Error>"
)


@dataclass
class Rule:
    """One fault; see the module docstring.  Create through :meth:`FaultProxy.add_rule`."""

    action: Action
    method: str | None = None
    path_contains: str | None = None
    operation: str | None = None
    times: int | None = None
    secs: float = 0.0
    status: int = 503
    code: str = "SlowDown"
    hits: int = 0
    _released: threading.Event = field(default_factory=threading.Event, repr=False)
    _proxy: FaultProxy | None = field(default=None, repr=False)

    def matches(self, method: str, path: str, operation: str) -> bool:
        if self.method is not None and method != self.method:
            return False
        if self.path_contains is not None and self.path_contains not in path:
            return False
        if self.operation is not None and operation != self.operation:
            return False
        return self.times is None or self.hits < self.times

    def release(self) -> None:
        """End every hold of this rule, now and later (later matches pass straight through)."""
        self._released.set()
        if self._proxy is not None:
            self._proxy._wake()


@dataclass
class Seen:
    """One request as the proxy saw it on arrival, and what it did with it: ``forwarded`` or the
    rule's action; ``status`` is set once an answer went back (None while held, or for a reset).
    """

    at: float
    method: str
    path: str
    operation: str
    outcome: str
    body: bytes = b""
    status: int | None = None


class LookupEventsStandIn:
    """CloudTrail's own record of events, for LookupEvents (by EventId) through the proxy.

    ``add`` registers raw CloudTrail records (dicts, as in a log file) as real; ``looked_up``
    lists the eventIDs asked for, in order.  Thread-safe: the proxy answers on its own thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, dict[str, Any]] = {}
        self._asked: list[str] = []

    def add(self, *records: dict[str, Any]) -> None:
        with self._lock:
            for record in records:
                self._events[record["eventID"]] = json.loads(json.dumps(record))

    def remove(self, event_id: str) -> None:
        with self._lock:
            self._events.pop(event_id, None)

    @property
    def looked_up(self) -> list[str]:
        with self._lock:
            return list(self._asked)

    def answer(self, body: bytes) -> dict[str, Any]:
        request = json.loads(body or b"{}")
        attributes = request.get("LookupAttributes") or []
        wanted = [a.get("AttributeValue") for a in attributes if a.get("AttributeKey") == "EventId"]
        with self._lock:
            self._asked.extend(str(w) for w in wanted)
            found = [self._events[w] for w in wanted if w in self._events]
        return {"Events": [_lookup_event(record) for record in found]}


def _lookup_event(record: dict[str, Any]) -> dict[str, Any]:
    """One entry of LookupEvents' ``Events`` as AWS shapes it."""
    at = dt.datetime.fromisoformat(str(record.get("eventTime")).replace("Z", "+00:00"))
    return {
        "EventId": record.get("eventID"),
        "EventName": record.get("eventName"),
        "ReadOnly": "false",
        "EventTime": at.timestamp(),
        "EventSource": record.get("eventSource"),
        "Resources": [],
        "CloudTrailEvent": json.dumps(record),
    }


def _operation(request: web.Request, body: bytes) -> str:
    target = request.headers.get("X-Amz-Target", "")
    if target:
        return target.rsplit(".", 1)[-1]
    if body and request.content_type == "application/x-www-form-urlencoded":
        action = parse_qs(body.decode("utf-8", "replace")).get("Action")
        if action:
            return action[0]
    return ""


class FaultProxy:
    """``with FaultProxy(upstream) as proxy: ... proxy.endpoint_url ...``."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._rules: list[Rule] = []
        self._seen: list[Seen] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy")
        self._closing: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._lookup_events: LookupEventsStandIn | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self._stop(), self._loop)
        with contextlib.suppress(Exception):
            future.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _start(self) -> None:
        self._closing = asyncio.Event()
        self._changed = asyncio.Event()
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=120)
        )
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._closing is not None
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # -- rules and records (called from the test thread) ----------------------------------------

    def add_rule(
        self,
        action: Action,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        operation: str | None = None,
        times: int | None = None,
        secs: float = 0.0,
        status: int = 503,
        code: str = "SlowDown",
    ) -> Rule:
        rule = Rule(
            action=action,
            method=method,
            path_contains=path_contains,
            operation=operation,
            times=times,
            secs=secs,
            status=status,
            code=code,
            _proxy=self,
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def serve_lookup_events(self) -> LookupEventsStandIn:
        """Answer CloudTrail LookupEvents from a :class:`LookupEventsStandIn` (returned; the
        test registers the real events in it) instead of moto."""
        with self._lock:
            if self._lookup_events is None:
                self._lookup_events = LookupEventsStandIn()
            return self._lookup_events

    def clear_rules(self) -> None:
        """Drop every rule and release every request held by one."""
        with self._lock:
            rules, self._rules = self._rules, []
        for rule in rules:
            rule.release()

    @property
    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def count(
        self,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        operation: str | None = None,
    ) -> int:
        return sum(1 for _ in self._select(method, path_contains, operation))

    def first(
        self,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        operation: str | None = None,
    ) -> Seen:
        """The first request seen that matches (AssertionError when there is none)."""
        for seen in self._select(method, path_contains, operation):
            return seen
        raise AssertionError(f"no request {method} {path_contains} {operation} seen")

    def _select(
        self, method: str | None, path_contains: str | None, operation: str | None
    ) -> Iterator[Seen]:
        for seen in self.requests:
            if method is not None and seen.method != method:
                continue
            if path_contains is not None and path_contains not in seen.path:
                continue
            if operation is not None and seen.operation != operation:
                continue
            yield seen

    def _wake(self) -> None:
        if self._changed is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._changed.set)

    # -- the proxy itself ------------------------------------------------------------------------

    def _take(self, method: str, path: str, operation: str) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path, operation):
                    rule.hits += 1
                    return rule
        return None

    def _record(self, method: str, path: str, operation: str, outcome: str, body: bytes) -> Seen:
        # Request bodies of API calls (SQS ...) are small and worth asserting on; uploads are not.
        kept = body if len(body) <= 64 << 10 else b""
        seen = Seen(time.monotonic(), method, path, operation, outcome, kept)
        with self._lock:
            self._seen.append(seen)
        return seen

    def _answered(self, seen: Seen, status: int) -> None:
        with self._lock:
            seen.status = status

    async def _wait(self, rule: Rule) -> None:
        """Sleep for a delay, or until a hold is released (or the proxy closes)."""
        assert self._closing is not None
        assert self._changed is not None
        deadline = time.monotonic() + (rule.secs if rule.action == "delay" else 3600.0)
        while not self._closing.is_set() and time.monotonic() < deadline:
            if rule.action != "delay" and rule._released.is_set():
                return
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait(), timeout=min(0.2, deadline - time.monotonic())
                )

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        """Abort the connection: the client sees it closed without an answer."""
        transport = request.transport
        if transport is not None:
            transport.abort()
        return web.Response(status=599)  # written to a closed transport: never seen

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        method = request.method
        path = request.path  # URL-decoded
        operation = _operation(request, body)
        rule = self._take(method, path, operation)
        with self._lock:
            lookup = self._lookup_events if operation == "LookupEvents" else None
        if rule is None and lookup is not None:
            seen = self._record(method, path, operation, "lookup_events", body)
            self._answered(seen, 200)
            return web.Response(
                body=json.dumps(lookup.answer(body)).encode(),
                content_type="application/x-amz-json-1.1",
            )
        seen = self._record(method, path, operation, rule.action if rule else "forwarded", body)
        if rule is not None:
            if rule.action == "status":
                self._answered(seen, rule.status)
                return web.Response(
                    status=rule.status,
                    text=_S3_ERROR.format(code=rule.code),
                    content_type="application/xml",
                )
            if rule.action == "reset":
                return self._drop(request)
            await self._wait(rule)
            if rule.action == "stall":
                return self._drop(request)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        url = URL(self.upstream + request.raw_path, encoded=True)
        try:
            async with self._session.request(
                method, url, headers=headers, data=body, allow_redirects=False
            ) as upstream:
                data = await upstream.read()
                out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
                status = upstream.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._answered(seen, 502)
            return web.Response(status=502, text=f"proxy: upstream failed: {exc!r}")
        self._answered(seen, status)
        if method == "HEAD":
            return web.Response(status=status, headers=out)
        return web.Response(status=status, body=data, headers=out)
