"""What a kill frees: the victim's private memory, and shared memory only it maps.

One figure, ``Candidate.freeable_kib`` (and ``KillRecord.freeable_kib``),
is what killing a process is expected to return to the machine (issue 13)::

    freeable_kib = RssAnon + VmSwap + own_shmem_kib

- ``RssAnon + VmSwap`` (``/proc/PID/status``, read anyway for the largest
  processes while memory is in the watch zone): its anonymous memory, in RAM
  or in swap, released when its address space is torn down.
- ``RssFile`` is page cache: a kill leaves it in the cache, and clean cache
  is already counted in ``MemAvailable``. Never freeable.
- ``RssShmem`` (tmpfs and ``/dev/shm`` files, SysV segments, memfds, shared
  anonymous mappings) is released only with its last holder: a database's
  shared buffers, mapped by every backend, show in each one's RSS, and
  killing one backend frees none of them. ``own_shmem_kib`` counts only the
  shared pages this process alone maps, by a lower bound from
  ``smaps_rollup``: a page mapped by ``m`` processes adds ``1/m`` to
  ``Pss_Shmem``, so of ``n`` resident shared pages, ``s`` mapped here alone,
  ``Pss_Shmem <= s + (n - s) / 2``, hence ``s >= 2 * Pss_Shmem - n``
  (:func:`own_shmem`). A tmpfs file or a SysV segment not yet removed
  outlives even its last mapper; bustd cannot see that before the kill.

Size, growth, ``--rank rss`` and the badness all use ``freeable_kib``;
``kept_kib`` (file pages and shared memory others map) is taken off the
kernel's ``oom_score``, which counts it (victim.py).

``smaps_rollup`` walks every mapping under the target's ``mmap_lock``,
which a thrashing process can hold for seconds: :class:`Shared` reads it
only in a background thread while memory is in the watch zone, only for
sampled processes holding at least :data:`ROLLUP_MIN_KIB` of shared memory,
each at most every :data:`ROLLUP_EVERY` seconds, and never on the kill path,
which uses the last figure found (0, nothing of the shared memory, until
then). A process with no shared memory costs nothing more than before.
"""

from __future__ import annotations

from .background import Background
from .process import Candidate, parse_stat
from .procfs import NoSuchProcess, ProcFS

__all__ = ["ROLLUP_EVERY", "ROLLUP_MIN_KIB", "Shared", "own_shmem", "parse_pss_shmem"]

ROLLUP_MIN_KIB = 16 * 1024  # less shared memory than this is not worth a rollup
ROLLUP_EVERY = 5.0  # seconds between two rollups of one process


def parse_pss_shmem(buf: bytes) -> int | None:
    """Return ``Pss_Shmem`` (KiB) of ``/proc/PID/smaps_rollup`` text.

    None if the line is missing (kernels before 5.14 do not split Pss).
    Raises ValueError if it is malformed.
    """
    start = buf.find(b"\nPss_Shmem:")
    if start < 0:
        return None
    end = buf.find(b"\n", start + 1)
    fields = buf[start + 11:end if end >= 0 else len(buf)].split()
    if not fields or not fields[0].isdigit():
        raise ValueError(f"smaps_rollup: malformed Pss_Shmem line in {buf[start:start + 60]!r}")
    return int(fields[0])


def own_shmem(pss_shmem_kib: int, rss_shmem_kib: int) -> int:
    """Return a lower bound of the shared memory (KiB) mapped by one process alone.

    ``2 * Pss_Shmem - RssShmem`` (see the module's docstring), within
    ``0..RssShmem``: all of it for a sole mapper, none when every page has
    another mapper.
    """
    return max(0, min(rss_shmem_kib, 2 * pss_shmem_kib - rss_shmem_kib))


class Shared:
    """What the scan's RSS of each process overstates, learnt while watching.

    ``own(pid, starttime)``: the shared memory only that process maps
    (from the last background rollup, 0 if none). ``note(c)`` after a
    Candidate is sized remembers its ``kept_kib``, so the next scan's
    estimate of its freeable size (:meth:`estimate`) picks the largest
    processes to size by what a kill would free, not by RSS (issue 13:
    32 database backends mapping the same buffers would otherwise fill the
    sample). Keyed by PID and start time: a recycled PID starts afresh.
    """

    __slots__ = ("fs", "background", "_own", "_kept", "_asked")

    def __init__(self, fs: ProcFS, background: Background | None = None) -> None:
        self.fs = fs
        self.background = background or Background()
        self._own: dict[int, tuple[int, int]] = {}  # pid -> (starttime, KiB)
        self._kept: dict[int, tuple[int, int]] = {}
        self._asked: dict[int, tuple[int, float]] = {}  # pid -> (starttime, time)

    def own(self, pid: int, starttime: int) -> int:
        """Return the last known shared memory (KiB) only ``pid`` maps, 0 if unknown."""
        got = self._own.get(pid)
        return got[1] if got is not None and got[0] == starttime else 0

    def estimate(self, c: Candidate) -> int:
        """Return ``c``'s freeable size as estimated from the scan's RSS (KiB)."""
        got = self._kept.get(c.pid)
        kept = got[1] if got is not None and got[0] == c.starttime else 0
        return max(0, c.rss_kib - kept)

    def note(self, c: Candidate) -> None:
        """Remember what a sized Candidate's RSS holds that a kill would not free."""
        self._kept[c.pid] = (c.starttime, c.kept_kib)

    def prune(self, alive: set[int]) -> None:
        """Forget every PID not in ``alive``."""
        for table in (self._own, self._kept, self._asked):
            for pid in [p for p in table if p not in alive]:
                del table[pid]

    def clear(self) -> None:
        """Forget everything (memory is plentiful again)."""
        self._own.clear()
        self._kept.clear()
        self._asked.clear()

    def refresh(self, cands: list[Candidate], now: float) -> list[tuple[int, int]]:
        """Start a background rollup of the sized candidates that hold shared memory.

        Only those with ``shmem_kib >= ROLLUP_MIN_KIB`` not asked for in the
        last ROLLUP_EVERY seconds; nothing is started while the last batch
        still runs (a rollup waiting on a thrashing process's lock holds
        back only itself). Returns the (pid, starttime) pairs asked for.
        """
        if self.background.busy():
            return []
        wanted: list[tuple[int, int]] = []
        for c in cands:
            if not c.sized or c.shmem_kib < ROLLUP_MIN_KIB:
                continue
            asked = self._asked.get(c.pid)
            if asked is not None and asked[0] == c.starttime and now - asked[1] < ROLLUP_EVERY:
                continue
            self._asked[c.pid] = (c.starttime, now)
            wanted.append((c.pid, c.starttime))
        if wanted:
            self.background.submit(lambda: self._read_all(wanted))
        return wanted

    def _read_all(self, wanted: list[tuple[int, int]]) -> None:
        for pid, starttime in wanted:
            self.learn(pid, starttime)

    def learn(self, pid: int, starttime: int) -> bool:
        """Read ``pid``'s rollup now and remember its own shared memory.

        Returns whether a figure was learnt. Blocks on the target's
        mmap_lock (see :meth:`read_own`).
        """
        own = self.read_own(pid, starttime)
        if own is None:
            return False
        self._own[pid] = (starttime, own)
        return True

    def read_own(self, pid: int, starttime: int) -> int | None:
        """Read ``pid``'s rollup now; return its own shared memory (KiB).

        None if it is gone, is another process now (recycled PID), or its
        files cannot be read. Blocks on the target's mmap_lock: background
        threads and ``bustd check`` only.
        """
        from .process import parse_status
        fs = self.fs
        try:
            rollup = fs.read_pid(pid, "smaps_rollup", 8192)
            st = parse_status(fs.read_pid_all(pid, "status"))
            same = parse_stat(fs.read_pid(pid, "stat")).starttime == starttime
            pss = parse_pss_shmem(rollup)
        except (NoSuchProcess, ValueError, OSError):
            return None
        if not same or pss is None:
            return None
        return own_shmem(pss, st.shmem_kib)
