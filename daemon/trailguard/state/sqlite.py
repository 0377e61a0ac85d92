"""The plumbing trailguard's SQLite stores share: :class:`SqliteStore` and two helpers.

The dedup store (``state/dedup.py``), the policy history (``state/policy_history.py``) and the
job store (``remediate/jobs.py``) subclass :class:`SqliteStore`; each keeps its schema and
queries.  The conventions they share:

- WAL journal with ``synchronous=FULL``: a write that returned survives a crash or power loss;
- one connection, used only from one dedicated worker thread (:meth:`SqliteStore._run`), so the
  event loop never blocks on disk and calls are serialised without locks;
- no implicit transactions (``isolation_level=None``): :func:`transaction` opens them;
- :class:`~trailguard.errors.StateError` for every storage failure, naming the store and its file.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Final, Self, TypeVar

from trailguard.errors import StateError

__all__ = [
    "Prepare",
    "SqliteStore",
    "component_version",
    "ensure_component_schema",
    "ensure_schema",
    "transaction",
]

_T = TypeVar("_T")

#: Checks or creates a store's schema on a fresh connection: ``prepare(conn, where)``, where
#: ``where`` starts every error message ("dedup store /var/lib/trailguard/state.sqlite3").
Prepare = Callable[[sqlite3.Connection, str], None]

_BUSY_TIMEOUT_MS: Final = 5000


class SqliteStore:
    """One SQLite file behind one connection that only one worker thread uses.

    A subclass names itself in ``_WHAT`` (error messages) and ``_THREAD`` (the thread's name), and
    builds itself in an ``open`` classmethod from what :meth:`_connect` returns.
    """

    _WHAT: ClassVar[str]
    _THREAD: ClassVar[str]

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        executor: ThreadPoolExecutor,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Use open(); the connection belongs to the executor's single thread.
        self._path = path
        self._conn = conn
        self._executor = executor
        self._clock = clock  # every store stamps its rows; injectable for tests
        self._closed = False

    @classmethod
    async def _connect(
        cls, path: Path, prepare: Prepare, *, create: bool = True, durable: bool = True
    ) -> tuple[sqlite3.Connection, ThreadPoolExecutor]:
        """Open ``path`` (see :func:`_open`) on a new worker thread; the connection and thread.

        ``durable=False`` (a scratch file deleted after the run, such as a replay's temporary
        history) skips the fsync of every commit."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=cls._THREAD)
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(
                executor, _open, path, f"{cls._WHAT} {path}", prepare, create, durable
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return conn, executor

    @property
    def path(self) -> Path:
        return self._path

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Release the store; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        except sqlite3.Error as exc:
            raise StateError(f"{self._WHAT} {self._path}: cannot close: {exc}") from exc
        finally:
            self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        """``fn(*args)`` on the worker thread; a sqlite3 error becomes a :class:`StateError`."""
        if self._closed:
            raise StateError(f"{self._WHAT} {self._path} is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StateError(f"{self._WHAT} {self._path}: {exc}") from exc


def _open(
    path: Path, where: str, prepare: Prepare, create: bool, durable: bool = True
) -> sqlite3.Connection:
    """Open the database (and its parent directory), set the pragmas, ``prepare`` it.

    Runs on the store's worker thread.  ``create=False`` refuses a file that does not exist.
    """
    if not create and not path.exists():
        raise StateError(f"{where}: no such file (has `trailguard run` run?)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"{where}: cannot create directory: {exc.strerror or exc}") from exc
    if path.is_dir():
        raise StateError(f"{where}: is a directory")
    try:
        # isolation_level=None: no implicit transactions; transaction() opens them explicitly.
        conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    except sqlite3.Error as exc:
        raise StateError(f"{where}: cannot open: {exc}") from exc
    try:
        # The first statement reads the header: "file is not a database" surfaces here.
        conn.execute("PRAGMA user_version").fetchone()
        conn.execute("PRAGMA journal_mode=WAL").fetchone()
        conn.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=OFF")
        prepare(conn, where)
    except StateError:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        raise StateError(f"{where}: cannot use: {exc}") from exc
    return conn


def ensure_schema(
    conn: sqlite3.Connection,
    where: str,
    *,
    version: Callable[[sqlite3.Connection], int],
    current: int,
    create: Prepare,
    name: str = "schema",
    table: str | None = None,
) -> None:
    """Create a store's schema in a file without it; refuse one newer than ``current``.

    ``version`` reads the store's schema version (0: none yet).  ``create`` makes the tables and
    records version ``current``; it runs in a write transaction after the version was read again
    (another process may have just created it), and refuses tables it does not expect.  ``name``
    is what the error calls the version ("job schema"); ``table`` is one of the store's tables,
    which must exist once a version is recorded.
    """
    found = version(conn)
    if found == 0:
        with transaction(conn):
            # Read again under the write lock: another process may have just created it.
            found = version(conn)
            if found == 0:
                create(conn, where)
                return
    if found > current:
        raise StateError(
            f"{where}: {name} version {found} is newer than this trailguard understands ({current})"
        )
    if (
        table is not None
        and not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    ):
        raise StateError(f"{where}: schema version {found} but no {table!r} table")


def component_version(conn: sqlite3.Connection, component: str) -> int:
    """The schema version ``component`` recorded in the shared ``meta`` table (0: none yet).

    Stores that share one file (the policy history and the event ledger) each keep their
    version there under their own name."""
    if not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone():
        return 0
    row = conn.execute(
        "SELECT schema_version FROM meta WHERE component = ?", (component,)
    ).fetchone()
    return 0 if row is None else int(row[0])


def ensure_component_schema(
    conn: sqlite3.Connection,
    where: str,
    *,
    component: str,
    current: int,
    table: str,
    schema: tuple[str, ...],
    name: str,
) -> None:
    """:func:`ensure_schema` for a store versioned in the shared ``meta`` table: ``schema``'s
    statements make its tables, ``table`` is the one that must not exist beforehand."""

    def create(conn: sqlite3.Connection, where: str) -> None:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone():
            raise StateError(f"{where}: a table named {table!r} not made by trailguard")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS meta (component TEXT PRIMARY KEY NOT NULL,"
            " schema_version INTEGER NOT NULL) WITHOUT ROWID"
        )
        for statement in schema:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO meta (component, schema_version) VALUES (?, ?)", (component, current)
        )

    ensure_schema(
        conn,
        where,
        version=lambda conn: component_version(conn, component),
        current=current,
        create=create,
        name=name,
        table=table,
    )


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE .. COMMIT (ROLLBACK on error); with synchronous=FULL, durable on exit."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLite may already have rolled back (disk full, I/O error)
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
