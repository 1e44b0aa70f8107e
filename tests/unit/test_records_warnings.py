"""Monitor's records to its outputs, and the warning policy (issue 8), on fake trees.

Every output receives every record: a KillRecord after the (dry-run) kill, a
WarnRecord when a kill may come, a CheckRecord at the end of every check. The
warning is a pure function of one reading, proved both ways; the Monitor
says it once and again only after memory has recovered.
"""

from __future__ import annotations

from typing import Any

import pytest

from bustd.config import Config
from bustd.decide import warning, watch_level
from bustd.emergency import WARN_EVERY
from bustd.meminfo import MemInfo
from bustd.monitor import Monitor
from bustd.outputs import CheckRecord
from bustd.procfs import BackgroundRead
from bustd.record import KillRecord, WarnRecord, warn_line
from tests.fakeproc import PAGE_KIB
from tests.unit.monitor_env import SWAP, TOTAL, Env, P, env, no_signals

__all__ = ["env", "no_signals"]  # fixtures, used by name

GIB = 1 << 20


def mem(avail_pct: float, swap_pct: float = 0.0, swap_total: int = SWAP) -> MemInfo:
    return MemInfo(TOTAL, int(TOTAL * avail_pct / 100), swap_total,
                   int(swap_total * swap_pct / 100))


# -- the pure policy ---------------------------------------------------------

@pytest.mark.parametrize(("avail", "swap", "cause"), [
    (19.9, 19.9, "memory"),      # both under 20 %
    (12.0, 0.0, "memory"),
    (20.0, 20.0, "memory"),      # at the level counts
])
def test_memory_warning_when_memory_and_swap_are_at_the_level(avail: float, swap: float,
                                                              cause: str) -> None:
    found = warning(mem(avail, swap), None, Config(warn_percent=20))
    assert found is not None and found.cause == cause and found.signal == 0
    assert found.reason.startswith("MemAvailable ")


@pytest.mark.parametrize(("avail", "swap"), [
    (21.0, 0.0),    # memory above the level
    (10.0, 50.0),   # plenty of swap left: no kill is near either
    (90.0, 90.0),
])
def test_no_memory_warning_above_the_level(avail: float, swap: float) -> None:
    assert warning(mem(avail, swap), None, Config(warn_percent=20)) is None


def test_no_warning_when_off_whatever_the_reading() -> None:
    assert warning(mem(1, 0), 99.0, Config()) is None  # --warn defaults to 0: off


def test_no_swap_counts_as_none_free_for_warnings_too() -> None:
    assert warning(mem(15, 0, swap_total=0), None, Config(warn_percent=20)) is not None


def test_warning_level_below_the_kill_level_still_warns_at_the_kill_level() -> None:
    # --warn 3 with SIGTERM at 10 %: the warning level is never under the kill's.
    assert warning(mem(9.5, 0), None, Config(warn_percent=3)) is not None


@pytest.mark.parametrize(("stall", "avail", "expected"), [
    (12.5, 14.0, True),    # half the 25 % cutoff, under --psi-mem 15
    (24.0, 14.0, True),
    (12.0, 14.0, False),   # under half the cutoff
    (80.0, 16.0, False),   # memory above --psi-mem: pressure cannot kill there
    (None, 14.0, False),   # not measured
])
def test_pressure_warning_approaching_the_cutoff(stall: float | None, avail: float,
                                                 expected: bool) -> None:
    cfg = Config(warn_percent=5)  # memory warning off at 14 %: only pressure can warn
    found = warning(mem(avail, 80), stall, cfg)
    assert (found is not None) == expected
    if found is not None:
        assert found.cause == "pressure" and "the cutoff is 25%" in found.reason


def test_pressure_warning_off_with_psi_off() -> None:
    assert warning(mem(14, 80), 90.0, Config(warn_percent=5, psi_cutoff=0)) is None


def test_watch_zone_covers_the_warning_level() -> None:
    m = mem(50)
    assert watch_level(Config(warn_percent=40), m) == TOTAL * 0.40
    assert watch_level(Config(warn_percent=10), m) == TOTAL * 0.25  # --watch 25 is higher


# -- the Monitor: records to outputs -----------------------------------------

def populate(env: Env) -> None:
    env.fake.add(P, b"small", oom_score=200, rss_kib=10 * PAGE_KIB)
    env.fake.add(P + 1, b"$(touch pwned)", oom_score=900, uid=4321, rss_kib=1000 * PAGE_KIB)
    env.fake.add(P + 2, b"other", oom_score=500, rss_kib=100 * PAGE_KIB)


def collect(m: Monitor) -> list[Any]:
    got: list[Any] = []
    m.outputs.append(got.append)
    return got


def of(kind: str, records: list[Any]) -> list[Any]:
    return [r for r in records if r.kind == kind]


def test_every_check_emits_a_check_record(env: Env) -> None:
    m = env.monitor()
    got = collect(m)
    env.set_mem(50, 50)
    m.check()
    env.clock.now += 1
    m.check()
    checks = of("check", got)
    assert len(checks) == 2 and len(got) == 2
    assert all(isinstance(c, CheckRecord) for c in checks)
    assert checks[0].mem.available == TOTAL // 2 and checks[0].watching is False
    assert checks[1].now == env.clock.now and checks[1].kills == 0 and checks[1].dying == 0


def test_kill_record_reaches_every_output_before_the_check_record(env: Env) -> None:
    populate(env)
    m = env.monitor()
    got = collect(m)
    env.set_mem(4, 0)
    m.check()
    assert [r.kind for r in got] == ["kill", "check"]
    record = got[0]
    assert isinstance(record, KillRecord)
    assert record.pid == P + 1 and record.comm == b"$(touch pwned)" and record.dry_run
    assert record.cause == "memory" and record.uid == 4321
    assert got[1].watching and got[1].scan_s >= 0


def test_pressure_kill_record_says_pressure(env: Env) -> None:
    populate(env)
    m = env.monitor(psi_duration=0)
    got = collect(m)
    env.set_mem(12, 0)  # under --psi-mem 15, above SIGTERM's 10
    m.check()
    env.clock.now += 1.0
    env.psi["some"] += 900_000  # 90 % of the last second stalled
    env.fake.set_pressure(env.psi["some"], env.psi["full"])
    m.check()
    kills = of("kill", got)
    assert len(kills) == 1 and kills[0].cause == "pressure", env.out.lines()


def test_failing_output_is_logged_and_the_others_still_run(env: Env) -> None:
    populate(env)
    m = env.monitor()

    def broken(record: object) -> None:
        raise OSError(28, "No space left on device")

    m.outputs.insert(1, broken)
    got = collect(m)
    env.set_mem(4, 0)
    m.check()  # never raises
    assert [r.kind for r in got] == ["kill", "check"]
    assert env.out.count("would kill") == 1  # the log line, the first output, ran
    errors = [line for line in env.out.lines() if "failed on a" in line]
    assert len(errors) == 2, env.out.lines()
    assert errors[0].startswith("error: test_failing_output_is_logged_and_the_others_still_run."
                                "<locals>.broken failed on a kill record: OSError:")


def test_pre_kill_callables_see_the_record_before_any_output(env: Env) -> None:
    populate(env)
    m = env.monitor()
    order: list[str] = []
    def pre(r: KillRecord, cmdline: BackgroundRead) -> None:
        order.append(f"pre {r.pid} {r.signal} {cmdline.result(5)!r}")

    m.pre_kill.append(pre)
    m.outputs.append(lambda r: order.append(r.kind))
    env.set_mem(4, 0)
    m.check()
    cmdline = b"/usr/bin/$(touch pwned)\0"  # the fake tree's argv
    assert order == [f"pre {P + 1} 9 {cmdline!r}", "kill", "check"]


def test_max_sleep_caps_the_sleep_between_checks(env: Env) -> None:
    m = env.monitor()
    env.set_mem(90, 90)
    assert m.check() > 0.5  # plenty of headroom
    m.max_sleep = 0.5
    assert m.check() == 0.5


def test_warning_names_the_likely_victim_once_until_memory_recovers(env: Env) -> None:
    populate(env)
    m = env.monitor(warn_percent=20)
    got = collect(m)
    env.set_mem(15, 0)  # under 20 %, above the SIGTERM level (10 %)
    m.check()
    warns = of("warn", got)
    assert len(warns) == 1 and not of("kill", got)
    w = warns[0]
    assert isinstance(w, WarnRecord)
    assert w.cause == "memory" and w.victim is not None and w.victim.pid == P + 1
    assert w.uid == 4321 and w.exe == b"/usr/bin/$(touch pwned)"
    assert [c.pid for c in w.runners_up] == [P + 2, P]
    line = next(x for x in env.out.lines() if "memory warning" in x)
    assert line == "warning: " + warn_line(w)
    assert f"likely victim: pid={P + 1} name=$(touch pwned) exe=/usr/bin/$(touch pwned) " \
           "uid=4321 " in line
    for _ in range(5):  # still short: no more warnings
        env.clock.now += 1
        m.check()
    assert len(of("warn", got)) == 1
    env.set_mem(60, 60)  # recovered: the watch zone is left
    env.clock.now += 1
    m.check()
    env.set_mem(15, 0)
    env.clock.now += 1
    m.check()
    assert len(of("warn", got)) == 1  # recovered, but less than WARN_EVERY since the last
    env.set_mem(60, 60)
    env.clock.now += WARN_EVERY
    m.check()
    env.set_mem(15, 0)
    env.clock.now += 1
    m.check()
    assert len(of("warn", got)) == 2
    for _ in range(5):  # short for minutes without a recovery: said once
        env.clock.now += WARN_EVERY
        m.check()
    assert len(of("warn", got)) == 2


def test_no_warning_when_a_kill_is_decided(env: Env) -> None:
    populate(env)
    m = env.monitor(warn_percent=20)
    got = collect(m)
    env.set_mem(4, 0)
    m.check()
    assert [r.kind for r in got] == ["kill", "check"]


def test_warning_with_nothing_killable_says_so(env: Env) -> None:
    env.fake.add(P, b"guarded", oom_score=900, oom_score_adj=-1000)
    m = env.monitor(warn_percent=20)
    got = collect(m)
    env.set_mem(15, 0)
    m.check()
    (w,) = of("warn", got)
    assert w.victim is None and w.uid == -1
    assert warn_line(w).endswith("no process may be killed")


def test_no_warning_and_no_extra_records_without_warn(env: Env) -> None:
    populate(env)
    m = env.monitor()
    got = collect(m)
    env.set_mem(15, 0)
    m.check()
    assert [r.kind for r in got] == ["check"]

