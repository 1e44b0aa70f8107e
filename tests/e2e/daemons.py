"""How each OOM daemon is started in the guest and how its kills are read.

The one table to edit when a daemon's command line or log format changes.
Commands run in the guest with the repository root as working directory and
the guest's own PATH (so `python3` is the guest's /usr/bin/python3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

__all__ = ["Daemon", "DAEMONS", "killed_pids", "major_faults", "reactions"]

# bustd's kill line: its own major page faults from the wakeup to the signal
# (issue 10's warm kill path: the target is 0).
_FAULTS = r"^(?!.*dry run).*\breaction=\d+ ms after [^,;]*wakeup, (\d+) major faults"


@dataclass(frozen=True)
class Daemon:
    """One daemon.

    argv: the command ([] for "none").
    kill_pattern: a regex whose group 1 is the pid of a process the daemon
      signalled, applied to the whole log (MULTILINE).
    settle_s: seconds to wait after starting it before the hogs start.
    needs: a path (relative to the repository for bustd) that must exist on the
      host before a VM is booted; the guest sees the host's filesystem.
    reaction_pattern: a regex whose group 1 is the daemon's own reaction time
      in ms and group 2 what woke it, one match per kill ("" if the daemon
      does not log one).
    """

    name: str
    argv: tuple[str, ...]
    kill_pattern: str
    settle_s: float
    needs: str
    reaction_pattern: str = ""
    # A regex the daemon's log matches once it watches: the driver waits for it
    # (up to READY_WAIT_S, then settle_s more) instead of trusting settle_s
    # alone; "" for daemons that say nothing when ready.
    ready_pattern: str = ""


DAEMONS: dict[str, Daemon] = {
    "none": Daemon("none", (), r"(?!)", 0.0, ""),
    # earlyoom 1.7: `sending SIGTERM to process 123 uid 0 "tail": badness ...`
    "earlyoom": Daemon(
        "earlyoom",
        ("earlyoom",),
        r"sending SIG\w+ to process (\d+)",
        2.0,
        "/usr/bin/earlyoom",
    ),
    # nohang 0.2 with Debian's default config (PSI checking off there):
    # "Victim status (found in 1ms):\n  PID:       123, name: tail, ..."
    "nohang": Daemon(
        "nohang",
        ("nohang", "--monitor", "--config", "/etc/nohang/nohang.conf"),
        r"Victim status[^\n]*\n\s*PID:\s+(\d+)",
        6.0,
        "/usr/sbin/nohang",
    ),
    # bustd logs one line per kill containing "kill" and "pid=<N>"
    # ("kill: pid=123 name=tail ..."); its dry-run lines say "would kill".
    # The kill line also gives the time from the wakeup of the check that
    # killed to the signal: "reaction=12 ms after PSI trigger wakeup" (or
    # "after timer wakeup"); issue 4's target is 200 ms after a PSI trigger.
    "bustd": Daemon(
        "bustd",
        ("python3", "-m", "bustd"),
        r"^(?!.*dry run).*\bkill\b.*?\bpid=(\d+)",
        2.0,  # after its ready line: the loop's first checks
        "bustd/__main__.py",
        r"^(?!.*dry run).*\breaction=(\d+) ms after (PSI trigger|timer) wakeup",
        r"^bustd \S+ \(pid \d+\) watching ",
    ),
}
# bustd ranking by oom_score alone (as before issue 7, and as earlyoom): the
# control for the ranking scenarios 6 and 7 (issue 7: "the default is the one
# the VM suite shows best").
DAEMONS["bustd-oom_score"] = replace(
    DAEMONS["bustd"], name="bustd-oom_score",
    argv=("python3", "-m", "bustd", "--rank", "oom_score"))


def killed_pids(daemon: Daemon, log: str) -> list[int]:
    """Return the pids the daemon's log says it signalled, in log order.

    Duplicates (SIGTERM then SIGKILL to the same pid) are kept once.
    """
    pids: list[int] = []
    for match in re.finditer(daemon.kill_pattern, log, re.MULTILINE):
        pid = int(match.group(1))
        if pid not in pids:
            pids.append(pid)
    return pids


def reactions(daemon: Daemon, log: str) -> list[dict[str, int | str]]:
    """Return the reaction times the daemon's log gives, one per kill, in log order.

    Each is {"ms": N, "wakeup": "PSI trigger" or "timer"}; [] for a daemon
    without a reaction_pattern.
    """
    if not daemon.reaction_pattern:
        return []
    return [
        {"ms": int(m.group(1)), "wakeup": m.group(2)}
        for m in re.finditer(daemon.reaction_pattern, log, re.MULTILINE)
    ]


def major_faults(daemon: Daemon, log: str) -> list[int]:
    """Return bustd's own major page faults per kill, in log order ([] for others)."""
    if not daemon.name.startswith("bustd"):
        return []
    return [int(m.group(1)) for m in re.finditer(_FAULTS, log, re.MULTILINE)]
