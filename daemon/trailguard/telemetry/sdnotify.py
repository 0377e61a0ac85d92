"""systemd's readiness and watchdog protocol (sd_notify(3)), written by hand.

Why by hand: the protocol is one datagram of ``KEY=VALUE`` lines sent to the Unix socket named
by ``$NOTIFY_SOCKET`` -- about twenty lines of code.  The ``sdnotify`` package on PyPI is
unmaintained, synchronous and swallows every error; ``systemd-python`` needs libsystemd headers
to build.  Neither is worth a dependency.

What trailguard sends (``systemd/trailguard.service`` is ``Type=notify``, ``WatchdogSec=30``):

* ``READY=1`` once start-up is done (queues checked, HTTP listening) -- ``systemctl start``
  returns then, and ordering dependencies wait for it;
* ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` from a task on the event loop
  (:meth:`Notifier.run_watchdog`): a loop that is stuck stops pinging, and systemd kills and
  restarts the service;
* ``RELOADING=1`` plus ``MONOTONIC_USEC`` when a SIGHUP reload starts, then ``READY=1`` when it
  is done (the ``Type=notify-reload`` semantics; plain ``Type=notify`` accepts them too);
* ``STOPPING=1`` when the first SIGTERM starts the drain, and ``EXTEND_TIMEOUT_USEC`` if the
  drain needs longer than systemd would wait;
* ``STATUS=...``, a one-line summary shown by ``systemctl status``.

Without ``$NOTIFY_SOCKET`` (a container, a terminal) every call is a no-op that returns False.
Sending never raises: a socket that went away is logged once and then ignored.  The socket is
non-blocking, so a call never stalls the loop.  ``$NOTIFY_SOCKET`` may be a filesystem path or
an abstract-namespace name written with a leading ``@``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping, MutableMapping
from typing import Final

from trailguard.telemetry.logging import get_logger

__all__ = ["Notifier"]

log = get_logger(__name__)

NOTIFY_ENV: Final = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Sends sd_notify messages to ``socket_path`` (None: do nothing).

    ``watchdog_usec``: the watchdog period systemd gave (``$WATCHDOG_USEC``), or None.
    Build it from the environment with :meth:`from_environ`.
    """

    def __init__(self, socket_path: str | None, *, watchdog_usec: int | None = None) -> None:
        self.socket_path = socket_path or None
        self._address: str | None = None
        if self.socket_path is not None:
            if self.socket_path.startswith("@"):
                self._address = "\0" + self.socket_path[1:]
            elif self.socket_path.startswith("/"):
                self._address = self.socket_path
            else:  # systemd also knows vsock:CID:PORT (for VMs); trailguard does not need it
                log.warning("sdnotify.unsupported_socket", notify_socket=self.socket_path)
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._sock: socket.socket | None = None
        self._failed_once = False

    @classmethod
    def from_environ(
        cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = False
    ) -> Notifier:
        """Read ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``.

        The watchdog applies only when ``$WATCHDOG_PID`` is unset or this process's pid.
        ``unset=True`` removes the variables afterwards, so child processes (decode workers)
        do not inherit them.
        """
        env: MutableMapping[str, str] = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET")
        watchdog = _watchdog_usec(env)
        if unset:
            for name in NOTIFY_ENV:
                env.pop(name, None)
        return cls(path, watchdog_usec=watchdog)

    # -- state ---------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notify socket."""
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of systemd's period), or None: no watchdog."""
        if not self.enabled or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    # -- sending -------------------------------------------------------------------------------

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram; True when it was sent."""
        if self._address is None or not fields:
            return False
        data = "\n".join(fields).encode()
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(data, self._address)
        except OSError as exc:
            if not self._failed_once:
                self._failed_once = True
                log.warning(
                    "sdnotify.send_failed",
                    notify_socket=self.socket_path,
                    error=exc.strerror or str(exc),
                )
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up (or a reload) is complete."""
        return self.notify("READY=1", *_status(status))

    def reloading(self, status: str | None = None) -> bool:
        """A reload starts; send :meth:`ready` when it is done."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun."""
        return self.notify("STOPPING=1", *_status(status))

    def watchdog(self) -> bool:
        """One watchdog keep-alive."""
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """A one-line status for ``systemctl status``."""
        return self.notify(*_status(text))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask systemd to wait ``seconds`` more for the current start, reload or stop."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    async def run_watchdog(self) -> None:
        """Ping ``WATCHDOG=1`` every half period until cancelled; returns at once when systemd
        asked for no watchdog.  Run it as a task on the daemon's loop: the ping proves the loop
        turns."""
        interval = self.watchdog_interval
        if interval is None:
            return
        log.info("sdnotify.watchdog_started", interval_secs=interval)
        while True:
            self.watchdog()
            await asyncio.sleep(interval)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def _status(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    return ("STATUS=" + " ".join(text.split()),)  # one line: newlines would end the field


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None
