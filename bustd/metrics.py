"""--metrics-file PATH: Prometheus text format for node_exporter's textfile collector.

The file is rewritten whole at most every INTERVAL seconds, and only at the
end of a check (bustd adds no wakeup of its own): rendered in the loop
(:func:`render`, pure), written by a background thread to a temporary file
in the same directory and renamed over PATH, so a scrape never sees half a
file. The temporary name starts with a dot and ends in ``.tmp``: the
collector reads only ``*.prom``.

Counters start at 0 for every signal and cause, so ``increase()`` sees the
first kill. See README.md for the series and a sample alert rule.
"""

from __future__ import annotations

from . import __version__, sig
from .background import Background, said_failing
from .held import Held, read_held
from .log import Log
from .pressure import parse_pressure
from .procfs import ProcFS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .outputs import CheckRecord, Record
    from .spawn import Children

__all__ = ["INTERVAL", "Metrics", "Snapshot", "render"]

INTERVAL = 5.0  # seconds at least between two writes of the file
CAUSES = ("memory", "pressure")
SIGNALS = ("SIGTERM", "SIGKILL")
CHILD_KINDS = ("pre-kill hook", "post-kill hook", "notification")


class Snapshot:
    """Everything one rendering of the file shows."""

    __slots__ = ("check", "kills", "dry_runs", "warnings", "last_kill", "psi", "stall_ratio",
                 "checks", "child_failures", "children", "vain", "freed_kib", "held")

    def __init__(self, check: CheckRecord, kills: dict[tuple[str, str], int],
                 dry_runs: dict[str, int], warnings: dict[str, int], last_kill: float,
                 psi: dict[str, int] | None, stall_ratio: float | None, checks: int,
                 child_failures: dict[str, int] | None, vain: int = 0, freed_kib: int = 0,
                 held: Held | None = None) -> None:
        self.check = check
        self.kills = kills
        self.dry_runs = dry_runs
        self.warnings = warnings
        self.last_kill = last_kill
        self.psi = psi  # stalled microseconds so far, by "some"/"full"; None without PSI
        self.stall_ratio = stall_ratio
        self.checks = checks
        self.child_failures = child_failures  # None when bustd starts no children
        self.vain = vain  # kills that freed far less than expected (issue 14)
        self.freed_kib = freed_kib  # memory the kills gave back, as measured
        self.held = held  # memory outside processes (held.py); None if unreadable


def _number(value: float) -> str:
    if value != value:
        return "NaN"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _label(text: str) -> str:
    """Return ``text`` escaped as a Prometheus label value."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(s: Snapshot) -> str:
    """Return the metrics file for ``s`` (Prometheus text exposition format 0.0.4)."""
    out: list[str] = []

    def metric(name: str, kind: str, help_: str,
               samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(f"{name}{labels} {_number(v)}" for labels, v in samples)

    c = s.check
    metric("bustd_info", "gauge", "bustd's version (always 1).",
           [(f'{{version="{__version__}"}}', 1)])
    metric("bustd_kills_total", "counter",
           "Processes killed by bustd, by the last signal sent and the reason (memory or "
           "pressure).",
           [(f'{{signal="{sg}",reason="{r}"}}', s.kills.get((sg, r), 0))
            for sg in SIGNALS for r in CAUSES])
    metric("bustd_dry_run_kills_total", "counter",
           "Kills a dry run would have made, by reason.",
           [(f'{{reason="{r}"}}', s.dry_runs.get(r, 0)) for r in CAUSES])
    metric("bustd_warnings_total", "counter",
           "Warnings that a kill may come (--warn), by reason.",
           [(f'{{reason="{r}"}}', s.warnings.get(r, 0)) for r in CAUSES])
    metric("bustd_last_kill_timestamp_seconds", "gauge",
           "Time of the last kill (seconds since the epoch; 0: none since bustd started).",
           [("", s.last_kill)])
    metric("bustd_memory_available_bytes", "gauge", "MemAvailable at the last check.",
           [("", c.mem.available * 1024)])
    metric("bustd_memory_total_bytes", "gauge", "MemTotal.", [("", c.mem.total * 1024)])
    metric("bustd_swap_free_bytes", "gauge",
           "SwapFree at the last check, as the kill rule counts it (zram swap at what it "
           "can give back while watching).", [("", c.mem.swap_free * 1024)])
    metric("bustd_swap_total_bytes", "gauge", "SwapTotal.", [("", c.mem.swap_total * 1024)])
    if s.psi is not None:
        metric("bustd_pressure_memory_stalled_seconds_total", "counter",
               "Time tasks stalled on memory (PSI total of /proc/pressure/memory).",
               [(f'{{kind="{k}"}}', s.psi[k] / 1e6) for k in ("some", "full") if k in s.psi])
    if s.stall_ratio is not None:
        metric("bustd_stall_ratio", "gauge",
               "Share of time stalled on memory (the --psi-metric line) since the previous "
               "write of this file.", [("", round(s.stall_ratio, 6))])
    if c.stall is not None:
        metric("bustd_decision_stall_ratio", "gauge",
               "The stall over about the last second that the last check decided on.",
               [("", round(c.stall / 100.0, 6))])
    metric("bustd_watching", "gauge",
           "1 while memory is in the watch zone (stall, zram and growth sampled).",
           [("", int(c.watching))])
    metric("bustd_scan_duration_seconds", "gauge",
           "How long the last scan of the processes took (0: none yet).",
           [("", round(c.scan_s, 6))])
    metric("bustd_dying_victims", "gauge",
           "Victims still alive after SIGKILL (frozen or in uninterruptible sleep).",
           [("", c.dying)])
    metric("bustd_checks_total", "counter", "Checks of memory since bustd started.",
           [("", s.checks)])
    metric("bustd_kills_in_vain_total", "counter",
           "Kills that freed less than a quarter of what the victim was expected to free "
           "(each starts a pause in kills).", [("", s.vain)])
    metric("bustd_freed_bytes_total", "counter",
           "Memory the kills gave back (MemAvailable + SwapFree over about a second after "
           "each).", [("", s.freed_kib * 1024)])
    h = s.held
    if h is not None:
        metric("bustd_memory_outside_processes_bytes", "gauge",
               "Memory neither available nor any process's anonymous memory, by kind: "
               "shmem (tmpfs, shared memory), hugetlb, unreclaimable slab, other.",
               [(f'{{kind="{k}"}}', v * 1024) for k, v in (
                   ("shmem", h.shmem), ("hugetlb", h.hugetlb), ("slab_unreclaimable", h.slab),
                   ("other", h.other))])
        metric("bustd_tmpfs_used_bytes", "gauge", "Use of each tmpfs mount.",
               [(f'{{mount="{_label(p)}"}}', k * 1024) for p, k in h.tmpfs])
    if s.child_failures is not None:
        metric("bustd_child_failures_total", "counter",
               "Hooks and notification helpers that could not start, failed or hung.",
               [(f'{{kind="{k}"}}', s.child_failures.get(k, 0)) for k in CHILD_KINDS])
    return "\n".join(out) + "\n"


class Metrics:
    """An output: counts kills and warnings, writes the file after checks."""

    __slots__ = ("path", "writer", "log", "fs", "metric", "children", "interval", "kills",
                 "dry_runs", "warnings", "last_kill", "checks", "next_write", "psi_before",
                 "failing", "said_busy", "vain", "freed_kib")

    def __init__(self, path: str, writer: Background, log: Log, fs: ProcFS, metric: str,
                 children: Children | None = None, interval: float = INTERVAL) -> None:
        self.path = path
        self.writer = writer
        self.log = log
        self.fs = fs
        self.metric = metric
        self.children = children
        self.interval = interval
        self.kills: dict[tuple[str, str], int] = {}
        self.dry_runs: dict[str, int] = {}
        self.warnings: dict[str, int] = {}
        self.last_kill = 0.0
        self.checks = 0
        self.next_write = float("-inf")
        self.psi_before: tuple[float, int] | None = None  # (when, stalled us) at the last write
        self.failing = False
        self.said_busy = False
        self.vain = 0
        self.freed_kib = 0

    def __call__(self, record: Record) -> None:
        """Count kill and warning records; after a check, write the file if due."""
        if record.kind == "kill":
            if record.dry_run:
                self.dry_runs[record.cause] = self.dry_runs.get(record.cause, 0) + 1
            else:
                key = (sig.name(record.signal), record.cause)
                self.kills[key] = self.kills.get(key, 0) + 1
                self.last_kill = record.time
                self.vain += bool(record.vain)
                self.freed_kib += record.freed_kib or 0
        elif record.kind == "warn":
            self.warnings[record.cause] = self.warnings.get(record.cause, 0) + 1
        else:
            self.checks += 1
            if record.now >= self.next_write:
                self.write(record)

    def snapshot(self, check: CheckRecord) -> Snapshot:
        """Return what the file shows now (reads /proc/pressure/memory once)."""
        psi: dict[str, int] | None = None
        ratio = None
        try:
            p = parse_pressure(self.fs.read("pressure/memory"))
            psi = {"some": p.total("some"), "full": p.total("full")}
        except (OSError, ValueError):
            self.psi_before = None
        if psi is not None:
            total = psi[self.metric]
            if self.psi_before is not None and check.now > self.psi_before[0]:
                ratio = min(1.0, max(0.0, (total - self.psi_before[1]) / 1e6
                                     / (check.now - self.psi_before[0])))
            self.psi_before = (check.now, total)
        failures = dict(self.children.failures) if self.children is not None else None
        try:
            held: Held | None = read_held(self.fs)
        except (OSError, ValueError):
            held = None
        return Snapshot(check, dict(self.kills), dict(self.dry_runs), dict(self.warnings),
                        self.last_kill, psi, ratio, self.checks, failures, self.vain,
                        self.freed_kib, held)

    def write(self, check: CheckRecord) -> None:
        """Render and queue a write of the file, unless the last one is still pending."""
        if self.writer.busy():
            if not self.said_busy:
                self.log.warning(f"metrics file {self.path}: the last write is still pending")
                self.said_busy = True
            return
        self.said_busy = False
        self.next_write = check.now + self.interval
        data = render(self.snapshot(check)).encode()
        self.writer.submit(lambda: self.replace(data))

    def replace(self, data: bytes) -> None:
        """Write ``data`` to a temporary file and rename it over the path (logs failures)."""
        from .vet import replace
        try:
            # node_exporter reads it as another user: 0644 whatever the umask.
            replace(self.path, data, 0o644)
        except (OSError, ValueError) as err:  # ValueError: vet.Unsafe, named
            self.failing = said_failing(self.log, f"metrics file {self.path}", err, self.failing)
            return
        self.failing = said_failing(self.log, f"metrics file {self.path}", None, self.failing)
