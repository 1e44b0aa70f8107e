"""The cgroup v2 VM test (issue 9): its cases and the verdict, pure data and functions.

One guest (tests/e2e/cgroup_guest.py) runs the cases in turn on a real
cgroup2 hierarchy, each with a fresh tree under ``<mount>/bustd-e2e``::

    work/          memory.max = LIMIT_MIB (the subtree bustd watches: --cgroup)
      a/           the hog (leaks HOG_RATE MiB/s without end) and its partner
      b/           a bystander
    outside/       a big idle process: the largest of the machine, never to be
                   chosen by a bustd watching work/
    (bustd)        in the root cgroup, or in work/a (case "holds-bustd")

Without bustd the kernel's memory-cgroup OOM killer ends the hog when work/
reaches its limit; with it, bustd must act first. The host judges each case
from the facts the guest recorded (:func:`failures`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["CASES", "Case", "HOG_RATE", "LIMIT_MIB", "PROCS", "check_failures", "failures",
           "kill_lines", "summary"]

LIMIT_MIB = 160  # memory.max of work/
HOG_RATE = 16.0  # MiB/s: the limit is reached in a few seconds, between two checks never
CASE_TIMEOUT_S = 90.0  # after the hog starts (TCG, a busy host)


@dataclass(frozen=True)
class Proc:
    """One process of a case: its name, cgroup (relative to the tree) and program."""

    name: str
    cgroup: str
    kind: str  # workloads.py command: "hold" or "leak"
    mib: int = 0
    rate: float = 0.0


PROCS = (
    Proc("outside", "outside", "hold", mib=200),
    Proc("bystander", "work/b", "hold", mib=24),
    Proc("partner", "work/a", "hold", mib=16),
    Proc("hog", "work/a", "leak", rate=HOG_RATE),
)


@dataclass(frozen=True)
class Case:
    """One run of bustd on the tree.

    ``args``: bustd's options after ``--cgroup <work>``; ``daemon_cgroup``:
    where bustd is started ("" the root cgroup); ``dies``: the processes that
    must die, and ``by_sigkill`` those that must die of SIGKILL (cgroup.kill);
    ``line``: what the kill line must say (``{work}``, ``{daemon}`` filled in);
    ``check``: ``bustd check --json --cgroup <work>`` runs first, before the
    hog, and must report the cgroup, its limit and only its processes.
    """

    name: str
    args: tuple[str, ...]
    daemon_cgroup: str
    dies: tuple[str, ...]
    by_sigkill: tuple[str, ...]
    line: str
    check: bool = False


CASES = (
    Case("cgroup", (), "", ("hog",), (),
         " in cgroup {work}/a signal=SIG", check=True),
    Case("kill-cgroup", ("--kill-cgroup",), "", ("hog", "partner"), ("hog", "partner"),
         " in cgroup {work}/a killed whole by cgroup.kill signal=SIGKILL "),
    Case("holds-bustd", ("--kill-cgroup",), "work/a", ("hog", "partner"), (),
         " in cgroup {work}/a, not killed whole (it holds bustd itself (pid {daemon})): its "
         "killable processes signalled one by one"),
)

# bustd's kill line (not a dry run): "kill: pid=123 name=... in cgroup ..."
_KILL = re.compile(r"^(?:warning: )?kill: pid=(\d+) .*$", re.M)


def kill_lines(log: str) -> list[tuple[int, str]]:
    """Return (victim PID, line) of each kill line in bustd's log."""
    return [(int(m.group(1)), m.group(0)) for m in _KILL.finditer(log)]


def failures(case: Case, facts: dict[str, Any] | None) -> list[str]:
    """Return why one case failed (empty: it passed), from the guest's facts.

    ``facts`` holds: ``errors``; ``work`` (the watched folder); ``daemon``
    (pid, ready, alive_at_end, log); ``procs`` (name -> pid, alive_at_end,
    signal); ``oom_kill`` (memory.events of work/: the kernel's OOM kills
    there); ``kernel_oom_kills`` (dmesg); ``populated`` (cgroup.events of
    each leaf at the end).
    """
    if facts is None:
        return ["no facts recorded"]
    out: list[str] = [f"guest error: {e.strip().splitlines()[-1]}" for e in facts.get("errors", [])
                      if e.strip()]
    procs: dict[str, dict[str, Any]] = facts.get("procs", {})
    daemon: dict[str, Any] = facts.get("daemon", {})
    log: str = daemon.get("log", "")
    work: str = facts.get("work", "")
    if set(procs) != {p.name for p in PROCS}:
        out.append(f"processes recorded: {sorted(procs)}")
        return out
    if not daemon.get("ready"):
        out.append("bustd never logged its start line")
    if not daemon.get("alive_at_end"):
        out.append("bustd did not survive")
    start = next((line for line in log.splitlines() if " watching " in line), "")
    if f"cgroup {work} (memory.max {LIMIT_MIB}.0 MiB)" not in start:
        out.append(f"start line does not name the cgroup and its limit: {start!r}")
    if f"kernel trigger 1 s window on {work}/memory.pressure" not in start:
        out.append(f"no PSI trigger on the cgroup's memory.pressure: {start!r}")
    if facts.get("oom_kill") != 0:
        out.append(f"the kernel's OOM killer acted in {work}: oom_kill {facts.get('oom_kill')}")
    if facts.get("kernel_oom_kills"):
        out.append(f"kernel OOM kills in dmesg: {facts['kernel_oom_kills']}")
    for p in PROCS:
        fact = procs[p.name]
        if p.name in case.dies:
            if fact.get("alive_at_end"):
                out.append(f"{p.name} survived")
            elif fact.get("signal") not in (9, 15):
                out.append(f"{p.name} exited without SIGTERM/SIGKILL: {fact.get('exit_code')}")
            elif p.name in case.by_sigkill and fact.get("signal") != 9:
                out.append(f"{p.name} died of signal {fact.get('signal')}, not SIGKILL "
                           "(cgroup.kill)")
        elif not fact.get("alive_at_end"):
            out.append(f"{p.name} died ({fact.get('exit_code')}) but must survive")
    kills = kill_lines(log)
    hog = procs["hog"].get("pid")
    if [pid for pid, _ in kills] != [hog]:
        out.append(f"bustd's kill lines name {[pid for pid, _ in kills]}, not the hog ({hog})")
    else:
        want = case.line.format(work=work, daemon=daemon.get("pid"))
        if want not in kills[0][1]:
            out.append(f"kill line lacks {want!r}: {kills[0][1]!r}")
        if f"reason: cgroup {work} available " not in kills[0][1]:
            out.append("kill line's reason is not the cgroup's memory")
        # Runners-up are candidates too: never one from outside the subtree.
        if f"pid={procs['outside'].get('pid')} " in kills[0][1]:
            out.append("the kill line ranks the process outside the watched cgroup")
    if case.check:
        out += check_failures(facts.get("check"), work, procs)
    if "hog" in case.by_sigkill and facts.get("populated", {}).get("work/a") != 0:
        out.append(f"work/a still populated after cgroup.kill: {facts.get('populated')}")
    return out


def check_failures(check: dict[str, Any] | None, work: str,
                   procs: dict[str, dict[str, Any]]) -> list[str]:
    """Return why ``bustd check --cgroup <work>`` (run before the hog) was wrong.

    ``check`` holds its exit code (``rc``) and its JSON report (``report``).
    """
    if not check or check.get("rc") != 0 or not isinstance(check.get("report"), dict):
        return [f"bustd check --cgroup failed: {check}"]
    r = check["report"]
    out = []
    cg = r.get("cgroup") or {}
    if cg.get("path") != work or cg.get("limit_kib") != LIMIT_MIB * 1024:
        out.append(f"bustd check reports cgroup {cg}, not {work} with its {LIMIT_MIB} MiB")
    if r.get("memory", {}).get("total_kib") != LIMIT_MIB * 1024:
        out.append(f"bustd check's memory is not the cgroup's: {r.get('memory')}")
    want = {procs[n].get("pid") for n in ("bystander", "partner")}
    got = {c.get("pid") for c in r.get("candidates", [])}
    if got != want:
        out.append(f"bustd check's candidates are {sorted(map(str, got))}, not the cgroup's "
                   f"processes {sorted(map(str, want))}")
    return out


def summary(facts: dict[str, Any] | None) -> str:
    """Return a short description of a case's outcome for the run line."""
    if not facts:
        return "no facts"
    procs = facts.get("procs", {})
    dead = sorted(n for n, f in procs.items() if not f.get("alive_at_end"))
    kill_at = facts.get("hog_dead_after_s")
    when = f" {kill_at:.1f} s after the hog started" if isinstance(kill_at, float) else ""
    return f"died: {', '.join(dead) or 'none'}{when}"
