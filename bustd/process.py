"""Per-process snapshots read from ``/proc/PID``.

A scan reads only the cheap fields of every process (``stat`` and
``oom_score``); the name-independent details (cmdline, uid, oom_score_adj,
statm) are read for the leaders only, by :func:`read_details`.
"""

from __future__ import annotations

import os

from .procfs import NoSuchProcess, ProcFS

__all__ = ["Candidate", "Details", "StatFields", "parse_stat", "parse_status_uid",
           "read_details", "read_starttime", "scan"]

# /proc/PID/stat field numbers from proc(5), counted from 1. Parsing splits the
# line at the *last* ')' because the comm field may contain spaces and
# parentheses; the fields after it start with field 3, hence ``- 3``.
_STATE = 3 - 3
_PPID = 4 - 3
_PGRP = 5 - 3
_FLAGS = 9 - 3
_STARTTIME = 22 - 3
_RSS = 24 - 3

PF_KTHREAD = 0x00200000  # include/linux/sched.h: "I am a kernel thread"
_DEAD_STATES = frozenset(b"ZXx")  # zombie or dead: memory already released
PAGE_KIB = os.sysconf("SC_PAGESIZE") // 1024


class StatFields:
    """The fields of ``/proc/PID/stat`` bustd uses."""

    __slots__ = ("comm", "state", "ppid", "pgrp", "flags", "starttime", "rss_pages")

    def __init__(self, comm: bytes, state: int, ppid: int, pgrp: int, flags: int,
                 starttime: int, rss_pages: int) -> None:
        self.comm = comm
        self.state = state
        self.ppid = ppid
        self.pgrp = pgrp
        self.flags = flags
        self.starttime = starttime
        self.rss_pages = rss_pages


def parse_stat(buf: bytes) -> StatFields:
    """Return the fields of a ``/proc/PID/stat`` line.

    The name is what lies between the first '(' and the last ')', so names
    such as ``a) R (b`` parse correctly. Raises ValueError on malformed input.
    """
    open_ = buf.find(b"(")
    close = buf.rfind(b")")
    if open_ < 0 or close < open_:
        raise ValueError(f"stat: no (comm) in {buf[:80]!r}")
    rest = buf[close + 1:].split()
    if len(rest) <= _RSS:
        raise ValueError(f"stat: only {len(rest) + 2} fields in {buf[:80]!r}")
    try:
        return StatFields(buf[open_ + 1:close], rest[_STATE][0], int(rest[_PPID]),
                          int(rest[_PGRP]), int(rest[_FLAGS]), int(rest[_STARTTIME]),
                          int(rest[_RSS]))
    except (ValueError, IndexError):
        raise ValueError(f"stat: malformed fields in {buf[:80]!r}") from None


def parse_status_uid(buf: bytes) -> int:
    """Return the real uid from the ``Uid:`` line of ``/proc/PID/status``.

    Raises ValueError if the line is missing or malformed.
    """
    start = buf.find(b"\nUid:")
    if start < 0:
        raise ValueError("status: no Uid line")
    end = buf.find(b"\n", start + 5)
    fields = buf[start + 5:end if end >= 0 else len(buf)].split()
    if not fields or not fields[0].isdigit():
        raise ValueError("status: malformed Uid line")
    return int(fields[0])


class Candidate:
    """The cheap, per-scan fields of one killable-looking process."""

    __slots__ = ("pid", "oom_score", "rss_kib", "starttime", "pgrp", "comm")

    def __init__(self, pid: int, oom_score: int, rss_kib: int, starttime: int,
                 pgrp: int, comm: bytes) -> None:
        self.pid = pid
        self.oom_score = oom_score
        self.rss_kib = rss_kib
        self.starttime = starttime
        self.pgrp = pgrp
        self.comm = comm

    def __repr__(self) -> str:
        return (f"Candidate(pid={self.pid}, oom_score={self.oom_score}, "
                f"rss_kib={self.rss_kib}, starttime={self.starttime})")


class Details:
    """What is read only for the leaders: identity and protection."""

    __slots__ = ("cmdline", "uid", "oom_score_adj", "rss_kib")

    def __init__(self, cmdline: bytes, uid: int, oom_score_adj: int, rss_kib: int) -> None:
        self.cmdline = cmdline
        self.uid = uid
        self.oom_score_adj = oom_score_adj
        self.rss_kib = rss_kib

    def exe_name(self) -> bytes:
        """Return the basename of argv[0] (the untruncated program name)."""
        argv0 = self.cmdline.split(b"\0", 1)[0]
        return argv0.rsplit(b"/", 1)[-1]


def scan(fs: ProcFS, skip: frozenset[int] = frozenset()) -> list[Candidate]:
    """Return a Candidate for every live user-space process not in ``skip``.

    Kernel threads, zombies and PID 1 are left out. A process that vanishes
    mid-scan is skipped; an unreadable ``/proc`` raises OSError.
    """
    out: list[Candidate] = []
    append = out.append
    read = fs.read_pid
    for pid in fs.pids():
        if pid == 1 or pid in skip:
            continue
        try:
            st = parse_stat(read(pid, "stat"))
            if st.flags & PF_KTHREAD or st.state in _DEAD_STATES:
                continue
            score = int(read(pid, "oom_score", 64))
        except (NoSuchProcess, ValueError):
            continue  # vanished, or a dying task's half-written file
        append(Candidate(pid, score, st.rss_pages * PAGE_KIB, st.starttime, st.pgrp, st.comm))
    return out


def read_starttime(fs: ProcFS, pid: int) -> int:
    """Return the start time of ``pid`` (clock ticks after boot).

    Raises NoSuchProcess if it is gone; ValueError if its stat is malformed.
    """
    return parse_stat(fs.read_pid(pid, "stat")).starttime


def read_details(fs: ProcFS, pid: int) -> Details:
    """Return the Details of ``pid``; raises NoSuchProcess or ValueError."""
    cmdline = fs.read_pid(pid, "cmdline", 4096).rstrip(b"\0")
    uid = parse_status_uid(fs.read_pid(pid, "status", 8192))
    adj = int(fs.read_pid(pid, "oom_score_adj", 64))
    statm = fs.read_pid(pid, "statm", 256).split()
    rss_kib = int(statm[1]) * PAGE_KIB if len(statm) > 1 else 0
    return Details(cmdline, uid, adj, rss_kib)
