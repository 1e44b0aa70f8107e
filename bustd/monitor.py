"""The loop: pure decisions, an adaptive interval, an injected clock.

Contract: each check reads MemInfo. While memory is in the watch zone (a
little above the levels that act, or for a while after a PSI trigger event)
it also reads PSI, zram's real RAM use and the sizes of the largest
processes, so that a decision knows how long the machine has stalled and who
grew recently. The pure :func:`decide` says whether to act; :func:`sleep_for`
how long to sleep (or until the kernel's PSI trigger fires). When acting, it
ranks the candidates (victim.py), re-reads memory (doing nothing if the
emergency has passed), signals through a pidfd and waits for the exit; one
:class:`~bustd.record.KillRecord` per kill goes to every output. The next
decision starts from fresh readings, so one emergency costs one kill unless
memory is still short.

Outputs (the log line first; the kill log, metrics, hooks, notifications and
systemd's status, built by outputs.py) are callables in ``Monitor.outputs``:
each receives every record, a :class:`~bustd.record.KillRecord` after the
signal, a :class:`~bustd.record.WarnRecord` when :func:`warning` says a kill
may come soon, and a :class:`Check` at the end of every check, and keeps
what it wants (``record.kind``). Nothing an output does sits between the
emergency and the signal, except the callables in ``Monitor.pre_kill`` (the
pre-kill hook), which bound their own wait.
"""

from __future__ import annotations

import errno
import os
import select

from . import sig
from .config import DEFAULTS, Config
from .log import Log, size
from .meminfo import MemInfo, parse_pswpin, read_meminfo
from .pressure import RateMeter, StallMeter, StallRun, arm_trigger, read_pressure
from .procfs import Pending, ProcFS, own_major_faults

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, ClassVar, Literal, Protocol, Union

    from . import choose, kill
    from .cgroup import Cgroup, Figures, Units
    from .choose import Victim
    from .growth import Tracker
    from .process import Candidate
    from .procfs import Pending
    from .record import KillRecord, Reading, WarnRecord
    from .victim import Rules
    from .zram import Zram

    class Reloading(Protocol):
        """A reading of the config file under way (reload.Reload)."""

        fd: int
        deadline: float

        def read(self) -> bool: ...

        def finish(self) -> tuple[Config, str]: ...

        def cancel(self) -> None: ...

    Record = Union[KillRecord, WarnRecord, "Check"]

__all__ = ["Check", "Decision", "Monitor", "Thresholds", "decide", "sleep_for", "thresholds",
           "warning", "watch_level"]

# Fill rates assumed when sleeping in proportion to headroom (as earlyoom):
# RAM can be filled at about 6 GB/s, swap at about 800 MB/s.
MEM_FILL_KIB_S = 6000 * 1024
SWAP_FILL_KIB_S = 800 * 1024
MIN_SLEEP = 0.1
MAX_SLEEP_POLLING = 1.0  # without a PSI trigger, or in the watch zone: once a second
MAX_SLEEP_TRIGGER = 10.0  # a stall wakes the daemon anyway
DRY_RUN_PAUSE = 1.0  # a dry run changes nothing: do not repeat it 10 times a second
NO_VICTIM_PAUSE = 1.0  # nothing killable: do not rescan 10 times a second
# The watch zone reaches at least this far above the levels that act: on a
# 1 GiB machine 25 % is 250 MiB, filled in 2-3 s by a few growers, too little
# history to tell them from an idle process (VM scenario 7).
WATCH_MARGIN_KIB = 256 * 1024
LATE_WAKEUP = 5.0  # woken this much later than asked: stopped, frozen or suspended
WATCH_AFTER_EVENT = 10.0  # seconds of watching after a PSI trigger event
RUNNERS_UP = 3  # candidates named after the victim in the kill line
# Settings a reload cannot change: they shaped the process at start (its
# pid file, whether it forked, the tree its descriptors are open on, the
# outputs built once from the Config, the cgroup watched).
FIXED_AT_START = ("daemon", "pid_file", "proc_root", "notify", "notify_owner_only",
                  "pre_kill_hook", "post_kill_hook", "hook_timeout", "kill_log",
                  "metrics_file", "cgroup")
WARN_STALL = 0.5  # a stall of this share of the cutoff is "approaching" it (--warn)
WARN_EVERY = 60.0  # seconds at least between two warnings, even after a recovery


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


def watch_level(cfg: Config, mem: MemInfo) -> float:
    """Return the MemAvailable (KiB) under which bustd watches closely.

    ``--watch`` percent of MemTotal (or the ``--warn`` level, if higher), and
    at least WATCH_MARGIN_KIB above the levels that act (the terminate level
    as resolved, so an absolute ``-M`` counts as given), so every decision
    and warning has a growth history and a stall history behind it, even on
    a small machine, where a percentage is little.
    """
    t = thresholds(cfg, mem)
    return max(mem.total * max(cfg.watch_percent, cfg.warn_percent) / 100.0,
               max(t.psi_mem, t.mem_term) + WATCH_MARGIN_KIB)


PAGE_MIB = os.sysconf("SC_PAGESIZE") / (1024 * 1024)


class Stall:
    """What PSI said at one check: the stall percentage (None before a rate is
    known), how long the machine has been thrashing, and swap-ins in MiB/s
    (None without swap)."""

    __slots__ = ("percent", "seconds", "swapin")

    def __init__(self, percent: float | None, seconds: float, swapin: float | None) -> None:
        self.percent = percent
        self.seconds = seconds
        self.swapin = swapin


class Decision:
    """What to do now: the first signal to send, why, and the cause ("memory", "pressure")."""

    __slots__ = ("signal", "reason", "cause")

    def __init__(self, signum: int, reason: str, cause: str = "memory") -> None:
        self.signal = signum
        self.reason = reason
        self.cause = cause

    def __repr__(self) -> str:
        return f"Decision({sig.name(self.signal)}, {self.reason!r})"


def _pct(part: float, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "0%"


def _avail(mem: MemInfo) -> str:
    """Return what ``mem.available`` is called: a cgroup's (--cgroup) is not MemAvailable."""
    return f"cgroup {mem.scope} available" if mem.scope else "MemAvailable"


def _mem_reason(mem: MemInfo, mem_limit: float, swap_limit: float) -> str:
    avail, free = _avail(mem), "swap free" if mem.scope else "SwapFree"
    swap = (f"{free} {size(mem.swap_free)} ({_pct(mem.swap_free, mem.swap_total)}) "
            f"<= {size(swap_limit)}" if mem.swap_total else "no swap")
    return (f"{avail} {size(mem.available)} ({_pct(mem.available, mem.total)}) "
            f"<= {size(mem_limit)}, {swap}")


def decide(mem: MemInfo, stall: float | None, cfg: Config,
           stall_s: float = float("inf"), swapin: float | None = None) -> Decision | None:
    """Return the Decision for one reading, or None when all is well.

    ``mem`` carries swap at its real worth (zram counted by what it frees,
    see zram.py). SIGKILL when MemAvailable and SwapFree are both at their
    kill levels; SIGTERM when both are at their terminate levels (no swap
    counts as none free). Pressure: SIGTERM when the stall percentage
    ``stall`` is at least ``psi_cutoff``, the machine has been thrashing
    for ``stall_s >= psi_duration`` seconds (the stall at or above the
    cutoff and, with swap, pages swapped back in at ``swapin`` MiB/s, at
    least ``swapin_rate``, all along: the Monitor measures that), and
    MemAvailable is at or below ``psi_mem_percent``. So pressure alone never
    kills while memory is plentiful, and a stall the kernel resolves by
    swapping out (a program growing into zram) never kills.
    """
    t = thresholds(cfg, mem)
    if mem.available <= t.mem_kill and mem.swap_free <= t.swap_kill:
        return Decision(sig.SIGKILL, _mem_reason(mem, t.mem_kill, t.swap_kill))
    if mem.available <= t.mem_term and mem.swap_free <= t.swap_term:
        return Decision(sig.SIGTERM, _mem_reason(mem, t.mem_term, t.swap_term))
    if (cfg.psi_cutoff > 0 and stall is not None and stall >= cfg.psi_cutoff
            and stall_s >= cfg.psi_duration and mem.available <= t.psi_mem):
        held = f" for {stall_s:.1f} s" if stall_s < float("inf") else ""
        swapped = f" and swap-in {swapin:.1f} MiB/s" if swapin is not None else ""
        avail = _avail(mem)
        return Decision(sig.SIGTERM, (
            f"memory {cfg.psi_metric} stall {stall:.0f}% >= {cfg.psi_cutoff:g}%{swapped}{held} "
            f"with "
            f"{avail} {size(mem.available)} ({_pct(mem.available, mem.total)}) "
            f"<= {cfg.psi_mem_percent:g}%"), "pressure")
    return None


def warning(mem: MemInfo, stall: float | None, cfg: Config) -> Decision | None:
    """Return a Decision with signal 0 when a kill may come soon, else None.

    Off unless ``warn_percent`` > 0. "memory": MemAvailable at or below
    ``warn_percent`` of MemTotal and SwapFree at or below ``warn_percent``
    of SwapTotal (each never below its terminate level; no swap counts as
    none free), the kill rule with a higher level. "pressure": a stall of
    at least WARN_STALL of the cutoff while MemAvailable is at or below
    ``psi_mem_percent``, where a stall that lasts becomes a kill.
    """
    if cfg.warn_percent <= 0:
        return None
    t = thresholds(cfg, mem)
    mem_level = max(mem.total * cfg.warn_percent / 100.0, t.mem_term)
    swap_level = max(mem.swap_total * cfg.warn_percent / 100.0, t.swap_term)
    if mem.available <= mem_level and mem.swap_free <= swap_level:
        return Decision(0, _mem_reason(mem, mem_level, swap_level), "memory")
    approach = cfg.psi_cutoff * WARN_STALL
    if (cfg.psi_cutoff > 0 and stall is not None and stall >= approach
            and mem.available <= t.psi_mem):
        return Decision(0, (
            f"memory {cfg.psi_metric} stall {stall:.0f}% >= {approach:g}% (the cutoff is "
            f"{cfg.psi_cutoff:g}%) with {_avail(mem)} {size(mem.available)} "
            f"({_pct(mem.available, mem.total)}) <= {cfg.psi_mem_percent:g}%"), "pressure")
    return None


def sleep_for(mem: MemInfo, cfg: Config, trigger_armed: bool, watching: bool = False) -> float:
    """Return seconds until the next check, in proportion to the headroom.

    Both MemAvailable and SwapFree must fall for a kill, so the time to
    reach the thresholds is the sum of both headrooms over their fill rates.
    At least MIN_SLEEP; at most 1 s when polling or while watching (growth
    and stall must be sampled); at most 10 s while a PSI trigger stands guard.
    """
    t = thresholds(cfg, mem)
    seconds = (max(0.0, mem.available - t.mem_term) / MEM_FILL_KIB_S
               + max(0.0, mem.swap_free - t.swap_term) / SWAP_FILL_KIB_S)
    cap = (MAX_SLEEP_TRIGGER if trigger_armed and not watching
           and mem.available > t.psi_mem else MAX_SLEEP_POLLING)
    return max(MIN_SLEEP, min(cap, seconds))


class Check:
    """What one check saw: for outputs that follow every check (metrics, systemd).

    ``mem`` is the memory reading (swap at its zram worth while watching),
    ``stall`` the stall percentage over about a second (None when not
    measured), ``scan_s`` how long the last scan of the processes took,
    ``kills`` the kills so far and ``dying`` the victims still alive after
    SIGKILL.
    """

    kind: ClassVar[Literal["check"]] = "check"
    __slots__ = ("now", "mem", "stall", "watching", "scan_s", "kills", "dying")

    def __init__(self, now: float, mem: MemInfo, stall: float | None, watching: bool,
                 scan_s: float, kills: int, dying: int) -> None:
        self.now = now  # monotonic seconds
        self.mem = mem
        self.stall = stall
        self.watching = watching
        self.scan_s = scan_s
        self.kills = kills
        self.dying = dying


class Monitor:
    """The daemon's state between checks; ``run`` is the loop.

    ``clock`` returns monotonic seconds, ``wall`` the time of day for
    records; ``wait(timeout)`` sleeps up to ``timeout`` seconds or until the
    PSI trigger has an event and returns the (fd, events) pairs (the real one
    polls with ``select.poll``), so tests drive the loop in simulated time.
    ``outputs`` receive every record (KillRecord, WarnRecord, Check; the log
    line is the first output), ``pre_kill`` each KillRecord just before its
    signal, with the background read of the victim's command line;
    ``max_sleep`` caps the sleep between checks (the systemd watchdog sets it).
    """

    def __init__(self, cfg: Config, fs: ProcFS, log: Log, self_pid: int,
                 clock: Callable[[], float],
                 wait: Callable[[float], list[tuple[int, int]]] | None = None,
                 wall: Callable[[], float] | None = None) -> None:
        self.cfg = cfg
        self.fs = fs
        self.sys = ProcFS(cfg.sys_root)
        self.log = log
        self.clock = clock
        self.wall = wall or clock
        self.self_pid = self_pid
        self.armed = False  # choose, growth, kill, record and zram loaded (see arm)
        self.rules: Rules | None = None
        self.units: Units | None = None  # victims' cgroups (--cgroup, --kill-cgroup; see arm)
        self.tracker: Tracker | None = None
        self.dry = cfg.dry_run or not cfg.live  # a fake tree is never signalled
        self.meter = StallMeter()
        self.swapins = RateMeter()  # pswpin, pages
        self.run_ = StallRun()
        self.vmstat_fd = -1
        self.vmstat_failed = False
        self.scaled = True  # oom_score in the 0..1333 form (set by arm)
        self.zram: list[Zram] = []
        self.zram_failed = False
        self.passed: set[tuple[int, int]] = set()  # (pid, starttime) refused a signal
        self.reading_cmdline: tuple[tuple[int, int], Pending] | None = None
        self.dying: dict[tuple[int, int], kill.Target] = {}  # alive after SIGKILL
        self.kills = 0
        self.last_act = -1e9
        self.stuck = False  # warned that nothing may be killed in this emergency
        self.next_report = clock() + cfg.report if cfg.report > 0 else float("inf")
        self.watch_until = -1e9
        self.watching = False
        self.faults_at_wake = -1  # own major faults when the current check began
        self.trigger_fd = -1
        self.trigger_window = 0.0
        self.trigger_fired = False
        self.acting = False  # a kill is under way: a stop request waits for it
        self.stopping = False
        self.woke = clock()  # when the current check began (reaction times)
        self.woken_by = "timer"  # or "PSI trigger"
        self.outputs: list[Callable[[Record], None]] = [self._log_record]
        self.pre_kill: list[Callable[[KillRecord, Pending], None]] = []
        self.max_sleep = float("inf")
        self.warned = False  # a warning was given: none again until memory recovers
        self.last_warn = -1e9
        self.scan_s = 0.0  # how long the last scan took
        self.mem_fd = fs.open("meminfo")
        self.machine = read_meminfo(self.mem_fd)  # the last reading of /proc/meminfo
        # --cgroup: the watched cgroup's files (cgroup.py, loaded only then),
        # its last reading, and whether it is gone (a stopped service).
        self.cgroup: Cgroup | None = None
        self.figures: Figures | None = None
        self.cgroup_lost = False
        if cfg.cgroup:
            from .cgroup import Cgroup
            self.cgroup = Cgroup(cfg.cgroup)
        self.psi_fd = -1
        self.psi_failing = False  # said that pressure/memory cannot be read
        self._poller = select.poll()
        self._wait = wait or self._poll
        # SIGHUP: the handler sets reload_wanted; between checks the loop
        # starts ``reloader(now)`` (set by the runtime) and reads its answer
        # without blocking; signals wake the poll through wake_fd.
        self.reloader: Callable[[float], Reloading] | None = None
        self.reload_wanted = False
        self.reloading: Reloading | None = None
        self.wake_fd = -1
        self._open_psi()

    def psi_path(self) -> str:
        """Return the PSI file watched: the machine's, or the cgroup's memory.pressure."""
        if self.cgroup is not None:
            return self.cgroup.file("memory.pressure")
        return self.fs.path("pressure/memory")

    def _open_psi(self) -> None:
        cfg = self.cfg
        if cfg.psi_cutoff <= 0:
            return
        try:
            self.psi_fd = os.open(self.psi_path(), os.O_RDONLY | os.O_CLOEXEC)
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
        armed = arm_trigger(self.psi_path(), cfg.psi_metric, cfg.psi_cutoff)
        if armed is None:
            self.log.debug("PSI trigger not allowed here: polling")
            return
        self.trigger_fd, self.trigger_window = armed
        self._poller.register(self.trigger_fd, select.POLLPRI)

    def _close_psi(self) -> None:
        """Close the PSI file and the kernel trigger (before opening them anew)."""
        if self.trigger_fd >= 0:
            self._poller.unregister(self.trigger_fd)
            os.close(self.trigger_fd)
        if self.psi_fd >= 0:
            os.close(self.psi_fd)
        self.trigger_fd = self.psi_fd = -1
        self.trigger_window = 0.0
        self.trigger_fired = False
        self.psi_failing = False

    def describe(self) -> str:
        """Return the one-line summary of what will be watched and how."""
        cfg = self.cfg
        mem = self.read_mem()
        t = thresholds(cfg, mem)
        psi = "PSI off"
        if self.psi_fd >= 0:
            psi = (f"{cfg.psi_metric} stall >= {cfg.psi_cutoff:g}% for {cfg.psi_duration:g} s "
                   f"below {cfg.psi_mem_percent:g}% MemAvailable, ")
            psi += (f"kernel trigger {self.trigger_window:g} s window" if self.trigger_fd >= 0
                    else "polled")
            if self.cgroup is not None:
                psi += f" on {self.psi_path()}"
        scope = ""
        if self.cgroup is not None:
            fig = self.figures
            limit = ("gone" if fig is None else
                     f"{fig.limit_name} {size(fig.limit_kib)}" if fig.limit_kib is not None
                     else "no limit of its own: the machine's MemAvailable")
            scope = f"cgroup {self.cgroup.path} ({limit}): "
        kill_unit = "; killing whole cgroups" if cfg.kill_cgroup else ""
        return (f"{scope}SIGTERM at MemAvailable <= {size(t.mem_term)} and SwapFree <= "
                f"{size(t.swap_term)}; SIGKILL at {size(t.mem_kill)} and {size(t.swap_kill)}"
                f"; {psi}; watching below {size(watch_level(cfg, mem))}, "
                f"ranking by {cfg.rank}{kill_unit}{'; DRY RUN' if cfg.dry_run else ''}")

    def _poll(self, timeout: float) -> list[tuple[int, int]]:
        return self._poller.poll(max(1, int(timeout * 1000)))

    def arm(self) -> None:
        """Load what watching and killing need, the first time memory runs short.

        A machine with memory to spare never holds these modules (issue 7:
        watching must not raise the idle footprint); they are loaded while
        memory is still at the watch level, well before any emergency.
        """
        if self.armed:
            return
        from . import choose, growth, kill, record, zram  # noqa: F401 - loaded here on purpose
        self.rules = choose.make_rules(self.cfg, self.self_pid)
        self.tracker = growth.Tracker()
        if self.cfg.cgroup or self.cfg.kill_cgroup:
            self.units = self._units()
        self.scaled = choose.kernel_scales_oom_score()
        self.armed = True

    def _units(self) -> Units:
        """Return how victims' cgroups are found and killed (--cgroup, --kill-cgroup)."""
        from .cgroup import Units, cgroup_mount, parse_mountinfo
        try:
            mount = cgroup_mount(parse_mountinfo(self.fs.read("self/mountinfo", 1 << 20)))
        except OSError as err:
            self.log.warning(f"cannot read {self.fs.path('self/mountinfo')} ({err}): "
                             "victims' cgroups unknown")
            mount = None
        return Units(self.fs, mount)

    # -- readings ----------------------------------------------------------

    def read_mem(self, zram: bool = False) -> MemInfo:
        """Return what decisions read: the machine's memory, or with --cgroup the cgroup's.

        Reads /proc/meminfo (kept in ``machine``) and, with --cgroup, the
        cgroup's memory files (kept in ``figures``; see cgroup.meminfo_of).
        ``zram``: count zram at its RAM worth with the devices last read.
        A cgroup that cannot be read (gone) reads as all memory available.
        """
        machine = read_meminfo(self.mem_fd)
        if zram and self.zram:
            from .zram import effective_swap
            machine = effective_swap(machine, self.zram)
        self.machine = machine
        if self.cgroup is None:
            return machine
        return self._cgroup_mem(machine)

    def _cgroup_mem(self, machine: MemInfo) -> MemInfo:
        """Return the cgroup's MemInfo given the machine's (re-reading the cgroup)."""
        from .cgroup import meminfo_of
        assert self.cgroup is not None
        path = self.cgroup.path
        try:
            self.figures = self.cgroup.read()
        except (OSError, ValueError) as err:
            self.cgroup.close()
            self.figures = None
            if not self.cgroup_lost:
                self.log.warning(f"cannot read cgroup {path} ({err}): nothing to watch "
                                 "until it is back")
                self.cgroup_lost = True
                self._close_psi()
                self.reset_stall()
            return MemInfo(machine.total, machine.total, 0, 0, path)
        if self.cgroup_lost:
            self.cgroup_lost = False
            self.log.info(f"cgroup {path} is back: watching it again")
            self._open_psi()
        return meminfo_of(self.figures, machine)


    def effective(self, mem: MemInfo) -> MemInfo:
        """Return ``mem`` with zram counted at its RAM worth (see zram.py).

        With --cgroup, zram is applied to the machine's swap and the cgroup's
        reading is built again from it (its swap is bounded by the machine's).
        """
        if self.machine.swap_total <= 0 or self.zram_failed:
            return mem
        from .zram import effective_swap, read_zram
        try:
            self.zram = read_zram(self.fs, self.sys)
        except (OSError, ValueError) as err:
            self.log.warning(f"cannot read {self.fs.path('swaps')} ({err}): "
                             "swap counted as SwapFree says from now on")
            self.zram_failed = True
            self.zram = []
        if self.cgroup is None:
            return effective_swap(mem, self.zram)
        self.machine = effective_swap(self.machine, self.zram)
        if self.figures is None:
            return mem
        from .cgroup import meminfo_of
        return meminfo_of(self.figures, self.machine)

    def pressure(self, mem: MemInfo, now: float, watching: bool, fired: bool) -> Stall:
        """Return the stall, how long the machine has been thrashing, and swap-ins.

        PSI (and, with swap, ``pswpin`` of /proc/vmstat) is read only while
        watching. Thrashing is the stall at or above the cutoff and, on a
        machine with swap, pages swapped back in at ``swapin_rate`` MiB/s or
        more: a program growing into zram makes the machine stall while
        pages only go out, and that ends by itself. A trigger event vouches
        for a stall of at least the cutoff over its window, unless that
        window reaches back before the last kill.
        """
        if self.psi_fd < 0 or not watching:
            self.reset_stall()
            return Stall(None, 0.0, None)
        try:
            psi = read_pressure(self.psi_fd)
        except (OSError, ValueError) as err:
            # Said once per outage; memory thresholds alone decide until the
            # file reads again (a transient EINTR, ENOMEM or torn read must
            # not switch PSI off for good).
            if not self.psi_failing:
                self.log.warning(f"cannot read pressure/memory ({err}): acting on memory "
                                 "thresholds alone until it reads again")
                self.psi_failing = True
            self.reset_stall()
            return Stall(None, 0.0, None)
        if self.psi_failing:
            self.log.info("pressure/memory reads again: PSI back in use")
            self.psi_failing = False
        cutoff = self.cfg.psi_cutoff
        self.meter.add(now, psi.total(self.cfg.psi_metric))
        stall = self.meter.percent()
        start = self.meter.start()
        if (fired and now - self.last_act >= self.trigger_window
                and (stall is None or stall < cutoff)):
            stall, start = float(cutoff), now - self.trigger_window
        swapin = self.swapin(now) if mem.swap_total > 0 else None
        if stall is not None and start is not None:
            thrashing = stall >= cutoff and (
                swapin is None or swapin >= self.cfg.swapin_rate or self.vmstat_failed)
            self.run_.update(start, thrashing)
        return Stall(stall, self.run_.seconds(now), swapin)

    def swapin(self, now: float) -> float | None:
        """Return the swap-in rate in MiB/s over about the last second, None if unknown."""
        if self.vmstat_failed:
            return None
        if self.cgroup is not None:
            pages = None if self.figures is None else self.figures.swapins
            if pages is None:
                if self.figures is not None:
                    self.log.warning(f"{self.cgroup.file('memory.stat')} has no pswpin nor "
                                     "workingset_refault_anon: pressure kills on the stall "
                                     "alone, without telling thrashing from swapping out")
                    self.vmstat_failed = True
                return None
            self.swapins.add(now, pages)
            rate = self.swapins.rate()
            return None if rate is None else rate * PAGE_MIB
        try:
            if self.vmstat_fd < 0:
                self.vmstat_fd = self.fs.open("vmstat")
            pages = parse_pswpin(os.pread(self.vmstat_fd, 16384, 0))
        except (OSError, ValueError) as err:
            self.log.warning(f"cannot read {self.fs.path('vmstat')} ({err}): pressure kills "
                             "on the stall alone, without telling thrashing from swapping out")
            self.vmstat_failed = True
            return None
        self.swapins.add(now, pages)
        rate = self.swapins.rate()
        return None if rate is None else rate * PAGE_MIB

    def reset_stall(self) -> None:
        """Forget the stall and swap-in history (after a kill, or when not watching)."""
        self.meter.reset()
        self.swapins.reset()
        self.run_.reset()

    def sample(self, now: float) -> list[Candidate]:
        """Scan, sample the sizes of the largest processes, return the candidates."""
        from .choose import sample
        self.arm()
        assert self.tracker is not None and self.rules is not None
        if self.dying:
            self.forget_dead()
        if self.passed:
            self.forget_passed()
        exclude = self.passed | set(self.dying)
        if self.cgroup is None:
            return sample(self.fs, self.tracker, now, frozenset((self.self_pid,)), exclude,
                          self.rules.shifts)
        # --cgroup: only the subtree's processes, each with the cgroup holding it.
        from .cgroup import members
        try:
            leaves = members(self.cgroup.path)
        except (OSError, ValueError) as err:
            self.log.debug(f"cannot list the processes of cgroup {self.cgroup.path}: {err}")
            return []
        cands = sample(self.fs, self.tracker, now, frozenset((self.self_pid,)), exclude,
                       self.rules.shifts, sorted(leaves))
        for c in cands:
            c.cgroup = leaves.get(c.pid, "")
        return cands

    def ranking(self, cands: list[Candidate], log: Log | None = None) -> choose.Ranking:
        """Return the candidates in kill order (growth priced by the machine's totals)."""
        from .choose import Ranking, oom_score_per_kib
        assert self.rules is not None
        cfg = self.cfg
        # oom_score is the kernel's badness against the machine's RAM + swap,
        # with --cgroup too: growth is priced in the same units.
        return Ranking(self.fs, cands, self.rules, oom_score_per_kib(self.machine, self.scaled),
                       cfg.kill_pgroup, log, self.units, cfg.kill_cgroup)

    def rehearse(self, cands: list[Candidate]) -> None:
        """Walk the kill path once without signalling anyone (issue 10).

        Run on entering the watch zone, while memory is still to spare: the
        ranking, the details of a leader, the record and its line, the
        background cmdline read and the pidfd calls (against bustd itself,
        with signal 0) all touch their code now, so under mlockall the
        emergency finds them resident instead of faulting them in from disk.
        """
        from . import kill
        from .record import WarnRecord, kill_line, warn_line
        assert self.rules is not None
        mem = self.read_mem()
        ranking = self.ranking(cands)
        victim = ranking.next()
        if victim is not None:
            record = self._record(victim, Decision(sig.SIGTERM, "rehearsal"),
                                  self.reading(mem, Stall(None, 0.0, None)), True)
            record.cmdline = self.fs.read_pid_later(self.self_pid, "cmdline").result(0.05)
            record.runners_up = self._runners_up(ranking)
            kill_line(record)
            record.dry_run = False
            kill_line(record)
            warn_line(WarnRecord(record.time, "memory", "rehearsal", record.reading,
                                 victim.candidate, record.uid, record.exe))
        kill.rehearse(self.fs, self.self_pid, self.clock)

    # -- reload (SIGHUP) ----------------------------------------------------

    def wake_on(self, fd: int) -> None:
        """Also end the sleep between checks when ``fd`` (the signal wakeup pipe) is readable."""
        self.wake_fd = fd
        self._poller.register(fd, select.POLLIN)

    def hangup(self) -> None:
        """Ask for the config file to be read again (from the SIGHUP handler: a flag only)."""
        self.reload_wanted = True

    def reconfigure(self, new: Config) -> list[str]:
        """Apply ``new`` from the next check; return the names of the settings that changed.

        Rebuilds what depends on the Config: the victim rules, the PSI file
        and trigger when ``psi``/``psi-metric`` changed, the zram tree, the
        report timer, the dry-run and verbose switches. Settings in
        FIXED_AT_START keep their running value (said in one line).
        """
        old = self.cfg
        fixed = [k for k in FIXED_AT_START if getattr(new, k) != getattr(old, k)]
        if fixed:
            self.log.warning("reload: " + ", ".join(k.replace("_", "-") for k in fixed)
                             + " cannot change while bustd runs: kept until a restart")
            new = new.replace(**{k: getattr(old, k) for k in fixed})
        changed = [k for k in DEFAULTS if getattr(new, k) != getattr(old, k)]
        self.cfg = new
        self.log.verbose = new.verbose
        self.dry = new.dry_run or not new.live
        self.stuck = False
        if new.sys_root != old.sys_root:
            self.sys = ProcFS(new.sys_root)
            self.zram_failed = False
        if self.armed and {"unkillables", "ignore", "prefer", "avoid", "rank"} & set(changed):
            from .choose import make_rules
            self.rules = make_rules(new, self.self_pid)
        if self.armed and new.kill_cgroup and self.units is None:
            self.units = self._units()
        if {"psi_cutoff", "psi_metric"} & set(changed):
            self._close_psi()
            self.reset_stall()
            self._open_psi()
        if "report" in changed:
            self.next_report = self.clock() + new.report if new.report > 0 else float("inf")
        return changed

    def _start_reload(self) -> None:
        """Start reading the config file again (a SIGHUP arrived)."""
        if self.reloading is not None:
            return  # one at a time: this one starts when the one under way is done
        self.reload_wanted = False
        if self.reloader is None:
            return
        try:
            self.reloading = self.reloader(self.clock())
        except (OSError, ValueError) as err:
            self.log.error(f"reload failed, running configuration kept: cannot start the "
                           f"front end ({err})")
            return
        self._poller.register(self.reloading.fd, select.POLLIN)

    def _end_reload(self) -> Reloading | None:
        """Stop polling the reload under way and return it (None if there is none)."""
        r, self.reloading = self.reloading, None
        if r is not None:
            self._poller.unregister(r.fd)
        return r

    def cancel_reload(self) -> None:
        """End a reload under way, killing its front end (at exit)."""
        r = self._end_reload()
        if r is not None:
            r.cancel()

    def _reload_input(self) -> None:
        """Read the front end's answer; apply the new Config once it is complete."""
        from .reload import ReloadError
        r = self.reloading
        if r is None or not r.read():
            return
        self._end_reload()
        try:
            cfg, path = r.finish()
        except (ReloadError, OSError) as err:
            self.log.error(f"reload failed, running configuration kept: {err}")
            return
        changed = self.reconfigure(cfg)
        source = path or "the command line (no --config)"
        what = (", ".join(f"{k}={getattr(self.cfg, k)!r}" for k in changed)
                if changed else "no change")
        self.log.info(f"reloaded {source}: {what}; {self.describe()}")

    def _reload_overdue(self) -> None:
        """Give up on a front end that did not answer in time."""
        r = self._end_reload()
        if r is not None:
            r.cancel()
            self.log.error("reload failed, running configuration kept: the front end gave "
                           "no answer in time")

    # -- the check ---------------------------------------------------------

    def check(self) -> float:
        """Run one check (and act if needed); return seconds to sleep."""
        cfg = self.cfg
        now = self.woke = self.clock()
        fired = self.trigger_fired
        self.trigger_fired = False
        self.woken_by = "PSI trigger" if fired else "timer"
        if fired:
            self.watch_until = now + WATCH_AFTER_EVENT
        mem = self.read_mem()
        short = mem.available <= watch_level(cfg, mem)
        if not short:
            self.warned = False  # memory recovered: the next shortage is warned of again
        watching = short or now < self.watch_until
        cands: list[Candidate] | None = None
        if watching:
            self.faults_at_wake = own_major_faults()
            mem = self.effective(mem)
            cands = self.sample(now)
            self.scan_s = self.clock() - now
            if not self.watching:
                self.rehearse(cands)
            self.watching = True
        else:
            self.watching = False
            if self.tracker is not None:
                self.tracker.clear()
            self.zram = []
        stall = self.pressure(mem, now, watching, fired)
        decision = decide(mem, stall.percent, cfg, stall.seconds, stall.swapin)
        pause = 0.0
        if decision is None:
            self.stuck = False
            if cands is not None and not self.warned:
                self.warn(mem, stall, cands, now)
        else:
            self.acting = True
            try:
                pause = self.act(decision, stall, cands)
            finally:
                self.acting = False
            mem = self.effective(self.read_mem()) if watching else mem
        now = self.clock()
        if now >= self.next_report:
            self.report(mem, stall.percent)
            self.next_report = now + cfg.report
        self.emit(Check(now, mem, stall.percent, watching, self.scan_s, self.kills,
                        len(self.dying)))
        return max(pause, min(sleep_for(mem, cfg, self.trigger_fd >= 0, watching),
                              max(MIN_SLEEP, self.next_report - now), self.max_sleep))

    def emit(self, record: Record) -> None:
        """Hand ``record`` to every output; one that fails is logged, the rest still run."""
        for output in self.outputs:
            self._call(output, record)

    def _call(self, output: Callable[..., None], record: Record, *more: object) -> None:
        try:
            output(record, *more)
        except Exception as err:
            # A full disk, a missing helper, a bug: none may stop the loop
            # (STYLE.md, habit 14).
            try:
                self.log.error(f"{getattr(output, '__qualname__', 'output')} failed on a "
                               f"{record.kind} record: {type(err).__name__}: {err}")
            except MemoryError:
                pass

    def warn(self, mem: MemInfo, stall: Stall, cands: list[Candidate], now: float) -> None:
        """Emit a WarnRecord naming the likely victim when :func:`warning` says so.

        Said once, then again only after memory has left the watch zone and
        at least WARN_EVERY seconds later (a machine hovering at the level
        would otherwise warn at every check).
        """
        found = warning(mem, stall.percent, self.cfg)
        if found is None or now - self.last_warn < WARN_EVERY:
            return
        from .record import WarnRecord
        ranking = self.ranking(cands)
        victim = ranking.next()
        record = WarnRecord(self.wall(), found.cause, found.reason,
                            self.reading(mem, stall),
                            victim.candidate if victim else None,
                            victim.details.uid if victim else -1,
                            victim.details.exe if victim else b"")
        record.runners_up = self._runners_up(ranking)
        self.warned = True
        self.last_warn = now
        self.emit(record)

    def report(self, mem: MemInfo, stall: float | None) -> None:
        """Log the periodic status line."""
        stall_text = "" if stall is None else f", {self.cfg.psi_metric} stall {stall:.0f}%"
        swap = (f"{size(mem.swap_free)} of {size(mem.swap_total)}" if mem.swap_total
                else "no swap")
        self.log.info(f"status: {_avail(mem)} {size(mem.available)} of {size(mem.total)} "
                      f"({_pct(mem.available, mem.total)}), SwapFree {swap}{stall_text}, "
                      f"kills {self.kills}")

    def reading(self, mem: MemInfo, stall: Stall) -> Reading:
        """Return the Reading a record carries."""
        from .record import Reading
        return Reading(mem.available, mem.total, mem.swap_free, mem.swap_total,
                       sum(z.mem_used_kib for z in self.zram), stall.percent, stall.seconds,
                       self.cfg.psi_metric)

    def act(self, decision: Decision, stall: Stall,
            cands: list[Candidate] | None = None) -> float:
        """Pick a victim and kill it (or log it in a dry run).

        A victim that refuses the signal (EPERM: another user's process, an
        LSM) is passed over, said once, and the next one tried in the same
        check. Returns a minimum pause before the next check.
        """
        from .record import candidate_text
        log, cfg = self.log, self.cfg
        if cands is None:
            cands = self.sample(self.clock())
        assert self.rules is not None
        ranking = self.ranking(cands, log)
        victim = ranking.next()
        if victim is None:
            if not self.stuck:  # once per emergency, not once a second
                log.warning(f"memory emergency ({decision.reason}) but no process may be killed")
                self.stuck = True
            return NO_VICTIM_PAUSE
        if log.verbose:
            log.debug("candidates: " + "; ".join(candidate_text(c) for c in ranking.ranked[:6]))
        # The scan took time: decide again on fresh memory figures.
        fresh_mem = self.read_mem(zram=True)
        fresh = decide(fresh_mem, stall.percent, cfg, stall.seconds, stall.swapin)
        if fresh is None:
            log.info("memory recovered before the kill: nothing done")
            return 0.0
        dry = self.dry
        while victim is not None:
            pending = self.cmdline_of(victim.candidate)
            record = self._record(victim, fresh, self.reading(fresh_mem, stall), dry)
            for hook in self.pre_kill:  # each bounds its own wait (--hook-timeout)
                self._call(hook, record, pending)
            outcome = "dry" if dry else self._kill(victim, record, fresh.signal)
            if outcome == "refused":
                victim = ranking.next()  # said once by _kill; the next one now
                continue
            if outcome == "gone":
                return 0.0  # it exited by itself: decide again on fresh readings
            if outcome == "failed":
                return MIN_SLEEP  # nothing sent (ENOMEM, no descriptor): try again soon
            record.cmdline = None if pending is None else pending.result(0.05 if dry else 0.1)
            record.runners_up = self._runners_up(ranking)
            self.emit(record)
            if dry:
                self.last_act = self.clock()
                return DRY_RUN_PAUSE
            return 0.0
        log.warning(f"memory emergency ({fresh.reason}): every candidate refused the signal")
        return NO_VICTIM_PAUSE

    def _record(self, victim: Victim, decision: Decision, reading: Reading,
                dry: bool) -> KillRecord:
        from .process import read_status
        from .procfs import NoSuchProcess
        from .record import KillRecord
        c, d = victim.candidate, victim.details
        try:
            st = read_status(self.fs, c.pid)
            rss, swap = st.rss_kib, st.swap_kib
        except (NoSuchProcess, ValueError):
            rss, swap = c.rss_kib, c.swap_kib
        record = KillRecord(self.wall(), c, d.uid, d.oom_score_adj, d.exe, rss, swap,
                            self.cfg.rank, decision.reason, decision.signal, reading, dry,
                            decision.cause)
        record.woken_by = self.woken_by
        record.group = [m.pid for m in victim.group]
        record.cgroup = victim.cgroup
        if self.cfg.kill_cgroup:
            # What would happen; _kill says what did.
            record.cgroup_whole = bool(victim.cgroup) and not victim.blocked
            record.cgroup_note = victim.blocked
            if record.cgroup_whole:
                record.signal = sig.SIGKILL  # cgroup.kill knows no other
        return record

    def _runners_up(self, ranking: choose.Ranking) -> list[Candidate]:
        out: list[Candidate] = []
        while len(out) < RUNNERS_UP:
            v = ranking.next()
            if v is None:
                break
            out.append(v.candidate)
        return out

    def _kill(self, victim: Victim, record: KillRecord, first: int) -> str:
        """Signal the victim (and its group) with ``first`` and fill ``record``.

        With --kill-cgroup its cgroup is killed whole (cgroup.kill, SIGKILL)
        when that may be done; else its killable members get ``first``.

        Returns "killed"; "gone" (it exited or its PID was recycled before
        the signal); "refused" (the kernel denied every way to signal it:
        said once, then passed over for good); or "failed" (it could not be
        checked or signalled now, e.g. ENOMEM: nothing was sent).
        """
        from . import kill
        c = victim.candidate
        targets = [kill.Target(m.pid, m.starttime) for m in [c, *victim.group]]
        whole = victim.cgroup if self.cfg.kill_cgroup and not victim.blocked else ""
        record.reaction_s = self.clock() - self.woke
        if whole:
            outcome = kill.signal_targets(self.fs, targets, first, self.cfg.grace,
                                          self.clock, cgroup=whole, self_pid=self.self_pid)
        else:
            outcome = kill.signal_targets(self.fs, targets, first, self.cfg.grace, self.clock)
        if self.cfg.kill_cgroup:
            record.cgroup_whole = bool(whole) and not outcome.cgroup_note
            record.cgroup_note = outcome.cgroup_note or victim.blocked
        main = outcome.targets[0]
        for t in outcome.targets:
            if t.note and t.state in (kill.EXITED, kill.DYING):
                self.log.info(f"pid={t.pid} signalled with kill(), not a pidfd: {t.note}")
            if t.state == kill.REFUSED:
                self.passed.add((t.pid, t.starttime))
                self.log.warning(f"cannot signal pid={t.pid} ({t.why}): passing over it")
            elif t.state in (kill.GONE, kill.FAILED) and t is not main:
                self.log.warning(f"not signalled: pid={t.pid}: {t.why}")
        if not outcome.signalled:
            if main.state == kill.REFUSED:
                return "refused"
            self.log.warning(f"not signalled: pid={main.pid}: {main.why}")
            return "gone" if main.state == kill.GONE else "failed"
        self.last_act = self.clock()
        self.reset_stall()
        self.kills += 1
        for t in outcome.having(kill.DYING):
            # Frozen or in uninterruptible sleep: remembered, never chosen or
            # waited on again, let go once it has exited (issue 10, defect 2).
            self.dying[(t.pid, t.starttime)] = t
        record.major_faults = (own_major_faults() - self.faults_at_wake
                               if self.faults_at_wake >= 0 else -1)
        record.signal, record.exit_s = outcome.last, outcome.took
        record.exited = main.state == kill.EXITED
        record.released = main.reaped
        record.problems = [f"pid={t.pid}: {t.why}" for t in outcome.targets if t.why]
        return "killed"

    def cmdline_of(self, c: Candidate) -> Pending | None:
        """Start reading ``c``'s command line in the background, at most one at a time.

        A read for the same process is reused; while a read of another one
        still hangs (on that process's memory lock, issue 10) none starts and
        None is returned, so a dry run deciding every second cannot pile up
        threads.
        """
        key = (c.pid, c.starttime)
        current = self.reading_cmdline
        if current is not None and current[0] == key:
            return current[1]
        if current is not None and not current[1].done():
            return None
        pending = self.fs.read_pid_later(c.pid, "cmdline")
        self.reading_cmdline = (key, pending)
        return pending

    def forget_passed(self) -> None:
        """Forget refusing processes that have exited (their PID may be reused)."""
        from .process import read_starttime
        from .procfs import NoSuchProcess
        for pid, start in list(self.passed):
            try:
                alive = read_starttime(self.fs, pid) == start
            except (NoSuchProcess, ValueError):
                alive = False
            if not alive:
                self.passed.discard((pid, start))

    def forget_dead(self) -> None:
        """Let go of remembered dying victims that have exited (never blocks)."""
        from . import kill
        for key, t in list(self.dying.items()):
            if kill.exited(self.fs, t):
                kill.release(t)
                del self.dying[key]

    def close(self) -> None:
        """Close every descriptor the Monitor holds."""
        from . import kill
        for t in self.dying.values():
            kill.release(t)
        self.dying.clear()
        self.cancel_reload()
        for fd in (self.trigger_fd, self.psi_fd, self.mem_fd, self.vmstat_fd, self.wake_fd):
            if fd >= 0:
                os.close(fd)
        self.trigger_fd = self.psi_fd = self.mem_fd = self.vmstat_fd = self.wake_fd = -1

    def _log_record(self, record: Record) -> None:
        if record.kind == "kill":
            from .record import kill_line
            self.log.warning(kill_line(record))
        elif record.kind == "warn":
            from .record import warn_line
            self.log.warning(warn_line(record))

    def stop(self) -> None:
        """End the loop (from a signal handler): raises SystemExit(0) at once, or,
        while a kill is under way, once it is done and its record written."""
        if self.acting:
            self.stopping = True
            return
        raise SystemExit(0)

    def run(self) -> None:
        """Check, sleep, repeat; returns only by SystemExit (or KeyboardInterrupt)."""
        while True:
            if self.stopping:
                raise SystemExit(0)
            if self.reload_wanted and self.reloading is None:
                self._start_reload()
            try:
                timeout = self.check()
            except Exception as err:
                # A transient /proc failure, a MemoryError under strict
                # overcommit (issue 10): none may end the only guard against
                # a freeze. Say so in one line and try again shortly.
                timeout = NO_VICTIM_PAUSE
                try:
                    self.log.error(f"check failed: {type(err).__name__}: {err}")
                except MemoryError:
                    pass  # not even a line could be built: try again
            if self.stopping:
                raise SystemExit(0)
            if self.reloading is not None:
                timeout = max(0.0, min(timeout, self.reloading.deadline - self.clock()))
            asked = self.clock() + timeout
            events = self._wait(timeout)
            late = self.clock() - asked
            if late >= LATE_WAKEUP:
                # SIGSTOP, a frozen cgroup, a suspend: the readings resume
                # from here, and the stall meter measures across the gap.
                self.log.warning(f"woke {late:.1f} s later than planned (stopped, frozen or "
                                 "suspended?): watching again")
            for fd, ev in events:
                if fd == self.trigger_fd:
                    if ev & (select.POLLERR | select.POLLNVAL):
                        self.log.warning("PSI trigger failed: polling from now on")
                        self._poller.unregister(fd)
                        os.close(fd)
                        self.trigger_fd = -1
                    else:
                        self.trigger_fired = True
                elif fd == self.wake_fd:
                    _drain(fd)  # a signal arrived: its handler has run
                elif self.reloading is not None and fd == self.reloading.fd:
                    self._reload_input()
            if self.reloading is not None and self.clock() >= self.reloading.deadline:
                self._reload_overdue()


def _drain(fd: int) -> None:
    """Empty the non-blocking signal wakeup pipe."""
    try:
        while os.read(fd, 512):
            pass
    except OSError:
        pass  # empty (EAGAIN)


