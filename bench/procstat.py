"""Footprint figures of one running process, read from the host's /proc.

Pure parsers take the bytes of a /proc file and return numbers; the readers
take a ``root`` (``/proc`` unless testing) and a PID. Sizes are KiB, CPU time
is nanoseconds, as the kernel reports them (proc(5), sched-stats.rst).
"""

from __future__ import annotations

import os
from typing import NamedTuple

__all__ = ["Sample", "parse_kib_fields", "parse_nspid", "parse_schedstat_ns",
           "parse_stat_cpu_ticks", "parse_status_ctxt", "read_sample", "read_cpu_ticks",
           "count_fds", "children_of", "descendants_of", "ns_child"]

# /proc/PID/stat fields 14 and 15 (utime, stime; proc(5)), counted in the
# fields after the comm's closing ')', which start at field 3 (state).
_UTIME = 14 - 3
_STIME = 15 - 3


class Sample(NamedTuple):
    """One reading of a process: memory now, cumulative CPU and switches."""

    vm_rss: int  # KiB, /proc/PID/status VmRSS
    rss_anon: int  # KiB, /proc/PID/status RssAnon
    vm_lck: int  # KiB, /proc/PID/status VmLck
    pss: int  # KiB, /proc/PID/smaps_rollup Pss
    cpu_ns: int  # sum over threads of /proc/PID/task/TID/schedstat field 1
    switches: int  # sum over threads of voluntary + nonvoluntary ctxt switches
    threads: int


def parse_kib_fields(data: bytes) -> dict[str, int]:
    """Return ``{"Name": KiB}`` for every ``Name:  N kB`` line of ``data``.

    Works for /proc/PID/status and /proc/PID/smaps_rollup; other lines are
    skipped, so garbage yields an empty dict rather than an error.
    """
    out: dict[str, int] = {}
    for line in data.split(b"\n"):
        name, sep, rest = line.partition(b":")
        if not sep:
            continue
        parts = rest.split()
        if len(parts) == 2 and parts[1] == b"kB" and parts[0].isdigit():
            out[name.decode("ascii", "replace")] = int(parts[0])
    return out


def parse_status_ctxt(data: bytes) -> int:
    """Return voluntary + nonvoluntary context switches from /proc/PID/status.

    Raises ValueError if either line is missing.
    """
    found: dict[bytes, int] = {}
    for line in data.split(b"\n"):
        name, sep, rest = line.partition(b":")
        if sep and name in (b"voluntary_ctxt_switches", b"nonvoluntary_ctxt_switches"):
            found[name] = int(rest.strip())
    if len(found) != 2:
        raise ValueError("status has no context switch counts")
    return sum(found.values())


def parse_schedstat_ns(data: bytes) -> int:
    """Return the first field of /proc/PID/schedstat: time on CPU, in ns.

    Raises ValueError on anything else.
    """
    fields = data.split()
    if not fields:
        raise ValueError("empty schedstat")
    return int(fields[0])


def parse_stat_cpu_ticks(data: bytes) -> int:
    """Return utime + stime of /proc/PID/stat in clock ticks.

    Unlike the schedstat of the live threads, these count the threads that
    have already exited. The line is split after the *last* ``)``, so a
    name such as ``a) Z 1 2 (b`` cannot shift the fields. Raises ValueError
    on anything else.
    """
    close = data.rfind(b")")
    if close < 0:
        raise ValueError("stat has no (comm)")
    fields = data[close + 1:].split()
    if len(fields) <= _STIME:
        raise ValueError(f"stat has {len(fields) + 2} fields, too few for utime and stime")
    return int(fields[_UTIME]) + int(fields[_STIME])


def parse_nspid(data: bytes) -> list[int]:
    """Return the ``NSpid:`` PIDs of /proc/PID/status, outermost namespace first.

    The last one is the PID inside the process's own PID namespace. Raises
    ValueError if the line is missing (kernels before 4.1) or garbled.
    """
    for line in data.split(b"\n"):
        name, sep, rest = line.partition(b":")
        if sep and name == b"NSpid":
            pids = [int(p) for p in rest.split()]
            if pids:
                return pids
    raise ValueError("status has no NSpid line")


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_sample(pid: int, root: str = "/proc") -> Sample:
    """Return a :class:`Sample` of ``pid``; raises OSError if it is gone."""
    status = _read(f"{root}/{pid}/status")
    kib = parse_kib_fields(status)
    rollup = parse_kib_fields(_read(f"{root}/{pid}/smaps_rollup"))
    cpu = switches = threads = 0
    for tid in os.listdir(f"{root}/{pid}/task"):
        try:
            cpu += parse_schedstat_ns(_read(f"{root}/{pid}/task/{tid}/schedstat"))
            switches += parse_status_ctxt(_read(f"{root}/{pid}/task/{tid}/status"))
        except FileNotFoundError:
            continue  # a thread that ended between listing and reading
        threads += 1
    return Sample(kib.get("VmRSS", 0), kib.get("RssAnon", 0), kib.get("VmLck", 0),
                  rollup.get("Pss", 0), cpu, switches, threads)


def read_cpu_ticks(pid: int, root: str = "/proc") -> int:
    """Return utime + stime of ``pid`` in clock ticks; raises OSError if it is gone."""
    return parse_stat_cpu_ticks(_read(f"{root}/{pid}/stat"))


def count_fds(pid: int, root: str = "/proc") -> int:
    """Return how many file descriptors ``pid`` has open; raises OSError if it is gone."""
    return len(os.listdir(f"{root}/{pid}/fd"))


def _parent_map(root: str) -> dict[int, int]:
    parents: dict[int, int] = {}
    for name in os.listdir(root):
        if not name.isdigit():
            continue
        try:
            stat = _read(f"{root}/{name}/stat")
        except OSError:
            continue
        # Fields after the last ')' start with state, then ppid (proc(5)).
        tail = stat[stat.rfind(b")") + 2:].split()
        if len(tail) > 1:
            parents[int(name)] = int(tail[1])
    return parents


def children_of(pid: int, root: str = "/proc") -> list[int]:
    """Return the PIDs whose parent is ``pid``, sorted."""
    return sorted(p for p, pp in _parent_map(root).items() if pp == pid)


def descendants_of(pid: int, root: str = "/proc") -> list[int]:
    """Return every descendant of ``pid`` (children first), sorted per level."""
    parents = _parent_map(root)
    out: list[int] = []
    level = [pid]
    while level:
        level = sorted(p for p, pp in parents.items() if pp in level)
        out.extend(level)
    return out


def ns_child(pid: int, ns_pid: int, root: str = "/proc") -> int | None:
    """Return the child of ``pid`` whose PID in its own namespace is ``ns_pid``, or None.

    For a namespace's PID 1 (``pid``, seen from outside), ``ns_pid`` 2 is
    the first process it started.
    """
    for child in children_of(pid, root):
        try:
            if parse_nspid(_read(f"{root}/{child}/status"))[-1] == ns_pid:
                return child
        except (OSError, ValueError):
            continue
    return None
