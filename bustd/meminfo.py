"""Parse and read ``/proc/meminfo`` (proc(5))."""
# bustd uses MemAvailable, the kernel's estimate of memory that can be given to
# new work without swapping, which counts reclaimable page cache; the free RAM of
# ``sysinfo(2)`` does not, and makes a cache-heavy machine look full.

from __future__ import annotations

import os

__all__ = ["MemInfo", "parse_meminfo", "parse_pswpin", "parse_swap_traffic", "read_meminfo"]


class MemInfo:
    """Memory figures in KiB."""
    # ``scope`` is "" for the machine's, else the folder of the cgroup they
    # describe (``--cgroup``, see cgroup.py). ``user`` is the user memory the
    # --mem percentages are taken of (issue 14, as earlyoom 1.8):
    # MemAvailable + AnonPages, the memory a kill can give back or that is
    # given already, capped at MemTotal; MemTotal when unknown (a cgroup, a
    # kernel without AnonPages). Memory held where no kill frees it (tmpfs,
    # shared memory, hugetlb, the kernel's own) is left out, so a level taken
    # of it can always be reached by killing. ``outside`` is the memory held
    # where no kill of a process frees it, as far as meminfo names it: Shmem
    # (tmpfs, shared memory) + Hugetlb + SUnreclaim (0 when unknown).

    __slots__ = ("total", "available", "swap_total", "swap_free", "scope", "user", "outside")

    def __init__(self, total: int, available: int, swap_total: int, swap_free: int,
                 scope: str = "", user: int | None = None, outside: int = 0) -> None:
        self.total = total
        self.available = available
        self.swap_total = swap_total
        self.swap_free = swap_free
        self.scope = scope
        self.user = total if user is None else user
        self.outside = outside

    def __repr__(self) -> str:
        return (
            f"MemInfo(total={self.total}, available={self.available}, "
            f"swap_total={self.swap_total}, swap_free={self.swap_free}"
            + (f", scope={self.scope!r}" if self.scope else "")
            + (f", user={self.user})" if self.user != self.total else ")")
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MemInfo) and (
            (self.total, self.available, self.swap_total, self.swap_free, self.scope,
             self.user)
            == (other.total, other.available, other.swap_total, other.swap_free, other.scope,
                other.user))


def _field(buf: bytes, key: bytes) -> int | None:
    """Return the KiB value of ``key`` (e.g. b"MemTotal:"), None if absent.

    Raises ValueError if the value is not a number.
    """
    start = buf.find(b"\n" + key)
    if start < 0:
        if not buf.startswith(key):
            return None
        start = 0
    else:
        start += 1
    end = buf.find(b"\n", start)
    fields = buf[start + len(key) : end if end >= 0 else len(buf)].split()
    if not fields:
        raise ValueError(f"meminfo: no value for {key.decode()}")
    try:
        return int(fields[0])
    except ValueError:
        raise ValueError(f"meminfo: bad value for {key.decode()} {fields[0]!r}") from None


def parse_meminfo(buf: bytes) -> MemInfo:
    """Return the MemInfo parsed from the text of ``/proc/meminfo``; raises
    ValueError naming a missing or malformed field."""
    # Kernels before 3.14 have no MemAvailable; it is then estimated as
    # MemFree + Cached + Buffers. ``user`` is MemAvailable + AnonPages (at
    # most MemTotal), MemTotal without AnonPages; ``outside`` Shmem + Hugetlb
    # + SUnreclaim.
    total = _field(buf, b"MemTotal:")
    if total is None:
        raise ValueError("meminfo: MemTotal missing")
    avail = _field(buf, b"MemAvailable:")
    if avail is None:
        free = _field(buf, b"MemFree:")
        if free is None:
            raise ValueError("meminfo: neither MemAvailable nor MemFree present")
        avail = free + (_field(buf, b"Cached:") or 0) + (_field(buf, b"Buffers:") or 0)
    swap_total = _field(buf, b"SwapTotal:") or 0
    swap_free = _field(buf, b"SwapFree:") or 0
    if total <= 0:
        raise ValueError(f"meminfo: MemTotal is {total}")
    avail = min(avail, total)
    anon = _field(buf, b"AnonPages:")
    user = total if anon is None else min(total, avail + max(0, anon))
    outside = sum(_field(buf, key) or 0 for key in (b"Shmem:", b"Hugetlb:", b"SUnreclaim:"))
    return MemInfo(total, avail, swap_total, min(swap_free, swap_total), "", user, outside)


def read_meminfo(fd: int) -> MemInfo:
    """Return MemInfo read from a kept-open ``/proc/meminfo`` descriptor.

    One ``pread`` at offset 0 regenerates the file. Raises OSError or
    ValueError.
    """
    return parse_meminfo(os.pread(fd, 8192, 0))


def parse_pswpin(buf: bytes) -> int:
    """Return ``pswpin`` (pages swapped in since boot) from ``/proc/vmstat`` text.

    Raises ValueError if the line is missing (a kernel without swap support)
    or malformed.
    """
    value = _field(buf, b"pswpin ")
    if value is None:
        raise ValueError("vmstat: no pswpin line")
    return value


def parse_swap_traffic(buf: bytes) -> tuple[int, int | None]:
    """Return (``pswpin``, ``pswpout``): pages swapped in and out since boot.

    ``pswpout`` is None if absent. Raises ValueError if ``pswpin`` is
    missing or either is malformed.
    """
    return parse_pswpin(buf), _field(buf, b"pswpout ")
