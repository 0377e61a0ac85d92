"""CPU time and peak RSS of this process and of the decode pool's processes (Linux /proc)."""

from __future__ import annotations

import multiprocessing
import os
import resource
from multiprocessing import forkserver

_TICK = os.sysconf("SC_CLK_TCK")


def helper_pids() -> list[int]:
    """The pool's worker processes and the forkserver that forks them."""
    pids = [p.pid for p in multiprocessing.active_children() if p.pid is not None]
    server = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if server:
        pids.append(server)
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def peak_rss_mb(pid: int) -> float:
    """The peak resident set (VmHWM) of ``pid`` in MB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def own_peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM, not ru_maxrss, which Linux carries over from the parent
    across fork and exec (a probe started by a 300 MB bench would report 300 MB)."""
    return peak_rss_mb(os.getpid())


def total_cpu(pids: list[int]) -> float:
    """CPU seconds of this process (all threads) and of ``pids``."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime + sum(cpu_seconds(pid) for pid in pids)


def total_peak_rss_mb(pids: list[int]) -> float:
    """Peak RSS of this process plus those of ``pids`` (each its own peak: an upper bound)."""
    return own_peak_rss_mb() + sum(peak_rss_mb(pid) for pid in pids)


def peak_rss_breakdown(pids: list[int]) -> dict[str, float]:
    """Peak RSS (MB) of this process and of each of ``pids``."""
    return {"self": own_peak_rss_mb(), **{str(pid): peak_rss_mb(pid) for pid in pids}}


def pss_mb(pids: list[int]) -> float:
    """Proportional set size now (MB) of this process and ``pids``: shared pages counted once."""
    total = 0.0
    for pid in ["self", *map(str, pids)]:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as handle:
                for line in handle:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) / 1024
                        break
        except OSError:
            pass
    return total
