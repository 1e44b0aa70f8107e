"""Kill only while it helps: each kill measured, kills in vain stopped (issue 14).

Pure bookkeeping over a short history, with the clock passed in, so the
rules are tested over simulated histories (tests/unit/test_progress.py).

* **Each kill is followed.** :meth:`Progress.killed` notes the time, what
  the victim was expected to free (:func:`expected_kib`: its freeable
  size) and the memory's worth just before the signal: MemAvailable plus
  SwapFree, zram counted at its RAM worth. At every later check
  :meth:`Progress.observe` keeps the best worth seen. The kill is *settled*
  once MEASURE_S has passed and either its victim is gone or memory has
  stopped coming back for MEASURE_S (a large victim still tearing down is
  waited for, review L8), at the latest HOLD_MAX after the signal, or as
  soon as it has freed HELPED of what was expected. Until then no other
  kill is made for the same emergency: its memory is on its way back.
* **A kill that freed less than VAIN_SHARE of what was expected was in
  vain**: the memory is held where that kill did not free it. bustd then
  backs off: no kill for BACKOFF_FIRST seconds, doubled after each further
  kill in vain up to BACKOFF_MAX, unless the first victim alone is expected
  to end the emergency (a grower that starts while a tmpfs is full). A kill
  that helped ends the back-off.
* **Kills that cannot end the emergency are not made**: when every
  candidate together is expected to free less than the shortfall (how far
  memory is below the level that ends the emergency) and the memory held
  outside processes (Shmem, hugetlb, unreclaimable slab) accounts for the
  rest, bustd kills nobody. Without that evidence (a gap nothing named
  explains, a cgroup) it kills, and the measurement of that kill decides.
* **A cap**: at most KILL_CAP kills in any KILL_WINDOW seconds, whatever
  the measurements say.

Nothing here reads anything: the loop hands in the readings it has, so
following a kill never delays the next decision (the measurement is taken
from the checks the loop makes anyway).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

    from .meminfo import MemInfo
    from .process import Candidate
    from .record import KillRecord

__all__ = ["BACKOFF_FIRST", "BACKOFF_MAX", "HELPED", "HOLD_MAX", "KILL_CAP", "KILL_WINDOW",
           "MEASURE_S", "VAIN_SHARE", "Followed", "Gate", "Progress", "expected_kib", "shortfall",
           "worth"]

MEASURE_S = 1.0  # a kill's memory is measured over about a second
HOLD_MAX = 10.0  # the longest a kill is waited for (a victim tearing down tens of GiB)
HELPED = 0.8  # freed this share of what was expected: settled at once
VAIN_SHARE = 0.25  # freed less than this share of what was expected: a kill in vain
BACKOFF_FIRST = 5.0  # seconds without a kill after the first kill in vain
BACKOFF_MAX = 120.0  # the longest pause (after the 6th kill in vain in a row)
KILL_CAP = 6  # at most this many kills...
KILL_WINDOW = 60.0  # ...in any this many seconds
_RISE_KIB = 1024  # memory coming back by at least this much is progress


def worth(mem: MemInfo) -> int:
    """Return what a kill is measured by: MemAvailable + SwapFree (KiB, swap at its worth)."""
    return mem.available + mem.swap_free


def expected_kib(c: Candidate) -> int:
    """Return what killing ``c`` is expected to free (KiB): its freeable size.

    Issue 13 (freeable.py): RssAnon + VmSwap + the shared memory only it
    maps; until its status is read this sample, its RSS (an upper bound).
    """
    return c.freeable_kib


def shortfall(mem: MemInfo, mem_level: float, swap_level: float) -> float:
    """Return the KiB a kill must free to end an emergency at these levels.

    Memory is short while MemAvailable and SwapFree are both at their
    levels, so raising either above its level ends it: the smaller gap.
    No swap counts as a gap that no kill closes. At least 1 KiB.
    """
    gap = mem_level - mem.available
    if mem.swap_total > 0:
        gap = min(gap, swap_level - mem.swap_free)
    return max(1.0, gap + 1)


class Followed:
    """One kill being followed: when, whom, what it was to free and what it freed."""

    __slots__ = ("time", "keys", "expected_kib", "before_kib", "best_kib", "last_rise",
                 "record", "settled")

    def __init__(self, time: float, keys: list[tuple[int, int]], expected: int,
                 before: int, record: KillRecord | None) -> None:
        self.time = time
        self.keys = keys  # (pid, starttime) of every process signalled
        self.expected_kib = expected
        self.before_kib = before
        self.best_kib = before
        self.last_rise = time
        self.record = record
        self.settled = -1.0  # when it was settled (-1: not yet)

    @property
    def freed_kib(self) -> int:
        """KiB of memory's worth come back since the signal (the best seen)."""
        return max(0, self.best_kib - self.before_kib)

    @property
    def vain(self) -> bool:
        """Whether it freed less than VAIN_SHARE of what it was expected to."""
        return self.freed_kib < VAIN_SHARE * self.expected_kib


class Gate:
    """Whether a kill may be made now: ``kill``, else ``wait`` seconds and ``kind``.

    ``kind`` is "" (kill), "hold" (the last kill's memory is still on its
    way back), "cap" (KILL_CAP reached), "cannot" (every candidate together
    cannot end it) or "backoff" (the last kills were in vain); ``why`` says
    it with the figures.
    """

    __slots__ = ("kill", "wait", "kind", "why")

    def __init__(self, kill: bool, wait: float = 0.0, kind: str = "", why: str = "") -> None:
        self.kill = kill
        self.wait = wait
        self.kind = kind
        self.why = why

    def __repr__(self) -> str:
        return f"Gate({self.kill}, {self.wait:.2f}, {self.kind!r}, {self.why!r})"


class Progress:
    """The kills of the last KILL_WINDOW seconds and what they achieved."""

    __slots__ = ("followed", "vain_streak", "pause_until", "last_vain")

    def __init__(self) -> None:
        self.followed: list[Followed] = []  # oldest first
        self.vain_streak = 0  # kills in vain in a row
        self.pause_until = float("-inf")
        self.last_vain: Followed | None = None

    def killed(self, now: float, keys: list[tuple[int, int]], expected: int, before: int,
               record: KillRecord | None = None) -> Followed:
        """Start following a kill made at ``now``; return it."""
        f = Followed(now, keys, expected, before, record)
        self.followed.append(f)
        return f

    def pending(self) -> Followed | None:
        """Return the kill not yet settled (at most one: no kill is made while one is)."""
        for f in self.followed:
            if f.settled < 0:
                return f
        return None

    def due(self, now: float) -> float:
        """Return the seconds until a kill being followed should be looked at again
        (inf when none is)."""
        f = self.pending()
        if f is None:
            return float("inf")
        return max(0.0, min(f.time + MEASURE_S, f.time + HOLD_MAX) - now)

    def observe(self, now: float, worth_kib: int,
                alive: Callable[[tuple[int, int]], bool]) -> list[Followed]:
        """Take one reading of memory's worth; return the kills settled by it.

        ``alive(key)`` tells whether a process signalled is still there
        (tearing down). A kill settled in vain starts or lengthens the
        back-off; one that helped ends it. Kills older than KILL_WINDOW
        are forgotten once settled.
        """
        done: list[Followed] = []
        for f in self.followed:
            if f.settled >= 0:
                continue
            if worth_kib >= f.best_kib + _RISE_KIB:
                f.last_rise = now
            f.best_kib = max(f.best_kib, worth_kib)
            age = now - f.time
            helped = f.freed_kib >= HELPED * f.expected_kib
            teardown = (any(alive(k) for k in f.keys)
                        and now - f.last_rise < MEASURE_S)
            if helped or age >= HOLD_MAX or (age >= MEASURE_S and not teardown):
                f.settled = now
                done.append(f)
                self._judge(now, f)
        self.followed = [f for f in self.followed
                         if f.settled < 0 or now - f.time < KILL_WINDOW]
        return done

    def _judge(self, now: float, f: Followed) -> None:
        if f.vain:
            self.vain_streak += 1
            pause = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.vain_streak - 1))
            self.pause_until = now + pause
            self.last_vain = f
        else:
            self.vain_streak = 0
            self.pause_until = float("-inf")

    def recovered(self) -> None:
        """Memory is out of the watch zone: the back-off ends (kills in vain are forgotten)."""
        self.vain_streak = 0
        self.pause_until = float("-inf")

    def gate(self, now: float, short_kib: float, first_kib: int, all_kib: int,
             outside_kib: int = 0) -> Gate:
        """Return whether a kill may be made now (pure; see the module docstring).

        ``short_kib`` is the shortfall, ``first_kib`` what the first victim
        is expected to free (with its group), ``all_kib`` what every
        candidate together is, ``outside_kib`` the memory held outside
        processes (MemInfo.outside).
        """
        f = self.pending()
        if f is not None:
            return Gate(False, 0.0, "hold",
                        f"waiting for the last kill's memory ({_kib(f.freed_kib)} of "
                        f"{_kib(f.expected_kib)} back after {now - f.time:.1f} s)")
        recent = [g.time for g in self.followed if now - g.time < KILL_WINDOW]
        if len(recent) >= KILL_CAP:
            return Gate(False, recent[0] + KILL_WINDOW - now, "cap",
                        f"{len(recent)} kills in the last {KILL_WINDOW:g} s, the most bustd "
                        "makes")
        if all_kib < short_kib <= all_kib + outside_kib:
            return Gate(False, 0.0, "cannot",
                        f"killing cannot end it: the candidates together are expected to "
                        f"free {_kib(all_kib)}, and {_kib(short_kib)} is missing")
        if now < self.pause_until and first_kib < short_kib:
            last = self.last_vain
            freed = (f"the last kill freed {_kib(last.freed_kib)} of the expected "
                     f"{_kib(last.expected_kib)}" if last is not None else "")
            return Gate(False, self.pause_until - now, "backoff",
                        f"{self.vain_streak} kill{'s' if self.vain_streak > 1 else ''} in "
                        f"vain ({freed}): no kill for {self.pause_until - now:.0f} s unless "
                        "one alone can end it")
        return Gate(True)


def _kib(kib: float) -> str:
    from .log import size
    return size(int(kib))
