"""cgroup v2: one subtree's memory figures and its processes (reading only).

Loaded only with ``--cgroup`` or ``--kill-cgroup`` (finding and killing a
victim's cgroup is cgroupkill.py). The files are those of the kernel's
Documentation/admin-guide/cgroup-v2.rst. With ``--cgroup PATH`` bustd
watches that subtree as if it were the machine, and the decision
(decide.decide) is unchanged: it reads a MemInfo built here::

    limit        memory.max, or memory.high where memory.max is "max";
                 none when both are "max" or the limit is >= MemTotal
    MemTotal     the limit
    MemAvailable limit - memory.current + reclaimable, at most the limit
    reclaimable  active_file + inactive_file + slab_reclaimable (memory.stat)
    SwapTotal    memory.swap.max, at most the machine's SwapTotal
    SwapFree     memory.swap.max - memory.swap.current, at most the
                 machine's SwapFree (zram counted at its RAM worth)
    pressure     memory.pressure (the stall of the subtree's own tasks)
    swap-ins     pswpin of memory.stat (newer kernels), else its
                 workingset_refault_anon (anonymous pages read back from swap
                 soon after they went out: Linux >= 5.9)

The page cache and reclaimable slab are charged to ``memory.current``, and
at the limit the kernel reclaims them before its OOM killer acts in the
cgroup: they are memory the cgroup can still have, as ``MemAvailable``
counts them for the machine (the kernel's si_mem_available, less the
zone watermarks, which a cgroup does not have). ``shmem`` and tmpfs pages
sit on the anonymous lists, so they are not counted. Without a limit of its
own (or one the machine could never give), the machine's MemTotal and
MemAvailable apply: bustd then acts when the machine runs short but
chooses only among the subtree's processes. ``memory.high`` is a soft limit
(the kernel throttles and reclaims above it, and never OOM-kills for it),
so it is the limit only when there is no hard one. Swap files exist only
with swap accounting; without them the machine's swap applies.
"""

from __future__ import annotations

import errno
import os

from .meminfo import MemInfo

__all__ = ["MAX_CGROUPS", "Cgroup", "CgroupError", "Figures", "TooManyCgroups",
           "cgroup_mount", "leaf_of", "members",
           "meminfo_of", "parse_limit", "parse_mountinfo", "parse_proc_cgroup", "parse_procs",
           "parse_stat", "parse_value", "read_all"]

_FLAGS = os.O_RDONLY | os.O_CLOEXEC
# memory.stat keys (bytes) whose sum is the memory the kernel reclaims at
# the limit before OOM-killing: the file LRU lists and reclaimable slab.
RECLAIMABLE = (b"active_file", b"inactive_file", b"slab_reclaimable")
# memory.stat counters (pages) of swap-ins: the first one present is used.
SWAPIN_KEYS = (b"pswpin", b"workingset_refault_anon")
# Files a watched cgroup must have: the memory controller must be enabled
# for it (in its parent's cgroup.subtree_control).
REQUIRED = ("cgroup.procs", "memory.current", "memory.max", "memory.high", "memory.stat")


class CgroupError(Exception):
    """A cgroup cannot be used; the message names it and says why."""


def parse_value(buf: bytes, name: str) -> int:
    """Return the KiB of a single-number file in bytes (``memory.current``).

    Raises ValueError naming ``name`` if it is not a number.
    """
    text = buf.strip()
    if not text.isdigit():
        raise ValueError(f"{name}: expected a number of bytes, got {buf[:40]!r}")
    return int(text) // 1024


def parse_limit(buf: bytes, name: str) -> int | None:
    """Return the KiB of a limit file (``memory.max``), None for ``max``.

    Raises ValueError naming ``name`` if it is neither.
    """
    if buf.strip() == b"max":
        return None
    return parse_value(buf, name)


def parse_stat(buf: bytes) -> tuple[int, int | None]:
    """Return (reclaimable KiB, swap-ins in pages or None) from ``memory.stat`` text.

    Reclaimable is the sum of RECLAIMABLE (missing keys count 0); swap-ins
    the first of SWAPIN_KEYS present. Raises ValueError on a malformed line.
    """
    values: dict[bytes, int] = {}
    for line in buf.split(b"\n"):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[1].isdigit():
            raise ValueError(f"memory.stat: malformed line {line[:60]!r}")
        values[fields[0]] = int(fields[1])
    reclaimable = sum(values.get(k, 0) for k in RECLAIMABLE) // 1024
    swapins = next((values[k] for k in SWAPIN_KEYS if k in values), None)
    return reclaimable, swapins


def parse_procs(buf: bytes) -> list[int]:
    """Return the PIDs of ``cgroup.procs`` text; raises ValueError on garbage."""
    out: list[int] = []
    for word in buf.split():
        if not word.isdigit():
            raise ValueError(f"cgroup.procs: not a PID: {word[:20]!r}")
        out.append(int(word))
    return out


def parse_proc_cgroup(buf: bytes) -> str | None:
    """Return the cgroup v2 path of ``/proc/PID/cgroup`` text (``0::/a/b``), or None.

    None when there is no ``0::`` line (no cgroup v2 hierarchy) or the path
    is unusable (`` (deleted)``, not absolute).
    """
    for line in buf.split(b"\n"):
        if line.startswith(b"0::"):
            path = line[3:].decode("utf-8", "surrogateescape")
            if not path.startswith("/") or path.endswith(" (deleted)"):
                return None
            return path
    return None


def _unescape_mount(field: bytes) -> str:
    r"""Return a mountinfo path field with its octal escapes (``\040``) undone."""
    out = bytearray()
    i = 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i:i + 1] == b"\\" and len(code) == 3 and all(c in b"01234567" for c in code):
            out.append(int(field[i + 1:i + 4], 8) & 0xFF)
            i += 4
        else:
            out.append(field[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


def parse_mountinfo(buf: bytes) -> list[tuple[str, str, str]]:
    """Return (root, mount point, file system type) of each ``/proc/PID/mountinfo`` line.

    See proc(5): field 4 is the root of the mount within its file system,
    field 5 the mount point, and the type follows the `` - `` separator.
    Malformed lines are skipped.
    """
    out: list[tuple[str, str, str]] = []
    for line in buf.split(b"\n"):
        head, sep, tail = line.partition(b" - ")
        fields = head.split(b" ")
        if not sep or len(fields) < 5 or not tail:
            continue
        out.append((_unescape_mount(fields[3]), _unescape_mount(fields[4]),
                    tail.split(b" ")[0].decode("utf-8", "replace")))
    return out


def cgroup_mount(mounts: list[tuple[str, str, str]]) -> tuple[str, str] | None:
    """Return (root, mount point) of the cgroup v2 hierarchy, None if none is mounted.

    The last cgroup2 mount wins (a later mount hides an earlier one).
    """
    found = None
    for root, point, fstype in mounts:
        if fstype == "cgroup2":
            found = (root, point)
    return found


def leaf_of(proc_cgroup: bytes, mount: tuple[str, str] | None) -> str | None:
    """Return the folder of the cgroup ``/proc/PID/cgroup`` text names, or None.

    ``mount`` is (root, mount point) of the cgroup v2 hierarchy: the path
    is relative to the hierarchy, the folder is under the mount point.
    None when there is no hierarchy, or the path is outside the mount.
    """
    path = parse_proc_cgroup(proc_cgroup)
    if path is None or mount is None:
        return None
    if ".." in path.split("/"):
        # A cgroup outside bustd's cgroup namespace (review L2): it would name
        # a folder above the mount point, or none at all.
        return None
    root, point = mount
    root = root.rstrip("/")
    if root and not (path == root or path.startswith(root + "/")):
        return None
    rel = path[len(root):].strip("/")
    return f"{point.rstrip('/')}/{rel}" if rel else point


def meminfo_of(fig: Figures, machine: MemInfo) -> MemInfo:
    """Return the MemInfo of a cgroup (see the module's table) given the machine's.

    ``machine`` is the machine's reading, zram already counted at its
    worth. A limit at or above the machine's MemTotal counts as none.
    """
    limit = fig.limit_kib
    if limit is None or limit >= machine.total:
        total, available = machine.total, machine.available
    else:
        total = limit
        available = min(limit, max(0, limit - fig.current_kib) + fig.reclaimable_kib)
    swap_total, swap_free = machine.swap_total, machine.swap_free
    if fig.swap_max_kib is not None:
        swap_total = min(swap_total, fig.swap_max_kib)
        room = max(0, fig.swap_max_kib - fig.swap_current_kib)
        swap_free = min(swap_free, room, swap_total)
    return MemInfo(total, max(0, available), swap_total, max(0, swap_free), fig.path)


class Figures:
    """One reading of a cgroup's memory files, in KiB (swap-ins in pages).

    ``limit_kib`` None: no limit. ``swap_max_kib`` None: no swap limit (or
    no swap accounting). ``limit_name`` says which file set the limit.
    """

    __slots__ = ("path", "current_kib", "limit_kib", "limit_name", "reclaimable_kib",
                 "swapins", "swap_current_kib", "swap_max_kib")

    def __init__(self, path: str, current_kib: int, limit_kib: int | None,
                 limit_name: str, reclaimable_kib: int, swapins: int | None = None,
                 swap_current_kib: int = 0, swap_max_kib: int | None = None) -> None:
        self.path = path
        self.current_kib = current_kib
        self.limit_kib = limit_kib
        self.limit_name = limit_name
        self.reclaimable_kib = reclaimable_kib
        self.swapins = swapins
        self.swap_current_kib = swap_current_kib
        self.swap_max_kib = swap_max_kib


class Cgroup:
    """The watched cgroup's memory files, kept open and read with one pread each.

    :meth:`read` raises OSError when the cgroup is gone (a stopped service's
    folder is removed: its open files then answer ENODEV); the caller
    :meth:`close` s it and :meth:`open` s it again later (a restarted
    service gets a new folder at the same path).
    """

    __slots__ = ("path", "fds")

    def __init__(self, path: str) -> None:
        self.path = path.rstrip("/") or "/"
        self.fds: dict[str, int] = {}

    def file(self, name: str) -> str:
        """Return the path of the cgroup's file ``name``."""
        return f"{self.path}/{name}"

    def open(self) -> None:
        """Open the memory files; raises OSError if a required one cannot be opened."""
        self.close()
        try:
            for name in ("memory.current", "memory.max", "memory.high", "memory.stat"):
                self.fds[name] = os.open(self.file(name), _FLAGS)
        except OSError:
            self.close()
            raise
        for name in ("memory.swap.current", "memory.swap.max"):
            try:
                self.fds[name] = os.open(self.file(name), _FLAGS)
            except FileNotFoundError:
                pass  # no swap accounting (or no swap support): the machine's swap applies

    def close(self) -> None:
        """Close every file (idempotent)."""
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def _read(self, name: str, size: int = 64) -> bytes:
        return os.pread(self.fds[name], size, 0)

    def read(self) -> Figures:
        """Return the Figures read now; raises OSError (opens first if closed) or ValueError."""
        if not self.fds:
            self.open()
        current = parse_value(self._read("memory.current"), "memory.current")
        limit = parse_limit(self._read("memory.max"), "memory.max")
        name = "memory.max"
        if limit is None:
            limit = parse_limit(self._read("memory.high"), "memory.high")
            name = "memory.high" if limit is not None else ""
        reclaimable, swapins = parse_stat(self._read("memory.stat", 16384))
        fig = Figures(self.path, current, limit, name, reclaimable, swapins)
        if "memory.swap.max" in self.fds and "memory.swap.current" in self.fds:
            fig.swap_max_kib = parse_limit(self._read("memory.swap.max"), "memory.swap.max")
            fig.swap_current_kib = parse_value(self._read("memory.swap.current"),
                                               "memory.swap.current")
        return fig


def read_all(path: str) -> bytes:
    """Return the whole content of ``path`` (``cgroup.procs`` may exceed one read)."""
    fd = os.open(path, _FLAGS)
    try:
        chunks: list[bytes] = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


# The most cgroups members() walks below one folder. A user with a delegated
# subtree (user@UID.service) can make thousands, and each would cost every
# check (--cgroup) and the kill path (--kill-cgroup) two reads (review L2).
MAX_CGROUPS = 512


class TooManyCgroups(ValueError):
    """A subtree has more than MAX_CGROUPS cgroups: members() gave up."""


def members(path: str, limit: int = MAX_CGROUPS) -> dict[int, str]:
    """Return {PID: folder of the cgroup holding it} for the subtree at ``path``.

    Reads ``cgroup.procs`` of ``path`` and of every cgroup below it. A
    sub-cgroup removed meanwhile, or a threaded one (whose processes are
    listed by its thread root: EOPNOTSUPP), is skipped. Raises OSError if
    ``path`` itself cannot be read, ValueError if a ``cgroup.procs`` is not
    a list of PIDs, TooManyCgroups (a ValueError: the kill path then fails
    closed) once more than ``limit`` cgroups are found.
    """
    out: dict[int, str] = {}
    stack = [path.rstrip("/") or "/"]
    first = True
    seen = 0
    while stack:
        folder = stack.pop()
        seen += 1
        if seen > limit:
            raise TooManyCgroups(f"more than {limit} cgroups below {path}")
        try:
            pids = parse_procs(read_all(f"{folder}/cgroup.procs"))
            subs = [e.path for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)]
        except OSError as err:
            if first or err.errno not in (errno.ENOENT, errno.ENODEV, errno.EOPNOTSUPP):
                raise
            continue
        finally:
            first = False
        for pid in pids:
            out.setdefault(pid, folder)
        stack.extend(sorted(subs, reverse=True))
    return out


