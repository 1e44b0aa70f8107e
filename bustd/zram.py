"""zram swap: what its free space is really worth in RAM.

A zram device is swap that lives in RAM, compressed. ``SwapFree`` counts
its free slots as if they were disk, but every page stored there costs
RAM: ``1 / ratio`` of a page, where ``ratio`` is how well the data
compresses (``orig_data_size / mem_used_total`` of ``mm_stat``, see the
kernel's Documentation/admin-guide/blockdev/zram.rst; ``mem_used_total``
includes the allocator's overhead). Moving a page of RAM into zram therefore
frees only ``1 - 1/ratio`` of a page. bustd judges zram by that net gain::

    ratio      = orig_data_size / mem_used_total   (ASSUMED_RATIO until
                                                     MIN_SAMPLE_KIB are stored)
    room       = Size - Used                        (/proc/swaps, KiB)
                 capped at (mem_limit - mem_used_total) * ratio if mem_limit is set
    worth      = max(0, 1 - 1 / ratio)
    free_eff   = room * worth

and counts ``free_eff`` in place of the device's free swap, while SwapTotal
stays as the kernel gives it (other swap devices count as they are). So a
``--swap`` level of 10 % is reached when zram could still give back at most
10 % of its size in RAM: with data compressing 4:1 that is 13 % of its slots
free, at 2:1 20 %, and incompressible data never counts as free. Incompressible data
(ratio 1) makes zram worth nothing; a device at its ``mem_limit`` has no
room left whatever its free slots. zram's RAM use (``mem_used_total``) is
already missing from MemAvailable, so it is not subtracted twice.
"""

from __future__ import annotations

from .meminfo import MemInfo
from .procfs import ProcFS

__all__ = ["ASSUMED_RATIO", "Zram", "effective_swap", "parse_mm_stat", "parse_swaps",
           "read_zram"]

ASSUMED_RATIO = 2.0  # before enough data is stored to measure (typical for anon memory)
MIN_SAMPLE_KIB = 16 * 1024  # below this much stored data, the measured ratio is noise


class Zram:
    """One zram swap device: slots from /proc/swaps, RAM use from mm_stat (KiB)."""

    __slots__ = ("name", "size_kib", "used_kib", "orig_kib", "mem_used_kib", "mem_limit_kib")

    def __init__(self, name: str, size_kib: int, used_kib: int, orig_kib: int = 0,
                 mem_used_kib: int = 0, mem_limit_kib: int = 0) -> None:
        self.name = name
        self.size_kib = size_kib
        self.used_kib = used_kib
        self.orig_kib = orig_kib
        self.mem_used_kib = mem_used_kib
        self.mem_limit_kib = mem_limit_kib

    @property
    def ratio(self) -> float:
        """Compression ratio including overhead (ASSUMED_RATIO until measurable)."""
        if self.orig_kib < MIN_SAMPLE_KIB or self.mem_used_kib <= 0:
            return ASSUMED_RATIO
        return self.orig_kib / self.mem_used_kib

    @property
    def worth(self) -> float:
        """RAM freed per KiB moved into this device."""
        return max(0.0, 1.0 - 1.0 / self.ratio)

    @property
    def room_kib(self) -> float:
        """KiB of data the device can still take."""
        room = float(max(0, self.size_kib - self.used_kib))
        if self.mem_limit_kib > 0:
            room = min(room, max(0, self.mem_limit_kib - self.mem_used_kib) * self.ratio)
        return room


def parse_swaps(buf: bytes) -> list[tuple[str, int, int]]:
    """Return (name, size KiB, used KiB) of each zram device in ``/proc/swaps`` text.

    Other devices are left out. Raises ValueError on a malformed zram line.
    """
    out: list[tuple[str, int, int]] = []
    for line in buf.split(b"\n")[1:]:
        fields = line.split()
        if not fields or not fields[0].startswith(b"/dev/zram"):
            continue
        name = fields[0][5:].decode("ascii", "replace")
        if len(fields) < 4 or not name[4:].isdigit():
            raise ValueError(f"swaps: malformed line {line[:80]!r}")
        try:
            out.append((name, int(fields[2]), int(fields[3])))
        except ValueError:
            raise ValueError(f"swaps: malformed line {line[:80]!r}") from None
    return out


def parse_mm_stat(buf: bytes) -> tuple[int, int, int]:
    """Return (orig_data_size, mem_used_total, mem_limit) in KiB from ``mm_stat`` text.

    Raises ValueError if fewer than four numbers are present.
    """
    fields = buf.split()
    try:
        orig, _compr, used, limit = (int(f) for f in fields[:4])
    except ValueError:
        raise ValueError(f"mm_stat: malformed {buf[:80]!r}") from None
    if min(orig, used, limit) < 0:
        raise ValueError(f"mm_stat: negative value in {buf[:80]!r}")
    return orig // 1024, used // 1024, limit // 1024


def read_zram(proc: ProcFS, sys: ProcFS) -> list[Zram]:
    """Return the zram swap devices in use, with their RAM use where readable.

    A kernel without swap support has no ``/proc/swaps``: no devices. Raises
    OSError if it is otherwise unreadable; a device whose mm_stat cannot be
    read (old kernel) counts with the assumed ratio.
    """
    out: list[Zram] = []
    try:
        text = proc.read("swaps")
    except FileNotFoundError:
        return out
    for name, size, used in parse_swaps(text):
        z = Zram(name, size, used)
        try:
            z.orig_kib, z.mem_used_kib, z.mem_limit_kib = parse_mm_stat(
                sys.read(f"block/{name}/mm_stat", 512))
        except (OSError, ValueError):
            pass
        out.append(z)
    return out


def effective_swap(mem: MemInfo, devices: list[Zram]) -> MemInfo:
    """Return ``mem`` with zram's free swap counted at its RAM worth."""
    if not devices:
        return mem
    free = float(mem.swap_free)
    for z in devices:
        free += z.room_kib * z.worth - max(0, z.size_kib - z.used_kib)
    return MemInfo(mem.total, mem.available, mem.swap_total,
                   int(min(mem.swap_total, max(0.0, free))), mem.scope, mem.user,
                   mem.outside)
