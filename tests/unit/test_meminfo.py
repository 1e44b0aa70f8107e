"""parse_meminfo on literal text, read_meminfo through a kept-open descriptor."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bustd.meminfo import MemInfo, parse_meminfo, read_meminfo
from tests.fakeproc import FakeProc, meminfo_text

REAL = b"""MemTotal:       16318412 kB
MemFree:          812344 kB
MemAvailable:    9123456 kB
Buffers:          301224 kB
Cached:          8123400 kB
SwapCached:        12000 kB
Active:          7000000 kB
SwapTotal:       8388604 kB
SwapFree:        8000000 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
"""


def test_parses_a_real_looking_file() -> None:
    assert parse_meminfo(REAL) == MemInfo(16318412, 9123456, 8388604, 8000000)


def test_fields_in_any_order_and_without_trailing_newline() -> None:
    buf = b"SwapFree: 7 kB\nMemAvailable: 50 kB\nSwapTotal: 9 kB\nMemTotal: 100 kB"
    assert parse_meminfo(buf) == MemInfo(100, 50, 9, 7)


def test_missing_memavailable_falls_back_to_free_cached_buffers() -> None:
    buf = meminfo_text(1000, None, free=100, cached=200, buffers=30)
    assert b"MemAvailable" not in buf
    # SwapCached must not be mistaken for Cached.
    assert parse_meminfo(buf).available == 330


def test_fallback_is_capped_at_memtotal() -> None:
    buf = meminfo_text(1000, None, free=900, cached=900, buffers=900)
    assert parse_meminfo(buf).available == 1000


def test_no_swap_lines_mean_no_swap() -> None:
    assert parse_meminfo(b"MemTotal: 10 kB\nMemAvailable: 5 kB\n") == MemInfo(10, 5, 0, 0)


def test_swap_free_capped_at_swap_total() -> None:
    buf = b"MemTotal: 10 kB\nMemAvailable: 5 kB\nSwapTotal: 4 kB\nSwapFree: 9 kB\n"
    assert parse_meminfo(buf).swap_free == 4


def test_key_must_start_a_line() -> None:
    # "XMemTotal:" is not MemTotal, and "SwapCached:" is not "Cached:".
    with pytest.raises(ValueError, match="MemTotal"):
        parse_meminfo(b"XMemTotal: 10 kB\nMemAvailable: 5 kB\n")


@pytest.mark.parametrize("buf", [
    b"",
    b"garbage\x00\xff\n",
    b"MemAvailable: 5 kB\nSwapTotal: 0 kB\n",
])
def test_missing_memtotal_names_the_field(buf: bytes) -> None:
    with pytest.raises(ValueError, match="MemTotal"):
        parse_meminfo(buf)


def test_neither_available_nor_free() -> None:
    with pytest.raises(ValueError, match="MemFree"):
        parse_meminfo(b"MemTotal: 10 kB\nCached: 5 kB\n")


@pytest.mark.parametrize(("buf", "field"), [
    (b"MemTotal: lots kB\nMemAvailable: 5 kB\n", "MemTotal"),
    (b"MemTotal: 10 kB\nMemAvailable: 5.5 kB\n", "MemAvailable"),
    (b"MemTotal: 10 kB\nMemAvailable: \xff\xfe kB\n", "MemAvailable"),
    (b"MemTotal: 10 kB\nMemAvailable:\nSwapTotal: 1 kB\n", "MemAvailable"),
    (b"MemTotal: 10 kB\nMemAvailable: 5 kB\nSwapTotal: x kB\n", "SwapTotal"),
    (b"MemTotal: 10 kB\nMemAvailable: 5 kB\nSwapFree:", "SwapFree"),
])
def test_garbage_values_raise_naming_the_field(buf: bytes, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        parse_meminfo(buf)


@pytest.mark.parametrize("total", [b"0", b"-5"])
def test_nonpositive_total_is_rejected(total: bytes) -> None:
    with pytest.raises(ValueError, match="MemTotal"):
        parse_meminfo(b"MemTotal: " + total + b" kB\nMemAvailable: 0 kB\n")


def test_read_meminfo_rereads_a_kept_open_descriptor(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path)
    fake.set_meminfo(1000, 500, 200, 100)
    fd = fake.fs.open("meminfo")
    try:
        assert read_meminfo(fd) == MemInfo(1000, 500, 200, 100)
        os.lseek(fd, 0, os.SEEK_END)  # pread ignores the file position
        fake.set_meminfo(1000, 40, 200, 10)
        assert read_meminfo(fd) == MemInfo(1000, 40, 200, 10)
        assert read_meminfo(fd) == MemInfo(1000, 40, 200, 10)
    finally:
        os.close(fd)


def test_read_meminfo_raises_on_garbage(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path)
    fake.write("meminfo", b"nonsense\n")
    fd = fake.fs.open("meminfo")
    try:
        with pytest.raises(ValueError, match="MemTotal"):
            read_meminfo(fd)
    finally:
        os.close(fd)
