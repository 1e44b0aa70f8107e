"""The pure victim choice: rank over every order, protection rules, globs."""

from __future__ import annotations

import fnmatch
import itertools
import re

import pytest

from bustd.process import Candidate, Details, Trust
from bustd.victim import (
    HORIZON_S,
    POLICIES,
    PREFER_SHIFT,
    Rules,
    avoided,
    badness,
    glob_match,
    name_matches,
    protected,
    rank,
    why_not,
)

SELF = 4_999_999
MIB = 1024
# oom_score points per KiB on a machine with 1 GiB RAM and no swap (Linux >= 5.9).
PER_KIB = 1000.0 / (1024 * MIB) * 2 / 3


def cand(pid: int, score: int = 100, rss: int = 1000, start: int = 10,
         comm: bytes = b"proc", exe: bytes | None = None, grew: int = 0,
         over: float = 0.0) -> Candidate:
    c = Candidate(pid, score, rss, start, pid, comm)
    c.exe = b"/usr/bin/" + comm if exe is None else exe
    c.growth_kib, c.growth_s = grew, over
    return c


def details(exe: bytes = b"/usr/bin/proc", adj: int = 0) -> Details:
    return Details(1000, adj, exe)


# What process.read_trust finds (issue 13): a root-owned executable in root-owned
# folders; the user's own copy; a file that is not the one at its path.
ROOT = Trust(True, True, "")
USERS = Trust(True, False, "its executable /home/u/bin/sshd is owned by uid 1000")
ELSEWHERE = Trust(False, False, "it does not run the file at /usr/sbin/sshd (another "
                                "mount namespace, or the file was replaced)")


def guarded(c: Candidate, d: Details, rules: Rules, trust: Trust | None = ROOT) -> str | None:
    """protected() with the trust the caller (choose.Ranking) would have read."""
    return protected(c, d, rules, trust)


def avoiding(c: Candidate) -> Candidate:
    """``c`` once Ranking verified that --avoid applies to it."""
    c.avoid_shift = True
    return c


def order(cands: list[Candidate], rules: Rules, per_kib: float = PER_KIB) -> list[int]:
    return [c.pid for c in rank(cands, rules, per_kib)]


def assert_same_for_every_order(cands: list[Candidate], rules: Rules,
                                expected: list[int]) -> None:
    for perm in itertools.permutations(cands):
        assert order(list(perm), rules) == expected, [c.pid for c in perm]


# -- rank -------------------------------------------------------------------

def test_policies() -> None:
    assert POLICIES == ("growth", "oom_score", "rss")
    assert Rules(SELF).policy == "growth"
    with pytest.raises(ValueError, match="unknown ranking policy 'size'"):
        Rules(SELF, policy="size")


def test_the_rankings_offered_are_the_rankings_implemented() -> None:
    # config.CHOICES is the one list (the --rank choices, the config check).
    from bustd.config import CHOICES
    assert CHOICES["rank"] == POLICIES


@pytest.mark.parametrize("policy", ["growth", "oom_score"])
def test_highest_oom_score_first_in_every_order(policy: str) -> None:
    # Without growth, the growth policy is the oom_score policy.
    cands = [cand(10, 300), cand(11, 900), cand(12, 5), cand(13, 600), cand(14, 0),
             cand(15, 1333)]
    assert_same_for_every_order(cands, Rules(SELF, policy=policy), [15, 11, 13, 10, 12, 14])


def test_ties_by_size_then_start_time_then_pid_in_every_order() -> None:
    cands = [
        cand(20, 500, rss=100, start=50),
        cand(21, 500, rss=900, start=10),   # same score, bigger RSS
        cand(22, 500, rss=900, start=70),   # same score and RSS, younger
        cand(23, 500, rss=900, start=70),   # identical but a higher PID
        cand(24, 400, rss=99999, start=99),  # lower score: RSS does not help
        cand(25, 500, rss=100, start=50),
    ]
    assert_same_for_every_order(cands, Rules(SELF), [23, 22, 21, 25, 20, 24])


def test_rss_policy_puts_size_first_and_score_breaks_ties() -> None:
    cands = [
        cand(30, 900, rss=100),
        cand(31, 10, rss=5000),
        cand(32, 20, rss=5000),
        cand(33, 20, rss=5000, start=11),
        cand(34, 1000, rss=4999),
    ]
    assert_same_for_every_order(cands, Rules(SELF, policy="rss"), [33, 32, 31, 34, 30])
    assert order(cands, Rules(SELF, policy="oom_score")) == [34, 30, 33, 32, 31]


def test_rss_policy_counts_swap_where_sampled() -> None:
    idle = cand(1, 500, rss=100 * MIB)
    idle.freeable_kib = 400 * MIB  # 300 MiB of it in swap
    busy = cand(2, 500, rss=300 * MIB)
    assert order([busy, idle], Rules(SELF, policy="rss")) == [1, 2]


def test_badness_formula() -> None:
    c = cand(1, 400, grew=40 * MIB, over=10.0)  # 4 MiB/s
    assert c.rate_kib_s == 4 * MIB
    expected = 400 + HORIZON_S * 4 * MIB * PER_KIB
    assert badness(c, Rules(SELF), PER_KIB) == pytest.approx(expected)
    assert badness(c, Rules(SELF, policy="oom_score"), PER_KIB) == 400
    assert badness(c, Rules(SELF, policy="rss"), PER_KIB) == 400
    # A shrinking or unknown history counts as no growth.
    assert badness(cand(2, 400), Rules(SELF), PER_KIB) == 400
    assert cand(3, grew=5, over=0.0).rate_kib_s == 0.0


# The first case, measured in a 1 GiB VM: a large idle process
# (0.42 x RAM, never growing) beside a smaller one growing at 40 MB/s.
def test_growing_process_outranks_larger_idle_one() -> None:
    idle = cand(100, 666 + 280, rss=430 * MIB, comm=b"idle")  # oom_score 5.9+ form
    grower = cand(101, 666 + 200, rss=300 * MIB, comm=b"grower", grew=300 * MIB, over=8.0)
    bystander = cand(102, 666 + 30, rss=48 * MIB)
    cands = [idle, grower, bystander]
    assert_same_for_every_order(cands, Rules(SELF), [101, 100, 102])
    assert order(cands, Rules(SELF, policy="oom_score")) == [100, 101, 102]
    assert order(cands, Rules(SELF, policy="rss")) == [100, 101, 102]


# The second case: twelve workers at 8 MB/s each beside an idle 120 MiB
# process, the largest when the emergency begins.
def test_many_small_growers_outrank_the_largest_idle_process() -> None:
    idle = cand(200, 666 + 78, rss=120 * MIB, comm=b"idle")
    workers = [cand(201 + i, 666 + 36, rss=55 * MIB, grew=55 * MIB, over=7.0, start=20 + i)
               for i in range(12)]
    ranked = order([idle, *workers], Rules(SELF))
    assert ranked[-1] == 200
    assert ranked[0] == 212  # equal growth and size: the youngest worker first
    assert order([idle, *workers], Rules(SELF, policy="oom_score"))[0] == 200


def test_size_still_dominates_a_small_burst() -> None:
    # A 4 GiB idle process against a 100 MiB burst over 10 s on a 16 GiB machine.
    per_kib = 1000.0 / (16 * 1024 * MIB) * 2 / 3
    db = cand(1, 666 + 166, rss=4096 * MIB)
    burst = cand(2, 666 + 4, rss=100 * MIB, grew=100 * MIB, over=10.0)
    assert order([burst, db], Rules(SELF), per_kib) == [1, 2]


def test_fast_grower_beats_slow_grower_of_equal_size() -> None:
    slow = cand(1, 700, rss=200 * MIB, grew=20 * MIB, over=10.0)
    fast = cand(2, 700, rss=200 * MIB, grew=100 * MIB, over=10.0)
    assert_same_for_every_order([slow, fast], Rules(SELF), [2, 1])


def test_oom_score_adj_stays_the_users_override() -> None:
    # oom_score includes oom_score_adj: a grower the user shielded with -500
    # loses to an idle process the user offered with +500.
    shielded = cand(1, 200, rss=300 * MIB, grew=300 * MIB, over=8.0)
    offered = cand(2, 1300, rss=100 * MIB)
    assert order([shielded, offered], Rules(SELF)) == [2, 1]


def test_prefer_and_avoid_shift_by_300() -> None:
    assert PREFER_SHIFT == 300
    prefer = Rules(SELF, prefer=re.compile("^chrom"))
    # 300 points: 301 below the leader is not enough, 299 below is.
    assert order([cand(1, 600), cand(2, 299, comm=b"chromium")], prefer) == [1, 2]
    assert order([cand(1, 600), cand(2, 301, comm=b"chromium")], prefer) == [2, 1]
    # An exact tie after the shift falls to size.
    assert order([cand(1, 600, rss=5), cand(2, 300, rss=6, comm=b"chromium")], prefer) == [2, 1]
    avoid = Rules(SELF, avoid=re.compile("sql"))
    assert order([avoiding(cand(1, 1000, comm=b"postgresql")), cand(2, 701)], avoid) == [2, 1]
    assert order([avoiding(cand(1, 1000, comm=b"postgresql")), cand(2, 699)], avoid) == [1, 2]
    # --avoid counts only once verified (its name alone ranks nothing lower).
    assert order([cand(1, 1000, comm=b"postgresql"), cand(2, 701)], avoid) == [1, 2]
    both = Rules(SELF, prefer=re.compile("a"), avoid=re.compile("b"))
    assert order([avoiding(cand(1, 500, comm=b"ab")), cand(2, 499)], both) == [1, 2]


def test_prefer_in_every_order() -> None:
    cands = [avoiding(cand(40, 900, comm=b"java")), cand(41, 700, comm=b"node"),
             cand(42, 300, comm=b"node-gyp"), avoiding(cand(43, 950, comm=b"sshd")),
             cand(44, 100, comm=b"\xff\xfenode")]
    rules = Rules(SELF, prefer=re.compile("node"), avoid=re.compile("^(sshd|java)$"))
    # node 1000, node-gyp 600, sshd 650, java 600 (RSS tie -> start tie -> pid), \xffnode 400
    assert_same_for_every_order(cands, rules, [41, 43, 42, 40, 44])


def test_avoid_matches_the_executable_not_the_forgeable_name() -> None:
    rules = Rules(SELF, avoid=re.compile("^sshd$"))
    # A hog that calls itself sshd (comm and argv[0]) does not match at all.
    assert name_matches(b"/usr/bin/python3.11", rules) == []
    real = name_matches(b"/usr/sbin/sshd", rules)
    assert real == [("--avoid", "^sshd$")]
    # The name matches; it counts only for a root-owned executable in root-owned
    # folders (issue 13): a user's own copy named sshd is not avoided.
    assert avoided(real, ROOT) == (True, False)
    assert avoided(real, USERS) == (False, False)
    assert avoided(real, None) == (False, False)
    assert why_not(real, USERS) == ("matches --avoid '^sshd$' by name only: its executable "
                                    "/home/u/bin/sshd is owned by uid 1000")
    assert why_not(real, ROOT) == ""
    # With a '/', the full path is matched whole (fullmatch), by prefer too.
    rules = Rules(SELF, prefer=re.compile("/opt/.*"))
    assert order([cand(3, 500), cand(4, 300, exe=b"/opt/app/bin/app")], rules) == [4, 3]
    assert order([cand(3, 500), cand(4, 300, exe=b"/x/opt/app")], rules) == [3, 4]
    # An unknown executable matches nothing.
    assert name_matches(b"", Rules(SELF, avoid=re.compile(""))) == []


def test_path_rules_match_whole_and_need_the_very_file() -> None:
    rules = Rules(SELF, avoid=re.compile("/usr/sbin/sshd"), default_avoid=["/usr/bin/X*"])
    # An unanchored path regex still matches only the whole path: a user's
    # /home/u/usr/sbin/sshd is not /usr/sbin/sshd.
    assert name_matches(b"/home/u/usr/sbin/sshd", rules) == []
    matches = name_matches(b"/usr/sbin/sshd", rules)
    assert matches == [("--avoid", "/usr/sbin/sshd")]
    # A path needs the very file (not one bind-mounted there in the user's own
    # mount namespace), not root's ownership.
    assert avoided(matches, USERS) == (True, False)
    assert avoided(matches, ELSEWHERE) == (False, False)
    xorg = name_matches(b"/usr/bin/Xorg", rules)
    assert xorg == [("--default-avoid", "/usr/bin/X*")]
    assert avoided(xorg, ROOT) == (False, True)
    assert "another mount namespace" in why_not(xorg, ELSEWHERE)


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


def test_unkillables_match_the_executable() -> None:
    rules = Rules(SELF, unkillables=["sshd", "X*", "systemd-?ournald"])
    for exe in (b"/usr/sbin/sshd", b"/usr/lib/xorg/Xorg", b"/usr/bin/Xwayland",
                b"/lib/systemd/systemd-journald"):
        assert guarded(cand(7), details(exe), rules) is not None, exe
        # The same name in a user's copy, or no verification: not protected.
        assert guarded(cand(7), details(exe), rules, USERS) is None, exe
        assert guarded(cand(7), details(exe), rules, None) is None, exe
    for exe in (b"/usr/bin/sshd2", b"/usr/bin/xorg", b"/bin/my-sshd",
                b"/lib/systemd/systemd-journal"):
        assert guarded(cand(7), details(exe), rules) is None, exe
    assert guarded(cand(7), details(b"/usr/lib/xorg/Xorg"), rules) == \
        "matches --unkillables 'X*'"


def test_unkillables_cannot_be_forged_by_name() -> None:
    # `exec -a /usr/sbin/sshd sleep 300`: comm and argv[0] say sshd, exe says sleep.
    rules = Rules(SELF, unkillables=["sshd"])
    assert guarded(cand(7, comm=b"sshd"), details(b"/usr/bin/sleep"), rules) is None
    assert guarded(cand(7, comm=b"sleep"), details(b"/usr/sbin/sshd"), rules) is not None
    # A copy of an interpreter at ~/bin/sshd: its name matches, its owner does not.
    assert guarded(cand(7), details(b"/home/u/bin/sshd"), rules, USERS) is None


def test_unkillables_full_path_with_a_slash() -> None:
    # The kernel cuts comm at 15 bytes; the executable's name is whole.
    exe = b"/usr/libexec/gnome-shell-calendar-server"
    rules = Rules(SELF, unkillables=["gnome-shell-calendar-server"])
    assert guarded(cand(7, comm=b"gnome-shell-cal"), details(exe), rules) is not None
    rules = Rules(SELF, unkillables=["libexec"])  # the folder is not the name
    assert guarded(cand(7), details(exe), rules) is None
    rules = Rules(SELF, unkillables=["/usr/libexec/*"])  # but a path pattern sees it
    assert guarded(cand(7), details(exe), rules) is not None
    assert guarded(cand(7), details(exe), rules, USERS) is not None  # the path is enough
    assert guarded(cand(7), details(exe), rules, ELSEWHERE) is None  # not that file
    assert guarded(cand(7), details(b"/opt/libexec/x"), rules) is None


def test_unknown_executable_cannot_be_told_apart() -> None:
    # Review L5: an executable that cannot be read might be a protected one,
    # so with --unkillables or --ignore set it is spared, and says why.
    for rules in (Rules(SELF, unkillables=["x*"]), Rules(SELF, ignore=re.compile("x"))):
        assert guarded(cand(7, comm=b"xyz"), details(b""), rules) == (
            "its executable cannot be read: cannot tell whether --unkillables or "
            "--ignore match")
    # Without such rules it is an ordinary candidate (--avoid cannot apply).
    assert guarded(cand(7), details(b""), Rules(SELF, avoid=re.compile("x"))) is None


def test_ignore_regex_matches_the_executable() -> None:
    rules = Rules(SELF, ignore=re.compile(r"^(Xorg|sway)$"))
    assert guarded(cand(7), details(b"/usr/bin/sway"), rules) == \
        "matches --ignore '^(Xorg|sway)$'"
    assert guarded(cand(7), details(b"/usr/bin/swayidle"), rules) is None
    assert guarded(cand(7, comm=b"sway"), details(b"/usr/bin/sleep"), rules) is None
    rules = Rules(SELF, ignore=re.compile("idle"))
    assert guarded(cand(7), details(b"/usr/bin/swayidle"), rules) == "matches --ignore 'idle'"


def test_invalid_utf8_names_are_compared_decoded() -> None:
    rules = Rules(SELF, unkillables=["caf*"])
    assert guarded(cand(7), details(b"/bin/caf\xc3"), rules) is not None
    rules = Rules(SELF, ignore=re.compile("\ufffd"))
    assert guarded(cand(7), details(b"/bin/ab\xff"), rules) == "matches --ignore '\ufffd'"


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
