"""Per-process snapshots read from ``/proc/PID``.

A scan reads only the cheap fields of every process (``stat`` and
``oom_score``). Sizes with swap (``status``) are read for the largest
processes while memory is in the watch zone (:func:`read_status`); identity
and protection (:func:`read_details`: uid, ``oom_score_adj``, the executable)
for the leaders only. Nothing here reads ``cmdline``: the kernel serves it
under the target's ``mmap_lock``, which a thrashing process may hold for
seconds (issue 10), so it is never read on the way to a signal.
"""

from __future__ import annotations

import os

from .procfs import NoSuchProcess, ProcFS

__all__ = ["DEAD_STATES", "PAGE_KIB", "PAGE_MIB", "Candidate", "Details", "StatFields", "Status",
           "Trust", "live_thread", "parse_stat",
           "parse_status", "parse_status_threads", "parse_status_uid", "read_details", "read_exe",
           "read_starttime", "read_status", "read_trust", "scan"]

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
DEAD_STATES = frozenset(b"ZXx")  # zombie or dead: memory already released
ZOMBIE = ord("Z")
PAGE_KIB = os.sysconf("SC_PAGESIZE") // 1024
PAGE_MIB = PAGE_KIB / 1024  # swap traffic: pages/s to MiB/s
_DELETED = b" (deleted)"  # readlink of /proc/PID/exe for a replaced binary


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


class Status:
    """The fields of ``/proc/PID/status`` bustd uses (sizes in KiB).

    ``rss_kib`` is ``VmRSS``: ``anon_kib`` (``RssAnon``), ``file_kib``
    (``RssFile``: page cache a kill leaves in the cache) and ``shmem_kib``
    (``RssShmem``: tmpfs, SysV and memfd pages, freed only with their last
    holder). ``has_mm``: the file had a ``VmRSS`` line (a zombie leader
    has none; its live threads hold the memory).
    """

    __slots__ = ("uid", "rss_kib", "anon_kib", "file_kib", "shmem_kib", "swap_kib",
                 "threads", "has_mm")

    def __init__(self, uid: int, rss_kib: int, swap_kib: int, threads: int,
                 anon_kib: int | None = None, file_kib: int = 0, shmem_kib: int = 0,
                 has_mm: bool = True) -> None:
        self.uid = uid
        self.rss_kib = rss_kib
        self.swap_kib = swap_kib
        self.threads = threads
        # Before Linux 4.5 (no RssAnon line) the whole RSS counts as private.
        self.anon_kib = rss_kib if anon_kib is None else anon_kib
        self.file_kib = file_kib
        self.shmem_kib = shmem_kib
        self.has_mm = has_mm

    @property
    def private_kib(self) -> int:
        """``RssAnon + VmSwap``: the memory a kill frees for certain (freeable.py)."""
        return self.anon_kib + self.swap_kib


def _status_field(buf: bytes, key: bytes) -> bytes | None:
    """Return the text after ``key`` (b"\\nVmRSS:") up to the line's end, or None."""
    start = buf.find(key)
    if start < 0:
        return None
    start += len(key)
    end = buf.find(b"\n", start)
    return buf[start:end if end >= 0 else len(buf)]


def _first_number(text: bytes | None, key: str, default: int | None) -> int:
    if text is None:
        if default is None:
            raise ValueError(f"status: no {key} line")
        return default
    fields = text.split()
    if not fields or not fields[0].isdigit():
        raise ValueError(f"status: malformed {key} line")
    return int(fields[0])


def parse_status(buf: bytes) -> Status:
    """Return the uid, sizes and thread count of ``/proc/PID/status`` text.

    A process without memory of its own (a zombie leader, a kernel thread)
    has no Vm lines: its sizes are 0 and ``has_mm`` is False. Raises
    ValueError if the Uid line is missing or a field is malformed.
    """
    field = _status_field
    uid = _first_number(field(buf, b"\nUid:"), "Uid", None)
    threads = _first_number(field(buf, b"\nThreads:"), "Threads", 1)
    rss_text = field(buf, b"\nVmRSS:")
    if rss_text is None:
        return Status(uid, 0, 0, threads, 0, 0, 0, False)
    rss = _first_number(rss_text, "VmRSS", None)
    anon_text = field(buf, b"\nRssAnon:")
    return Status(uid, rss, _first_number(field(buf, b"\nVmSwap:"), "VmSwap", 0), threads,
                  None if anon_text is None else _first_number(anon_text, "RssAnon", None),
                  _first_number(field(buf, b"\nRssFile:"), "RssFile", 0),
                  _first_number(field(buf, b"\nRssShmem:"), "RssShmem", 0))


def parse_status_threads(buf: bytes) -> int:
    """Return the ``Threads:`` count of ``/proc/PID/status`` text (for kill.py).

    Raises ValueError if the line is missing or malformed.
    """
    return _first_number(_status_field(buf, b"\nThreads:"), "Threads", None)


def parse_status_uid(buf: bytes) -> int:
    """Return the real uid from the ``Uid:`` line of ``/proc/PID/status``.

    Raises ValueError if the line is missing or malformed.
    """
    return _first_number(_status_field(buf, b"\nUid:"), "Uid", None)


class Candidate:
    """One killable-looking process: the cheap fields of a scan, then what the
    watch zone learnt (its sizes, recent growth) and its rank score.

    Sizes (KiB; freeable.py says what each means for a kill):
    ``freeable_kib`` is what killing it is expected to free: ``RssAnon +
    VmSwap`` plus ``own_shmem_kib``, the shared memory only it maps. Until
    ``sized`` (its ``status`` read) it is the scan's RSS, an upper bound.
    ``rss_kib`` (``VmRSS`` once sized, else stat's RSS), ``swap_kib``,
    ``shmem_kib`` and ``file_kib`` say what it holds; ``kept_kib`` is what
    a kill would leave in memory (page cache, shared memory others map).
    """

    __slots__ = ("pid", "oom_score", "rss_kib", "starttime", "pgrp", "comm", "exe",
                 "freeable_kib", "swap_kib", "shmem_kib", "file_kib", "own_shmem_kib",
                 "kept_kib", "sized", "growth_kib", "growth_s", "pace_kib_s", "badness", "cgroup",
                 "avoid_shift", "session", "deferred")

    def __init__(self, pid: int, oom_score: int, rss_kib: int, starttime: int,
                 pgrp: int, comm: bytes) -> None:
        self.pid = pid
        self.oom_score = oom_score
        self.rss_kib = rss_kib
        self.starttime = starttime
        self.pgrp = pgrp
        self.comm = comm
        self.exe: bytes | None = None  # read only when a name rule needs it
        self.freeable_kib = rss_kib  # an upper bound until sized
        self.swap_kib = 0
        self.shmem_kib = 0
        self.file_kib = 0
        self.own_shmem_kib = 0
        self.kept_kib = 0  # known only once sized (or estimated from an earlier sample)
        self.sized = False
        self.growth_kib = 0  # net growth of freeable_kib over growth_s seconds
        self.growth_s = 0.0
        self.pace_kib_s = 0.0  # the fastest pace it grew at lately, faded (growth.Tracker.pace)
        self.badness = float(oom_score)
        self.cgroup = ""  # --cgroup: the folder of the cgroup the scan found it in
        # Set by choose.Ranking once its executable's name matches were verified:
        self.avoid_shift = False  # --avoid applies
        self.session = False  # on the default avoid list
        self.deferred = False  # passed over once for another candidate

    def size(self, st: Status, own_shmem_kib: int = 0) -> None:
        """Fill in the sizes from its ``status`` (``st``) and the shared memory
        only it maps (``own_shmem_kib``, from freeable.Shared; capped at RssShmem)."""
        own = min(max(0, own_shmem_kib), st.shmem_kib)
        self.rss_kib = st.rss_kib
        self.swap_kib = st.swap_kib
        self.shmem_kib = st.shmem_kib
        self.file_kib = st.file_kib
        self.own_shmem_kib = own
        self.freeable_kib = st.private_kib + own
        self.kept_kib = max(0, st.rss_kib - st.anon_kib - own)
        self.sized = True

    @property
    def rate_kib_s(self) -> float:
        """Recent growth in KiB/s: over the window, or the faded pace of a
        faster spell if higher (0 when unknown or shrinking)."""
        window = self.growth_kib / self.growth_s if self.growth_s > 0 else 0.0
        return max(window, self.pace_kib_s)

    def __repr__(self) -> str:
        return (f"Candidate(pid={self.pid}, oom_score={self.oom_score}, "
                f"rss_kib={self.rss_kib}, freeable_kib={self.freeable_kib}, "
                f"starttime={self.starttime})")


class Details:
    """What is read only for the leaders: owner, protection and the executable."""

    __slots__ = ("uid", "oom_score_adj", "exe")

    def __init__(self, uid: int, oom_score_adj: int, exe: bytes) -> None:
        self.uid = uid
        self.oom_score_adj = oom_score_adj
        self.exe = exe


def read_exe(fs: ProcFS, pid: int) -> bytes:
    """Return the real path of ``pid``'s executable, b"" when it cannot be read.

    ``/proc/PID/exe`` is set by the kernel at exec and cannot be changed by
    the process (unlike ``comm`` and ``argv[0]``), so rules that protect
    match it. A zombie leader's is read from a live thread (its own link is
    gone with its memory, review L5). A replaced binary's `` (deleted)``
    suffix is dropped. Raises NoSuchProcess if the process is gone;
    unreadable (another user's process when bustd is not root) gives b"".
    """
    try:
        path = fs.readlink_pid(pid, "exe")
    except NoSuchProcess:
        if not fs.exists_pid(pid):
            raise
        path = b""
        try:
            live = live_thread(fs, pid)
            if live is not None:
                path = fs.readlink_pid(pid, f"task/{live[0]}/exe")
        except NoSuchProcess:
            pass
        if not path:
            return b""
    return path[:-len(_DELETED)] if path.endswith(_DELETED) else path


class Trust:
    """Whether a process's executable is what its path says, and whether only
    root could have put it there (issue 13: name rules nobody can forge).

    ``same``: the file the process runs is the file at ``exe`` as bustd sees
    it (same device and inode; or replaced on disk, with no link left), so
    a full-path rule may match it: a user's bind mount in a mount namespace
    of their own cannot make another file look like ``/usr/sbin/sshd``.
    ``root_only``: ``same``, owned by root, not writable by group or others,
    in folders (up to ``/``) owned by root and not writable by group or
    others, so a basename rule may match it: no other user can have copied,
    linked or replaced it. ``why`` says what failed ("" when both hold).
    """

    __slots__ = ("same", "root_only", "why")

    def __init__(self, same: bool, root_only: bool, why: str) -> None:
        self.same = same
        self.root_only = root_only
        self.why = why


_UNSAFE_MODE = 0o022  # writable by group or others


def read_trust(fs: ProcFS, pid: int, exe: bytes) -> Trust:
    """Return the Trust of ``pid``'s executable ``exe`` (its real path).

    Reads ``stat`` of ``/proc/PID/exe`` (the running file), of ``exe`` and
    of each folder above it; called only when a rule's pattern matches the
    name, never for every process. Never raises: what cannot be read is
    not trusted, and ``why`` says so.
    """
    import stat as st_mod
    text = exe.decode("utf-8", "replace")
    if not exe:
        return Trust(False, False, "its executable cannot be read")
    try:
        running = os.stat(fs.path(f"{pid}/exe"))
    except OSError as err:
        return Trust(False, False, f"its executable cannot be read ({err.strerror})")
    try:
        there = os.stat(exe)
        same = (there.st_dev, there.st_ino) == (running.st_dev, running.st_ino)
    except OSError:
        same = False
    if not same and running.st_nlink != 0:
        return Trust(False, False, f"it does not run the file at {text} (another mount "
                                   "namespace, or the file was replaced)")
    if running.st_uid != 0:
        return Trust(True, False, f"its executable {text} is owned by uid {running.st_uid}")
    if running.st_mode & _UNSAFE_MODE:
        return Trust(True, False, f"its executable {text} is writable by group or others")
    folder = exe
    while True:
        folder = folder.rsplit(b"/", 1)[0] or b"/"
        name = folder.decode("utf-8", "replace")
        try:
            f = os.lstat(folder)
        except OSError as err:
            return Trust(True, False, f"folder {name} cannot be read ({err.strerror})")
        if not st_mod.S_ISDIR(f.st_mode):
            return Trust(True, False, f"{name} is not a folder")
        if f.st_uid != 0:
            return Trust(True, False, f"folder {name} is owned by uid {f.st_uid}")
        if f.st_mode & _UNSAFE_MODE:
            return Trust(True, False, f"folder {name} is writable by group or others")
        if folder == b"/":
            return Trust(True, True, "")


def live_thread(fs: ProcFS, pid: int) -> tuple[int, StatFields] | None:
    """For a zombie thread-group leader: a live thread's TID and stat, or None.

    The leader's own files show no memory once its thread exited, while the
    other threads keep the whole address space (issue 10, review M1): its
    sizes are read from a live thread. Returns None if no other thread is
    alive.
    """
    for tid in fs.tids(pid):
        if tid == pid:
            continue
        try:
            t = parse_stat(fs.read_pid(pid, f"task/{tid}/stat"))
        except (NoSuchProcess, ValueError):
            continue
        if t.state not in DEAD_STATES:
            return tid, t
    return None


def scan(fs: ProcFS, skip: frozenset[int] = frozenset(), want_exe: bool = False,
         pids: list[int] | None = None) -> list[Candidate]:
    """Return a Candidate for every live user-space process not in ``skip``.

    ``pids``: only these (a cgroup's processes), else every one in the tree.

    Kernel threads, zombies and PID 1 are left out; a zombie leader whose
    other threads still run is kept (it holds their memory). ``want_exe``
    also reads each executable (for name rules that rank). A process that
    vanishes mid-scan is skipped; an unreadable ``/proc`` raises OSError.
    """
    out: list[Candidate] = []
    append = out.append
    read = fs.read_pid
    for pid in fs.pids() if pids is None else pids:
        if pid == 1 or pid in skip:
            continue
        try:
            st = parse_stat(read(pid, "stat"))
            if st.flags & PF_KTHREAD:
                continue
            rss_kib = st.rss_pages * PAGE_KIB
            if st.state in DEAD_STATES:
                live = live_thread(fs, pid) if st.state == ZOMBIE else None
                if live is None:
                    continue
                rss_kib = live[1].rss_pages * PAGE_KIB
            score = int(read(pid, "oom_score", 64))
            c = Candidate(pid, score, rss_kib, st.starttime, st.pgrp, st.comm)
            if want_exe:
                c.exe = read_exe(fs, pid)
        except (NoSuchProcess, ValueError):
            continue  # vanished, or a dying task's half-written file
        append(c)
    return out


def read_starttime(fs: ProcFS, pid: int) -> int:
    """Return the start time of ``pid`` (clock ticks after boot).

    Raises NoSuchProcess if it is gone; ValueError if its stat is malformed.
    """
    return parse_stat(fs.read_pid(pid, "stat")).starttime


def read_status(fs: ProcFS, pid: int) -> Status:
    """Return the Status of ``pid``, read whole; a zombie leader's sizes come
    from a live thread (``task/TID/status``: the memory is the thread group's).

    Raises NoSuchProcess if it is gone; ValueError if its status is
    malformed, or shows no memory although it is neither a zombie leader
    with live threads nor memoryless (a live process whose sizes cannot be
    read is unreadable, never size 0: review M1).
    """
    st = parse_status(fs.read_pid_all(pid, "status"))
    if st.has_mm:
        return st
    live = live_thread(fs, pid)
    if live is None:
        raise ValueError(f"status of {pid}: no VmRSS line and no live thread")
    thread = parse_status(fs.read_pid_all(pid, f"task/{live[0]}/status"))
    if not thread.has_mm:
        raise ValueError(f"status of {pid}: no VmRSS line in thread {live[0]}")
    thread.uid = st.uid
    return thread


def read_details(fs: ProcFS, pid: int) -> Details:
    """Return the Details of ``pid``; raises NoSuchProcess or ValueError."""
    uid = parse_status_uid(fs.read_pid_all(pid, "status"))
    adj = int(fs.read_pid(pid, "oom_score_adj", 64))
    return Details(uid, adj, read_exe(fs, pid))
