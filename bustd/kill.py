"""Killing through pidfds: identity re-check, signal, wait, escalate.

A PID can be recycled between the scan and the signal. bustd opens a pidfd
first, then checks that the process now at that PID has the start time seen
in the scan: the scanned process existed before the pidfd was opened and
still exists after, so the pidfd refers to it and the signal cannot reach a
newcomer. Exit is awaited by polling the pidfd (readable once the process
has exited), never by a sleep loop. Kernels before 5.3 have no pidfds: there
the identity check comes right before kill(), and exit is checked in /proc
every 50 ms.
"""

from __future__ import annotations

import errno
import os
import select

from . import sig
from .process import parse_stat, read_starttime
from .procfs import NoSuchProcess, ProcFS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Sequence

__all__ = ["KILL_WAIT", "Target", "signal_and_wait"]

KILL_WAIT = 10.0  # seconds to wait for exit after SIGKILL before giving up
NO_PIDFD = -2  # Target.fd on kernels without pidfd_open (before 5.3)
FALLBACK_POLL = 0.05  # seconds between /proc checks when there is no pidfd


class Target:
    """A process to signal: its PID and the start time seen in the scan."""

    __slots__ = ("pid", "starttime", "fd")

    def __init__(self, pid: int, starttime: int) -> None:
        self.pid = pid
        self.starttime = starttime
        self.fd = -1


def _open(fs: ProcFS, target: Target) -> str | None:
    """Open a pidfd for ``target`` and check its identity.

    Returns None when ``target.fd`` is ready (NO_PIDFD on kernels before 5.3,
    which lack pidfd_open), else why it was not opened.
    """
    try:
        fd = os.pidfd_open(target.pid)
    except ProcessLookupError:
        return "exited before the signal"
    except OSError as err:
        if err.errno != errno.ENOSYS:
            raise
        fd = NO_PIDFD
    why = _identity(fs, target)
    if why is not None:
        if fd >= 0:
            os.close(fd)
        return why
    target.fd = fd
    return None


def _identity(fs: ProcFS, target: Target) -> str | None:
    """Return why the process now at ``target.pid`` is not the target, or None."""
    try:
        now = read_starttime(fs, target.pid)
    except (NoSuchProcess, ValueError):
        return "exited before the signal"
    if now != target.starttime:
        return f"PID {target.pid} was recycled (start time {target.starttime} -> {now})"
    return None


def _send(fs: ProcFS, target: Target, signum: int) -> bool:
    """Send ``signum`` to ``target``; return False if the process is gone."""
    try:
        if target.fd != NO_PIDFD:
            sig.pidfd_send_signal(target.fd, signum)
        elif _identity(fs, target) is None:
            # No pidfd (Linux < 5.3): kill() right after the identity check
            # leaves only a tiny window for the PID to be recycled.
            os.kill(target.pid, signum)
        else:
            return False
    except ProcessLookupError:
        return False
    return True


def _exited(fs: ProcFS, target: Target) -> bool:
    """Without a pidfd: whether ``target`` has exited (gone, zombie or replaced)."""
    try:
        st = parse_stat(fs.read_pid(target.pid, "stat"))
    except (NoSuchProcess, ValueError):
        return True
    return st.starttime != target.starttime or st.state in b"ZXx"


def _wait(fs: ProcFS, targets: list[Target], timeout: float,
          clock: Callable[[], float]) -> list[Target]:
    """Wait up to ``timeout`` s for ``targets`` to exit; return those still alive.

    Pidfds become readable when their process exits; targets without one
    (old kernels) are checked in /proc every FALLBACK_POLL seconds.
    """
    alive = list(targets)
    poller = select.poll()
    for t in alive:
        if t.fd >= 0:
            poller.register(t.fd, select.POLLIN)
    deadline = clock() + timeout
    while alive:
        left = deadline - clock()
        if left <= 0:
            break
        if any(t.fd == NO_PIDFD for t in alive):
            left = min(left, FALLBACK_POLL)
        done = {fd for fd, _ in poller.poll(max(1, int(left * 1000)))}
        for fd in done:
            poller.unregister(fd)
        alive = [t for t in alive if t.fd not in done
                 and not (t.fd == NO_PIDFD and _exited(fs, t))]
    return alive


def signal_and_wait(fs: ProcFS, targets: Sequence[Target], first: int, grace: float,
                    clock: Callable[[], float]) -> tuple[list[str], int, float, bool]:
    """Signal ``targets`` with ``first``; escalate to SIGKILL after ``grace`` s.

    Returns (problems, last signal sent, seconds until all exited, all exited).
    ``problems`` lists targets skipped because they exited early or their PID
    was recycled. Raises OSError only for unexpected pidfd failures; kernels
    without pidfds (before 5.3) get kill() right after the identity check.
    """
    problems: list[str] = []
    opened: list[Target] = []
    for t in targets:
        why = _open(fs, t)
        if why is None:
            opened.append(t)
        else:
            problems.append(f"pid={t.pid}: {why}")
    start = clock()
    signum = first
    try:
        live = [t for t in opened if _send(fs, t, signum)]
        if signum != sig.SIGKILL and live:
            live = _wait(fs, live, grace, clock)
            if live:
                signum = sig.SIGKILL
                live = [t for t in live if _send(fs, t, signum)]
        if live:
            live = _wait(fs, live, KILL_WAIT, clock)
        return problems, signum, clock() - start, not live and bool(opened)
    finally:
        for t in opened:
            if t.fd >= 0:
                os.close(t.fd)
            t.fd = -1
