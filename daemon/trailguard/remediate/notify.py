"""The ``notify`` action's channels: a JSON webhook (optionally Slack-compatible) and SNS.

The webhook URL is treated as a secret (Slack and most chat webhooks embed their token in the
path): nothing here logs it, puts it in an error message or an audit record -- only its host.
aiohttp's own exceptions print the URL, so they are caught here and re-raised without it.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import TYPE_CHECKING, Any, Final

import aiohttp

from trailguard import __version__
from trailguard.aws import classify
from trailguard.errors import PermanentError, TransientError
from trailguard.remediate.jobs import Job
from trailguard.remediate.mrkdwn import code, line, markup, message

if TYPE_CHECKING:
    from types_aiobotocore_sns.client import SNSClient

__all__ = ["WebhookSender", "notification", "slack_message", "sns_subject", "url_host"]

_STAGE: Final = "notify"
_MAX_SUBJECT: Final = 100  # SNS Subject limit
_NOT_SUBJECT_TEXT: Final = re.compile(r"[^\x20-\x7e]")


def url_host(url: str) -> str:
    """The only part of a webhook URL that may be logged."""
    return urllib.parse.urlsplit(url).hostname or "?"


def notification(job: Job) -> dict[str, Any]:
    """The JSON summary of the event a notify job is about."""
    event = job.detection
    actor = event.actor
    target = event.target
    change = event.change
    witness = change.witness if change is not None else None
    return {
        "source": "trailguard",
        "version": __version__,
        "kind": "iam_policy_removal" if change is None else "iam_policy_weakening",
        "job_id": job.id,
        "event_id": event.event_id,
        "event_time": event.event_time,
        "event_name": event.event_name,
        "account_id": event.account_id,
        "region": event.aws_region,
        "rule": event.rule,
        "severity": event.severity,
        "outcome": event.outcome,
        "error_code": event.error_code,
        "actor": {
            "type": actor.type,
            "arn": actor.arn,
            "access_key_id": actor.access_key_id,
            "mfa_authenticated": actor.mfa_authenticated,
            "source_ip": actor.source_ip,
            "user_agent": actor.user_agent,
        },
        "target": {
            "kind": target.kind,
            "name": target.name,
            "policy_name": target.policy_name,
            "policy_arn": target.policy_arn,
            "version_id": target.version_id,
        },
        "change": None
        if change is None
        else {
            "kind": change.kind,
            "verdict": change.verdict,
            "reason": change.reason,
            "previous_event_id": change.previous_event_id,
            "witness": None
            if witness is None
            else {"action": witness.action, "resource": witness.resource},
        },
        "summary": summary_line(job),
    }


def summary_line(job: Job) -> str:
    event = job.detection
    target = event.target
    what = target.policy_arn or target.policy_name or "?"
    on = f" on {target.kind} {target.name}" if target.kind != "policy" and target.name else ""
    outcome = "" if event.outcome == "success" else f" (failed: {event.error_code or 'error'})"
    change = f" ({event.change.verdict.replace('_', ' ')})" if event.change is not None else ""
    return (
        f"[{event.severity}] {event.event_name} of {what}{on} in {event.account_id}"
        f" by {event.actor.arn or event.actor.type or 'unknown'}{outcome}{change}"
    )


def slack_message(job: Job) -> dict[str, Any]:
    """A Slack-compatible incoming-webhook body (``text`` in mrkdwn).

    Every value in it comes from the record (and so from the caller, or whoever forged the
    file): each one goes through :func:`mrkdwn.code`, never into the text directly.
    """
    event = job.detection
    actor = event.actor
    target = event.target
    what = code(target.policy_arn or target.policy_name)
    summary = [markup("*trailguard*"), code(event.severity), code(event.event_name), markup("of")]
    summary.append(what)
    if target.kind != "policy" and target.name:
        summary += [markup("on"), markup(target.kind or "principal"), code(target.name)]
    summary += [markup("in account"), code(event.account_id), markup("by")]
    summary.append(code(actor.arn or actor.type))
    if event.outcome != "success":
        summary += [markup("failed:"), code(event.error_code or "error")]
    lines = [
        line(*summary),
        line(
            markup("event"),
            code(event.event_id),
            markup("at"),
            code(event.event_time),
            markup("rule"),
            code(event.rule),
        ),
        line(
            markup("source IP"),
            code(actor.source_ip),
            markup("user agent"),
            code(actor.user_agent),
        ),
    ]
    change = event.change
    if change is not None:  # a weakening change: what it allows now, against which document
        parts = [markup("change"), code(change.verdict), markup("against event")]
        parts.append(code(change.previous_event_id))
        if change.witness is not None:
            parts += [markup("now allows"), code(change.witness.action), markup("on")]
            parts.append(code(change.witness.resource))
        lines.append(line(*parts))
    return {"text": message(*lines)}


class WebhookSender:
    """POSTs JSON to one webhook URL, never revealing the URL beyond its host."""

    def __init__(self, url: str, *, timeout_secs: float, session: aiohttp.ClientSession) -> None:
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout_secs)
        self._session = session
        self.host = url_host(url)

    async def send(self, body: dict[str, Any], *, idempotency_key: str) -> int:
        """Returns the HTTP status.  Raises TransientError (timeouts, 429, 5xx) or
        PermanentError (other 4xx); messages name the host only."""
        data = json.dumps(body).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
            "User-Agent": f"trailguard/{__version__}",
        }
        try:
            async with self._session.post(
                self._url, data=data, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as response:
                status = response.status
                await response.read()
        except TimeoutError:
            raise TransientError(_STAGE, "timeout", f"webhook {self.host}: timed out") from None
        except aiohttp.ClientError as exc:
            # str(exc) may contain the URL: report the type only.
            raise TransientError(
                _STAGE, "connection", f"webhook {self.host}: {type(exc).__name__}"
            ) from None
        if 200 <= status < 300:
            return status
        detail = f"webhook {self.host}: HTTP {status}"
        if status == 429 or status >= 500:
            raise TransientError(_STAGE, f"http_{status}", detail)
        raise PermanentError(_STAGE, f"http_{status}", detail)


def sns_subject(event_name: str | None, account_id: str | None) -> str:
    """The SNS Subject: printable ASCII, no line break, at most 100 characters, as SNS requires.

    Both values come from the record; one with a newline or a control character would make SNS
    reject the publish (and the alert would never go out), so anything else shows as ``?``.
    """
    subject = f"trailguard: {event_name} in {account_id}"
    return _NOT_SUBJECT_TEXT.sub("?", subject)[:_MAX_SUBJECT]


async def publish_sns(client: SNSClient, topic_arn: str, job: Job, body: dict[str, Any]) -> str:
    """Publish the summary; returns the SNS MessageId."""
    subject = sns_subject(body["event_name"], body["account_id"])
    try:
        response = await client.publish(
            TopicArn=topic_arn,
            Subject=subject,
            Message=json.dumps(body),
            MessageAttributes={
                "job_id": {"DataType": "String", "StringValue": job.id},
                "severity": {"DataType": "String", "StringValue": job.detection.severity},
            },
        )
    except Exception as exc:
        raise classify(exc, stage=_STAGE, what=f"SNS publish to {topic_arn}") from exc
    return response["MessageId"]
