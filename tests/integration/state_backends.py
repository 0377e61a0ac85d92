"""The state backends side by side, for the contract suites (test_contract_*.py).

:func:`open_backend` opens the stores of one backend -- ``sqlite`` in a temporary directory, or
``dynamodb`` on a fresh table of the moto server (created with ``trailguard state init``'s own
code) -- with the test's clock.  The contract suites run the same tests, taken from the SQLite
stores' unit tests, against both: a test that passes on SQLite and fails on DynamoDB is a
difference of behaviour between the backends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

from tests.integration.conftest import MotoServer
from trailguard.config import Config, parse_config
from trailguard.state.backends import StateStores, open_state
from trailguard.state.dynamo.table import create_table

BACKENDS: Final = ("sqlite", "dynamodb")
TABLE: Final = "trailguard-test"


def backend_config(backend: str, directory: Path, moto: MotoServer, *, extra: str = "") -> Config:
    """A config for ``backend``: state under ``directory``, or the moto server's table."""
    text = (
        f'[aws]\nregion = "{moto.region}"\nendpoint_url = "{moto.endpoint_url}"\n'
        f'[state]\nbackend = "{backend}"\npath = "{directory / "state.sqlite3"}"\n'
        "dedup_ttl_hours = 1\n"  # the unit tests' TTL (3600 s)
        f'[state.dynamodb]\ntable = "{TABLE}"\n' + extra
    )
    return parse_config(text, file="contract.toml")


@asynccontextmanager
async def open_backend(
    backend: str,
    directory: Path,
    moto: MotoServer,
    *,
    clock: Callable[[], float],
    dedup: bool = False,
    history: bool = False,
    jobs: bool = False,
) -> AsyncIterator[StateStores]:
    config = backend_config(backend, directory, moto)
    if backend == "dynamodb":
        moto.reset()
        await create_table(config, poll_secs=0.05)
    async with open_state(config, dedup=dedup, history=history, jobs=jobs, clock=clock) as state:
        yield state
