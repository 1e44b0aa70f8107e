"""The pure choice of a victim: ranking and protection rules, no I/O.

Ranking: the highest ``oom_score`` wins (shifted by ``--prefer``/``--avoid``),
ties go to the larger RSS, then the younger process (later start time), then
the higher PID, so the order of the candidates never changes the choice.
With ``sort_by_rss`` the RSS comes first and the score breaks ties.
"""

from __future__ import annotations

from .process import Candidate, Details

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol, Sequence

    class Pattern(Protocol):
        """A compiled regular expression (only ``search`` is used)."""

        def search(self, string: str) -> object: ...

__all__ = ["PREFER_SHIFT", "Rules", "glob_match", "protected", "rank"]

# Shift applied to oom_score by --prefer/--avoid; oom_score runs 0..~1333 on
# kernels >= 5.9, so 300 moves a process well past its peers (as earlyoom).
PREFER_SHIFT = 300


class Rules:
    """Who may not be killed, and who is preferred or avoided."""

    __slots__ = ("self_pid", "unkillables", "ignore", "prefer", "avoid", "sort_by_rss")

    def __init__(self, self_pid: int, unkillables: Sequence[str] = (),
                 ignore: Pattern | None = None, prefer: Pattern | None = None,
                 avoid: Pattern | None = None, sort_by_rss: bool = False) -> None:
        self.self_pid = self_pid
        self.unkillables = tuple(unkillables)
        self.ignore = ignore
        self.prefer = prefer
        self.avoid = avoid
        self.sort_by_rss = sort_by_rss


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


def _shifted(score: int, name: str, rules: Rules) -> int:
    if rules.prefer is not None and rules.prefer.search(name):
        score += PREFER_SHIFT
    if rules.avoid is not None and rules.avoid.search(name):
        score -= PREFER_SHIFT
    return score


def rank(candidates: Sequence[Candidate], rules: Rules) -> list[Candidate]:
    """Return the candidates ordered best victim first.

    ``--prefer``/``--avoid`` match the name (``comm``, decoded with
    replacement characters).
    """
    if rules.prefer is None and rules.avoid is None:
        def score(c: Candidate) -> int:
            return c.oom_score
    else:
        def score(c: Candidate) -> int:
            return _shifted(c.oom_score, c.comm.decode("utf-8", "replace"), rules)
    if rules.sort_by_rss:
        def key(c: Candidate) -> tuple[int, int, int, int]:
            return (c.rss_kib, score(c), c.starttime, c.pid)
    else:
        def key(c: Candidate) -> tuple[int, int, int, int]:
            return (score(c), c.rss_kib, c.starttime, c.pid)
    return sorted(candidates, key=key, reverse=True)


def protected(c: Candidate, d: Details, rules: Rules) -> str | None:
    """Return why ``c`` must not be killed, or None if it may be.

    Never: bustd itself, PID 1, ``oom_score_adj`` -1000 (the kernel's own
    "never kill"), a name matching ``--unkillables`` (against comm and the
    untruncated argv[0] basename) or ``--ignore`` (against comm).
    """
    if c.pid == rules.self_pid:
        return "is bustd itself"
    if c.pid == 1:
        return "is PID 1"
    if d.oom_score_adj <= -1000:
        return "has oom_score_adj -1000"
    comm = c.comm.decode("utf-8", "replace")
    if rules.unkillables:
        exe = d.exe_name().decode("utf-8", "replace")
        for pattern in rules.unkillables:
            if glob_match(pattern, comm) or (exe and glob_match(pattern, exe)):
                return f"matches --unkillables {pattern!r}"
    if rules.ignore is not None and rules.ignore.search(comm):
        return "matches --ignore"
    return None
