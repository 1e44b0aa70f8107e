"""The fake /proc builder produces what the real parsers expect."""

from __future__ import annotations

import os
from pathlib import Path

from bustd.meminfo import MemInfo, parse_meminfo
from bustd.pressure import parse_pressure
from bustd.process import parse_stat, parse_status_uid
from tests.fakeproc import FAKE_PID, PAGE_KIB, FakeProc, meminfo_text, stat_line


def test_fake_pids_cannot_be_real() -> None:
    assert FAKE_PID > 4194304  # PID_MAX_LIMIT on 64-bit kernels


def test_stat_line_has_52_fields() -> None:
    line = stat_line(12, b"a b", b"D", 3, 4, 5, 6, 7)
    assert len(line.split(b") ", 1)[1].split()) == 50
    st = parse_stat(line)
    assert (st.comm, st.state, st.ppid, st.pgrp, st.flags, st.starttime, st.rss_pages) == (
        b"a b", ord("D"), 3, 4, 5, 6, 7)
    assert parse_stat(stat_line(12, b"x")).pgrp == 12  # leads its own group by default


def test_meminfo_text() -> None:
    assert parse_meminfo(meminfo_text(100, 50, 20, 10)) == MemInfo(100, 50, 20, 10)


def test_add_writes_every_file(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path)
    fake.add(FAKE_PID, b"name", uid=42, oom_score=7, rss_kib=3 * PAGE_KIB)
    files = sorted(os.listdir(fake.path(str(FAKE_PID))))
    assert files == ["cmdline", "exe", "oom_score", "oom_score_adj", "stat", "statm", "status"]
    fs = fake.fs
    assert parse_status_uid(fs.read_pid(FAKE_PID, "status")) == 42
    assert parse_stat(fs.read_pid(FAKE_PID, "stat")).rss_pages == 3
    assert fs.read_pid(FAKE_PID, "cmdline") == b"/usr/bin/name\0"


def test_rewrites_keep_the_inode(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path)
    fake.set_meminfo(100, 50)
    fake.set_pressure(1, 2)
    before = (os.stat(fake.path("meminfo")).st_ino, os.stat(fake.path("pressure/memory")).st_ino)
    fake.set_meminfo(100, 10)
    fake.set_pressure(3, 4)
    after = (os.stat(fake.path("meminfo")).st_ino, os.stat(fake.path("pressure/memory")).st_ino)
    assert before == after
    assert parse_pressure(fake.fs.read("pressure/memory")).full_total == 4
