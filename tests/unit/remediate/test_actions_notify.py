"""notify: the JSON webhook (and its Slack format) against a local HTTP server; the URL is a
secret and must never reach an error, an audit record or a log line -- only its host."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from tests.remediation_support import (
    FakeClock,
    FakeHistory,
    StaticClients,
    config_toml,
    detection,
    one_job,
    remediation_config,
)
from trailguard.config import RemediationConfig
from trailguard.errors import ConfigError, PermanentError, TransientError
from trailguard.remediate.actions import ActionContext, notify
from trailguard.remediate.executor import JobRunner
from trailguard.remediate.job_store import SqliteJobStore
from trailguard.remediate.jobs import Job, audit
from trailguard.remediate.notify import WebhookSender

SECRET = "T0000/B0000/SECRETTOKEN"


class Hook:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], Any]] = []
        self.status = 200

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.json()))
        return web.Response(status=self.status, text="ok")


@pytest.fixture
async def hook() -> AsyncIterator[tuple[Hook, str]]:
    state = Hook()
    app = web.Application()
    app.router.add_post(f"/services/{SECRET}", state.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield state, f"http://127.0.0.1:{server.port}/services/{SECRET}"
    finally:
        await server.close()


def notify_config(url: str, *, mode: str = "enforce", slack: bool = False) -> RemediationConfig:
    extra = f'[remediation.notify]\nwebhook_url = "{url}"\nslack_format = {str(slack).lower()}\n'
    return remediation_config(config_toml(mode=mode, actions='"notify"', extra=extra))


async def run_notify(
    config: RemediationConfig, session: aiohttp.ClientSession, job: Job | None = None
) -> tuple[ActionContext, str]:
    job = job or one_job(detection("DeleteRolePolicy"), config, "notify")
    assert config.notify.webhook_url is not None
    sender = WebhookSender(config.notify.webhook_url, timeout_secs=5, session=session)
    ctx = ActionContext(
        job,
        clients=StaticClients(object()),
        history=FakeHistory(),
        config=config,
        dry_run=job.mode == "dry-run",
        webhook=sender,
        clock=FakeClock(),
    )
    outcome = await notify(ctx)
    return ctx, outcome.state


async def test_posts_the_json_summary(hook: tuple[Hook, str]) -> None:
    state, url = hook
    config = notify_config(url)
    async with aiohttp.ClientSession() as session:
        ctx, result = await run_notify(config, session)
    assert result == "succeeded"
    [(headers, body)] = state.requests
    assert headers["Idempotency-Key"] == ctx.job.id
    assert headers["Content-Type"] == "application/json"
    assert body["event_id"] == ctx.job.event_id
    assert body["event_name"] == "DeleteRolePolicy"
    assert body["target"] == {
        "kind": "role",
        "name": "app-role",
        "policy_name": "inline-guard",
        "policy_arn": None,
        "version_id": None,
    }
    assert body["summary"].startswith("[high] DeleteRolePolicy of inline-guard on role app-role")
    [did] = [e for e in ctx.audit if e.step == "did"]
    assert did.what == "POSTed to webhook 127.0.0.1"
    assert SECRET not in json.dumps(msgspec.to_builtins(ctx.audit))


async def test_slack_format(hook: tuple[Hook, str]) -> None:
    state, url = hook
    async with aiohttp.ClientSession() as session:
        await run_notify(notify_config(url, slack=True), session)
    [(_, body)] = state.requests
    assert list(body) == ["text"]
    assert body["text"].startswith("*trailguard* `high` `DeleteRolePolicy` of `inline-guard`")


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, TransientError), (429, TransientError), (404, PermanentError), (403, PermanentError)],
)
async def test_http_errors_name_the_host_only(
    hook: tuple[Hook, str], status: int, error: type[Exception]
) -> None:
    state, url = hook
    state.status = status
    async with aiohttp.ClientSession() as session:
        with pytest.raises(error) as caught:
            await run_notify(notify_config(url), session)
    assert str(caught.value) == f"notify: webhook 127.0.0.1: HTTP {status}"
    assert SECRET not in repr(caught.value.__dict__)


async def test_connection_failure_names_the_host_only() -> None:
    url = f"https://127.0.0.1:9/services/{SECRET}"  # nothing listens on the discard port
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TransientError) as caught:
            await run_notify(notify_config(url), session)
    assert "127.0.0.1" in str(caught.value)
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None  # aiohttp's exception (with the URL) is not chained
    assert caught.value.__suppress_context__


async def test_dry_run_sends_nothing(hook: tuple[Hook, str]) -> None:
    state, url = hook
    async with aiohttp.ClientSession() as session:
        ctx, result = await run_notify(notify_config(url, mode="dry-run"), session)
    assert result == "dry_run"
    assert state.requests == []
    assert ctx.audit[-1].what == "dry-run: would notify webhook 127.0.0.1"
    assert SECRET not in json.dumps(msgspec.to_builtins(ctx.audit))


async def test_a_channel_already_notified_is_not_sent_again(hook: tuple[Hook, str]) -> None:
    state, url = hook
    config = notify_config(url)
    job = one_job(detection("DeleteRolePolicy"), config, "notify")
    earlier = audit("did", "POSTed to webhook 127.0.0.1", {"channel": "webhook", "status": 200})
    job = msgspec.structs.replace(job, audit=(*job.audit, earlier))
    async with aiohttp.ClientSession() as session:
        ctx, result = await run_notify(config, session, job)
    assert result == "succeeded"
    assert state.requests == []
    assert "already notified" in ctx.audit[-1].what


async def test_the_url_never_reaches_logs_or_the_job(
    hook: tuple[Hook, str], tmp_path: Path
) -> None:
    state, url = hook
    state.status = 503
    config = notify_config(url)
    job = one_job(detection("DeleteRolePolicy"), config, "notify")
    clock = FakeClock()
    async with (
        await SqliteJobStore.open(tmp_path / "state.sqlite3", clock=clock) as store,
        aiohttp.ClientSession() as session,
    ):
        await store.enqueue_many([job])
        runner = JobRunner(
            store,
            config,
            clients=StaticClients(object()),
            history=FakeHistory(),
            http=session,
            clock=clock,
        )
        with capture_logs() as logs:
            assert await runner.run_once() == 1
        stored = await store.get(job.id)
    assert stored is not None
    assert stored.state == "failed"
    assert stored.error == "http_503: webhook 127.0.0.1: HTTP 503"
    assert SECRET not in msgspec.json.encode(stored).decode()
    assert logs
    assert SECRET not in repr(logs)


def test_config_errors_do_not_echo_the_url() -> None:
    from trailguard.config import parse_config

    bad = f'[remediation.notify]\nwebhook_url = "http://hooks.example.com/services/{SECRET}"\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(bad, file="t.toml")
    assert caught.value.key_path == "remediation.notify.webhook_url"
    assert SECRET not in str(caught.value)
    assert "hooks.example.com" in str(caught.value)
    # Loopback may be plain http (a local relay).
    ok = parse_config(bad.replace("hooks.example.com", "127.0.0.1:8080"), file="t.toml")
    assert ok.remediation.notify.webhook_url is not None
