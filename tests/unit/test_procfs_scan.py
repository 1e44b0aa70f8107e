"""ProcFS error mapping, scan() and read_details() on fake /proc trees."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from bustd.process import (
    PF_KTHREAD,
    Candidate,
    Details,
    read_details,
    read_exe,
    read_starttime,
    read_status,
    scan,
)
from bustd.procfs import NoSuchProcess, ProcFS
from tests.fakeproc import FAKE_PID, PAGE_KIB, FakeProc, stat_line

P = FAKE_PID


def pids(cands: list[Candidate]) -> list[int]:
    return sorted(c.pid for c in cands)


@pytest.fixture
def fake(tmp_path: Path) -> FakeProc:
    f = FakeProc(tmp_path / "proc")
    f.set_meminfo(8 << 20, 4 << 20)
    return f


# -- ProcFS -----------------------------------------------------------------

def test_root_is_normalised() -> None:
    assert ProcFS("/proc/").root == "/proc"
    assert ProcFS("/").root == "/"
    assert ProcFS("/x//").path("meminfo") == "/x/meminfo"


def test_read_pid_missing_file_is_no_such_process(fake: FakeProc) -> None:
    fake.add(P)
    fake.remove_file(P, "oom_score")
    with pytest.raises(NoSuchProcess) as info:
        fake.fs.read_pid(P, "oom_score")
    assert info.value.pid == P
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.ENOENT
    assert "oom_score" in str(info.value)


def test_read_pid_missing_process_is_no_such_process(fake: FakeProc) -> None:
    with pytest.raises(NoSuchProcess):
        fake.fs.read_pid(P + 1, "stat")


def test_read_pid_other_errors_propagate(fake: FakeProc) -> None:
    fake.add(P)
    os.mkdir(fake.path(f"{P}/weird"))  # reading a directory: EISDIR, not a vanished process
    with pytest.raises(OSError) as info:
        fake.fs.read_pid(P, "weird")
    assert not isinstance(info.value, NoSuchProcess)
    assert info.value.errno == errno.EISDIR


def test_read_pid_respects_size(fake: FakeProc) -> None:
    fake.add(P, cmdline=b"x" * 10_000)
    assert len(fake.fs.read_pid(P, "cmdline", 100)) == 100


def test_read_of_missing_system_file_is_plain_oserror(fake: FakeProc) -> None:
    with pytest.raises(FileNotFoundError):
        fake.fs.read("pressure/memory")
    assert fake.fs.read("meminfo").startswith(b"MemTotal:")


def test_pids_lists_only_numeric_entries(fake: FakeProc) -> None:
    fake.add(P)
    fake.add(P + 1)
    for name in ("self", "sys", "12a", "1.5"):
        os.makedirs(fake.path(name))
    assert sorted(fake.fs.pids()) == [P, P + 1]


# -- scan -------------------------------------------------------------------

def test_scan_reads_cheap_fields(fake: FakeProc) -> None:
    fake.add(P, b"fire fox) S (", pgrp=P - 5, starttime=4242, rss_kib=300 * PAGE_KIB,
             oom_score=777)
    (c,) = scan(fake.fs)
    assert (c.pid, c.oom_score, c.rss_kib, c.starttime, c.pgrp, c.comm) == (
        P, 777, 300 * PAGE_KIB, 4242, P - 5, b"fire fox) S (")


def test_scan_skips_pid1_self_kernel_threads_and_zombies(fake: FakeProc) -> None:
    fake.add(1, b"systemd")
    fake.add(P, b"bustd")
    fake.add(P + 1, b"kworker/0:1", flags=0x04208060)
    fake.add(P + 2, b"kthreadd", flags=PF_KTHREAD)
    for i, state in enumerate((b"Z", b"X", b"x")):
        fake.add(P + 3 + i, b"dead", state=state)
    for i, state in enumerate((b"R", b"S", b"D", b"T", b"t", b"I")):
        fake.add(P + 10 + i, b"alive", state=state)
    assert pids(scan(fake.fs, frozenset((P,)))) == [P + 10 + i for i in range(6)]
    assert P in pids(scan(fake.fs))  # only skipped when asked


def test_scan_skips_process_without_oom_score(fake: FakeProc) -> None:
    fake.add(P)
    fake.add(P + 1)
    fake.remove_file(P + 1, "oom_score")  # exited between reading stat and oom_score
    assert pids(scan(fake.fs)) == [P]


def test_scan_skips_process_without_stat(fake: FakeProc) -> None:
    fake.add(P)
    os.makedirs(fake.path(str(P + 1)))  # an empty folder: exited, being cleaned up
    assert pids(scan(fake.fs)) == [P]


@pytest.mark.parametrize(("name", "data"), [
    ("stat", b""),
    ("stat", b"12 (trunc"),
    ("stat", b"\xff\x00garbage"),
    ("oom_score", b""),
    ("oom_score", b"lots\n"),
])
def test_scan_skips_half_written_files(fake: FakeProc, name: str, data: bytes) -> None:
    fake.add(P)
    fake.add(P + 1)
    fake.write(f"{P + 1}/{name}", data)
    assert pids(scan(fake.fs)) == [P]


class VanishingFS(ProcFS):
    """A tree where ``victim`` exits right after its stat is read."""

    __slots__ = ("fake", "victim", "listed")

    def __init__(self, fake: FakeProc, victim: int, listed: list[int]) -> None:
        super().__init__(fake.root)
        self.fake = fake
        self.victim = victim
        self.listed = listed

    def pids(self) -> list[int]:
        return self.listed  # may name folders already gone

    def read_pid(self, pid: int, name: str, size: int = 4096) -> bytes:
        data = super().read_pid(pid, name, size)
        if pid == self.victim and name == "stat":
            self.fake.remove(pid)
        return data


def test_scan_survives_processes_vanishing_mid_scan(fake: FakeProc) -> None:
    for i in range(4):
        fake.add(P + i)
    fs = VanishingFS(fake, P + 1, [P, P + 1, P + 2, P + 9, P + 3])  # P+9 listed, gone
    assert pids(scan(fs)) == [P, P + 2, P + 3]
    assert not os.path.exists(fake.path(str(P + 1)))


def test_scan_of_missing_root_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        scan(ProcFS(str(tmp_path / "nope")))


def _scan_as_nobody(root: str) -> str:
    """Run scan() in a child process with uid 65534; return its result as text."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            out = ",".join(str(p) for p in pids(scan(ProcFS(root))))
            os.write(w, out.encode())
            code = 0
        except BaseException as err:
            os.write(w, f"error {err!r}".encode())
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 4096):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


def test_scan_skips_unreadable_files(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root reads any file: drop to nobody in a child, on a tree nobody can reach.
        root = tempfile.mkdtemp(prefix="bustd-fakeproc-")
        try:
            os.chmod(root, 0o755)
            fake = FakeProc(root)
            for i in range(3):
                fake.add(P + i)
                os.chmod(fake.path(str(P + i)), 0o755)
            os.chmod(fake.path(f"{P + 1}/oom_score"), 0)
            os.chmod(fake.path(f"{P + 2}/stat"), stat.S_IWUSR)
            assert _scan_as_nobody(root) == f"{P}"
        finally:
            shutil.rmtree(root)
    else:
        fake = FakeProc(tmp_path)
        for i in range(3):
            fake.add(P + i)
        os.chmod(fake.path(f"{P + 1}/oom_score"), 0)
        os.chmod(fake.path(f"{P + 2}/stat"), stat.S_IWUSR)
        assert pids(scan(fake.fs)) == [P]


# -- read_details / read_starttime ---------------------------------------------

def exe_name(d: Details) -> bytes:
    """Return the basename of ``d``'s executable (b"" when unknown)."""
    return d.exe.rsplit(b"/", 1)[-1]


def test_read_details(fake: FakeProc) -> None:
    fake.add(P, b"Web Content", uid=1234, oom_score_adj=-500, rss_kib=2048 * PAGE_KIB,
             cmdline=b"/usr/lib/firefox/firefox\0-contentproc\0", exe=b"/usr/lib/firefox/firefox")
    d = read_details(fake.fs, P)
    assert (d.uid, d.oom_score_adj, d.exe) == (1234, -500, b"/usr/lib/firefox/firefox")
    assert exe_name(d) == b"firefox"


@pytest.mark.parametrize(("target", "exe"), [
    (b"/usr/bin/python3.11", b"/usr/bin/python3.11"),
    (b"/opt/app/bin/app (deleted)", b"/opt/app/bin/app"),  # replaced by an upgrade
    (b"/tmp/a b/c\n(x)", b"/tmp/a b/c\n(x)"),
    (b"", b""),  # no link: a zombie, or another user's process when not root
])
def test_read_exe(fake: FakeProc, target: bytes, exe: bytes) -> None:
    fake.add(P, exe=target)
    assert read_exe(fake.fs, P) == exe
    assert read_details(fake.fs, P).exe == exe


def test_exe_is_not_argv0(fake: FakeProc) -> None:
    # exec -a /usr/sbin/sshd sleep 300
    fake.add(P, b"sleep", cmdline=b"/usr/sbin/sshd\x00300\x00", exe=b"/usr/bin/sleep")
    assert exe_name(read_details(fake.fs, P)) == b"sleep"


def test_read_exe_of_vanished_process(fake: FakeProc) -> None:
    with pytest.raises(NoSuchProcess):
        read_exe(fake.fs, P)


def test_read_details_of_vanished_process(fake: FakeProc) -> None:
    fake.add(P)
    fake.remove_file(P, "status")
    with pytest.raises(NoSuchProcess):
        read_details(fake.fs, P)
    fake.remove(P)
    with pytest.raises(NoSuchProcess):
        read_details(fake.fs, P)


def test_read_details_garbage(fake: FakeProc) -> None:
    fake.add(P)
    fake.write(f"{P}/oom_score_adj", b"nope\n")
    with pytest.raises(ValueError):
        read_details(fake.fs, P)


def test_read_details_never_reads_cmdline(fake: FakeProc) -> None:
    # cmdline is served under the target's mmap_lock (issue 10): not on the kill path.
    fake.add(P)
    fake.remove_file(P, "cmdline")
    os.mkdir(fake.path(f"{P}/cmdline"))  # reading it would fail with EISDIR
    assert read_details(fake.fs, P).uid == 1000
    assert pids(scan(fake.fs, want_exe=True)) == [P]


def test_read_status(fake: FakeProc) -> None:
    fake.add(P, rss_kib=4096, swap_kib=1024, threads=7, uid=33)
    st = read_status(fake.fs, P)
    assert (st.uid, st.rss_kib, st.swap_kib, st.threads) == (33, 4096, 1024, 7)
    fake.set_status_sizes(P, 8192, 0)
    assert (read_status(fake.fs, P).rss_kib, read_status(fake.fs, P).swap_kib) == (8192, 0)


def test_scan_reads_exe_only_when_wanted(fake: FakeProc) -> None:
    fake.add(P, exe=b"/opt/x")
    (c,) = scan(fake.fs)
    assert c.exe is None
    (c,) = scan(fake.fs, want_exe=True)
    assert c.exe == b"/opt/x"
    assert (c.freeable_kib, c.growth_kib, c.growth_s) == (c.rss_kib, 0, 0.0)


# -- zombie leaders (issue 10, defect 3) -----------------------------------------

def add_thread(fake: FakeProc, pid: int, tid: int, state: bytes = b"S",
               rss_kib: int = 0) -> None:
    fake.write(f"{pid}/task/{tid}/stat",
               stat_line(tid, b"worker", state, rss_pages=rss_kib // PAGE_KIB))


def test_zombie_leader_with_live_threads_is_a_candidate(fake: FakeProc) -> None:
    # The main thread exited; 200 MiB live on in the other threads.
    fake.add(P, b"leaderless", state=b"Z", rss_kib=0, threads=3, oom_score=900)
    add_thread(fake, P, P, b"Z")
    add_thread(fake, P, P + 7, b"Z")
    add_thread(fake, P, P + 8, b"S", rss_kib=200 * 1024)
    (c,) = scan(fake.fs)
    assert (c.pid, c.rss_kib, c.oom_score) == (P, 200 * 1024, 900)


def test_zombie_with_no_live_thread_is_skipped(fake: FakeProc) -> None:
    fake.add(P, b"dead", state=b"Z", threads=1)
    assert scan(fake.fs) == []
    fake.add(P + 1, b"dying", state=b"Z", threads=2)  # Threads says 2, all are gone
    add_thread(fake, P + 1, P + 1, b"Z")
    add_thread(fake, P + 1, P + 9, b"X")
    assert scan(fake.fs) == []
    fake.add(P + 2, b"notasks", state=b"Z", threads=2)  # task/ already gone
    assert scan(fake.fs) == []


def test_read_starttime(fake: FakeProc) -> None:
    fake.add(P, starttime=123456789)
    assert read_starttime(fake.fs, P) == 123456789
    fake.remove(P)
    with pytest.raises(NoSuchProcess):
        read_starttime(fake.fs, P)
