"""The loop: pure decisions, an adaptive interval, an injected clock.

Contract: each check reads MemInfo (and PSI when memory is low enough for
pressure to matter), asks the pure :func:`decide` whether to act, and sleeps
for :func:`sleep_for` seconds, or until the kernel's PSI trigger fires. When
acting, it picks a victim, re-reads memory (doing nothing if the emergency has
passed), signals through a pidfd and waits for the exit; the next decision
starts from fresh readings, so one emergency costs one kill unless memory is
still short.
"""

from __future__ import annotations

import errno
import os
import select

from . import kill, sig
from .config import Config
from .log import Log, safe, size
from .meminfo import MemInfo, read_meminfo
from .pressure import StallMeter, arm_trigger, read_pressure
from .process import Candidate, Details, read_details, scan
from .procfs import NoSuchProcess, ProcFS
from .victim import Rules, protected, rank

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from typing import Callable

__all__ = ["Decision", "Thresholds", "Victim", "decide", "find_victim", "Monitor",
           "sleep_for", "thresholds"]

# Fill rates assumed when sleeping in proportion to headroom (as earlyoom):
# RAM can be filled at about 6 GB/s, swap at about 800 MB/s.
MEM_FILL_KIB_S = 6000 * 1024
SWAP_FILL_KIB_S = 800 * 1024
MIN_SLEEP = 0.1
MAX_SLEEP_POLLING = 1.0  # without a PSI trigger: earlyoom's once a second
MAX_SLEEP_TRIGGER = 10.0  # a stall wakes the daemon anyway
DRY_RUN_PAUSE = 1.0  # a dry run changes nothing: do not repeat it 10 times a second
NO_VICTIM_PAUSE = 1.0  # nothing killable: do not rescan 10 times a second


class Thresholds:
    """Resolved thresholds in KiB for one MemInfo reading."""

    __slots__ = ("mem_term", "mem_kill", "swap_term", "swap_kill", "psi_mem")

    def __init__(self, mem_term: float, mem_kill: float, swap_term: float,
                 swap_kill: float, psi_mem: float) -> None:
        self.mem_term = mem_term
        self.mem_kill = mem_kill
        self.swap_term = swap_term
        self.swap_kill = swap_kill
        self.psi_mem = psi_mem


def _lower(percent: float, total: int, kib: int | None) -> float:
    value = total * percent / 100.0
    return value if kib is None else min(value, float(kib))


def thresholds(cfg: Config, mem: MemInfo) -> Thresholds:
    """Return the thresholds for ``mem``: percent and absolute forms, the lower wins."""
    return Thresholds(
        _lower(cfg.mem_term_percent, mem.total, cfg.mem_term_kib),
        _lower(cfg.mem_kill_percent, mem.total, cfg.mem_kill_kib),
        _lower(cfg.swap_term_percent, mem.swap_total, cfg.swap_term_kib),
        _lower(cfg.swap_kill_percent, mem.swap_total, cfg.swap_kill_kib),
        mem.total * cfg.psi_mem_percent / 100.0)


class Decision:
    """What to do now: the first signal to send and why."""

    __slots__ = ("signal", "reason")

    def __init__(self, signum: int, reason: str) -> None:
        self.signal = signum
        self.reason = reason

    def __repr__(self) -> str:
        return f"Decision({sig.name(self.signal)}, {self.reason!r})"


def _pct(part: float, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "0%"


def _mem_reason(mem: MemInfo, mem_limit: float, swap_limit: float) -> str:
    swap = (f"SwapFree {size(mem.swap_free)} ({_pct(mem.swap_free, mem.swap_total)}) "
            f"<= {size(swap_limit)}" if mem.swap_total else "no swap")
    return (f"MemAvailable {size(mem.available)} ({_pct(mem.available, mem.total)}) "
            f"<= {size(mem_limit)}, {swap}")


def decide(mem: MemInfo, stall: float | None, cfg: Config) -> Decision | None:
    """Return the Decision for one reading, or None when all is well.

    SIGKILL when MemAvailable and SwapFree are both at their kill levels;
    SIGTERM when both are at their terminate levels (no swap counts as none
    free), or when the stall percentage ``stall`` reaches ``psi_cutoff``
    while MemAvailable is at or below ``psi_mem_percent``: pressure alone
    never kills while memory is plentiful.
    """
    t = thresholds(cfg, mem)
    if mem.available <= t.mem_kill and mem.swap_free <= t.swap_kill:
        return Decision(sig.SIGKILL, _mem_reason(mem, t.mem_kill, t.swap_kill))
    if mem.available <= t.mem_term and mem.swap_free <= t.swap_term:
        return Decision(sig.SIGTERM, _mem_reason(mem, t.mem_term, t.swap_term))
    if (cfg.psi_cutoff > 0 and stall is not None and stall >= cfg.psi_cutoff
            and mem.available <= t.psi_mem):
        return Decision(sig.SIGTERM, (
            f"memory {cfg.psi_metric} stall {stall:.0f}% >= {cfg.psi_cutoff:g}% with "
            f"MemAvailable {size(mem.available)} ({_pct(mem.available, mem.total)}) "
            f"<= {cfg.psi_mem_percent:g}%"))
    return None


def sleep_for(mem: MemInfo, cfg: Config, trigger_armed: bool) -> float:
    """Return seconds until the next check, in proportion to the headroom.

    Both MemAvailable and SwapFree must fall for a kill, so the time to
    reach the thresholds is the sum of both headrooms over their fill rates.
    At least MIN_SLEEP; at most 1 s when polling, or when memory is low enough
    for pressure to count (the stall rate must be sampled); at most 10 s while
    a PSI trigger stands guard.
    """
    t = thresholds(cfg, mem)
    seconds = (max(0.0, mem.available - t.mem_term) / MEM_FILL_KIB_S
               + max(0.0, mem.swap_free - t.swap_term) / SWAP_FILL_KIB_S)
    cap = MAX_SLEEP_TRIGGER if trigger_armed and mem.available > t.psi_mem else MAX_SLEEP_POLLING
    return max(MIN_SLEEP, min(cap, seconds))


class Victim:
    """The chosen process and the others to signal with it (process group)."""

    __slots__ = ("candidate", "details", "group")

    def __init__(self, candidate: Candidate, details: Details,
                 group: list[Candidate]) -> None:
        self.candidate = candidate
        self.details = details
        self.group = group


def find_victim(fs: ProcFS, rules: Rules, kill_pgroup: bool = False,
                log: Log | None = None) -> Victim | None:
    """Scan, rank and return the best victim that is not protected, or None.

    Details are read only for the leaders, in rank order, until one may be
    killed. With ``kill_pgroup`` the other members of its process group that
    may be killed are returned with it. Raises OSError if /proc is unreadable.
    """
    candidates = scan(fs, frozenset((rules.self_pid,)))
    for c in rank(candidates, rules):
        try:
            details = read_details(fs, c.pid)
        except (NoSuchProcess, ValueError):
            continue
        why = protected(c, details, rules)
        if why is not None:
            if log is not None:
                log.debug(f"skipping pid={c.pid} name={safe(c.comm)}: {why}")
            continue
        group: list[Candidate] = []
        if kill_pgroup and c.pgrp > 1:
            for m in candidates:
                if m.pgrp != c.pgrp or m is c:
                    continue
                try:
                    if protected(m, read_details(fs, m.pid), rules) is None:
                        group.append(m)
                except (NoSuchProcess, ValueError):
                    continue
        return Victim(c, details, group)
    return None


def _compile(pattern: str) -> re.Pattern[str] | None:
    if not pattern:
        return None
    import re  # only when a regex option is set: +1 MiB RSS otherwise wasted
    return re.compile(pattern)


def make_rules(cfg: Config, self_pid: int) -> Rules:
    """Return the victim Rules of ``cfg`` (regexes compiled here)."""
    return Rules(self_pid, [g for g in cfg.unkillables.split("|") if g],
                 _compile(cfg.ignore), _compile(cfg.prefer), _compile(cfg.avoid),
                 cfg.sort_by_rss)


class Monitor:
    """The daemon's state between checks; ``run`` is the loop.

    ``clock`` returns monotonic seconds; ``wait(timeout)`` sleeps up to
    ``timeout`` seconds or until the PSI trigger has an event and returns the
    (fd, events) pairs (the real one polls with ``select.poll``), so tests
    drive the loop in simulated time.
    """

    def __init__(self, cfg: Config, fs: ProcFS, log: Log, self_pid: int,
                 clock: Callable[[], float],
                 wait: Callable[[float], list[tuple[int, int]]] | None = None) -> None:
        self.cfg = cfg
        self.fs = fs
        self.log = log
        self.clock = clock
        self.rules = make_rules(cfg, self_pid)
        self.meter = StallMeter()
        self.kills = 0
        self.last_act = -1e9
        self.stuck = False  # warned that nothing may be killed in this emergency
        self.next_report = clock() + cfg.report if cfg.report > 0 else float("inf")
        self.trigger_fd = -1
        self.trigger_window = 0.0
        self.trigger_fired = False
        self.woke = clock()  # when the current check began (reaction times)
        self.woken_by = "timer"  # or "PSI trigger"
        self.mem_fd = fs.open("meminfo")
        self.psi_fd = -1
        self._poller = select.poll()
        self._wait = wait or self._poll
        self._open_psi()

    def _open_psi(self) -> None:
        cfg = self.cfg
        if cfg.psi_cutoff <= 0:
            return
        try:
            self.psi_fd = self.fs.open("pressure/memory")
            read_pressure(self.psi_fd)
        except (OSError, ValueError) as err:
            if self.psi_fd >= 0:
                os.close(self.psi_fd)
                self.psi_fd = -1
            reason = "disabled at boot (psi=0)" if getattr(err, "errno", 0) in (
                errno.EOPNOTSUPP, errno.ENOTSUP) else str(err)
            self.log.warning(f"PSI not available ({reason}): acting on memory thresholds alone")
            return
        if not cfg.live:
            return  # a fake tree: its PSI file is no kernel's and takes no trigger
        armed = arm_trigger(self.fs.path("pressure/memory"), cfg.psi_metric, cfg.psi_cutoff)
        if armed is None:
            self.log.debug("PSI trigger not allowed here: polling")
            return
        self.trigger_fd, self.trigger_window = armed
        self._poller.register(self.trigger_fd, select.POLLPRI)

    def describe(self) -> str:
        """Return the one-line summary of what will be watched and how."""
        cfg = self.cfg
        mem = read_meminfo(self.mem_fd)
        t = thresholds(cfg, mem)
        psi = "PSI off"
        if self.psi_fd >= 0:
            psi = (f"{cfg.psi_metric} stall >= {cfg.psi_cutoff:g}% below "
                   f"{cfg.psi_mem_percent:g}% MemAvailable, ")
            psi += (f"kernel trigger {self.trigger_window:g} s window" if self.trigger_fd >= 0
                    else "polled")
        return (f"SIGTERM at MemAvailable <= {size(t.mem_term)} and SwapFree <= "
                f"{size(t.swap_term)}; SIGKILL at {size(t.mem_kill)} and {size(t.swap_kill)}"
                f"; {psi}{'; DRY RUN' if cfg.dry_run else ''}")

    def _poll(self, timeout: float) -> list[tuple[int, int]]:
        return self._poller.poll(max(1, int(timeout * 1000)))

    def stall(self, mem: MemInfo, now: float) -> float | None:
        """Return the stall percentage to decide on, or None.

        PSI is read only when memory is low enough for pressure to count.
        A trigger event vouches for a stall of at least the cutoff over its
        window, unless that window reaches back before the last kill.
        """
        if self.psi_fd < 0 or mem.available > thresholds(self.cfg, mem).psi_mem:
            self.meter.reset()
            return None
        try:
            psi = read_pressure(self.psi_fd)
        except (OSError, ValueError) as err:
            # Said once: from now on memory thresholds alone decide.
            self.log.warning(f"cannot read pressure/memory ({err}): "
                             "acting on memory thresholds alone from now on")
            os.close(self.psi_fd)
            self.psi_fd = -1
            return None
        self.meter.add(now, psi.total(self.cfg.psi_metric))
        stall = self.meter.percent()
        if self.trigger_fired and now - self.last_act >= self.trigger_window:
            stall = max(stall or 0.0, self.cfg.psi_cutoff)
        return stall

    def check(self) -> float:
        """Run one check (and act if needed); return seconds to sleep."""
        now = self.woke = self.clock()
        self.woken_by = "PSI trigger" if self.trigger_fired else "timer"
        mem = read_meminfo(self.mem_fd)
        stall = self.stall(mem, now)
        self.trigger_fired = False
        decision = decide(mem, stall, self.cfg)
        pause = 0.0
        if decision is None:
            self.stuck = False
        else:
            pause = self.act(decision, stall)
            mem = read_meminfo(self.mem_fd)
        now = self.clock()
        if now >= self.next_report:
            self.report(mem, stall)
            self.next_report = now + self.cfg.report
        return max(pause, min(sleep_for(mem, self.cfg, self.trigger_fd >= 0),
                              max(MIN_SLEEP, self.next_report - now)))

    def report(self, mem: MemInfo, stall: float | None) -> None:
        """Log the periodic status line."""
        stall_text = "" if stall is None else f", {self.cfg.psi_metric} stall {stall:.0f}%"
        swap = (f"{size(mem.swap_free)} of {size(mem.swap_total)}" if mem.swap_total
                else "no swap")
        self.log.info(f"status: MemAvailable {size(mem.available)} of {size(mem.total)} "
                      f"({_pct(mem.available, mem.total)}), SwapFree {swap}{stall_text}, "
                      f"kills {self.kills}")

    def act(self, decision: Decision, stall: float | None) -> float:
        """Pick a victim and kill it (or log it in a dry run).

        Returns a minimum pause before the next check.
        """
        log, cfg = self.log, self.cfg
        victim = find_victim(self.fs, self.rules, cfg.kill_pgroup, log)
        if victim is None:
            if not self.stuck:  # once per emergency, not once a second
                log.warning(f"memory emergency ({decision.reason}) but no process may be killed")
                self.stuck = True
            return NO_VICTIM_PAUSE
        # The scan took time: decide again on fresh memory figures.
        fresh = decide(read_meminfo(self.mem_fd), stall, cfg)
        if fresh is None:
            log.info("memory recovered before the kill: nothing done")
            return 0.0
        c, d = victim.candidate, victim.details
        signum = fresh.signal
        who = (f"pid={c.pid} name={safe(c.comm)} uid={d.uid} rss={size(d.rss_kib)} "
               f"oom_score={c.oom_score} oom_score_adj={d.oom_score_adj}")
        group = f" with {len(victim.group)} more of its group" if victim.group else ""
        if cfg.dry_run or not cfg.live:
            log.warning(f"dry run: would kill {who}{group} with "
                        f"{sig.name(signum)}: {fresh.reason}")
            self.last_act = self.clock()
            return DRY_RUN_PAUSE
        targets = [kill.Target(m.pid, m.starttime) for m in [c, *victim.group]]
        reaction = self.clock() - self.woke
        problems, last, took, exited = kill.signal_and_wait(
            self.fs, targets, signum, cfg.grace, self.clock)
        self.last_act = self.clock()
        self.meter.reset()
        for problem in problems:
            log.warning(f"not signalled: {problem}")
        if len(problems) == len(targets):
            return 0.0
        self.kills += 1
        outcome = f"exited after {took:.2f} s" if exited else f"still alive after {took:.2f} s"
        cmdline = safe(d.cmdline.replace(b"\0", b" "))
        log.warning(f"kill: {who}{group} signal={sig.name(last)} "
                    f"{outcome}; reaction={reaction * 1000:.0f} ms after {self.woken_by} "
                    f"wakeup; reason: {fresh.reason}; cmdline={cmdline}")
        return 0.0

    def run(self) -> None:
        """Check, sleep, repeat; returns only by exception (e.g. SystemExit)."""
        while True:
            try:
                timeout = self.check()
            except OSError as err:
                # A transient /proc failure must not end the only guard
                # against a freeze: say so and try again shortly.
                self.log.error(f"check failed: {err}")
                timeout = NO_VICTIM_PAUSE
            events = self._wait(timeout)
            for fd, ev in events:
                if fd == self.trigger_fd:
                    if ev & (select.POLLERR | select.POLLNVAL):
                        self.log.warning("PSI trigger failed: polling from now on")
                        self._poller.unregister(fd)
                        os.close(fd)
                        self.trigger_fd = -1
                    else:
                        self.trigger_fired = True
