"""--pre-kill-hook and --post-kill-hook: the administrator's programs, told about each kill.

A hook is run with an argv list of its path alone and no shell; what it
learns about the victim is only in environment variables (:func:`hook_env`),
rendered as the log line renders them (control characters and invalid
UTF-8 escaped), so a process named ``$(touch /tmp/pwned)`` reaches it as
that text and nothing else (STYLE.md, habit 9). The pre-kill hook runs
before the signal and is waited for at most ``--hook-timeout`` seconds
(default 0.2): it may record state or warn someone, never delay the kill
past that. The post-kill hook runs after the kill and is not waited for.
Both run in dry runs too (``BUSTD_DRY_RUN=1``). A hook that fails, hangs
(killed after HOOK_LIMIT seconds) or cannot start is logged and bustd
carries on.
"""

from __future__ import annotations

import os  # already loaded by the runtime: costs nothing
import time

from . import sig
from .log import Log, safe
from .spawn import NOT_YET, PATH, Children

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .outputs import Record
    from .procfs import BackgroundRead
    from .record import KillRecord

__all__ = ["HOOK_LIMIT", "PostKillHook", "PreKillHook", "hook_env"]

HOOK_LIMIT = 60.0  # a hook still running after this long is killed (with its session)
CMDLINE_SHARE = 0.25  # of the pre-kill hook's timeout, spent at most waiting for the cmdline


def _text(raw: bytes | None, limit: int = 4096) -> str:
    """Return ``raw`` as the log renders it ("" for None), at most ``limit`` characters."""
    if raw is None:
        return ""
    return safe(raw, limit)


def hook_env(r: KillRecord, phase: str) -> dict[str, str]:
    """Return the whole environment of a hook for kill record ``r``.

    ``phase`` is "pre-kill" or "post-kill". Only PATH and BUSTD_* variables:
    the victim's PID, NAME (comm), EXE, CMDLINE (arguments joined by spaces;
    empty if not read in time), UID, FREEABLE_KIB (what the kill is expected
    to free: freeable.py), RSS_KIB, SWAP_KIB, SHMEM_KIB (of which
    OWN_SHMEM_KIB only it maps), FILE_KIB, OOM_SCORE,
    OOM_SCORE_ADJ, SIGNAL (SIGTERM or SIGKILL: the first signal before the
    kill, the last one after it), REASON (the log's words), CAUSE (memory or
    pressure), MEM_AVAILABLE_KIB, SWAP_FREE_KIB, DRY_RUN (1 or 0), PHASE;
    after the kill also EXITED (1 or 0), EXIT_S and REACTION_MS.
    """
    cmdline = r.command()
    env = {
        "PATH": PATH,
        "BUSTD_PHASE": phase,
        "BUSTD_PID": str(r.pid),
        "BUSTD_NAME": _text(r.comm),
        "BUSTD_EXE": _text(r.exe),
        "BUSTD_CMDLINE": _text(cmdline),
        "BUSTD_UID": str(r.uid),
        "BUSTD_FREEABLE_KIB": str(r.freeable_kib),
        "BUSTD_RSS_KIB": str(r.rss_kib),
        "BUSTD_SWAP_KIB": str(r.swap_kib),
        "BUSTD_SHMEM_KIB": str(r.shmem_kib),
        "BUSTD_OWN_SHMEM_KIB": str(r.own_shmem_kib),
        "BUSTD_FILE_KIB": str(r.file_kib),
        "BUSTD_OOM_SCORE": str(r.oom_score),
        "BUSTD_OOM_SCORE_ADJ": str(r.oom_score_adj),
        "BUSTD_SIGNAL": sig.name(r.signal),
        "BUSTD_REASON": r.reason,
        "BUSTD_CAUSE": r.cause,
        "BUSTD_MEM_AVAILABLE_KIB": str(r.reading.available_kib),
        "BUSTD_SWAP_FREE_KIB": str(r.reading.swap_free_kib),
        "BUSTD_DRY_RUN": "1" if r.dry_run else "0",
        "BUSTD_EXPECTED_KIB": str(r.expected_kib),
    }
    if r.cgroup:  # --cgroup, --kill-cgroup
        env["BUSTD_CGROUP"] = _text(os.fsencode(r.cgroup))
    if phase == "post-kill":
        env["BUSTD_EXITED"] = "1" if r.exited else "0"
        env["BUSTD_EXIT_S"] = f"{r.exit_s:.3f}"
        env["BUSTD_REACTION_MS"] = f"{r.reaction_s * 1000:.0f}"
        if r.freed_kib is not None:  # measured over about a second (issue 14)
            env["BUSTD_FREED_KIB"] = str(r.freed_kib)
            env["BUSTD_IN_VAIN"] = "" if r.vain is None else "1" if r.vain else "0"
    return env


class PreKillHook:
    """Run before each signal; waited for at most ``timeout`` seconds in all.

    ``program`` is the descriptor of the file checked at start
    (vet.open_hook): that file is run, whatever ``path`` names later.
    """

    __slots__ = ("path", "program", "timeout", "children", "log")

    def __init__(self, path: str, program: int, timeout: float, children: Children,
                 log: Log) -> None:
        self.path = path
        self.program = program
        self.timeout = timeout
        self.children = children
        self.log = log

    def __call__(self, record: KillRecord, cmdline: BackgroundRead | None = None) -> None:
        """Start the hook for ``record`` and wait for it, never longer than the timeout.

        ``cmdline`` is the background read of the victim's command line
        (procfs.BackgroundRead): waited for at most CMDLINE_SHARE of the timeout,
        for BUSTD_CMDLINE; it is left empty if it is not there by then.
        """
        start = time.monotonic()
        if cmdline is not None and record.cmdline is None:
            record.cmdline = cmdline.result(self.timeout * CMDLINE_SHARE)
        what = f"pre-kill hook {self.path} for pid {record.pid}"
        # Started by a thread of its own: posix_spawn waits for the exec,
        # which a thrashing disk can make last seconds.
        pid = self.children.start_within([self.path], hook_env(record, "pre-kill"), what,
                                         "pre-kill hook", HOOK_LIMIT,
                                         self.timeout - (time.monotonic() - start),
                                         self.program)
        if pid == NOT_YET:
            self.log.warning(f"{what} not started after {self.timeout:g} s (its executable "
                             "still being read?): killing without waiting for it")
            return
        if pid < 0:
            return
        left = self.timeout - (time.monotonic() - start)
        if not self.children.wait(pid, left):
            self.log.warning(f"{what} (pid {pid}) still running after {self.timeout:g} s: "
                             "killing without waiting for it")


class PostKillHook:
    """Run after each kill (and dry-run decision); never waited for, not even its exec.

    ``program``: as for PreKillHook.
    """

    __slots__ = ("path", "program", "children")

    def __init__(self, path: str, program: int, children: Children) -> None:
        self.path = path
        self.program = program
        self.children = children

    def __call__(self, record: Record) -> None:
        """Start the hook for a kill record; other records are ignored."""
        if record.kind != "kill":
            return
        self.children.start([self.path], hook_env(record, "post-kill"),
                            f"post-kill hook {self.path} for pid {record.pid}",
                            "post-kill hook", HOOK_LIMIT, program=self.program)
