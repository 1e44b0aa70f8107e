"""Parse and read ``/proc/meminfo`` (proc(5)).

bustd uses MemAvailable, the kernel's estimate of memory that can be given to
new work without swapping, which counts reclaimable page cache; the free RAM of
``sysinfo(2)`` does not, and makes a cache-heavy machine look full.
"""

from __future__ import annotations

import os

__all__ = ["MemInfo", "parse_meminfo", "parse_pswpin", "read_meminfo"]


class MemInfo:
    """Memory figures in KiB.

    ``scope`` is "" for the machine's, else the folder of the cgroup they
    describe (``--cgroup``, see cgroup.py).
    """

    __slots__ = ("total", "available", "swap_total", "swap_free", "scope")

    def __init__(self, total: int, available: int, swap_total: int, swap_free: int,
                 scope: str = "") -> None:
        self.total = total
        self.available = available
        self.swap_total = swap_total
        self.swap_free = swap_free
        self.scope = scope

    def __repr__(self) -> str:
        return (
            f"MemInfo(total={self.total}, available={self.available}, "
            f"swap_total={self.swap_total}, swap_free={self.swap_free}"
            + (f", scope={self.scope!r})" if self.scope else ")")
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MemInfo) and (
            (self.total, self.available, self.swap_total, self.swap_free, self.scope)
            == (other.total, other.available, other.swap_total, other.swap_free, other.scope)
        )


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
    """Return the MemInfo parsed from the text of ``/proc/meminfo``.

    Kernels before 3.14 have no MemAvailable; it is then estimated as
    MemFree + Cached + Buffers. Raises ValueError naming the missing or
    malformed field.
    """
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
    return MemInfo(total, min(avail, total), swap_total, min(swap_free, swap_total))


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
