"""--cgroup and --kill-cgroup through the Monitor, on fake /proc and cgroup trees.

The Config's proc_root is a fake tree, so the Monitor is not live: it only
logs dry-run kill lines (the real-kill branch is reached with a stand-in for
kill.signal_targets that records its arguments and signals nothing). All
PIDs are above the kernel's PID_MAX_LIMIT.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pytest

from bustd import cgroup, kill
from bustd.choose import Ranking, make_rules
from bustd.monitor import Monitor
from bustd.procfs import ProcFS
from tests.fakecgroup import FakeCgroup
from tests.fakeproc import PAGE_KIB
from tests.unit.monitor_env import SELF, Env, P, emergency, env, no_signals

__all__ = ["env", "no_signals"]  # fixtures, used by name

OUTSIDE, HOG, SMALL, PARTNER = P, P + 1, P + 2, P + 3


def setup(env: Env, tmp_path: Path, max_mib: float | None = 100) -> FakeCgroup:
    """The machine: PID 1, bustd, a big process outside the watched subtree;
    the subtree ``work``: ``work/a`` (the hog and its partner), ``work/b``."""
    cg = FakeCgroup(tmp_path / "cgroup")
    env.set_mem(50, 0, swap_total=0)  # no swap unless a test gives some
    env.fake.write("self/mountinfo", cg.mountinfo())
    env.fake.add(1, b"init", oom_score=0)
    env.fake.add(SELF, b"bustd", oom_score=5)
    env.fake.add(OUTSIDE, b"outside", oom_score=1200, rss_kib=5000 * PAGE_KIB)
    env.fake.add(HOG, b"hog", oom_score=300, rss_kib=900 * PAGE_KIB)
    env.fake.add(SMALL, b"small", oom_score=100, rss_kib=50 * PAGE_KIB)
    env.fake.add(PARTNER, b"partner", oom_score=50, rss_kib=10 * PAGE_KIB)
    cg.add("work", [], current_mib=50, max_mib=max_mib, swap_current_mib=None)
    cg.add("work/a", [HOG, PARTNER])
    cg.add("work/b", [SMALL])
    cg.add("elsewhere", [OUTSIDE, SELF, 1])
    for pid, rel in ((HOG, "work/a"), (PARTNER, "work/a"), (SMALL, "work/b"),
                     (OUTSIDE, "elsewhere"), (SELF, "elsewhere"), (1, "elsewhere")):
        env.fake.write(f"{pid}/cgroup", f"0::/{rel}\n".encode())
    return cg


def monitor(env: Env, cg: FakeCgroup, **settings: object) -> Monitor:
    return env.monitor(False, cgroup=cg.path("work"), **settings)


def kill_lines(env: Env) -> list[str]:
    return [line for line in env.out.lines() if "would kill" in line or "kill: " in line]


def test_cgroup_short_kills_only_inside_it(env: Env, tmp_path: Path) -> None:
    cg = setup(env, tmp_path)
    m = monitor(env, cg)
    env.set_mem(50, 0, swap_total=0)  # the machine has plenty
    cg.set_memory("work", current_mib=96, max_mib=100)
    m.check()
    (line,) = kill_lines(env)
    work = cg.path("work")
    assert f"would kill pid={HOG} name=hog " in line
    assert f" in cgroup {work}/a with SIGKILL: cgroup {work} available 4.0 MiB (4.0%) <= " \
        "5.0 MiB, no swap" in line
    assert f"pid={OUTSIDE}" not in line  # the largest process, but outside the subtree
    assert f"runners-up: pid={SMALL} name=small" in line


def test_the_machine_short_but_the_cgroup_fine_kills_nothing(env: Env, tmp_path: Path) -> None:
    cg = setup(env, tmp_path)
    m = monitor(env, cg)
    env.set_mem(2, 0, swap_total=0)
    cg.set_memory("work", current_mib=50, max_mib=100)
    m.check()
    assert kill_lines(env) == []


def test_a_cgroup_without_a_limit_acts_on_the_machine_within_the_cgroup(
        env: Env, tmp_path: Path) -> None:
    cg = setup(env, tmp_path, max_mib=None)
    m = monitor(env, cg)
    env.set_mem(3, 0, swap_total=0)
    m.check()
    (line,) = kill_lines(env)
    assert f"would kill pid={HOG} " in line
    assert f"cgroup {cg.path('work')} available " in line
    assert "no limit of its own: the machine's MemAvailable" in m.describe()


def test_memory_high_is_the_limit_when_max_is_max(env: Env, tmp_path: Path) -> None:
    cg = setup(env, tmp_path)
    m = monitor(env, cg)
    cg.set_memory("work", current_mib=58, max_mib=None, high_mib=60)
    m.check()
    (line,) = kill_lines(env)
    assert "available 2.0 MiB (3.3%)" in line
    assert "memory.high 60.0 MiB" in m.describe()


def test_reclaimable_cache_counts_as_available(env: Env, tmp_path: Path) -> None:
    cg = setup(env, tmp_path)
    m = monitor(env, cg)
    cg.set_memory("work", current_mib=96, max_mib=100, file_mib=30)
    m.check()
    assert kill_lines(env) == []


def test_the_cgroup_pressure_file_drives_the_pressure_rule(env: Env, tmp_path: Path) -> None:
    cg = setup(env, tmp_path)
    m = monitor(env, cg, psi_duration=2.0)
    assert m.sensors.psi_path() == cg.path("work") + "/memory.pressure"
    cg.set_memory("work", current_mib=88, max_mib=100)  # 12 %: under --psi-mem 15
    some = 0
    for _ in range(5):
        env.clock.now += 1.0
        # The machine's PSI file stays quiet; the cgroup's stalls 60 %.
        some += 600_000
        cg.set_pressure("work", some_us=some)
        m.check()
    line = kill_lines(env)[0]  # a dry run decides again every second
    assert "with SIGTERM: memory some stall 60% >= 25% for 2" in line
    assert f"with cgroup {cg.path('work')} available 12.0 MiB (12.0%) <= 15%" in line


def test_cgroup_swap_ins_come_from_its_memory_stat(env: Env, tmp_path: Path) -> None:
    cg = setup(env, tmp_path)
    cg.add("work", [], current_mib=88, max_mib=100, swap_current_mib=10, swap_max_mib=20)
    cg.set_memory("work", current_mib=88, max_mib=100)
    m = monitor(env, cg, psi_duration=2.0)
    env.set_mem(50, 0)  # machine swap: 2 GiB, none free: the cgroup's 10 MiB free count
    some = refaults = 0
    for step in range(10):
        env.clock.now += 1.0
        some += 600_000
        cg.set_pressure("work", some_us=some)
        if step >= 4:
            refaults += 1024  # 4 MiB/s of 4 KiB pages read back from swap: thrashing
        cg.set_memory("work", current_mib=88, max_mib=100, refault_anon=refaults)
        m.check()
        if step < 4:
            assert kill_lines(env) == [], "pages only going out is no emergency"
    (line,) = kill_lines(env)[:1]
    assert "and swap-in 4.0 MiB/s for " in line


def test_kill_cgroup_dry_run_names_the_cgroup_killed_whole(env: Env, tmp_path: Path) -> None:
    cg = setup(env, tmp_path)
    m = monitor(env, cg, kill_cgroup=True)
    cg.set_memory("work", current_mib=92, max_mib=100)  # SIGTERM level: cgroup.kill is SIGKILL
    m.check()
    (line,) = kill_lines(env)
    assert f"would kill pid={HOG} name=hog " in line
    assert f" in cgroup {cg.path('work/a')} whole, by cgroup.kill with SIGKILL: " in line
    assert not cg.killed("work/a")  # a dry run writes nothing


@pytest.mark.parametrize("who, why", [
    (SELF, f"it holds bustd itself (pid {SELF})"),
    (1, "it holds PID 1"),
    (PARTNER, f"pid {PARTNER} (partner) has oom_score_adj -1000"),
])
def test_kill_cgroup_refused_falls_back_to_signals(env: Env, tmp_path: Path, who: int,
                                                  why: str) -> None:
    cg = setup(env, tmp_path)
    if who == PARTNER:
        env.fake.add(PARTNER, b"partner", oom_score=50, oom_score_adj=-1000)
    else:
        cg.set_procs("work/a", [HOG, PARTNER, who])
    m = monitor(env, cg, kill_cgroup=True)
    cg.set_memory("work", current_mib=92, max_mib=100)
    m.check()
    (line,) = kill_lines(env)
    assert f"in cgroup {cg.path('work/a')}, not killed whole ({why}): its killable " \
        "processes signalled one by one with SIGTERM" in line
    if who == PARTNER:
        assert " with 1 more" not in line  # the protected partner is spared
    else:
        assert " with 1 more of its group" in line  # the partner goes too


def test_kill_cgroup_without_cgroup_finds_the_victims_cgroup(env: Env, tmp_path: Path) -> None:
    cg = setup(env, tmp_path)
    m = env.monitor(kill_cgroup=True)
    env.set_mem(3, 0, swap_total=0)
    m.check()
    (line,) = kill_lines(env)
    assert f"would kill pid={OUTSIDE} name=outside " in line
    # Its cgroup holds bustd and PID 1 too: never killed whole.
    assert f"in cgroup {cg.path('elsewhere')}, not killed whole (it holds bustd itself" in line


def test_kill_cgroup_never_the_root(env: Env, tmp_path: Path) -> None:
    cg = setup(env, tmp_path)
    env.fake.write(f"{OUTSIDE}/cgroup", b"0::/\n")
    cg.set_procs("", [OUTSIDE])
    cg.set_procs("elsewhere", [SELF, 1])
    m = env.monitor(kill_cgroup=True)
    env.set_mem(3, 0, swap_total=0)
    m.check()
    (line,) = kill_lines(env)
    assert f"in cgroup {cg.root}, not killed whole (it is the root cgroup)" in line


class Recorder:
    """Stands in for kill.signal_targets: records its arguments, signals nothing."""

    def __init__(self, note: str = "") -> None:
        self.note = note
        self.calls: list[dict[str, object]] = []

    def __call__(self, fs: ProcFS, targets: list[kill.Target], first: int, grace: float,
                 clock: object, cgroup: str = "", self_pid: int = 0,
                 vet: object = None) -> kill.Outcome:
        self.calls.append({"pids": [t.pid for t in targets], "first": first,
                           "cgroup": cgroup, "self_pid": self_pid})
        for t in targets:
            t.state = kill.EXITED
        last = signal.SIGKILL if cgroup and not self.note else first
        return kill.Outcome(list(targets), last, 0.1, self.note)


@pytest.mark.parametrize("note", ["", "no cgroup.kill (Linux < 5.14)"])
def test_real_kill_branch_kills_the_cgroup_whole_or_says_why_not(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, note: str) -> None:
    cg = setup(env, tmp_path)
    fake = Recorder(note)
    monkeypatch.setattr(kill, "signal_targets", fake)
    m = monitor(env, cg, kill_cgroup=True)
    m.load_watch_code().may_signal = True
    cg.set_memory("work", current_mib=92, max_mib=100)
    m.check()
    assert fake.calls == [{"pids": [HOG, PARTNER], "first": signal.SIGTERM,
                           "cgroup": cg.path("work/a"), "self_pid": SELF}]
    assert kill_lines(env) == []  # logged once its memory is measured (issue 14)
    cg.set_memory("work", current_mib=88, max_mib=100)  # the hog's 3.5 MiB came back
    env.clock.now += 0.1
    m.check()
    (line,) = kill_lines(env)
    assert "; freed 4.0 MiB of the expected 3.6 MiB in 0.1 s;" in line
    if note:
        assert f"in cgroup {cg.path('work/a')}, not killed whole ({note}): its killable " \
            "processes signalled one by one signal=SIGTERM exited" in line
    else:
        assert f"in cgroup {cg.path('work/a')} killed whole by cgroup.kill signal=SIGKILL " \
            "exited after 0.10 s" in line


def test_a_victim_that_left_the_cgroup_is_passed_over(env: Env, tmp_path: Path) -> None:
    cg = setup(env, tmp_path)
    m = monitor(env, cg)
    cands = m.load_watch_code().sample(env.clock.now)
    assert {c.pid: c.cgroup for c in cands} == {HOG: cg.path("work/a"),
                                               PARTNER: cg.path("work/a"),
                                               SMALL: cg.path("work/b")}
    cg.set_procs("work/a", [PARTNER])  # the hog moved (or its PID is someone else's now)
    units = emergency(m).units
    assert units is not None
    ranking = Ranking(env.fake.fs, cands, make_rules(m.cfg, SELF), 0.0, units=units)
    victim = ranking.next()
    assert victim is not None and victim.candidate.pid == SMALL
    assert (cands[0] if cands[0].pid == HOG else next(c for c in cands if c.pid == HOG),
            f"is no longer in cgroup {cg.path('work/a')}") in ranking.skipped


def test_a_cgroup_that_goes_away_is_said_once_and_watched_again(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cg = setup(env, tmp_path)
    # The kernel's files of a removed cgroup answer ENODEV on the descriptors
    # still open; plain files would go on reading.
    real_read = cgroup.Cgroup._read

    def read(self: cgroup.Cgroup, name: str, size: int = 64) -> bytes:
        if not os.path.isdir(self.path):
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        return real_read(self, name, size)

    monkeypatch.setattr(cgroup.Cgroup, "_read", read)
    m = monitor(env, cg)
    m.check()
    cg.remove("work")
    for _ in range(3):
        env.clock.now += 1.0
        m.check()
    assert env.out.count(f"cannot read cgroup {cg.path('work')}") == 1
    assert kill_lines(env) == []
    assert m.sensors.psi_fd < 0
    cg.add("work", [HOG], current_mib=97, max_mib=100)
    env.clock.now += 1.0
    m.check()
    assert env.out.count(f"cgroup {cg.path('work')} is back: watching it again") == 1
    assert m.sensors.psi_fd >= 0
    (line,) = kill_lines(env)
    assert f"would kill pid={HOG} " in line


def test_cgroup_cannot_change_on_reload(env: Env, tmp_path: Path) -> None:
    cg = setup(env, tmp_path)
    m = monitor(env, cg)
    changed = m.apply(m.cfg.replace(cgroup=cg.path("work/b"), kill_cgroup=True))
    assert changed == ["kill_cgroup"]
    assert m.cfg.cgroup == cg.path("work")
    assert env.out.count("reload: cgroup cannot change while bustd runs") == 1



def test_the_cgroup_reaches_the_kill_log_and_the_hooks(env: Env, tmp_path: Path) -> None:
    import json

    from bustd.hooks import hook_env
    from bustd.killlog import dumps, kill_object
    from bustd.record import KillRecord, kill_line
    cg = setup(env, tmp_path)
    records: list[KillRecord] = []
    m = monitor(env, cg, kill_cgroup=True)
    m.outputs.append(lambda r: records.append(r) if isinstance(r, KillRecord) else None)
    cg.set_procs("work/a", [HOG, PARTNER, SELF])
    cg.set_memory("work", current_mib=92, max_mib=100)
    m.check()
    (r,) = records
    obj = json.loads(dumps(kill_object(r)))
    assert (obj["cgroup"], obj["cgroup_whole"]) == (cg.path("work/a"), False)
    assert obj["cgroup_note"] == f"it holds bustd itself (pid {SELF})"
    assert hook_env(r, "pre-kill")["BUSTD_CGROUP"] == cg.path("work/a")
    # A name that is not UTF-8 (any byte but '/' may be in one) is escaped, never a crash.
    r.cgroup = os.fsdecode(b"/sys/fs/cgroup/bad\xff\nname")
    assert " in cgroup /sys/fs/cgroup/bad\\xff\\nname" in kill_line(r)
    assert hook_env(r, "pre-kill")["BUSTD_CGROUP"] == "/sys/fs/cgroup/bad\\xff\\nname"
    json.loads(dumps(kill_object(r)))
    plain = env.monitor()
    plain.outputs.append(lambda r: records.append(r) if isinstance(r, KillRecord) else None)
    env.set_mem(3, 0, swap_total=0)
    plain.check()
    obj = json.loads(dumps(kill_object(records[-1])))
    assert (obj["cgroup"], obj["cgroup_whole"], obj["cgroup_note"]) == (None, None, None)
    assert "BUSTD_CGROUP" not in hook_env(records[-1], "pre-kill")


def test_a_subtree_too_wide_to_walk_is_watched_through_proc_and_never_killed_whole(
        env: Env, tmp_path: Path) -> None:
    # Review L2: a user's delegated subtree with more cgroups than bustd walks.
    cg = setup(env, tmp_path)
    for i in range(cgroup.MAX_CGROUPS):
        cg.add(f"work/a/empty{i}")
    with pytest.raises(cgroup.TooManyCgroups):
        cgroup.members(cg.path("work"))
    m = monitor(env, cg, kill_cgroup=True)
    cg.set_memory("work", current_mib=92, max_mib=100)
    m.check()
    (line,) = kill_lines(env)
    assert f"would kill pid={HOG} name=hog " in line  # still found, from /proc
    assert f"pid={OUTSIDE}" not in line
    assert (f"in cgroup {cg.path('work/a')}, not killed whole (cannot list its processes: "
            f"more than {cgroup.MAX_CGROUPS} cgroups below {cg.path('work/a')})") in line
