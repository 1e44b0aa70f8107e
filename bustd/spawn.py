"""Short-lived children: hooks and notification helpers.

Each is started with ``os.posix_spawn``: an argv list and an environment
built here (never a shell, never bustd's own environment, which may hold
NOTIFY_SOCKET), stdin from /dev/null, SIGPIPE and SIGXFSZ back at their
defaults, in a session of its own (so a hook and whatever it starts can be
killed together). ``subprocess`` is not imported: it would cost the daemon
about 2.5 MiB for good.

:class:`Children` remembers what was started and reaps it with
``waitpid(WNOHANG)`` when the daemon is awake anyway (on every check), so
no child ever makes bustd wait or wake; one still running past its
deadline is killed with its session. Outcomes are logged there, in one line
each, by the words of the one that started it.
"""

from __future__ import annotations

import errno
import os
import select
import time

from .log import Log, safe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from signal import SIGKILL, SIGPIPE, SIGXFSZ
    from typing import Callable
else:
    from _signal import SIGKILL, SIGPIPE, SIGXFSZ  # not signal.py: see sig.py

__all__ = ["MAX_CHILDREN", "PATH", "Children", "spawn", "status_text"]

# The PATH a child gets (systemd's default for services).
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_CHILDREN = 16  # running at once; more are refused (a hook that never ends, many users)
_POLL_FALLBACK = 0.005  # seconds between waitpid calls where there is no pidfd


def spawn(argv: list[str], env: dict[str, str]) -> int:
    """Start ``argv[0]`` (an absolute path) with ``argv`` and ``env``; return its pid.

    Its ``oom_score_adj`` is set back to 0: it would otherwise inherit
    bustd's -1000 and be safe from every OOM killer, bustd included.
    Raises OSError (ENOENT, EACCES, EAGAIN, ENOMEM...) if it cannot start.
    """
    pid = os.posix_spawn(argv[0], argv, env,
                         file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)],
                         setsigdef=(SIGPIPE, SIGXFSZ), setsid=True)
    try:
        # Always the real /proc: the child is bustd's own, whatever tree it watches.
        fd = os.open(f"/proc/{pid}/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
    except OSError:
        pass  # it already exited, or /proc is not ours: nothing to undo
    return pid


def status_text(status: int) -> str:
    """Return what a wait status means: ``exited with status 3``, ``killed by signal 9``."""
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


class _Child:
    __slots__ = ("pid", "what", "kind", "started", "deadline", "explain", "killed")

    def __init__(self, pid: int, what: str, kind: str, started: float, deadline: float,
                 explain: Callable[[int], str | None] | None) -> None:
        self.pid = pid
        self.what = what
        self.kind = kind
        self.started = started
        self.deadline = deadline
        self.explain = explain
        self.killed = False


class Children:
    """The children bustd started and has not reaped yet.

    ``clock`` gives monotonic seconds. ``failures`` counts, by kind
    ("pre-kill hook", "post-kill hook", "notification"), children that
    could not start, failed, or were killed at their deadline.
    """

    __slots__ = ("log", "clock", "running", "failures", "_said_full")

    def __init__(self, log: Log, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.clock = clock
        self.running: dict[int, _Child] = {}
        self.failures: dict[str, int] = {}
        self._said_full = False

    def _fail(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1

    def start(self, argv: list[str], env: dict[str, str], what: str, kind: str,
              limit: float, explain: Callable[[int], str | None] | None = None) -> int:
        """Spawn a child; return its pid, or -1 (logged) if it could not start.

        ``what`` names it in log lines; it is killed if still running
        ``limit`` seconds from now. ``explain(exit_code)`` may turn a
        non-zero exit code into words (None: use the code).
        """
        self.reap()
        if len(self.running) >= MAX_CHILDREN:
            if not self._said_full:
                self.log.warning(f"not starting the {what}: {MAX_CHILDREN} children of bustd "
                                 "still run")
                self._said_full = True
            self._fail(kind)
            return -1
        self._said_full = False
        try:
            pid = spawn(argv, env)
        except (OSError, ValueError) as err:
            self.log.warning(f"cannot start the {what} ({safe(argv[0].encode())}): {err}")
            self._fail(kind)
            return -1
        now = self.clock()
        self.running[pid] = _Child(pid, what, kind, now, now + limit, explain)
        return pid

    def wait(self, pid: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for child ``pid`` to exit; return whether it did.

        An exited child is reaped and its outcome logged. Waits on a pidfd
        (readable once the process has exited); without one, polls waitpid.
        """
        child = self.running.get(pid)
        if child is None:
            return True
        deadline = time.monotonic() + timeout
        try:
            fd = os.pidfd_open(pid)
        except (OSError, AttributeError):
            fd = -1
        try:
            while True:
                if self._reap_one(child):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if fd >= 0:
                    poller = select.poll()
                    poller.register(fd, select.POLLIN)
                    poller.poll(max(1, int(left * 1000)))
                else:
                    time.sleep(min(left, _POLL_FALLBACK))
        finally:
            if fd >= 0:
                os.close(fd)

    def _reap_one(self, child: _Child) -> bool:
        """Reap ``child`` if it has exited (logging its outcome); return whether it had."""
        try:
            pid, status = os.waitpid(child.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = child.pid, -1  # reaped elsewhere: nothing more to learn
        except OSError as err:
            if err.errno != errno.EINTR:
                raise
            return False
        if pid == 0:
            return False
        del self.running[child.pid]
        took = self.clock() - child.started
        if status == -1 or child.killed:
            return True
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            self.log.debug(f"{child.what} (pid {child.pid}) done in {took:.2f} s")
            return True
        self._fail(child.kind)
        meaning = (child.explain(os.WEXITSTATUS(status))
                   if child.explain is not None and os.WIFEXITED(status) else None)
        self.log.warning(f"{child.what} (pid {child.pid}) failed after {took:.2f} s: "
                         f"{meaning or status_text(status)}")
        return True

    def reap(self) -> None:
        """Reap every child that has exited; kill those past their deadline (never blocks)."""
        if not self.running:
            return
        now = self.clock()
        for child in list(self.running.values()):
            if self._reap_one(child) or child.killed or now < child.deadline:
                continue
            self.kill(child.pid, f"still running after {now - child.started:.1f} s")

    def kill(self, pid: int, why: str) -> None:
        """Kill child ``pid`` and its session (it is reaped later); log ``why``."""
        child = self.running.get(pid)
        if child is None or child.killed:
            return
        child.killed = True
        self._fail(child.kind)
        self.log.warning(f"{child.what} (pid {pid}) {why}: killing it")
        try:
            os.killpg(pid, SIGKILL)  # its own session and process group (setsid)
        except OSError:
            try:
                os.kill(pid, SIGKILL)
            except OSError:
                pass

    def on_record(self, record: object) -> None:
        """An output: reap on every check, when the daemon is awake anyway."""
        if getattr(record, "kind", "") == "check":
            self.reap()
