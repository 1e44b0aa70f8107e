"""Monitor.check() on fake /proc trees with a simulated clock (never live).

The Config's proc_root is the fake tree, so the Monitor is not live: it may
only log dry-run kill lines. As a second guard, every way to signal a process
is replaced by a function that fails the test, and all PIDs are above the
kernel's PID_MAX_LIMIT.
"""

from __future__ import annotations

import _thread
import os
import select
import signal
from typing import Any

import pytest

from bustd import kill
from bustd.choose import find_victim, make_rules
from bustd.config import Config
from bustd.decide import DRY_RUN_PAUSE, NO_VICTIM_PAUSE
from bustd.monitor import Monitor
from bustd.procfs import BackgroundRead, ProcFS
from tests.fakeproc import PAGE_KIB, FakeProc
from tests.unit.monitor_env import (
    SELF,
    SWAP,
    TOTAL,
    Env,
    P,
    emergency,
    env,
    never_wait,
    no_signals,
)

__all__ = ["env", "no_signals"]  # fixtures, used by name


def populate(fake: FakeProc) -> None:
    fake.add(1, b"init", oom_score=2000)                # PID 1: never
    fake.add(SELF, b"python3", oom_score=1500)         # bustd itself: never
    fake.add(P, b"small", oom_score=200, rss_kib=10 * PAGE_KIB)
    fake.add(P + 1, b"hog", oom_score=900, uid=1234, rss_kib=1000 * PAGE_KIB)
    fake.add(P + 2, b"guarded", oom_score=1200, oom_score_adj=-1000)
    fake.add(P + 3, b"kthread", oom_score=1300, flags=0x00200040)
    fake.add(P + 4, b"zombie", oom_score=1400, state=b"Z")


KILL_LINE = "dry run: would kill"


def test_dry_run_kill_line_names_the_right_victim(env: Env) -> None:
    populate(env.fake)
    m = env.monitor()
    assert env.out.lines() == []
    env.set_mem(4, 0)
    pause = m.check()
    lines = env.out.lines()
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith(f"warning: {KILL_LINE} pid={P + 1} name=hog exe=/usr/bin/hog "
                           "uid=1234 ")
    assert (f"frees={1000 * PAGE_KIB / 1024:.1f} MiB (rss={1000 * PAGE_KIB / 1024:.1f} MiB "
            "swap=0 KiB shmem=0 KiB file=0 KiB) growth=? ") in line
    assert ("oom_score=900 oom_score_adj=0 score=900 (growth) with SIGKILL: MemAvailable"
            in line)
    assert f"; runners-up: pid={P} name=small frees=" in line
    assert line.endswith("; cmdline=/usr/bin/hog")
    assert pause >= DRY_RUN_PAUSE
    assert m.kills == 0
    assert emergency(m).last_act == env.clock.now


def test_term_level_gives_sigterm(env: Env) -> None:
    populate(env.fake)
    m = env.monitor()
    env.set_mem(8, 9)
    m.check()
    (line,) = env.out.lines()
    assert f"pid={P + 1} " in line and "with SIGTERM: MemAvailable" in line


def test_dry_run_flag_not_needed_for_fake_root(env: Env) -> None:
    populate(env.fake)
    m = env.monitor(dry_run=False)
    env.set_mem(1, 0)
    m.check()  # signal_and_wait is patched to fail: only a dry run passes
    assert env.out.count(KILL_LINE) == 1


def test_nothing_logged_when_memory_is_fine(env: Env) -> None:
    populate(env.fake)
    m = env.monitor(verbose=True)
    for avail, swap in ((50, 50), (9, 50), (50, 0), (10.5, 10.5)):
        env.set_mem(avail, swap)
        pause = m.check()
        assert 0.1 <= pause <= 1.0
        env.clock.now += pause
    assert env.out.lines() == []


def test_after_recovery_no_further_kill(env: Env) -> None:
    populate(env.fake)
    m = env.monitor()
    env.set_mem(3, 0)
    m.check()
    assert env.out.count(KILL_LINE) == 1
    env.fake.remove(P + 1)  # the victim died, memory came back
    env.set_mem(40, 0)
    for _ in range(5):
        env.clock.now += m.check()
    assert env.out.count(KILL_LINE) == 1
    # A new emergency: the next victim.
    env.set_mem(3, 0)
    m.check()
    assert env.out.count(KILL_LINE) == 2
    assert f"pid={P} name=small" in env.out.lines()[-1]


def test_no_killable_process_warns_once_per_emergency(env: Env) -> None:
    env.fake.add(1, b"init")
    env.fake.add(P, b"sshd", oom_score_adj=-1000)
    # A name protects only a root-owned executable in root-owned folders: a real one.
    env.fake.add(P + 1, b"Xorg", exe=b"/usr/bin/true")
    m = env.monitor(unkillables="true")
    warning = "but no process may be killed"
    env.set_mem(2, 0)
    for _ in range(3):
        assert m.check() >= NO_VICTIM_PAUSE
        env.clock.now += 1
    assert env.out.count(warning) == 1
    assert "memory emergency (MemAvailable" in env.out.lines()[0]
    env.set_mem(60, 0)
    m.check()
    assert env.out.count(warning) == 1
    env.set_mem(2, 0)
    m.check()
    m.check()
    assert env.out.count(warning) == 2
    assert env.out.count(KILL_LINE) == 0


def test_protected_leaders_are_skipped_with_debug_lines(env: Env) -> None:
    populate(env.fake)
    m = env.monitor(verbose=True)
    env.set_mem(1, 0)
    m.check()
    lines = env.out.lines()
    assert lines[0] == (f"debug: skipping pid={P + 2} name=guarded: has oom_score_adj -1000")
    assert KILL_LINE in lines[-1] and f"pid={P + 1} " in lines[-1]


class RecoveringFS(ProcFS):
    """A tree whose memory comes back while the victim's details are read."""

    __slots__ = ("fake",)

    def __init__(self, fake: FakeProc) -> None:
        super().__init__(fake.root)
        self.fake = fake

    def read_pid(self, pid: int, name: str, size: int = 4096) -> bytes:
        if name == "oom_score_adj":  # read for the leader only, after the scan
            self.fake.set_meminfo(TOTAL, TOTAL // 2, SWAP, SWAP // 2)
        return super().read_pid(pid, name, size)


def test_memory_recovered_during_the_scan_means_no_kill(env: Env) -> None:
    populate(env.fake)
    env.set_mem(1, 0)
    cfg = Config(proc_root=env.fake.root, report=0.0)
    m = Monitor(cfg, RecoveringFS(env.fake), env.out.log, SELF, env.clock, never_wait)
    env.monitors.append(m)
    m.check()
    assert env.out.lines() == ["memory recovered before the kill: nothing done"]


def test_hostile_name_stays_on_one_line(env: Env) -> None:
    env.fake.add(P, b"evil\nkill: pid=1\x1b[2J\xff", oom_score=999)
    m = env.monitor()
    env.set_mem(1, 0)
    m.check()
    (line,) = env.out.lines()
    assert "name=evil\\nkill: pid=1\\x1b[2J\\xff exe=" in line


def test_kill_pgroup_counts_unprotected_group_members(env: Env) -> None:
    env.fake.add(P, b"make", oom_score=100, pgrp=P)
    env.fake.add(P + 1, b"cc1plus", oom_score=900, pgrp=P)
    env.fake.add(P + 2, b"cc1plus", oom_score=800, pgrp=P)
    env.fake.add(P + 3, b"sshd", oom_score=10, pgrp=P, oom_score_adj=-1000)
    env.fake.add(P + 4, b"other", oom_score=50)
    m = env.monitor(kill_pgroup=True)
    env.set_mem(1, 0)
    m.check()
    (line,) = env.out.lines()
    assert f"pid={P + 1} " in line and " with 2 more of its group with SIGKILL" in line


def test_find_victim_on_empty_tree(env: Env) -> None:
    rules = make_rules(Config(proc_root=env.fake.root), SELF)
    assert find_victim(env.fake.fs, rules) is None
    env.fake.add(P, b"x")
    victim = find_victim(env.fake.fs, rules)
    assert victim is not None and victim.candidate.pid == P and victim.group == []


def test_report_line(env: Env) -> None:
    populate(env.fake)
    cfg = Config(proc_root=env.fake.root, report=60.0)
    m = Monitor(cfg, env.fake.fs, env.out.log, SELF, env.clock, never_wait)
    env.monitors.append(m)
    assert m.check() <= 1.0
    assert env.out.lines() == []
    env.clock.now += 60
    m.check()
    (line,) = env.out.lines()
    assert line.startswith("status: MemAvailable 4.0 GiB of 8.0 GiB (50.0%), SwapFree ")
    assert line.endswith("kills 0")


# -- PSI ------------------------------------------------------------------------

def test_missing_pressure_file_warns_once_and_uses_memory_alone(env: Env) -> None:
    os.unlink(env.fake.path("pressure/memory"))
    populate(env.fake)
    m = env.monitor()
    assert m.sensors.psi_fd < 0
    (line,) = env.out.lines()
    assert line.startswith("warning: PSI not available (")
    assert line.endswith("acting on memory thresholds alone")
    env.set_mem(12, 50)  # under the PSI gate: without PSI, nothing to do
    for _ in range(5):
        env.clock.now += m.check()
    assert len(env.out.lines()) == 1
    env.set_mem(2, 0)
    m.check()
    assert env.out.count(KILL_LINE) == 1
    assert env.out.count("PSI not available") == 1
    assert "PSI off" in m.describe()


def test_garbage_pressure_file_warns_once(env: Env) -> None:
    env.fake.write("pressure/memory", b"no such thing\n")
    m = env.monitor()
    assert m.sensors.psi_fd < 0
    assert env.out.count("PSI not available (pressure: no 'some' line)") == 1


def test_psi_cutoff_zero_does_not_open_pressure(env: Env) -> None:
    os.unlink(env.fake.path("pressure/memory"))
    m = env.monitor(psi_cutoff=0.0)
    assert m.sensors.psi_fd < 0
    assert env.out.lines() == []


def test_missing_meminfo_raises(env: Env) -> None:
    os.unlink(env.fake.path("meminfo"))
    with pytest.raises(FileNotFoundError):
        env.monitor()


def run_stalled(env: Env, m: Monitor, stall_pct: float, seconds: float,
                metric: str = "some") -> None:
    """Check every 0.1 s while ``metric`` total grows at ``stall_pct`` of wall time."""
    for _ in range(round(seconds / 0.1)):
        env.clock.now += 0.1
        env.psi[metric] += round(0.1 * 1e6 * stall_pct / 100)
        env.fake.set_pressure(some_total=env.psi["some"], full_total=env.psi["full"])
        m.check()


def test_stall_under_the_gate_gives_psi_dry_run_kill(env: Env) -> None:
    populate(env.fake)
    m = env.monitor(psi_duration=0.0)
    assert m.sensors.psi_fd >= 0
    env.set_mem(12, 50, swap_total=0)  # above the TERM level, under the 15 % PSI gate
    run_stalled(env, m, 50.0, 0.2)  # less than the meter's minimum span
    assert env.out.lines() == []
    run_stalled(env, m, 50.0, 0.3)
    lines = env.out.lines()
    assert lines, "no kill despite a 50 % stall under the gate"
    assert f"{KILL_LINE} pid={P + 1} " in lines[0]
    assert "with SIGTERM: memory some stall 50% >= 25% for 0.2 s with MemAvailable" in lines[0]


def test_stall_above_the_gate_does_nothing(env: Env) -> None:
    populate(env.fake)
    m = env.monitor()
    env.set_mem(16, 50)
    run_stalled(env, m, 100.0, 3.0)
    assert env.out.lines() == []


def test_stall_below_the_cutoff_does_nothing(env: Env) -> None:
    populate(env.fake)
    m = env.monitor()
    env.set_mem(12, 50)
    run_stalled(env, m, 20.0, 3.0)
    assert env.out.lines() == []


def test_stall_follows_the_chosen_metric(env: Env) -> None:
    populate(env.fake)
    m = env.monitor(psi_metric="full", psi_duration=0.0)
    env.set_mem(12, 50)
    run_stalled(env, m, 90.0, 2.0, metric="some")
    assert env.out.lines() == []
    run_stalled(env, m, 90.0, 2.0, metric="full")
    lines = env.out.lines()
    assert lines and all("memory full stall" in line for line in lines)
    assert "memory full stall 90% >= 25%" in lines[-1]  # the meter has caught up


def test_meter_resets_when_memory_is_plentiful(env: Env) -> None:
    # Stall sampled under the gate, then memory above it: old samples are dropped,
    # so coming back under the gate needs a fresh minimum span before any kill.
    populate(env.fake)
    m = env.monitor()
    env.set_mem(12, 50)
    run_stalled(env, m, 10.0, 1.0)
    env.set_mem(50, 50)
    run_stalled(env, m, 10.0, 0.5)
    assert m.sensors.stall_meter.percent() is None
    env.set_mem(12, 50)
    run_stalled(env, m, 10.0, 0.5)
    assert m.sensors.stall_meter.percent() == pytest.approx(10.0, abs=0.1)
    assert env.out.lines() == []


def test_describe(env: Env) -> None:
    m = env.monitor()
    text = m.describe()
    assert "SIGTERM at MemAvailable <= 819.2 MiB and SwapFree <= 204.8 MiB" in text
    assert "SIGKILL at 409.6 MiB and 102.4 MiB" in text
    assert "some stall >= 25% for 5 s below 15% MemAvailable, polled" in text
    assert "watching below 2.0 GiB, ranking by growth" in text


def test_trigger_event_vouches_for_the_cutoff_unless_it_predates_the_last_act(env: Env) -> None:
    populate(env.fake)
    m = env.monitor(psi_duration=0.0)
    m.sensors.trigger_window = 2.0  # as if a kernel trigger were armed
    env.set_mem(12, 50)  # under the PSI gate
    m.check()  # first sample: the meter alone has no rate yet
    assert env.out.lines() == []
    m.load_watch_code().last_act = env.clock.now - 1.0  # a kill 1 s ago: inside the 2 s window
    m.trigger_fired = True
    env.clock.now += 0.05
    m.check()
    assert env.out.lines() == [], "an event whose window predates the kill was trusted"
    assert not m.trigger_fired  # consumed by the check
    env.clock.now += 2.0
    m.trigger_fired = True
    m.check()
    (line,) = env.out.lines()
    assert f"{KILL_LINE} pid={P + 1} " in line and "stall 25% >= 25%" in line


def test_trigger_event_above_the_gate_does_nothing(env: Env) -> None:
    populate(env.fake)
    m = env.monitor()
    m.sensors.trigger_window = 2.0
    env.set_mem(40, 50)
    m.trigger_fired = True
    m.check()
    assert env.out.lines() == []


def test_pressure_unreadable_later_warns_once_then_recovers(env: Env) -> None:
    populate(env.fake)
    m = env.monitor(psi_duration=0.0)
    env.set_mem(12, 50)
    env.fake.write("pressure/memory", b"garbage\n")
    for _ in range(5):
        env.clock.now += 0.1
        m.check()
    assert env.out.count("cannot read pressure/memory") == 1
    assert env.out.count("until it reads again") == 1
    assert m.sensors.psi_fd >= 0  # kept: the failure may be transient
    env.set_mem(2, 0)
    m.check()
    assert env.out.count(KILL_LINE) == 1  # memory thresholds alone still act
    env.set_mem(12, 50)
    run_stalled(env, m, 60.0, 0.5)  # the file reads again: PSI decides again
    assert env.out.count("pressure/memory reads again: PSI back in use") == 1
    assert "stall 60%" in env.out.lines()[-1]


# -- the loop and the real-kill branch (issue 10: every test reached only dry runs) --

class Stop(BaseException):
    """Ends Monitor.run in a test (SystemExit would do, but this cannot be mistaken)."""


def test_run_survives_any_exception_with_one_line(env: Env) -> None:
    populate(env.fake)
    m = env.monitor()
    faults: list[BaseException] = [MemoryError(), OSError(5, "EIO"), ValueError("odd"),
                                   ZeroDivisionError("x")]
    checks = 0

    def check() -> float:
        nonlocal checks
        checks += 1
        if faults:
            raise faults.pop(0)
        return 1.0

    def wait(timeout: float) -> list[tuple[int, int]]:
        assert timeout == 1.0
        if checks >= 6:
            raise Stop
        return []

    m.check = check  # type: ignore[method-assign]
    m._wait = wait
    with pytest.raises(Stop):
        m.run()
    assert checks == 6
    assert env.out.lines() == ["error: check failed: MemoryError: ",
                               "error: check failed: OSError: [Errno 5] EIO",
                               "error: check failed: ValueError: odd",
                               "error: check failed: ZeroDivisionError: x"]


def test_run_lets_system_exit_through(env: Env) -> None:
    m = env.monitor()

    def check() -> float:
        raise SystemExit(0)

    m.check = check  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        m.run()


def test_run_passes_trigger_events_to_the_next_check(env: Env) -> None:
    populate(env.fake)
    m = env.monitor()
    r, w = os.pipe()
    m.sensors.trigger_fd = r
    m._poller.register(r, select.POLLPRI)
    seen: list[bool] = []
    real_check = m.check

    def check() -> float:
        seen.append(m.trigger_fired)
        return real_check()

    events = [[(r, select.POLLPRI)], [], [(r, select.POLLERR)], []]

    def wait(timeout: float) -> list[tuple[int, int]]:
        if not events:
            raise Stop
        env.clock.now += timeout
        return events.pop(0)

    m.check = check  # type: ignore[method-assign]
    m._wait = wait
    with pytest.raises(Stop):
        m.run()
    os.close(w)
    assert seen == [False, True, False, False, False]
    assert env.out.count("PSI trigger failed: polling from now on") == 1
    assert m.sensors.trigger_fd == -1


def test_run_says_when_it_woke_late(env: Env) -> None:
    populate(env.fake)
    m = env.monitor()
    gaps = [0.0, 60.0, 0.0]

    def wait(timeout: float) -> list[tuple[int, int]]:
        if not gaps:
            raise Stop
        env.clock.now += timeout + gaps.pop(0)  # SIGSTOP for a minute, then SIGCONT
        return []

    m._wait = wait
    with pytest.raises(Stop):
        m.run()
    (line,) = env.out.lines()
    assert line.startswith("warning: woke 60.0 s later than planned")


class FakeKill:
    """Stands in for kill.signal_targets on the real-kill branch; signals nothing.

    ``states`` maps a PID to the state its target ends in (EXITED if absent).
    """

    def __init__(self, states: dict[int, str] | None = None, took: float = 0.2) -> None:
        self.states = states or {}
        self.took = took
        self.calls: list[tuple[list[tuple[int, int]], int]] = []

    def __call__(self, fs: ProcFS, targets: list[kill.Target], first: int, grace: float,
                 clock: object) -> kill.Outcome:
        self.calls.append(([(t.pid, t.starttime) for t in targets], first))
        for t in targets:
            t.state = self.states.get(t.pid, kill.EXITED)
            if t.state in (kill.GONE, kill.REFUSED, kill.FAILED):
                t.why = {kill.GONE: "exited before the signal",
                         kill.REFUSED: "pidfd_send_signal: Operation not permitted",
                         kill.FAILED: "Cannot allocate memory"}[t.state]
            if t.state == kill.DYING:
                t.fd, t.mrelease = kill.NO_PIDFD, kill.FREED
        sent = any(t.state in (kill.EXITED, kill.DYING) for t in targets)
        return kill.Outcome(list(targets), first if sent else 0, self.took)


def test_real_kill_branch_signals_once_and_resets_the_stall_meter(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(env.fake)
    fake = FakeKill()
    monkeypatch.setattr(kill, "signal_targets", fake)
    m = env.monitor(psi_duration=0.0)
    m.load_watch_code().may_signal = True  # as if live: the fake kill above is all there is
    env.set_mem(12, 50)
    for pct in (60, 60, 60):
        env.clock.now += 0.5
        env.psi["some"] += round(0.5e6 * pct / 100)
        env.fake.set_pressure(some_total=env.psi["some"], full_total=env.psi["full"])
        m.check()
        if fake.calls:
            break
    assert fake.calls == [([(P + 1, 1000)], signal.SIGTERM)]
    assert m.kills == 1 and emergency(m).last_act == env.clock.now
    assert m.sensors.stall_meter.percent() is None, "the stall meter was not reset after the kill"
    assert m.sensors.thrashing.seconds(env.clock.now) == 0.0
    # The next check does not kill again on the stall measured before the kill.
    env.clock.now += 0.1
    m.check()
    assert len(fake.calls) == 1
    # The kill line comes once its memory is measured (issue 14): here the
    # victim's 3.9 MiB came back at once.
    assert [x for x in env.out.lines() if "kill: " in x] == []
    env.free(4000)
    env.clock.now += 0.1
    m.check()
    (line,) = [x for x in env.out.lines() if "kill: " in x]
    assert line.startswith(f"warning: kill: pid={P + 1} name=hog ")
    assert ("signal=SIGTERM exited after 0.20 s; freed 3.9 MiB of the expected 3.9 MiB "
            "in 0.2 s; reaction=0 ms after timer wakeup, 0 major faults;") in line


def test_real_kill_of_a_vanished_victim_is_not_counted(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(env.fake)
    fake = FakeKill({P + 1: kill.GONE})
    monkeypatch.setattr(kill, "signal_targets", fake)
    m = env.monitor()
    m.load_watch_code().may_signal = True
    env.set_mem(3, 0)
    m.check()
    assert m.kills == 0 and len(fake.calls) == 1  # decided again at the next check
    assert env.out.count(f"not signalled: pid={P + 1}: exited before the signal") == 1


def test_refused_victim_is_passed_over_once_and_the_next_one_killed(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 10, defect 1: EPERM from the kernel (another user's process, an LSM).
    populate(env.fake)
    fake = FakeKill({P + 1: kill.REFUSED})
    monkeypatch.setattr(kill, "signal_targets", fake)
    m = env.monitor()
    m.load_watch_code().may_signal = True
    env.set_mem(3, 0)
    m.check()
    # The refusing one, then the next in the same check.
    assert [pids[0][0] for pids, _ in fake.calls] == [P + 1, P]
    assert env.out.count(f"cannot signal pid={P + 1} (pidfd_send_signal: Operation not "
                         "permitted): passing over it") == 1
    assert m.kills == 1
    env.free(40)  # the small one's 40 KiB came back: the kill helped
    env.clock.now += 1
    m.check()  # still short of memory: the refusing process is not tried again
    assert [pids[0][0] for pids, _ in fake.calls] == [P + 1, P, P]
    assert env.out.count("cannot signal") == 1


def test_failed_signal_is_retried_soon_without_passing_over(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(env.fake)
    fake = FakeKill({P + 1: kill.FAILED})
    monkeypatch.setattr(kill, "signal_targets", fake)
    m = env.monitor()
    m.load_watch_code().may_signal = True
    env.set_mem(3, 0)
    assert m.check() <= 0.2
    assert m.kills == 0 and [pids[0][0] for pids, _ in fake.calls] == [P + 1]
    fake.states = {}
    env.clock.now += 0.1
    m.check()
    assert m.kills == 1 and [pids[0][0] for pids, _ in fake.calls] == [P + 1, P + 1]


def test_victim_alive_after_sigkill_is_remembered_not_chosen_again(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 10, defect 2: a frozen victim survives SIGKILL; bustd must neither
    # block on it nor pick it again while it dies, and must move on.
    populate(env.fake)
    fake = FakeKill({P + 1: kill.DYING})
    monkeypatch.setattr(kill, "signal_targets", fake)
    monkeypatch.setattr(kill, "exited", lambda fs, t: not os.path.exists(
        env.fake.path(str(t.pid))))
    m = env.monitor()
    m.load_watch_code().may_signal = True
    env.set_mem(3, 0)
    m.check()
    assert list(emergency(m).dying) == [(P + 1, 1000)]
    env.free(4000)  # process_mrelease gave its memory back
    env.clock.now += 1
    m.check()  # memory still short: the next victim, not the dying one again
    (line,) = [x for x in env.out.lines() if "kill: " in x]
    assert "still alive after 0.20 s (memory released)" in line
    assert [pids[0][0] for pids, _ in fake.calls] == [P + 1, P]
    assert m.kills == 2
    env.fake.remove(P + 1)  # thawed at last, and gone
    env.clock.now += 1
    m.check()
    assert emergency(m).dying == {}


def test_stop_during_a_kill_waits_for_its_record(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # SIGTERM to bustd while it is killing: the kill is finished and logged first.
    populate(env.fake)
    m = env.monitor()
    m.load_watch_code().may_signal = True
    inner = FakeKill()

    def signal_targets(*args: Any) -> kill.Outcome:
        m.stop()  # as the SIGTERM handler would, in the middle of the kill
        return inner(*args)

    monkeypatch.setattr(kill, "signal_targets", signal_targets)
    env.set_mem(3, 0)

    def wait(timeout: float) -> list[tuple[int, int]]:
        raise AssertionError("the loop slept instead of stopping")

    m._wait = wait
    with pytest.raises(SystemExit):
        m.run()
    assert env.out.count("kill: pid=") == 1 and m.kills == 1
    with pytest.raises(SystemExit):
        m.stop()  # outside a kill: at once


def test_refusing_processes_are_forgotten_once_gone(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # A non-root bustd beside churning processes of other users: the set of
    # refusing processes must not grow for ever (found by the soak).
    populate(env.fake)
    monkeypatch.setattr(kill, "signal_targets", FakeKill({P + 1: kill.REFUSED}))
    m = env.monitor()
    m.load_watch_code().may_signal = True
    env.set_mem(3, 0)
    m.check()
    assert emergency(m).refused == {(P + 1, 1000)}
    env.fake.remove(P + 1)
    env.fake.add(P + 1, b"newcomer", starttime=2000)  # the PID reused
    env.clock.now += 1
    m.check()
    assert (P + 1, 1000) not in emergency(m).refused


def test_one_cmdline_read_at_a_time(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(env.fake)
    m = env.monitor()
    started: list[int] = []

    class Hanging(BackgroundRead):
        def __init__(self, path: str, size: int) -> None:  # never reads: hangs for ever
            started.append(1)
            self.data = None
            self._done = _thread.allocate_lock()
            self._done.acquire()

    monkeypatch.setattr(ProcFS, "read_pid_later",
                        lambda self, pid, name, size=4096: Hanging("", 0))
    env.set_mem(3, 0)
    for _ in range(5):  # a dry run decides every second on the same victim
        env.clock.now += 1
        m.check()
    assert len(started) == 2  # the rehearsal's (bustd itself), then one for the victim
    assert env.out.count("cmdline=(not read in time)") == 5
    env.fake.remove(P + 1)
    env.clock.now += 1
    m.check()
    assert len(started) == 2  # none started while one hangs


def test_meminfo_failing_transiently_is_one_line_and_the_next_check_works(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    import bustd.sensors as sensors_module

    populate(env.fake)
    m = env.monitor()
    real = getattr(sensors_module, "read_meminfo")  # noqa: B009 - not in __all__
    failures = [OSError(12, "Cannot allocate memory")]

    def flaky(fd: int) -> Any:
        if failures:
            raise failures.pop()
        return real(fd)

    monkeypatch.setattr(sensors_module, "read_meminfo", flaky)
    env.set_mem(3, 0)
    waits: list[float] = []

    def wait(timeout: float) -> list[tuple[int, int]]:
        waits.append(timeout)
        if len(waits) == 2:
            raise Stop
        env.clock.now += timeout
        return []

    m._wait = wait
    with pytest.raises(Stop):
        m.run()
    lines = env.out.lines()
    assert lines[0] == "error: check failed: OSError: [Errno 12] Cannot allocate memory"
    assert waits[0] == NO_VICTIM_PAUSE  # retried within a second
    assert env.out.count(KILL_LINE) == 1  # the next check decided as usual
