"""The kill path driven alone: an Emergency on a fake /proc tree, no Monitor (issue 16, R1).

Each test builds the Emergency with what the Monitor would give it (the
Config, the tree, the log, the clock, an ``emit`` collecting the records)
and hands it readings as the Monitor does per check.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from bustd import kill
from bustd.config import Config
from bustd.decide import DRY_RUN_PAUSE, NO_VICTIM_PAUSE, Decision, Stall, decide
from bustd.emergency import Acted, Emergency, Wakeup
from bustd.meminfo import MemInfo, read_meminfo
from bustd.procfs import ProcFS
from tests.fakeproc import PAGE_KIB
from tests.unit.monitor_env import SELF, Env, P, env, no_signals

TYPE_CHECKING = False
if TYPE_CHECKING:
    from bustd.outputs import Record

__all__ = ["env", "no_signals"]  # fixtures, used by name

NO_STALL = Stall(None, 0.0, None)


def guard(output: Any, record: Record, *more: object) -> None:
    output(record, *more)


class Setup:
    """An Emergency on ``env``'s tree, the records it emitted and the pre-kill calls."""

    def __init__(self, env: Env, **settings: object) -> None:
        self.env = env
        self.cfg = Config(proc_root=env.fake.root, report=0.0, **settings)
        self.records: list[Record] = []
        self.pre_kill: list[Any] = []
        self.e = Emergency(self.cfg, ProcFS(env.fake.root), env.out.log, env.clock, env.clock,
                           SELF, self.records.append, self.pre_kill, guard)

    def mem(self) -> MemInfo:
        fd = self.e.fs.open("meminfo")
        try:
            return read_meminfo(fd)
        finally:
            os.close(fd)

    def read(self) -> tuple[MemInfo, MemInfo]:
        mem = self.mem()
        return mem, mem

    def act(self, decision: Decision | None = None) -> Acted:
        mem = self.mem()
        decision = decision or decide(mem, None, self.cfg)
        assert decision is not None
        cands = self.e.sample(self.env.clock.now)
        return self.e.act(decision, NO_STALL, cands, mem, [],
                          Wakeup(self.env.clock.now, "timer", -1), self.read)


class FakeKill:
    """Stands in for kill.signal_targets; signals nothing. ``states``: PID -> end state."""

    def __init__(self, states: dict[int, str] | None = None) -> None:
        self.states = states or {}
        self.calls: list[int] = []

    def __call__(self, fs: ProcFS, targets: list[kill.Target], first: int, grace: float,
                 clock: object) -> kill.Outcome:
        self.calls.append(targets[0].pid)
        for t in targets:
            t.state = self.states.get(t.pid, kill.EXITED)
            if t.state != kill.EXITED:
                t.why = "pidfd_send_signal: Operation not permitted"
        sent = any(t.state == kill.EXITED for t in targets)
        return kill.Outcome(list(targets), first if sent else 0, 0.1)


def populate(env: Env) -> None:
    env.fake.add(1, b"init", oom_score=2000)
    env.fake.add(SELF, b"python3", oom_score=1500)
    env.fake.add(P, b"small", oom_score=200, rss_kib=10 * PAGE_KIB)
    env.fake.add(P + 1, b"hog", oom_score=900, rss_kib=1000 * PAGE_KIB)


def test_a_dry_run_on_a_fake_tree_records_the_kill_it_would_make(env: Env) -> None:
    populate(env)
    s = Setup(env)
    assert not s.e.may_signal  # a fake tree is never signalled, whatever the Config says
    env.set_mem(3, 0)
    acted = s.act()
    assert (acted.pause, acted.signalled) == (DRY_RUN_PAUSE, False)
    (record,) = s.records
    assert record.kind == "kill" and record.dry_run and record.pid == P + 1
    assert record.woken_by == "timer"
    assert [c.pid for c in record.runners_up] == [P]
    assert s.e.kills == 0 and s.e.last_act == env.clock.now


def test_a_refused_victim_is_passed_over_and_the_next_one_signalled(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(env)
    fake = FakeKill({P + 1: kill.REFUSED})
    monkeypatch.setattr(kill, "signal_targets", fake)
    s = Setup(env)
    s.e.may_signal = True  # as if live: the fake kill is all that can be reached
    env.set_mem(3, 0)
    ran: list[int] = []
    s.pre_kill.append(lambda record, pending: ran.append(record.pid))
    acted = s.act()
    assert (acted.pause, acted.signalled) == (0.0, True)
    assert fake.calls == [P + 1, P] and ran == [P + 1, P]
    assert s.e.refused == {(P + 1, 1000)}
    assert s.e.kills == 1 and s.e.last_act == env.clock.now
    assert s.records == []  # the kill's record waits for its memory to be measured
    assert len(s.e.progress.followed) == 1
    assert env.out.count(f"cannot signal pid={P + 1}") == 1
    env.clock.now += 1
    assert [c.pid for c in s.e.sample(env.clock.now)] == [P]  # never chosen again


def test_nothing_sent_is_not_signalled(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(env)
    monkeypatch.setattr(kill, "signal_targets", FakeKill({P + 1: kill.GONE}))
    s = Setup(env)
    s.e.may_signal = True
    env.set_mem(3, 0)
    acted = s.act()
    assert (acted.pause, acted.signalled) == (0.0, False)  # gone: decide again at once
    assert s.e.kills == 0 and s.e.last_act == -1e9


def test_memory_back_before_the_signal_means_no_kill(env: Env) -> None:
    populate(env)
    s = Setup(env)
    env.set_mem(3, 0)
    decision = decide(s.mem(), None, s.cfg)
    env.set_mem(50, 50)  # read again after the scan: recovered
    acted = s.act(decision)
    assert (acted.pause, acted.signalled) == (0.0, False)
    assert s.records == [] and env.out.count("memory recovered before the kill") == 1


def test_no_victim_is_said_once_per_emergency(env: Env) -> None:
    env.fake.add(SELF, b"python3", oom_score=1500)
    s = Setup(env)
    env.set_mem(3, 0)
    assert s.act().pause == NO_VICTIM_PAUSE
    assert s.act().pause == NO_VICTIM_PAUSE
    assert env.out.count("but no process may be killed") == 1
    s.e.calm()  # a check without a decision: said again next time
    s.act()
    assert env.out.count("but no process may be killed") == 2


def test_reconfigure_rebuilds_the_rules_and_keeps_a_fake_tree_dry(env: Env) -> None:
    populate(env)
    s = Setup(env)
    rules = s.e.rules
    s.e.reconfigure(s.cfg.replace(grace=1.0))
    assert s.e.rules is rules  # nothing the rules are made of changed
    s.e.reconfigure(s.cfg.replace(unkillables="hog", dry_run=False))
    assert s.e.rules is not rules and not s.e.may_signal


def test_wakeup_and_acted_are_frozen() -> None:
    w, a = Wakeup(1.0, "PSI trigger", 3), Acted(0.5, signalled=True)
    assert (w.at, w.by, w.faults, a.pause, a.signalled) == (1.0, "PSI trigger", 3, 0.5, True)
    with pytest.raises(AttributeError):
        w.at = 2.0
    with pytest.raises(AttributeError):
        a.signalled = False
