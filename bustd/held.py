"""What holds the memory no kill frees: tmpfs and shared memory, hugetlb, the kernel.

When memory is short and killing cannot end it (issue 14), bustd says once
where the memory is instead of killing: ``Shmem`` (tmpfs files, shared
memory segments, memfds: freed only when the file is deleted or the last
holder unmaps it) with the tmpfs mounts and their use, ``Hugetlb`` (pages
reserved for huge pages), ``SUnreclaim`` (slab the kernel cannot reclaim)
and what remains of the memory that is neither available nor any process's
anonymous memory (kernel stacks, page tables, drivers, a balloon). The
parsers are pure; :func:`read_held` is the only I/O, and it never runs
between an emergency and a signal: only when bustd has decided not to kill,
for a warning, ``bustd check`` and the metrics file.
"""

from __future__ import annotations

import os

from .log import safe, size
from .meminfo import _field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

    from .procfs import ProcFS

__all__ = ["OUTSIDE_SHARE", "TMPFS_SHOWN", "Held", "held_text", "parse_held", "parse_tmpfs_mounts",
           "read_held"]

# Memory outside processes is named as the reason memory is short once it
# holds this share of MemTotal (nohang changes its warning at 30 % Shmem).
OUTSIDE_SHARE = 0.25
TMPFS_SHOWN = 3  # the largest tmpfs mounts named in a line
_MIN_TMPFS_KIB = 1024  # a tmpfs using less is not worth naming


class Held:
    """Memory outside processes, in KiB (see the module docstring).

    ``tmpfs`` is (mount point, KiB used) of every tmpfs mount, the largest
    first; empty when not read.
    """

    __slots__ = ("total", "available", "anon", "shmem", "hugetlb", "slab", "tmpfs")

    def __init__(self, total: int, available: int, anon: int, shmem: int, hugetlb: int,
                 slab: int, tmpfs: list[tuple[str, int]] | None = None) -> None:
        self.total = total
        self.available = available
        self.anon = anon
        self.shmem = shmem
        self.hugetlb = hugetlb
        self.slab = slab
        self.tmpfs = tmpfs or []

    @property
    def other(self) -> int:
        """KiB neither available, nor processes' anonymous memory, nor named above."""
        return max(0, self.total - self.available - self.anon - self.shmem - self.hugetlb
                   - self.slab)

    @property
    def outside(self) -> int:
        """KiB held outside processes: Shmem, hugetlb, unreclaimable slab and the rest."""
        return self.shmem + self.hugetlb + self.slab + self.other

    def significant(self) -> bool:
        """Whether memory outside processes is a reason memory is short (OUTSIDE_SHARE)."""
        return self.outside >= OUTSIDE_SHARE * self.total

    def __repr__(self) -> str:
        return (f"Held(total={self.total}, available={self.available}, anon={self.anon}, "
                f"shmem={self.shmem}, hugetlb={self.hugetlb}, slab={self.slab}, "
                f"tmpfs={self.tmpfs!r})")


def parse_held(buf: bytes) -> Held:
    """Return the Held figures of ``/proc/meminfo`` text (without tmpfs mounts).

    ``Hugetlb`` (Linux 4.16) or else ``HugePages_Total`` x ``Hugepagesize``;
    a missing field counts as 0, a missing AnonPages as all the memory not
    named otherwise (so ``other`` is 0: nothing is blamed on the unknown).
    Raises ValueError if MemTotal is missing or a value is malformed.
    """
    total = _field(buf, b"MemTotal:")
    if total is None:
        raise ValueError("meminfo: MemTotal missing")
    avail = _field(buf, b"MemAvailable:")
    if avail is None:
        avail = ((_field(buf, b"MemFree:") or 0) + (_field(buf, b"Cached:") or 0)
                 + (_field(buf, b"Buffers:") or 0))
    hugetlb = _field(buf, b"Hugetlb:")
    if hugetlb is None:
        hugetlb = (_field(buf, b"HugePages_Total:") or 0) * (_field(buf, b"Hugepagesize:") or 0)
    avail = min(avail, total)
    shmem, slab = _field(buf, b"Shmem:") or 0, _field(buf, b"SUnreclaim:") or 0
    anon = _field(buf, b"AnonPages:")
    if anon is None:  # unknown: what is not named counts as processes', not as outside
        anon = max(0, total - avail - shmem - hugetlb - slab)
    return Held(total, avail, anon, shmem, hugetlb, slab)


def _unescape(raw: bytes) -> bytes:
    """Return a mount point of /proc/self/mounts with its octal escapes (``\\040``) undone."""
    if b"\\" not in raw:
        return raw
    out = bytearray()
    i = 0
    while i < len(raw):
        digits = raw[i + 1:i + 4]
        if raw[i] == 0x5C and len(digits) == 3 and all(0x30 <= d <= 0x37 for d in digits):
            out.append(int(digits, 8) & 0xFF)
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def parse_tmpfs_mounts(buf: bytes) -> list[bytes]:
    """Return the mount points of the tmpfs file systems in ``/proc/self/mounts`` text.

    Each once, in the order listed; malformed lines are skipped.
    """
    seen: list[bytes] = []
    for line in buf.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == b"tmpfs":
            point = _unescape(fields[1])
            if point not in seen:
                seen.append(point)
    return seen


def read_held(fs: ProcFS, statvfs: Callable[[bytes], os.statvfs_result] = os.statvfs) -> Held:
    """Return what holds memory now: ``fs``'s meminfo and the use of every tmpfs mount.

    A tmpfs is measured with ``statvfs`` (served from memory: it never
    waits on a disk); one that cannot be is left out, and so are mounts
    that cannot be listed. Raises OSError or ValueError if meminfo cannot
    be read.
    """
    held = parse_held(fs.read("meminfo", 16384))
    try:
        points = parse_tmpfs_mounts(fs.read("self/mounts", 1 << 20))
    except OSError:
        points = []
    used: list[tuple[str, int]] = []
    for point in points:
        try:
            st = statvfs(point)
        except OSError:
            continue
        kib = (st.f_blocks - st.f_bfree) * st.f_frsize // 1024
        if kib >= _MIN_TMPFS_KIB:
            used.append((safe(point), kib))
    used.sort(key=lambda u: (-u[1], u[0]))
    held.tmpfs = used
    return held


def held_text(h: Held) -> str:
    """Return one phrase naming what holds memory outside processes.

    ``Shmem 600.0 MiB (tmpfs /dev/shm 590.0 MiB, /run 1.2 MiB), hugetlb 0 B,
    unreclaimable slab 40.0 MiB, 80.0 MiB more neither available nor any
    process's``.
    """
    mounts = ", ".join(f"{p} {size(k)}" for p, k in h.tmpfs[:TMPFS_SHOWN])
    tmpfs = f" (tmpfs {mounts})" if mounts else ""
    return (f"Shmem {size(h.shmem)}{tmpfs}, hugetlb {size(h.hugetlb)}, unreclaimable slab "
            f"{size(h.slab)}, {size(h.other)} more neither available nor any process's")
