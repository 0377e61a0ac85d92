"""The notify action: one message per job, to a webhook (optionally Slack) and/or SNS."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trailguard.remediate.actions.context import ActionContext, ActionOutcome
from trailguard.remediate.notify import notification, publish_sns, slack_message

if TYPE_CHECKING:
    pass

# ---------------------------------------------------------------------------------------------
# notify
# ---------------------------------------------------------------------------------------------


async def notify(ctx: ActionContext) -> ActionOutcome:
    settings = ctx.config.notify
    body = notification(ctx.job)
    # A channel that already took this job's message (an earlier attempt) is not sent again.
    done = {
        entry.data.get("channel")
        for entry in ctx.job.audit
        if entry.step == "did" and entry.data is not None
    }
    channels: list[str] = []
    if settings.webhook_url is not None and ctx.webhook is not None:
        channels.append("webhook")
    if settings.sns_topic_arn is not None:
        channels.append("sns")
    if not channels:
        return ctx.skipped("no_notify_target", "no webhook_url or sns_topic_arn configured")
    if ctx.dry_run:
        where = [
            f"webhook {ctx.webhook.host}" if c == "webhook" and ctx.webhook else c for c in channels
        ]
        return ctx.would(f"notify {', '.join(where)}", message=body)
    for channel in channels:
        if channel in done:
            ctx.record("note", f"{channel} already notified by an earlier attempt")
            continue
        if channel == "webhook" and ctx.webhook is not None:
            payload = slack_message(ctx.job) if settings.slack_format else body
            status = await ctx.webhook.send(payload, idempotency_key=ctx.job.id)
            ctx.record(
                "did", f"POSTed to webhook {ctx.webhook.host}", channel="webhook", status=status
            )
        elif channel == "sns" and settings.sns_topic_arn is not None:
            region = settings.sns_topic_arn.split(":")[3]
            client = await ctx.clients.sns(region)
            message_id = await publish_sns(client, settings.sns_topic_arn, ctx.job, body)
            ctx.record(
                "did",
                f"published to {settings.sns_topic_arn}",
                channel="sns",
                message_id=message_id,
            )
    return ActionOutcome(state="succeeded")
