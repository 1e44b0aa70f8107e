"""Judge one scenario's result.json: the assertions of the e2e suite.

Pure functions of the result dict and the scenario (no I/O), so the rules can
be read in one place and tested on hand-written results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.e2e.scenarios import LOW_MEMORY_FRACTION, Scenario

__all__ = ["Summary", "process_list", "summarize", "failures", "precondition"]


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
    # bustd's own major page faults during each killing check (target 0).
    major_faults: tuple[int, ...] = ()


def process_list(result: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Return the result's process entries that have a name, role and pid.

    None when the result has no list of processes at all.
    """
    procs = result.get("processes")
    if not isinstance(procs, list):
        return None
    return [p for p in procs if isinstance(p, dict) and {"name", "role", "pid"} <= p.keys()]


def summarize(result: dict[str, Any]) -> Summary:
    """Derive the Summary from a guest result.

    A child that died of a signal and does not appear among the kernel's OOM
    kills was killed by the daemon: nothing else in the guest sends signals
    before the teardown. Processes the daemon or kernel killed that the
    driver did not start (found only in the logs) count toward killed_total.
    """
    procs = process_list(result) or []
    kernel_pids = {k["pid"] for k in result.get("kernel_oom_kills") or []}
    daemon_pids = set(result.get("daemon_reported_kills") or [])
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
        major_faults=tuple(
            int(n) for n in result.get("daemon_major_faults") or [] if isinstance(n, int)
        ),
        reactions=tuple(
            (int(r["ms"]), str(r["wakeup"])) for r in result.get("daemon_reactions") or []
        ),
    )


def error_lines(errors: Any) -> list[str]:
    """Return one failure line per guest error (the last non-blank line of each).

    The guest writes a list of traceback texts; anything else (no list, a
    bare string, a blank or non-text entry) is itself a failure, never a
    pass or a crash.
    """
    if errors is None:
        return ["result has no errors list (not written by guest.py?)"]
    if not isinstance(errors, list):
        return [f"guest errors in an unexpected form: {str(errors).strip()[-200:]!r}"]
    out = []
    for e in errors:
        lines = [line for line in str(e).splitlines() if line.strip()]
        out.append(f"guest error: {lines[-1].strip() if lines else '(blank)'}")
    return out


def exit_line(p: dict[str, Any]) -> str:
    """Return the failure line for a child that exited by itself (not by a signal)."""
    tail = [line for line in str(p.get("log_tail") or "").splitlines() if line.strip()]
    why = f": {tail[-1].strip()[:200]}" if tail else ""
    return f"{p['name']} exited by itself with code {p.get('exit_code')}{why}"


def kernel_kill_lines(result: dict[str, Any], procs: list[dict[str, Any]]) -> list[str]:
    """Return the failure lines for the kernel's OOM kills, naming every victim.

    A hog killed by the kernel means the daemon was too late; a non-hog (a
    bystander, the daemon, anything outside the scenario) is named on its
    own line. The kernel's own count (/proc/vmstat oom_kill) catches kills
    whose dmesg line was not found.
    """
    out = []
    kills = result.get("kernel_oom_kills") or []
    by_pid = {p["pid"]: p for p in procs}
    hogs = [k for k in kills if by_pid.get(k["pid"], {}).get("role") == "hog"]
    if hogs:
        out.append(f"kernel OOM killer killed {len(hogs)} hog(s)")
    for k in kills:
        p = by_pid.get(k["pid"])
        if p is None:
            out.append(
                f"kernel OOM killer killed pid {k['pid']} ({k.get('name', '?')}), "
                "not a scenario process"
            )
        elif p["role"] != "hog":
            out.append(f"kernel OOM killer killed {p['name']} ({p['role']}, pid {p['pid']})")
    counted = result.get("vmstat_oom_kill")
    if isinstance(counted, int) and counted > len(kills):
        out.append(
            f"kernel OOM killer killed {counted} process(es) (/proc/vmstat oom_kill), "
            f"dmesg names {len(kills)}"
        )
    return out


def failures(result: dict[str, Any] | None, scen: Scenario, daemon: str) -> list[str]:
    """Return the failed assertions for one run (empty list: it passed).

    With daemon "none" the same rules apply; they are expected to fail, and
    the report shows how. A result that is incomplete (guest errors, no or a
    partial process list, no kernel OOM record) never passes.
    """
    if result is None:
        return ["no result.json (guest crashed or VM timed out)"]
    out = error_lines(result.get("errors"))
    procs = process_list(result)
    if procs is None:
        return [*out, "result has no process list"]
    if len(procs) != len(result["processes"]):
        out.append("result has malformed process entries")
    expected = [p.name for p in scen.procs] + ["probe"]
    names = {p["name"] for p in procs}
    missing = [name for name in expected if name not in names]
    if missing:
        out.append("missing from the process list: " + ", ".join(missing))
    if "kernel_oom_kills" not in result:
        out.append("result has no record of kernel OOM kills")
    s = summarize(result)
    out += kernel_kill_lines(result, procs)
    out += [exit_line(p) for p in procs if p.get("exit_code") is not None and not p.get("signal")]
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
        out.append(
            f"{s.killed_total} processes killed, "
            + (f"at most {scen.max_kills} needed" if scen.max_kills else "none expected")
        )
    unfinished = [
        p["name"] for p in procs
        if p["role"] == "load" and p.get("alive_at_end") and p.get("t_done_s") is None
    ]
    if unfinished:
        out.append("did not reach their size before the timeout: " + ", ".join(unfinished))
    out += precondition(result, scen)
    return out


def precondition(result: dict[str, Any], scen: Scenario) -> list[str]:
    """Return why the run did not test what the scenario means ([] if it did).

    A scenario with expect_largest proves a ranking only if that process was
    the largest (RSS + swap) when memory first ran short.
    """
    if not scen.expect_largest:
        return []
    low = result.get("at_low_memory")
    if not isinstance(low, dict):
        return [
            "memory never ran short (MemAvailable stayed above "
            f"{LOW_MEMORY_FRACTION:.0%} of MemTotal): the scenario did not happen"
        ]
    if low.get("largest") != scen.expect_largest:
        return [
            f"precondition: {low.get('largest')} was the largest when memory ran short "
            f"at {low.get('t')} s, not {scen.expect_largest}"
        ]
    return []
