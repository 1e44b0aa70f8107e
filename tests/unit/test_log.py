"""log.safe, log.size and Log writing to a descriptor."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bustd.log import Log, safe, size


@pytest.mark.parametrize(("raw", "expected"), [
    (b"bash", "bash"),
    (b"", ""),
    (b"Web Content", "Web Content"),
    (b"a\nb", "a\\nb"),
    (b"\r\n", "\\r\\n"),
    (b"tab\there", "tab\\there"),
    (b"\x1b[31mred", "\\x1b[31mred"),
    (b"nul\x00", "nul\\x00"),
    (b"\x7f", "\\x7f"),
    (b"\xff\xfe", "\\xff\\xfe"),
    (b"caf\xc3", "caf\\xc3"),
    ("café ☃".encode(), "café ☃"),
    ("a\u2028b\u0085c".encode(), "a\\u2028b\\x85c"),
    (b"()()()())))(((()))", "()()()())))(((()))"),
])
def test_safe(raw: bytes, expected: str) -> None:
    assert safe(raw) == expected


@pytest.mark.parametrize("raw", [bytes(range(256)), b"\n" * 50, b"\xff" * 50,
                                 "\u2028\u2029\x85".encode() * 10])
def test_safe_output_is_printable(raw: bytes) -> None:
    out = safe(raw)
    assert out.isprintable()
    assert "\n" not in out and "\r" not in out


def test_safe_limit() -> None:
    assert safe(b"x" * 1000) == "x" * 256
    assert safe(b"x" * 1000, limit=15) == "x" * 15
    assert len(safe(b"\n" * 1000, limit=20)) == 20
    assert len(safe(b"\xff" * 1000, limit=20)) == 20
    assert len(safe("☃".encode() * 1000, limit=20)) == 20
    assert safe(b"abc", limit=0) == ""


@pytest.mark.parametrize(("kib", "text"), [
    (0, "0 KiB"), (1023, "1023 KiB"), (1024, "1.0 MiB"), (1536, "1.5 MiB"),
    (1024 * 1024, "1.0 GiB"), (8 << 20, "8.0 GiB"), (1048575, "1024.0 MiB"),
])
def test_size(kib: float, text: str) -> None:
    assert size(kib) == text


def read_all(fd: int) -> str:
    return os.pread(fd, 1 << 16, 0).decode()


def test_log_levels_and_prefixes(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "log", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        log = Log(verbose=False, fd=fd)
        assert not log.journal  # only fd 2 can be the journal stream
        log.error("e")
        log.warning("w")
        log.info("i")
        log.debug("hidden")
        log.verbose = True
        log.debug("d")
        assert read_all(fd) == "error: e\nwarning: w\ni\ndebug: d\n"
    finally:
        os.close(fd)


def test_log_journal_prefix(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "log", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        log = Log(fd=fd)
        log.journal = True
        log.warning("w")
        log.info("i")
        assert read_all(fd) == "<4>w\n<6>i\n"
    finally:
        os.close(fd)


def test_log_survives_a_broken_pipe() -> None:
    r, w = os.pipe()
    os.close(r)
    try:
        Log(fd=w).error("nobody listens")  # EPIPE is swallowed
    finally:
        os.close(w)


def test_log_encodes_lone_surrogates(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "log", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        Log(fd=fd).info("x\udcffy")
        assert os.pread(fd, 100, 0) == b"x\\udcffy\n"
    finally:
        os.close(fd)
