"""What bustd does once memory runs short: sample, rank, warn, act and record.

:class:`Emergency` owns the state of the watch zone and of the kills: the
victim rules, the growth tracker, the processes that refused a signal or
are still dying after SIGKILL, the kills made and what they achieved
(progress.py). The Monitor creates it the first time memory enters the
watch zone (``Monitor.load_watch_code``) and hands it the readings of each
check; it never sees the Monitor. Like choose.py, kill.py and record.py,
this module is loaded only then, so a machine with memory to spare never
holds it: the idle footprint is that of the loop alone.

:meth:`Emergency.act` ranks the candidates (victim.py), re-reads memory
(doing nothing if the emergency has passed), runs the pre-kill callables,
signals through a pidfd (kill.py) and hands one KillRecord to every output.
A victim that refuses the signal is passed over and the next tried in the
same check; one that survives SIGKILL is remembered in ``dying`` and never
chosen again while it dies.
"""

from __future__ import annotations

from . import choose, freeable, growth, progress, sig
from .decide import (
    DRY_RUN_PAUSE,
    MIN_SLEEP,
    NO_VICTIM_PAUSE,
    Decision,
    Stall,
    decide,
    thresholds,
    warning,
)
from .procfs import own_major_faults
from .progress import expected_kib, shortfall, worth

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

    from . import kill
    from .cgroupkill import Units
    from .config import Config
    from .log import Log
    from .meminfo import MemInfo
    from .outputs import Record
    from .process import Candidate
    from .procfs import BackgroundRead, ProcFS
    from .progress import Followed, Gate
    from .record import KillRecord, Reading
    from .victim import Victim
    from .zram import Zram

    # A pre-kill callable (outputs.PreKillHook) and the guard that runs it
    # (Monitor.guarded: its failure is logged, never raised).
    PreKill = Callable[[KillRecord, BackgroundRead], None]
    Guard = Callable[..., None]
    # What the re-read of memory returns: (what decisions read, the machine's).
    Read = Callable[[], tuple[MemInfo, MemInfo]]

__all__ = ["RULE_KEYS", "RUNNERS_UP", "WARN_EVERY", "Acted", "Emergency", "Wakeup", "reading",
           "runners_up", "victim_kib"]

RUNNERS_UP = 3  # candidates named after the victim in the kill line
# Longest wait for the victim's command line before the signal, without a
# pre-kill hook (which waits for it itself): the read takes microseconds,
# more only while the victim's mmap_lock is held (issue 10).
CMDLINE_HEAD_START = 0.002
WARN_EVERY = 60.0  # seconds at least between two warnings, even after a recovery
# Settings the victim rules are made of (rebuilt on a reload that changes one).
RULE_KEYS = ("unkillables", "ignore", "prefer", "avoid", "default_avoid", "rank")


class Wakeup:
    """When the current check began (``at``, monotonic seconds), what woke it
    (``by``: "timer" or "PSI trigger") and bustd's own major page faults then
    (``faults``, -1 unknown): what a kill's record reports its reaction by."""

    __slots__ = ("at", "by", "faults")
    at: float
    by: str
    faults: int

    def __init__(self, at: float, by: str, faults: int) -> None:
        object.__setattr__(self, "at", at)
        object.__setattr__(self, "by", by)
        object.__setattr__(self, "faults", faults)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Wakeup is frozen: cannot set {name}")


class Acted:
    """What :meth:`Emergency.act` did: the least ``pause`` before the next
    check, and whether a signal was sent (``signalled``: the Monitor then
    forgets its stall history, which the kill has made stale)."""

    __slots__ = ("pause", "signalled")
    pause: float
    signalled: bool

    def __init__(self, pause: float, signalled: bool = False) -> None:
        object.__setattr__(self, "pause", pause)
        object.__setattr__(self, "signalled", signalled)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Acted is frozen: cannot set {name}")

    def __repr__(self) -> str:
        return f"Acted({self.pause!r}, signalled={self.signalled!r})"


class Emergency:
    """The watch zone's and the kills' state, and what is done with it.

    Made with what never changes between checks: the Config (until a
    reload: :meth:`reconfigure`), the /proc tree, the log, the monotonic
    clock and the wall clock, bustd's own PID, ``emit`` (hands a record to
    every output), ``pre_kill`` (the callables run with each KillRecord just
    before its signal, each through ``guard``, which logs a failure instead
    of raising) and ``cgroup``, the path of the watched cgroup (--cgroup) or
    None. The readings of each check come as arguments.
    """

    def __init__(self, cfg: Config, fs: ProcFS, log: Log, clock: Callable[[], float],
                 wall: Callable[[], float], self_pid: int, emit: Callable[[Record], None],
                 pre_kill: list[PreKill], guard: Guard, cgroup: str | None = None) -> None:
        self.cfg = cfg
        self.fs = fs
        self.log = log
        self.clock = clock
        self.wall = wall
        self.self_pid = self_pid
        self.emit = emit
        self.pre_kill = pre_kill
        self.guard = guard
        self.cgroup = cgroup
        self.rules = choose.make_rules(cfg, self_pid)
        self.progress = progress.Progress()  # what the kills achieved (issue 14)
        self.tracker = growth.Tracker()
        self.shared = freeable.Shared(fs)  # what RSS holds that a kill would not free
        self.units: Units | None = None  # victims' cgroups (--cgroup, --kill-cgroup)
        if cfg.cgroup or cfg.kill_cgroup:
            self.units = self.units_for_kill()
        self.scaled = choose.kernel_scales_oom_score()  # oom_score in the 0..1333 form
        self.may_signal = not (cfg.dry_run or not cfg.live)  # a fake tree is never signalled
        self.need_kib = 0  # what a kill must free to end the emergency (while watching)
        self.refused: set[tuple[int, int]] = set()  # (pid, starttime) refused a signal
        self.cmdline_read: tuple[tuple[int, int], BackgroundRead] | None = None
        self.dying: dict[tuple[int, int], kill.Target] = {}  # alive after SIGKILL
        self.kills = 0
        self.last_act = -1e9
        self.said_no_victim = False  # warned that nothing may be killed in this emergency
        self.held_back: set[str] = set()  # kinds of "no kill" said (held_back)
        self.warned = False  # a warning was given: none again until memory recovers
        self.last_warn = -1e9

    def units_for_kill(self) -> Units:
        """Return how victims' cgroups are found and killed (--cgroup, --kill-cgroup)."""
        from .cgroupkill import units_of
        units, err = units_of(self.fs)
        if err is not None:
            self.log.warning(f"cannot read {self.fs.path('self/mountinfo')} ({err}): "
                             "victims' cgroups unknown")
        return units

    def reconfigure(self, new: Config) -> None:
        """Use ``new`` (a reload's Config, its fixed settings kept) from the next check:
        the victim rules again if one of RULE_KEYS changed, the units if
        --kill-cgroup is new, the dry-run switch; "no victim" may be said again."""
        old, self.cfg = self.cfg, new
        self.may_signal = not (new.dry_run or not new.live)
        self.said_no_victim = False
        if any(getattr(new, k) != getattr(old, k) for k in RULE_KEYS):
            self.rules = choose.make_rules(new, self.self_pid)
        if new.kill_cgroup and self.units is None:
            self.units = self.units_for_kill()

    # -- between emergencies -------------------------------------------------

    def recovered(self) -> None:
        """Memory has left the watch zone: the next shortage is warned of again."""
        self.warned = False
        self.progress.recovered()

    def calm(self) -> None:
        """No decision to act at this check: "no victim" and "not killing" may be said again."""
        self.said_no_victim = False
        self.held_back.clear()

    def stop_watching(self) -> None:
        """Forget the sizes sampled while watching (memory is back to spare)."""
        self.tracker.clear()
        self.shared.clear()

    def follow(self, now: float, available: int) -> list[Followed]:
        """Measure the kills being followed with this check's ``available`` (MemAvailable
        plus SwapFree: progress.py); return the kills settled now. A signalled
        process still in ``dying`` is tearing down."""
        if not self.progress.followed:
            return []
        dying = self.dying
        return self.progress.observe(now, available, lambda key: key in dying)

    def close(self) -> None:
        """Close the pidfds of the victims still dying."""
        from . import kill
        for t in self.dying.values():
            kill.close_pidfd(t)
        self.dying.clear()

    # -- the watch zone ------------------------------------------------------

    def sample(self, now: float) -> list[Candidate]:
        """Scan, sample the sizes of the largest processes, return the candidates."""
        if self.dying:
            self.forget_dead()
        if self.refused:
            self.forget_refused()
        exclude = self.refused | set(self.dying)
        if self.cgroup is None:
            cands = choose.sample(self.fs, self.tracker, now, frozenset((self.self_pid,)),
                                  exclude, self.rules.shifts, shared=self.shared)
            self.shared.refresh(cands, now)
            return cands
        # --cgroup: only the subtree's processes, each with the cgroup holding it.
        try:
            cands = choose.sample_subtree(self.fs, self.tracker, now,
                                          frozenset((self.self_pid,)), exclude,
                                          self.rules.shifts,
                                          self.units or self.units_for_kill(), self.cgroup,
                                          self.shared)
        except (OSError, ValueError) as err:
            self.log.debug(f"cannot list the processes of cgroup {self.cgroup}: {err}")
            return []
        self.shared.refresh(cands, now)
        return cands

    def ranked(self, cands: list[Candidate], machine: MemInfo,
               log: Log | None = None) -> choose.Ranking:
        """Return the candidates in kill order (growth priced by the machine's totals)."""
        cfg = self.cfg
        # oom_score is the kernel's badness against the machine's RAM + swap,
        # with --cgroup too: growth is priced in the same units.
        return choose.Ranking(self.fs, cands, self.rules,
                              choose.oom_score_per_kib(machine, self.scaled), cfg.kill_pgroup,
                              log, self.units, cfg.kill_cgroup, self.shared, self.need_kib)

    def rehearse(self, cands: list[Candidate], read: Read, zram: list[Zram],
                 wakeup: Wakeup) -> None:
        """Walk the kill path once without signalling anyone (issue 10).

        Run on entering the watch zone, while memory is still to spare: the
        ranking, the details of a leader, the record and its line, the
        background cmdline read and the pidfd calls (against bustd itself,
        with signal 0) all touch their code now, so under mlockall the
        emergency finds them resident instead of faulting them in from disk.
        ``read`` reads memory now: (what decisions read, the machine's).
        """
        from . import kill
        from .record import WarnRecord, kill_line, warn_line
        mem, machine = read()
        ranking = self.ranked(cands, machine)
        victim = ranking.next()
        if victim is not None:
            record = self.make_record(victim, Decision(sig.SIGTERM, "rehearsal"),
                                      reading(self.cfg, mem, Stall(None, 0.0, None), zram),
                                      True, wakeup)
            record.cmdline = self.fs.read_pid_later(self.self_pid, "cmdline").result(0.05)
            record.runners_up = runners_up(ranking)
            kill_line(record)
            record.dry_run = False
            kill_line(record)
            warn_line(WarnRecord(record.time, "memory", "rehearsal", record.reading,
                                 victim.candidate, record.uid, record.exe))
        kill.rehearse(self.fs, self.self_pid, self.clock)

    def warn(self, mem: MemInfo, stall: Stall, cands: list[Candidate], now: float,
             machine: MemInfo, zram: list[Zram]) -> None:
        """Emit a WarnRecord naming the likely victim when :func:`warning` says so.

        Said once, then again only after memory has left the watch zone and
        at least WARN_EVERY seconds later (a machine hovering at the level
        would otherwise warn at every check).
        """
        found = warning(mem, stall.percent, self.cfg)
        if found is None or now - self.last_warn < WARN_EVERY:
            return
        from .record import WarnRecord
        ranking = self.ranked(cands, machine)
        victim = ranking.next()
        record = WarnRecord(self.wall(), found.cause, found.reason,
                            reading(self.cfg, mem, stall, zram),
                            victim.candidate if victim else None,
                            victim.details.uid if victim else -1,
                            victim.details.exe if victim else b"")
        record.runners_up = runners_up(ranking)
        from .held import read_held
        try:
            held = read_held(self.fs)
        except (OSError, ValueError):
            held = None
        if held is not None and held.significant():
            record.held = held  # "a 5 GiB file in /dev/shm", not just "memory is short"
        self.warned = True
        self.last_warn = now
        self.emit(record)

    # -- the emergency -------------------------------------------------------

    def act(self, decision: Decision, stall: Stall, cands: list[Candidate], machine: MemInfo,
            zram: list[Zram], wakeup: Wakeup, read: Read) -> Acted:
        """Pick a victim and kill it (or log it in a dry run).

        ``machine`` is the machine's last MemInfo (oom_score is priced by
        it), ``zram`` the devices last read, ``read`` reads memory again
        (with zram at its worth): (what decisions read, the machine's).
        A victim that refuses the signal (EPERM: another user's process, an
        LSM) is passed over, said once, and the next one tried in the same
        check. Returns the least pause before the next check and whether a
        signal was sent.
        """
        from .record import candidate_text
        log, cfg = self.log, self.cfg
        ranking = self.ranked(cands, machine, log)
        victim = ranking.next()
        if victim is None:
            if not self.said_no_victim:  # once per emergency, not once a second
                log.warning(f"memory emergency ({decision.reason}) but no process may be killed")
                self.said_no_victim = True
            return Acted(NO_VICTIM_PAUSE)
        if log.verbose:
            log.debug("candidates: " + "; ".join(candidate_text(c) for c in ranking.ranked[:6]))
        # The scan took time: decide again on fresh memory figures.
        fresh_mem, machine = read()
        fresh = decide(fresh_mem, stall.percent, cfg, stall.seconds, stall.swapin, stall.swapout)
        if fresh is None:
            log.info("memory recovered before the kill: nothing done")
            return Acted(0.0)
        gate = self.gate_for(fresh, fresh_mem, victim, cands, machine)
        if not gate.kill:
            return Acted(self.held_back_for(fresh, gate))
        dry = not self.may_signal
        while victim is not None:
            pending = self.cmdline_of(victim.candidate)
            if pending is not None and not self.pre_kill:
                # A victim that dies at once leaves a zombie with an empty command
                # line (review L1): give the read, a few microseconds unless the
                # victim's memory lock is held, this long before the signal.
                pending.result(CMDLINE_HEAD_START)
            record = self.make_record(victim, fresh, reading(cfg, fresh_mem, stall, zram), dry,
                                      wakeup)
            record.expected_kib = victim_kib(victim)
            for hook in self.pre_kill:  # each bounds its own wait (--hook-timeout)
                self.guard(hook, record, pending)
            outcome = "dry" if dry else self.kill_victim(victim, record, fresh.signal, wakeup)
            if outcome == "refused":
                victim = ranking.next()  # said once by kill_victim; the next one now
                continue
            if outcome == "gone":
                return Acted(0.0)  # it exited by itself: decide again on fresh readings
            if outcome == "failed":
                return Acted(MIN_SLEEP)  # nothing sent (ENOMEM, no descriptor): try again soon
            record.cmdline = None if pending is None else pending.result(0.05 if dry else 0.1)
            if not record.cmdline:
                record.cmdline = None  # a zombie's is empty: unknown, never "" (review L1)
            record.runners_up = runners_up(ranking)
            if dry:
                self.emit(record)
                self.last_act = self.clock()
                return Acted(DRY_RUN_PAUSE)
            # Emitted once its memory is measured (Emergency.follow, then
            # Monitor.emit_followed), about a second from now, by a later check:
            # nothing here waits for it.
            keys = [(c.pid, c.starttime) for c in (victim.candidate, *victim.group)]
            self.progress.killed(self.last_act, keys, record.expected_kib, worth(fresh_mem),
                                 record)
            return Acted(0.0, signalled=True)
        log.warning(f"memory emergency ({fresh.reason}): every candidate refused the signal")
        return Acted(NO_VICTIM_PAUSE)

    def gate_for(self, decision: Decision, mem: MemInfo, victim: Victim,
                 cands: list[Candidate], machine: MemInfo) -> Gate:
        """Return whether killing ``victim`` now may help (progress.Progress.gate).

        The shortfall is measured to the levels that end the emergency: the
        terminate levels of the memory rule, --psi-mem for a pressure kill.
        Every candidate counts towards what all together could free, the
        protected ones too (an upper bound, read without any I/O). The memory
        outside processes is the ``machine``'s (meminfo names none for a cgroup:
        with --cgroup only the measurement of each kill stops kills in vain).
        """
        t = thresholds(self.cfg, mem)
        if decision.cause == "pressure":
            short = shortfall(mem, t.psi_mem, float("inf"))
        else:
            short = shortfall(mem, t.mem_term, t.swap_term)
        return self.progress.gate(self.clock(), short, victim_kib(victim),
                                  sum(expected_kib(c) for c in cands),
                                  machine.outside if self.cgroup is None else 0)

    def held_back_for(self, decision: Decision, gate: Gate) -> float:
        """Say why no kill is made now (once per kind until memory recovers); return the pause.

        While the last kill's memory is coming back, look again soon; when the
        kills cannot help or were in vain, say once what holds the memory
        (held.py: read only now, with no signal to send) and look again each
        NO_VICTIM_PAUSE, so a new emergency a kill can end (a grower) is still
        acted on within a second.
        """
        if gate.kind == "hold":
            self.log.debug(f"memory emergency ({decision.reason}): {gate.why}")
            return MIN_SLEEP
        if gate.kind not in self.held_back:
            self.held_back.add(gate.kind)
            where = ""
            if gate.kind in ("cannot", "backoff"):
                from .held import held_text, read_held
                try:
                    where = "; memory held outside processes: " + held_text(read_held(self.fs))
                except (OSError, ValueError) as err:
                    where = f"; what holds the memory is unknown ({err})"
            self.log.warning(f"memory emergency ({decision.reason}); not killing: "
                             f"{gate.why}{where}")
        return max(MIN_SLEEP, min(gate.wait or NO_VICTIM_PAUSE, NO_VICTIM_PAUSE))

    def make_record(self, victim: Victim, decision: Decision, reading: Reading, dry: bool,
                    wakeup: Wakeup) -> KillRecord:
        """Return the KillRecord of ``victim`` for ``decision`` (``dry``: not signalled).

        The victim's status is read again here, just before the signal: the
        sample's sizes are up to a check old, and a grower may have grown much
        since; the record's sizes are the ones every output reports and the
        kill's ``expected_kib`` (what progress.py measures it against) is taken
        from them.
        """
        from .record import KillRecord
        c, d = victim.candidate, victim.details
        # Its sizes now (status only: no smaps_rollup on the kill path, issue 13);
        # if they cannot be read, those of the sample.
        choose.size(self.fs, c, self.shared)
        cfg = self.cfg
        record = KillRecord(self.wall(), c, d.uid, d.oom_score_adj, d.exe, c.rss_kib,
                            c.swap_kib, cfg.rank, decision.reason, decision.signal, reading, dry,
                            decision.cause)
        record.woken_by = wakeup.by
        record.group = [member.pid for member in victim.group]
        record.cgroup = victim.cgroup
        if cfg.kill_cgroup:
            # What would happen; kill_victim says what did.
            record.cgroup_whole = bool(victim.cgroup) and not victim.blocked
            record.cgroup_note = victim.blocked
            if record.cgroup_whole:
                record.signal = sig.SIGKILL  # cgroup.kill knows no other
        return record

    def kill_victim(self, victim: Victim, record: KillRecord, first: int,
                    wakeup: Wakeup) -> str:
        """Signal the victim (and its group) with ``first`` and fill ``record``.

        With --kill-cgroup its cgroup is killed whole (cgroup.kill, SIGKILL)
        when that may be done; else its killable members get ``first``.

        Returns "killed"; "gone" (it exited or its PID was recycled before
        the signal); "refused" (the kernel denied every way to signal it:
        said once, then passed over for good); or "failed" (it could not be
        checked or signalled now, e.g. ENOMEM: nothing was sent).
        """
        from . import kill
        fs, cfg, log = self.fs, self.cfg, self.log
        c = victim.candidate
        targets = [kill.Target(p.pid, p.starttime) for p in [c, *victim.group]]
        whole = victim.cgroup if cfg.kill_cgroup and not victim.blocked else ""
        record.reaction_s = self.clock() - wakeup.at
        if whole:
            rules = self.rules
            outcome = kill.signal_targets(
                fs, targets, first, cfg.grace, self.clock, cgroup=whole,
                self_pid=self.self_pid,
                vet=lambda pids: choose.vet_members(fs, rules, pids, c.pid, {})[1])
        else:
            outcome = kill.signal_targets(fs, targets, first, cfg.grace, self.clock)
        if cfg.kill_cgroup:
            record.cgroup_whole = bool(whole) and not outcome.cgroup_note
            record.cgroup_note = outcome.cgroup_note or victim.blocked
        main = outcome.targets[0]
        for t in outcome.targets:
            if t.note and t.state in (kill.EXITED, kill.DYING):
                log.info(f"pid={t.pid} signalled with kill(), not a pidfd: {t.note}")
            if t.state == kill.REFUSED:
                self.refused.add((t.pid, t.starttime))
                log.warning(f"cannot signal pid={t.pid} ({t.why}): passing over it")
            elif t.state in (kill.GONE, kill.FAILED) and t is not main:
                log.warning(f"not signalled: pid={t.pid}: {t.why}")
        if not outcome.signalled:
            if main.state == kill.REFUSED:
                return "refused"
            log.warning(f"not signalled: pid={main.pid}: {main.why}")
            return "gone" if main.state == kill.GONE else "failed"
        self.last_act = self.clock()
        self.kills += 1
        for t in outcome.having(kill.DYING):
            # Frozen or in uninterruptible sleep: remembered, never chosen or
            # waited on again, let go once it has exited (issue 10, defect 2).
            self.dying[(t.pid, t.starttime)] = t
        record.major_faults = (own_major_faults() - wakeup.faults
                               if wakeup.faults >= 0 else -1)
        record.signal, record.exit_s = outcome.last, outcome.took
        record.exited = main.state == kill.EXITED
        record.mrelease = main.mrelease
        record.problems = [f"pid={t.pid}: {t.why}" for t in outcome.targets if t.why]
        return "killed"

    def cmdline_of(self, c: Candidate) -> BackgroundRead | None:
        """Start reading ``c``'s command line in the background, at most one at a time.

        A read for the same process is reused; while a read of another one
        still hangs (on that process's memory lock, issue 10) none starts and
        None is returned, so a dry run deciding every second cannot pile up
        threads.
        """
        key = (c.pid, c.starttime)
        current = self.cmdline_read
        if current is not None and current[0] == key:
            return current[1]
        if current is not None and not current[1].done():
            return None
        pending = self.fs.read_pid_later(c.pid, "cmdline")
        self.cmdline_read = (key, pending)
        return pending

    def forget_refused(self) -> None:
        """Forget refusing processes that have exited (their PID may be reused)."""
        from .process import read_starttime
        from .procfs import NoSuchProcess
        for pid, start in list(self.refused):
            try:
                alive = read_starttime(self.fs, pid) == start
            except (NoSuchProcess, ValueError):
                alive = False
            if not alive:
                self.refused.discard((pid, start))

    def forget_dead(self) -> None:
        """Let go of remembered dying victims that have exited (never blocks)."""
        from . import kill
        for key, t in list(self.dying.items()):
            if kill.exited(self.fs, t):
                kill.close_pidfd(t)
                del self.dying[key]


def reading(cfg: Config, mem: MemInfo, stall: Stall, zram: list[Zram]) -> Reading:
    """Return the Reading a record carries (``zram``: the devices last read)."""
    from .record import Reading
    return Reading(mem.available, mem.total, mem.swap_free, mem.swap_total,
                   sum(z.mem_used_kib for z in zram), stall.percent, stall.seconds,
                   cfg.psi_metric)


def victim_kib(victim: Victim) -> int:
    """Return what killing ``victim`` (with the group signalled with it) is expected to free."""
    return sum(expected_kib(c) for c in (victim.candidate, *victim.group))


def runners_up(ranking: choose.Ranking) -> list[Candidate]:
    """Return the next RUNNERS_UP candidates of ``ranking``, for the record.

    This advances the Ranking, so it is called after the signal (or the
    decision not to send one): it reads the details of up to RUNNERS_UP
    more processes, which must never delay a kill.
    """
    out: list[Candidate] = []
    while len(out) < RUNNERS_UP:
        v = ranking.next()
        if v is None:
            break
        out.append(v.candidate)
    return out
