"""The pure choice of a victim: ranking and protection rules, no I/O.

Ranking policies (``--rank``):

``growth`` (the default): the kernel's ``oom_score`` (its badness: RSS, swap
and page tables in thousandths of RAM + swap, plus ``oom_score_adj``, the
user's override) less what its RSS holds that a kill would not free (page
cache and shared memory others map: ``kept_kib``, freeable.py), plus the
memory the process would add in the next :data:`HORIZON_S` seconds at the
rate its freeable size grew over the last few seconds (or at the faster
pace of a spell seen lately, faded: growth.Tracker.pace), in the same units::

    badness = oom_score - kept_kib * score_per_kib
              + HORIZON_S * growth_rate_kib_s * score_per_kib

so a large idle process loses to a smaller one that is filling memory or
paused a few seconds ago, a process that stopped growing half a minute
ago (or shrinks) is ranked by its size alone, and
one whose size is shared memory or page cache is ranked by what it frees.

``oom_score``: the kernel's ``oom_score`` less ``kept_kib`` likewise.
``rss``: freeable size first, the score breaking ties.

``--prefer``/``--avoid`` add or subtract :data:`PREFER_SHIFT` to the score in
every policy. Ties go to the larger freeable size, then the younger process (later
start time), then the higher PID, so the order of the candidates never
changes the choice. A process on the default avoid list (``--default-avoid``,
config.DEFAULT_AVOID: init, display servers, compositors and desktop shells,
session and display managers, logind, the D-Bus daemon, sshd, package
managers) is avoided, not
unkillable: it is passed over while another candidate frees what the
emergency needs (choose.Ranking).

Name rules (``--unkillables``, ``--ignore``, ``--prefer``, ``--avoid``,
``--default-avoid``) match the executable (the real path of
``/proc/PID/exe``, which a process cannot change, unlike ``comm`` and
``argv[0]``), in a way no other user can forge (issue 13; process.Trust):

- a pattern with a ``/`` matches the whole path (a glob in full, a regex with
  ``fullmatch``), and only if the process runs the very file at that path as
  bustd sees it (not a file bind-mounted there in a mount namespace of the
  user's own);
- a pattern without ``/`` matches the basename, and only if the executable
  is owned by root, in folders owned by root, none of them writable by group
  or others: a copy of an interpreter named ``~/bin/sshd`` matches nothing.

``--prefer`` needs neither: preferring a process only hurts its owner. An
executable that cannot be read cannot be told apart: with ``--unkillables``
or ``--ignore`` set it is spared (review L5) and the reason says so.
"""

from __future__ import annotations

from .process import Candidate, Details, Trust

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Protocol, Sequence

    class Pattern(Protocol):
        """A compiled regular expression (only ``search`` and ``pattern`` are used)."""

        @property
        def pattern(self) -> str: ...

        def search(self, string: str) -> object: ...

        def fullmatch(self, string: str) -> object: ...

__all__ = ["HORIZON_S", "POLICIES", "PREFER_SHIFT", "Rules", "Victim", "avoided",
           "badness", "exe_text", "glob_match", "name_matches", "protected", "rank",
           "sort_key", "why_not"]

# Shift applied to oom_score by --prefer/--avoid; oom_score runs 0..~1333 on
# kernels >= 5.9, so 300 moves a process well past its peers (as earlyoom).
PREFER_SHIFT = 300
# How far ahead recent growth is projected: "who will hold the most memory in
# half a minute if everyone keeps their pace". Chosen with the VM scenarios
# (docs/e2e-report.md): long enough that a steady grower outranks a larger
# idle process, short enough that size still dominates small bursts.
HORIZON_S = 30.0
POLICIES = ("growth", "oom_score", "rss")


class Rules:
    """Who may not be killed, who is preferred or avoided, and the ranking policy."""

    __slots__ = ("self_pid", "unkillables", "ignore", "prefer", "avoid", "policy",
                 "default_avoid")

    def __init__(self, self_pid: int, unkillables: Sequence[str] = (),
                 ignore: Pattern | None = None, prefer: Pattern | None = None,
                 avoid: Pattern | None = None, policy: str = "growth",
                 default_avoid: Sequence[str] = ()) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown ranking policy {policy!r}")
        self.self_pid = self_pid
        self.unkillables = tuple(unkillables)
        self.ignore = ignore
        self.prefer = prefer
        self.avoid = avoid
        self.policy = policy
        self.default_avoid = tuple(default_avoid)

    @property
    def shifts(self) -> bool:
        """Whether ranking needs every candidate's executable (--prefer).

        --avoid and the default avoid list only lower a process's rank, so
        they are applied when its turn comes (choose.Ranking), without
        reading every executable at every sample.
        """
        return self.prefer is not None


class Victim:
    """The chosen process, its details and the others to signal with it.

    ``group``: its process group (--kill-pgroup) or its cgroup's killable
    processes (--kill-cgroup). ``cgroup``: the folder of its cgroup ("" when
    not looked up or unknown); ``blocked``: why that cgroup may not be killed
    whole ("" when it may).
    """

    __slots__ = ("candidate", "details", "group", "cgroup", "blocked")

    def __init__(self, candidate: Candidate, details: Details,
                 group: list[Candidate], cgroup: str = "", blocked: str = "") -> None:
        self.candidate = candidate
        self.details = details
        self.group = group
        self.cgroup = cgroup
        self.blocked = blocked


def exe_text(exe: bytes, pattern: str) -> str:
    """Return what a name rule ``pattern`` is matched against for ``exe``.

    The full path when the pattern contains '/', else its basename; decoded
    with replacement characters.
    """
    if "/" not in pattern:
        exe = exe.rsplit(b"/", 1)[-1]
    return exe.decode("utf-8", "replace")


def glob_match(pattern: str, name: str) -> bool:
    """Return whether ``name`` matches the shell glob ``pattern`` in full.

    Supports ``*``, ``?`` and ``[...]`` classes (``[!...]`` negates); a
    malformed class matches its '[' literally, as fnmatch does.
    """
    p = n = 0
    star_p = star_n = -1
    while n < len(name):
        if p < len(pattern):
            ch = pattern[p]
            if ch == "*":
                star_p, star_n = p, n
                p += 1
                continue
            if ch == "?":
                p += 1
                n += 1
                continue
            if ch == "[":
                end, ok = _class_match(pattern, p, name[n])
                if end > 0:
                    if ok:
                        p, n = end, n + 1
                        continue
                elif name[n] == "[":
                    p += 1
                    n += 1
                    continue
            elif ch == name[n]:
                p += 1
                n += 1
                continue
        if star_p < 0:
            return False
        star_n += 1
        p, n = star_p + 1, star_n
    return all(c == "*" for c in pattern[p:])


def _class_match(pattern: str, start: int, ch: str) -> tuple[int, bool]:
    """Match ``ch`` against the class at ``pattern[start] == '['``.

    Returns (index after the class, matched); index 0 if the class is not closed.
    """
    i = start + 1
    negate = i < len(pattern) and pattern[i] == "!"
    if negate:
        i += 1
    first = i
    matched = False
    while i < len(pattern) and (pattern[i] != "]" or i == first):
        if i + 2 < len(pattern) and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            if pattern[i] <= ch <= pattern[i + 2]:
                matched = True
            i += 3
        else:
            if pattern[i] == ch:
                matched = True
            i += 1
    if i >= len(pattern):
        return 0, False
    return i + 1, matched != negate


def _rule_matches(rule: Pattern, exe: bytes) -> bool:
    """Whether regex ``rule`` matches ``exe`` by name (the whole path with a '/')."""
    text = exe_text(exe, rule.pattern)
    found = rule.fullmatch(text) if "/" in rule.pattern else rule.search(text)
    return found is not None


def _glob_matches(pattern: str, exe: bytes) -> bool:
    return glob_match(pattern, exe_text(exe, pattern))


def _trusted(pattern: str, trust: Trust | None) -> bool:
    """Whether a name match of ``pattern`` counts for an executable with ``trust``."""
    if trust is None:
        return False
    return trust.same if "/" in pattern else trust.root_only


def name_matches(exe: bytes, rules: Rules) -> list[tuple[str, str]]:
    """Return the protecting rules whose pattern matches ``exe`` by name alone.

    Each as (option, pattern): ``--unkillables``, ``--ignore``, ``--avoid``
    and ``--default-avoid``, before any check that the executable is what
    it says (process.Trust). Empty when ``exe`` is unknown.
    """
    if not exe:
        return []
    out = [("--unkillables", g) for g in rules.unkillables if _glob_matches(g, exe)]
    if rules.ignore is not None and _rule_matches(rules.ignore, exe):
        out.append(("--ignore", rules.ignore.pattern))
    if rules.avoid is not None and _rule_matches(rules.avoid, exe):
        out.append(("--avoid", rules.avoid.pattern))
    out += [("--default-avoid", g) for g in rules.default_avoid if _glob_matches(g, exe)]
    return out


def avoided(matches: list[tuple[str, str]], trust: Trust | None) -> tuple[bool, bool]:
    """Return (by ``--avoid``, by the default avoid list) for the name ``matches``
    of one executable (:func:`name_matches`) and its ``trust``."""
    return (any(o == "--avoid" and _trusted(p, trust) for o, p in matches),
            any(o == "--default-avoid" and _trusted(p, trust) for o, p in matches))


def why_not(matches: list[tuple[str, str]], trust: Trust | None) -> str:
    """Return why name ``matches`` do not count ("" if every one does): for check."""
    failed = [f"{o} {p!r}" for o, p in matches if not _trusted(p, trust)]
    if not failed:
        return ""
    reason = trust.why if trust is not None and trust.why else "its executable is unverified"
    return f"matches {', '.join(failed)} by name only: {reason}"


def badness(c: Candidate, rules: Rules, score_per_kib: float) -> float:
    """Return the rank score of ``c`` under ``rules`` (higher dies first).

    ``score_per_kib`` converts KiB into ``oom_score`` units (see
    :func:`oom_score_per_kib` in choose.py); what a kill would not free
    (``kept_kib``) is taken off in every policy, growth only counts under
    the ``growth`` policy.
    """
    score = c.oom_score - c.kept_kib * score_per_kib
    if rules.prefer is not None and c.exe and _rule_matches(rules.prefer, c.exe):
        score += PREFER_SHIFT
    if c.avoid_shift:  # set by choose.Ranking once the match was verified
        score -= PREFER_SHIFT
    if rules.policy == "growth":
        score += HORIZON_S * c.rate_kib_s * score_per_kib
    return score


def sort_key(policy: str) -> Callable[[Candidate], tuple[float, float, int, int]]:
    """Return the key that orders candidates under ``policy`` (larger dies first)."""
    if policy == "rss":
        return lambda c: (c.freeable_kib, c.badness, c.starttime, c.pid)
    return lambda c: (c.badness, c.freeable_kib, c.starttime, c.pid)


def rank(candidates: Sequence[Candidate], rules: Rules,
         score_per_kib: float = 0.0) -> list[Candidate]:
    """Return the candidates ordered best victim first (each one's ``badness`` set).

    ``--prefer``/``--avoid`` need ``Candidate.exe`` (None counts as no match).
    """
    for c in candidates:
        c.badness = badness(c, rules, score_per_kib)
    return sorted(candidates, key=sort_key(rules.policy), reverse=True)


def protected(c: Candidate, d: Details, rules: Rules, trust: Trust | None = None,
              matches: list[tuple[str, str]] | None = None) -> str | None:
    """Return why ``c`` must not be killed, or None if it may be.

    Never: bustd itself, PID 1, ``oom_score_adj`` -1000 (the kernel's own
    "never kill"), an executable matching ``--unkillables`` or ``--ignore``
    in a way no user can forge (``trust`` of ``d.exe``, read by the caller
    when ``matches``, :func:`name_matches`, names a rule), or one that
    cannot be read while such rules are set (cannot tell: review L5).
    """
    if c.pid == rules.self_pid:
        return "is bustd itself"
    if c.pid == 1:
        return "is PID 1"
    if d.oom_score_adj <= -1000:
        return "has oom_score_adj -1000"
    if not d.exe and (rules.unkillables or rules.ignore is not None):
        return ("its executable cannot be read: cannot tell whether --unkillables or "
                "--ignore match")
    if matches is None:
        matches = name_matches(d.exe, rules)
    for option, pattern in matches:
        if option in ("--unkillables", "--ignore") and _trusted(pattern, trust):
            return f"matches {option} {pattern!r}"
    return None
