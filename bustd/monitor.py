"""The loop: wake, read, decide, hand over, record, sleep; an injected clock.

Contract: each check reads MemInfo and asks the pure functions of decide.py
whether to act and how long to sleep (or until the kernel's PSI trigger
fires). While memory is in the watch zone (a little above the levels that
act, or for a while after a PSI trigger event) a check also reads PSI, swap
traffic and zram and hands the readings to the Emergency (emergency.py),
which owns the kill state, samples the largest processes and acts. That code
loads the first time memory enters the watch zone, reloading's (reload.py)
at the first SIGHUP, so an idle daemon holds the loop alone. No function
outside this module takes the Monitor.
Every record (outputs.Record) goes to each callable in ``Monitor.outputs``;
a kill's, from a later check, once what it freed is measured (progress.py).
Nothing an output does sits between the emergency and the signal, except
``Monitor.pre_kill`` (the pre-kill hook), which bounds its own wait.
"""

from __future__ import annotations

import errno
import os
import select

from .config import Config
from .decide import (
    MIN_SLEEP,
    NO_VICTIM_PAUSE,
    Stall,
    avail_name,
    decide,
    sleep_for,
    thrashing,
    thresholds,
    watch_level,
)
from .log import Log, pct, size
from .meminfo import MemInfo, parse_swap_traffic, read_meminfo
from .outputs import CheckRecord
from .pressure import RateMeter, StallMeter, StallRun, arm_trigger, read_pressure
from .procfs import ProcFS, own_major_faults

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Protocol

    from .cgroup import Cgroup, Figures
    from .emergency import Emergency, Wakeup
    from .outputs import Record
    from .process import Candidate
    from .procfs import BackgroundRead
    from .progress import Followed
    from .record import KillRecord
    from .zram import Zram

    class Reloading(Protocol):
        """A reading of the config file under way (reload.Reload)."""

        fd: int
        pid: int
        deadline: float
        killed: bool

        def read(self) -> bool: ...

        def diagnostics(self) -> list[str]: ...

        def finish(self) -> tuple[Config, str]: ...

        def cancel(self) -> None: ...

        def kill(self) -> None: ...

__all__ = ["Monitor"]

LATE_WAKEUP = 5.0  # woken this much later than asked: stopped, frozen or suspended
WATCH_AFTER_EVENT = 10.0  # seconds of watching after a PSI trigger event


class Monitor:
    """The daemon's state between checks; ``run`` is the loop.

    ``clock`` returns monotonic seconds, ``wall`` the time of day for
    records; ``wait(timeout)`` sleeps up to ``timeout`` seconds or until the
    PSI trigger has an event and returns the (fd, events) pairs (the real one
    polls with ``select.poll``), so tests drive the loop in simulated time.
    ``outputs`` receive every record (KillRecord, WarnRecord, CheckRecord; the log
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
        # The kill state, made with the watch-zone modules (load_watch_code)
        self.emergency: Emergency | None = None
        self.meter = StallMeter()
        self.swapins = RateMeter()  # pswpin, pages
        self.swapouts = RateMeter()  # pswpout, pages (the machine's only)
        self.run_ = StallRun()
        self.vmstat_fd = -1
        self.vmstat_failed = False
        self.zram: list[Zram] = []
        self.zram_failed = False
        self.next_report = clock() + cfg.report if cfg.report > 0 else float("inf")
        self.watch_until = -1e9
        self.watching = False
        self.trigger_fd = -1
        self.trigger_window = 0.0
        self.trigger_fired = False
        self.acting = False  # a kill is under way: a stop request waits for it
        self.stopping = False
        self.outputs: list[Callable[[Record], None]] = [self._log_record]
        self.pre_kill: list[Callable[[KillRecord, BackgroundRead], None]] = []
        self.max_sleep = float("inf")
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
        self.reload_left: list[Reloading] = []  # front ends ended but not reaped yet
        self.wake_fd = -1
        self.open_psi()

    @property
    def kills(self) -> int:
        """Return how many kills were made (signals sent: none in a dry run)."""
        return 0 if self.emergency is None else self.emergency.kills

    def psi_path(self) -> str:
        """Return the PSI file watched: the machine's, or the cgroup's memory.pressure."""
        if self.cgroup is not None:
            return self.cgroup.file("memory.pressure")
        return self.fs.path("pressure/memory")

    def open_psi(self) -> None:
        """Open the PSI file watched (:meth:`psi_path`) and, on a live /proc, a kernel trigger.

        Without PSI (``--psi 0``, a kernel booted with psi=0, a file that
        cannot be read) says so once and leaves ``psi_fd`` -1: memory
        thresholds alone decide. Where a trigger is not allowed it polls.
        """
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

    def close_psi(self) -> None:
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

    def load_watch_code(self) -> Emergency:
        """Return the Emergency, made (with what watching and killing need loaded)
        the first time memory runs short.

        A machine with memory to spare never holds these modules (issue 7:
        watching must not raise the idle footprint); they are loaded while
        memory is still at the watch level, well before any emergency.
        """
        if self.emergency is not None:
            return self.emergency
        from . import (  # noqa: F401 - loaded here on purpose
            choose,
            freeable,
            growth,
            kill,
            progress,
            record,
            zram,
        )
        from .emergency import Emergency
        self.emergency = Emergency(self.cfg, self.fs, self.log, self.clock, self.wall,
                                   self.self_pid, self.emit, self.pre_kill, self.guarded,
                                   None if self.cgroup is None else self.cgroup.path)
        return self.emergency

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
                self.close_psi()
                self.reset_stall()
            return MemInfo(machine.total, machine.total, 0, 0, path)
        if self.cgroup_lost:
            self.cgroup_lost = False
            self.log.info(f"cgroup {path} is back: watching it again")
            self.open_psi()
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
        """Return the stall, how long the machine has been thrashing, swap-ins and -outs.

        PSI (and, with swap, ``pswpin`` and ``pswpout`` of /proc/vmstat) is
        read only while watching. Thrashing (decide.thrashing) is the stall
        at or above the cutoff and, on a machine with swap, pages swapped
        back in at ``swapin_rate`` MiB/s or more and at least THRASH_IN_OUT
        as fast as they go out: a program growing into zram makes the
        machine stall while more pages go out than come back, and that ends
        by itself. A trigger event vouches
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
        last_act = -1e9 if self.emergency is None else self.emergency.last_act
        if (fired and now - last_act >= self.trigger_window
                and (stall is None or stall < cutoff)):
            stall, start = float(cutoff), now - self.trigger_window
        swapin, swapout = self.swap_rates(now) if mem.swap_total > 0 else (None, None)
        if stall is not None and start is not None:
            self.run_.update(start, thrashing(self.cfg, stall, swapin, swapout))
        return Stall(stall, self.run_.seconds(now), swapin, swapout)

    def swap_rates(self, now: float) -> tuple[float | None, float | None]:
        """Return the swap-in and swap-out rates in MiB/s over about the last second.

        None where unknown (not yet two readings, a source that cannot tell).
        """
        from .process import PAGE_MIB  # loaded with the watch-zone modules (choose)
        if self.vmstat_failed:
            return None, None
        pages = self._swapped()
        if pages is None:
            return None, None
        self.swapins.add(now, pages[0])
        rate = self.swapins.rate()
        out = None
        if pages[1] is not None:
            self.swapouts.add(now, pages[1])
            out = self.swapouts.rate()
        return (None if rate is None else rate * PAGE_MIB,
                None if out is None or rate is None else out * PAGE_MIB)

    def _swapped(self) -> tuple[int, int | None] | None:
        """Return the pages swapped in and out so far: the machine's, or with
        --cgroup the cgroup's swap-ins (its swap-outs are not counted: None).

        None when unknown now (a cgroup not read); a source that cannot tell
        is said once and ``vmstat_failed`` set for good.
        """
        if self.cgroup is not None:
            if self.figures is None:
                return None
            if self.figures.swapins is None:
                self.log.warning(f"{self.cgroup.file('memory.stat')} has no pswpin nor "
                                 "workingset_refault_anon: pressure kills on the stall "
                                 "alone, without telling thrashing from swapping out")
                self.vmstat_failed = True
                return None
            return self.figures.swapins, None
        try:
            if self.vmstat_fd < 0:
                self.vmstat_fd = self.fs.open("vmstat")
            return parse_swap_traffic(os.pread(self.vmstat_fd, 16384, 0))
        except (OSError, ValueError) as err:
            self.log.warning(f"cannot read {self.fs.path('vmstat')} ({err}): pressure kills "
                             "on the stall alone, without telling thrashing from swapping out")
            self.vmstat_failed = True
            return None

    def reset_stall(self) -> None:
        """Forget the stall and swap-in history (after a kill, or when not watching)."""
        self.meter.reset()
        self.swapins.reset()
        self.swapouts.reset()
        self.run_.reset()

    # -- reload (SIGHUP) ----------------------------------------------------

    def wake_on(self, fd: int) -> None:
        """Also end the sleep between checks when ``fd`` (the signal wakeup pipe) is readable."""
        self.wake_fd = fd
        self._poller.register(fd, select.POLLIN)

    def hangup(self) -> None:
        """Ask for the config file to be read again (from the SIGHUP handler: a flag only)."""
        self.reload_wanted = True

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

    def end_reload(self) -> Reloading | None:
        """Stop polling the reload under way and return it (None if there is none)."""
        r, self.reloading = self.reloading, None
        if r is not None:
            self._poller.unregister(r.fd)
        return r

    def take_answer(self) -> None:
        """Read the front end's answer; apply the new Config once it is complete."""
        r = self.reloading
        if r is None or not r.read():
            return
        self.end_reload()
        from .reload import answer_of, reloaded
        answer = answer_of(r, self.log, self.reload_left)
        if answer is not None:
            changed = self.apply(answer[0])
            self.log.info(reloaded(answer[1], changed, self.cfg) + self.describe())

    def apply(self, new: Config) -> list[str]:
        """Use ``new`` from the next check; return the names of the settings that changed.

        Settings in reload.FIXED_AT_START keep their running value (said in
        one line). Rebuilt: the PSI file and trigger when ``psi``/``psi-metric``
        changed, the zram tree, the report timer, the verbose switch, and the
        Emergency's rules, units and dry-run switch (Emergency.reconfigure).
        """
        from .reload import changes
        old = self.cfg
        new, changed = changes(old, new, self.log)
        self.cfg = new
        self.log.verbose = new.verbose
        if new.sys_root != old.sys_root:
            self.sys = ProcFS(new.sys_root)
            self.zram_failed = False
        if self.emergency is not None:
            self.emergency.reconfigure(new)
        if {"psi_cutoff", "psi_metric"} & set(changed):
            self.close_psi()
            self.reset_stall()
            self.open_psi()
        if "report" in changed:
            self.next_report = self.clock() + new.report if new.report > 0 else float("inf")
        return changed

    def cancel_reload(self) -> None:
        """End a reload under way, killing its front end (at exit)."""
        r = self.end_reload()
        if r is not None:
            r.cancel()

    # -- the check ---------------------------------------------------------

    def check(self) -> float:
        """Run one check (and act if needed); return seconds to sleep."""
        cfg = self.cfg
        now = self.clock()  # when this check began (reaction times)
        fired = self.trigger_fired
        self.trigger_fired = False
        if fired:
            self.watch_until = now + WATCH_AFTER_EVENT
        mem = self.read_mem()
        short = mem.available <= watch_level(cfg, mem)
        e = self.emergency
        if not short and e is not None:
            e.recovered()  # the next shortage is warned of again
        watching = short or now < self.watch_until
        cands: list[Candidate] | None = None
        faults = -1  # own major faults when this check began (read while watching)
        if watching:
            faults = own_major_faults()
            mem = self.effective(mem)
            e = self.load_watch_code()
            # What a kill must free to lift MemAvailable above the SIGTERM
            # level: the default avoid list yields to a candidate that frees it.
            e.need_kib = max(0, int(thresholds(cfg, mem).mem_term - mem.available))
            cands = e.sample(now)
            self.scan_s = self.clock() - now
            if not self.watching:
                e.rehearse(cands, self.read_again, self.zram, self.wakeup(now, fired, faults))
            self.watching = True
        else:
            self.watching = False
            if e is not None:
                e.stop_watching()
            self.zram = []
        settled = [] if e is None else e.follow(now, mem.available + mem.swap_free)
        stall = self.pressure(mem, now, watching, fired)
        decision = decide(mem, stall.percent, cfg, stall.seconds, stall.swapin, stall.swapout)
        pause = 0.0
        if decision is None:
            if e is not None:
                e.calm()
                if cands is not None and not e.warned:
                    e.warn(mem, stall, cands, now, self.machine, self.zram)
        else:
            e = self.load_watch_code()
            self.acting = True
            try:
                if cands is None:
                    cands = e.sample(self.clock())
                acted = e.act(decision, stall, cands, self.machine, self.zram,
                              self.wakeup(now, fired, faults), self.read_fresh)
            finally:
                self.acting = False
            pause = acted.pause
            if acted.signalled:
                self.reset_stall()  # the kill made the stall history stale
            mem = self.effective(self.read_mem()) if watching else mem
        for f in settled:  # after any signal of this check: outputs may block
            self.emit_followed(f)
        now = self.clock()
        if now >= self.next_report:
            self.report(mem, stall.percent)
            self.next_report = now + cfg.report
        self.emit(CheckRecord(now, mem, stall.percent, watching, self.scan_s,
                              self.kills, 0 if e is None else len(e.dying)))
        return max(pause, min(sleep_for(mem, cfg, self.trigger_fd >= 0, watching),
                              max(MIN_SLEEP, self.next_report - now), self.max_sleep,
                              max(MIN_SLEEP, self.due(now))))

    def wakeup(self, now: float, fired: bool, faults: int) -> Wakeup:
        """Return the Wakeup of the check that began at ``now`` (``fired``: by the PSI trigger)."""
        from .emergency import Wakeup
        return Wakeup(now, "PSI trigger" if fired else "timer", faults)

    def read_again(self) -> tuple[MemInfo, MemInfo]:
        """Read memory now: (what decisions read, the machine's MemInfo)."""
        return self.read_mem(), self.machine

    def read_fresh(self) -> tuple[MemInfo, MemInfo]:
        """Read memory now with zram at its worth: (what decisions read, the machine's)."""
        return self.read_mem(zram=True), self.machine

    def due(self, now: float) -> float:
        """Return the seconds until a kill being followed is to be measured (inf: none)."""
        return float("inf") if self.emergency is None else self.emergency.progress.due(now)

    def emit_followed(self, f: Followed, cut_short: bool = False) -> None:
        """Put what kill ``f`` freed into its record and hand the record to every output."""
        r = f.record
        if r is None:
            return
        r.freed_kib = f.freed_kib
        r.freed_s = (f.settled if f.settled >= 0 else self.clock()) - f.time
        r.vain = None if cut_short else f.vain
        if f.vain and not cut_short and self.emergency is not None:
            r.backoff_s = max(0.0, self.emergency.progress.pause_until - f.settled)
        if self.cgroup is None and not cut_short:
            # Said with the kill when it is a reason memory was short: read
            # now, well after the signal (held.py never waits on a disk).
            from .held import read_held
            try:
                held = read_held(self.fs)
            except (OSError, ValueError):
                held = None
            if held is not None and held.significant():
                r.held = held
        f.record = None
        self.emit(r)

    def exiting(self) -> SystemExit:
        """Write the records of kills still being measured; return the SystemExit to raise."""
        self.flush_kills()
        return SystemExit(0)

    def flush_kills(self) -> None:
        """Emit the records of kills still being measured (bustd is stopping)."""
        for f in self.emergency.progress.followed if self.emergency is not None else []:
            if f.record is not None:
                self.emit_followed(f, cut_short=True)

    def emit(self, record: Record) -> None:
        """Hand ``record`` to every output; one that fails is logged, the rest still run."""
        for output in self.outputs:
            self.guarded(output, record)

    def guarded(self, output: Callable[..., None], record: Record, *more: object) -> None:
        """Call ``output(record, *more)``; a failure is logged, never raised."""
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

    def report(self, mem: MemInfo, stall: float | None) -> None:
        """Log the periodic status line."""
        stall_text = "" if stall is None else f", {self.cfg.psi_metric} stall {stall:.0f}%"
        swap = (f"{size(mem.swap_free)} of {size(mem.swap_total)}" if mem.swap_total
                else "no swap")
        self.log.info(f"status: {avail_name(mem)} {size(mem.available)} of {size(mem.total)} "
                      f"({pct(mem.available, mem.total)}), SwapFree {swap}{stall_text}, "
                      f"kills {self.kills}")

    def close(self) -> None:
        """Close every descriptor the Monitor holds."""
        if self.emergency is not None:
            self.emergency.close()
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
        while a kill is under way, once it is done and its record written. The
        records of kills still being measured are written first, as they stand."""
        if self.acting:
            self.stopping = True
            return
        raise self.exiting()

    def run(self) -> None:
        """Check, sleep, repeat; returns only by SystemExit (or KeyboardInterrupt)."""
        while True:
            if self.stopping:
                raise self.exiting()
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
                raise self.exiting()
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
                    self.take_answer()
            if self.reloading is not None and self.clock() >= self.reloading.deadline:
                from .reload import give_up
                give_up(self.end_reload(), self.log, self.reload_left)
            if self.reload_left:
                from .reload import reap_left
                reap_left(self.reload_left, self.clock())


def _drain(fd: int) -> None:
    """Empty the non-blocking signal wakeup pipe."""
    try:
        while os.read(fd, 512):
            pass
    except OSError:
        pass  # empty (EAGAIN)


