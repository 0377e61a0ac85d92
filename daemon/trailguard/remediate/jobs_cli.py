"""``trailguard jobs list|show|approve|retry|cancel``: the job store from the command line.

Exit codes (as everywhere in trailguard): 0 done; 1 the job does not exist, or is in a state
that does not allow the operation (approving a job that already ran ...), ``approve --plan``
names another plan than the one the job waits with, or the state file cannot be used; 2 usage
or config error.

An approval binds to the plan the job waits with (what it would write: each IAM call, its
target and the exact document, shown by ``jobs show`` with the plan's sha256): it covers that
plan and no other.  ``approve ID --plan SHA`` makes sure the plan approved is the one reviewed.

The commands open the configured backend's store and never create it: with SQLite the file at
``[state] path`` (a typo in the path is an error, not an empty list); with DynamoDB the shared
table of ``[state.dynamodb]``, from any machine with credentials for it (the daemon's
permissions suffice).  They work while the daemon runs (SQLite WAL; the table's conditional
writes): a change made here is seen by every replica's workers at their next claim, and an
approve/retry/cancel applies only to the state it read (read again on a race).
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from trailguard.vocabulary import JOB_STATES

if TYPE_CHECKING:
    from trailguard.remediate.jobs import Job

__all__ = ["add_jobs_parser", "run_jobs_command"]

_STATES = JOB_STATES


def add_jobs_parser(sub: Any) -> None:
    """Add the ``jobs`` command to the ``trailguard`` subparsers."""
    jobs = sub.add_parser(
        "jobs",
        help="list, inspect, approve, retry or cancel remediation jobs",
        description=(
            "Remediation jobs in the state store ([state] backend: the SQLite file, or the "
            "DynamoDB table every replica shares). Exit 0 when done, 1 when the "
            "job does not exist or its state does not allow the operation, 2 on usage or "
            "config errors."
        ),
    )
    commands = jobs.add_subparsers(dest="jobs_command", metavar="SUBCOMMAND", required=True)

    def command(name: str, help_text: str, *, job_id: bool = True) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name, help=help_text, description=help_text
        )
        parser.add_argument("--config", "-c", metavar="FILE", required=True, help="config file")
        if job_id:
            parser.add_argument("job_id", metavar="ID", help="the job id (as `jobs list` shows)")
        return parser

    listing = command("list", "list jobs, newest first", job_id=False)
    listing.add_argument(
        "--state",
        action="append",
        choices=_STATES,
        metavar="STATE",
        help=f"only jobs in this state (repeatable): {', '.join(_STATES)}",
    )
    listing.add_argument("--limit", type=int, default=100, metavar="N", help="at most N jobs")
    listing.add_argument("--json", action="store_true", help="a JSON array of full job records")
    show = command("show", "show one job with its audit record and findings")
    show.add_argument("--json", action="store_true", help="the job record as JSON")
    for name, text in (
        (
            "approve",
            "approve a job that awaits approval (it runs at the next claim); the approval "
            "covers exactly the plan the job waits with (see `jobs show`)",
        ),
        ("retry", "run a failed, dead, skipped or dry_run job again (attempts start over)"),
        ("cancel", "cancel a pending, failed or awaiting_approval job (it ends skipped)"),
    ):
        parser = command(name, text)
        parser.add_argument(
            "--by", metavar="NAME", help="who does it, for the audit record (default: $USER)"
        )
        if name == "approve":
            parser.add_argument(
                "--plan",
                metavar="SHA256",
                help="the sha256 of the plan approved, as `jobs show` prints it: refused "
                "(exit 1) unless the job still waits with exactly that plan",
            )


def run_jobs_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run one ``jobs`` subcommand; errors are raised for ``cli.main`` to map."""
    import asyncio

    return asyncio.run(_run(args, out or sys.stdout))


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    import time

    from trailguard.config import load_config
    from trailguard.remediate.jobs import JobNotFoundError
    from trailguard.state.backends import open_state

    config = load_config(args.config)
    if args.jobs_command == "list" and args.limit < 1:
        from trailguard.errors import UsageError

        raise UsageError("jobs list: --limit must be at least 1")
    async with open_state(config, jobs=True, create=False) as state:
        store = state.jobs
        assert store is not None
        command = args.jobs_command
        if command == "list":
            jobs = await store.list_jobs(states=args.state, limit=args.limit)
            if args.json:
                _write_json([_record(job) for job in jobs], out)
            else:
                _write_table(jobs, out)
            return 0
        if command == "show":
            job = await store.get(args.job_id)
            if job is None:
                raise JobNotFoundError(args.job_id)
            if args.json:
                _write_json(_record(job), out)
            else:
                _write_job(job, out)
            return 0
        by = args.by or _user()
        now = time.time()
        if command == "approve":
            job = await store.approve(args.job_id, now=now, by=by, plan_sha256=args.plan)
        elif command == "retry":
            job = await store.retry(args.job_id, now=now, by=by)
        else:
            job = await store.cancel(args.job_id, now=now, by=by)
        print(f"{job.id} {job.action}: {command} -> {job.state}", file=out)
        return 0


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return (
        dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def _record(job: Job) -> dict[str, Any]:
    """The job as JSON, with its times as ISO 8601 UTC."""
    import msgspec

    data: dict[str, Any] = msgspec.to_builtins(job)
    for key in ("created_at", "updated_at", "next_attempt_at", "lease_until"):
        data[key] = _iso(data[key])
    return data


def _write_json(value: object, out: TextIO) -> None:
    import json

    json.dump(value, out, indent=2, ensure_ascii=False)
    out.write("\n")


def _write_table(jobs: Sequence[Job], out: TextIO) -> None:
    from trailguard.telemetry.logging import printable

    if not jobs:
        print("no jobs", file=out)
        return
    rows = [("ID", "STATE", "ACTION", "MODE", "ACCOUNT", "EVENT", "UPDATED", "NOTE")]
    for job in jobs:
        rows.append(
            (
                job.id,
                job.state,
                job.action,
                job.mode,
                job.account_id or "-",
                f"{job.detection.event_name} {job.detection.event_id}",
                _iso(job.updated_at) or "-",
                job.error or job.reason or ("changed" if job.changed else ""),
            )
        )
    # Names, ARNs and eventIDs come from the record: a newline or an escape sequence in one is
    # shown escaped, never written to the operator's terminal.
    shown = [tuple(printable(cell) for cell in row) for row in rows]
    widths = [max(len(row[i]) for row in shown) for i in range(len(shown[0]) - 1)]
    for row in shown:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip(), file=out)


def _write_plan(job: Job, out: TextIO) -> None:
    """What the job would write: each call with its target, parameters and exact document (the
    document and names come from the trail: each line is printed escaped)."""
    from trailguard.telemetry.logging import printable

    plan = job.plan
    assert plan is not None
    lines = [f"plan       {job.plan_sha256 or plan.sha256}"]
    if job.state == "awaiting_approval":
        lines.append(
            f"           approve exactly this: trailguard jobs approve {job.id} "
            f"--plan {job.plan_sha256 or plan.sha256} --config ..."
        )
    lines.append(f"  rests on events {', '.join(plan.events) or '-'}")
    if plan.conflicts:
        lines.append(
            f"  CONFLICT: seen with two contents (one of them forged): {', '.join(plan.conflicts)}"
        )
    for write in plan.writes:
        params = " ".join(f"{key}={value}" for key, value in sorted(write.params.items()))
        lines.append(f"  {write.call} {write.target} {params}".rstrip())
        if write.document is not None:
            lines.append(f"    document {write.document_sha256}:")
            lines.extend(f"      {line}" for line in write.document.splitlines() or [""])
    print("\n".join(printable(line) for line in lines), file=out)


def _write_job(job: Job, out: TextIO) -> None:
    from trailguard.telemetry.logging import printable

    event = job.detection
    lines = [
        f"job        {job.id}",
        f"action     {job.action} (mode {job.mode}{', approved' if job.approved else ''})",
        f"state      {job.state}" + (f" ({job.reason})" if job.reason else ""),
        f"attempts   {job.attempts}, next {_iso(job.next_attempt_at)}",
        f"account    {job.account_id or '-'}",
        f"target     {job.target_key}",
        f"event      {event.event_name} {event.event_id} at {event.event_time}"
        f" ({event.rule}, {event.severity}, {event.outcome})",
        f"actor      {event.actor.arn or event.actor.type or '-'}",
        f"created    {_iso(job.created_at)}",
        f"updated    {_iso(job.updated_at)}",
    ]
    if job.error:
        lines.append(f"error      {job.error}")
    if job.approved_plan:
        lines.append(f"approved   plan {job.approved_plan}")
    # Values from the record (names, ARNs, reasons quoting them): one line each, escaped.
    print("\n".join(printable(line) for line in lines), file=out)
    lines = []
    if job.plan is not None:
        _write_plan(job, out)
    if job.findings:
        lines.append("findings")
        for finding in job.findings:
            lines.append(
                f"  [{finding.severity}] {finding.code} {finding.subject}: {finding.detail}"
            )
    if job.audit:
        lines.append("audit")
        for entry in job.audit:
            lines.append(f"  {entry.at}  {entry.step:<7} {entry.what}")
    if lines:
        print("\n".join(printable(line) for line in lines), file=out)
