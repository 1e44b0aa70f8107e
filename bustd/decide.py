"""Pure decisions: the thresholds, whether to act and why, when to warn, how long to sleep."""
# No I/O: each function takes a MemInfo reading (and the stall the Monitor
# measured) and the frozen Config, so the rules are tested with simulated
# readings and time (tests/unit/test_decide.py) and shared by the daemon and
# ``bustd check``.

from __future__ import annotations

from . import sig
from .log import pct, size

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .config import Config
    from .meminfo import MemInfo

__all__ = ["DRY_RUN_PAUSE", "MIN_SLEEP", "NO_VICTIM_PAUSE", "THRASH_IN_OUT", "WATCH_MARGIN_KIB",
           "Decision", "Stall", "Thresholds", "avail_name", "decide", "sleep_for",
           "thrashing", "thresholds", "warning", "watch_level"]

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
WARN_STALL = 0.5  # a stall of this share of the cutoff is "approaching" it (--warn)
# Thrashing brings pages back in about as fast as it sends them out (each
# page read in evicts another); a program growing into swap sends out more
# than comes back, by its growth. Chosen from the VM runs of issue 14
# (notes in README.md, "How it decides"): swap-in over swap-out, over one
# second, was 0.76-1.46 while scenario 3 thrashed and at most 0.49 while
# scenarios 8-10 grew into zram (the kernel's workingset_activate_anon and
# workingset_restore_anon told them apart worse: activate followed the
# re-reads of the growing load and stayed 0 in scenario 3, restore was 0).
THRASH_IN_OUT = 0.6


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
    # The --mem percentages are of user memory (``mem.user``: MemAvailable +
    # AnonPages, as earlyoom 1.8), not MemTotal: a tmpfs file or a shared
    # segment that no kill frees shrinks the level with it, so the level can
    # always be reached by killing and a full /dev/shm alone never makes an
    # emergency (issue 14). --psi-mem, --watch and --warn stay of MemTotal:
    # they say how short memory is, not whether a kill can end it.
    return Thresholds(
        _lower(cfg.mem_term_percent, mem.user, cfg.mem_term_kib),
        _lower(cfg.mem_kill_percent, mem.user, cfg.mem_kill_kib),
        _lower(cfg.swap_term_percent, mem.swap_total, cfg.swap_term_kib),
        _lower(cfg.swap_kill_percent, mem.swap_total, cfg.swap_kill_kib),
        mem.total * cfg.psi_mem_percent / 100.0)


def watch_level(cfg: Config, mem: MemInfo) -> float:
    """Return the MemAvailable (KiB) under which bustd watches closely."""
    # ``--watch`` percent of MemTotal (or the ``--warn`` level, if higher), and
    # at least WATCH_MARGIN_KIB above the levels that act (the terminate level
    # as resolved, so an absolute ``-M`` counts as given), so every decision
    # and warning has a growth history and a stall history behind it, even on
    # a small machine, where a percentage is little.
    t = thresholds(cfg, mem)
    return max(mem.total * max(cfg.watch_percent, cfg.warn_percent) / 100.0,
               max(t.psi_mem, t.mem_term) + WATCH_MARGIN_KIB)


class Stall:
    """What PSI said at one check: the stall percentage (None before a rate is
    known), how long the machine has been thrashing, and swap-ins and
    swap-outs in MiB/s (None without swap, or unknown)."""

    __slots__ = ("percent", "seconds", "swapin", "swapout")

    def __init__(self, percent: float | None, seconds: float, swapin: float | None,
                 swapout: float | None = None) -> None:
        self.percent = percent
        self.seconds = seconds
        self.swapin = swapin
        self.swapout = swapout


def thrashing(cfg: Config, stall: float | None, swapin: float | None,
              swapout: float | None) -> bool:
    """Return whether one reading is thrashing: the stall at or above the cutoff and,
    with swap, pages coming back in at ``swapin_rate`` MiB/s or more and at least
    THRASH_IN_OUT as fast as they go out."""
    # ``swapin`` None: no swap, or swap-ins unknown (the stall alone decides);
    # ``swapout`` None: unknown (a cgroup's memory.stat without pswpout):
    # swap-ins alone. ``swapin_rate`` 0: the stall alone.
    if stall is None or cfg.psi_cutoff <= 0 or stall < cfg.psi_cutoff:
        return False
    if swapin is None or cfg.swapin_rate <= 0:
        return True
    return swapin >= cfg.swapin_rate and (swapout is None or swapin >= THRASH_IN_OUT * swapout)


class Decision:
    """What to do now: the first signal to send, why, and the cause ("memory", "pressure")."""

    __slots__ = ("signal", "reason", "cause")

    def __init__(self, signum: int, reason: str, cause: str = "memory") -> None:
        self.signal = signum
        self.reason = reason
        self.cause = cause

    def __repr__(self) -> str:
        return f"Decision({sig.name(self.signal)}, {self.reason!r})"


def avail_name(mem: MemInfo) -> str:
    """Return what ``mem.available`` is called: a cgroup's (--cgroup) is not MemAvailable."""
    return f"cgroup {mem.scope} available" if mem.scope else "MemAvailable"


def _mem_reason(mem: MemInfo, mem_limit: float, swap_limit: float) -> str:
    avail, free = avail_name(mem), "swap free" if mem.scope else "SwapFree"
    swap = (f"{free} {size(mem.swap_free)} ({pct(mem.swap_free, mem.swap_total)}) "
            f"<= {size(swap_limit)}" if mem.swap_total else "no swap")
    return (f"{avail} {size(mem.available)} ({pct(mem.available, mem.total)}) "
            f"<= {size(mem_limit)}, {swap}")


def decide(mem: MemInfo, stall: float | None, cfg: Config,
           stall_s: float = float("inf"), swapin: float | None = None,
           swapout: float | None = None) -> Decision | None:
    """Return the Decision for one reading, or None when all is well."""
    # ``mem`` carries swap at its real worth (zram counted by what it frees,
    # see zram.py). SIGKILL when MemAvailable and SwapFree are both at their
    # kill levels; SIGTERM when both are at their terminate levels (no swap
    # counts as none free). Pressure: SIGTERM when the stall percentage
    # ``stall`` is at least ``psi_cutoff``, the machine has been thrashing
    # for ``stall_s >= psi_duration`` seconds (the stall at or above the
    # cutoff and, with swap, pages swapped back in at ``swapin`` MiB/s, at
    # least ``swapin_rate`` and THRASH_IN_OUT of the swap-out, all along: the
    # Monitor measures that, see :func:`thrashing`), and
    # MemAvailable is at or below ``psi_mem_percent``. So pressure alone never
    # kills while memory is plentiful, and a stall the kernel resolves by
    # swapping out (a program growing into zram) never kills.
    t = thresholds(cfg, mem)
    if mem.available <= t.mem_kill and mem.swap_free <= t.swap_kill:
        return Decision(sig.SIGKILL, _mem_reason(mem, t.mem_kill, t.swap_kill))
    if mem.available <= t.mem_term and mem.swap_free <= t.swap_term:
        return Decision(sig.SIGTERM, _mem_reason(mem, t.mem_term, t.swap_term))
    if (cfg.psi_cutoff > 0 and stall is not None and stall >= cfg.psi_cutoff
            and stall_s >= cfg.psi_duration and mem.available <= t.psi_mem):
        held = f" for {stall_s:.1f} s" if stall_s < float("inf") else ""
        swapped = f" and swap-in {swapin:.1f} MiB/s" if swapin is not None else ""
        if swapin is not None and swapout:
            swapped += f" ({swapin / swapout:.2f} of swap-out)"
        avail = avail_name(mem)
        return Decision(sig.SIGTERM, (
            f"memory {cfg.psi_metric} stall {stall:.0f}% >= {cfg.psi_cutoff:g}%{swapped}{held} "
            f"with "
            f"{avail} {size(mem.available)} ({pct(mem.available, mem.total)}) "
            f"<= {cfg.psi_mem_percent:g}%"), "pressure")
    return None


def warning(mem: MemInfo, stall: float | None, cfg: Config) -> Decision | None:
    """Return a Decision with signal 0 when a kill may come soon, else None."""
    # Off unless ``warn_percent`` > 0. "memory": MemAvailable at or below
    # ``warn_percent`` of MemTotal and SwapFree at or below ``warn_percent``
    # of SwapTotal (each never below its terminate level; no swap counts as
    # none free), the kill rule with a higher level. "pressure": a stall of
    # at least WARN_STALL of the cutoff while MemAvailable is at or below
    # ``psi_mem_percent``, where a stall that lasts becomes a kill.
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
            f"{cfg.psi_cutoff:g}%) with {avail_name(mem)} {size(mem.available)} "
            f"({pct(mem.available, mem.total)}) <= {cfg.psi_mem_percent:g}%"), "pressure")
    return None


def sleep_for(mem: MemInfo, cfg: Config, trigger_armed: bool, watching: bool = False) -> float:
    """Return seconds until the next check, in proportion to the headroom."""
    # Both MemAvailable and SwapFree must fall for a kill, so the time to
    # reach the thresholds is the sum of both headrooms over their fill rates.
    # At least MIN_SLEEP; at most 1 s when polling or while watching (growth
    # and stall must be sampled); at most 10 s while a PSI trigger stands guard.
    t = thresholds(cfg, mem)
    seconds = (max(0.0, mem.available - t.mem_term) / MEM_FILL_KIB_S
               + max(0.0, mem.swap_free - t.swap_term) / SWAP_FILL_KIB_S)
    cap = (MAX_SLEEP_TRIGGER if trigger_armed and not watching
           and mem.available > t.psi_mem else MAX_SLEEP_POLLING)
    return max(MIN_SLEEP, min(cap, seconds))
