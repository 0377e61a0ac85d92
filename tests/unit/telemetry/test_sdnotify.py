"""sd_notify against a real Unix datagram socket, as systemd's manager would receive it."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from trailguard.telemetry.sdnotify import Notifier


class Receiver:
    """A bound AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(2.0)

    def recv(self) -> list[str]:
        return self.sock.recv(4096).decode().split("\n")

    def pending(self) -> int:
        """How many datagrams are waiting (without blocking)."""
        count = 0
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(4096)
                count += 1
        except BlockingIOError:
            return count
        finally:
            self.sock.settimeout(2.0)


@pytest.fixture
def socket_path(tmp_path: Path) -> str:
    # AF_UNIX paths are limited to 107 bytes: keep the name short.
    return str(tmp_path / "n.sock")


@pytest.fixture
def receiver(socket_path: str) -> Iterator[Receiver]:
    r = Receiver(socket_path)
    yield r
    r.sock.close()


def test_ready_stopping_status_and_watchdog_arrive(socket_path: str, receiver: Receiver) -> None:
    notifier = Notifier(socket_path)
    assert notifier.enabled
    assert notifier.ready(status="watching 2 queues")
    assert receiver.recv() == ["READY=1", "STATUS=watching 2 queues"]
    assert notifier.watchdog()
    assert receiver.recv() == ["WATCHDOG=1"]
    assert notifier.status("draining\n3 in flight")  # newlines would end the field
    assert receiver.recv() == ["STATUS=draining 3 in flight"]
    assert notifier.extend_timeout(45)
    assert receiver.recv() == ["EXTEND_TIMEOUT_USEC=45000000"]
    assert notifier.stopping()
    assert receiver.recv() == ["STOPPING=1"]
    notifier.close()


def test_reloading_carries_monotonic_usec(socket_path: str, receiver: Receiver) -> None:
    notifier = Notifier(socket_path)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    fields = receiver.recv()
    assert fields[0] == "RELOADING=1"
    assert fields[1].startswith("MONOTONIC_USEC=")
    assert before <= int(fields[1].removeprefix("MONOTONIC_USEC=")) <= after
    notifier.ready()
    assert receiver.recv() == ["READY=1"]
    notifier.close()


def test_abstract_namespace_socket() -> None:
    name = f"trailguard-test-{uuid.uuid4().hex}"
    receiver = Receiver("\0" + name)
    try:
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name})
        assert notifier.enabled
        assert notifier.ready()
        assert receiver.recv() == ["READY=1"]
        notifier.close()
    finally:
        receiver.sock.close()


def test_no_notify_socket_is_a_noop() -> None:
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert not notifier.ready()
    assert not notifier.watchdog()
    assert not notifier.stopping()


def test_relative_socket_path_is_ignored() -> None:
    notifier = Notifier("relative/path.sock")
    assert not notifier.enabled
    assert not notifier.ready()


def test_vanished_socket_does_not_raise(socket_path: str) -> None:
    receiver = Receiver(socket_path)
    notifier = Notifier(socket_path)
    receiver.sock.close()
    os.unlink(socket_path)
    assert notifier.ready() is False
    assert notifier.watchdog() is False  # logged once, never raised
    notifier.close()


def test_from_environ_watchdog_and_unset(socket_path: str) -> None:
    env = {
        "NOTIFY_SOCKET": socket_path,
        "WATCHDOG_USEC": "30000000",
        "WATCHDOG_PID": str(os.getpid()),
        "OTHER": "kept",
    }
    notifier = Notifier.from_environ(env, unset=True)
    assert notifier.watchdog_interval == 15.0
    assert env == {"OTHER": "kept"}
    # A watchdog meant for another process (our parent, say) is not ours.
    other = Notifier.from_environ(
        {"NOTIFY_SOCKET": socket_path, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}
    )
    assert other.watchdog_interval is None
    bad = Notifier.from_environ({"NOTIFY_SOCKET": socket_path, "WATCHDOG_USEC": "soon"})
    assert bad.watchdog_interval is None


async def test_watchdog_task_pings_at_half_the_period(socket_path: str, receiver: Receiver) -> None:
    notifier = Notifier(socket_path, watchdog_usec=200_000)  # 0.2 s: ping every 0.1 s
    assert notifier.watchdog_interval == pytest.approx(0.1)
    task = asyncio.create_task(notifier.run_watchdog())
    await asyncio.sleep(0.55)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pings = receiver.pending()
    assert 4 <= pings <= 8, pings
    notifier.close()


async def test_watchdog_task_stops_pinging_when_the_loop_is_stuck(
    socket_path: str, receiver: Receiver
) -> None:
    notifier = Notifier(socket_path, watchdog_usec=100_000)  # ping every 0.05 s
    task = asyncio.create_task(notifier.run_watchdog())
    await asyncio.sleep(0)  # first ping
    time.sleep(0.3)  # noqa: ASYNC251 -- on purpose: a blocked loop sends no ping meanwhile
    assert receiver.pending() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    notifier.close()


async def test_watchdog_task_returns_without_a_watchdog(socket_path: str) -> None:
    await asyncio.wait_for(Notifier(socket_path).run_watchdog(), timeout=1)
    await asyncio.wait_for(Notifier(None, watchdog_usec=1000).run_watchdog(), timeout=1)
