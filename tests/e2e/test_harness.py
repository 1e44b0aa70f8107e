"""Host-only tests of the e2e harness's pure parts (no VM is booted)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e import daemons, guest, profile, reporting, runner, scenarios, verdict, workloads

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


def test_major_faults() -> None:
    bustd = daemons.DAEMONS["bustd"]
    log = (
        "warning: kill: pid=7 name=x signal=SIGTERM exited after 0.1 s; reaction=3 ms after "
        "timer wakeup, 0 major faults; reason: y\n"
        "warning: kill: pid=8 name=x signal=SIGKILL exited after 0.1 s; reaction=40 ms after "
        "PSI trigger wakeup, 12 major faults; reason: y\n"
        "warning: dry run: would kill pid=9 reaction=1 ms after timer wakeup, 5 major faults\n"
    )
    assert daemons.major_faults(bustd, log) == [0, 12]
    assert daemons.major_faults(daemons.DAEMONS["earlyoom"], log) == []
    s = verdict.summarize({"processes": [], "daemon_major_faults": [0, 12, "x"]})
    assert s.major_faults == (0, 12)


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
    assert scenarios.parse_ids("10,6") == [10, 6]
    for bad in ("0", "1,x", "", "99"):
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
        {"pid": 7, "name": "a b) c"},
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


PROBE = proc("probe", "probe", 3)


def test_pass() -> None:
    r = result(proc("bystander", "bystander", 1), proc("tail", "hog", 2, 15), PROBE)
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
    r = result(
        proc("bystander", "bystander", 1), proc("tail", "hog", 2, 15), PROBE, daemon_reactions=slow
    )
    assert verdict.failures(r, SCEN, "bustd") == []  # a target, not a check
    s = verdict.summarize(r)
    assert s.reactions == ((950, "timer"),)
    assert runner.reaction_text(s) == "950 ms (timer)"
    assert runner.reaction_text(verdict.summarize(result())) == "-"
    outcome = runner.Outcome(SCEN, "bustd", r, (), 50.0, "/nonexistent")
    assert "reaction 950 ms (timer)" in runner.describe(outcome)
    cells = reporting.row(outcome).split(" | ")
    assert cells[5] == "950 ms (timer)"
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
    assert "| 1 | bustd | 1 | PASS | 3.5 s | 12 ms (PSI trigger) |" in text
    assert "| 1 | earlyoom | 1 | PASS | 3.5 s | - |" in text
    assert "Kills woken by a PSI trigger, by scenario: 1 (12 ms)." in text
    assert "Every kill was signalled within 200 ms of its wakeup." in text


# --- issue 10: results that must never pass --------------------------------
# Each of these passed (or crashed the verdict) before the fix.

SCEN5 = scenarios.SCENARIOS[5]
# A scenario where no kill is expected (as the zram-absorb ones), built from
# the fields every version of Scenario has.
NO_KILL = scenarios.Scenario(
    id=99,
    name="no kill expected",
    zram_mib=0,
    timeout_s=10,
    procs=(scenarios.BYSTANDER, scenarios.Proc("load", "load", "hold")),
    max_kills=0,
    min_hog_kills=0,
)


def scenario1_ok(**extra: Any) -> dict[str, Any]:
    return result(
        proc("bystander", "bystander", 1), proc("tail", "hog", 2, 15), PROBE, **extra
    )


@pytest.mark.parametrize(
    ("errors", "expect"),
    [
        (["Traceback (most recent call last):\n  ...\nRuntimeError: boom\n"], "RuntimeError: boom"),
        ([""], "guest error: (blank)"),
        (["  \n\n"], "guest error: (blank)"),
        ("Traceback (most recent call last):\nOSError: x", "unexpected form"),
        ({"oops": 1}, "unexpected form"),
    ],
)
def test_guest_errors_never_pass(errors: Any, expect: str) -> None:
    failed = verdict.failures(scenario1_ok(errors=errors), SCEN, "bustd")
    assert any(expect in f for f in failed), failed


def test_result_without_errors_list_fails() -> None:
    r = scenario1_ok()
    del r["errors"]
    assert verdict.failures(r, SCEN, "bustd") == [
        "result has no errors list (not written by guest.py?)"
    ]


def test_child_that_exited_with_an_error_fails() -> None:
    # Scenario 5: one worker killed by the daemon (enough hogs), another died
    # of a MemoryError traceback: the run carries an error and must fail.
    crashed = proc("worker2", "hog", 3)
    crashed.update(
        alive_at_end=False,
        exit_code=1,
        t_exit_s=4.0,
        log_tail="Traceback (most recent call last):\n  File x\nMemoryError\n",
    )
    r = result(
        proc("bystander", "bystander", 1),
        proc("worker1", "hog", 2, 15),
        crashed,
        proc("worker3", "hog", 4),
        PROBE,
    )
    assert verdict.failures(r, SCEN5, "bustd") == [
        "worker2 exited by itself with code 1: MemoryError"
    ]


@pytest.mark.parametrize("processes", [None, "x", {"name": "bystander"}])
def test_result_without_process_list_fails(processes: Any) -> None:
    r = scenario1_ok(processes=processes)
    assert verdict.failures(r, SCEN, "bustd") == ["result has no process list"]
    r["errors"] = ["Traceback\nKeyError: 'x'"]
    assert verdict.failures(r, SCEN, "bustd") == [
        "guest error: KeyError: 'x'",
        "result has no process list",
    ]


def test_empty_or_partial_process_list_fails() -> None:
    # With no kill expected, an empty list used to pass.
    failed = verdict.failures(result(), NO_KILL, "bustd")
    assert "missing from the process list: bystander, load, probe" in failed
    partial = scenario1_ok()
    partial["processes"] = partial["processes"][1:]  # no bystander
    assert verdict.failures(partial, SCEN, "bustd") == [
        "missing from the process list: bystander"
    ]
    malformed = scenario1_ok()
    malformed["processes"].append({"name": "x"})
    assert verdict.failures(malformed, SCEN, "bustd") == [
        "result has malformed process entries"
    ]


def test_kernel_oom_kill_of_a_non_hog_fails() -> None:
    # The daemon killed the hog; the kernel also killed something outside
    # the scenario (here: pid 77), which dmesg names.
    r = scenario1_ok(kernel_oom_kills=[{"pid": 77, "name": "journald"}])
    failed = verdict.failures(r, SCEN, "bustd")
    assert "kernel OOM killer killed pid 77 (journald), not a scenario process" in failed
    # ... and the kernel killed both a hog and the bystander: each is named.
    both = result(
        proc("bystander", "bystander", 1, 9),
        proc("tail", "hog", 2, 9),
        PROBE,
        kernel_oom_kills=[{"pid": 2, "name": "tail"}, {"pid": 1, "name": "python3"}],
    )
    failed = verdict.failures(both, SCEN, "none")
    assert "kernel OOM killer killed 1 hog(s)" in failed
    assert "kernel OOM killer killed bystander (bystander, pid 1)" in failed


def test_kernel_oom_kill_missing_from_dmesg_fails() -> None:
    # The kernel's own counter says it killed; dmesg's line was not found.
    r = scenario1_ok(vmstat_oom_kill=1)
    assert verdict.failures(r, SCEN, "bustd") == [
        "kernel OOM killer killed 1 process(es) (/proc/vmstat oom_kill), dmesg names 0"
    ]
    assert verdict.failures(scenario1_ok(vmstat_oom_kill=0), SCEN, "bustd") == []
    # no record of kernel kills at all is not "none"
    r = scenario1_ok()
    del r["kernel_oom_kills"]
    assert verdict.failures(r, SCEN, "bustd") == ["result has no record of kernel OOM kills"]


@pytest.mark.parametrize(
    "line",
    [
        "Out of memory: Killed process 77 (journald) total-vm:1kB, anon-rss:0kB",
        "Memory cgroup out of memory: Killed process 77 (journald) total-vm:1kB",
        "Out of memory (oom_kill_allocating_task): Killed process 77 (journald) total-vm:1kB",
    ],
)
def test_parse_every_kernel_oom_kill_format(line: str) -> None:
    assert guest.parse_kernel_oom_kills(f"[ 1.0] {line}\n") == [{"pid": 77, "name": "journald"}]


# --- the scenarios of issue 7 ------------------------------------------------


def test_first_five_scenarios_unchanged() -> None:
    # (name, zram, timeout, budget, hogs to kill, settle, precondition, processes)
    expect = {
        1: ("fast allocation, no swap", 0, 60, 1, 1, ("bystander", "tail")),
        2: ("steady leak, zram swap", 512, 150, 1, 1, ("bystander", "leak")),
        3: ("working set > RAM, zram swap", 2048, 150, 1, 1, ("bystander", "thrash")),
        4: ("protected large process + grower", 0, 90, 1, 1, ("bystander", "protected", "grower")),
        5: ("several workers exhaust memory", 0, 90, 1, 1,
            ("bystander", "worker1", "worker2", "worker3")),
    }
    for sid, (name, zram, timeout, budget, hogs, procs) in expect.items():
        s = scenarios.SCENARIOS[sid]
        assert (s.name, s.zram_mib, s.timeout_s, s.max_kills, s.min_hog_kills) == (
            name, zram, timeout, budget, hogs
        )
        assert tuple(p.name for p in s.procs) == procs
        assert (s.settle_s, s.expect_largest) == (5.0, "")
    assert scenarios.SCENARIOS[2].procs[1].rate_mib_s == 24
    assert scenarios.SCENARIOS[3].procs[1].size_of_total == 1.25
    assert scenarios.SCENARIOS[4].procs[1].oom_score_adj == -1000


def test_new_scenarios() -> None:
    idle = scenarios.SCENARIOS[6]
    assert [(p.name, p.role) for p in idle.procs] == [
        ("bystander", "bystander"), ("idle", "idle"), ("grower", "hog")
    ]
    assert idle.procs[1].size_of_total == 0.42 and idle.procs[2].rate_mib_s == 40
    assert (idle.zram_mib, idle.max_kills, idle.expect_largest) == (0, 1, "idle")
    many = scenarios.SCENARIOS[7]
    workers = [p for p in many.procs if p.role == "hog"]
    assert len(workers) == 12 and {p.rate_mib_s for p in workers} == {8}
    assert many.procs[1].size_mib == 120 and many.procs[1].role == "idle"
    assert 1 <= many.max_kills <= 3 and many.expect_largest == "idle"
    rates = []
    for sid in (8, 9, 10):
        s = scenarios.SCENARIOS[sid]
        (load,) = [p for p in s.procs if p.role == "load"]
        assert (s.max_kills, s.min_hog_kills) == (0, 0)
        assert s.zram_mib and load.kind == "absorb"
        assert load.size_of_available > 1.0 > load.hot_of_available > 0
        assert not [p for p in s.procs if p.role == "hog"]
        # long enough to grow at the nominal rate and then be watched
        assert s.timeout_s > 1.3 * 800 / load.rate_mib_s + s.settle_s
        rates.append(load.rate_mib_s)
    assert rates == [8, 24, 64]
    for s in scenarios.SCENARIOS.values():
        assert {p.role for p in s.procs} <= {*scenarios.HOLDER_ROLES, *scenarios.ACTIVE_ROLES}
        assert len({p.name for p in s.procs}) == len(s.procs)


def absorb_result(**extra: Any) -> dict[str, Any]:
    load = proc("absorb", "load", 2)
    load["t_done_s"] = 40.0
    return result(proc("bystander", "bystander", 1), load, PROBE, **extra)


def test_absorb_verdict() -> None:
    scen = scenarios.SCENARIOS[9]
    assert verdict.failures(absorb_result(), scen, "bustd") == []
    killed = absorb_result()
    killed["processes"][1].update(alive_at_end=False, signal=15, exit_code=-15, t_exit_s=30.0)
    assert verdict.failures(killed, scen, "bustd") == [
        "died: absorb",
        "1 processes killed, none expected",
    ]
    slow = absorb_result(timed_out=True)
    slow["processes"][1]["t_done_s"] = None
    assert verdict.failures(slow, scen, "none") == [
        "did not reach their size before the timeout: absorb"
    ]
    assert verdict.failures(absorb_result(daemon_reported_kills=[4242]), scen, "bustd") == [
        "1 processes killed, none expected"
    ]


def test_largest_precondition() -> None:
    scen = scenarios.SCENARIOS[6]
    procs = (
        proc("bystander", "bystander", 1),
        proc("idle", "idle", 2),
        proc("grower", "hog", 3, 15),
        PROBE,
    )
    low = {"t": 8.0, "mem_available_kib": 1, "sizes_kib": {"idle": 9, "grower": 5}}
    ok = result(*procs, at_low_memory={**low, "largest": "idle"})
    assert verdict.failures(ok, scen, "bustd") == []
    wrong = result(*procs, at_low_memory={**low, "largest": "grower"})
    assert verdict.failures(wrong, scen, "bustd") == [
        "precondition: grower was the largest when memory ran short at 8.0 s, not idle"
    ]
    never = verdict.failures(result(*procs), scen, "bustd")
    assert never and never[0].startswith("memory never ran short")


# --- fine samples (guest) and their profile (host) ---------------------------

MM_STAT = "  401408000 117440512 121339904        0 121339904        0        0        0        0\n"
STATUS = "Name:\tpython3\nVmRSS:\t  614400 kB\nRssAnon:\t 1 kB\nVmSwap:\t  384000 kB\n"


def test_guest_sample_parsers() -> None:
    assert guest.parse_vmstat("pswpin 5\npswpout 7\nbroken\nx y z\n") == {
        "pswpin": 5, "pswpout": 7
    }
    assert guest.parse_mm_stat(MM_STAT) == {
        "orig_data_size": 401408000,
        "compr_data_size": 117440512,
        "mem_used_total": 121339904,
    }
    assert guest.parse_mm_stat("") == {} and guest.parse_mm_stat("1 2 x") == {}
    assert guest.parse_status_sizes(STATUS) == (614400, 384000)
    assert guest.parse_status_sizes("Name:\tkthreadd\nVmRSS:\t0 kB\n") == (0, 0)
    assert guest.parse_status_sizes("Name:\tzombie\n") is None
    cols = guest.sample_columns(["zram0"])
    row = guest.sample_row(
        1.23456,
        "some avg10=0 total=1500\nfull avg10=0 total=500\n",
        "MemAvailable: 2048 kB\nSwapFree: 4096 kB\n",
        "pswpin 1\npswpout 2\nworkingset_refault_file 3\nworkingset_restore_anon 4\n",
        [(MM_STAT, "2147483648\n")],
    )
    assert dict(zip(cols, row)) == {
        "t": 1.235,
        "some_us": 1500,
        "full_us": 500,
        "mem_available_kib": 2048,
        "swap_free_kib": 4096,
        "pswpin": 1,
        "pswpout": 2,
        "workingset_refault_anon": None,  # not in this vmstat
        "workingset_refault_file": 3,
        "workingset_activate_anon": None,
        "workingset_restore_anon": 4,
        "zram0.orig_data_size": 401408000,
        "zram0.compr_data_size": 117440512,
        "zram0.mem_used_total": 121339904,
        "zram0.disksize": 2147483648,
    }
    assert guest.sample_columns([]) == cols[:11]


def fine(stalls: list[float], swapin_pages: int = 0, every: float = 0.25) -> dict[str, Any]:
    """A samples table with `some` stall stalls[i] % during second i (full: half)."""
    cols = guest.sample_columns(["zram0"])
    rows = []
    some = full = pswpin = 0.0
    steps = round(1 / every)
    for i in range(len(stalls) * steps + 1):
        t = i * every
        rows.append([t, some, full, 1024 * 100, 1024 * 50, pswpin, 0, pswpin, None,
                     pswpin / 2, pswpin / 4,
                     8 * profile.MIB, 2 * profile.MIB, 3 * profile.MIB, 1 << 30])
        second = min(i // steps, len(stalls) - 1)
        some += stalls[second] / 100 * every * 1e6
        full += stalls[second] / 200 * every * 1e6
        pswpin += swapin_pages / steps
    return {"interval_s": every, "columns": cols, "rows": rows}


def test_per_second() -> None:
    seconds = profile.per_second(profile.rows_of(fine([0, 30, 60, 100], swapin_pages=256)))
    assert [s.t for s in seconds] == [0, 1, 2, 3]
    assert [round(s.some_pct) for s in seconds] == [0, 30, 60, 100]
    assert [round(s.full_pct) for s in seconds] == [0, 15, 30, 50]
    assert {round(s.swapin_mib_s, 3) for s in seconds} == {1.0}  # 256 pages of 4 KiB
    assert {round(s.refault_mib_s or 0, 3) for s in seconds} == {1.0}
    assert {s.file_refault_mib_s for s in seconds} == {None}  # not sampled
    assert {round(s.activate_mib_s or 0, 3) for s in seconds} == {0.5}
    assert {round(s.restore_mib_s or 0, 3) for s in seconds} == {0.25}
    s = seconds[0]
    assert (s.avail_mib, s.swap_free_mib, s.zram_used_mib, s.zram_ratio) == (100, 50, 3, 4)
    # irregular sampling: the delta is divided by the real time between samples
    table = fine([50, 50])
    table["rows"] = [table["rows"][0], table["rows"][3], table["rows"][6], table["rows"][8]]
    assert [round(x.some_pct) for x in profile.per_second(profile.rows_of(table))] == [50, 50]
    # a gap of more than 2 s between samples (the driver itself stalled) is left out
    table = fine([50, 50, 50, 50])
    table["rows"] = table["rows"][:2] + table["rows"][12:]
    assert [x.t for x in profile.per_second(profile.rows_of(table))] == [3]
    assert profile.per_second([]) == []
    with pytest.raises(ValueError, match="row 0 has 1 values for 15 columns"):
        profile.rows_of({"columns": table["columns"], "rows": [[1]]})


def test_longest_run_and_windows() -> None:
    secs = profile.per_second(profile.rows_of(fine([30, 30, 5, 60, 60, 60, 20, 90])))
    assert profile.longest_run(secs, 25) == (3, 3)
    assert profile.longest_run(secs, 50) == (3, 3)
    assert profile.longest_run(secs, 95) == (0, None)
    assert profile.longest_run(secs, 25, full=True) == (3, 3)  # full is half of some
    assert profile.longest_run(secs, 10) == (5, 3)
    # a missing second breaks a run
    gap = [s for s in secs if s.t != 4]
    assert profile.longest_run(gap, 50) == (1, 3)
    assert profile.worst_window(secs, 3) == (60.0, 3)
    assert profile.worst_window(secs, 20) == (0.0, None)
    summary = profile.summarize(secs)
    assert summary["longest_some_25"] == [3, 3]
    assert summary["mean_some_pct"] == round(355 / 8, 1)
    assert (summary["first_some_10"], summary["last_some_10"]) == (0, 7)
    assert summary["longest_some_25_swapin"] == [0, None]
    thrash = profile.per_second(profile.rows_of(fine([30, 60, 60], swapin_pages=512)))
    assert profile.longest_run(thrash, 25, min_swapin=2.0) == (3, 0)
    assert profile.longest_run(thrash, 25, min_swapin=2.5) == (0, None)
    assert profile.summarize(thrash)["longest_some_25_swapin"] == [3, 0]
    assert summary["stalled_25_seconds"] == 6
    assert summary["swapin_total_mib"] == 0


def test_profile_render_and_main(tmp_path: Any) -> None:
    r = scenario1_ok(scenario=3, daemon="none", samples=fine([0, 40, 40]), mem_total_kib=1 << 20)
    r["processes"][1]["t_exit_s"] = 1.5
    text = profile.render(r)
    assert "longest run of some >= 25%: 2 s from 1 s" in text
    assert "tail died (signal 15)" in text
    assert profile.events(r) == [(1.5, "tail died (signal 15)")]
    with pytest.raises(ValueError, match="no fine samples"):
        profile.render(scenario1_ok())
    good = tmp_path / "result.json"
    good.write_text(json.dumps(r))
    assert profile.main([str(good)]) == 0
    assert profile.main([str(tmp_path / "missing.json")]) == 2
    (tmp_path / "old.json").write_text(json.dumps(scenario1_ok()))
    assert profile.main([str(tmp_path / "old.json")]) == 2


def test_absorb_refuses_hot_part_larger_than_total() -> None:
    with pytest.raises(ValueError, match="--hot-mib 5 exceeds --mib 4"):
        workloads.main(["absorb", "--mib", "4", "--hot-mib", "5", "--done", "/nonexistent"])


# --- repeated runs -------------------------------------------------------------


def save_run(results: Any, daemon: str, sid: int, run: int, r: dict[str, Any] | None,
             exit_code: int | None = 0) -> None:
    d = results / daemon / f"s{sid}"
    if run:
        d = d / f"r{run}"
    d.mkdir(parents=True, exist_ok=True)
    if r is not None:
        (d / "result.json").write_text(json.dumps(r))
    (d / "vm.json").write_text(json.dumps({"exit_code": exit_code, "seconds": 50.0}))


def test_runs_layout_and_from_results(tmp_path: Any) -> None:
    results = str(tmp_path)
    assert runner.saved_runs(results, "bustd", 1) == []
    assert runner.run_dir(results, "bustd", 1, 2) == f"{results}/bustd/s1/r2"
    save_run(tmp_path, "bustd", 1, 1, scenario1_ok())
    save_run(tmp_path, "bustd", 1, 2, None)  # the guest wrote nothing
    save_run(tmp_path, "bustd", 1, 10, scenario1_ok(), exit_code=1)
    assert runner.saved_runs(results, "bustd", 1) == [1, 2, 10]
    outcomes = runner.load_outcomes(SCEN, "bustd", results)
    assert [(o.run, o.failed) for o in outcomes] == [
        (1, ()),
        (2, ("no result.json (guest crashed or VM timed out)",)),
        (10, ("VM exited with code 1",)),
    ]
    assert "PASS scenario 1 (fast allocation, no swap) [bustd] run 1:" in runner.describe(
        outcomes[0]
    )
    # the layout before --runs is read as run 0
    save_run(tmp_path, "earlyoom", 1, 0, scenario1_ok(), exit_code=None)
    (old,) = runner.load_outcomes(SCEN, "earlyoom", results)
    assert (old.run, old.failed[0]) == (0, "VM killed after 50 s")
    # never run: one failed outcome, so the report shows the gap
    (gap,) = runner.load_outcomes(SCEN, "nohang", results)
    assert gap.failed and gap.result is None


def test_report_shows_every_run_and_ranges(tmp_path: Any) -> None:
    fast, slow = scenario1_ok(), scenario1_ok(psi_full_ms=2500)
    slow["processes"][1]["t_exit_s"] = 9.25
    fast["psi_full_ms"] = 500
    outcomes = [
        runner.Outcome(SCEN, "bustd", fast, (), 50.0, "", 1),
        runner.Outcome(SCEN, "bustd", slow, (), 50.0, "", 2),
        runner.Outcome(SCEN, "bustd", None, ("no result.json (guest crashed or VM timed out)",),
                       50.0, "", 3),
    ]
    text = reporting.render(outcomes, "cmd", "env")
    assert (
        "| 1 | bustd | **2/3** | 3.5-9.2 s | 1 | 0.5-2.5 s | - | - | "
        "no result.json (guest crashed or VM timed out) (1/3) |"
    ) in text
    assert "| 1 | bustd | 1 | PASS | 3.5 s |" in text
    assert "| 1 | bustd | 2 | PASS | 9.2 s |" in text
    assert "| 1 | bustd | 3 | **FAIL** | - |" in text
    assert reporting.span([], ".1f", "s") == "-"
    assert reporting.span([2.0, 2.0], ".1f", "s") == "2.0 s"


def test_control_rows_are_named_and_checked() -> None:
    assert reporting.parse_controls(["bustd-oom_score=6,7"]) == [("bustd-oom_score", [6, 7])]
    for bad in ("bustd-oom_score", "frob=6", "bustd-oom_score=99"):
        with pytest.raises(ValueError):
            reporting.parse_controls([bad])
    outcomes = [runner.Outcome(SCEN, "bustd-oom_score", scenario1_ok(), (), 50.0, "", 1)]
    text = reporting.render(outcomes, "cmd", "env", [("bustd-oom_score", [1])])
    assert ("- bustd-oom_score (`python3 -m bustd --rank oom_score`): scenario(s) 1"
            in text)
    assert "| 1 | bustd-oom_score | 1 | PASS |" in text
    assert reporting.main(["--from-results", "--control", "frob=6"]) == 2


def test_bustd_ready_pattern_matches_its_start_line_only() -> None:
    import re

    pattern = daemons.DAEMONS["bustd"].ready_pattern
    start = ("bustd 0.1.0 (pid 251) watching /proc: SIGTERM at MemAvailable <= 95.8 MiB and "
             "SwapFree <= 204.8 MiB; ...\n")
    assert re.search(pattern, "warning: mlockall failed\n" + start, re.M)
    assert not re.search(pattern, "warning: cannot set own oom_score_adj\n", re.M)
    assert not re.search(pattern, "warning: kill: pid=3 name=bustd watching\n", re.M)
    assert daemons.DAEMONS["earlyoom"].ready_pattern == ""


def test_zram_note_says_why_bustd_acted() -> None:
    thrash = scenario1_ok()
    thrash["daemon_log_tail"] = ("warning: kill: pid=9 name=thrash ... reason: memory some stall "
                                 "80% >= 25% and swap-in 20.1 MiB/s for 8.0 s with ...\n")
    leak = scenario1_ok()
    leak["daemon_log_tail"] = "warning: kill: pid=9 name=leak ... reason: MemAvailable 0 KiB\n"
    calm = result(proc("bystander", "bystander", 1), proc("absorb", "load", 2), PROBE)
    calm["daemon_log_tail"] = "bustd 0.1.0 (pid 3) watching /proc: ...\n"
    zram = scenarios.SCENARIOS[3]
    text = " ".join(reporting.zram_note([
        runner.Outcome(zram, "bustd", thrash, (), 50.0, "", 1),
        runner.Outcome(zram, "bustd", leak, (), 50.0, "", 2),
        runner.Outcome(zram, "bustd", calm, (), 50.0, "", 3),
        runner.Outcome(zram, "earlyoom", leak, (), 50.0, "", 1)]))
    assert "scenario 3 run 1: thrashing (stall with swap-ins), first kill after" in text
    assert "scenario 3 run 2: memory and zram's worth exhausted, first kill after" in text
    assert "scenario 3 run 3: no kill, at most" in text
    assert text.count("scenario 3 run") == 3  # bustd's runs only
    assert reporting.zram_note([runner.Outcome(SCEN, "bustd", thrash, (), 50.0, "", 1)]) == []


def test_only_saved_leaves_out_rows_never_run_and_names_them(tmp_path: Any) -> None:
    save_run(tmp_path, "bustd", 1, 1, scenario1_ok())
    out = tmp_path / "report.md"
    args = ["--from-results", "--scenarios", "1", "--daemons", "nohang,bustd",
            "--results", str(tmp_path), "--out", str(out)]
    assert reporting.main([*args, "--only-saved"]) == 0
    text = out.read_text()
    assert "| 1 | bustd | 1/1 |" in text and "| 1 | nohang |" not in text
    assert "Not run, so left out of the tables (`--only-saved`): nohang in scenario 1." in text
    assert reporting.main(args) == 0  # without it the gap is a failed row, as before
    assert "| 1 | nohang | **0/1** |" in out.read_text()
    assert reporting.main(["--only-saved", "--scenarios", "1", "--out", str(out)]) == 2
