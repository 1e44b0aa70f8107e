"""What bustd reads of the machine, and the thrashing rule applied to it: one
set of sensors for the daemon's loop (monitor.py) and ``bustd check`` alike."""
# A source that cannot be read is said once and named in an ``*_error``
# attribute; the readings carry on without it.
# What is read: memory (/proc/meminfo, or with --cgroup the cgroup's files
# through cgroup.py), zram at its RAM worth (zram.py), the PSI file and its
# kernel trigger, the stall rate from PSI's ``total`` counter
# (pressure.StallMeter), the swap-in and swap-out rates from /proc/vmstat (or
# the cgroup's memory.stat), and how long the machine has been thrashing
# (decide.thrashing, timed by pressure.StallRun). Without PSI memory
# thresholds alone decide; without zram swap counts as SwapFree says; without
# swap-in counts the stall alone. The long explanations live in comments, not
# docstrings, which an idle daemon would hold in memory.

from __future__ import annotations

import errno
import os
import select

from .config import Config
from .decide import Stall, thrashing
from .log import Log
from .meminfo import MemInfo, parse_swap_traffic, read_meminfo
from .pressure import Pressure, RateMeter, StallMeter, StallRun, arm_trigger, read_pressure
from .procfs import ProcFS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .cgroup import Cgroup, Figures
    from .zram import Zram

__all__ = ["Sensors"]


class Sensors:
    """The readings of one watched scope (the machine, or ``cfg.cgroup``)."""

    # ``poller`` (the loop's ``select.poll``) gets the kernel trigger's
    # descriptor, when one is armed; ``min_span`` is the shortest interval the
    # rate meters measure over (the check's two readings may be any time apart).

    __slots__ = ("cfg", "fs", "sys", "log", "poller", "stall_meter", "swapin_meter",
                 "swapout_meter", "thrashing", "vmstat_fd", "vmstat_failed", "zram",
                 "zram_error", "mem_fd", "machine", "cgroup", "cgroup_reading",
                 "cgroup_error", "psi_fd", "psi_error", "psi", "trigger_fd", "trigger_window")

    def __init__(self, cfg: Config, fs: ProcFS, log: Log,
                 poller: select.poll | None = None, min_span: float = 0.2) -> None:
        self.cfg = cfg
        self.fs = fs
        self.sys = ProcFS(cfg.sys_root)
        self.log = log
        self.poller = poller
        self.stall_meter = StallMeter(min_span=min_span)
        self.swapin_meter = RateMeter(min_span=min_span)  # pswpin, pages
        self.swapout_meter = RateMeter(min_span=min_span)  # pswpout, pages (the machine's)
        self.thrashing = StallRun()
        self.vmstat_fd = -1
        self.vmstat_failed = False  # said that swap-ins cannot be counted
        self.zram: list[Zram] = []  # the devices last read (while watching)
        self.zram_error: str | None = None  # why /proc/swaps cannot be read
        self.mem_fd = fs.open("meminfo")
        try:
            self.machine = read_meminfo(self.mem_fd)  # the last reading of /proc/meminfo
        except (OSError, ValueError):
            os.close(self.mem_fd)
            raise
        # --cgroup: the watched cgroup's files (cgroup.py, loaded only then),
        # its last reading, and why it cannot be read (a stopped service).
        self.cgroup: Cgroup | None = None
        self.cgroup_reading: Figures | None = None
        self.cgroup_error: str | None = None
        if cfg.cgroup:
            from .cgroup import Cgroup
            self.cgroup = Cgroup(cfg.cgroup)
        self.psi_fd = -1
        self.psi_error: str | None = None  # why the PSI file cannot be read now
        self.psi: Pressure | None = None  # its last reading
        self.trigger_fd = -1
        self.trigger_window = 0.0

    # -- memory -------------------------------------------------------------

    def read_mem(self, zram: bool = False) -> MemInfo:
        """Return what decisions read: the machine's memory, or with --cgroup the cgroup's."""
        # Reads /proc/meminfo (kept in ``machine``) and, with --cgroup, the
        # cgroup's memory files (kept in ``cgroup_reading``; see
        # cgroup.meminfo_of). ``zram``: count zram at its RAM worth with the
        # devices last read. A cgroup that cannot be read (gone) reads as all
        # memory available.
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
            self.cgroup_reading = self.cgroup.read()
        except (OSError, ValueError) as err:
            self.cgroup.close()
            self.cgroup_reading = None
            if self.cgroup_error is None:
                self.log.warning(f"cannot read cgroup {path} ({err}): nothing to watch "
                                 "until it is back")
                self.cgroup_error = str(err)
                self.close_psi()
                self.reset_stall()
            return MemInfo(machine.total, machine.total, 0, 0, path)
        if self.cgroup_error is not None:
            self.cgroup_error = None
            self.log.info(f"cgroup {path} is back: watching it again")
            self.open_psi()
        return meminfo_of(self.cgroup_reading, machine)

    def with_zram_worth(self, mem: MemInfo) -> MemInfo:
        """Return ``mem`` with zram counted at its RAM worth, the devices read anew."""
        # With --cgroup, zram is applied to the machine's swap and the cgroup's
        # reading is built again from it (its swap is bounded by the machine's).
        if self.machine.swap_total <= 0 or self.zram_error is not None:
            return mem
        from .zram import effective_swap, read_zram
        try:
            self.zram = read_zram(self.fs, self.sys)
        except (OSError, ValueError) as err:
            self.log.warning(f"cannot read {self.fs.path('swaps')} ({err}): "
                             "swap counted as SwapFree says from now on")
            self.zram_error = str(err)
            self.zram = []
        if self.cgroup is None:
            return effective_swap(mem, self.zram)
        self.machine = effective_swap(self.machine, self.zram)
        if self.cgroup_reading is None:
            return mem
        from .cgroup import meminfo_of
        return meminfo_of(self.cgroup_reading, self.machine)

    # -- pressure -----------------------------------------------------------

    def psi_path(self) -> str:
        """Return the PSI file watched: the machine's, or the cgroup's memory.pressure."""
        if self.cgroup is not None:
            return self.cgroup.file("memory.pressure")
        return self.fs.path("pressure/memory")

    def open_psi(self, always: bool = False) -> None:
        """Open the PSI file watched and, on a live /proc with a poller, a kernel trigger."""
        # Without PSI (``--psi 0``, a kernel booted with psi=0, a file that
        # cannot be read) says so once and leaves ``psi_fd`` -1 (and why in
        # ``psi_error``): memory thresholds alone decide. Where a trigger is
        # not allowed it polls. ``always``: open the file even with ``--psi 0``
        # (the check reports the pressure all the same).
        cfg = self.cfg
        if cfg.psi_cutoff <= 0 and not always:
            return
        try:
            self.psi_fd = os.open(self.psi_path(), os.O_RDONLY | os.O_CLOEXEC)
            self.psi = read_pressure(self.psi_fd)
        except (OSError, ValueError) as err:
            if self.psi_fd >= 0:
                os.close(self.psi_fd)
                self.psi_fd = -1
            self.psi_error = getattr(err, "strerror", None) or str(err)
            reason = "disabled at boot (psi=0)" if getattr(err, "errno", 0) in (
                errno.EOPNOTSUPP, errno.ENOTSUP) else str(err)
            self.log.warning(f"PSI not available ({reason}): acting on memory thresholds alone")
            return
        if not cfg.live or self.poller is None or cfg.psi_cutoff <= 0:
            return  # a fake tree: its PSI file is no kernel's and takes no trigger
        armed = arm_trigger(self.psi_path(), cfg.psi_metric, cfg.psi_cutoff)
        if armed is None:
            self.log.debug("PSI trigger not allowed here: polling")
            return
        self.trigger_fd, self.trigger_window = armed
        self.poller.register(self.trigger_fd, select.POLLPRI)

    def drop_trigger(self) -> None:
        """Close the kernel trigger, which failed (POLLERR): polling from now on."""
        if self.trigger_fd >= 0:
            if self.poller is not None:
                self.poller.unregister(self.trigger_fd)
            os.close(self.trigger_fd)
        self.trigger_fd = -1

    def close_psi(self) -> None:
        """Close the PSI file and the kernel trigger (before opening them anew)."""
        self.drop_trigger()
        if self.psi_fd >= 0:
            os.close(self.psi_fd)
        self.psi_fd = -1
        self.trigger_window = 0.0
        self.psi_error = None

    def pressure(self, mem: MemInfo, now: float, watching: bool, fired: bool = False,
                 last_act: float = -1e9) -> Stall:
        """Return the stall, how long the machine has been thrashing, swap-ins and -outs."""
        # PSI (and, with swap, ``pswpin`` and ``pswpout`` of /proc/vmstat) is
        # read only while watching. Thrashing (decide.thrashing) is the stall
        # at or above the cutoff and, on a machine with swap, pages swapped
        # back in at ``swapin_rate`` MiB/s or more and at least THRASH_IN_OUT
        # as fast as they go out: a program growing into zram makes the
        # machine stall while more pages go out than come back, and that ends
        # by itself. A trigger event (``fired``) vouches for a stall of at
        # least the cutoff over its window, unless that window reaches back
        # before the last kill (``last_act``).
        if self.psi_fd < 0 or not watching:
            self.reset_stall()
            return Stall(None, 0.0, None)
        try:
            self.psi = read_pressure(self.psi_fd)
        except (OSError, ValueError) as err:
            # Said once per outage; memory thresholds alone decide until the
            # file reads again (a transient EINTR, ENOMEM or torn read must
            # not switch PSI off for good).
            if self.psi_error is None:
                self.log.warning(f"cannot read pressure/memory ({err}): acting on memory "
                                 "thresholds alone until it reads again")
                self.psi_error = getattr(err, "strerror", None) or str(err)
            self.reset_stall()
            return Stall(None, 0.0, None)
        if self.psi_error is not None:
            self.log.info("pressure/memory reads again: PSI back in use")
            self.psi_error = None
        cfg = self.cfg
        self.stall_meter.add(now, self.psi.total(cfg.psi_metric))
        stall = self.stall_meter.percent()
        start = self.stall_meter.start()
        if (fired and now - last_act >= self.trigger_window
                and (stall is None or stall < cfg.psi_cutoff)):
            stall, start = float(cfg.psi_cutoff), now - self.trigger_window
        swapin, swapout = self.swap_rates(now) if mem.swap_total > 0 else (None, None)
        if stall is not None and start is not None:
            self.thrashing.update(start, thrashing(cfg, stall, swapin, swapout))
        return Stall(stall, self.thrashing.seconds(now), swapin, swapout)

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
        self.swapin_meter.add(now, pages[0])
        rate = self.swapin_meter.rate()
        out = None
        if pages[1] is not None:
            self.swapout_meter.add(now, pages[1])
            out = self.swapout_meter.rate()
        return (None if rate is None else rate * PAGE_MIB,
                None if out is None or rate is None else out * PAGE_MIB)

    def _swapped(self) -> tuple[int, int | None] | None:
        """Return the pages swapped in and out so far (None: unknown now)."""
        # The machine's, or with --cgroup the cgroup's swap-ins (its swap-outs
        # are not counted: None). None when unknown now (a cgroup not read); a
        # source that cannot tell is said once and ``vmstat_failed`` set for good.
        if self.cgroup is not None:
            fig = self.cgroup_reading
            if fig is None:
                return None
            if fig.swapins is None:
                self.log.warning(f"{self.cgroup.file('memory.stat')} has no pswpin nor "
                                 "workingset_refault_anon: pressure kills on the stall "
                                 "alone, without telling thrashing from swapping out")
                self.vmstat_failed = True
                return None
            return fig.swapins, None
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
        self.stall_meter.reset()
        self.swapin_meter.reset()
        self.swapout_meter.reset()
        self.thrashing.reset()

    # -- settings and the end -------------------------------------------------

    def reconfigure(self, new: Config, changed: list[str]) -> None:
        """Use ``new`` from the next reading: a new /sys root, and the PSI file and
        trigger opened anew when ``psi``/``psi-metric`` changed (``changed``)."""
        old, self.cfg = self.cfg, new
        if new.sys_root != old.sys_root:
            self.sys = ProcFS(new.sys_root)
            self.zram_error = None
        if {"psi_cutoff", "psi_metric"} & set(changed):
            self.close_psi()
            self.reset_stall()
            self.open_psi()

    def close(self) -> None:
        """Close every descriptor the sensors hold."""
        self.close_psi()
        for fd in (self.mem_fd, self.vmstat_fd):
            if fd >= 0:
                os.close(fd)
        self.mem_fd = self.vmstat_fd = -1
        if self.cgroup is not None:
            self.cgroup.close()
