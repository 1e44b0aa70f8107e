"""Issue 13 over literal /proc snapshots: what a kill frees, hidden memory,
name rules no user can forge, and the default avoid list."""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

import pytest

from bustd.background import Background
from bustd.choose import Ranking, sample
from bustd.freeable import ROLLUP_MIN_KIB, Shared, own_shmem, parse_pss_shmem
from bustd.growth import MAX_TRACKED, Tracker
from bustd.process import Candidate, parse_status, read_exe, read_status, read_trust, scan
from bustd.victim import Rules
from tests.fakeproc import FAKE_PID, PAGE_KIB, FakeProc

P = FAKE_PID
SELF = 4_999_999
MIB = 1024
PER_KIB = 1000.0 / (8 * 1024 * MIB) * 2 / 3  # oom_score points per KiB, 8 GiB machine

STATUS = (b"Name:\tpostgres\nUmask:\t0077\nState:\tS (sleeping)\nTgid:\t812\nNgid:\t0\n"
          b"Pid:\t812\nPPid:\t790\nTracerPid:\t0\nUid:\t114\t114\t114\t114\n"
          b"Gid:\t122\t122\t122\t122\nFDSize:\t64\nGroups:\t108 122 \nNStgid:\t812\n"
          b"VmPeak:\t  4406056 kB\nVmSize:\t  4405412 kB\nVmLck:\t       0 kB\n"
          b"VmHWM:\t  2213624 kB\nVmRSS:\t  2213620 kB\nRssAnon:\t    8964 kB\n"
          b"RssFile:\t   12096 kB\nRssShmem:\t 2192560 kB\nVmData:\t    9464 kB\n"
          b"VmSwap:\t     512 kB\nHugetlbPages:\t       0 kB\nThreads:\t1\n"
          b"voluntary_ctxt_switches:\t39\n")


@pytest.fixture
def fake(tmp_path: Path) -> FakeProc:
    f = FakeProc(tmp_path / "proc")
    f.set_meminfo(8 << 20, 1 << 20)
    return f


# -- status: the split of RSS ---------------------------------------------------

def test_status_splits_rss_into_anon_file_and_shmem() -> None:
    st = parse_status(STATUS)
    assert (st.uid, st.rss_kib, st.anon_kib, st.file_kib, st.shmem_kib, st.swap_kib) == (
        114, 2213620, 8964, 12096, 2192560, 512)
    assert st.private_kib == 8964 + 512 and st.has_mm and st.threads == 1


def test_status_without_the_split_counts_all_rss_as_private() -> None:
    # Before Linux 4.5 there is no RssAnon line: nothing is known to be shared.
    st = parse_status(b"Name:\tx\nUid:\t0\t0\t0\t0\nVmRSS:\t 4096 kB\nVmSwap:\t 8 kB\n")
    assert (st.anon_kib, st.file_kib, st.shmem_kib, st.private_kib) == (4096, 0, 0, 4104)


def test_a_name_cannot_forge_a_size_line() -> None:
    # comm is at most 15 bytes and holds no newline: "VmRSS:" in it is not a line.
    st = parse_status(b"Name:\tVmRSS: 99999999\nUid:\t1000\t1000\t1000\t1000\n"
                      b"VmRSS:\t     100 kB\nRssAnon:\t 100 kB\nRssFile:\t 0 kB\n"
                      b"RssShmem:\t 0 kB\n")
    assert st.rss_kib == 100 and st.anon_kib == 100


def test_memoryless_status_is_marked_and_malformed_split_raises() -> None:
    zombie = parse_status(b"Name:\tz\nState:\tZ (zombie)\nUid:\t0\t0\t0\t0\nThreads:\t3\n")
    assert not zombie.has_mm and zombie.rss_kib == 0 and zombie.threads == 3
    with pytest.raises(ValueError, match="RssAnon"):
        parse_status(b"Name:\tx\nUid:\t0\t0\t0\t0\nVmRSS:\t10 kB\nRssAnon:\tlots kB\n")


def test_a_long_status_is_read_whole(fake: FakeProc) -> None:
    # 65536 supplementary groups put the sizes after ~460 KB (review M1).
    groups = b" ".join(b"%d" % g for g in range(100000, 165536))
    fake.add(P, b"grouped", rss_kib=300 * MIB)
    fake.write(f"{P}/status", b"Name:\tgrouped\nUid:\t0\t0\t0\t0\nGroups:\t" + groups +
               b"\nVmRSS:\t  307200 kB\nRssAnon:\t 307000 kB\nRssFile:\t 200 kB\n"
               b"RssShmem:\t 0 kB\nVmSwap:\t 0 kB\nThreads:\t4\n")
    st = read_status(fake.fs, P)
    assert (st.rss_kib, st.anon_kib, st.threads) == (307200, 307000, 4)


def test_zombie_leader_is_sized_by_a_live_thread(fake: FakeProc) -> None:
    # The main thread exited: the leader's status has no Vm lines, a live
    # thread's has the thread group's memory (review M1).
    fake.add(P, b"leader", state=b"Z", rss_kib=0, threads=2)
    fake.write(f"{P}/status", b"Name:\tleader\nState:\tZ (zombie)\nUid:\t1000\t1000\t1000"
                              b"\t1000\nThreads:\t2\n")
    fake.set_exe(P, b"")  # a zombie leader's exe link cannot be read
    with open(fake.path(f"{P}/stat"), "rb") as f:
        fake.write(f"{P}/task/{P}/stat", f.read())
    tid = P + 1
    live = FakeProc(fake.path(f"{P}/task"))
    live.add(tid, b"worker", rss_kib=300 * MIB, shmem_kib=0, uid=1000)
    live.set_exe(tid, b"/usr/bin/true")
    st = read_status(fake.fs, P)
    assert st.has_mm and (st.rss_kib, st.anon_kib, st.uid) == (300 * MIB, 300 * MIB, 1000)
    [c] = scan(fake.fs)
    assert c.pid == P and c.rss_kib == 300 * MIB // PAGE_KIB * PAGE_KIB
    # Its executable comes from the live thread too (review L5).
    assert read_exe(fake.fs, P) == b"/usr/bin/true"
    tracker = Tracker()
    [c] = sample(fake.fs, tracker, 1.0, frozenset(), set(), False)
    assert c.sized and c.freeable_kib == 300 * MIB


def test_live_process_without_sizes_is_unreadable_not_zero(fake: FakeProc) -> None:
    fake.add(P, b"odd", rss_kib=50 * MIB)
    fake.write(f"{P}/status", b"Name:\todd\nUid:\t0\t0\t0\t0\nThreads:\t1\n")
    with open(fake.path(f"{P}/stat"), "rb") as f:
        fake.write(f"{P}/task/{P}/stat", f.read())  # its only thread, the leader
    with pytest.raises(ValueError, match="no VmRSS line"):
        read_status(fake.fs, P)
    # The sample keeps the scan's RSS (an upper bound), never 0.
    [c] = sample(fake.fs, Tracker(), 1.0, frozenset(), set(), False)
    assert not c.sized and c.freeable_kib == c.rss_kib > 0


# -- freeable: smaps_rollup ---------------------------------------------------------

def test_pss_shmem_parsed_and_own_shared_bounded() -> None:
    assert parse_pss_shmem(b"00400000-7ffc ---p 0 00:00 0 [rollup]\nRss:\t 10 kB\n"
                           b"Pss_Shmem:\t  4096 kB\nSwap:\t 0 kB\n") == 4096
    assert parse_pss_shmem(b"[rollup]\nRss:\t 10 kB\nPss:\t 10 kB\n") is None  # < 5.14
    with pytest.raises(ValueError, match="Pss_Shmem"):
        parse_pss_shmem(b"[rollup]\nPss_Shmem:\t kB\n")
    # A sole mapper: Pss == Rss, all of it its own. Four equal mappers: none.
    assert own_shmem(1000, 1000) == 1000
    assert own_shmem(250, 1000) == 0
    # 600 pages alone and 400 shared by two: Pss 800, the bound finds 600.
    assert own_shmem(800, 1000) == 600
    assert own_shmem(2000, 1000) == 1000  # never more than it holds


def database(fake: FakeProc, backends: int = 3, shm: int = 2 << 20) -> None:
    """A PostgreSQL-like layout: a 2 GiB segment in the RSS of every process."""
    for i in range(backends + 1):
        fake.add(P + i, b"postgres", rss_kib=shm + 9 * MIB, shmem_kib=shm, file_kib=1 * MIB,
                 oom_score=666 + 180, starttime=100 + i)
        fake.set_rollup(P + i, shm // (backends + 1))


def test_database_processes_are_ranked_by_what_they_free(fake: FakeProc) -> None:
    database(fake)
    fake.add(P + 10, b"app", rss_kib=500 * MIB, shmem_kib=0, oom_score=666 + 40,
             starttime=500)
    cands = sample(fake.fs, Tracker(), 1.0, frozenset(), set(), False, shared=Shared(fake.fs))
    db = [c for c in cands if c.comm == b"postgres"]
    assert all(c.freeable_kib == 8 * MIB and c.kept_kib == (2 << 20) + MIB for c in db)
    victim = Ranking(fake.fs, cands, Rules(SELF), PER_KIB).next()
    assert victim is not None and victim.candidate.comm == b"app"


def test_shared_memory_only_it_maps_is_freeable(fake: FakeProc) -> None:
    # A memfd mapped by this process alone (Pss_Shmem == RssShmem) goes with it.
    fake.add(P, b"wayland-app", rss_kib=400 * MIB, shmem_kib=300 * MIB, oom_score=700)
    fake.set_rollup(P, 300 * MIB)
    shared = Shared(fake.fs, Background())
    tracker = Tracker()
    [c] = sample(fake.fs, tracker, 1.0, frozenset(), set(), False, shared=shared)
    assert c.freeable_kib == 100 * MIB  # the rollup is not read yet
    assert shared.refresh([c], 1.0) == [(P, c.starttime)]
    assert shared.background.drain(5.0)
    assert shared.refresh([c], 2.0) == []  # asked less than ROLLUP_EVERY ago
    [c] = sample(fake.fs, tracker, 2.0, frozenset(), set(), False, shared=shared)
    assert c.own_shmem_kib == 300 * MIB and c.freeable_kib == 400 * MIB and c.kept_kib == 0


def test_small_shared_memory_costs_no_rollup(fake: FakeProc) -> None:
    fake.add(P, b"x", rss_kib=100 * MIB, shmem_kib=ROLLUP_MIN_KIB - 1)
    shared = Shared(fake.fs)
    cands = sample(fake.fs, Tracker(), 1.0, frozenset(), set(), False, shared=shared)
    assert shared.refresh(cands, 1.0) == []


def test_a_recycled_pid_keeps_no_shared_figure(fake: FakeProc) -> None:
    fake.add(P, b"x", rss_kib=400 * MIB, shmem_kib=300 * MIB, starttime=100)
    fake.set_rollup(P, 300 * MIB)
    shared = Shared(fake.fs)
    assert shared.learn(P, 100) and shared.own(P, 100) == 300 * MIB
    assert shared.own(P, 101) == 0
    assert not shared.learn(P, 999)  # another process now has that PID


def test_unsized_candidates_are_sized_when_their_turn_comes(fake: FakeProc) -> None:
    # 40 backends fill the sample of the 32 largest by RSS; the 8 left out still
    # show 2 GiB. The ranking sizes each one when it reaches the top, so the
    # 500 MiB app is chosen, not an unsized backend.
    database(fake, backends=39)
    fake.add(P + 100, b"app", rss_kib=500 * MIB, shmem_kib=0, oom_score=666 + 40)
    cands = sample(fake.fs, Tracker(), 1.0, frozenset(), set(), False, shared=Shared(fake.fs))
    assert sum(not c.sized for c in cands) == 41 - 32
    victim = Ranking(fake.fs, cands, Rules(SELF), PER_KIB).next()
    assert victim is not None and victim.candidate.comm == b"app"


def test_the_next_sample_sizes_the_largest_by_what_they_free(fake: FakeProc) -> None:
    database(fake, backends=39)
    fake.add(P + 100, b"app", rss_kib=500 * MIB, shmem_kib=0, oom_score=666 + 40)
    shared, tracker = Shared(fake.fs), Tracker()
    sample(fake.fs, tracker, 1.0, frozenset(), set(), False, shared=shared)
    for now in (2.0, 3.0):
        cands = sample(fake.fs, tracker, now, frozenset(), set(), False, shared=shared)
    app = next(c for c in cands if c.comm == b"app")
    assert app.sized and P + 100 in tracker.tracked()


# -- the growth tracker follows the largest ---------------------------------------

def test_tracker_never_refuses_a_newcomer() -> None:
    t = Tracker()
    for pid in range(MAX_TRACKED):
        t.add(1.0, pid, 1, 1000 + pid)
    t.add(1.0, 999, 1, 5)  # full: the smallest (pid 0) makes room
    assert len(t) == MAX_TRACKED and 999 in t.tracked() and 0 not in t.tracked()


def test_follow_keeps_the_top_and_the_largest_tracked() -> None:
    t = Tracker()
    for pid in range(MAX_TRACKED):
        t.add(1.0, pid, 1, 1000 * pid)
    alive = set(range(MAX_TRACKED)) | {500, 501}
    keep = t.follow([(500, 10), (501, 20), (3, 3000)], alive)
    # Newcomers and the top are followed; the smallest tracked outside the
    # top make room; the gone are forgotten.
    assert {500, 501, 3} <= keep and len(keep) == MAX_TRACKED
    assert 0 not in keep and 1 not in keep and MAX_TRACKED - 1 in keep
    keep = t.follow([(500, 10)], {500, 7})
    assert keep == {500, 7}


def test_a_leaker_after_a_long_watch_is_tracked(fake: FakeProc) -> None:
    # Review M2: two waves of 40 processes, then a leaker: it is sampled.
    tracker = Tracker()
    for wave in range(2):
        for i in range(40):
            fake.add(P + wave * 100 + i, b"worker", rss_kib=50 * MIB, shmem_kib=0,
                     oom_score=300)
        sample(fake.fs, tracker, 1.0 + wave, frozenset(), set(), False)
    fake.add(P + 500, b"leaker", rss_kib=600 * MIB, shmem_kib=0, oom_score=400)
    sample(fake.fs, tracker, 3.0, frozenset(), set(), False)
    fake.set_status_sizes(P + 500, 700 * MIB)
    cands = sample(fake.fs, tracker, 4.0, frozenset(), set(), False)
    leaker = next(c for c in cands if c.comm == b"leaker")
    assert leaker.growth_kib > 0 and leaker.growth_s == 1.0


# -- Trust: what only root could have put there ----------------------------------

def test_a_root_owned_executable_in_root_owned_folders_is_trusted(fake: FakeProc) -> None:
    true = os.path.realpath("/usr/bin/true").encode()
    fake.add(P, b"true", exe=true)
    t = read_trust(fake.fs, P, true)
    assert t.same and t.root_only and t.why == ""


def test_a_copy_in_a_folder_others_can_write_is_not(fake: FakeProc, tmp_path: Path) -> None:
    copy = tmp_path / "sshd"
    shutil.copy("/usr/bin/true", copy)
    fake.add(P, b"sshd", exe=str(copy).encode())
    t = read_trust(fake.fs, P, str(copy).encode())
    assert t.same and not t.root_only
    assert "writable by group or others" in t.why or "owned by uid" in t.why


def test_a_users_own_executable_is_not(fake: FakeProc, tmp_path: Path) -> None:
    copy = tmp_path / "sshd"
    shutil.copy("/usr/bin/true", copy)
    os.chown(copy, 65534, 65534)
    fake.add(P, b"sshd", exe=str(copy).encode())
    t = read_trust(fake.fs, P, str(copy).encode())
    assert not t.root_only and t.why == f"its executable {copy} is owned by uid 65534"
    copy.chmod(0o777)
    os.chown(copy, 0, 0)
    t = read_trust(fake.fs, P, str(copy).encode())
    assert t.why == f"its executable {copy} is writable by group or others"


def test_a_file_that_is_not_the_one_at_its_path_is_not(fake: FakeProc, tmp_path: Path) -> None:
    # What a user's bind mount in their own mount namespace would show: the
    # running file (the exe link) is not the file at the path it names.
    running = tmp_path / "python3"
    shutil.copy("/usr/bin/true", running)
    fake.add(P, b"sshd", exe=str(running).encode())
    t = read_trust(fake.fs, P, b"/usr/bin/true")
    assert not t.same and not t.root_only and "does not run the file at" in t.why
    assert not read_trust(fake.fs, P, b"").same


def test_folder_mode_and_owner_are_checked(tmp_path: Path, fake: FakeProc) -> None:
    folder = tmp_path / "bin"
    folder.mkdir()
    exe = folder / "tool"
    shutil.copy("/usr/bin/true", exe)
    fake.add(P, b"tool", exe=str(exe).encode())
    os.chown(folder, 65534, 65534)
    t = read_trust(fake.fs, P, str(exe).encode())
    assert t.why == f"folder {folder} is owned by uid 65534"
    assert stat.S_IMODE(os.stat("/tmp").st_mode) & 0o002  # /tmp itself: others may write


# -- the whole choice: forged names, the default avoid list ---------------------------

def rules(**kw: object) -> Rules:
    return Rules(SELF, **kw)  # type: ignore[arg-type]


def test_a_forged_basename_protects_nothing(fake: FakeProc, tmp_path: Path) -> None:
    # nobody's copy named sshd (300 MiB) and a root-owned real executable (60 MiB):
    # -u sshd spares neither the copy nor, by its name, the system's files.
    copy = tmp_path / "sshd"
    shutil.copy("/usr/bin/true", copy)
    os.chown(copy, 65534, 65534)
    fake.add(P, b"sshd", rss_kib=300 * MIB, shmem_kib=0, oom_score=700, uid=65534,
             exe=str(copy).encode())
    fake.add(P + 1, b"true", rss_kib=60 * MIB, shmem_kib=0, oom_score=670,
             exe=os.path.realpath("/usr/bin/true").encode())
    cands = sample(fake.fs, Tracker(), 1.0, frozenset(), set(), False)
    r = rules(unkillables=["sshd"], ignore=re.compile("^sshd$"), avoid=re.compile("sshd"))
    ranking = Ranking(fake.fs, cands, r, PER_KIB)
    victim = ranking.next()
    assert victim is not None and victim.candidate.pid == P
    assert ranking.notes[P].startswith("matches --unkillables 'sshd', --ignore '^sshd$', "
                                       "--avoid 'sshd' by name only: its executable")
    # The real one, by its name, is protected.
    ranking = Ranking(fake.fs, cands, rules(unkillables=["true"]), PER_KIB)
    assert [v.candidate.pid for v in iter(ranking.next, None)] == [P]
    assert ranking.skipped[0][1] == "matches --unkillables 'true'"


SESSION = os.path.realpath("/usr/bin/true").encode()  # stands in for /usr/bin/gnome-shell


def session_tree(fake: FakeProc, app_mib: int) -> list[Candidate]:
    fake.add(P, b"gnome-shell", rss_kib=900 * MIB, shmem_kib=0, oom_score=666 + 75,
             exe=SESSION)
    fake.add(P + 1, b"app", rss_kib=app_mib * MIB, shmem_kib=0, oom_score=666 + 40)
    fake.add(P + 2, b"tiny", rss_kib=20 * MIB, shmem_kib=0, oom_score=666 + 2)
    return sample(fake.fs, Tracker(), 1.0, frozenset(), set(), False)


def order(fake: FakeProc, cands: list[Candidate], need_kib: int) -> list[int]:
    r = rules(default_avoid=[SESSION.decode()])
    return [v.candidate.pid for v in iter(Ranking(fake.fs, cands, r, PER_KIB,
                                                   need_kib=need_kib).next, None)]


def test_a_session_process_yields_to_any_candidate_that_frees_enough(fake: FakeProc) -> None:
    cands = session_tree(fake, 500)
    assert order(fake, cands, 0) == [P + 1, P + 2, P]  # need unknown: last
    assert order(fake, session_tree(fake, 500), 400 * MIB) == [P + 1, P, P + 2]


def test_a_session_process_dies_when_nothing_else_frees_enough(fake: FakeProc) -> None:
    # The emergency needs 700 MiB: only the session process frees that much.
    cands = session_tree(fake, 500)
    assert order(fake, cands, 700 * MIB) == [P, P + 1, P + 2]
    # 2 GiB: nobody frees that alone; the session process comes after the rest.
    assert order(fake, session_tree(fake, 500), 2 << 20) == [P + 1, P + 2, P]


def test_the_default_list_matches_nothing_without_the_very_file(fake: FakeProc) -> None:
    # A process whose exe link names /usr/bin/true but runs another file.
    fake.add(P, b"gnome-shell", rss_kib=900 * MIB, shmem_kib=0, oom_score=666 + 75,
             exe=SESSION)
    cands = sample(fake.fs, Tracker(), 1.0, frozenset(), set(), False)
    r = rules(default_avoid=["/usr/bin/gnome-shell"])
    ranking = Ranking(fake.fs, cands, r, PER_KIB)
    victim = ranking.next()
    assert victim is not None and not victim.candidate.session



def test_a_session_process_yields_first_to_one_not_avoided(fake: FakeProc) -> None:
    # The app (500 MiB) is also --avoid'ed: the session process yields first to
    # the worker (300 MiB), which nothing avoids, then to the app.
    session_tree(fake, 500)
    fake.set_exe(P + 1, os.path.realpath("/usr/bin/env").encode())
    fake.add(P + 3, b"worker", rss_kib=300 * MIB, shmem_kib=0, oom_score=666 + 20)
    cands = sample(fake.fs, Tracker(), 1.0, frozenset(), set(), False)
    r = rules(default_avoid=[SESSION.decode()], avoid=re.compile("^env$"))
    got = [v.candidate.pid for v in iter(Ranking(fake.fs, cands, r, PER_KIB,
                                                  need_kib=100 * MIB).next, None)]
    assert got == [P + 3, P + 1, P, P + 2]
