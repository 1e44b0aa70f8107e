"""One record per kill or warning: who, why, the readings, the runners-up, the timings.

The Emergency (emergency.py) builds a :class:`KillRecord` once per kill (or
dry-run decision), and a :class:`WarnRecord` once per warning that a kill may
come, and hands each to every output; every output (the log line here, and the
kill log, metrics, hooks and notifications) is a small consumer of the same
record, so the loop never formats five things (STYLE.md, habit 13). Each
record says what it is in ``kind`` ("kill", "warn"; the Monitor's per-check
:class:`~bustd.outputs.CheckRecord` is "check"), so an output tells them apart
without importing this module.
"""

from __future__ import annotations

import os  # already loaded by the runtime: costs nothing

from . import sig
from .log import safe, size
from .process import Candidate

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar, Literal

    from .held import Held

__all__ = ["KillRecord", "Reading", "WarnRecord", "candidate_text", "freed_text",
           "growth_text", "kill_line", "outside_text", "warn_line"]


class Reading:
    """What a decision saw: memory (swap at its zram worth), zram's RAM use, stall."""

    __slots__ = ("available_kib", "total_kib", "swap_free_kib", "swap_total_kib",
                 "zram_ram_kib", "stall", "stall_s", "metric")

    def __init__(self, available_kib: int, total_kib: int, swap_free_kib: int,
                 swap_total_kib: int, zram_ram_kib: int, stall: float | None,
                 stall_s: float, metric: str) -> None:
        self.available_kib = available_kib
        self.total_kib = total_kib
        self.swap_free_kib = swap_free_kib
        self.swap_total_kib = swap_total_kib
        self.zram_ram_kib = zram_ram_kib
        self.stall = stall
        self.stall_s = stall_s
        self.metric = metric


class KillRecord:
    """One kill (or, with ``dry_run``, one kill that would have happened).

    ``cause`` is what made it an emergency: "memory" (MemAvailable and
    SwapFree at their levels) or "pressure" (a persistent stall).
    Sizes (KiB) are the victim's at the kill (Candidate.size, freeable.py):
    ``freeable_kib`` is what the kill is expected to free (``RssAnon +
    VmSwap`` and ``own_shmem_kib``, the shared memory only it maps);
    ``rss_kib`` (``VmRSS``), ``swap_kib``, ``shmem_kib`` (``RssShmem``) and
    ``file_kib`` (``RssFile``) what it held.
    """

    kind: ClassVar[Literal["kill"]] = "kill"
    __slots__ = ("time", "pid", "comm", "exe", "cmdline", "uid", "rss_kib", "swap_kib",
                 "oom_score", "oom_score_adj", "growth_kib", "growth_s", "pace_kib_s", "badness",
                 "policy", "reason", "signal", "dry_run", "reaction_s", "woken_by",
                 "exited", "exit_s", "mrelease", "group", "runners_up", "reading",
                 "problems", "major_faults", "cause", "cgroup", "cgroup_whole", "cgroup_note",
                 "freeable_kib", "shmem_kib", "file_kib", "own_shmem_kib",
                 "expected_kib", "freed_kib", "freed_s", "vain", "backoff_s", "held")

    def __init__(self, time: float, victim: Candidate, uid: int, oom_score_adj: int,
                 exe: bytes, rss_kib: int, swap_kib: int, policy: str, reason: str,
                 signal: int, reading: Reading, dry_run: bool, cause: str = "memory") -> None:
        self.time = time  # wall clock (seconds since the epoch) of the decision
        self.cause = cause
        self.pid = victim.pid
        self.comm = victim.comm
        self.exe = exe
        self.cmdline: bytes | None = None  # None: could not be read in time
        self.uid = uid
        self.rss_kib = rss_kib
        self.swap_kib = swap_kib
        self.freeable_kib = victim.freeable_kib
        self.shmem_kib = victim.shmem_kib
        self.file_kib = victim.file_kib
        self.own_shmem_kib = victim.own_shmem_kib
        self.oom_score = victim.oom_score
        self.oom_score_adj = oom_score_adj
        self.growth_kib = victim.growth_kib
        self.growth_s = victim.growth_s
        self.pace_kib_s = victim.pace_kib_s
        self.badness = victim.badness
        self.policy = policy
        self.reason = reason
        self.signal = signal  # the last signal sent (or that would be sent)
        self.dry_run = dry_run
        self.reaction_s = 0.0  # from the wakeup of the check to the first signal
        self.woken_by = "timer"
        self.exited = False
        self.exit_s = 0.0  # from the first signal until all exited (or gave up)
        self.mrelease = ""  # process_mrelease's outcome for a victim alive after SIGKILL
        self.group: list[int] = []  # other PIDs signalled with it (--kill-pgroup)
        self.runners_up: list[Candidate] = []
        self.reading = reading
        self.problems: list[str] = []
        self.major_faults = -1  # bustd's own major faults during the check (-1: unknown)
        self.cgroup = ""  # the folder of the victim's cgroup ("": not looked up)
        # --kill-cgroup: killed (or would be) whole with cgroup.kill; None when not asked.
        self.cgroup_whole: bool | None = None
        self.cgroup_note = ""  # why the cgroup was not killed whole
        # What the kill was to free and what it freed (issue 14, progress.py):
        # MemAvailable + SwapFree (at its worth) come back over ``freed_s``
        # seconds; ``vain`` whether that was less than VAIN_SHARE of the
        # expected (None: not measured: a dry run, or bustd stopped first);
        # ``backoff_s`` the pause in kills it started.
        self.expected_kib = 0
        self.freed_kib: int | None = None
        self.freed_s = 0.0
        self.vain: bool | None = None
        self.backoff_s = 0.0
        # Memory held outside processes when that is a reason memory is short
        # (held.Held.significant), read once the kill was measured; else None.
        self.held: Held | None = None

    def command(self) -> bytes | None:
        """Return the command line read, arguments separated by spaces (None: not read in time)."""
        return None if self.cmdline is None else self.cmdline.rstrip(b"\0").replace(b"\0", b" ")


def growth_text(kib: int, seconds: float, pace_kib_s: float = 0.0) -> str:
    """Return ``+12.0 MiB/5s`` (growth over that many seconds), ``?`` if unknown.

    When a faster pace seen lately ranked it (growth.Tracker.pace: a grower
    that paused), ``+1.0 MiB/10s, lately 8.0 MiB/s`` says so.
    """
    text = f"+{size(kib)}/{seconds:.0f}s" if seconds > 0 else "?"
    window = kib / seconds if seconds > 0 else 0.0
    if pace_kib_s >= 1.0 and pace_kib_s > window:
        text += f", lately {size(round(pace_kib_s))}/s"
    return text


def candidate_text(c: Candidate) -> str:
    """Return ``pid=N name=X frees=S growth=+G/Ts score=B`` for one candidate
    (``frees``: its freeable size, freeable.py; ``~`` when not sized, an
    upper bound from the scan)."""
    approx = "" if c.sized else "~"
    return (f"pid={c.pid} name={safe(c.comm, 64)} frees={approx}{size(c.freeable_kib)} "
            f"growth={growth_text(c.growth_kib, c.growth_s, c.pace_kib_s)} "
            f"score={c.badness:.0f}")


def _own(kib: int) -> str:
    return f" of which its own {size(kib)}" if kib else ""


def kill_line(r: KillRecord) -> str:
    """Return the one log line of a kill record (without the level prefix)."""
    who = (f"pid={r.pid} name={safe(r.comm)} exe={safe(r.exe) or '?'} uid={r.uid} "
           f"frees={size(r.freeable_kib)} (rss={size(r.rss_kib)} swap={size(r.swap_kib)} "
           f"shmem={size(r.shmem_kib)}{_own(r.own_shmem_kib)} file={size(r.file_kib)}) "
           f"growth={growth_text(r.growth_kib, r.growth_s, r.pace_kib_s)} "
           f"oom_score={r.oom_score} oom_score_adj={r.oom_score_adj} "
           f"score={r.badness:.0f} ({r.policy})")
    group = f" with {len(r.group)} more of its group" if r.group else ""
    if r.cgroup:
        # A cgroup's name may hold any byte but '/': undecodable ones were kept
        # as surrogates (os.fsdecode), and come out escaped like a name.
        group += f" in cgroup {safe(os.fsencode(r.cgroup))}"
    if r.cgroup_whole:
        group += " killed whole by cgroup.kill" if not r.dry_run else " whole, by cgroup.kill"
    elif r.cgroup_whole is not None:
        group += (f", not killed whole ({r.cgroup_note or 'its cgroup is unknown'}): "
                  "its killable processes signalled one by one")
    runners = "; runners-up: " + (", ".join(candidate_text(c) for c in r.runners_up)
                                  if r.runners_up else "none")
    command = r.command()
    cmdline = "(not read in time)" if command is None else safe(command)
    if r.dry_run:
        return (f"dry run: would kill {who}{group} with {sig.name(r.signal)}: "
                f"{r.reason}; {freed_text(r)}{runners}; cmdline={cmdline}")
    outcome = (f"exited after {r.exit_s:.2f} s" if r.exited
               else f"still alive after {r.exit_s:.2f} s"
               + (f" ({r.mrelease})" if r.mrelease else ""))
    faults = f", {r.major_faults} major faults" if r.major_faults >= 0 else ""
    return (f"kill: {who}{group} signal={sig.name(r.signal)} {outcome}; {freed_text(r)}"
            f"{outside_text(r)}; "
            f"reaction={r.reaction_s * 1000:.0f} ms after {r.woken_by} wakeup{faults}; "
            f"reason: {r.reason}{runners}; cmdline={cmdline}")


def freed_text(r: KillRecord) -> str:
    """Return ``freed 300.0 MiB of the expected 310.0 MiB in 1.0 s`` (and whether in vain)."""
    if r.freed_kib is None:
        return f"expected to free {size(r.expected_kib)}"
    text = (f"freed {size(r.freed_kib)} of the expected {size(r.expected_kib)} "
            f"in {r.freed_s:.1f} s")
    if r.vain is None:
        return text + " (measurement cut short: bustd stopped)"
    if r.vain:
        text += f": in vain, no kill for {r.backoff_s:.0f} s unless one alone can end it"
    return text


class WarnRecord:
    """A warning that a kill may come soon, and whom it would likely hit.

    ``cause`` is "memory" (MemAvailable and SwapFree at the ``--warn``
    level) or "pressure" (a stall approaching the cutoff while memory is
    short); ``reason`` says it with the readings. ``victim`` is the process
    the ranking would pick now (None if none may be killed), with its
    ``uid`` and ``exe``; ``runners_up`` the next ones.
    """

    kind: ClassVar[Literal["warn"]] = "warn"
    __slots__ = ("time", "cause", "reason", "reading", "victim", "uid", "exe", "runners_up",
                 "held")

    def __init__(self, time: float, cause: str, reason: str, reading: Reading,
                 victim: Candidate | None, uid: int = -1, exe: bytes = b"") -> None:
        self.time = time  # wall clock (seconds since the epoch)
        self.cause = cause
        self.reason = reason
        self.reading = reading
        self.victim = victim
        self.uid = uid
        self.exe = exe
        self.runners_up: list[Candidate] = []
        # What holds memory outside processes, when that is why memory is
        # short (held.Held.significant); None otherwise.
        self.held: Held | None = None


def outside_text(r: WarnRecord | KillRecord) -> str:
    """Return ``; N held outside processes, where no kill frees it: ...`` ("" if not a cause)."""
    if r.held is None:
        return ""
    from .held import held_text
    return (f"; {size(r.held.outside)} held outside processes, where no kill frees it: "
            f"{held_text(r.held)}")


def warn_line(r: WarnRecord) -> str:
    """Return the one log line of a warning (without the level prefix)."""
    if r.victim is None:
        likely = "no process may be killed"
    else:
        v = r.victim
        likely = (f"likely victim: pid={v.pid} name={safe(v.comm)} exe={safe(r.exe) or '?'} "
                  f"uid={r.uid} frees={size(v.freeable_kib)} "
                  f"growth={growth_text(v.growth_kib, v.growth_s, v.pace_kib_s)} "
                  f"score={v.badness:.0f}")
    runners = ("; then: " + ", ".join(candidate_text(c) for c in r.runners_up)
               if r.runners_up else "")
    return f"memory warning ({r.cause}): {r.reason}{outside_text(r)}; {likely}{runners}"
