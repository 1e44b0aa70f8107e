"""Choosing whom to kill: scan, sample sizes, rank, read protection lazily.

The I/O around the pure ranking of victim.py: :func:`sample` scans every
process and reads the size (RSS + swap) of the largest into the growth
tracker; :class:`Ranking` walks the ranked candidates and reads each one's
protection only when its turn comes. Loaded by the Monitor when memory first
enters the watch zone, so a machine with memory to spare never holds it.
"""

from __future__ import annotations

import os

from .growth import Tracker
from .log import Log, safe
from .meminfo import MemInfo
from .process import Candidate, Details, read_details, read_status, read_trust, scan
from .procfs import NoSuchProcess, ProcFS
from .victim import (
    Rules,
    Victim,
    avoided,
    badness,
    name_matches,
    protected,
    rank,
    sort_key,
    why_not,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from typing import Iterable

    from .cgroupkill import Units
    from .config import Config
    from .freeable import Shared

__all__ = ["TRACK_TOP", "Ranking", "find_victim", "kernel_scales_oom_score",
           "make_rules", "oom_score_per_kib", "sample", "sample_subtree", "size", "vet_members"]

TRACK_TOP = 32  # how many of the largest processes have their size sampled


def oom_score_per_kib(mem: MemInfo, scaled: bool = True) -> float:
    """Return how many ``oom_score`` points one KiB of memory is worth.

    The kernel's badness is in pages of RAM + swap, shown as thousandths of
    that total; since Linux 5.9 it is shown as ``(1000 + badness) * 2/3``
    (``scaled``), so the points per KiB shrink by the same 2/3.
    """
    total = mem.total + mem.swap_total
    return (1000.0 / total) * (2.0 / 3.0 if scaled else 1.0) if total > 0 else 0.0


def kernel_scales_oom_score() -> bool:
    """Whether this kernel shows oom_score in the 0..1333 form (Linux >= 5.9)."""
    release = os.uname().release.split(".")
    try:
        return (int(release[0]), int(release[1].split("-")[0])) >= (5, 9)
    except (ValueError, IndexError):
        return True


class Ranking:
    """The candidates of one scan in kill order; protection read lazily.

    :meth:`next` returns the next candidate that may be killed (its details
    are read only now, in rank order, until one may be killed); protected
    ones are logged at debug level and kept in ``skipped`` with the reason.
    Whatever only lowers a rank is learnt when a candidate's turn comes,
    and the candidate is put back in its place (its score so far was an
    upper bound, so no other is passed over wrongly):

    - its sizes, if the sample did not size it (its scan's RSS counted
      shared memory and page cache, issue 13);
    - ``--avoid``, once its executable is read and the match verified
      (process.Trust: a name no user can forge);
    - the default avoid list: such a process is passed over while a later
      candidate that is not on it frees at least ``need_kib`` (what the
      emergency needs: MemAvailable back above the SIGTERM level; 0, any
      candidate, when unknown); if none does, it comes next if it frees
      that much itself, else after every other candidate.

    ``notes``: PID -> why a rule its name matches did not count (for check).
    """

    __slots__ = ("fs", "ranked", "candidates", "rules", "kill_pgroup", "log", "skipped",
                 "units", "kill_cgroup", "shared", "score_per_kib", "need_kib", "notes",
                 "_next", "_tried", "_details", "_why")

    def __init__(self, fs: ProcFS, candidates: list[Candidate], rules: Rules,
                 score_per_kib: float, kill_pgroup: bool = False,
                 log: Log | None = None, units: Units | None = None,
                 kill_cgroup: bool = False, shared: Shared | None = None,
                 need_kib: int = 0) -> None:
        self.fs = fs
        self.candidates = candidates
        self.ranked = rank(candidates, rules, score_per_kib)
        self.shared = shared
        self.score_per_kib = score_per_kib
        self.need_kib = need_kib
        self.notes: dict[int, str] = {}
        self._tried: set[int] = set()  # PIDs sized here (or that could not be)
        self._details: dict[int, Details | None] = {}  # read once (None: gone)
        self._why: dict[int, str | None] = {}  # why protected (None: killable)
        self.rules = rules
        self.kill_pgroup = kill_pgroup
        self.log = log
        self.skipped: list[tuple[Candidate, str]] = []
        # cgroups (cgroupkill.Units): with --cgroup candidates carry the cgroup
        # they were listed in, re-checked for the victim; --kill-cgroup
        # finds the victim's cgroup and whether it may die whole.
        self.units = units
        self.kill_cgroup = kill_cgroup and units is not None
        self._next = 0

    def _skip(self, c: Candidate, why: str) -> None:
        self.skipped.append((c, why))
        if self.log is not None:
            self.log.debug(f"skipping pid={c.pid} name={safe(c.comm)}: {why}")

    def verdict(self, c: Candidate) -> tuple[Details | None, str | None]:
        """Read ``c``'s details once and return them with why it is protected.

        (None, None) if it is gone. Verifies its name matches (process.Trust,
        read only when a rule's pattern matches the name) and sets
        ``c.avoid_shift`` and ``c.session``.
        """
        if c.pid in self._details:
            return self._details[c.pid], self._why.get(c.pid)
        try:
            d: Details | None = read_details(self.fs, c.pid)
        except (NoSuchProcess, ValueError):
            d = None
        self._details[c.pid] = d
        if d is None:
            return None, None
        matches = name_matches(d.exe, self.rules)
        trust = read_trust(self.fs, c.pid, d.exe) if matches else None
        c.avoid_shift, c.session = avoided(matches, trust)
        note = why_not(matches, trust)
        if note:
            self.notes[c.pid] = note
        why = protected(c, d, self.rules, trust, matches)
        self._why[c.pid] = why
        return d, why

    def _killable(self, c: Candidate) -> Details | None:
        d, why = self.verdict(c)
        if d is None:
            return None
        if why is None and c.cgroup and self.units is not None and not self.units.holds(
                c.cgroup, c.pid):
            # Listed in the watched subtree by the scan; still there now that
            # its start time is known (the pidfd re-checks that), so a PID
            # reused outside the subtree is never chosen.
            why = f"is no longer in cgroup {c.cgroup}"
            self._why[c.pid] = why
        if why is None:
            return d
        self._skip(c, why)
        return None

    def _cgroup_group(self, c: Candidate) -> tuple[str, list[Candidate], str]:
        """Return the victim's cgroup folder, its other killable processes, and why
        the cgroup may not be killed whole ("" when it may)."""
        assert self.units is not None
        leaf = c.cgroup or self.units.leaf(c.pid)
        if not leaf:
            return "", [], "its cgroup is unknown"
        try:
            pids = self.units.members(leaf)
        except (OSError, ValueError) as err:
            return leaf, [], f"cannot list its processes: {err}"
        blocked = self.units.refusal(leaf, pids, self.rules.self_pid) or ""
        known = {m.pid: m for m in self.candidates}
        group, why = vet_members(self.fs, self.rules, pids, c.pid, known)
        return leaf, group, blocked or why

    def _place(self, c: Candidate) -> None:
        """Move ``c`` (at ``ranked[_next]``), whose score fell, down to its place."""
        key = sort_key(self.rules.policy)
        ranked, i = self.ranked, self._next
        mine = key(c)
        while i + 1 < len(ranked) and key(ranked[i + 1]) > mine:
            ranked[i] = ranked[i + 1]
            i += 1
        ranked[i] = c

    def _size(self, c: Candidate) -> None:
        self._tried.add(c.pid)
        if size(self.fs, c, self.shared):
            c.badness = badness(c, self.rules, self.score_per_kib)
            self._place(c)

    def _frees_enough(self, c: Candidate) -> bool:
        if c.freeable_kib < self.need_kib:
            return False  # an upper bound until sized: certainly not enough
        if not c.sized and c.pid not in self._tried:
            self._tried.add(c.pid)
            if size(self.fs, c, self.shared):
                c.badness = badness(c, self.rules, self.score_per_kib)
        return c.freeable_kib >= self.need_kib

    def _other_than_session(self) -> int:
        """Return the index of the first candidate after ``_next`` that may be
        killed, is not on the default avoid list and frees ``need_kib``; -1 if none.

        One that ``--avoid`` also shifts is taken only if no other does.
        """
        shifted = -1
        for j in range(self._next + 1, len(self.ranked)):
            m = self.ranked[j]
            if not self._frees_enough(m):
                continue
            d, why = self.verdict(m)
            if d is None or why is not None or m.session:
                continue
            if not m.avoid_shift:
                return j
            if shifted < 0:
                shifted = j
        return shifted

    def next(self) -> Victim | None:
        """Return the next victim in rank order, or None when none is left."""
        ranked = self.ranked
        while self._next < len(ranked):
            c = ranked[self._next]
            if not c.sized and c.pid not in self._tried:
                self._size(c)
                continue
            fresh = c.pid not in self._details
            details = self._killable(c)
            if details is None:
                self._next += 1
                continue
            if fresh and c.avoid_shift:
                c.badness = badness(c, self.rules, self.score_per_kib)
                self._place(c)
                continue
            if c.session and not c.deferred:
                j = self._other_than_session()
                if j >= 0:
                    ranked.insert(self._next, ranked.pop(j))
                    continue
                c.deferred = True  # nothing else frees enough: its own turn now
                if c.freeable_kib < self.need_kib:
                    ranked.append(ranked.pop(self._next))
                    continue
            self._next += 1
            if self.kill_cgroup:
                leaf, members, blocked = self._cgroup_group(c)
                return Victim(c, details, members, leaf, blocked)
            group: list[Candidate] = []
            if self.kill_pgroup and c.pgrp > 1:
                for m in self.candidates:
                    if m.pgrp != c.pgrp or m is c:
                        continue
                    d, why = self.verdict(m)
                    if d is not None and why is None:
                        group.append(m)
            return Victim(c, details, group, c.cgroup)
        return None


def find_victim(fs: ProcFS, rules: Rules, kill_pgroup: bool = False,
                log: Log | None = None) -> Victim | None:
    """Scan, rank (without growth history) and return the best victim, or None.

    The benchmark entry (bench/scan_probe.py times it; the daemon ranks with
    :class:`Ranking` after :func:`sample`). Raises OSError if /proc is
    unreadable.
    """
    cands = scan(fs, frozenset((rules.self_pid,)), rules.shifts)
    return Ranking(fs, cands, rules, 0.0, kill_pgroup, log).next()


def _compile(pattern: str) -> re.Pattern[str] | None:
    if not pattern:
        return None
    import re  # only when a regex option is set: +1 MiB RSS otherwise wasted
    return re.compile(pattern)


def make_rules(cfg: Config, self_pid: int) -> Rules:
    """Return the victim Rules of ``cfg`` (regexes compiled here)."""
    return Rules(self_pid, [g.strip() for g in cfg.unkillables.split("|") if g.strip()],
                 _compile(cfg.ignore), _compile(cfg.prefer), _compile(cfg.avoid),
                 cfg.rank, [g for g in cfg.default_avoid.split("|") if g])


def sample(fs: ProcFS, tracker: Tracker, now: float, skip: frozenset[int],
           exclude: set[tuple[int, int]], want_exe: bool,
           pids: list[int] | None = None, shared: Shared | None = None) -> list[Candidate]:
    """Scan, size the largest processes, return the candidates.

    Processes in ``skip`` (PIDs) or ``exclude`` (PID, start time) are left
    out; ``pids``: only these (a cgroup's) are scanned. The TRACK_TOP
    largest by estimated freeable size (``shared.estimate``: the scan's RSS
    less what their last sample showed a kill would not free; then
    ``oom_score``), and those already tracked, are sized from their
    ``status`` (Candidate.size) and their freeable size recorded in
    ``tracker``; each of them gets its net growth and its faded pace
    (growth.Tracker.pace) filled in. ``shared``
    (freeable.Shared) learns what each sized one keeps; without it no
    shared memory counts as freeable. Raises OSError if /proc is unreadable.
    """
    cands = [c for c in scan(fs, skip, want_exe, pids)
             if (c.pid, c.starttime) not in exclude]
    alive = {c.pid for c in cands}
    if shared is not None:
        shared.prune(alive)
        estimate = shared.estimate
        for c in cands:
            c.freeable_kib = estimate(c)
            c.kept_kib = c.rss_kib - c.freeable_kib
    top = sorted(cands, key=lambda c: (c.freeable_kib, c.oom_score), reverse=True)[:TRACK_TOP]
    keep = tracker.follow([(c.pid, c.freeable_kib) for c in top], alive)
    for c in cands:
        if c.pid not in keep:
            continue
        if not size(fs, c, shared):
            continue
        tracker.add(now, c.pid, c.starttime, c.freeable_kib)
        c.growth_kib, c.growth_s = tracker.growth(c.pid, c.starttime)
        c.pace_kib_s = tracker.pace(c.pid, c.starttime, now)
    return cands


def sample_subtree(fs: ProcFS, tracker: Tracker, now: float, skip: frozenset[int],
                   exclude: set[tuple[int, int]], want_exe: bool, units: Units, folder: str,
                   shared: Shared | None = None) -> list[Candidate]:
    """Return the candidates of the cgroup subtree at ``folder`` (--cgroup), each
    with the cgroup holding it in ``cgroup``, sampled as :func:`sample` does.

    Raises OSError or ValueError if the subtree's processes cannot be listed.
    """
    leaves = units.subtree(folder)
    cands = sample(fs, tracker, now, skip, exclude, want_exe, sorted(leaves), shared)
    for c in cands:
        c.cgroup = leaves.get(c.pid, "")
    return cands


def size(fs: ProcFS, c: Candidate, shared: Shared | None = None) -> bool:
    """Read ``c``'s status and fill in its sizes (Candidate.size); False if it
    is gone or its sizes cannot be read (it keeps the scan's estimate)."""
    try:
        st = read_status(fs, c.pid)
    except (NoSuchProcess, ValueError):
        return False
    c.size(st, 0 if shared is None else shared.own(c.pid, c.starttime))
    if shared is not None:
        shared.note(c)
    return True


def vet_members(fs: ProcFS, rules: Rules, pids: Iterable[int], victim: int,
                known: dict[int, Candidate]) -> tuple[list[Candidate], str]:
    """Check every member of a cgroup that cgroup.kill would kill with ``victim``.

    Returns the members that are ``known`` candidates, and why the cgroup
    may not be killed whole ("" when it may): a member that is protected,
    or one that cannot be checked at all (review L2: it fails closed), such
    as a process outside bustd's PID namespace (shown as PID 0) or one whose
    /proc files cannot be read while it is still there. bustd and PID 1 are
    cgroupkill.refusal's.
    """
    group: list[Candidate] = []
    blocked = ""
    for pid in sorted(pids):
        if pid == victim or pid in (1, rules.self_pid):
            continue
        if pid <= 0:
            blocked = blocked or "it holds a process outside bustd's PID namespace"
            continue
        m = known.get(pid) or Candidate(pid, 0, 0, 0, 0, b"")
        try:
            d = read_details(fs, pid)
        except (NoSuchProcess, ValueError):
            if not os.path.exists(fs.path(str(pid))):
                continue  # gone: nothing to spare
            why: str | None = "cannot be checked (its /proc files are unreadable)"
        else:
            matches = name_matches(d.exe, rules)
            trust = read_trust(fs, pid, d.exe) if matches else None
            why = protected(m, d, rules, trust, matches)
        if why is not None:
            # cgroup.kill would kill it too: the cgroup is signalled one by one.
            blocked = blocked or f"pid {pid} ({safe(m.comm) or '?'}) {why}"
        elif pid in known:
            group.append(m)
    return group, blocked
