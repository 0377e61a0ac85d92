"""The ``trailguard`` command: the one edge where errors become exit codes.

Exit codes: 0 success; 1 the work ran but some inputs failed (replay: some files could not be
read; jobs: no such job, or its state does not allow the operation); 2 usage or config error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

from trailguard import __version__
from trailguard.errors import ConfigError, StartupError, TrailguardError, UsageError

if TYPE_CHECKING:
    from trailguard.config import Config
    from trailguard.decode_pool import DecodePool
    from trailguard.detect.process import Detector
    from trailguard.ingest.replay import ReplaySummary
    from trailguard.state.policy_history import PolicyHistoryStore

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so every error leaves through ``main``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


class _Version(argparse.Action):
    """``--version``: the version and the decoder this machine runs (C scanner or msgspec)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        from trailguard.detect.decode import SCANNER

        print(f"trailguard {__version__} (decoder: {SCANNER.describe()})")
        parser.exit()


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="trailguard",
        description="Watch AWS CloudTrail for IAM policy removal and act on it.",
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    replay = sub.add_parser(
        "replay",
        help="detect policy removals in local CloudTrail files",
        description=(
            "Read CloudTrail files (S3 deliveries, JSON arrays, JSON Lines, lookup-events output; "
            "gzip or not) and directories recursively; write one detection per eventID as JSON "
            "Lines and a summary to stderr."
        ),
    )
    replay.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="files, directories, or s3://bucket/prefix of a trail bucket",
    )
    replay.add_argument(
        "--since", type=_date, metavar="YYYY-MM-DD", help="s3:// only: first delivery day"
    )
    replay.add_argument(
        "--until", type=_date, metavar="YYYY-MM-DD", help="s3:// only: last delivery day"
    )
    replay.add_argument("--config", metavar="FILE", help="config file (default: built-in rules)")
    replay.add_argument(
        "--output", "-o", metavar="FILE", default="-", help="detections output (default: stdout)"
    )
    replay.add_argument(
        "--no-progress", action="store_true", help="no progress bar even on a terminal"
    )
    replay.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="decode workers for local files (default: [limits] decode_workers, 0 = one per "
        "CPU; threads from 1 MB of input, processes from 64 MB: [limits] decode_in); "
        "1 = decode in the main thread",
    )

    run = sub.add_parser(
        "run",
        help="run the daemon: tail CloudTrail deliveries through SQS",
        description=(
            "Long-poll the configured SQS queues, fetch and decode the CloudTrail files they "
            "name, and write detections durably before deleting each message. SIGTERM/SIGINT "
            "drains and exits 0; a second signal exits at once."
        ),
    )
    run.add_argument("--config", "-c", metavar="FILE", required=True, help="config file")

    snapshot = sub.add_parser(
        "snapshot",
        help="seed the policy history with the IAM policies that exist now",
        description=(
            "Read every inline policy, managed policy version, attachment and permissions "
            "boundary (IAM GetAccountAuthorizationDetails) of the local account and of each "
            "[snapshot] accounts entry (through the role of role_arn_template) into the policy "
            "history. Exit 0 when every account was read, 1 when some failed."
        ),
    )
    snapshot.add_argument("--config", "-c", metavar="FILE", required=True, help="config file")
    snapshot.add_argument(
        "--account",
        action="extend",
        nargs="+",
        metavar="ID",
        help="only these accounts (default: the local account and [snapshot] accounts)",
    )

    state = sub.add_parser(
        "state",
        help="create what the configured state backend needs",
        description=(
            "state init: create (idempotently) what [state] backend needs. dynamodb: the table "
            "of [state.dynamodb] with its indexes, TTL on expires_at, on-demand capacity, "
            "point-in-time recovery -- run it with an administrator's credentials (the daemon's "
            "role may not create tables), or create the table with the CloudFormation stack "
            "config/aws/trailguard.yaml instead. sqlite: nothing (the daemon creates its files)."
        ),
    )
    state_commands = state.add_subparsers(
        dest="state_command", metavar="SUBCOMMAND", required=True, parser_class=_Parser
    )
    init = state_commands.add_parser(
        "init",
        help="create the table (dynamodb) or nothing (sqlite)",
        description=state.description,
    )
    init.add_argument("--config", "-c", metavar="FILE", required=True, help="config file")

    from trailguard.remediate.jobs_cli import add_jobs_parser

    add_jobs_parser(sub)

    demo = sub.add_parser(
        "demo",
        help="run the real daemon against an embedded AWS emulator (no credentials needed)",
        description=(
            "Start an AWS emulator (moto) on loopback with a trail bucket, an SQS queue and IAM "
            "principals, run the daemon on it with a real config, and play a trail with policy "
            "removals: detections and remediation are printed as they happen."
        ),
    )
    demo.add_argument(
        "--duration", type=float, metavar="SECS", help="stop after SECS (default: until Ctrl-C)"
    )
    demo.add_argument(
        "--http-port", type=int, default=9108, metavar="PORT", help="metrics port (default 9108)"
    )

    check = sub.add_parser(
        "check-config",
        help="validate a config file",
        description="Exit 0 when FILE is a valid config, 2 with the offending key otherwise.",
    )
    check.add_argument("file", metavar="FILE")
    return parser


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from trailguard.app import log_stream, run_daemon
    from trailguard.config import load_config
    from trailguard.telemetry.logging import configure_logging

    config = load_config(args.config)
    configure_logging(config.logging.level, config.logging.format, stream=log_stream(config))
    return asyncio.run(run_daemon(config, config_path=args.config))


def _cmd_snapshot(args: argparse.Namespace) -> int:
    import asyncio
    import re

    from trailguard.config import load_config
    from trailguard.remediate.snapshot import AccountSnapshot, take_snapshot
    from trailguard.state.backends import open_state
    from trailguard.telemetry.logging import configure_logging

    for account in args.account or ():
        if not re.fullmatch(r"[0-9]{12}", account):
            raise UsageError(f"--account: {account!r} is not a 12-digit AWS account ID")
    config = load_config(args.config)
    configure_logging(config.logging.level, config.logging.format, stream=sys.stderr)
    if not config.history.enabled:
        raise UsageError("snapshot: the policy history is disabled ([history] enabled = false)")

    async def snapshot() -> list[AccountSnapshot]:
        async with open_state(config, history=True) as state:
            assert state.history is not None
            return await take_snapshot(config, state.history, accounts=args.account)

    results = asyncio.run(snapshot())
    for result in results:
        print(result.render())
    return EXIT_PARTIAL if any(result.error for result in results) else EXIT_OK


def _cmd_state(args: argparse.Namespace) -> int:
    import asyncio

    from trailguard.config import load_config
    from trailguard.telemetry.logging import configure_logging

    config = load_config(args.config)
    configure_logging(config.logging.level, config.logging.format, stream=sys.stderr)
    if config.state.backend == "sqlite":
        print(
            f'{args.config}: [state] backend = "sqlite": nothing to create (the daemon creates '
            f"{config.state.path} and the history file next to it when it first runs)"
        )
        return EXIT_OK
    from trailguard.state.dynamo.table import create_table

    done = asyncio.run(create_table(config))
    table = config.state.dynamodb.table
    for line in done:
        print(f"{table}: {line}")
    print(f"{table}: ready (keys, indexes claim and by_state, TTL on expires_at, on demand)")
    return EXIT_OK


def _cmd_jobs(args: argparse.Namespace) -> int:
    from trailguard.remediate.jobs_cli import run_jobs_command

    return run_jobs_command(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    import asyncio

    from trailguard.demo.run import run_demo

    if args.duration is not None and args.duration <= 0:
        raise UsageError("--duration must be > 0")
    return asyncio.run(run_demo(args.duration, args.http_port))


def _cmd_check_config(args: argparse.Namespace) -> int:
    from trailguard.config import load_config, unconfirmed_writes_warning
    from trailguard.detect.rules import RuleSet

    config = load_config(args.file)
    rules = RuleSet.from_config(config)
    print(
        f"{args.file}: OK ({len(rules.event_names)} event names watched, "
        f"{len(config.sources.sqs)} SQS source(s))"
    )
    warning = unconfirmed_writes_warning(config.remediation)
    if warning is not None:
        print(f"{args.file}: warning: {warning}", file=sys.stderr)
    return EXIT_OK


def _cmd_replay(args: argparse.Namespace) -> int:
    import asyncio

    from trailguard.config import load_config
    from trailguard.detect.process import Detector
    from trailguard.detect.rules import RuleSet
    from trailguard.telemetry.logging import configure_logging

    config = load_config(args.config)
    configure_logging(config.logging.level, config.logging.format, stream=sys.stderr)
    s3_uris = [p for p in args.paths if p.startswith("s3://")]
    if (args.since or args.until) and not s3_uris:
        raise UsageError("--since/--until apply to s3:// paths only")
    if args.since and args.until and args.since > args.until:
        raise UsageError("--since is after --until")
    if s3_uris:
        from trailguard.ingest.backfill import parse_s3_uri

        for uri in s3_uris:
            parse_s3_uri(uri)  # usage errors before any work
    # The policy facts the files hold go into a history (unless [history] enabled = false), and
    # the policy changes among them are judged against it: the config's history file, or --
    # without a config file, no state to write to -- a temporary one, gone after the run.
    record_history = config.history.enabled
    detector = Detector(
        RuleSet.from_config(config),
        history=record_history,
        limits=config.limits.decode_limits(),
    )
    progress = sys.stderr if (sys.stderr.isatty() and not args.no_progress) else None
    summary = asyncio.run(_replay(args, config, detector, record_history, progress))
    print(summary.render(), file=sys.stderr)
    return EXIT_PARTIAL if summary.failed else EXIT_OK


async def _replay(
    args: argparse.Namespace,
    config: Config,
    detector: Detector,
    record_history: bool,
    progress: TextIO | None,
) -> ReplaySummary:
    from contextlib import AsyncExitStack

    from trailguard.ingest.replay import LocalReplay
    from trailguard.outputs.jsonl import JsonlWriter

    s3_uris = [p for p in args.paths if p.startswith("s3://")]
    local = [p for p in args.paths if not p.startswith("s3://")]
    async with AsyncExitStack() as stack:
        history: PolicyHistoryStore | None = None
        ledger = None
        if record_history and args.config is None:
            from trailguard.state.policy_history_memory import ScratchHistoryStore

            history = ScratchHistoryStore()  # a temporary directory only if it grows
            stack.push_async_callback(history.close)
        elif record_history:
            from trailguard.state.backends import open_state  # SQLite or DynamoDB: only then

            # The facts a replay records are a write source too: their events go into the
            # event ledger next to them, as in the daemon (on the configured backend).
            state = await stack.enter_async_context(open_state(config, history=True))
            history, ledger = state.history, state.ledger
        writer = stack.enter_context(JsonlWriter(args.output, fsync=args.output != "-"))
        replay = LocalReplay(detector, writer, history=history, ledger=ledger)
        if local:
            await replay.run(
                local,
                progress=progress,
                pool=_replay_pool(args, config, detector),
                min_bytes=_replay_min_bytes(config),
            )
        if s3_uris:
            from trailguard.ingest.backfill import replay_s3

            await replay_s3(
                s3_uris,
                config=config,
                replay=replay,
                since=args.since,
                until=args.until,
                progress=progress,
            )
        return replay.summary


def _replay_pool(
    args: argparse.Namespace, config: Config, detector: Detector
) -> Callable[[], DecodePool] | None:
    """What makes the replay's decode workers, or None for one process (one CPU, --workers 1).

    The workers build their Detector from the config, so the config they get says whether
    policy facts (and changes to judge) are wanted."""
    import msgspec

    workers = args.workers if args.workers is not None else config.limits.decode_workers
    if workers < 0:
        raise UsageError("--workers must be 0 (one per CPU) or more")
    if workers == 1:
        return None
    wanted = msgspec.structs.replace(
        config,
        history=msgspec.structs.replace(config.history, enabled=detector.history),
        limits=msgspec.structs.replace(config.limits, decode_workers=workers),
    )
    if wanted.limits.decode_worker_count() < 2:
        return None

    def make() -> DecodePool:
        from trailguard.decode_pool import DecodePool

        return DecodePool(wanted, wanted.limits.decode_worker_count())

    return make


def _replay_min_bytes(config: Config) -> int:
    """How much input repays starting the decode workers: threads start at once."""
    from trailguard.decode_pool import decode_mode
    from trailguard.ingest.replay import PARALLEL_MIN_BYTES, PARALLEL_MIN_BYTES_THREADS

    threads = decode_mode(config) == "threads"
    return PARALLEL_MIN_BYTES_THREADS if threads else PARALLEL_MIN_BYTES


_COMMANDS = {
    "replay": _cmd_replay,
    "run": _cmd_run,
    "demo": _cmd_demo,
    "snapshot": _cmd_snapshot,
    "jobs": _cmd_jobs,
    "state": _cmd_state,
    "check-config": _cmd_check_config,
}


def _honour_aws_region() -> None:
    """AWS SDKs read AWS_REGION; botocore reads only AWS_DEFAULT_REGION.  Bridge the two, so
    every client trailguard creates (daemon, remediation, snapshot) sees the region users set."""
    region = os.environ.get("AWS_REGION")
    if region and not os.environ.get("AWS_DEFAULT_REGION"):
        os.environ["AWS_DEFAULT_REGION"] = region


def main(argv: Sequence[str] | None = None) -> int:
    _honour_aws_region()
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return _COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"trailguard: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"{exc}\n(see: trailguard --help)", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader of our stdout went away (`trailguard replay ... | head`): not an error.
        sys.stderr.close()
        return EXIT_OK
    except StartupError as exc:
        print(f"trailguard: cannot start: {exc}", file=sys.stderr)
        return EXIT_PARTIAL
    except TrailguardError as exc:
        print(f"trailguard: {exc}", file=sys.stderr)
        return EXIT_PARTIAL
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
