"""Kills in vain (issue 14, review H1) on the real kernel, confined.

harness.py runs as PID 1 of a private PID and mount namespace: it starts a
few small processes, fills a tmpfs of its own with a file no process holds,
then starts bustd with a level (``-M``) MemAvailable + 150 MiB: an emergency
that killing every child (about 50 MiB) cannot end, with the rest held in
the tmpfs. Before issue 14 bustd killed them all, one every 0.1 s.
Host allocations stay under 600 MiB.
"""

from __future__ import annotations

from tests.integration.scenario import kill_lines, run


def test_a_tmpfs_no_process_holds_costs_at_most_one_kill_and_is_named() -> None:
    result = run({
        "children": [{"name": f"app{i}", "mib": 4} for i in range(4)],
        "tmpfs_mib": 500, "level_above_kib": 150 * 1024,
        "bustd": ["--psi", "0"], "kills": 4, "timeout": 12, "settle": 0})  # watched 12 s
    log = result["log"]
    assert len(kill_lines(log)) <= 1, log
    assert sum(result["alive"].values()) >= 3, (result["alive"], log)
    said = [line for line in log.splitlines() if "not killing" in line]
    assert len(said) == 1, log
    assert "memory emergency (MemAvailable " in said[0]
    assert f"tmpfs {result['tmpfs']} 500.0 MiB" in said[0], said[0]
    assert result["bustd_alive"], log
