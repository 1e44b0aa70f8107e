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
import sys  # built in: costs nothing
import time

from .log import Log, safe
from .procfs import start_thread

TYPE_CHECKING = False
if TYPE_CHECKING:
    from signal import SIGKILL, SIGPIPE, SIGXFSZ
    from typing import Callable
else:
    from _signal import SIGKILL, SIGPIPE, SIGXFSZ  # not signal.py: see sig.py

__all__ = ["HOOK_SLOTS", "MAX_CHILDREN", "MAX_SAID", "NOT_YET", "PATH", "PROGRAM_FD",
           "Children", "reset_oom_score_adj", "said", "spawn", "wait_status_text"]

# The PATH a child gets (systemd's default for services).
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_CHILDREN = 16  # running at once; more are refused (a hook that never ends, many users)
# Of those, kept for the hooks: notification helpers (one per user, each
# user's bus may hang its helper) can never take them (review L7).
HOOK_SLOTS = 4
_POLL_FALLBACK = 0.005  # seconds between waitpid calls where there is no pidfd
NOT_YET = -2  # start, start_within: the child has not started yet (it may later)
MAX_SAID = 512  # bytes of a child's output kept for the line of its outcome


# Run by ``python3 -S -I -c`` in a hook's place (spawn with ``program``): a hook
# starts with the oom_score_adj (0) and transparent huge pages of any other
# program, not bustd's -1000 and PR_SET_THP_DISABLE, which it would inherit
# and keep across exec (review L6); then the checked file is exec'd from
# its descriptor, not looked up again by name (review H4).
_TRAMPOLINE = """import os, sys
try:
    fd = os.open('/proc/self/oom_score_adj', os.O_WRONLY)
    os.write(fd, b'0')
    os.close(fd)
except OSError:
    pass
try:
    with open('/proc/self/status', 'rb') as f:
        thp_off = b'THP_enabled:\\t0' in f.read()
    if thp_off:
        import ctypes
        ctypes.CDLL(None).prctl(41, 0, 0, 0, 0)
except (OSError, AttributeError):
    pass
env = dict(os.environ)
if sys.argv[2] == "0":
    env.pop("LC_CTYPE", None)  # set by the interpreter's locale coercion (PEP 538)
os.execve(sys.argv[1], sys.argv[3:], env)
"""
PROGRAM_FD = 3  # the number a hook's descriptor gets in its child (see spawn)


def spawn(argv: list[str], env: dict[str, str], program: int = -1, output: int = -1) -> int:
    """Start ``argv[0]`` (an absolute path) with ``argv`` and ``env``; return its pid.

    With ``program`` (an O_PATH descriptor from vet.open_hook) that file is
    run instead, through _TRAMPOLINE, as ``/proc/self/fd/3``: ``argv[0]``
    only names it. With ``output``, the child's stdout and stderr go to
    that descriptor (a pipe bustd reads: text a child writes never reaches
    bustd's own log as it is, review M4). Its ``oom_score_adj`` is also
    set back to 0 from here: it would otherwise inherit bustd's -1000 and
    be safe from every OOM killer, bustd included.
    Raises OSError (ENOENT, EACCES, EAGAIN, ENOMEM...) if it cannot start.
    """
    actions: list[tuple[int | str, ...]] = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
    if output >= 0:
        actions += [(os.POSIX_SPAWN_DUP2, output, 1), (os.POSIX_SPAWN_DUP2, output, 2)]
    path, args = argv[0], argv
    if program >= 0:
        # dup2 clears close-on-exec, so the descriptor outlives both execs: a
        # script's interpreter opens /proc/self/fd/3 itself. A program that
        # already is descriptor 3 is moved to 4 first (dup2 onto itself
        # would keep the flag).
        number = PROGRAM_FD if program != PROGRAM_FD else PROGRAM_FD + 1
        actions.append((os.POSIX_SPAWN_DUP2, program, number))
        path = sys.executable or "/usr/bin/python3"
        args = [path, "-S", "-I", "-c", _TRAMPOLINE, f"/proc/self/fd/{number}",
                "1" if "LC_CTYPE" in env else "0", *argv]
    pid = os.posix_spawn(path, args, env, file_actions=actions,
                         setsigdef=(SIGPIPE, SIGXFSZ), setsid=True)
    reset_oom_score_adj(pid)
    return pid


def reset_oom_score_adj(pid: int) -> None:
    """Give bustd's child ``pid`` oom_score_adj 0, not bustd's inherited -1000.

    Always the real /proc: the child is bustd's own, whatever tree it
    watches. A child that already exited, or a /proc that is not ours, is
    left as it is.
    """
    try:
        fd = os.open(f"/proc/{pid}/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
    except OSError:
        pass


def wait_status_text(status: int) -> str:
    """Return what a wait status means: ``exited with status 3``, ``killed by signal 9``."""
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


class _Spawning:
    """A posix_spawn call in a thread of its own (see Children.start).

    ``posix_spawn`` suspends its caller until the child has exec'd, which
    on a thrashing disk (the hook's executable paged in) can take seconds:
    the thread takes that wait instead of the loop (review M6). ``done`` is
    released once the call returned; then ``pid`` or ``error`` is set.
    """

    __slots__ = ("done", "pid", "error", "argv", "what", "kind", "limit", "explain", "key",
                 "out")

    def __init__(self, argv: list[str], env: dict[str, str], what: str, kind: str,
                 limit: float, explain: Callable[[int], str | None] | None = None,
                 program: int = -1, capture: bool = False, key: str = "") -> None:
        self.pid = -1
        self.error: Exception | None = None
        self.argv, self.what, self.kind, self.limit = argv, what, kind, limit
        self.explain, self.key = explain, key
        self.out = -1
        write_end = -1
        if capture:
            try:
                self.out, write_end = os.pipe()  # close-on-exec both; dup2 clears it
                os.set_blocking(self.out, False)
            except OSError:  # no descriptor to spare: its words are lost, never ours
                self.out = -1
                write_end = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        self.done = _thread.allocate_lock()
        self.done.acquire()
        if not start_thread(self._run, (env, program, write_end)):
            self._run(env, program, write_end)  # no thread could be started: spawn here

    def _run(self, env: dict[str, str], program: int, write_end: int) -> None:
        try:
            self.pid = spawn(self.argv, env, program, write_end)
        except Exception as err:  # OSError, ValueError; a bug too: said, never a lost slot
            self.error = err
        finally:
            if write_end >= 0:
                os.close(write_end)
            self.done.release()


class _Child:
    __slots__ = ("pid", "what", "kind", "started", "deadline", "explain", "killed", "key",
                 "out")

    def __init__(self, pid: int, what: str, kind: str, started: float, deadline: float,
                 explain: Callable[[int], str | None] | None, key: str = "",
                 out: int = -1) -> None:
        self.pid = pid
        self.what = what
        self.kind = kind
        self.started = started
        self.deadline = deadline
        self.explain = explain
        self.killed = False
        self.key = key
        self.out = out


def said(fd: int, limit: int = MAX_SAID) -> str:
    """Return what a child wrote to pipe ``fd`` (non-blocking), escaped for one log line.

    At most ``limit`` bytes are read; newlines and other control characters
    are escaped (log.safe), so a helper's text, which may come from a
    user's session bus, can neither start a log line of its own nor carry
    a ``<N>`` priority prefix (review M4). "" if it wrote nothing.
    """
    data = b""
    try:
        while len(data) < limit:
            chunk = os.read(fd, limit - len(data))
            if not chunk:
                break
            data += chunk
    except OSError:
        pass  # nothing more now (EAGAIN), or gone
    return safe(data.strip(), limit)


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
        self.spawning: list[_Spawning] = []  # spawns still under way

    def _fail(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1

    def busy(self, key: str) -> int:
        """Return the pid of a running child started with ``key`` (0: being started, -1: none)."""
        for child in self.running.values():
            if child.key == key:
                return child.pid
        return 0 if any(job.key == key for job in self.spawning) else -1

    def _room(self, what: str, kind: str, spare: int, key: str) -> bool:
        """Return whether another child may start (reaping first); say once if not.

        ``spare`` slots of MAX_CHILDREN are left to others (the hooks);
        a child with the ``key`` of one still running does not start.
        """
        self.reap()
        if key and self.busy(key) != -1:
            self.log.debug(f"not starting the {what}: the last one still runs")
            self._fail(kind)
            return False
        limit = MAX_CHILDREN - spare
        if len(self.running) + len(self.spawning) >= limit:
            if not self._said_full:
                self.log.warning(f"not starting the {what}: {limit} children of bustd "
                                 "still run")
                self._said_full = True
            self._fail(kind)
            return False
        self._said_full = False
        return True

    def _adopt(self, job: _Spawning) -> int:
        """Remember a started child (or log why it did not start); return its pid or -1."""
        if job.error is not None:
            self.log.warning(f"cannot start the {job.what} ({safe(job.argv[0].encode())}): "
                             f"{job.error}")
            self._fail(job.kind)
            if job.out >= 0:
                os.close(job.out)
            return -1
        now = self.clock()
        self.running[job.pid] = _Child(job.pid, job.what, job.kind, now, now + job.limit,
                                       job.explain, job.key, job.out)
        return job.pid

    def start(self, argv: list[str], env: dict[str, str], what: str, kind: str,
              limit: float, explain: Callable[[int], str | None] | None = None,
              program: int = -1, capture: bool = False, key: str = "",
              spare: int = 0) -> int:
        """Start a child without waiting for its exec; return NOT_YET, or -1 if refused.

        ``what`` names it in log lines; it is killed if still running
        ``limit`` seconds from now. ``explain(exit_code)`` may turn a
        non-zero exit code into words (None: use the code). ``program``:
        see :func:`spawn`. With ``capture`` what it writes is read into the
        line of its outcome (:func:`said`). ``key`` and ``spare``: see
        :meth:`_room`. The child is adopted (or its failure to start
        logged) by a later :meth:`reap`.
        """
        if not self._room(what, kind, spare, key):
            return -1
        self.spawning.append(_Spawning(argv, env, what, kind, limit, explain, program,
                                       capture, key))
        return NOT_YET

    def start_within(self, argv: list[str], env: dict[str, str], what: str, kind: str,
                     limit: float, timeout: float, program: int = -1) -> int:
        """As :meth:`start`, then wait up to ``timeout`` seconds for the exec.

        Returns the pid, -1 (logged) if it could not start, or NOT_YET if it
        had not started within ``timeout``: it is then adopted (or its
        failure logged) by a later :meth:`reap`, and killed at its deadline
        as usual.
        """
        if not self._room(what, kind, 0, ""):
            return -1
        job = _Spawning(argv, env, what, kind, limit, program=program)
        if not job.done.acquire(True, max(0.0, timeout)):
            self.spawning.append(job)
            return NOT_YET
        return self._adopt(job)

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
        words = ""
        if child.out >= 0:
            words = said(child.out)
            os.close(child.out)
            child.out = -1
        # Marked as the child's and kept inside bustd's own line, at bustd's level.
        heard = f'; it said: "{words}"' if words else ""
        took = self.clock() - child.started
        if status == -1 or child.killed:
            if heard:
                self.log.info(f"{child.what} (pid {child.pid}) ended{heard}")
            return True
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            self.log.debug(f"{child.what} (pid {child.pid}) done in {took:.2f} s{heard}")
            return True
        self._fail(child.kind)
        meaning = (child.explain(os.WEXITSTATUS(status))
                   if child.explain is not None and os.WIFEXITED(status) else None)
        self.log.warning(f"{child.what} (pid {child.pid}) failed after {took:.2f} s: "
                         f"{meaning or wait_status_text(status)}{heard}")
        return True

    def reap(self) -> None:
        """Reap every child that has exited; kill those past their deadline (never blocks).

        Children whose spawn outlasted start_within's timeout are adopted here
        once their spawning thread is done.
        """
        for job in list(self.spawning):
            if job.done.acquire(False):
                self.spawning.remove(job)
                self._adopt(job)
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
