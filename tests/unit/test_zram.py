"""zram: parsing /proc/swaps and mm_stat, and the worth of its free space."""

from __future__ import annotations

from pathlib import Path

import pytest

from bustd.meminfo import MemInfo
from bustd.procfs import ProcFS
from bustd.zram import (
    ASSUMED_RATIO,
    MIN_SAMPLE_KIB,
    Zram,
    effective_swap,
    parse_mm_stat,
    parse_swaps,
    read_zram,
)

GIB = 1024 * 1024  # KiB
SWAPS = (b"Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
         b"/dev/zram0                              partition\t1048572\t\t262144\t\t100\n"
         b"/swapfile                               file\t\t2097148\t\t0\t\t-2\n"
         b"/dev/zram1                              partition\t524284\t\t0\t\t100\n")
# orig compr mem_used limit mem_used_max same_pages compacted huge huge_since (bytes)
MM_STAT = (b"  1073741824   268435456   301989888        0   301989888     1234"
           b"        0        0        0\n")


def test_parse_swaps_keeps_only_zram() -> None:
    assert parse_swaps(SWAPS) == [("zram0", 1048572, 262144), ("zram1", 524284, 0)]
    assert parse_swaps(b"Filename\tType\tSize\tUsed\tPriority\n") == []
    assert parse_swaps(b"") == []


@pytest.mark.parametrize("line", [
    b"/dev/zram0 partition 1048572",
    b"/dev/zram0 partition lots 0 100",
    b"/dev/zramX partition 1 0 100",
])
def test_parse_swaps_malformed(line: bytes) -> None:
    with pytest.raises(ValueError, match="swaps: malformed"):
        parse_swaps(b"Filename Type Size Used Priority\n" + line + b"\n")


def test_parse_mm_stat() -> None:
    assert parse_mm_stat(MM_STAT) == (1024 * 1024, 288 * 1024, 0)
    assert parse_mm_stat(b"0 0 0 0 0 0 0") == (0, 0, 0)


@pytest.mark.parametrize("buf", [b"", b"1 2 3", b"a b c d", b"1 2 -3 4"])
def test_parse_mm_stat_malformed(buf: bytes) -> None:
    with pytest.raises(ValueError, match="mm_stat"):
        parse_mm_stat(buf)


def test_ratio_measured_once_enough_is_stored() -> None:
    z = Zram("zram0", GIB, 256 * 1024, orig_kib=1024 * 1024, mem_used_kib=256 * 1024)
    assert z.ratio == 4.0 and z.worth == 0.75
    small = Zram("zram0", GIB, 0, orig_kib=MIN_SAMPLE_KIB - 1, mem_used_kib=1)
    assert small.ratio == ASSUMED_RATIO
    assert Zram("zram0", GIB, 0).worth == 1 - 1 / ASSUMED_RATIO


def test_incompressible_data_makes_zram_worth_nothing() -> None:
    z = Zram("zram0", GIB, GIB // 2, orig_kib=GIB // 2, mem_used_kib=GIB // 2 + 4096)
    assert z.ratio < 1.0 and z.worth == 0.0
    mem = MemInfo(GIB, 50 * 1024, GIB, GIB // 2)
    assert effective_swap(mem, [z]) == MemInfo(GIB, 50 * 1024, GIB, 0)


def test_effective_swap_formula() -> None:
    # 1 GiB zram, half used, data compressing 4:1; a 2 GiB swap file, all free.
    z = Zram("zram0", GIB, GIB // 2, orig_kib=GIB // 2, mem_used_kib=GIB // 8)
    mem = MemInfo(4 * GIB, GIB, 3 * GIB, 2 * GIB + GIB // 2)
    eff = effective_swap(mem, [z])
    assert eff.swap_total == mem.swap_total
    assert eff.swap_free == 2 * GIB + int(GIB // 2 * 0.75)
    assert (eff.total, eff.available) == (mem.total, mem.available)


def test_mem_limit_caps_the_room() -> None:
    # 2 GiB of slots, but zram may use only 64 MiB more RAM at 2:1: 128 MiB of room.
    z = Zram("zram0", 2 * GIB, 0, orig_kib=512 * 1024, mem_used_kib=256 * 1024,
             mem_limit_kib=320 * 1024)
    assert z.room_kib == 128 * 1024
    mem = MemInfo(GIB, 100 * 1024, 2 * GIB, 2 * GIB)
    assert effective_swap(mem, [z]).swap_free == 64 * 1024
    full = Zram("zram0", 2 * GIB, 0, orig_kib=512 * 1024, mem_used_kib=400 * 1024,
                mem_limit_kib=320 * 1024)
    assert full.room_kib == 0.0


def test_no_zram_leaves_memory_as_it_is() -> None:
    mem = MemInfo(GIB, 100, 5, 3)
    assert effective_swap(mem, []) is mem


def test_read_zram_from_trees(tmp_path: Path) -> None:
    proc, sys = tmp_path / "proc", tmp_path / "sys"
    (sys / "block" / "zram0").mkdir(parents=True)
    proc.mkdir()
    (proc / "swaps").write_bytes(SWAPS)
    (sys / "block" / "zram0" / "mm_stat").write_bytes(MM_STAT)
    devices = read_zram(ProcFS(str(proc)), ProcFS(str(sys)))
    assert [(z.name, z.size_kib, z.used_kib, z.orig_kib, z.mem_used_kib)
            for z in devices] == [("zram0", 1048572, 262144, GIB, 288 * 1024),
                                  ("zram1", 524284, 0, 0, 0)]  # no mm_stat: assumed ratio
    (proc / "swaps").unlink()
    assert read_zram(ProcFS(str(proc)), ProcFS(str(sys))) == []  # no swap support
