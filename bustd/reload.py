"""Reading the config file again on SIGHUP, without argparse in the daemon.

Loaded by the runtime only when a SIGHUP arrives. The daemon spawns the
front end in its validate-only mode (``python3 -S -I bustd/validate.py CWD
ARGS``, see cli.validate_main) with ``os.posix_spawn`` (``subprocess``
would cost 2.5 MiB of resident memory for good) and the original arguments,
so the file is read and validated exactly as at start and options on the
command line still override it. The child's stdout (the answer: the
encoded Config between two marker lines) and its stderr (the diagnostics:
the one line naming what is wrong, any warning) are two pipes, read
without blocking between checks; the child is never waited for. A child that does not answer within
:data:`TIMEOUT` seconds is killed (it is our own child, named by its PID).
:func:`answer_of` takes a good answer and :func:`changes` what it changes,
which ``Monitor.apply`` then uses, so that code too stays out of a daemon
that is never reloaded.
"""

from __future__ import annotations

import os

from . import sig
from .config import DEFAULTS, Config, ConfigError, decode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    from .log import Log

    class Reloading(Protocol):
        """A reading of the config file under way (a Reload, or a test's stand-in)."""

        fd: int
        pid: int
        deadline: float
        killed: bool

        def read(self) -> bool: ...

        def diagnostics(self) -> list[str]: ...

        def finish(self) -> tuple[Config, str]: ...

        def cancel(self) -> None: ...

        def kill(self) -> None: ...

__all__ = ["END", "FIXED_AT_START", "MAX_ANSWER", "MAGIC", "TIMEOUT", "Reload", "ReloadError",
           "answer_of", "changes", "give_up", "parse_answer", "reap_left", "reloaded"]

TIMEOUT = 10.0  # seconds the front end may take (it needs about 0.1 s)
MAX_ANSWER = 1 << 20  # an answer is a few hundred bytes: more is not an answer
MAGIC = b"bustd-validated 1"  # cli.RELOAD_MAGIC: the first line of a good answer
END = b"bustd-end"  # cli.RELOAD_END: its last line (an answer cut short is no answer)
_ERROR_PREFIX = "bustd: error: "
# Settings a reload cannot change: they shaped the process at start (its
# pid file, whether it forked, the tree its descriptors are open on, the
# outputs built once from the Config, the cgroup watched).
FIXED_AT_START = ("daemon", "pid_file", "proc_root", "notify", "notify_owner_only",
                  "pre_kill_hook", "post_kill_hook", "hook_timeout", "kill_log",
                  "metrics_file", "cgroup")


class ReloadError(Exception):
    """The config could not be read again; the message is the one line to log."""


def parse_answer(status: int | None, data: bytes, said: bytes = b"") -> tuple[Config, str]:
    """Return (Config, config file path or "") from the front end's answer.

    ``data`` is what it wrote to stdout, the answer: MAGIC, the path, the
    encoded Config and END, whole, or nothing; ``said`` is its stderr, the
    diagnostics (its one error line; a warning a regex gave, review M5),
    which never decide whether an answer is good. ``status`` is its exit
    status (-N: killed by N), None if it has not been reaped yet (the
    answer alone counts then). Raises ReloadError with one line: the front
    end's own error line (which names the file, the line and the option),
    or what went wrong.
    """
    good_status = status is None or status == 0
    if good_status and data.startswith(MAGIC + b"\n") and data.endswith(b"\n" + END + b"\n"):
        body = data[len(MAGIC) + 1:-len(END) - 2].decode("utf-8", "replace")
        path, _, encoded = body.partition("\n")
        try:
            return decode(encoded), path
        except ConfigError as err:
            raise ReloadError(f"{err} (was bustd upgraded? restart it)") from None
    lines = [line for line in said.decode("utf-8", "replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(_ERROR_PREFIX)]
    if errors:
        raise ReloadError(errors[-1][len(_ERROR_PREFIX):].strip()[:500])
    how = ("had not exited" if status is None
           else f"exited with status {status}" if status >= 0
           else f"was killed by {sig.name(-status)}")
    if lines:
        raise ReloadError(f"the front end failed ({how}): {lines[-1].strip()}"[:500])
    if data:
        raise ReloadError(f"the front end gave no answer ({how})")
    raise ReloadError(f"the front end {how} and said nothing")


class Reload:
    """One run of the front end in validate-only mode, read between checks.

    ``fd`` is the read end of the child's stdout, its answer (poll it for
    POLLIN); its stderr, the diagnostics, comes on a pipe of its own
    (review M5). :meth:`read` takes what has arrived, :meth:`finish` gives
    the answer once :meth:`read` said the output ended, :meth:`cancel` ends
    it early. Neither ever waits for the child: one not reaped yet keeps
    ``pid`` (> 0) for a later :func:`reap_left` (review M6). Raises OSError
    from the constructor if the child cannot be started.
    """

    __slots__ = ("pid", "fd", "err_fd", "deadline", "data", "said", "done", "killed")

    def __init__(self, python: str, script: str, cwd: str, argv: list[str], now: float,
                 timeout: float = TIMEOUT) -> None:
        read_end, write_end = os.pipe()  # all close-on-exec; dup2 clears it in the child
        try:
            err_read, err_write = os.pipe()
        except BaseException:
            os.close(read_end)
            os.close(write_end)
            raise
        try:
            # A session of its own: nothing it starts outlives a kill of it (review L6).
            self.pid = os.posix_spawn(
                python, [python, "-S", "-I", script, cwd, *argv], dict(os.environ),
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                              (os.POSIX_SPAWN_DUP2, write_end, 1),
                              (os.POSIX_SPAWN_DUP2, err_write, 2)],
                setsid=True)
        except BaseException:
            os.close(read_end)
            os.close(err_read)
            raise
        finally:
            os.close(write_end)
            os.close(err_write)
        from .spawn import reset_oom_score_adj
        reset_oom_score_adj(self.pid)  # not bustd's -1000 (review L6); it resets it itself too
        os.set_blocking(read_end, False)
        os.set_blocking(err_read, False)
        self.fd = read_end
        self.err_fd = err_read
        self.deadline = now + timeout
        self.data = b""
        self.said = b""
        self.done = False
        self.killed = False

    def _read_said(self) -> None:
        """Take what the child wrote to stderr so far (at most MAX_ANSWER is kept)."""
        while self.err_fd >= 0:
            try:
                chunk = os.read(self.err_fd, 65536)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            if not chunk:
                return
            self.said = (self.said + chunk)[:MAX_ANSWER]

    def read(self) -> bool:
        """Read what the child wrote so far; return True once its answer has ended."""
        self._read_said()  # never let its stderr fill and stop it
        while not self.done:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return False
            except InterruptedError:
                continue
            if not chunk or len(self.data) + len(chunk) > MAX_ANSWER:
                self.done = True
            else:
                self.data += chunk
        return True

    def finish(self) -> tuple[Config, str]:
        """Reap the child if it has exited; return (Config, config file path or "").

        Call once :meth:`read` returned True. Raises ReloadError naming what
        is wrong (the front end's one line for a bad file).
        """
        self._read_said()
        status = self._close(reap=True)
        return parse_answer(status, self.data, self.said)

    def diagnostics(self) -> list[str]:
        """Return the lines the child wrote to stderr, escaped, at most 5 of 300 characters."""
        from .log import safe
        lines = [safe(line.strip(), 300) for line in self.said.splitlines() if line.strip()]
        return lines[:5]

    def kill(self) -> None:
        """Send the child (our own, by its PID, not reaped yet) SIGKILL."""
        self.killed = True
        if self.pid > 0:
            try:
                os.kill(self.pid, sig.SIGKILL)
            except ProcessLookupError:
                pass

    def cancel(self) -> None:
        """Kill the child; reap it if it is already gone."""
        self.kill()
        self._close(reap=True)

    def _close(self, reap: bool) -> int | None:
        """Close the pipes and reap the child without waiting; return its exit status.

        Returns -N when killed by signal N, None when it has not exited yet
        (it keeps ``pid`` then: see :func:`reap_left`).
        """
        for fd in (self.fd, self.err_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.err_fd = -1
        if not reap or self.pid <= 0:
            return None
        gone, status = _reap_now(self.pid)
        if gone:
            self.pid = -1
        return status


def _reap_now(pid: int) -> tuple[bool, int | None]:
    """Reap child ``pid`` if it has exited, never waiting; return (gone, exit status or None)."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True, None  # reaped already: nothing more to learn
    if not done:
        return False, None
    return True, _exit_code(status)


def reap_left(left: list[Reloading], now: float) -> None:
    """Reap the front ends that had not exited when their reload ended (never waits).

    One that gave its answer is exiting; one still there at its deadline
    is sent SIGKILL (once). One in uninterruptible sleep (a hung NFS
    mount) may take long to die even so: the loop never waits for it.
    """
    for r in list(left):
        if r.pid > 0 and not r.killed and now >= r.deadline:
            r.kill()
        if r.pid > 0 and _reap_now(r.pid)[0]:
            r.pid = -1
        if r.pid <= 0:
            left.remove(r)


def _exit_code(status: int) -> int:
    """Return a waitpid status as an exit code, or -N when killed by signal N."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def changes(old: Config, new: Config, log: Log) -> tuple[Config, list[str]]:
    """Return ``new`` with the settings of FIXED_AT_START kept from ``old`` (said in
    one line if any differed), and the names of the settings that change."""
    fixed = [k for k in FIXED_AT_START if getattr(new, k) != getattr(old, k)]
    if fixed:
        log.warning("reload: " + ", ".join(k.replace("_", "-") for k in fixed)
                    + " cannot change while bustd runs: kept until a restart")
        new = new.replace(**{k: getattr(old, k) for k in fixed})
    return new, [k for k in DEFAULTS if getattr(new, k) != getattr(old, k)]


def answer_of(r: Reloading, log: Log, left: list[Reloading]) -> tuple[Config, str] | None:
    """Return the answer of ``r`` (its output ended): (Config, config file path or ""),
    or None when it is no good (said in one line).

    A front end not reaped yet goes to ``left`` (see :func:`reap_left`); a
    warning it gave is logged as its own.
    """
    try:
        cfg, path = r.finish()
    except (ReloadError, OSError) as err:
        log.error(f"reload failed, running configuration kept: {err}")
        return None
    finally:
        if r.pid > 0:
            left.append(r)
    for line in r.diagnostics():  # a warning the front end gave: marked as its own
        log.info(f"reload: the front end said: {line}")
    return cfg, path


def reloaded(path: str, changed: list[str], cfg: Config) -> str:
    """Return the start of the line that says a reload was applied (the description follows)."""
    source = path or "the command line (no --config)"
    what = ", ".join(f"{k}={getattr(cfg, k)!r}" for k in changed) if changed else "no change"
    return f"reloaded {source}: {what}; "


def give_up(r: Reloading | None, log: Log, left: list[Reloading]) -> None:
    """Give up on a front end that did not answer in time (``r``, no longer polled)."""
    if r is not None:
        r.cancel()
        if r.pid > 0:
            left.append(r)
        log.error("reload failed, running configuration kept: the front end gave "
                  "no answer in time")
