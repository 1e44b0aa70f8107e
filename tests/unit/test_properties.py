"""Property-based tests of every parser of kernel text and of the config file.

What every parser must do, checked on thousands of generated inputs (the
count is the profile's, tests/conftest.py):

- on hostile input (arbitrary bytes, a soup of the parser's own words and
  separators, and well-formed text cut, spliced and garbled) raise nothing
  but ValueError: a dying task's half-written file or a kernel change is a
  skipped reading, never a dead daemon;
- on well-formed input, hostile process names included (``a) R (b``,
  newlines, invalid UTF-8), return the fields it was built from;
- round trips: a Config through encode/decode, and a config file through
  ``config_file_args`` to the command line it stands for.

To cover a new parser of kernel text, append a :class:`KernelParser` to
:data:`KERNEL_PARSERS`: its ``parse`` function, a strategy of well-formed
(text, expected fields) pairs, the function that picks those fields from the
parse result, and the words the parser looks for. The two generic tests then
run on it, and their ids name it.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from unittest import mock

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bustd import cgroup, cli, conffile, options, optvalues
from bustd.config import CHOICES, DEFAULTS, Config, ConfigError, decode, encode
from bustd.meminfo import parse_meminfo
from bustd.pressure import parse_pressure
from bustd.process import parse_stat, parse_status, parse_status_uid
from bustd.zram import parse_mm_stat, parse_swaps

# --- Building blocks ---------------------------------------------------------

# Bytes that trip number and text parsing: signs, huge and non-ASCII digits,
# int()'s underscores, float words, a digit string past int()'s 4300-digit
# limit, cut UTF-8, NUL, line and field separators.
TRICKY = (b"", b" ", b"\t", b"\n", b"\r", b"\0", b"\x0b", b"\x0c", b"(", b")", b"=", b":",
          b"-", b"+", b"-1", b"0", b"00", b"1_0", b"0x1f", b"1e999", b"-1e999", b"nan", b"inf",
          b"1.5", b".", b"99999999999999999999999999", b"9" * 5000, "\u0663".encode(),
          b"\xff", b"\xc3", b"\xe2\x80\xa8", b"kB", b"  ")

_MUTATIONS = ("delete", "insert", "replace", "truncate", "duplicate", "swap")


def _mutate(data: bytes, ops: list[tuple[str, int, int, bytes]]) -> bytes:
    """Return ``data`` with each (kind, a, b, payload) edit applied in turn."""
    for kind, a, b, payload in ops:
        n = len(data)
        i, j = sorted((a % (n + 1), b % (n + 1)))
        if kind == "delete":
            data = data[:i] + data[j:]
        elif kind == "insert":
            data = data[:i] + payload + data[i:]
        elif kind == "replace":
            data = data[:i] + payload + data[j:]
        elif kind == "truncate":
            data = data[:i]
        elif kind == "duplicate":
            data = data[:j] + data[i:j] + data[j:]
        else:  # swap two slices
            k = (i + j) // 2
            data = data[:i] + data[k:j] + data[i:k] + data[j:]
    return data


def hostile_bytes(well_formed: st.SearchStrategy[bytes],
                  tokens: tuple[bytes, ...]) -> st.SearchStrategy[bytes]:
    """Return a strategy of input built to break a parser of ``well_formed`` text.

    One third each: arbitrary bytes; a soup of ``tokens``, tricky bytes
    (numbers among them) and random bytes; well-formed text with up to 5
    random edits.
    """
    token = st.one_of(st.sampled_from(tokens + TRICKY), st.binary(max_size=6))
    soup = st.lists(token, max_size=24).map(b"".join)
    edit = st.tuples(st.sampled_from(_MUTATIONS), st.integers(0, 1 << 16),
                     st.integers(0, 1 << 16), token)
    mutated = st.builds(_mutate, well_formed, st.lists(edit, min_size=1, max_size=5))
    return st.one_of(st.binary(max_size=600), soup, mutated)


# Process names a user can choose (prctl(PR_SET_NAME), the executable's
# name): the kernel keeps 15 bytes. Anything goes, biased toward what
# confuses a parser that splits on spaces or parentheses.
COMM_PIECES = (b"(", b")", b" ", b"\n", b"\t", b") R (", b")) ", b"Z", b"1", b"Uid:",
               b"\nUid:\t0", b"\\", b"\xff", b"\xc3", b"bash", b"Web Content")
comms = st.one_of(
    st.binary(max_size=15),
    st.lists(st.sampled_from(COMM_PIECES), max_size=8).map(lambda p: b"".join(p)[:15]))


@dataclass(frozen=True)
class KernelParser:
    """One parser of kernel text and how to test it."""

    name: str
    parse: Callable[[bytes], Any]
    # (text, expected) pairs; ``fields(parse(text)) == expected`` must hold.
    well_formed: st.SearchStrategy[tuple[bytes, Any]]
    fields: Callable[[Any], Any]
    # The keys and separators the parser looks for, to build near misses.
    tokens: tuple[bytes, ...]

    def __str__(self) -> str:
        return self.name


# --- /proc/PID/stat (proc(5)) --------------------------------------------------

@st.composite
def stat_texts(draw: st.DrawFn) -> tuple[bytes, Any]:
    """A ``/proc/PID/stat`` line of 24 to 52 fields (older kernels print fewer)."""
    pid = draw(st.integers(1, 1 << 22))
    comm = draw(comms)
    state = draw(st.sampled_from(b"RSDZTtXxIKWP"))
    # Fields 4 to n, numbered as in proc(5); most are any printed integer.
    n = draw(st.integers(24, 52))
    fillers = draw(st.lists(st.integers(-2**63, 2**64 - 1), min_size=1, max_size=4))
    fields = {k: fillers[k % len(fillers)] for k in range(4, n + 1)}
    fields[4] = ppid = draw(st.integers(0, 1 << 22))
    fields[5] = pgrp = draw(st.integers(0, 1 << 22))
    fields[9] = flags = draw(st.integers(0, 2**32 - 1))
    fields[22] = starttime = draw(st.integers(0, 2**64 - 1))
    fields[24] = rss = draw(st.integers(0, 2**63 - 1))
    text = (b"%d (" % pid + comm + b") " + bytes((state,)) + b" "
            + b" ".join(b"%d" % fields[k] for k in range(4, n + 1))
            + draw(st.sampled_from((b"\n", b""))))
    return text, (comm, state, ppid, pgrp, flags, starttime, rss)


def _stat_fields(s: Any) -> Any:
    return (s.comm, s.state, s.ppid, s.pgrp, s.flags, s.starttime, s.rss_pages)


# --- /proc/PID/status: the Uid line -------------------------------------------

def kernel_escape(name: bytes) -> bytes:
    """Return ``name`` as /proc/PID/status prints it: only newline and
    backslash escaped (fs/proc/array.c, proc_task_name)."""
    return name.replace(b"\\", b"\\\\").replace(b"\n", b"\\n")


@st.composite
def status_texts(draw: st.DrawFn) -> tuple[bytes, Any]:
    """A ``/proc/PID/status`` file; expected: (uid, VmRSS, VmSwap, Threads).

    A process without memory (zombie, kernel thread) has no Vm lines.
    """
    uids = draw(st.lists(st.integers(0, 2**32 - 2), min_size=4, max_size=4))
    rss, swap = draw(st.lists(st.integers(0, 2**44), min_size=2, max_size=2))
    threads = draw(st.integers(1, 1 << 22))
    has_vm = draw(st.booleans())
    lines = [b"Name:\t" + kernel_escape(draw(comms))]
    if draw(st.booleans()):
        lines.append(b"Umask:\t0022")  # Linux >= 4.7
    lines += [b"State:\tS (sleeping)", b"Tgid:\t42", b"Ngid:\t0", b"Pid:\t42", b"PPid:\t1",
              b"TracerPid:\t0", b"Uid:\t" + b"\t".join(b"%d" % u for u in uids),
              b"Gid:\t0\t0\t0\t0", b"FDSize:\t64", b"Groups:\t4 24 27"]
    if has_vm:
        lines += [b"VmPeak:\t  %d kB" % rss, b"VmRSS:\t    %d kB" % rss, b"RssAnon:\t  1 kB",
                  b"VmSwap:\t %d kB" % swap]
    lines += [b"Threads:\t%d" % threads, b"SigQ:\t0/63455"]
    expected = (uids[0], rss, swap) if has_vm else (uids[0], 0, 0)
    return b"\n".join(lines) + b"\n", (*expected, threads)


def _status_fields(s: Any) -> Any:
    return (s.uid, s.rss_kib, s.swap_kib, s.threads)


STATUS_TOKENS = (b"\nUid:", b"Uid:", b"\t", b"Name:", b"\nUid:\t", b"\nUid:\t1000",
                 b"\nVmRSS:", b"\nVmSwap:", b"\nThreads:", b" kB")


# --- /proc/meminfo -------------------------------------------------------------

# Kernel order; SwapCached and the others are traps for a key search that
# does not anchor at the start of a line.
MEMINFO_KEYS = (b"MemTotal", b"MemFree", b"MemAvailable", b"Buffers", b"Cached",
                b"SwapCached", b"Active(anon)", b"SwapTotal", b"SwapFree", b"Zswap",
                b"Committed_AS", b"HugePages_Total", b"DirectMap4k")


@st.composite
def meminfo_texts(draw: st.DrawFn) -> tuple[bytes, Any]:
    """A ``/proc/meminfo`` file, with or without MemAvailable (before 3.14) and swap."""
    numbers = draw(st.lists(st.integers(0, 2**50), min_size=len(MEMINFO_KEYS),
                            max_size=len(MEMINFO_KEYS)))
    values = dict(zip(MEMINFO_KEYS, numbers))
    values[b"MemTotal"] = draw(st.integers(1, 2**45))
    drop = set()
    if draw(st.booleans()):
        drop.add(b"MemAvailable")
    if draw(st.booleans()):
        drop |= {b"SwapTotal", b"SwapFree"}
    pads = draw(st.lists(st.integers(1, 12), min_size=1, max_size=3))
    lines = []
    for i, key in enumerate(MEMINFO_KEYS):
        if key in drop:
            continue
        pad = b" " * pads[i % len(pads)]
        unit = b"" if key == b"HugePages_Total" else b" kB"
        lines.append(key + b":" + pad + b"%d" % values[key] + unit)
    get = values.get
    total = values[b"MemTotal"]
    if b"MemAvailable" in drop:
        avail = get(b"MemFree", 0) + get(b"Cached", 0) + get(b"Buffers", 0)
    else:
        avail = values[b"MemAvailable"]
    swap_total = 0 if b"SwapTotal" in drop else values[b"SwapTotal"]
    swap_free = 0 if b"SwapFree" in drop else values[b"SwapFree"]
    expected = (total, min(avail, total), swap_total, min(swap_free, swap_total))
    return b"\n".join(lines) + b"\n", expected


def _meminfo_fields(m: Any) -> Any:
    return (m.total, m.available, m.swap_total, m.swap_free)


# --- /proc/pressure/* (Documentation/accounting/psi.rst) ------------------------

@st.composite
def pressure_texts(draw: st.DrawFn) -> tuple[bytes, Any]:
    """A PSI file: a ``some`` line and, except in old CPU files, a ``full`` line."""
    def line(kind: bytes) -> tuple[bytes, tuple[float, float, float, int]]:
        hundredths = draw(st.lists(st.integers(0, 10000), min_size=3, max_size=3))
        avgs = [b"%d.%02d" % divmod(h, 100) for h in hundredths]
        total = draw(st.integers(0, 2**64 - 1))
        text = (kind + b" avg10=" + avgs[0] + b" avg60=" + avgs[1] + b" avg300=" + avgs[2]
                + b" total=%d" % total)
        return text, (float(avgs[0]), float(avgs[1]), float(avgs[2]), total)

    some, some_fields = line(b"some")
    if draw(st.booleans()):
        full, full_fields = line(b"full")
        return some + b"\n" + full + b"\n", some_fields + full_fields
    return some + b"\n", (*some_fields, 0.0, 0.0, 0.0, 0)


def _pressure_fields(p: Any) -> Any:
    return (p.some_avg10, p.some_avg60, p.some_avg300, p.some_total,
            p.full_avg10, p.full_avg60, p.full_avg300, p.full_total)


# --- /proc/swaps and /sys/block/zramN/mm_stat (Documentation/admin-guide/blockdev/zram.rst)

@st.composite
def swaps_texts(draw: st.DrawFn) -> tuple[bytes, Any]:
    """A ``/proc/swaps`` table; expected: (name, size, used) of each zram device."""
    lines = [b"Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority"]
    expected = []
    for _ in range(draw(st.integers(0, 4))):
        size, used = draw(st.lists(st.integers(0, 2**50), min_size=2, max_size=2))
        prio = draw(st.integers(-2**15, 2**15))
        if draw(st.booleans()):
            n = draw(st.integers(0, 255))
            lines.append(b"/dev/zram%d                              partition\t%d\t%d\t%d"
                         % (n, size, used, prio))
            expected.append((f"zram{n}", size, used))
        else:  # a swap file or another device: left out, whatever its name
            name = draw(st.sampled_from((b"/swapfile", b"/dev/sda2", b"/var/zram 1")))
            lines.append(name.replace(b" ", b"\\040") + b"  file\t%d\t%d\t%d"
                         % (size, used, prio))
    return b"\n".join(lines) + b"\n", expected


@st.composite
def mm_stat_texts(draw: st.DrawFn) -> tuple[bytes, Any]:
    """A zram ``mm_stat`` line (7 to 9 numbers); expected: (orig, used, limit) in KiB."""
    numbers = draw(st.lists(st.integers(0, 2**62), min_size=7, max_size=9))
    pad = draw(st.sampled_from((b" ", b"        ")))
    text = pad + pad.join(b"%d" % n for n in numbers) + b"\n"
    return text, (numbers[0] // 1024, numbers[2] // 1024, numbers[3] // 1024)


# --- cgroup v2 files (Documentation/admin-guide/cgroup-v2.rst) ----------------------

@st.composite
def procs_texts(draw: st.DrawFn) -> tuple[bytes, Any]:
    """``cgroup.procs``: one PID a line."""
    pids = draw(st.lists(st.integers(1, 1 << 22), max_size=8))
    return b"".join(b"%d\n" % p for p in pids), pids


@st.composite
def limit_texts(draw: st.DrawFn) -> tuple[bytes, Any]:
    """``memory.max``: a byte count or ``max``; expected: KiB or None."""
    if draw(st.booleans()):
        return b"max\n", None
    n = draw(st.integers(0, 2**63 - 1))
    return b"%d\n" % n, n // 1024


CGROUP_STAT_KEYS = (b"anon", b"file", b"shmem", b"active_file", b"inactive_file",
                    b"slab_reclaimable", b"workingset_refault_anon", b"pswpin", b"pgfault")


@st.composite
def cgroup_stat_texts(draw: st.DrawFn) -> tuple[bytes, Any]:
    """``memory.stat``: ``key value`` lines; expected: (reclaimable KiB, swap-ins)."""
    keys = draw(st.lists(st.sampled_from(CGROUP_STAT_KEYS), unique=True, max_size=9))
    values = {k: draw(st.integers(0, 2**62)) for k in keys}
    text = b"".join(k + b" %d\n" % v for k, v in values.items())
    reclaimable = sum(values.get(k, 0) for k in (b"active_file", b"inactive_file",
                                                 b"slab_reclaimable")) // 1024
    swapins = values.get(b"pswpin", values.get(b"workingset_refault_anon"))
    return text, (reclaimable, swapins)


CGROUP_PATHS = st.lists(st.text(st.characters(codec="utf-8", exclude_characters="\n/\0"),
                                min_size=1, max_size=8), max_size=4).map(
    lambda parts: "/" + "/".join(parts)).filter(lambda p: not p.endswith(" (deleted)"))


@st.composite
def proc_cgroup_texts(draw: st.DrawFn) -> tuple[bytes, Any]:
    """``/proc/PID/cgroup``: cgroup v1 lines and, on v2 or hybrid hosts, a ``0::`` line."""
    lines = [b"%d:%s:/%s" % (n, draw(st.sampled_from((b"memory", b"pids", b"name=systemd"))),
                            draw(st.sampled_from((b"", b"user.slice", b"a b"))))
             for n in range(draw(st.integers(0, 3)), 0, -1)]
    path = draw(st.none() | CGROUP_PATHS)
    if path is not None:
        lines.append(b"0::" + path.encode())
    return b"\n".join(lines) + b"\n", path


def _mount_escape(path: str) -> bytes:
    """Return ``path`` as mountinfo prints it: backslash and space as octal escapes."""
    return path.replace("\\", "\\134").replace(" ", "\\040").encode()


@st.composite
def mountinfo_texts(draw: st.DrawFn) -> tuple[bytes, Any]:
    """``/proc/PID/mountinfo`` lines (proc(5)); expected: (root, mount point, type) each."""
    lines, expected = [], []
    for n in range(draw(st.integers(0, 5))):
        root = draw(st.sampled_from(("/", "/lxc/c1", "/a b")))
        point = draw(st.sampled_from(("/", "/sys/fs/cgroup", "/mnt/x y", "/\\z")))
        fstype = draw(st.sampled_from(("cgroup2", "cgroup", "ext4", "9p")))
        optional = draw(st.sampled_from(("", " shared:1", " master:2 shared:3")))
        lines.append(b"%d 1 0:%d %s %s rw,relatime%s - %s none rw"
                     % (20 + n, n, _mount_escape(root), _mount_escape(point), optional.encode(),
                        fstype.encode()))
        expected.append((root, point, fstype))
    return b"\n".join(lines) + b"\n", expected


KERNEL_PARSERS = [
    KernelParser("parse_stat", parse_stat, stat_texts(), _stat_fields,
                 (b"(", b")", b") ", b" (", b"R", b"Z")),
    KernelParser("parse_status_uid", parse_status_uid,
                 status_texts().map(lambda case: (case[0], case[1][0])), lambda uid: uid,
                 STATUS_TOKENS),
    KernelParser("parse_status", parse_status, status_texts(), _status_fields,
                 STATUS_TOKENS),
    KernelParser("parse_swaps", parse_swaps, swaps_texts(), lambda rows: rows,
                 (b"\n/dev/zram", b"/dev/zram0 ", b"partition", b"\t", b"Filename")),
    KernelParser("parse_mm_stat", parse_mm_stat, mm_stat_texts(), lambda t: t,
                 (b" ", b"-1", b"0")),
    KernelParser("parse_meminfo", parse_meminfo, meminfo_texts(), _meminfo_fields,
                 (*(b"\n" + k + b":" for k in MEMINFO_KEYS), b" kB\n")),
    KernelParser("parse_pressure", parse_pressure, pressure_texts(), _pressure_fields,
                 (b"some ", b"full ", b"avg10=", b"avg60=", b"avg300=", b"total=", b"=", b"\n")),
    KernelParser("cgroup.parse_procs", cgroup.parse_procs, procs_texts(), lambda p: p,
                 (b"\n", b" ", b"0", b"-1")),
    KernelParser("cgroup.parse_limit", lambda t: cgroup.parse_limit(t, "memory.max"),
                 limit_texts(), lambda v: v, (b"max", b"\n", b"0")),
    KernelParser("cgroup.parse_stat", cgroup.parse_stat, cgroup_stat_texts(), lambda v: v,
                 (*(k + b" " for k in CGROUP_STAT_KEYS), b"\n")),
    KernelParser("cgroup.parse_proc_cgroup", cgroup.parse_proc_cgroup, proc_cgroup_texts(),
                 lambda v: v, (b"0::", b"0::/", b"\n", b":", b" (deleted)")),
    KernelParser("cgroup.parse_mountinfo", cgroup.parse_mountinfo, mountinfo_texts(),
                 lambda v: v, (b" - ", b"cgroup2", b"\\040", b"\\1", b"\n", b" ")),
]
_IDS = [p.name for p in KERNEL_PARSERS]


@pytest.mark.parametrize("parser", KERNEL_PARSERS, ids=_IDS)
def test_kernel_text_well_formed_parses_to_its_fields(parser: KernelParser) -> None:
    @given(parser.well_formed)
    def check(case: tuple[bytes, Any]) -> None:
        text, expected = case
        assert parser.fields(parser.parse(text)) == expected

    check()


@pytest.mark.parametrize("parser", KERNEL_PARSERS, ids=_IDS)
def test_kernel_text_hostile_raises_only_value_error(parser: KernelParser) -> None:
    @given(hostile_bytes(parser.well_formed.map(lambda case: case[0]), parser.tokens))
    def check(text: bytes) -> None:
        try:
            parser.parse(text)
        except ValueError:
            pass

    check()


# --- The config file -----------------------------------------------------------

P = options.parser()
FLAGS = ("sort-by-rss", "kill-pgroup", "no-daemon", "daemon", "dry-run", "verbose")
OPTIONS = ("mem", "swap", "mem-size", "swap-size", "psi", "psi-metric", "psi-mem",
           "psi-duration", "watch", "rank", "unkillables", "ignore", "prefer", "avoid",
           "grace", "pid-file", "report", "proc-root", "sys-root", "config", "help",
           "version", "print-config", *FLAGS)


@pytest.fixture(scope="module")
def conf_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A config file bustd accepts (mode 0644): each example rewrites its text."""
    path = tmp_path_factory.mktemp("conf") / "bustd.conf"
    path.write_bytes(b"")
    path.chmod(0o644)
    yield path


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:  # same inode, same mode
        f.write(data)


# Lines of a config file made to break the reader: known and unknown
# options, quotes, comments, NUL, regex bombs, bad numbers, odd line breaks.
CONF_TOKENS = (
    *(o.encode() for o in OPTIONS), b"mem_size", b"=", b" = ", b"#", b" #", b"\t#", b"'",
    b'"', b"\n", b"\r\n", b"\r",
    b"\0", b"|", b" | ", b"true", b"false", b"yes", b"0", b"10,5", b"5,10", b"a{4294967296}",
    b"(" * 1200, b"(?P<a>x)(?P<a>y)", b"[a", b"*", b"\\", "\u2028".encode(), b"\xff",
    b"\xc3", b"\x1b[31m", b"-", b"--mem", b"/dev/zero", b"some", b"full")


@given(hostile_bytes(st.just(b"mem = 10,5\nprefer = '^(a|b)$'  # c\n"), CONF_TOKENS))
def test_config_file_hostile_raises_only_usage_error(conf_path: Path, data: bytes) -> None:
    _write(conf_path, data)
    try:
        argv = conffile.config_file_args(P, str(conf_path))
    except optvalues.UsageError as err:
        message = str(err)
        assert message.startswith((f"{conf_path}:", f"config file {conf_path}:")), message
        assert "\n" not in message
    else:
        cli.build_config(P.parse_args(argv))  # what the file gave is valid


@given(st.text())
def test_config_line_hostile_raises_only_value_error(line: str) -> None:
    try:
        parsed = conffile.parse_config_line(line)
    except ValueError as err:
        assert "\n" not in str(err)
    else:
        if parsed is not None:
            key, value = parsed
            assert key and "=" not in key and "\0" not in value


# Well-formed values for each option, as the text a user writes.
def _numbers(low: float, high: float) -> st.SearchStrategy[float]:
    return st.one_of(st.integers(int(low), int(high)).map(float),
                     st.floats(low, high, allow_nan=False))


def _pair(low: float, high: float, whole: bool = False) -> st.SearchStrategy[str]:
    numbers = st.integers(int(low), int(high)) if whole else _numbers(low, high)
    text: Callable[[float], str] = str if whole else repr

    def render(levels: list[float], kill: bool) -> str:
        term, low_ = max(levels), min(levels)
        return text(term) + ("," + text(low_) if kill else "")

    return st.builds(render, st.lists(numbers, min_size=2, max_size=2), st.booleans())


def _compiles(text: str) -> bool:
    try:
        re.compile(text)
    except (re.error, OverflowError, RecursionError, ValueError):
        return False
    return True


LINE_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\n\r\0"), max_size=16)
REGEX = st.one_of(LINE_TEXT.filter(_compiles), LINE_TEXT.map(re.escape))
GLOB = LINE_TEXT.filter(lambda g: "|" not in g and g.strip() != "")
VALUES: dict[str, st.SearchStrategy[str]] = {
    "mem": _pair(0, 100), "swap": _pair(0, 100),
    "mem-size": _pair(0, 2**53, whole=True), "swap-size": _pair(0, 2**53, whole=True),
    "psi": _numbers(0, 100).map(repr), "psi-mem": _numbers(0, 100).map(repr),
    # --grace: at most 10 s with the default --hook-timeout of 0.2 s (review L4).
    "grace": _numbers(0, 9.8).map(repr), "report": _numbers(0, 86400).map(repr),
    "psi-duration": _numbers(0, 86400).map(repr), "watch": _numbers(0, 100).map(repr),
    "psi-metric": st.sampled_from(CHOICES["psi_metric"]),
    "rank": st.sampled_from(CHOICES["rank"]),
    "unkillables": st.builds(lambda gs, sep: sep.join(gs), st.lists(GLOB, min_size=1, max_size=4),
                             st.sampled_from(("|", " | ", "\t|"))),
    "ignore": REGEX, "prefer": REGEX, "avoid": REGEX,
    "pid-file": LINE_TEXT.filter(bool), "proc-root": LINE_TEXT.filter(bool),
    "sys-root": LINE_TEXT.filter(bool),
}
# argparse reads a value of exactly '--' as the end of the options: bustd
# refuses it (tests/integration/test_cli.py), so a valid file never has one.
VALUES = {key: value.filter(lambda v: v != "--") for key, value in VALUES.items()}
BOOLEANS = ("true", "false", "yes", "no", "1", "0", "True", "FALSE", "Yes", "NO")


def _needs_quotes(value: str) -> bool:
    """Return whether ``value`` must be quoted to be read back as it is."""
    return (value != value.strip() or value[:1] in ("'", '"')
            or any(c == "#" and (i == 0 or value[i - 1] in " \t")
                   for i, c in enumerate(value)))


KEYS = sorted(VALUES) + [f for f in FLAGS if f not in ("daemon", "no-daemon")]
BLANK = ("", "   ", "\t", "# c", "  #x = 1", "#mem=200")
QUOTED_COMMENTS = ("", " # note", "# note", "\t#'\"#")
COMMENTS = ("", " # note", "\t# a # b", "  #")
SPACES = ("", " ", "\t", "  ")


def _pick(choices: tuple[str, ...], bits: int) -> str:
    return choices[bits % len(choices)]


@st.composite
def config_files(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """A valid config file in any layout, and the argv it stands for.

    --daemon and --no-daemon are left out: two such lines could clash.
    The layout of a line (blank or comment line, underscores, quotes,
    comment, spaces) comes from the bits of one number: one draw is much
    cheaper than six, and the test runs 10,000 times.
    """
    lines: list[str] = []
    argv: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        layout = draw(st.integers(0, 2**24 - 1))
        if layout % 5 == 0:
            lines.append(_pick(BLANK, layout >> 3))
            continue
        key = draw(st.sampled_from(KEYS))
        written = key.replace("-", "_") if layout & 8 else key
        if key in FLAGS:
            value = _pick(BOOLEANS, layout >> 12)
            argv += [f"--{key}"] if value.lower() in ("true", "yes", "1") else []
        else:
            value = draw(VALUES[key])
            argv.append(f"--{key}={value}")
        quotes = [q for q in ("'", '"') if q not in value]
        if _needs_quotes(value) or (quotes and layout & 16):
            assume(quotes)
            q = quotes[(layout >> 5) % len(quotes)]
            value = q + value + q
            comment = _pick(QUOTED_COMMENTS, layout >> 6)
        else:
            comment = _pick(COMMENTS, layout >> 6)
        space, equals = _pick(SPACES, layout >> 9), _pick(SPACES, layout >> 18)
        lines.append(f"{space}{written}{space}={equals}{value}{comment}")
    ending = "\r\n" if draw(st.booleans()) else "\n"
    return "".join(line + ending for line in lines).encode(), argv


@given(config_files())
def test_config_file_stands_for_its_command_line(conf_path: Path,
                                                 case: tuple[bytes, list[str]]) -> None:
    data, argv = case
    _write(conf_path, data)
    assert conffile.config_file_args(P, str(conf_path)) == argv
    cfg = cli.build_config(P.parse_args(argv))
    globs = [item[len("--unkillables="):] for item in argv if item.startswith("--unkillables=")]
    if globs:  # the last one wins, its globs trimmed
        assert cfg.unkillables == "|".join(g.strip() for g in globs[-1].split("|"))


# --- The command line ------------------------------------------------------------

ARGS = st.one_of(
    st.sampled_from([f"--{o}" for o in OPTIONS] + ["-m", "-s", "-M", "-S", "-p", "-u", "-g",
                                                    "-n", "-r", "-V", "-c", "--", "-", "--pr"]),
    st.sampled_from(["10", "10,5", "5,10", "abc", "", " ", "-1", "nan", "1e400", "some",
                     "a{4294967296}", "(" * 1200 + ")" * 1200, "sshd | Xorg", "a||b",
                     "/dev/zero", "/", "/proc", "/nonexistent", "\udcff", "a\nb", "\x1b[31m"]),
    st.text(max_size=12))


@given(st.lists(ARGS, max_size=8))
def test_command_line_never_raises(argv: list[str]) -> None:
    """Any argv: exit 0, 2 or 3, at most one line on stderr, never an exception."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            mock.patch.dict(os.environ), mock.patch.object(cli, "parser", return_value=P), \
            mock.patch("os.execv", side_effect=AssertionError("would start bustd")):
        code = cli.main([*argv, "--print-config"])  # so it never starts the daemon
    lines = err.getvalue().splitlines()
    assert code in (0, 2, 3), (code, err.getvalue())
    if code:
        assert len(lines) == 1 and lines[0].startswith("bustd: error: "), err.getvalue()
        assert "Traceback" not in lines[0] and "please report" not in lines[0], lines[0]
    else:
        assert lines == []


# --- The hand-over to the runtime: encode / decode ----------------------------------

# Any text, cheaply: random bytes read as UTF-8 with surrogateescape (so
# also the lone surrogates of undecodable argv bytes), or short text from
# all of Unicode, or the characters the encoding escapes.
ANY_TEXT = st.one_of(
    st.binary(max_size=24).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.text(st.characters(codec=None), max_size=6),
    st.lists(st.sampled_from(("\\", "\n", "\t", "\0", "n", "t", "0", "None", "True")),
             max_size=6).map("".join))


@st.composite
def configs(draw: st.DrawFn) -> Config:
    """Any Config, with any text in its strings (NUL, newlines, backslashes)."""
    values: dict[str, object] = {}
    for key, default in DEFAULTS.items():
        if default is None:
            values[key] = draw(st.none() | st.integers(0, 2**64))
        elif type(default) is bool:
            values[key] = draw(st.booleans())
        elif type(default) is float:
            values[key] = draw(st.floats(allow_nan=False))
        elif key in CHOICES:
            values[key] = draw(st.sampled_from(CHOICES[key]))
        else:
            values[key] = draw(ANY_TEXT)
    return Config(**values)


@given(configs())
def test_encode_decode_round_trip(cfg: Config) -> None:
    text = encode(cfg)
    assert "\0" not in text  # an environment variable cannot hold one
    assert len(text.split("\n")) == len(DEFAULTS)
    back = decode(text)
    assert back == cfg
    for key in DEFAULTS:
        assert type(getattr(back, key)) is type(getattr(cfg, key)), key


DECODE_TOKENS = st.one_of(st.sampled_from(sorted(DEFAULTS)),
                          st.sampled_from(["\t", "\n", "\\", "\\n", "None", "True", "nan",
                                           "-1", "1.5", "1e999", "9" * 5000, "\0"]),
                          st.text(max_size=8))


@given(st.one_of(st.text(), st.lists(DECODE_TOKENS, max_size=40).map("".join)))
def test_decode_hostile_raises_only_config_error(text: str) -> None:
    try:
        decode(text)
    except ConfigError:
        pass
