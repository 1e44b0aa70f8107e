"""Recent growth of the largest processes, learnt while memory runs short.

Pure bookkeeping, no I/O: while memory is in the watch zone the Monitor
reads the freeable size (``RssAnon + VmSwap`` and the shared memory only
it maps, from ``/proc/PID/status``: freeable.py) of the largest processes at
every check and records it here; at decision time each
candidate's net growth over the last :data:`WINDOW` seconds tells who is
causing the emergency. Outside the watch zone the tracker is cleared, so
it costs nothing while memory is plentiful.

A grower that pauses is still the likely cause: each history also keeps
the fastest pace it grew at (net growth over at least :data:`MIN_SPAN`
seconds of the window), which fades linearly to nothing over
:data:`FADE_S` seconds (:meth:`Tracker.pace`). Without it a grower that
filled memory and stopped a few seconds before the emergency looked idle
once its growth left the window, and a larger process that never grew
was chosen instead (VM scenario 7 in CI: twelve workers that had just
reached their size and an idle 120 MiB process).

Histories are keyed by PID *and* start time: a recycled PID starts afresh,
never inheriting another process's growth. A process that shrinks has no
growth (never negative), and one that vanished is forgotten at the next
prune. The tracker follows the largest processes at every sample
(:meth:`Tracker.follow`): when it is full, the smallest or the gone make
room, and a newcomer is never refused (review M2).
"""

from __future__ import annotations

__all__ = ["FADE_S", "MAX_TRACKED", "MIN_SPAN", "WINDOW", "Tracker"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterable

WINDOW = 10.0  # seconds of history that count as "recent"
MAX_TRACKED = 64  # bounds the memory of the tracker whatever the process count
# A pace is net growth over at least this long (two samples 0.1 s apart are
# noise, not a pace to remember).
MIN_SPAN = 1.0
# How long a pace is remembered once growth slows: the ranking's horizon
# (victim.HORIZON_S), so a grower that paused counts until its projection
# would have run out.
FADE_S = 30.0


class _History:
    __slots__ = ("starttime", "samples", "pace", "pace_at")

    def __init__(self, starttime: int) -> None:
        self.starttime = starttime
        self.samples: list[tuple[float, int]] = []
        self.pace = 0.0  # the fastest pace seen (KiB/s) ...
        self.pace_at = 0.0  # ... and when


class Tracker:
    """Sizes of processes over the last ``window`` seconds."""

    __slots__ = ("window", "fade", "_hist")

    def __init__(self, window: float = WINDOW, fade: float = FADE_S) -> None:
        self.window = window
        self.fade = fade
        self._hist: dict[int, _History] = {}

    def __len__(self) -> int:
        return len(self._hist)

    def clear(self) -> None:
        """Forget everything (memory is plentiful again)."""
        self._hist.clear()

    def add(self, now: float, pid: int, starttime: int, size_kib: int) -> None:
        """Record that ``pid`` (started at ``starttime``) had ``size_kib`` at ``now``.

        Keeps the newest sample at least ``window`` old as the reference, so
        growth always covers the whole window once there is enough history;
        the growth over it, once it spans MIN_SPAN, becomes the remembered
        pace when it is faster than the faded one.
        """
        h = self._hist.get(pid)
        if h is None or h.starttime != starttime:
            if h is None and len(self._hist) >= MAX_TRACKED:
                del self._hist[self._smallest(self._hist)]  # never refuse a newcomer
            h = self._hist[pid] = _History(starttime)
        samples = h.samples
        if samples and now <= samples[-1][0]:
            samples.clear()  # the clock went backwards: start over
            h.pace = 0.0
        samples.append((now, size_kib))
        while len(samples) > 2 and samples[1][0] <= now - self.window:
            del samples[0]
        t0, k0 = samples[0]
        if now - t0 >= MIN_SPAN:
            pace = max(0, size_kib - k0) / (now - t0)
            if pace >= self._faded(h, now):
                h.pace, h.pace_at = pace, now

    def _smallest(self, pids: Iterable[int]) -> int:
        """Return the PID among ``pids`` whose last recorded size is the smallest."""
        hist = self._hist
        return min(pids, key=lambda p: (hist[p].samples[-1][1] if hist[p].samples else -1, p))

    def follow(self, top: list[tuple[int, int]], alive: set[int]) -> set[int]:
        """Return the PIDs to sample now: ``top`` (PID, size) and the tracked that live.

        Those gone are forgotten; when more than MAX_TRACKED remain, the
        tracked ones outside ``top`` with the smallest last size make room,
        so the largest processes are always followed.
        """
        keep = {pid for pid, _ in top[:MAX_TRACKED]}
        others = [p for p in self._hist if p in alive and p not in keep]
        room = MAX_TRACKED - len(keep)
        if len(others) > room:
            hist = self._hist
            others.sort(key=lambda p: hist[p].samples[-1][1] if hist[p].samples else -1,
                        reverse=True)
            others = others[:max(0, room)]
        keep.update(others)
        self.prune(keep)
        return keep

    def prune(self, keep: set[int]) -> None:
        """Forget every PID not in ``keep`` (exited, or no longer among the largest)."""
        for pid in [p for p in self._hist if p not in keep]:
            del self._hist[pid]

    def tracked(self) -> list[int]:
        """Return the PIDs with a history."""
        return list(self._hist)

    def growth(self, pid: int, starttime: int) -> tuple[int, float]:
        """Return (net growth in KiB, over how many seconds) of ``pid``.

        (0, 0.0) without a history of two samples for this very process (a
        recycled PID has none); growth is never negative.
        """
        h = self._hist.get(pid)
        if h is None or h.starttime != starttime or len(h.samples) < 2:
            return 0, 0.0
        (t0, k0), (t1, k1) = h.samples[0], h.samples[-1]
        return max(0, k1 - k0), t1 - t0

    def pace(self, pid: int, starttime: int, now: float) -> float:
        """Return the fastest pace (KiB/s) ``pid`` grew at, faded to ``now``.

        Linear: the whole pace when it was measured, nothing ``fade``
        seconds later; 0.0 without a history spanning MIN_SPAN.
        """
        h = self._hist.get(pid)
        if h is None or h.starttime != starttime:
            return 0.0
        return self._faded(h, now)

    def _faded(self, h: _History, now: float) -> float:
        if h.pace <= 0.0:
            return 0.0
        return h.pace * max(0.0, 1.0 - (now - h.pace_at) / self.fade)
