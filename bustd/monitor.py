"""The loop: wake, read, decide, hand over, record, sleep; an injected clock.

Contract: each check reads memory and decides whether to act and how long to
sleep; in the watch zone the Emergency (emergency.py) acts on the readings
it is handed. No function outside this module takes the Monitor.
"""
# In full: each check reads memory through the sensors (sensors.py) and asks
# the pure functions of decide.py whether to act and how long to sleep (or
# until the kernel's PSI trigger fires). While memory is in the watch zone (a
# little above the levels that act, or for a while after a PSI trigger event)
# a check also reads PSI, swap traffic and zram and hands the readings to the
# Emergency (emergency.py), which owns the kill state, samples the largest
# processes and acts. That code loads the first time memory enters the watch
# zone, reloading's (reload.py) at the first SIGHUP, so an idle daemon holds
# the loop alone. No function outside this module takes the Monitor.
# Every record (outputs.Record) goes to each callable in ``Monitor.outputs``;
# a kill's, from a later check, once what it freed is measured (progress.py).
# Nothing an output does sits between the emergency and the signal, except
# ``Monitor.pre_kill`` (the pre-kill hook), which bounds its own wait.
# The explanations are comments, not docstrings, which an idle daemon holds.

from __future__ import annotations

import os
import select

from .config import Config
from .decide import (
    MIN_SLEEP,
    NO_VICTIM_PAUSE,
    avail_name,
    decide,
    sleep_for,
    thresholds,
    watch_level,
)
from .log import Log, pct, size
from .meminfo import MemInfo
from .outputs import CheckRecord
from .procfs import ProcFS, own_major_faults
from .sensors import Sensors

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

    from .emergency import Emergency, Wakeup
    from .outputs import Record
    from .process import Candidate
    from .procfs import BackgroundRead
    from .progress import Followed
    from .record import KillRecord
    from .reload import Reloading

__all__ = ["Monitor"]

LATE_WAKEUP = 5.0  # woken this much later than asked: stopped, frozen or suspended
WATCH_AFTER_EVENT = 10.0  # seconds of watching after a PSI trigger event


class Monitor:
    """The daemon's state between checks; ``run`` is the loop."""

    # ``clock`` returns monotonic seconds, ``wall`` the time of day for
    # records; ``wait(timeout)`` sleeps up to ``timeout`` seconds or until the
    # PSI trigger has an event and returns the (fd, events) pairs (the real one
    # polls with ``select.poll``), so tests drive the loop in simulated time.
    # ``outputs`` receive every record (KillRecord, WarnRecord, CheckRecord; the
    # log line is the first output), ``pre_kill`` each KillRecord just before
    # its signal, with the background read of the victim's command line;
    # ``max_sleep`` caps the sleep between checks (the systemd watchdog sets it).

    def __init__(self, cfg: Config, fs: ProcFS, log: Log, self_pid: int,
                 clock: Callable[[], float],
                 wait: Callable[[float], list[tuple[int, int]]] | None = None,
                 wall: Callable[[], float] | None = None) -> None:
        self.cfg = cfg
        self.fs = fs
        self.log = log
        self.clock = clock
        self.wall = wall or clock
        self.self_pid = self_pid
        self._poller = select.poll()
        self._wait = wait or self._poll
        # The readings: memory, zram, PSI and its trigger, swap traffic (sensors.py)
        self.sensors = Sensors(cfg, fs, log, self._poller)
        # The kill state, made with the watch-zone modules (load_watch_code)
        self.emergency: Emergency | None = None
        self.next_report = clock() + cfg.report if cfg.report > 0 else float("inf")
        self.watch_until = -1e9
        self.watching = False
        self.trigger_fired = False
        self.acting = False  # a kill is under way: a stop request waits for it
        self.stopping = False
        self.outputs: list[Callable[[Record], None]] = [self._log_record]
        self.pre_kill: list[Callable[[KillRecord, BackgroundRead], None]] = []
        self.max_sleep = float("inf")
        self.scan_s = 0.0  # how long the last scan took
        # SIGHUP: the handler sets reload_wanted; between checks the loop
        # starts ``reloader(now)`` (set by the runtime) and reads its answer
        # without blocking; signals wake the poll through wake_fd.
        self.reloader: Callable[[float], Reloading] | None = None
        self.reload_wanted = False
        self.reloading: Reloading | None = None
        self.reload_left: list[Reloading] = []  # front ends ended but not reaped yet
        self.wake_fd = -1
        self.sensors.open_psi()

    @property
    def kills(self) -> int:
        """Return how many kills were made (signals sent: none in a dry run)."""
        return 0 if self.emergency is None else self.emergency.kills

    def describe(self) -> str:
        """Return the one-line summary of what will be watched and how."""
        cfg, sensors = self.cfg, self.sensors
        mem = sensors.read_mem()
        t = thresholds(cfg, mem)
        psi = "PSI off"
        if sensors.psi_fd >= 0:
            psi = (f"{cfg.psi_metric} stall >= {cfg.psi_cutoff:g}% for {cfg.psi_duration:g} s "
                   f"below {cfg.psi_mem_percent:g}% MemAvailable, ")
            psi += (f"kernel trigger {sensors.trigger_window:g} s window"
                    if sensors.trigger_fd >= 0 else "polled")
            if sensors.cgroup is not None:
                psi += f" on {sensors.psi_path()}"
        scope = ""
        if sensors.cgroup is not None:
            fig = sensors.cgroup_reading
            limit = ("gone" if fig is None else
                     f"{fig.limit_name} {size(fig.limit_kib)}" if fig.limit_kib is not None
                     else "no limit of its own: the machine's MemAvailable")
            scope = f"cgroup {sensors.cgroup.path} ({limit}): "
        kill_unit = "; killing whole cgroups" if cfg.kill_cgroup else ""
        return (f"{scope}SIGTERM at MemAvailable <= {size(t.mem_term)} and SwapFree <= "
                f"{size(t.swap_term)}; SIGKILL at {size(t.mem_kill)} and {size(t.swap_kill)}"
                f"; {psi}; watching below {size(watch_level(cfg, mem))}, "
                f"ranking by {cfg.rank}{kill_unit}{'; DRY RUN' if cfg.dry_run else ''}")

    def _poll(self, timeout: float) -> list[tuple[int, int]]:
        return self._poller.poll(max(1, int(timeout * 1000)))

    def load_watch_code(self) -> Emergency:
        """Return the Emergency, made (its modules loaded) the first time memory runs short."""
        # A machine with memory to spare never holds these modules (issue 7:
        # watching must not raise the idle footprint); they are loaded while
        # memory is still at the watch level, well before any emergency.
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
                                   None if self.sensors.cgroup is None
                                   else self.sensors.cgroup.path)
        return self.emergency

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
        """Use ``new`` from the next check; return the names of the settings that changed."""
        # Settings in reload.FIXED_AT_START keep their running value (said in
        # one line). Rebuilt: the PSI file and trigger when ``psi``/``psi-metric``
        # changed, the zram tree (Sensors.reconfigure), the report timer, the
        # verbose switch, and the Emergency's rules, units and dry-run switch
        # (Emergency.reconfigure).
        from .reload import changes
        new, changed = changes(self.cfg, new, self.log)
        self.cfg = new
        self.log.verbose = new.verbose
        self.sensors.reconfigure(new, changed)
        if {"psi_cutoff", "psi_metric"} & set(changed):
            self.trigger_fired = False  # an event of the trigger closed
        if self.emergency is not None:
            self.emergency.reconfigure(new)
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
        sensors = self.sensors
        # An event of a trigger closed since (a cgroup gone, PSI reopened) is stale.
        fired = self.trigger_fired and sensors.psi_fd >= 0
        self.trigger_fired = False
        if fired:
            self.watch_until = now + WATCH_AFTER_EVENT
        mem = sensors.read_mem()
        short = mem.available <= watch_level(cfg, mem)
        e = self.emergency
        if not short and e is not None:
            e.recovered()  # the next shortage is warned of again
        watching = short or now < self.watch_until
        cands: list[Candidate] | None = None
        faults = -1  # own major faults when this check began (read while watching)
        if watching:
            faults = own_major_faults()
            mem = sensors.with_zram_worth(mem)
            e = self.load_watch_code()
            # What a kill must free to lift MemAvailable above the SIGTERM
            # level: the default avoid list yields to a candidate that frees it.
            e.need_kib = max(0, int(thresholds(cfg, mem).mem_term - mem.available))
            cands = e.sample(now)
            self.scan_s = self.clock() - now
            if not self.watching:
                e.rehearse(cands, self.read_again, sensors.zram, self.wakeup(now, fired, faults))
            self.watching = True
        else:
            self.watching = False
            if e is not None:
                e.stop_watching()
            sensors.zram = []
        settled = [] if e is None else e.follow(now, mem.available + mem.swap_free)
        stall = sensors.pressure(mem, now, watching, fired,
                                 -1e9 if e is None else e.last_act)
        decision = decide(mem, stall.percent, cfg, stall.seconds, stall.swapin, stall.swapout)
        pause = 0.0
        if decision is None:
            if e is not None:
                e.calm()
                if cands is not None and not e.warned:
                    e.warn(mem, stall, cands, now, sensors.machine, sensors.zram)
        else:
            e = self.load_watch_code()
            self.acting = True
            try:
                if cands is None:
                    cands = e.sample(self.clock())
                acted = e.act(decision, stall, cands, sensors.machine, sensors.zram,
                              self.wakeup(now, fired, faults), self.read_fresh)
            finally:
                self.acting = False
            pause = acted.pause
            if acted.signalled:
                sensors.reset_stall()  # the kill made the stall history stale
            mem = sensors.with_zram_worth(sensors.read_mem()) if watching else mem
        for f in settled:  # after any signal of this check: outputs may block
            self.emit_followed(f)
        now = self.clock()
        if now >= self.next_report:
            self.report(mem, stall.percent)
            self.next_report = now + cfg.report
        self.emit(CheckRecord(now, mem, stall.percent, watching, self.scan_s,
                              self.kills, 0 if e is None else len(e.dying)))
        return max(pause, min(sleep_for(mem, cfg, sensors.trigger_fd >= 0, watching),
                              max(MIN_SLEEP, self.next_report - now), self.max_sleep,
                              max(MIN_SLEEP, self.due(now))))

    def wakeup(self, now: float, fired: bool, faults: int) -> Wakeup:
        """Return the Wakeup of the check that began at ``now`` (``fired``: by the PSI trigger)."""
        from .emergency import Wakeup
        return Wakeup(now, "PSI trigger" if fired else "timer", faults)

    def read_again(self) -> tuple[MemInfo, MemInfo]:
        """Read memory now: (what decisions read, the machine's MemInfo)."""
        return self.sensors.read_mem(), self.sensors.machine

    def read_fresh(self) -> tuple[MemInfo, MemInfo]:
        """Read memory now with zram at its worth: (what decisions read, the machine's)."""
        return self.sensors.read_mem(zram=True), self.sensors.machine

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
        if self.sensors.cgroup is None and not cut_short:
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
        self.sensors.close()
        if self.wake_fd >= 0:
            os.close(self.wake_fd)
        self.wake_fd = -1

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
                if fd == self.sensors.trigger_fd:
                    if ev & (select.POLLERR | select.POLLNVAL):
                        self.log.warning("PSI trigger failed: polling from now on")
                        self.sensors.drop_trigger()
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


