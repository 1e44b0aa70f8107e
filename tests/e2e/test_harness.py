"""Host-only tests of the e2e harness's pure parts (no VM is booted)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e import daemons, guest, reporting, runner, scenarios, verdict, workloads

# Log lines as the daemons printed them in guest runs of this suite.
EARLYOOM_LOG = (
    "low memory! at or below SIGTERM limits: mem 10.00%, swap 10.00%\n"
    'sending SIGTERM to process 259 uid 0 "tail": badness 1113, VmRSS 641 MiB\n'
    'sending SIGKILL to process 259 uid 0 "tail": badness 1113, VmRSS 641 MiB\n'
)
BUSTD_LOG = (
    "bustd 0.1.0 (pid 247) watching /proc: SIGTERM at MemAvailable <= 95.8 MiB\n"
    "warning: dry run: would kill pid=12 name=x uid=0 rss=1 MiB with SIGTERM: test\n"
    "warning: kill: pid=279 name=tail uid=0 rss=635.6 MiB oom_score=1109 "
    "oom_score_adj=0 signal=SIGTERM exited after 0.25 s; reaction=12 ms after PSI trigger "
    "wakeup; reason: memory some stall 25% >= 25%; cmdline=tail /dev/zero\n"
)
NOHANG_LOG = (
    "Victim status (found in 1ms):\n  PID:       4321, name: python3, state: R (running), EUID: 0\n"
)


@pytest.mark.parametrize(
    ("name", "log", "pids"),
    [
        ("earlyoom", EARLYOOM_LOG, [259]),
        ("bustd", BUSTD_LOG, [279]),
        ("nohang", NOHANG_LOG, [4321]),
        ("none", BUSTD_LOG, []),
    ],
)
def test_killed_pids(name: str, log: str, pids: list[int]) -> None:
    assert daemons.killed_pids(daemons.DAEMONS[name], log) == pids


def test_reactions() -> None:
    bustd = daemons.DAEMONS["bustd"]
    log = BUSTD_LOG + (
        "warning: kill: pid=280 name=x uid=0 rss=1 MiB oom_score=1 oom_score_adj=0 "
        "signal=SIGKILL still alive after 2.00 s; reaction=0 ms after timer wakeup; "
        "reason: MemAvailable 9 MiB; cmdline=x\n"
        # not a kill, and not bustd's format: ignored
        "warning: dry run: would kill pid=3 ...; reaction=5 ms after timer wakeup\n"
        "kill: pid=4 reaction=abc ms after timer wakeup\n"
        "kill: pid=5 reaction=7 ms after signal wakeup\n"
    )
    assert daemons.reactions(bustd, log) == [
        {"ms": 12, "wakeup": "PSI trigger"},
        {"ms": 0, "wakeup": "timer"},
    ]
    assert daemons.reactions(bustd, "watching /proc\n") == []
    # bustd's old kill line (no reaction field) still gives its pid
    old = "warning: kill: pid=9 name=x signal=SIGTERM exited after 0.1 s; reason: y\n"
    assert daemons.reactions(bustd, old) == []
    assert daemons.killed_pids(bustd, old) == [9]
    for name in ("none", "earlyoom", "nohang"):
        assert daemons.reactions(daemons.DAEMONS[name], BUSTD_LOG) == []


def test_parse_ids() -> None:
    assert scenarios.parse_ids("all") == sorted(scenarios.SCENARIOS)
    assert scenarios.parse_ids("3,1,3") == [3, 1]
    for bad in ("0", "1,x", "", "9"):
        with pytest.raises(ValueError):
            scenarios.parse_ids(bad)


def test_parse_psi_and_meminfo() -> None:
    psi = (
        "some avg10=1.00 avg60=0.50 avg300=0.10 total=123456\n"
        "full avg10=0.50 avg60=0.20 avg300=0.00 total=7890\n"
    )
    assert guest.parse_psi_totals(psi) == {"some": 123456, "full": 7890}
    assert guest.parse_psi_totals("garbage\n") == {}
    mem = guest.parse_meminfo("MemTotal:  981472 kB\nHugePages_Total: 0\nbroken\n")
    assert mem == {"MemTotal": 981472, "HugePages_Total": 0}


def test_parse_kernel_oom_kills() -> None:
    dmesg = (
        "[ 40.1] tail invoked oom-killer: gfp_mask=0x140cca\n"
        "[ 40.2] Out of memory: Killed process 259 (tail) total-vm:660000kB\n"
        "[ 41.0] Out of memory: Killed process 7 (a b) c) total-vm:1kB\n"
    )
    assert guest.parse_kernel_oom_kills(dmesg) == [
        {"pid": 259, "name": "tail"},
        {"pid": 7, "name": "a b"},
    ]


def test_pattern_block_compressibility() -> None:
    import zlib

    block = workloads.pattern_block(0.25)
    assert len(block) == workloads.CHUNK
    ratio = len(zlib.compress(block[: workloads.PAGE])) / workloads.PAGE
    assert 0.2 < ratio < 0.35
    with pytest.raises(ValueError):
        workloads.pattern_block(1.5)


def proc(name: str, role: str, pid: int, sig: int | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "role": role,
        "pid": pid,
        "alive_at_end": sig is None,
        "signal": sig,
        "exit_code": None if sig is None else -sig,
        "t_exit_s": None if sig is None else 3.5,
    }


def result(*procs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "errors": [],
        "processes": list(procs),
        "kernel_oom_kills": [],
        "daemon_reported_kills": [],
        "daemon_alive_at_end": True,
    }
    base.update(extra)
    return base


SCEN = scenarios.SCENARIOS[1]


def test_pass() -> None:
    r = result(proc("bystander", "bystander", 1), proc("tail", "hog", 2, 15))
    assert verdict.failures(r, SCEN, "bustd") == []
    assert verdict.summarize(r).time_to_kill_s == 3.5


def test_kernel_kill_fails() -> None:
    r = result(
        proc("bystander", "bystander", 1),
        proc("tail", "hog", 2, 9),
        kernel_oom_kills=[{"pid": 2, "name": "tail"}],
    )
    failed = verdict.failures(r, SCEN, "none")
    assert any("kernel OOM killer" in f for f in failed)
    assert any("daemon killed 0" in f for f in failed)


def test_collateral_and_dead_daemon_fail() -> None:
    r = result(
        proc("bystander", "bystander", 1, 15),
        proc("tail", "hog", 2, 15),
        daemon_reported_kills=[2, 1, 99],
        daemon_alive_at_end=False,
    )
    failed = verdict.failures(r, SCEN, "earlyoom")
    assert "died: bystander" in failed
    assert "daemon not running at the end" in failed
    assert "3 processes killed, at most 1 needed" in failed


def test_missing_result_fails() -> None:
    assert verdict.failures(None, SCEN, "bustd")


def test_reaction_reported_not_judged() -> None:
    slow = [{"ms": 950, "wakeup": "timer"}]
    r = result(proc("bystander", "bystander", 1), proc("tail", "hog", 2, 15), daemon_reactions=slow)
    assert verdict.failures(r, SCEN, "bustd") == []  # a target, not a check
    s = verdict.summarize(r)
    assert s.reactions == ((950, "timer"),)
    assert runner.reaction_text(s) == "950 ms (timer)"
    assert runner.reaction_text(verdict.summarize(result())) == "-"
    outcome = runner.Outcome(SCEN, "bustd", r, (), 50.0, "/nonexistent")
    assert "reaction 950 ms (timer)" in runner.describe(outcome)
    cells = reporting.row(outcome).split(" | ")
    assert cells[4] == "950 ms (timer)"
    note = " ".join(reporting.reaction_note([outcome]))
    assert "Kills woken by bustd's timer" in note
    assert "Over 200 ms: 1 (950 ms)." in note
    fast = result(
        proc("tail", "hog", 2, 15), daemon_reactions=[{"ms": 12, "wakeup": "PSI trigger"}]
    )
    other = runner.Outcome(SCEN, "earlyoom", result(proc("tail", "hog", 2, 15)), (), 1, "")
    text = reporting.render(
        [runner.Outcome(SCEN, "bustd", fast, (), 50.0, ""), other], "cmd", "env"
    )
    assert "| 1 | bustd | PASS | 3.5 s | 12 ms (PSI trigger) |" in text
    assert "| 1 | earlyoom | PASS | 3.5 s | - |" in text
    assert "Kills woken by a PSI trigger, by scenario: 1 (12 ms)." in text
    assert "Every kill was signalled within 200 ms of its wakeup." in text
