"""What bustd does once memory runs short: sample, rank, warn, act and record.

Functions of the :class:`~bustd.monitor.Monitor` (passed as ``m``) that only
run in the watch zone or in an emergency. Like choose.py, kill.py and
record.py, this module is loaded when memory first enters the watch zone
(``Monitor.arm`` then the rehearsal touch it), so a machine with memory to
spare never holds it: the idle footprint is that of the loop alone.

``act`` ranks the candidates (victim.py), re-reads memory (doing nothing if
the emergency has passed), runs the pre-kill callables, signals through a
pidfd (kill.py) and hands one KillRecord to every output. A victim that
refuses the signal is passed over and the next tried in the same check; one
that survives SIGKILL is remembered in ``m.dying`` and never chosen again
while it dies.
"""

from __future__ import annotations

from . import sig
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
    from . import choose
    from .log import Log
    from .meminfo import MemInfo
    from .monitor import Monitor
    from .process import Candidate
    from .procfs import BackgroundRead
    from .progress import Gate
    from .record import KillRecord, Reading
    from .victim import Victim

__all__ = ["RUNNERS_UP", "WARN_EVERY", "act", "gate_for", "held_back", "rehearse", "sample",
           "victim_kib", "warn"]

RUNNERS_UP = 3  # candidates named after the victim in the kill line
# Longest wait for the victim's command line before the signal, without a
# pre-kill hook (which waits for it itself): the read takes microseconds,
# more only while the victim's mmap_lock is held (issue 10).
CMDLINE_HEAD_START = 0.002
WARN_EVERY = 60.0  # seconds at least between two warnings, even after a recovery


def sample(m: Monitor, now: float) -> list[Candidate]:
    """Scan, sample the sizes of the largest processes, return the candidates."""
    from . import choose
    m.load_watch_code()
    assert m.tracker is not None and m.rules is not None and m.shared is not None
    if m.dying:
        forget_dead(m)
    if m.passed:
        forget_passed(m)
    exclude = m.passed | set(m.dying)
    if m.cgroup is None:
        cands = choose.sample(m.fs, m.tracker, now, frozenset((m.self_pid,)), exclude,
                              m.rules.shifts, shared=m.shared)
        m.shared.refresh(cands, now)
        return cands
    # --cgroup: only the subtree's processes, each with the cgroup holding it.
    try:
        leaves = (m.units or m.units_for_kill()).subtree(m.cgroup.path)
    except (OSError, ValueError) as err:
        m.log.debug(f"cannot list the processes of cgroup {m.cgroup.path}: {err}")
        return []
    cands = choose.sample(m.fs, m.tracker, now, frozenset((m.self_pid,)), exclude,
                          m.rules.shifts, sorted(leaves), m.shared)
    m.shared.refresh(cands, now)
    for c in cands:
        c.cgroup = leaves.get(c.pid, "")
    return cands


def ranked(m: Monitor, cands: list[Candidate], log: Log | None = None) -> choose.Ranking:
    """Return the candidates in kill order (growth priced by the machine's totals)."""
    from .choose import Ranking, oom_score_per_kib
    assert m.rules is not None
    cfg = m.cfg
    # oom_score is the kernel's badness against the machine's RAM + swap,
    # with --cgroup too: growth is priced in the same units.
    return Ranking(m.fs, cands, m.rules, oom_score_per_kib(m.machine, m.scaled),
                   cfg.kill_pgroup, log, m.units, cfg.kill_cgroup, m.shared, m.need_kib)


def rehearse(m: Monitor, cands: list[Candidate]) -> None:
    """Walk the kill path once without signalling anyone (issue 10).

    Run on entering the watch zone, while memory is still to spare: the
    ranking, the details of a leader, the record and its line, the
    background cmdline read and the pidfd calls (against bustd itself,
    with signal 0) all touch their code now, so under mlockall the
    emergency finds them resident instead of faulting them in from disk.
    """
    from . import kill
    from .record import WarnRecord, kill_line, warn_line
    assert m.rules is not None
    mem = m.read_mem()
    ranking = ranked(m, cands)
    victim = ranking.next()
    if victim is not None:
        record = make_record(m, victim, Decision(sig.SIGTERM, "rehearsal"),
                             reading(m, mem, Stall(None, 0.0, None)), True)
        record.cmdline = m.fs.read_pid_later(m.self_pid, "cmdline").result(0.05)
        record.runners_up = runners_up(ranking)
        kill_line(record)
        record.dry_run = False
        kill_line(record)
        warn_line(WarnRecord(record.time, "memory", "rehearsal", record.reading,
                             victim.candidate, record.uid, record.exe))
    kill.rehearse(m.fs, m.self_pid, m.clock)


def warn(m: Monitor, mem: MemInfo, stall: Stall, cands: list[Candidate], now: float) -> None:
    """Emit a WarnRecord naming the likely victim when :func:`warning` says so.

    Said once, then again only after memory has left the watch zone and
    at least WARN_EVERY seconds later (a machine hovering at the level
    would otherwise warn at every check).
    """
    found = warning(mem, stall.percent, m.cfg)
    if found is None or now - m.last_warn < WARN_EVERY:
        return
    from .record import WarnRecord
    ranking = ranked(m, cands)
    victim = ranking.next()
    record = WarnRecord(m.wall(), found.cause, found.reason,
                        reading(m, mem, stall),
                        victim.candidate if victim else None,
                        victim.details.uid if victim else -1,
                        victim.details.exe if victim else b"")
    record.runners_up = runners_up(ranking)
    from .held import read_held
    try:
        held = read_held(m.fs)
    except (OSError, ValueError):
        held = None
    if held is not None and held.significant():
        record.held = held  # "a 5 GiB file in /dev/shm", not just "memory is short"
    m.warned = True
    m.last_warn = now
    m.emit(record)


def reading(m: Monitor, mem: MemInfo, stall: Stall) -> Reading:
    """Return the Reading a record carries."""
    from .record import Reading
    return Reading(mem.available, mem.total, mem.swap_free, mem.swap_total,
                   sum(z.mem_used_kib for z in m.zram), stall.percent, stall.seconds,
                   m.cfg.psi_metric)


def act(m: Monitor, decision: Decision, stall: Stall,
        cands: list[Candidate] | None = None) -> float:
    """Pick a victim and kill it (or log it in a dry run).

    A victim that refuses the signal (EPERM: another user's process, an
    LSM) is passed over, said once, and the next one tried in the same
    check. Returns a minimum pause before the next check.
    """
    from .record import candidate_text
    log, cfg = m.log, m.cfg
    if cands is None:
        cands = sample(m, m.clock())
    assert m.rules is not None
    ranking = ranked(m, cands, log)
    victim = ranking.next()
    if victim is None:
        if not m.stuck:  # once per emergency, not once a second
            log.warning(f"memory emergency ({decision.reason}) but no process may be killed")
            m.stuck = True
        return NO_VICTIM_PAUSE
    if log.verbose:
        log.debug("candidates: " + "; ".join(candidate_text(c) for c in ranking.ranked[:6]))
    # The scan took time: decide again on fresh memory figures.
    fresh_mem = m.read_mem(zram=True)
    fresh = decide(fresh_mem, stall.percent, cfg, stall.seconds, stall.swapin, stall.swapout)
    if fresh is None:
        log.info("memory recovered before the kill: nothing done")
        return 0.0
    gate = gate_for(m, fresh, fresh_mem, victim, cands)
    if not gate.kill:
        return held_back(m, fresh, gate)
    dry = m.dry
    while victim is not None:
        pending = cmdline_of(m, victim.candidate)
        if pending is not None and not m.pre_kill:
            # A victim that dies at once leaves a zombie with an empty command
            # line (review L1): give the read, a few microseconds unless the
            # victim's memory lock is held, this long before the signal.
            pending.result(CMDLINE_HEAD_START)
        record = make_record(m, victim, fresh, reading(m, fresh_mem, stall), dry)
        record.expected_kib = victim_kib(victim)
        for hook in m.pre_kill:  # each bounds its own wait (--hook-timeout)
            m._call(hook, record, pending)
        outcome = "dry" if dry else kill_victim(m, victim, record, fresh.signal)
        if outcome == "refused":
            victim = ranking.next()  # said once by _kill; the next one now
            continue
        if outcome == "gone":
            return 0.0  # it exited by itself: decide again on fresh readings
        if outcome == "failed":
            return MIN_SLEEP  # nothing sent (ENOMEM, no descriptor): try again soon
        record.cmdline = None if pending is None else pending.result(0.05 if dry else 0.1)
        if not record.cmdline:
            record.cmdline = None  # a zombie's is empty: unknown, never "" (review L1)
        record.runners_up = runners_up(ranking)
        if dry:
            m.emit(record)
            m.last_act = m.clock()
            return DRY_RUN_PAUSE
        # Emitted once its memory is measured (Monitor.follow), about a second
        # from now, by a later check: nothing here waits for it.
        keys = [(c.pid, c.starttime) for c in (victim.candidate, *victim.group)]
        assert m.progress is not None
        m.progress.killed(m.last_act, keys, record.expected_kib, worth(fresh_mem), record)
        return 0.0
    log.warning(f"memory emergency ({fresh.reason}): every candidate refused the signal")
    return NO_VICTIM_PAUSE


def victim_kib(victim: Victim) -> int:
    """Return what killing ``victim`` (with the group signalled with it) is expected to free."""
    return sum(expected_kib(c) for c in (victim.candidate, *victim.group))


def gate_for(m: Monitor, decision: Decision, mem: MemInfo, victim: Victim,
             cands: list[Candidate]) -> Gate:
    """Return whether killing ``victim`` now may help (progress.Progress.gate).

    The shortfall is measured to the levels that end the emergency: the
    terminate levels of the memory rule, --psi-mem for a pressure kill.
    Every candidate counts towards what all together could free, the
    protected ones too (an upper bound, read without any I/O). The memory
    outside processes is the machine's (meminfo names none for a cgroup:
    with --cgroup only the measurement of each kill stops kills in vain).
    """
    t = thresholds(m.cfg, mem)
    if decision.cause == "pressure":
        short = shortfall(mem, t.psi_mem, float("inf"))
    else:
        short = shortfall(mem, t.mem_term, t.swap_term)
    assert m.progress is not None  # made by m.load_watch_code(), as the rules are
    return m.progress.gate(m.clock(), short, victim_kib(victim),
                           sum(expected_kib(c) for c in cands),
                           m.machine.outside if m.cgroup is None else 0)


def held_back(m: Monitor, decision: Decision, gate: Gate) -> float:
    """Say why no kill is made now (once per kind until memory recovers); return the pause.

    While the last kill's memory is coming back, look again soon; when the
    kills cannot help or were in vain, say once what holds the memory
    (held.py: read only now, with no signal to send) and look again each
    NO_VICTIM_PAUSE, so a new emergency a kill can end (a grower) is still
    acted on within a second.
    """
    if gate.kind == "hold":
        m.log.debug(f"memory emergency ({decision.reason}): {gate.why}")
        return MIN_SLEEP
    if gate.kind not in m.held_back:
        m.held_back.add(gate.kind)
        where = ""
        if gate.kind in ("cannot", "backoff"):
            from .held import held_text, read_held
            try:
                where = "; memory held outside processes: " + held_text(read_held(m.fs))
            except (OSError, ValueError) as err:
                where = f"; what holds the memory is unknown ({err})"
        m.log.warning(f"memory emergency ({decision.reason}); not killing: {gate.why}{where}")
    return max(MIN_SLEEP, min(gate.wait or NO_VICTIM_PAUSE, NO_VICTIM_PAUSE))


def make_record(m: Monitor, victim: Victim, decision: Decision, reading: Reading,
                dry: bool) -> KillRecord:
    """Return the KillRecord of ``victim`` for ``decision`` (``dry``: not signalled).

    The victim's status is read again here, just before the signal: the
    sample's sizes are up to a check old, and a grower may have grown much
    since; the record's sizes are the ones every output reports and the
    kill's ``expected_kib`` (what progress.py measures it against) is taken
    from them.
    """
    from .choose import size
    from .record import KillRecord
    c, d = victim.candidate, victim.details
    # Its sizes now (status only: no smaps_rollup on the kill path, issue 13);
    # if they cannot be read, those of the sample.
    size(m.fs, c, m.shared)
    record = KillRecord(m.wall(), c, d.uid, d.oom_score_adj, d.exe, c.rss_kib, c.swap_kib,
                        m.cfg.rank, decision.reason, decision.signal, reading, dry,
                        decision.cause)
    record.woken_by = m.woken_by
    record.group = [member.pid for member in victim.group]
    record.cgroup = victim.cgroup
    if m.cfg.kill_cgroup:
        # What would happen; _kill says what did.
        record.cgroup_whole = bool(victim.cgroup) and not victim.blocked
        record.cgroup_note = victim.blocked
        if record.cgroup_whole:
            record.signal = sig.SIGKILL  # cgroup.kill knows no other
    return record


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


def kill_victim(m: Monitor, victim: Victim, record: KillRecord, first: int) -> str:
    """Signal the victim (and its group) with ``first`` and fill ``record``.

    With --kill-cgroup its cgroup is killed whole (cgroup.kill, SIGKILL)
    when that may be done; else its killable members get ``first``.

    Returns "killed"; "gone" (it exited or its PID was recycled before
    the signal); "refused" (the kernel denied every way to signal it:
    said once, then passed over for good); or "failed" (it could not be
    checked or signalled now, e.g. ENOMEM: nothing was sent).
    """
    from . import choose, kill
    c = victim.candidate
    targets = [kill.Target(p.pid, p.starttime) for p in [c, *victim.group]]
    whole = victim.cgroup if m.cfg.kill_cgroup and not victim.blocked else ""
    record.reaction_s = m.clock() - m.woke
    if whole:
        rules = m.rules
        assert rules is not None
        outcome = kill.signal_targets(
            m.fs, targets, first, m.cfg.grace, m.clock, cgroup=whole, self_pid=m.self_pid,
            vet=lambda pids: choose.vet_members(m.fs, rules, pids, c.pid, {})[1])
    else:
        outcome = kill.signal_targets(m.fs, targets, first, m.cfg.grace, m.clock)
    if m.cfg.kill_cgroup:
        record.cgroup_whole = bool(whole) and not outcome.cgroup_note
        record.cgroup_note = outcome.cgroup_note or victim.blocked
    main = outcome.targets[0]
    for t in outcome.targets:
        if t.note and t.state in (kill.EXITED, kill.DYING):
            m.log.info(f"pid={t.pid} signalled with kill(), not a pidfd: {t.note}")
        if t.state == kill.REFUSED:
            m.passed.add((t.pid, t.starttime))
            m.log.warning(f"cannot signal pid={t.pid} ({t.why}): passing over it")
        elif t.state in (kill.GONE, kill.FAILED) and t is not main:
            m.log.warning(f"not signalled: pid={t.pid}: {t.why}")
    if not outcome.signalled:
        if main.state == kill.REFUSED:
            return "refused"
        m.log.warning(f"not signalled: pid={main.pid}: {main.why}")
        return "gone" if main.state == kill.GONE else "failed"
    m.last_act = m.clock()
    m.reset_stall()
    m.kills += 1
    for t in outcome.having(kill.DYING):
        # Frozen or in uninterruptible sleep: remembered, never chosen or
        # waited on again, let go once it has exited (issue 10, defect 2).
        m.dying[(t.pid, t.starttime)] = t
    record.major_faults = (own_major_faults() - m.faults_at_wake
                           if m.faults_at_wake >= 0 else -1)
    record.signal, record.exit_s = outcome.last, outcome.took
    record.exited = main.state == kill.EXITED
    record.mrelease = main.mrelease
    record.problems = [f"pid={t.pid}: {t.why}" for t in outcome.targets if t.why]
    return "killed"


def cmdline_of(m: Monitor, c: Candidate) -> BackgroundRead | None:
    """Start reading ``c``'s command line in the background, at most one at a time.

    A read for the same process is reused; while a read of another one
    still hangs (on that process's memory lock, issue 10) none starts and
    None is returned, so a dry run deciding every second cannot pile up
    threads.
    """
    key = (c.pid, c.starttime)
    current = m.reading_cmdline
    if current is not None and current[0] == key:
        return current[1]
    if current is not None and not current[1].done():
        return None
    pending = m.fs.read_pid_later(c.pid, "cmdline")
    m.reading_cmdline = (key, pending)
    return pending


def forget_passed(m: Monitor) -> None:
    """Forget refusing processes that have exited (their PID may be reused)."""
    from .process import read_starttime
    from .procfs import NoSuchProcess
    for pid, start in list(m.passed):
        try:
            alive = read_starttime(m.fs, pid) == start
        except (NoSuchProcess, ValueError):
            alive = False
        if not alive:
            m.passed.discard((pid, start))


def forget_dead(m: Monitor) -> None:
    """Let go of remembered dying victims that have exited (never blocks)."""
    from . import kill
    for key, t in list(m.dying.items()):
        if kill.exited(m.fs, t):
            kill.close_pidfd(t)
            del m.dying[key]
