"""--kill-log FILE: one JSON object per kill, one line each.

Each line is appended with a single ``os.write`` to a descriptor opened with
O_APPEND (the file is opened for each kill, so log rotation needs no
signal), in a background thread: a slow disk never holds up the loop. A
write cut short (a full disk) is followed by a newline before the next
line, so a torn line never swallows the next one and earlier lines are never
touched. Dry-run decisions are logged too, with ``"dry_run": true``.

JSON is written by :func:`dumps` here: ``import json`` loads ``re`` and the
decoder too, about 1.3 MiB that the daemon would keep for good.
"""

from __future__ import annotations

import os
import time

from . import sig
from .background import Background, said_failing
from .log import Log, safe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .outputs import Record
    from .process import Candidate
    from .record import KillRecord

__all__ = ["KillLog", "dumps", "kill_object"]

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b",
            "\f": "\\f"}
_LINE_SEP = "\u2028\u2029"  # valid JSON, but line breaks to some readers


def _string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch < " " or "\x7f" <= ch <= "\x9f" or "\ud800" <= ch <= "\udfff" or ch in _LINE_SEP:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def dumps(value: object) -> str:
    """Return ``value`` as compact JSON (one line).

    Takes None, bool, int, float (inf and nan become null, which JSON lacks),
    str, list/tuple and dict with str keys. Raises TypeError for anything else.
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(value) if value == value and value not in (float("inf"), float("-inf")) \
            else "null"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"JSON object keys must be str, not {type(k).__name__}")
            items.append(f"{_string(k)}:{dumps(v)}")
        return "{" + ",".join(items) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _candidate(c: Candidate) -> dict[str, object]:
    return {"pid": c.pid, "name": safe(c.comm), "freeable_kib": c.freeable_kib,
            "sized": c.sized,
            "growth_kib": c.growth_kib, "growth_s": round(c.growth_s, 3),
            "pace_kib_s": round(c.pace_kib_s, 1),
            "oom_score": c.oom_score, "score": round(c.badness, 1)}


def kill_object(r: KillRecord) -> dict[str, object]:
    """Return the JSON object of one kill record (names as the log line renders them)."""
    g = r.reading
    command = r.command()
    cmdline = None if command is None else safe(command, 4096)
    return {
        "time": round(r.time, 3),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(r.time))
                + f".{int(r.time % 1 * 1000):03d}Z",
        "dry_run": r.dry_run,
        "pid": r.pid, "name": safe(r.comm), "exe": safe(r.exe), "cmdline": cmdline,
        "uid": r.uid, "freeable_kib": r.freeable_kib, "rss_kib": r.rss_kib,
        "swap_kib": r.swap_kib, "shmem_kib": r.shmem_kib, "own_shmem_kib": r.own_shmem_kib,
        "file_kib": r.file_kib,
        "oom_score": r.oom_score, "oom_score_adj": r.oom_score_adj,
        "growth_kib": r.growth_kib, "growth_s": round(r.growth_s, 3),
        "pace_kib_s": round(r.pace_kib_s, 1),
        "score": round(r.badness, 1), "rank": r.policy,
        "cause": r.cause, "reason": r.reason,
        "readings": {"mem_available_kib": g.available_kib, "mem_total_kib": g.total_kib,
                     "swap_free_kib": g.swap_free_kib, "swap_total_kib": g.swap_total_kib,
                     "zram_ram_kib": g.zram_ram_kib,
                     "stall_percent": None if g.stall is None else round(g.stall, 2),
                     "stall_s": round(g.stall_s, 3), "psi_metric": g.metric},
        "signal": sig.name(r.signal), "woken_by": r.woken_by,
        "reaction_ms": round(r.reaction_s * 1000, 1),
        # "released": the field's documented name for the process_mrelease outcome.
        "exited": r.exited, "exit_s": round(r.exit_s, 3), "released": r.mrelease,
        "group": list(r.group), "problems": list(r.problems),
        "major_faults": r.major_faults,
        "runners_up": [_candidate(c) for c in r.runners_up],
        # The victim's cgroup (--cgroup, --kill-cgroup) and whether it died whole.
        "cgroup": r.cgroup or None, "cgroup_whole": r.cgroup_whole,
        "cgroup_note": r.cgroup_note or None,
        # What it was to free and what came back (issue 14): MemAvailable +
        # SwapFree over freed_s seconds; in_vain null when not measured.
        "expected_kib": r.expected_kib, "freed_kib": r.freed_kib,
        "freed_s": round(r.freed_s, 3), "in_vain": r.vain,
        "backoff_s": round(r.backoff_s, 1),
        "held_outside": None if r.held is None else {
            "outside_kib": r.held.outside, "shmem_kib": r.held.shmem,
            "hugetlb_kib": r.held.hugetlb, "slab_unreclaimable_kib": r.held.slab,
            "other_kib": r.held.other,
            "tmpfs": [{"mount": point, "used_kib": kib} for point, kib in r.held.tmpfs]},
    }


class KillLog:
    """An output: appends one JSON line per kill record to ``path``."""

    __slots__ = ("path", "writer", "log", "torn", "failing")

    def __init__(self, path: str, writer: Background, log: Log) -> None:
        self.path = path
        self.writer = writer
        self.log = log
        self.torn = False  # the last write was cut short: start the next on a new line
        self.failing = False  # said that the file cannot be written

    def __call__(self, record: Record) -> None:
        """Queue the line of a kill record; other records are ignored."""
        if record.kind != "kill":
            return
        line = (dumps(kill_object(record)) + "\n").encode("utf-8", "backslashreplace")
        if not self.writer.submit(lambda: self.append(line)):
            self.log.warning(f"kill log {self.path}: writes pending, this kill not written")

    def append(self, line: bytes) -> None:
        """Append ``line`` with one write (logs failures, never raises OSError)."""
        data = (b"\n" if self.torn else b"") + line
        from .vet import open_append
        try:
            fd = open_append(self.path, 0o640)  # never a FIFO, a device, a link (review M3)
            try:
                written = os.write(fd, data)
            finally:
                os.close(fd)
        except (OSError, ValueError) as err:  # ValueError: vet.Unsafe, named
            self.failing = said_failing(self.log, f"kill log {self.path}", err, self.failing)
            return
        self.failing = said_failing(self.log, f"kill log {self.path}", None, self.failing)
        self.torn = written < len(data)
        if self.torn:
            self.log.warning(f"kill log {self.path}: only {written} of {len(data)} bytes "
                             "written (disk full?)")
