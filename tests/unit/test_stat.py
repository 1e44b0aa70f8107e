"""parse_stat, parse_status_uid and parse_status_threads on literal text, hostile names included."""

from __future__ import annotations

import pytest

from bustd.process import PF_KTHREAD, parse_stat, parse_status_threads, parse_status_uid
from tests.fakeproc import stat_line

# Names a user can give a process (prctl(PR_SET_NAME) or the executable's name).
HOSTILE = [
    b"bash",
    b"",
    b"a b c",
    b" ",
    b"(",
    b")",
    b"((",
    b"))",
    b"foo) Z ",
    b"foo) Z 1 2 3 4",
    b"()()()())))(((()))",
    b"a) R (b",
    b"new\nline",
    b"\n",
    b"tab\there",
    b"\xff\xfe\xfd",
    b"caf\xc3",                # UTF-8 cut in the middle of a character
    "κόσμε".encode()[:15],      # 15 bytes: cut inside a two-byte character
    b"Web Content)) (",
    b"0123456789abcde",        # exactly 15 bytes, as the kernel cuts comm
    b"\x00nul",
    b"1 (x) S 1 1 1",
]


@pytest.mark.parametrize("comm", HOSTILE)
def test_hostile_names_keep_every_field(comm: bytes) -> None:
    buf = stat_line(4242, comm, b"R", ppid=17, pgrp=99, flags=0x400140, starttime=987654,
                    rss_pages=31337)
    st = parse_stat(buf)
    assert st.comm == comm
    assert st.state == ord("R")
    assert (st.ppid, st.pgrp, st.flags, st.starttime, st.rss_pages) == (
        17, 99, 0x400140, 987654, 31337)


def test_real_line() -> None:
    buf = (b"1234 (sshd: user@pts/0) S 1200 1234 1234 34816 1300 4194560 1620 0 0 0 "
           b"3 2 0 0 20 0 1 0 4243 16228352 1890 18446744073709551615 1 1 0 0 0 0 0 "
           b"4096 65536 0 0 0 17 3 0 0 0 0 0 0 0 0 0 0 0 0 0\n")
    st = parse_stat(buf)
    assert st.comm == b"sshd: user@pts/0"
    assert (st.state, st.ppid, st.pgrp, st.flags) == (ord("S"), 1200, 1234, 4194560)
    assert (st.starttime, st.rss_pages) == (4243, 1890)


def test_kernel_thread_flag() -> None:
    st = parse_stat(stat_line(2, b"kthreadd", flags=0x208040))
    assert st.flags & PF_KTHREAD
    assert not parse_stat(stat_line(2, b"kthreadd", flags=0x400000)).flags & PF_KTHREAD


def test_only_the_fields_up_to_rss_are_needed() -> None:
    full = stat_line(7, b"x", rss_pages=55)
    fields = full.split(b") ", 1)[1].split()
    short = b"7 (x) " + b" ".join(fields[:22])  # fields 3..24
    assert parse_stat(short).rss_pages == 55
    with pytest.raises(ValueError, match="fields"):
        parse_stat(b"7 (x) " + b" ".join(fields[:21]))


@pytest.mark.parametrize("buf", [
    b"",
    b"\n",
    b"1234",
    b"1234 (foo",
    b"1234 foo) S 1 1",
    b"1234 )foo( S 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
    b"1234 (foo) S 1 1 1",
    b"1234 (foo)",
    b"1234 (foo) ",
    b"\xff\xfe\x00garbage",
])
def test_truncated_or_garbage_lines_raise(buf: bytes) -> None:
    with pytest.raises(ValueError):
        parse_stat(buf)


@pytest.mark.parametrize("field", [1, 2, 6, 19, 21])  # ppid, pgrp, flags, starttime, rss
def test_non_numeric_field_raises(field: int) -> None:
    fields = stat_line(9, b"x").split(b") ", 1)[1].split()
    fields[field] = b"zz"
    with pytest.raises(ValueError, match="malformed"):
        parse_stat(b"9 (x) " + b" ".join(fields))


def test_error_message_shows_a_bounded_excerpt() -> None:
    with pytest.raises(ValueError) as info:
        parse_stat(b"1 (" + b"x" * 10_000)
    assert len(str(info.value)) < 200


STATUS = (b"Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t77\nPid:\t77\n"
          b"PPid:\t1\nTracerPid:\t0\nUid:\t1000\t1001\t1002\t1003\nGid:\t100\t100\t100\t100\n")


def test_status_uid_is_the_real_uid() -> None:
    assert parse_status_uid(STATUS) == 1000


def test_status_uid_zero_and_last_line() -> None:
    assert parse_status_uid(b"Name:\tx\nUid:\t0\t0\t0\t0\n") == 0
    assert parse_status_uid(b"Name:\tx\nUid:\t123\t0\t0\t0") == 123


def test_status_uid_without_trailing_newline_keeps_every_digit() -> None:
    # The Uid line is the last one (a short read): its last digit is no newline.
    assert parse_status_uid(b"Name:\tx\nUid:\t1000") == 1000
    assert parse_status_uid(b"Name:\tx\nUid:\t7") == 7


def test_status_name_cannot_fake_a_uid_line() -> None:
    # The Name line shows comm escaped by the kernel; a "Uid:" inside it is not a line.
    buf = b"Name:\tUid:\t0\n" + STATUS.split(b"\n", 1)[1]
    assert parse_status_uid(buf) == 1000


@pytest.mark.parametrize("buf", [
    b"",
    b"Name:\tx\n",
    b"Name:\tx\nUid:\n",
    b"Name:\tx\nUid:\t\n",
    b"Name:\tx\nUid:\tabc\t0\t0\t0\n",
    b"Name:\tx\nUid:\t-1\t0\t0\t0\n",
    b"Name:\tx\nGid:\t0\t0\t0\t0\n",
])
def test_status_uid_malformed(buf: bytes) -> None:
    with pytest.raises(ValueError, match="Uid"):
        parse_status_uid(buf)


def test_status_threads_is_read_from_its_own_line() -> None:
    # Threads: comes after Groups:, which can be long; a name cannot fake the line.
    buf = b"Name:\tThreads:\t9\n" + STATUS + b"Groups:\t" + b"1 " * 3000 + b"\nThreads:\t3\n"
    assert parse_status_threads(buf) == 3
    assert parse_status_threads(b"Name:\tx\nThreads:\t1") == 1


@pytest.mark.parametrize("buf", [b"", STATUS, b"Name:\tx\nThreads:\n",
                                 b"Name:\tx\nThreads:\tmany\n"])
def test_status_threads_malformed(buf: bytes) -> None:
    with pytest.raises(ValueError, match="Threads"):
        parse_status_threads(buf)
