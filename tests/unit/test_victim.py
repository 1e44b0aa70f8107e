"""The pure victim choice: rank over every order, protection rules, globs."""

from __future__ import annotations

import fnmatch
import itertools
import re

import pytest

from bustd.process import Candidate, Details
from bustd.victim import PREFER_SHIFT, Rules, glob_match, protected, rank

SELF = 4_999_999


def cand(pid: int, score: int = 100, rss: int = 1000, start: int = 10,
         comm: bytes = b"proc") -> Candidate:
    return Candidate(pid, score, rss, start, pid, comm)


def details(cmdline: bytes = b"/usr/bin/proc", adj: int = 0) -> Details:
    return Details(cmdline, 1000, adj, 1000)


def order(cands: list[Candidate], rules: Rules) -> list[int]:
    return [c.pid for c in rank(cands, rules)]


def assert_same_for_every_order(cands: list[Candidate], rules: Rules,
                                expected: list[int]) -> None:
    for perm in itertools.permutations(cands):
        assert order(list(perm), rules) == expected, [c.pid for c in perm]


# -- rank -------------------------------------------------------------------

def test_highest_oom_score_first_in_every_order() -> None:
    cands = [cand(10, 300), cand(11, 900), cand(12, 5), cand(13, 600), cand(14, 0),
             cand(15, 1333)]
    assert_same_for_every_order(cands, Rules(SELF), [15, 11, 13, 10, 12, 14])


def test_ties_by_rss_then_start_time_then_pid_in_every_order() -> None:
    cands = [
        cand(20, 500, rss=100, start=50),
        cand(21, 500, rss=900, start=10),   # same score, bigger RSS
        cand(22, 500, rss=900, start=70),   # same score and RSS, younger
        cand(23, 500, rss=900, start=70),   # identical but a higher PID
        cand(24, 400, rss=99999, start=99),  # lower score: RSS does not help
        cand(25, 500, rss=100, start=50),
    ]
    assert_same_for_every_order(cands, Rules(SELF), [23, 22, 21, 25, 20, 24])


def test_sort_by_rss_puts_rss_first_and_score_breaks_ties() -> None:
    cands = [
        cand(30, 900, rss=100),
        cand(31, 10, rss=5000),
        cand(32, 20, rss=5000),
        cand(33, 20, rss=5000, start=11),
        cand(34, 1000, rss=4999),
    ]
    assert_same_for_every_order(cands, Rules(SELF, sort_by_rss=True), [33, 32, 31, 34, 30])
    assert order(cands, Rules(SELF)) == [34, 30, 33, 32, 31]


def test_prefer_and_avoid_shift_by_300() -> None:
    assert PREFER_SHIFT == 300
    prefer = Rules(SELF, prefer=re.compile("^chrom"))
    # 300 points: 301 below the leader is not enough, 299 below is.
    assert order([cand(1, 600), cand(2, 299, comm=b"chromium")], prefer) == [1, 2]
    assert order([cand(1, 600), cand(2, 301, comm=b"chromium")], prefer) == [2, 1]
    # An exact tie after the shift falls to RSS.
    assert order([cand(1, 600, rss=5), cand(2, 300, rss=6, comm=b"chromium")], prefer) == [2, 1]
    avoid = Rules(SELF, avoid=re.compile("sql"))
    assert order([cand(1, 1000, comm=b"postgresql"), cand(2, 701)], avoid) == [2, 1]
    assert order([cand(1, 1000, comm=b"postgresql"), cand(2, 699)], avoid) == [1, 2]
    both = Rules(SELF, prefer=re.compile("a"), avoid=re.compile("b"))
    assert order([cand(1, 500, comm=b"ab"), cand(2, 499)], both) == [1, 2]  # +300 -300


def test_prefer_in_every_order() -> None:
    cands = [cand(40, 900, comm=b"java"), cand(41, 700, comm=b"node"),
             cand(42, 300, comm=b"node-gyp"), cand(43, 950, comm=b"sshd"),
             cand(44, 100, comm=b"\xff\xfenode")]
    rules = Rules(SELF, prefer=re.compile("node"), avoid=re.compile("^(sshd|java)$"))
    # node 1000, node-gyp 600, sshd 650, java 600 (RSS tie -> start tie -> pid), \xffnode 400
    assert_same_for_every_order(cands, rules, [41, 43, 42, 40, 44])


def test_rank_returns_a_new_list() -> None:
    cands = [cand(1, 1), cand(2, 2)]
    assert order(cands, Rules(SELF)) == [2, 1]
    assert [c.pid for c in cands] == [1, 2]
    assert rank([], Rules(SELF)) == []


# -- protected --------------------------------------------------------------

def test_self_and_pid1_are_protected() -> None:
    rules = Rules(SELF)
    assert protected(cand(SELF), details(), rules) == "is bustd itself"
    assert protected(cand(1), details(), rules) == "is PID 1"
    assert protected(cand(2), details(), rules) is None


@pytest.mark.parametrize(("adj", "why"), [
    (-1000, "has oom_score_adj -1000"), (-999, None), (0, None), (1000, None)])
def test_oom_score_adj(adj: int, why: str | None) -> None:
    assert protected(cand(7), details(adj=adj), Rules(SELF)) == why


def test_unkillables_match_comm() -> None:
    rules = Rules(SELF, unkillables=["sshd", "X*", "systemd-?ournald"])
    for comm in (b"sshd", b"Xorg", b"Xwayland", b"systemd-journald"):
        assert protected(cand(7, comm=comm), details(b""), rules) is not None, comm
    for comm in (b"sshd2", b"xorg", b"my-sshd", b"systemd-journal"):
        assert protected(cand(7, comm=comm), details(b""), rules) is None, comm
    assert protected(cand(7, comm=b"Xorg"), details(b""), rules) == "matches --unkillables 'X*'"


def test_unkillables_match_untruncated_argv0_basename() -> None:
    # The kernel cuts comm at 15 bytes; the program name in argv[0] is whole.
    comm = b"gnome-shell-cal"
    exe = b"/usr/libexec/gnome-shell-calendar-server\0--flag\0"
    rules = Rules(SELF, unkillables=["gnome-shell-calendar-server"])
    assert protected(cand(7, comm=comm), details(exe), rules) is not None
    assert protected(cand(7, comm=comm), details(b"/usr/bin/other\0"), rules) is None
    # Only the basename counts, not the folder, and not later arguments.
    rules = Rules(SELF, unkillables=["libexec"])
    assert protected(cand(7, comm=comm), details(exe), rules) is None
    rules = Rules(SELF, unkillables=["--flag"])
    assert protected(cand(7, comm=comm), details(exe), rules) is None
    rules = Rules(SELF, unkillables=["*-server"])
    assert protected(cand(7, comm=comm), details(exe), rules) is not None


def test_empty_argv0_does_not_match_star() -> None:
    # A kernel-thread-like empty cmdline must not make "*x" style globs match ''.
    rules = Rules(SELF, unkillables=["*"])
    assert protected(cand(7, comm=b"anything"), details(b""), rules) is not None
    rules = Rules(SELF, unkillables=["x*"])
    assert protected(cand(7, comm=b"abc"), details(b""), rules) is None


def test_ignore_regex_matches_comm() -> None:
    rules = Rules(SELF, ignore=re.compile(r"^(Xorg|sway)$"))
    assert protected(cand(7, comm=b"sway"), details(), rules) == "matches --ignore"
    assert protected(cand(7, comm=b"swayidle"), details(), rules) is None
    rules = Rules(SELF, ignore=re.compile("idle"))
    assert protected(cand(7, comm=b"swayidle"), details(), rules) == "matches --ignore"


def test_invalid_utf8_names_are_compared_decoded() -> None:
    rules = Rules(SELF, unkillables=["caf*"], ignore=re.compile("\ufffd"))
    assert protected(cand(7, comm=b"caf\xc3"), details(b""), rules) is not None
    rules = Rules(SELF, ignore=re.compile("\ufffd"))
    assert protected(cand(7, comm=b"ab\xff"), details(b""), rules) == "matches --ignore"


def test_protection_order() -> None:
    # Self wins over every other reason; -1000 over name rules.
    rules = Rules(SELF, unkillables=["*"], ignore=re.compile(""))
    assert protected(cand(SELF), details(adj=-1000), rules) == "is bustd itself"
    assert protected(cand(5), details(adj=-1000), rules) == "has oom_score_adj -1000"


# -- glob_match ---------------------------------------------------------------

CASES = [
    ("", "", True), ("", "a", False), ("a", "", False), ("*", "", True), ("*", "abc", True),
    ("?", "", False), ("?", "a", True), ("??", "a", False), ("a*c", "abbbc", True),
    ("a*c", "abbbcd", False), ("*a*b*", "xxaxxbxx", True), ("*a*b*", "xxbxxaxx", False),
    ("[abc]", "b", True), ("[abc]", "d", False), ("[a-c]", "b", True), ("[a-c]", "d", False),
    ("[a-c]", "-", False), ("[!a]", "a", False), ("[!a]", "b", True), ("[!a]", "", False),
    ("[!a-c]x", "dx", True), ("[!a-c]x", "bx", False), ("[", "[", True), ("[", "a", False),
    ("[a", "[a", True), ("a[", "a[", True), ("[]]", "]", True), ("[!]]", "]", False),
    ("[!]]", "a", True), ("[]a]", "a", True), ("[a-]", "-", True), ("[-a]", "-", True),
    ("[z-a]", "m", False), ("[!]", "[!]", True), ("[[]", "[", True), ("[*]", "*", True),
    ("[*]", "a", False), ("[?]", "?", True), ("\\*", "\\x", True), ("*.[ch]", "main.c", True),
    ("*.[ch]", "main.o", False), ("Web Content", "Web Content", True),
    ("Web*", "Web Content", True), ("[a-c]*[!x]", "bhello", True),
    ("[a-c]*[!x]", "bhellox", False), ("kworker/*", "kworker/0:1H", True),
    ("caf?", "café", True), ("*é", "café", True), ("[à-ü]", "é", True),
    ("a**b", "ab", True), ("*?*", "", False), ("*[", "abc[", True), ("][", "][", True),
]


@pytest.mark.parametrize(("pattern", "name", "expected"), CASES)
def test_glob_cases(pattern: str, name: str, expected: bool) -> None:
    assert fnmatch.fnmatchcase(name, pattern) is expected  # the table itself is right
    assert glob_match(pattern, name) is expected


def test_glob_agrees_with_fnmatch_on_every_small_pattern() -> None:
    names = ["", *("".join(n) for k in (1, 2, 3) for n in itertools.product("ab[]-!", repeat=k))]
    checked = 0
    for k in range(5):
        for chars in itertools.product("ab[]!-*?", repeat=k):
            pattern = "".join(chars)
            for name in names:
                assert glob_match(pattern, name) == fnmatch.fnmatchcase(name, pattern), (
                    pattern, name)
                checked += 1
    assert checked == sum(8**k for k in range(5)) * len(names)
