"""Another user tries to steer bustd (issue 15): hooks, output files, the config, a bus.

Each test runs steer_harness.py as PID 1 of a private PID namespace; every
attack step there runs as nobody (setpriv), and bustd can signal only the
harness's own children. The reproductions of review-hostile.md H4, L3, L6,
L7, M3 and M4, as regression tests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.integration.confine import confined

HERE = Path(__file__).resolve().parent


def run(case: str, timeout: float = 150) -> dict[str, Any]:
    out = confined([sys.executable, str(HERE / "steer_harness.py"), case], timeout)
    if out.returncode != 0:
        raise AssertionError(f"harness failed ({out.returncode}): {out.stderr.decode()}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def refused(outcome: dict[str, Any]) -> str:
    """Return the one line of a start refused with exit code 2."""
    assert outcome["exit"] == 2, outcome
    assert len(outcome["lines"]) == 1, outcome
    line: str = outcome["lines"][0]
    assert line.startswith("bustd: error: ") and "Traceback" not in line
    return line


def test_a_hook_behind_a_folder_or_link_another_user_owns_is_refused() -> None:
    """H4: the link itself, and the folder that holds it, are checked with lstat."""
    r = run("user_link")
    line = refused(r["folder"])
    assert f"folder {r['user']} is owned by uid 65534, not root" in line, line
    line = refused(r["link"])  # in a sticky folder, as /tmp: the link is nobody's
    assert f"link {r['public']}/hook is owned by uid 65534, not root" in line, line


def test_a_hook_runs_from_what_was_checked_with_a_normal_oom_score_adj_and_thp() -> None:
    """H4: a later swap of the link changes nothing; L6: no -1000, no THP off."""
    r = run("hook_swap")
    assert r["first"] and r["more"], r["log"]
    assert len(r["runs"]) >= r["swapped_at"] + 2, r
    assert all(line == "a 0 THP_enabled:1" for line in r["runs"]), r["runs"]


def test_output_files_another_user_planted_or_owns_are_refused_at_start() -> None:
    """M3, L3: the folders of the outputs are checked, and what is at the path."""
    r = run("outputs_start")
    assert "a FIFO, not a regular file" in refused(r["fifo"])
    assert f"{r['public']}/own.jsonl: it is owned by uid 65534" in refused(r["owned"])
    for key in ("metrics_folder", "pid_folder"):
        line = refused(r[key])
        assert f"folder {r['user']} is owned by uid 65534, not root" in line, line
    assert "--pid-file" in refused(r["pid_folder"])


def test_writers_never_write_through_what_another_user_planted_nor_hang() -> None:
    """M3: temporary names, FIFOs, hard links and links planted while bustd runs."""
    r = run("outputs_run")
    assert r["metrics_owned"] == "returned" and r["metrics_owned_owner"] == 0, r
    assert r["metrics_fifo"] == "returned" and r["metrics_fifo_owner"] == 0, r
    assert r["killlog_fifo"] == "returned", r  # never blocked on the FIFO
    assert r["killlog_link"] == "returned", r
    assert "kills.jsonl: a FIFO, not a regular file: not written" in r["log"], r["log"]
    assert "linked.jsonl: 2 hard links to it: not written" in r["log"], r["log"]
    assert r["pidfile"] == "returned" and r["pidfile_regular"], r
    assert (r["secret"], r["secret_mode"]) == ("s3cret\n", "0o600"), r


def test_the_config_files_folder_is_checked_at_start_and_at_reload() -> None:
    """L3: a folder another user owns is refused; a reload keeps the running config."""
    r = run("config")
    assert "is owned by uid 65534, not root" in refused(r["start"])
    assert r["up"] and r["answered"], r["log"]
    assert (f"reload failed, running configuration kept: config file {r['etc']}/bustd.conf: "
            f"folder {r['etc']} is owned by uid 65534") in r["log"], r["log"]
    assert "reloaded" not in r["log"], r["log"]


def test_a_users_bus_can_neither_forge_log_lines_nor_starve_the_hooks() -> None:
    """M4: the helper's text is escaped inside bustd's line; L7: hooks keep their slots."""
    r = run("bus")
    assert r["killed"], r["log"]
    lines = r["log"].splitlines()
    assert not [line for line in lines if line.startswith("<")], r["log"]
    forged = [line for line in lines if "FORGED" in line]
    assert forged, r["log"]  # the helper's words are there, as its own, in one line
    for line in forged:
        assert line.startswith("warning: notification helper for uid 65534 (pid "), line
        assert '; it said: "bustd notification helper: uid 65534: org.x\\n<4>kill:' in line
    kills = [line for line in lines if "kill: pid=" in line and not line.startswith("warning: "
                                                                                    "notif")]
    assert len(kills) >= 4
    assert len(r["hook_runs"]) == len(kills), (r["hook_runs"], r["log"])
    assert "not starting the pre-kill hook" not in r["log"]
    assert int(r["connections"]) <= 3, r  # one helper of nobody's at a time
