"""Killing through pidfds: identity re-check, signal, wait, escalate.

A PID can be recycled between the scan and the signal. bustd opens a pidfd
first, then checks that the process now at that PID has the start time seen
in the scan: the scanned process existed before the pidfd was opened and
still exists after, so the pidfd refers to it and the signal cannot reach a
newcomer. Exit is awaited by polling the pidfd (readable once the process
has exited), never by a sleep loop.
"""

from __future__ import annotations

import errno
import os
import select

from . import sig
from .process import read_starttime
from .procfs import NoSuchProcess, ProcFS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Sequence

__all__ = ["KILL_WAIT", "Target", "signal_and_wait"]

KILL_WAIT = 10.0  # seconds to wait for exit after SIGKILL before giving up


class Target:
    """A process to signal: its PID and the start time seen in the scan."""

    __slots__ = ("pid", "starttime", "fd")

    def __init__(self, pid: int, starttime: int) -> None:
        self.pid = pid
        self.starttime = starttime
        self.fd = -1


def _open(fs: ProcFS, target: Target) -> str | None:
    """Open a pidfd for ``target`` and check its identity.

    Returns None when ``target.fd`` is ready, else why it was not opened.
    """
    try:
        fd = os.pidfd_open(target.pid)
    except ProcessLookupError:
        return "exited before the signal"
    try:
        now = read_starttime(fs, target.pid)
    except (NoSuchProcess, ValueError):
        os.close(fd)
        return "exited before the signal"
    if now != target.starttime:
        os.close(fd)
        return f"PID {target.pid} was recycled (start time {target.starttime} -> {now})"
    target.fd = fd
    return None


def _send(target: Target, signum: int) -> bool:
    """Send ``signum`` through the pidfd; return False if the process is gone."""
    try:
        sig.pidfd_send_signal(target.fd, signum)
    except ProcessLookupError:
        return False
    return True


def _wait(targets: list[Target], timeout: float, clock: Callable[[], float]) -> list[Target]:
    """Wait up to ``timeout`` s for ``targets`` to exit; return those still alive."""
    alive = {t.fd: t for t in targets}
    poller = select.poll()
    for fd in alive:
        poller.register(fd, select.POLLIN)
    deadline = clock() + timeout
    while alive:
        left = deadline - clock()
        if left <= 0:
            break
        for fd, _ in poller.poll(max(1, int(left * 1000))):
            poller.unregister(fd)
            del alive[fd]
    return list(alive.values())


def signal_and_wait(fs: ProcFS, targets: Sequence[Target], first: int, grace: float,
                    clock: Callable[[], float]) -> tuple[list[str], int, float, bool]:
    """Signal ``targets`` with ``first``; escalate to SIGKILL after ``grace`` s.

    Returns (problems, last signal sent, seconds until all exited, all exited).
    ``problems`` lists targets skipped because they exited early or their PID
    was recycled. Raises OSError only for unexpected pidfd failures (ENOSYS
    on kernels older than 5.3 is reported as a problem instead).
    """
    problems: list[str] = []
    opened: list[Target] = []
    for t in targets:
        try:
            why = _open(fs, t)
        except OSError as err:
            if err.errno != errno.ENOSYS:
                raise
            why = "pidfd_open is not supported by this kernel (needs Linux >= 5.3)"
        if why is None:
            opened.append(t)
        else:
            problems.append(f"pid={t.pid}: {why}")
    start = clock()
    signum = first
    try:
        live = [t for t in opened if _send(t, signum)]
        if signum != sig.SIGKILL and live:
            live = _wait(live, grace, clock)
            if live:
                signum = sig.SIGKILL
                live = [t for t in live if _send(t, signum)]
        if live:
            live = _wait(live, KILL_WAIT, clock)
        return problems, signum, clock() - start, not live and bool(opened)
    finally:
        for t in opened:
            os.close(t.fd)
            t.fd = -1
