"""``bustd check``: what bustd sees and would do right now, and never a signal.

One report is gathered once (:func:`gather`) as a plain JSON-ready dict (the
schema is docs/check-schema.json, described in docs/check.md); the text for
people (:func:`to_text`, at most 80 columns) and the JSON for scripts
(:func:`to_json`) are two renderings of that same record.

The readings and the verdict come from the daemon's own code: memory, zram
at its RAM worth, the stall rate from PSI's ``total`` counter, the swap-in
and swap-out rates and how long the machine has been thrashing come from
the daemon's sensors (sensors.Sensors, read twice ``interval`` apart), the
thresholds and the decision from decide.py (thresholds, watch_level,
decide), the sizes and growth of the largest processes from choose.sample
and the kill order with each process's protection from choose.Ranking.
Nothing here imports kill.py or sends a signal: the module runs in the front
end, never in the daemon, and is safe to run anywhere.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
import time
import unicodedata
from typing import Any, Callable

from . import __version__, sig
from .choose import (
    Ranking,
    kernel_scales_oom_score,
    make_rules,
    oom_score_per_kib,
    sample,
    sample_subtree,
)
from .choose import size as size_now
from .config import DEFAULTS, Config
from .decide import (
    THRASH_IN_OUT,
    Decision,
    Stall,
    Thresholds,
    avail_name,
    decide,
    thrashing,
    thresholds,
    watch_level,
)
from .growth import Tracker
from .held import Held, held_text, read_held
from .log import Log, pct, safe, size
from .meminfo import MemInfo
from .pressure import Pressure, StallMeter
from .process import DEAD_STATES, PF_KTHREAD, Candidate, parse_stat
from .procfs import NoSuchProcess, ProcFS
from .sensors import Sensors
from .zram import Zram

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .cgroupkill import Units
    from .freeable import Shared
    from .victim import Rules, Victim

__all__ = ["SCHEMA", "WIDTH", "gather", "quiet_reason", "to_json", "to_text", "width"]

SCHEMA = "bustd-check/1"  # the "schema" field: bumped when a field changes meaning
WIDTH = 80  # the text report never runs wider

# Kinds of skipped processes, in the order the report lists them.
KINDS = ("protected", "bustd", "self", "pid1", "kernel_thread", "zombie", "unreadable")


def _user(uid: int) -> str:
    """Return the user name of ``uid``, or the number when it has none."""
    import pwd
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return str(uid)


def _text(raw: bytes | None) -> str:
    """Return a name or path from /proc as text (invalid UTF-8 as ``\\xNN``)."""
    return (raw or b"").decode("utf-8", "backslashreplace")


def _is_daemon(fs: ProcFS, c: Candidate) -> bool:
    """Return whether ``c`` is a running bustd daemon (its lean runtime).

    The runtime names itself ``bustd`` and runs ``python -S -I .../bustd/lean.py``;
    a daemon never kills itself, so the report shows it as skipped.
    """
    if c.comm != b"bustd":
        return False
    try:
        argv = fs.read_pid(c.pid, "cmdline").split(b"\0")
    except (NoSuchProcess, OSError):
        return False
    return any(a.endswith(b"bustd/lean.py") for a in argv[1:5])


def _stall(first: tuple[float, Pressure] | None, last: tuple[float, Pressure] | None,
           metric: str) -> float | None:
    """Return the stall percentage of ``metric`` between two readings (None: unknown)."""
    if first is None or last is None or last[0] <= first[0]:
        return None
    meter = StallMeter(window=last[0] - first[0], min_span=0.0)
    meter.add(first[0], first[1].total(metric))
    meter.add(last[0], last[1].total(metric))
    return meter.percent()


def quiet_reason(mem: MemInfo, stall: float | None, stall_s: float, cfg: Config,
                 swapin: float | None = None, swapout: float | None = None) -> str:
    """Return why :func:`~bustd.decide.decide` says nothing for these readings.

    Names, for the memory rule and the pressure rule each, the first
    condition that does not hold.
    """
    t = thresholds(cfg, mem)
    avail = avail_name(mem)
    if mem.available > t.mem_term:
        parts = [f"{avail} {size(mem.available)} > {size(t.mem_term)}"]
    else:
        parts = [f"{avail} {size(mem.available)} is low but "
                 f"{'swap free' if mem.scope else 'SwapFree'} "
                 f"{size(mem.swap_free)} > {size(t.swap_term)}"]
    metric, cutoff = cfg.psi_metric, cfg.psi_cutoff
    if cutoff <= 0:
        parts.append("PSI off (--psi 0)")
    elif stall is None:
        parts.append("no stall rate (PSI unavailable, or --interval 0)")
    elif stall < cutoff:
        parts.append(f"{metric} stall {stall:.0f}% < {cutoff:g}%")
    elif mem.available > t.psi_mem:
        parts.append(f"{metric} stall {stall:.0f}% but {avail} {size(mem.available)} > "
                     f"{size(t.psi_mem)} (--psi-mem)")
    elif swapin is not None and swapin < cfg.swapin_rate:
        parts.append(f"{metric} stall {stall:.0f}% >= {cutoff:g}% but swap-in only "
                     f"{swapin:.1f} MiB/s < {cfg.swapin_rate:g} (--swapin-rate): pages going "
                     "out to swap, not thrashing")
    elif swapin is not None and cfg.swapin_rate > 0 and not thrashing(cfg, stall, swapin,
                                                                      swapout):
        parts.append(f"{metric} stall {stall:.0f}% >= {cutoff:g}% but swap-in {swapin:.1f} "
                     f"MiB/s is under {THRASH_IN_OUT:g} of swap-out {swapout or 0:.1f} MiB/s: "
                     "more pages going out than coming back (a program growing into swap), "
                     "not thrashing")
    else:
        parts.append(f"{metric} stall {stall:.0f}% >= {cutoff:g}% seen for {stall_s:.1f} s; "
                     f"the daemon acts once it has lasted {cfg.psi_duration:g} s")
    return "; ".join(parts)


def _zram(z: Zram) -> dict[str, Any]:
    return {"name": z.name, "size_kib": z.size_kib, "used_kib": z.used_kib,
            "stored_kib": z.orig_kib, "ram_kib": z.mem_used_kib,
            "limit_kib": z.mem_limit_kib, "ratio": round(z.ratio, 3),
            "worth": round(z.worth, 3), "room_kib": int(z.room_kib)}


def _not_candidates(fs: ProcFS, known: set[int], self_pid: int) -> list[dict[str, Any]]:
    """Return the processes a scan leaves out: PID 1, kernel threads, zombies, unreadable.

    ``known`` are the PIDs already accounted for; a process that exits now
    is left out, one that started after the scan too.
    """
    out: list[dict[str, Any]] = []
    for pid in sorted(fs.pids()):
        if pid in known or pid == self_pid:
            continue
        try:
            st = parse_stat(fs.read_pid(pid, "stat"))
        except NoSuchProcess:
            if fs.exists_pid(pid):
                out.append({"pid": pid, "name": "", "kind": "unreadable",
                            "reason": "its stat cannot be read"})
            continue
        except ValueError as err:
            out.append({"pid": pid, "name": "", "kind": "unreadable", "reason": str(err)})
            continue
        name = _text(st.comm)
        if pid == 1:
            out.append({"pid": pid, "name": name, "kind": "pid1", "reason": "is PID 1"})
        elif st.flags & PF_KTHREAD:
            out.append({"pid": pid, "name": name, "kind": "kernel_thread",
                        "reason": "is a kernel thread"})
        elif st.state in DEAD_STATES:
            out.append({"pid": pid, "name": name, "kind": "zombie",
                        "reason": "is a zombie: its memory is already freed"})
    return out


class _Quiet(Log):
    """A log that says nothing: the report names what could not be read."""

    __slots__ = ()

    def write(self, level: int, message: str) -> None:
        """Drop ``message``."""


class _Seen:
    """What the check read: memory, zram, pressure and the candidates sampled twice.

    ``mem`` is what decisions read (the machine's or the cgroup's), ``eff``
    the same with zram at its RAM worth, ``machine`` /proc/meminfo as read;
    ``first`` and ``last`` the PSI readings at the interval's start and end
    (None when unavailable), ``stall`` what the daemon's meters made of them.
    """

    def __init__(self, mem: MemInfo, eff: MemInfo, machine: MemInfo, sensors: Sensors,
                 first: tuple[float, Pressure] | None, last: tuple[float, Pressure] | None,
                 stall: Stall, span: float, cands: list[Candidate]) -> None:
        self.mem, self.eff, self.machine = mem, eff, machine
        self.figures = sensors.cgroup_reading
        self.devices = sensors.zram
        self.zram_error = sensors.zram_error
        self.psi_error = sensors.psi_error
        self.first, self.last, self.stall, self.span = first, last, stall, span
        self.cands = cands


def _pressure_now(sensors: Sensors, when: float) -> tuple[float, Pressure] | None:
    """Return (``when``, the PSI reading just taken), or None if PSI cannot be read."""
    if sensors.psi_fd < 0 or sensors.psi_error is not None or sensors.psi is None:
        return None
    return when, sensors.psi


def _mem_of(sensors: Sensors) -> MemInfo:
    """Return what decisions read now; raises cgroup.CgroupError naming a cgroup unread."""
    mem = sensors.read_mem()
    if sensors.cgroup is not None and sensors.cgroup_reading is None:
        from .cgroup import CgroupError
        raise CgroupError(f"cgroup {sensors.cgroup.path}: {sensors.cgroup_error}")
    return mem


def _read(cfg: Config, fs: ProcFS, interval: float, sleep: Callable[[float], None],
          clock: Callable[[], float], scan: Callable[[float, str | None], list[Candidate]]
          ) -> _Seen:
    """Read memory, pressure and swap traffic through the daemon's sensors, and
    ``scan`` the processes (of the cgroup watched), twice ``interval`` seconds
    apart (once when 0)."""
    sensors = Sensors(cfg, fs, _Quiet(), min_span=0.0)  # the meters take any interval
    try:
        sensors.open_psi(always=True)  # reported with --psi 0 too
        mem = _mem_of(sensors)  # fails early (exit 3) on a tree without memory figures
        start = clock()
        stall = sensors.pressure(mem, start, True)
        first = last = _pressure_now(sensors, start)
        where = None if sensors.cgroup is None else sensors.cgroup.path
        cands = scan(start, where)
        span = 0.0
        if interval > 0:
            sleep(interval)
            cands = scan(clock(), where)
            mem = _mem_of(sensors)
            now = clock()
            stall = sensors.pressure(mem, now, True)
            last, span = _pressure_now(sensors, now), now - start
        machine = sensors.machine
        eff = sensors.with_zram_worth(mem)
        seen = _Seen(mem, eff, machine, sensors, first, last, stall, span, cands)
    finally:
        sensors.close()
    return seen


def _scanner(fs: ProcFS, rules: Rules, shared: Shared, units: Units | None,
             me: int) -> Callable[[float, str | None], list[Candidate]]:
    """Return the scan of the candidates (of a cgroup's subtree) at a time, as
    the daemon samples them."""
    from .freeable import ROLLUP_MIN_KIB
    tracker = Tracker()

    def scan(now: float, cgroup: str | None) -> list[Candidate]:
        if cgroup is None:
            found = sample(fs, tracker, now, frozenset((me,)), set(), rules.shifts,
                           shared=shared)
        else:
            assert units is not None  # made with --cgroup
            found = sample_subtree(fs, tracker, now, frozenset((me,)), set(), rules.shifts,
                                   units, cgroup, shared)
        for c in found:
            # The daemon reads smaps_rollup in the background while watching;
            # the check reads it now for the sized processes holding shared
            # memory, so it shows what the daemon would count as theirs alone.
            if c.sized and c.shmem_kib >= ROLLUP_MIN_KIB and shared.learn(c.pid, c.starttime):
                size_now(fs, c, shared)
        return found
    return scan


def gather(cfg: Config, interval: float = 1.0, top: int = 10, config_file: str | None = None,
           sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.monotonic,
           wall: Callable[[], float] = time.time, self_pid: int | None = None
           ) -> dict[str, Any]:
    """Return the report of one check (see docs/check-schema.json).

    Samples PSI's ``total`` counters and the sizes of the largest processes
    twice, ``interval`` seconds apart (once when 0), then reads memory and
    zram, decides as the daemon would, and ranks every candidate. ``top``
    candidates are listed (0: all). Never signals. Raises OSError or
    ValueError if the tree's meminfo or process list cannot be read,
    cgroup.CgroupError if the ``--cgroup`` cannot.
    """
    from .freeable import Shared
    fs = ProcFS(cfg.proc_root)
    me = os.getpid() if self_pid is None else self_pid
    rules = make_rules(cfg, me)
    shared = Shared(fs)
    units = None
    if cfg.cgroup or cfg.kill_cgroup:
        from .cgroupkill import units_of
        units = units_of(fs)[0]
    seen = _read(cfg, fs, interval, sleep, clock, _scanner(fs, rules, shared, units, me))
    eff, stall = seen.eff, seen.stall
    t = thresholds(cfg, eff)
    watch = watch_level(cfg, eff)
    decision = decide(eff, stall.percent, cfg, stall.seconds, stall.swapin, stall.swapout)

    # Every candidate in kill order, each one's protection read as the daemon does.
    daemons = [c for c in seen.cands if _is_daemon(fs, c)]
    cands = [c for c in seen.cands if c not in daemons]
    # Growth is priced against the machine's RAM + swap, as oom_score is.
    need = max(0, int(t.mem_term - eff.available))  # what a kill must free (as the daemon)
    ranking = Ranking(fs, cands, rules,
                      oom_score_per_kib(seen.machine, kernel_scales_oom_score()),
                      cfg.kill_pgroup, None, units, cfg.kill_cgroup, shared, need)
    victims = []
    while True:
        v = ranking.next()
        if v is None:
            break
        victims.append(v)
    skipped = _skipped(fs, ranking, victims, cands, daemons, me)
    listed = [_listed(fs, shared, ranking, i, v)
              for i, v in enumerate(victims[:top] if top else victims, 1)]
    # What holds memory outside processes (a kill frees none of it).
    try:
        outside: Held | None = read_held(fs)
    except (OSError, ValueError):
        outside = None
    verdict = _verdict(cfg, decision, seen, victims,
                       _held_back(decision, victims, cands, seen, t, clock))
    return {
        "schema": SCHEMA,
        "version": __version__,
        "time": round(wall(), 3),
        "proc_root": cfg.proc_root,
        "config_file": config_file,
        "euid": os.geteuid(),
        "interval_s": round(seen.span, 3),
        **_readings(cfg, seen, outside),
        "thresholds": {
            "sigterm": {"mem_kib": int(t.mem_term), "swap_kib": int(t.swap_term)},
            "sigkill": {"mem_kib": int(t.mem_kill), "swap_kib": int(t.swap_kill)},
            "psi": {"enabled": cfg.psi_cutoff > 0, "cutoff_percent": cfg.psi_cutoff,
                    "metric": cfg.psi_metric, "duration_s": cfg.psi_duration,
                    "swapin_rate_mib_s": cfg.swapin_rate,
                    "mem_kib": int(t.psi_mem)},
            "watch_kib": int(watch), "rank": cfg.rank,
            "kill_pgroup": cfg.kill_pgroup, "dry_run": cfg.dry_run},
        "settings": {key: getattr(cfg, key) for key in DEFAULTS},
        "watching": eff.available <= watch,
        "decision": verdict,
        "candidates_total": len(victims),
        "candidates": listed,
        "skipped": skipped,
        "need_kib": need,
    }


def _verdict(cfg: Config, decision: Decision | None, seen: _Seen, victims: list[Victim],
             held_back: str | None) -> dict[str, Any]:
    """Return the report's decision: what the daemon would do now, and why."""
    if decision is None:
        stall = seen.stall
        return {"action": "none",
                "reason": quiet_reason(seen.eff, stall.percent, stall.seconds, cfg,
                                       stall.swapin, stall.swapout),
                "victim_pid": None, "note": None}
    note = None
    if not victims:
        note = "no process may be killed"
    elif held_back is not None:
        note = f"the daemon would not kill: {held_back}"
    elif cfg.dry_run:
        note = "dry run: the daemon would only log the kill line"
    return {"action": sig.name(decision.signal), "reason": decision.reason,
            "victim_pid": victims[0].candidate.pid if victims else None, "note": note}


def _readings(cfg: Config, seen: _Seen, outside: Held | None) -> dict[str, Any]:
    """Return the report's fields of what was read: cgroup, memory, held, swap, pressure."""
    mem, eff, figures, stall = seen.mem, seen.eff, seen.figures, seen.stall
    some = _stall(seen.first, seen.last, "some")
    full = _stall(seen.first, seen.last, "full")
    last = seen.last
    return {
        "cgroup": None if figures is None else {
            "path": figures.path, "current_kib": figures.current_kib,
            "limit_kib": figures.limit_kib, "limit_name": figures.limit_name or None,
            "reclaimable_kib": figures.reclaimable_kib},
        "memory": {"total_kib": mem.total, "available_kib": mem.available,
                   "available_percent": round(100.0 * mem.available / mem.total, 2),
                   "user_kib": mem.user},
        "held": None if outside is None else {
            "shmem_kib": outside.shmem, "hugetlb_kib": outside.hugetlb,
            "slab_unreclaimable_kib": outside.slab, "other_kib": outside.other,
            "outside_kib": outside.outside, "significant": outside.significant(),
            "tmpfs": [{"mount": point, "used_kib": kib} for point, kib in outside.tmpfs]},
        "swap": {"total_kib": mem.swap_total, "free_kib": mem.swap_free,
                 "effective_free_kib": eff.swap_free,
                 "zram": [_zram(z) for z in seen.devices], "zram_error": seen.zram_error},
        "pressure": {
            "available": seen.psi_error is None, "error": seen.psi_error,
            "metric": cfg.psi_metric,
            "some_percent": None if some is None else round(some, 2),
            "full_percent": None if full is None else round(full, 2),
            "some_avg10": last[1].some_avg10 if last else None,
            "full_avg10": last[1].full_avg10 if last else None,
            "stall_percent": None if stall.percent is None else round(stall.percent, 2),
            "swapin_mib_s": None if stall.swapin is None else round(stall.swapin, 3),
            "swapout_mib_s": None if stall.swapout is None else round(stall.swapout, 3),
            "held_s": round(stall.seconds, 3)},
    }


def _skipped(fs: ProcFS, ranking: Ranking, victims: list[Victim], cands: list[Candidate],
             daemons: list[Candidate], me: int) -> list[dict[str, Any]]:
    """Return who is never killed and why, and who is no candidate, in the report's order."""
    skipped: list[dict[str, Any]] = [
        {"pid": c.pid, "name": _text(c.comm), "kind": "protected",
         "reason": why + (f"; {ranking.notes[c.pid]}" if c.pid in ranking.notes else "")}
        for c, why in ranking.skipped]
    skipped += [{"pid": c.pid, "name": _text(c.comm), "kind": "bustd",
                 "reason": "is a running bustd (a daemon never kills itself)"} for c in daemons]
    skipped.append({"pid": me, "name": "bustd check", "kind": "self",
                    "reason": "is this check"})
    seen = {v.candidate.pid for v in victims} | {s["pid"] for s in skipped}
    for c in ranking.ranked:
        if c.pid not in seen:
            skipped.append({"pid": c.pid, "name": _text(c.comm), "kind": "unreadable",
                            "reason": "exited or turned unreadable during the check"})
    skipped += _not_candidates(fs, {c.pid for c in cands} | {c.pid for c in daemons}, me)
    skipped.sort(key=lambda s: (KINDS.index(s["kind"]), s["pid"]))
    return skipped


def _listed(fs: ProcFS, shared: Shared, ranking: Ranking, rank: int, v: Victim
            ) -> dict[str, Any]:
    """Return the report's entry of the candidate ranked ``rank``, its sizes read now."""
    c, d = v.candidate, v.details
    size_now(fs, c, shared)  # its sizes now, as the kill record reads them
    known = c.growth_s > 0
    return {
        "rank": rank, "pid": c.pid, "name": _text(c.comm), "exe": _text(d.exe),
        "uid": d.uid, "user": _user(d.uid), "freeable_kib": c.freeable_kib,
        "rss_kib": c.rss_kib, "swap_kib": c.swap_kib, "shmem_kib": c.shmem_kib,
        "own_shmem_kib": c.own_shmem_kib, "file_kib": c.file_kib,
        "growth_kib": c.growth_kib if known else None,
        "growth_s": c.growth_s if known else None,
        "oom_score": c.oom_score, "oom_score_adj": d.oom_score_adj,
        "score": round(c.badness, 1), "group": [m.pid for m in v.group],
        "avoided": ("--default-avoid" if c.session else "--avoid" if c.avoid_shift
                    else None),
        "note": ranking.notes.get(c.pid)}


def _held_back(decision: Decision | None, victims: list[Victim], cands: list[Candidate],
               seen: _Seen, t: Thresholds, clock: Callable[[], float]) -> str | None:
    """Return why the daemon's checks of progress (progress.py) would hold the kill
    back (None: they would not). With no kills behind it, only "killing cannot
    end it" can."""
    if decision is None or not victims:
        return None
    from .progress import Progress, expected_kib, shortfall
    eff = seen.eff
    if decision.cause == "pressure":
        short = shortfall(eff, t.psi_mem, float("inf"))
    else:
        short = shortfall(eff, t.mem_term, t.swap_term)
    first = victims[0]
    gate = Progress().gate(clock(), short,
                           sum(expected_kib(c) for c in (first.candidate, *first.group)),
                           sum(expected_kib(c) for c in cands),
                           seen.machine.outside if seen.figures is None else 0)
    return None if gate.kill else gate.why


def to_json(report: dict[str, Any]) -> str:
    """Return ``report`` as one JSON document and a newline."""
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"


# -- text ------------------------------------------------------------------

def _short(kib: float) -> str:
    """Return a size in at most 6 characters: ``512K``, ``31.5M``, ``310M``, ``1.2G``."""
    for unit, scale in (("T", 1 << 30), ("G", 1 << 20), ("M", 1 << 10)):
        if kib >= scale:
            value = kib / scale
            return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return f"{kib:.0f}K"


def width(text: str) -> int:
    """Return how many terminal columns ``text`` takes (wide East Asian characters: 2)."""
    return sum(0 if unicodedata.combining(ch) else
               2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _printable(text: str) -> str:
    """Return ``text`` with control characters and the like escaped (``\\n``)."""
    return safe(text.encode("utf-8", "surrogateescape"), 1 << 16)


def _cut(text: str, columns: int, keep_end: bool = False) -> str:
    """Return ``text`` made printable, in at most ``columns`` columns, padded to them.

    A cut is marked with '...', at the end (or at the start with ``keep_end``).
    """
    text = _printable(text)
    if width(text) > columns:
        chars = list(text)
        while width("".join(chars)) > columns - 3:
            chars.pop(0 if keep_end else -1)
        text = "..." + "".join(chars) if keep_end else "".join(chars) + "..."
    return text + " " * (columns - width(text))


def _wrap(text: str, first: str, rest: str) -> list[str]:
    """Return ``text`` wrapped to WIDTH after ``first`` (then ``rest``), never
    between a number and its unit (``22.4 GiB``)."""
    glued = re.sub(r"(\d) (GiB|MiB|KiB|s\b)", "\\1\0\\2", _printable(text))
    return [line.replace("\0", " ") for line in textwrap.wrap(
        glued, WIDTH, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False)]


def _field(label: str, text: str) -> list[str]:
    """Return ``label`` and ``text`` wrapped to WIDTH, the text indented after the label."""
    return _wrap(text, f"{label:<10}", " " * 10) or [label]


def _para(text: str) -> list[str]:
    """Return ``text`` wrapped to WIDTH, flush left, continued two spaces in."""
    return _wrap(text, "", "  ")


def to_text(r: dict[str, Any]) -> str:
    """Return the report for people: at most WIDTH columns a line."""
    out = [*_state_lines(r), "", *_rule_lines(r), "", *_decision_lines(r), "",
           *_candidate_lines(r), "", *_skipped_lines(r)]
    return "\n".join(line.rstrip() for line in out) + "\n"


def _avail(r: dict[str, Any]) -> str:
    """Return the name of the available memory the report speaks of."""
    return "MemAvailable" if r["cgroup"] is None else "cgroup available"


def _state_lines(r: dict[str, Any]) -> list[str]:
    """Return the report's head: what was read (memory, swap, pressure, watching)."""
    out: list[str] = []
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["time"]))
    source = f", config {r['config_file']}" if r["config_file"] else ""
    out += _field("bustd", f"{r['version']} check at {when} of {r['proc_root']}{source}")
    if r["euid"] != 0:
        out += _field("note", f"run as uid {r['euid']}, not root: other users' executables "
                              "may be unreadable here, and name rules cannot match them")
    m, s, p, cg = r["memory"], r["swap"], r["pressure"], r["cgroup"]
    avail = _avail(r)
    if cg is not None:
        limit = (f"{cg['limit_name']} {size(cg['limit_kib'])}" if cg["limit_kib"] is not None
                 else "no limit of its own: the machine's memory")
        out += _field("cgroup", f"{cg['path']}: {size(cg['current_kib'])} in use "
                                f"({size(cg['reclaimable_kib'])} reclaimable), {limit}")
    out += _field("memory", f"{avail} {size(m['available_kib'])} of "
                            f"{size(m['total_kib'])} ({m['available_percent']:.1f}%)"
                  + (f"; user memory {size(m['user_kib'])}" if cg is None else ""))
    h = r["held"]
    if h is not None and cg is None:
        held = Held(m["total_kib"], m["available_kib"], 0, h["shmem_kib"], h["hugetlb_kib"],
                    h["slab_unreclaimable_kib"], [(x["mount"], x["used_kib"]) for x in h["tmpfs"]])
        text = held_text(held).replace(
            f"{size(held.other)} more", f"{size(h['other_kib'])} more")
        out += _field("outside", f"{size(h['outside_kib'])} held outside processes"
                                 + (", the reason memory is short" if h["significant"] else "")
                                 + f": {text}")
    if s["total_kib"]:
        swap = (f"SwapFree {size(s['free_kib'])} of {size(s['total_kib'])} "
                f"({pct(s['free_kib'], s['total_kib'])})")
        if s["zram"]:
            swap += f", worth {size(s['effective_free_kib'])} counting zram at its RAM worth"
        out += _field("swap", swap)
        for z in s["zram"]:
            out += _field("", f"{z['name']}: {size(z['stored_kib'])} stored in "
                              f"{size(z['ram_kib'])} of RAM (ratio {z['ratio']:.1f}), "
                              f"room for {size(z['room_kib'])} more")
        if s["zram_error"]:
            out += _field("", f"zram unreadable ({s['zram_error']}): swap counted as is")
    else:
        out += _field("swap", "none")
    if not p["available"]:
        out += _field("pressure", f"PSI not available ({p['error']})")
    elif p["some_percent"] is None:
        out += _field("pressure", f"avg10 some {p['some_avg10']:.2f}% full "
                                  f"{p['full_avg10']:.2f}% (no stall rate with --interval 0)")
    else:
        out += _field("pressure", f"stalled some {p['some_percent']:.1f}% full "
                                  f"{p['full_percent']:.1f}% of the last {r['interval_s']:.1f} s"
                                  f" (avg10 {p['some_avg10']:.2f}% / {p['full_avg10']:.2f}%)")
    t = r["thresholds"]
    out += _field("watching", ("yes" if r["watching"] else "no") +
                  f" (below {avail} {size(t['watch_kib'])})")
    return out


def _rule_lines(r: dict[str, Any]) -> list[str]:
    """Return the levels, the pressure rule, the ranking and the avoid list in force."""
    out: list[str] = []
    t, avail = r["thresholds"], _avail(r)
    free = "swap free" if r["cgroup"] is not None else "SwapFree"
    out += _field("SIGTERM", f"at {avail} <= {size(t['sigterm']['mem_kib'])} and "
                             f"{free} <= {size(t['sigterm']['swap_kib'])}")
    out += _field("SIGKILL", f"at {avail} <= {size(t['sigkill']['mem_kib'])} and "
                             f"{free} <= {size(t['sigkill']['swap_kib'])}")
    psi = t["psi"]
    out += _field("pressure", (
        f"SIGTERM at {psi['metric']} stall >= {psi['cutoff_percent']:g}% (and swap-in >= "
        f"{psi['swapin_rate_mib_s']:g} MiB/s and {THRASH_IN_OUT:g} of swap-out, with swap) "
        f"for {psi['duration_s']:g} s with "
        f"{avail} <= {size(psi['mem_kib'])}")
        if psi["enabled"] else "off (--psi 0)")
    extras = "".join((", process groups" if t["kill_pgroup"] else "",
                      ", DRY RUN" if t["dry_run"] else ""))
    out += _field("ranking", f"by {t['rank']}{extras}")
    listed = [g for g in r["settings"]["default_avoid"].split("|") if g]
    out += _field("avoided", f"{len(listed)} executables of the default avoid list "
                             "(--default-avoid; --print-config shows them), yielding to "
                             f"any candidate that frees {size(r['need_kib'])}"
                  if listed else "no default avoid list (--default-avoid '')")
    return out


def _decision_lines(r: dict[str, Any]) -> list[str]:
    """Return what the daemon would do now, and why."""
    out: list[str] = []
    d = r["decision"]
    if d["action"] == "none":
        out += _field("decision", f"nothing to do: {d['reason']}")
    else:
        victim = next((c for c in r["candidates"] if c["pid"] == d["victim_pid"]), None)
        whom = (f" to pid {victim['pid']} ({victim['name']})" if victim
                else f" to pid {d['victim_pid']}" if d["victim_pid"] else "")
        out += _field("decision", f"{d['action']}{whom}: {d['reason']}")
        if d["note"]:
            out += _field("", d["note"])
    return out


def _candidate_lines(r: dict[str, Any]) -> list[str]:
    """Return the candidates in kill order, three lines each."""
    out: list[str] = []
    cands = r["candidates"]
    growth = f"; growth over {r['interval_s']:.1f} s" if r["interval_s"] else ""
    out += _para(f"candidates in kill order ({len(cands)} of {r['candidates_total']}{growth}):")
    if cands:
        out.append(f"{'PID':>7} {'NAME':<15} {'USER':<8} {'FREES':>6} {'SWAP':>6} "
                   f"{'GROWTH':>6} {'OOM':>5} {'ADJ':>5} {'SCORE':>7}")
    for c in cands:
        g = "?" if c["growth_kib"] is None else "+" + _short(c["growth_kib"])
        out.append(f"{c['pid']:>7} {_cut(c['name'], 15)} {_cut(c['user'], 8)} "
                   f"{_short(c['freeable_kib']):>6} {_short(c['swap_kib']):>6} {g:>6} "
                   f"{c['oom_score']:>5} {c['oom_score_adj']:>5} {c['score']:>7.0f}")
        group = f" (+{len(c['group'])} of its group)" if c["group"] else ""
        exe = _cut(c["exe"], WIDTH - 8 - len(group), keep_end=True) if c["exe"] \
            else "(executable unknown)"
        out.append(f"{'':8}{exe.rstrip()}{group}")
        own = f" (its own {_short(c['own_shmem_kib'])})" if c["own_shmem_kib"] else ""
        holds = (f"holds RSS {_short(c['rss_kib'])}: shmem {_short(c['shmem_kib'])}{own}, "
                 f"file {_short(c['file_kib'])}")
        if c["avoided"]:
            holds += f"; avoided ({c['avoided']})"
        out.append(f"{'':8}{_cut(holds, WIDTH - 8).rstrip()}")
        if c["note"]:
            out.append(f"{'':8}{_cut(c['note'], WIDTH - 8).rstrip()}")
    return out


def _skipped_lines(r: dict[str, Any]) -> list[str]:
    """Return who is never killed and why, and the count of those that are no candidates."""
    out: list[str] = []
    users = [x for x in r["skipped"] if x["kind"] in ("protected", "bustd", "self")]
    out += _para(f"never killed ({len(users)}):")
    if users:
        out.append(f"{'PID':>7} {'NAME':<15} WHY")
    for x in users:
        out.append(f"{x['pid']:>7} {_cut(x['name'], 15)} {_cut(x['reason'], WIDTH - 24)}")
    rest = {k: [x for x in r["skipped"] if x["kind"] == k]
            for k in ("pid1", "kernel_thread", "zombie", "unreadable")}
    words = [f"PID 1 ({x['name']})" for x in rest["pid1"]]
    words += [f"{len(rest[k])} {one if len(rest[k]) == 1 else many}" for k, one, many in (
        ("kernel_thread", "kernel thread", "kernel threads"), ("zombie", "zombie", "zombies"),
        ("unreadable", "exited or unreadable", "exited or unreadable")) if rest[k]]
    if words:
        out += _para("not candidates: " + ", ".join(words))
    return out
