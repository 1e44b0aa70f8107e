"""Judge one scenario's result.json: the assertions of the e2e suite.

Pure functions of the result dict and the scenario (no I/O), so the rules can
be read in one place and tested on hand-written results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.e2e.scenarios import Scenario

__all__ = ["Summary", "summarize", "failures"]


@dataclass(frozen=True)
class Summary:
    """The facts the verdict and the report need, derived from result.json."""

    hogs_killed_by_daemon: int
    hogs_killed_by_kernel: int
    killed_total: int
    survivors_dead: tuple[str, ...]
    time_to_kill_s: float | None
    psi_full_ms: int | None
    daemon_rss_kib: int | None
    probe_worst_ms: float | None
    daemon_alive: bool | None
    # The daemon's own reaction times from its log, one (ms, "PSI trigger" or
    # "timer") per kill; () when it logs none (every daemon but bustd).
    reactions: tuple[tuple[int, str], ...] = ()


def summarize(result: dict[str, Any]) -> Summary:
    """Derive the Summary from a guest result.

    A child that died of a signal and does not appear among the kernel's OOM
    kills was killed by the daemon: nothing else in the guest sends signals
    before the teardown. Processes the daemon or kernel killed that the
    driver did not start (found only in the logs) count toward killed_total.
    """
    procs: list[dict[str, Any]] = result.get("processes", [])
    kernel_pids = {k["pid"] for k in result.get("kernel_oom_kills", [])}
    daemon_pids = set(result.get("daemon_reported_kills", []))
    child_pids = {p["pid"] for p in procs}
    by_daemon = by_kernel = 0
    killed: set[int] = set()
    dead: list[str] = []
    first_kill: float | None = None
    for p in procs:
        died_of_signal = p.get("signal") is not None
        if died_of_signal or p["pid"] in kernel_pids:
            killed.add(p["pid"])
        if p["role"] == "hog" and died_of_signal:
            if p["pid"] in kernel_pids:
                by_kernel += 1
            else:
                by_daemon += 1
                t = p.get("t_exit_s")
                if t is not None and (first_kill is None or t < first_kill):
                    first_kill = t
        if p["role"] != "hog" and not p.get("alive_at_end", False):
            dead.append(p["name"])
    killed |= (kernel_pids | daemon_pids) - child_pids
    probe = result.get("probe") or {}
    return Summary(
        hogs_killed_by_daemon=by_daemon,
        hogs_killed_by_kernel=by_kernel,
        killed_total=len(killed),
        survivors_dead=tuple(dead),
        time_to_kill_s=first_kill,
        psi_full_ms=result.get("psi_full_ms"),
        daemon_rss_kib=result.get("daemon_rss_kib_max"),
        probe_worst_ms=probe.get("worst_ms"),
        daemon_alive=result.get("daemon_alive_at_end"),
        reactions=tuple(
            (int(r["ms"]), str(r["wakeup"])) for r in result.get("daemon_reactions", [])
        ),
    )


def failures(result: dict[str, Any] | None, scen: Scenario, daemon: str) -> list[str]:
    """Return the failed assertions for one run (empty list: it passed).

    With daemon "none" the same rules apply; they are expected to fail, and
    the report shows how.
    """
    if result is None:
        return ["no result.json (guest crashed or VM timed out)"]
    out = [f"guest error: {e.strip().splitlines()[-1]}" for e in result.get("errors", [])]
    if "processes" not in result:
        return out or ["result has no process list"]
    s = summarize(result)
    if s.hogs_killed_by_kernel:
        out.append(f"kernel OOM killer killed {s.hogs_killed_by_kernel} hog(s)")
    if result.get("kernel_oom_kills") and not s.hogs_killed_by_kernel:
        out.append(f"kernel OOM killer killed {len(result['kernel_oom_kills'])} process(es)")
    if s.hogs_killed_by_daemon < scen.min_hog_kills:
        out.append(
            f"daemon killed {s.hogs_killed_by_daemon} hog(s), wanted >= {scen.min_hog_kills}"
            + (" (timed out)" if result.get("timed_out") else "")
        )
    if s.survivors_dead:
        out.append("died: " + ", ".join(s.survivors_dead))
    if daemon != "none" and not s.daemon_alive:
        out.append("daemon not running at the end")
    if s.killed_total > scen.max_kills:
        out.append(f"{s.killed_total} processes killed, at most {scen.max_kills} needed")
    return out
