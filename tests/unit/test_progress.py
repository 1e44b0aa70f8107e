"""Kill only while it helps (issue 14): simulated histories of kills and readings.

The pure rules of progress.py first (what a kill freed, when it is settled,
the back-off, the cap, "cannot help"), then the Monitor over a fake tree:
a tmpfs full beside small processes, a grower that starts while it is full,
kills that free nothing or a little, a large victim still tearing down.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bustd import kill, progress
from bustd.held import Held, held_text, parse_held, parse_tmpfs_mounts, read_held
from bustd.meminfo import parse_meminfo
from bustd.monitor import Monitor
from bustd.procfs import ProcFS
from bustd.progress import (
    BACKOFF_FIRST,
    BACKOFF_MAX,
    HOLD_MAX,
    KILL_CAP,
    KILL_WINDOW,
    MEASURE_S,
    Progress,
    shortfall,
)
from tests.fakeproc import PAGE_KIB, meminfo_text
from tests.unit.monitor_env import SELF, TOTAL, Env, P, emergency, env, no_signals
from tests.unit.test_monitor import FakeKill

__all__ = ["env", "no_signals"]  # fixtures, used by name

MIB = 1024


def never_alive(key: tuple[int, int]) -> bool:
    return False


def follow(p: Progress, t0: float, expected: int, before: int,
           readings: list[tuple[float, int]],
           alive: object = never_alive) -> list[float]:
    """Kill at t0, then feed (time, worth) readings; return when it was settled."""
    p.killed(t0, [(1, 1)], expected, before)
    done = []
    for t, w in readings:
        for f in p.observe(t, w, alive):  # type: ignore[arg-type]
            done.append(t)
            assert f.settled == t
    return done


# -- the pure rules ------------------------------------------------------------

def test_a_kill_that_frees_nothing_is_in_vain_and_starts_the_back_off() -> None:
    p = Progress()
    assert follow(p, 100.0, 300 * MIB, 50 * MIB,
                  [(100.1, 50 * MIB), (100.5, 49 * MIB), (101.0, 50 * MIB)]) == [101.0]
    (f,) = p.followed
    assert f.freed_kib == 0 and f.vain
    assert p.vain_streak == 1 and p.pause_until == 101.0 + BACKOFF_FIRST
    g = p.gate(102.0, 100 * MIB, 30 * MIB, 400 * MIB)
    assert (g.kill, g.kind) == (False, "backoff")
    assert "1 kill in vain (the last kill freed 0 KiB of the expected 300.0 MiB)" in g.why
    assert g.wait == pytest.approx(101.0 + BACKOFF_FIRST - 102.0)
    assert p.gate(101.0 + BACKOFF_FIRST, 100 * MIB, 30 * MIB, 400 * MIB).kill


def test_a_kill_that_frees_a_little_is_in_vain_too() -> None:
    p = Progress()
    follow(p, 0.0, 200 * MIB, 0, [(0.5, 20 * MIB), (1.0, 30 * MIB)])
    (f,) = p.followed
    assert f.freed_kib == 30 * MIB and f.vain  # 15 % < VAIN_SHARE
    assert p.vain_streak == 1


def test_a_kill_that_frees_what_was_expected_settles_at_once_and_helps() -> None:
    p = Progress()
    # 80 % back after 0.2 s: no need to wait out the second.
    assert follow(p, 0.0, 100 * MIB, 0, [(0.1, 40 * MIB), (0.2, 85 * MIB)]) == [0.2]
    assert not p.followed[0].vain and p.vain_streak == 0
    assert p.gate(0.3, 50 * MIB, 10 * MIB, 100 * MIB).kill


def test_no_second_kill_while_the_first_one_is_being_measured() -> None:
    p = Progress()
    p.killed(0.0, [(1, 1)], 100 * MIB, 0)
    p.observe(0.5, 10 * MIB, never_alive)
    g = p.gate(0.5, 50 * MIB, 100 * MIB, 500 * MIB)
    assert (g.kill, g.kind) == (False, "hold")
    assert "10.0 MiB of 100.0 MiB back after 0.5 s" in g.why
    assert p.due(0.5) == pytest.approx(MEASURE_S - 0.5)
    p.observe(1.0, 60 * MIB, never_alive)  # 60 %: helped, not in vain
    assert p.gate(1.0, 50 * MIB, 100 * MIB, 500 * MIB).kill
    assert p.due(1.0) == float("inf")


def test_a_large_victim_still_tearing_down_is_waited_for() -> None:
    # Review L8: tens of GiB returned slowly on a starved machine. While the
    # victim is alive and memory keeps coming back, no other kill.
    p = Progress()
    expected = 20 << 20
    p.killed(0.0, [(7, 70)], expected, 0)
    alive = {(7, 70)}
    t, worth = 0.0, 0
    while t < 6.0:
        t += 0.5
        worth += 1 << 20  # 1 GiB every half second: 10 % of the expected
        assert p.observe(t, worth, lambda k: k in alive) == []
        assert p.gate(t, 1 << 20, expected, expected).kind == "hold"
    alive.clear()  # exited: the rest came back
    (f,) = p.observe(6.5, worth + (8 << 20), lambda k: k in alive)
    assert not f.vain and p.gate(6.5, 1 << 20, expected, expected).kill


def test_a_dying_victim_that_frees_nothing_more_is_settled_after_a_quiet_second() -> None:
    p = Progress()
    alive = lambda k: True  # noqa: E731 - frozen for good
    assert follow(p, 0.0, 100 * MIB, 0,
                  [(0.5, 5 * MIB), (1.0, 5 * MIB), (1.4, 5 * MIB), (1.6, 5 * MIB)],
                  alive) == [1.6]  # last rise at 0.5: quiet for a second at 1.5
    assert p.followed[0].vain


def test_the_wait_for_a_victim_ends_at_hold_max() -> None:
    p = Progress()
    readings = [(t / 2, int(t) * 2 * MIB) for t in range(1, 2 * int(HOLD_MAX) + 2)]
    (done,) = follow(p, 0.0, 1 << 30, 0, readings, lambda k: True)
    assert done == HOLD_MAX


def test_back_off_doubles_up_to_its_cap_and_a_kill_that_helped_ends_it() -> None:
    p = Progress()
    t = 0.0
    pauses = []
    for _ in range(8):
        follow(p, t, 100 * MIB, 0, [(t + MEASURE_S, 0)])
        pauses.append(p.pause_until - (t + MEASURE_S))
        t = p.pause_until
    assert pauses == [min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** i) for i in range(8)]
    assert pauses[-1] == BACKOFF_MAX
    follow(p, t, 100 * MIB, 0, [(t + 0.1, 90 * MIB)])
    assert p.vain_streak == 0 and p.pause_until == float("-inf")


def test_during_the_back_off_a_kill_that_alone_can_end_it_is_made() -> None:
    # A grower that starts while the tmpfs is full: its own size covers the
    # shortfall, so it is killed at once, back-off or not.
    p = Progress()
    follow(p, 0.0, 50 * MIB, 0, [(1.0, 0)])
    assert p.gate(2.0, 200 * MIB, 150 * MIB, 900 * MIB).kind == "backoff"
    assert p.gate(2.0, 200 * MIB, 250 * MIB, 900 * MIB).kill


def test_candidates_that_together_cannot_help_are_not_killed() -> None:
    p = Progress()
    # 300 MiB short, 100 MiB in every candidate, 600 MiB in a tmpfs: none.
    g = p.gate(0.0, 300 * MIB, 20 * MIB, 100 * MIB, outside_kib=600 * MIB)
    assert (g.kill, g.kind) == (False, "cannot")
    assert g.why == ("killing cannot end it: the candidates together are expected to free "
                     "100.0 MiB, and 300.0 MiB is missing")
    # Nothing named explains the gap (a cgroup, an estimate too low): the
    # kill is made and its measurement decides.
    assert p.gate(0.0, 300 * MIB, 20 * MIB, 100 * MIB, outside_kib=0).kill
    # Together they can: the first one is killed.
    assert p.gate(0.0, 300 * MIB, 20 * MIB, 400 * MIB, outside_kib=600 * MIB).kill


def test_at_most_kill_cap_kills_in_a_window() -> None:
    p = Progress()
    for i in range(KILL_CAP):
        follow(p, i * 2.0, 10 * MIB, 0, [(i * 2.0 + 0.1, 10 * MIB)])  # each one helped
    now = KILL_CAP * 2.0
    g = p.gate(now, MIB, 10 * MIB, 100 * MIB)
    assert (g.kill, g.kind) == (False, "cap")
    assert g.wait == pytest.approx(KILL_WINDOW - now)
    assert p.gate(KILL_WINDOW + 0.01, MIB, 10 * MIB, 100 * MIB).kill


def test_shortfall_is_the_smaller_gap_and_no_swap_closes_none() -> None:
    mem = parse_meminfo(meminfo_text(1000, 50, 0, 0))
    assert shortfall(mem, 100, 0) == 51
    mem = parse_meminfo(meminfo_text(1000, 50, 400, 30))
    assert shortfall(mem, 100, 40) == 11  # 10 KiB more swap free ends it
    assert shortfall(mem, 10, 40) == 1  # already above: at least 1


# -- user memory, memory outside processes -------------------------------------

MEMINFO = meminfo_text(1_000_000, 40_000, 0, 0, anon=150_000, shmem=600_000, slab=30_000)


def test_levels_are_of_user_memory() -> None:
    mem = parse_meminfo(MEMINFO)
    assert mem.user == 190_000 and mem.outside == 630_000
    from bustd.config import Config
    from bustd.decide import decide, thresholds
    cfg = Config()
    assert thresholds(cfg, mem).mem_term == 19_000  # 10 % of user memory
    assert decide(mem, None, cfg) is None  # 4 % of MemTotal, but 21 % of user memory
    mem = parse_meminfo(meminfo_text(1_000_000, 40_000, 0, 0))  # no AnonPages
    assert mem.user == 1_000_000 and mem.outside == 0


def test_held_names_shmem_tmpfs_hugetlb_slab_and_the_rest(tmp_path: Path) -> None:
    h = parse_held(MEMINFO)
    assert (h.shmem, h.hugetlb, h.slab, h.anon) == (600_000, 0, 30_000, 150_000)
    assert h.other == 1_000_000 - 40_000 - 150_000 - 600_000 - 30_000
    assert h.outside == 810_000 and h.significant()
    mounts = (b"proc /proc proc rw 0 0\n"
              b"tmpfs /dev/shm tmpfs rw,nosuid 0 0\n"
              b"tmpfs /tmp/my\\040files tmpfs rw 0 0\n"
              b"garbage\n"
              b"tmpfs /dev/shm tmpfs rw 0 0\n")
    assert parse_tmpfs_mounts(mounts) == [b"/dev/shm", b"/tmp/my files"]
    h.tmpfs = [("/dev/shm", 590 * MIB), ("/run", 2 * MIB)]
    assert held_text(h) == ("Shmem 585.9 MiB (tmpfs /dev/shm 590.0 MiB, /run 2.0 MiB), "
                            "hugetlb 0 KiB, unreclaimable slab 29.3 MiB, 175.8 MiB more "
                            "neither available nor any process's")
    assert not Held(1000, 900, 50, 10, 0, 10).significant()


def test_read_held_measures_each_tmpfs_with_statvfs(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_bytes(MEMINFO)
    (proc / "self" / "mounts").write_bytes(
        b"tmpfs /big tmpfs rw 0 0\ntmpfs /tiny tmpfs rw 0 0\ntmpfs /gone tmpfs rw 0 0\n")

    class St:
        def __init__(self, used_blocks: int) -> None:
            self.f_blocks, self.f_bfree, self.f_frsize = 1000 + used_blocks, 1000, 4096

    def statvfs(path: bytes) -> St:
        if path == b"/gone":
            raise FileNotFoundError(path)
        return St(150_000 if path == b"/big" else 10)

    h = read_held(ProcFS(str(proc)), statvfs)  # type: ignore[arg-type]
    assert h.tmpfs == [("/big", 600_000)]  # /tiny below 1 MiB, /gone unmeasurable


# -- through the Monitor --------------------------------------------------------

def tmpfs_machine(env: Env, tmp_path: Path, avail_kib: int, shmem_kib: int) -> None:
    """PID 1, bustd, ten small idle processes and a tmpfs (``tmp_path``) with a file."""
    env.fake.add(1, b"init", oom_score=0)
    env.fake.add(SELF, b"python3", oom_score=5)
    for i in range(10):
        env.fake.add(P + i, b"app%d" % i, oom_score=10, rss_kib=7680 * PAGE_KIB)  # 30 MiB
    mount = os.fsencode(tmp_path)
    env.fake.write("self/mounts", b"tmpfs " + mount + b" tmpfs rw 0 0\n")
    env.mem = [TOTAL, avail_kib, 0, 0]
    # AnonPages: the apps' and that of processes outside the tree (4 GiB), so
    # user memory is not what caps the forced levels.
    env.fake.set_meminfo(TOTAL, avail_kib, 0, 0, anon=4 << 20, shmem=shmem_kib, slab=0)


def kills(env: Env) -> list[str]:
    return [x for x in env.out.lines() if x.startswith("warning: kill: ")]


def live(env: Env, monkeypatch: pytest.MonkeyPatch, **settings: object) -> tuple[Monitor,
                                                                               FakeKill]:
    fake = FakeKill()
    monkeypatch.setattr(kill, "signal_targets", fake)
    m = env.monitor(False, **settings)
    m.load_watch_code().may_signal = True  # as if live: the fake kill is all that can be reached
    return m, fake


def test_tmpfs_full_beside_small_processes_no_kill_and_one_line_naming_it(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Review H1: a forced level 2 GiB above MemAvailable, 6 GiB in a tmpfs,
    # ten 30 MiB processes: killing all of them frees 300 MiB.
    tmpfs_machine(env, tmp_path, 1 << 20, 6 << 20)
    m, fake = live(env, monkeypatch, mem_term_kib=3 << 20, mem_kill_kib=3 << 20,
                   mem_term_percent=100, mem_kill_percent=100, psi_cutoff=0.0)
    for _ in range(30):
        m.check()
        env.clock.now += 1.0
    assert fake.calls == [] and kills(env) == []
    (line,) = [x for x in env.out.lines() if "not killing" in x]
    assert line.startswith("warning: memory emergency (MemAvailable 1.0 GiB (12.5%) <= 3.0 GiB, "
                           "no swap); not killing: killing cannot end it: the candidates "
                           "together are expected to free 300.0 MiB, and 2.0 GiB is missing; "
                           "memory held outside processes: Shmem 6.0 GiB (tmpfs "
                           f"{tmp_path} ")


def test_a_grower_during_a_full_tmpfs_is_killed_at_once(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The default levels, of user memory: 6 GiB in a tmpfs, ten idle apps,
    # 1 GiB available: no emergency (10 % of MemAvailable + AnonPages =
    # 150 MiB). A grower then takes 950 MiB: killed at once, the apps left.
    tmpfs_machine(env, tmp_path, 1 << 20, 6 << 20)
    env.fake.set_meminfo(TOTAL, 1 << 20, 0, 0, anon=500 * MIB, shmem=6 << 20, slab=0)
    m, fake = live(env, monkeypatch, psi_cutoff=0.0)
    for _ in range(3):
        m.check()
        env.clock.now += 1.0
    assert fake.calls == [] and env.out.lines() == []
    env.fake.add(P + 20, b"grower", oom_score=900, rss_kib=950 * MIB // PAGE_KIB * PAGE_KIB)
    env.mem = [TOTAL, 50 * MIB, 0, 0]
    env.fake.set_meminfo(TOTAL, 50 * MIB, 0, 0, anon=1450 * MIB, shmem=6 << 20, slab=0)
    m.check()
    assert [pids[0][0] for pids, _ in fake.calls] == [P + 20]
    env.fake.remove(P + 20)
    env.fake.set_meminfo(TOTAL, 1000 * MIB, 0, 0, anon=500 * MIB, shmem=6 << 20, slab=0)
    env.clock.now += 0.1
    m.check()
    (line,) = kills(env)
    assert "name=grower" in line and "freed 950.0 MiB of the expected 950.0 MiB" in line
    assert "MemAvailable 50.0 MiB (0.6%) <= 75.0 MiB, no swap" in line
    # Said with the kill: most memory is where no kill frees it.
    assert ("in 0.1 s; 6.5 GiB held outside processes, where no kill frees it: Shmem 6.0 GiB "
            f"(tmpfs {tmp_path} ") in line
    for _ in range(5):
        env.clock.now += 1.0
        m.check()
    assert len(fake.calls) == 1  # the small apps are left alone


def test_kill_that_frees_nothing_backs_off_and_says_so_once(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Memory held where the estimate did not see it: each kill frees nothing.
    tmpfs_machine(env, tmp_path, 200 * MIB, 0)
    m, fake = live(env, monkeypatch, mem_term_kib=300 * MIB, mem_kill_kib=300 * MIB,
                   mem_term_percent=100, mem_kill_percent=100, psi_cutoff=0.0)
    times = []
    for _ in range(400):  # 40 s of checks every 0.1 s
        before = len(fake.calls)
        m.check()
        if len(fake.calls) > before:
            times.append(round(env.clock.now - 5000.0, 1))
        env.clock.now += 0.1
    # First kill at once; measured in vain after 1 s; back-off 5 s; the next
    # kill in vain; back-off 10 s; then 20 s.
    assert times == [0.0, 6.0, 17.0, 38.0]
    lines = kills(env)
    assert len(lines) == 4
    assert "freed 0 KiB of the expected 30.0 MiB in 1.0 s: in vain, no kill for 5 s" in lines[0]
    assert "in vain, no kill for 10 s" in lines[1]
    assert "in vain, no kill for 20 s" in lines[2]
    (said,) = [x for x in env.out.lines() if "not killing:" in x]
    assert "1 kill in vain (the last kill freed 0 KiB of the expected 30.0 MiB)" in said
    assert "memory held outside processes: Shmem 0 KiB" in said


def test_stop_writes_a_kill_still_being_measured(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmpfs_machine(env, tmp_path, 200 * MIB, 0)
    m, fake = live(env, monkeypatch, mem_term_kib=300 * MIB, mem_kill_kib=300 * MIB,
                   mem_term_percent=100, mem_kill_percent=100, psi_cutoff=0.0)
    m.check()
    assert len(fake.calls) == 1 and kills(env) == []
    env.free(10 * MIB)
    env.clock.now += 0.3
    m.check()
    with pytest.raises(SystemExit):
        m.stop()
    (line,) = kills(env)
    assert ("freed 10.0 MiB of the expected 30.0 MiB in 0.3 s (measurement cut short: "
            "bustd stopped)") in line


def test_progress_is_loaded_only_once_memory_runs_short(env: Env) -> None:
    m = env.monitor()
    env.set_mem(80, 80)
    m.check()
    assert m.emergency is None  # its progress is made with the rest of the kill path
    env.set_mem(3, 0)
    m.check()
    assert isinstance(emergency(m).progress, progress.Progress)


def test_no_second_kill_while_a_large_victim_tears_down(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Review L8: the victim is still alive after SIGKILL (tearing down 2 GiB
    # on a starved machine) and its memory comes back 200 MiB every half
    # second; memory stays short all along. No other process is killed until
    # it has gone.
    tmpfs_machine(env, tmp_path, 100 * MIB, 0)
    env.fake.add(P + 20, b"big", oom_score=900, rss_kib=(2 << 20) // PAGE_KIB * PAGE_KIB)
    fake = FakeKill({P + 20: kill.DYING})
    monkeypatch.setattr(kill, "signal_targets", fake)
    monkeypatch.setattr(kill, "exited", lambda fs, t: not os.path.exists(
        env.fake.path(str(t.pid))))
    m = env.monitor(mem_term_kib=3 << 20, mem_kill_kib=3 << 20, mem_term_percent=100,
                    mem_kill_percent=100, psi_cutoff=0.0)
    m.load_watch_code().may_signal = True
    m.check()
    assert [pids[0][0] for pids, _ in fake.calls] == [P + 20]
    for _ in range(8):  # 4 s of teardown
        env.clock.now += 0.5
        env.free(200 * MIB)
        m.check()
    assert len(fake.calls) == 1 and kills(env) == []
    env.fake.remove(P + 20)  # gone at last
    env.free(400 * MIB)
    env.clock.now += 0.5
    m.check()
    (line,) = kills(env)
    assert "freed 2.0 GiB of the expected 2.0 GiB in 4.5 s" in line and "in vain" not in line
