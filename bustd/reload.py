"""Reading the config file again on SIGHUP, without argparse in the daemon.

Loaded by the runtime only when a SIGHUP arrives. The daemon spawns the
front end in its validate-only mode (``python3 -S -I bustd/validate.py CWD
ARGS``, see cli.validate_main) with ``os.posix_spawn`` (``subprocess``
would cost 2.5 MiB of resident memory for good) and the original arguments,
so the file is read and validated exactly as at start and options on the
command line still override it. The child's stdout and stderr are one pipe,
read without blocking between checks; the answer is the encoded Config, or
the one line naming what is wrong. A child that does not answer within
:data:`TIMEOUT` seconds is killed (it is our own child, named by its PID).
:func:`take_answer` applies a good answer to the Monitor (:func:`reconfigure`),
so that code too stays out of a daemon that is never reloaded.
"""

from __future__ import annotations

import os
import time  # already loaded by the runtime: costs nothing

from . import sig
from .config import DEFAULTS, Config, ConfigError, decode
from .procfs import ProcFS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .monitor import Monitor

__all__ = ["FIXED_AT_START", "MAX_ANSWER", "MAGIC", "TIMEOUT", "Reload", "ReloadError", "give_up",
           "parse_answer", "reconfigure", "take_answer"]

TIMEOUT = 10.0  # seconds the front end may take (it needs about 0.1 s)
MAX_ANSWER = 1 << 20  # an answer is a few hundred bytes: more is not an answer
MAGIC = b"bustd-validated 1"  # cli.RELOAD_MAGIC: the first line of a good answer
_ERROR_PREFIX = "bustd: error: "
# Settings a reload cannot change: they shaped the process at start (its
# pid file, whether it forked, the tree its descriptors are open on, the
# outputs built once from the Config, the cgroup watched).
FIXED_AT_START = ("daemon", "pid_file", "proc_root", "notify", "notify_owner_only",
                  "pre_kill_hook", "post_kill_hook", "hook_timeout", "kill_log",
                  "metrics_file", "cgroup")


class ReloadError(Exception):
    """The config could not be read again; the message is the one line to log."""


def parse_answer(status: int, data: bytes) -> tuple[Config, str]:
    """Return (Config, config file path or "") from the front end's exit ``status`` and output.

    Raises ReloadError with one line: the front end's own error line (which
    names the file, the line and the option), or what went wrong.
    """
    if status == 0 and data.startswith(MAGIC + b"\n"):
        _, path, encoded = data.decode("utf-8", "replace").split("\n", 2)
        try:
            return decode(encoded), path
        except ConfigError as err:
            raise ReloadError(f"{err} (was bustd upgraded? restart it)") from None
    lines = [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        why = (f"exited with status {status}" if status >= 0
               else f"was killed by {sig.name(-status)}")
        raise ReloadError(f"the front end {why} and said nothing")
    last = lines[-1].strip()
    if last.startswith(_ERROR_PREFIX):
        last = last[len(_ERROR_PREFIX):]
    if len(lines) > 1 and not lines[-1].startswith(_ERROR_PREFIX):
        last = f"the front end failed (status {status}): {last}"
    raise ReloadError(last[:500])


class Reload:
    """One run of the front end in validate-only mode, read between checks.

    ``fd`` is the read end of the child's output (poll it for POLLIN);
    :meth:`read` takes what has arrived, :meth:`finish` gives the answer
    once :meth:`read` said the output ended, :meth:`cancel` ends it early.
    Raises OSError from the constructor if the child cannot be started.
    """

    __slots__ = ("pid", "fd", "deadline", "data", "done")

    def __init__(self, python: str, script: str, cwd: str, argv: list[str], now: float,
                 timeout: float = TIMEOUT) -> None:
        read_end, write_end = os.pipe()  # both close-on-exec; dup2 clears it in the child
        try:
            self.pid = os.posix_spawn(
                python, [python, "-S", "-I", script, cwd, *argv], dict(os.environ),
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                              (os.POSIX_SPAWN_DUP2, write_end, 1),
                              (os.POSIX_SPAWN_DUP2, write_end, 2)])
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        os.set_blocking(read_end, False)
        self.fd = read_end
        self.deadline = now + timeout
        self.data = b""
        self.done = False

    def read(self) -> bool:
        """Read what the child wrote so far; return True once its output has ended."""
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
        """Reap the child; return (Config, config file path or "").

        Call once :meth:`read` returned True. Raises ReloadError naming what
        is wrong (the front end's one line for a bad file).
        """
        status = self._reap()
        return parse_answer(status, self.data)

    def cancel(self) -> None:
        """Kill the child (our own, by its PID) and reap it."""
        if self.pid > 0:
            try:
                os.kill(self.pid, sig.SIGKILL)
            except ProcessLookupError:
                pass
        self._reap()

    def _reap(self) -> int:
        """Close the pipe, wait for the child; return its exit status (-N: killed by N)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.pid <= 0:
            return -1
        pid, self.pid = self.pid, -1
        if not self.done:  # cancelled: it is dying of SIGKILL
            return _exit_code(os.waitpid(pid, 0)[1])
        # The output ended: the child is exiting. Give it a moment, then make sure.
        for _ in range(50):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.01)
        else:
            try:
                os.kill(pid, sig.SIGKILL)
            except ProcessLookupError:
                pass
            _, status = os.waitpid(pid, 0)
        return _exit_code(status)


def _exit_code(status: int) -> int:
    """Return a waitpid status as an exit code, or -N when killed by signal N."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def reconfigure(m: Monitor, new: Config) -> list[str]:
    """Apply ``new`` to the Monitor ``m`` from the next check; return what changed.

    Returns the names of the settings that changed.
    Rebuilds what depends on the Config: the victim rules, the PSI file
    and trigger when ``psi``/``psi-metric`` changed, the zram tree, the
    report timer, the dry-run and verbose switches. Settings in
    FIXED_AT_START keep their running value (said in one line).
    """
    old = m.cfg
    fixed = [k for k in FIXED_AT_START if getattr(new, k) != getattr(old, k)]
    if fixed:
        m.log.warning("reload: " + ", ".join(k.replace("_", "-") for k in fixed)
                      + " cannot change while bustd runs: kept until a restart")
        new = new.replace(**{k: getattr(old, k) for k in fixed})
    changed = [k for k in DEFAULTS if getattr(new, k) != getattr(old, k)]
    m.cfg = new
    m.log.verbose = new.verbose
    m.dry = new.dry_run or not new.live
    m.stuck = False
    if new.sys_root != old.sys_root:
        m.sys = ProcFS(new.sys_root)
        m.zram_failed = False
    if m.armed and {"unkillables", "ignore", "prefer", "avoid", "default_avoid",
                    "rank"} & set(changed):
        from .choose import make_rules
        m.rules = make_rules(new, m.self_pid)
    if m.armed and new.kill_cgroup and m.units is None:
        m.units = m.units_for_kill()
    if {"psi_cutoff", "psi_metric"} & set(changed):
        m.close_psi()
        m.reset_stall()
        m.open_psi()
    if "report" in changed:
        m.next_report = m.clock() + new.report if new.report > 0 else float("inf")
    return changed


def take_answer(m: Monitor) -> None:
    """Read the front end's answer; apply the new Config once it is complete."""
    r = m.reloading
    if r is None or not r.read():
        return
    m.end_reload()
    try:
        cfg, path = r.finish()
    except (ReloadError, OSError) as err:
        m.log.error(f"reload failed, running configuration kept: {err}")
        return
    changed = reconfigure(m, cfg)
    source = path or "the command line (no --config)"
    what = (", ".join(f"{k}={getattr(m.cfg, k)!r}" for k in changed)
            if changed else "no change")
    m.log.info(f"reloaded {source}: {what}; {m.describe()}")


def give_up(m: Monitor) -> None:
    """Give up on a front end that did not answer in time."""
    r = m.end_reload()
    if r is not None:
        r.cancel()
        m.log.error("reload failed, running configuration kept: the front end gave "
                    "no answer in time")
