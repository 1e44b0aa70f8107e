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

import _thread
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

__all__ = ["MAX_CHILDREN", "NOT_YET", "PATH", "Children", "spawn", "status_text"]

# The PATH a child gets (systemd's default for services).
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_CHILDREN = 16  # running at once; more are refused (a hook that never ends, many users)
_POLL_FALLBACK = 0.005  # seconds between waitpid calls where there is no pidfd
# Stack of a spawning thread (start_within): one posix_spawn call. Small, so
# that mlockall(MCL_FUTURE) without MCL_ONFAULT does not lock 8 MiB for it.
_SPAWN_STACK = 256 * 1024
NOT_YET = -2  # start_within: the child did not start in time (it may later)


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


class _Spawning:
    """A posix_spawn call in a thread of its own (see Children.start_within).

    ``posix_spawn`` suspends its caller until the child has exec'd, which
    on a thrashing disk (the hook's executable paged in) can take seconds:
    the thread takes that wait instead of the kill path. ``done`` is
    released once the call returned; then ``pid`` or ``error`` is set.
    """

    __slots__ = ("done", "pid", "error", "argv", "what", "kind", "limit")

    def __init__(self, argv: list[str], env: dict[str, str], what: str, kind: str,
                 limit: float) -> None:
        self.pid = -1
        self.error: Exception | None = None
        self.argv, self.what, self.kind, self.limit = argv, what, kind, limit
        self.done = _thread.allocate_lock()
        self.done.acquire()
        old = _thread.stack_size(_SPAWN_STACK)
        try:
            _thread.start_new_thread(self._run, (env,))
        except RuntimeError:  # no thread could be started: spawn here, as start() does
            self._run(env)
        finally:
            _thread.stack_size(old)

    def _run(self, env: dict[str, str]) -> None:
        try:
            self.pid = spawn(self.argv, env)
        except (OSError, ValueError) as err:
            self.error = err
        finally:
            self.done.release()


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

    __slots__ = ("log", "clock", "running", "failures", "_said_full", "spawning")

    def __init__(self, log: Log, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.clock = clock
        self.running: dict[int, _Child] = {}
        self.failures: dict[str, int] = {}
        self._said_full = False
        self.spawning: list[_Spawning] = []  # start_within calls still under way

    def _fail(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1

    def _room(self, what: str, kind: str) -> bool:
        """Return whether another child may start (reaping first); say once if not."""
        self.reap()
        if len(self.running) + len(self.spawning) >= MAX_CHILDREN:
            if not self._said_full:
                self.log.warning(f"not starting the {what}: {MAX_CHILDREN} children of bustd "
                                 "still run")
                self._said_full = True
            self._fail(kind)
            return False
        self._said_full = False
        return True

    def _adopt(self, pid: int, error: Exception | None, argv: list[str], what: str,
               kind: str, limit: float, explain: Callable[[int], str | None] | None = None
               ) -> int:
        """Remember a started child (or log why it did not start); return its pid or -1."""
        if error is not None:
            self.log.warning(f"cannot start the {what} ({safe(argv[0].encode())}): {error}")
            self._fail(kind)
            return -1
        now = self.clock()
        self.running[pid] = _Child(pid, what, kind, now, now + limit, explain)
        return pid

    def start(self, argv: list[str], env: dict[str, str], what: str, kind: str,
              limit: float, explain: Callable[[int], str | None] | None = None) -> int:
        """Spawn a child; return its pid, or -1 (logged) if it could not start.

        ``what`` names it in log lines; it is killed if still running
        ``limit`` seconds from now. ``explain(exit_code)`` may turn a
        non-zero exit code into words (None: use the code).
        """
        if not self._room(what, kind):
            return -1
        try:
            pid, error = spawn(argv, env), None
        except (OSError, ValueError) as err:
            pid, error = -1, err
        return self._adopt(pid, error, argv, what, kind, limit, explain)

    def start_within(self, argv: list[str], env: dict[str, str], what: str, kind: str,
                     limit: float, timeout: float) -> int:
        """As :meth:`start`, never taking more than ``timeout`` seconds.

        The spawn runs in a thread of its own (see _Spawning). Returns the
        pid, -1 (logged) if it could not start, or NOT_YET if it had not
        started within ``timeout``: it is then adopted (or its failure
        logged) by a later :meth:`reap`, and killed at its deadline as usual.
        """
        if not self._room(what, kind):
            return -1
        job = _Spawning(argv, env, what, kind, limit)
        if not job.done.acquire(True, max(0.0, timeout)):
            self.spawning.append(job)
            return NOT_YET
        return self._adopt(job.pid, job.error, argv, what, kind, limit)

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
        """Reap every child that has exited; kill those past their deadline (never blocks).

        Children whose spawn outlasted start_within's timeout are adopted here
        once their spawning thread is done.
        """
        for job in list(self.spawning):
            if job.done.acquire(False):
                self.spawning.remove(job)
                self._adopt(job.pid, job.error, job.argv, job.what, job.kind, job.limit)
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
