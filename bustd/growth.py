"""Recent growth of the largest processes, learnt while memory runs short.

Pure bookkeeping, no I/O: while memory is in the watch zone the Monitor
reads the freeable size (``RssAnon + VmSwap`` and the shared memory only
it maps, from ``/proc/PID/status``: freeable.py) of the largest processes at
every check and records it here; at decision time each
candidate's net growth over the last :data:`WINDOW` seconds tells who is
causing the emergency. Outside the watch zone the tracker is cleared, so
it costs nothing while memory is plentiful.

Histories are keyed by PID *and* start time: a recycled PID starts afresh,
never inheriting another process's growth. A process that shrinks has no
growth (never negative), and one that vanished is forgotten at the next
prune. The tracker follows the largest processes at every sample
(:meth:`Tracker.follow`): when it is full, the smallest or the gone make
room, and a newcomer is never refused (review M2).
"""

from __future__ import annotations

__all__ = ["MAX_TRACKED", "WINDOW", "Tracker"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterable

WINDOW = 10.0  # seconds of history that count as "recent"
MAX_TRACKED = 64  # bounds the memory of the tracker whatever the process count


class _History:
    __slots__ = ("starttime", "samples")

    def __init__(self, starttime: int) -> None:
        self.starttime = starttime
        self.samples: list[tuple[float, int]] = []


class Tracker:
    """Sizes of processes over the last ``window`` seconds."""

    __slots__ = ("window", "_hist")

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self._hist: dict[int, _History] = {}

    def __len__(self) -> int:
        return len(self._hist)

    def clear(self) -> None:
        """Forget everything (memory is plentiful again)."""
        self._hist.clear()

    def add(self, now: float, pid: int, starttime: int, size_kib: int) -> None:
        """Record that ``pid`` (started at ``starttime``) had ``size_kib`` at ``now``.

        Keeps the newest sample at least ``window`` old as the reference, so
        growth always covers the whole window once there is enough history.
        """
        h = self._hist.get(pid)
        if h is None or h.starttime != starttime:
            if h is None and len(self._hist) >= MAX_TRACKED:
                del self._hist[self._smallest(self._hist)]  # never refuse a newcomer
            h = self._hist[pid] = _History(starttime)
        samples = h.samples
        if samples and now <= samples[-1][0]:
            samples.clear()  # the clock went backwards: start over
        samples.append((now, size_kib))
        while len(samples) > 2 and samples[1][0] <= now - self.window:
            del samples[0]

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
