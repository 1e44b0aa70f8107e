"""kill.py on real processes that are the test's own children, with injected faults.

Nothing here chooses a victim: every signal goes to a child this test
started (``sleep`` or a small Python), by its explicit PID, after the
identity check kill.py performs. Faults (EPERM, EMFILE, ENOMEM, a process
that survives SIGKILL) are injected by replacing the functions kill.py calls,
always wrapping the real ones for every other PID.
"""

from __future__ import annotations

import errno
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bustd import kill, sig
from bustd.process import read_starttime
from bustd.procfs import ProcFS
from tests.fakeproc import FAKE_PID, FakeProc

REPO = str(Path(__file__).resolve().parents[2])
FS = ProcFS("/proc")
SIGTERM, SIGKILL = int(sig.SIGTERM), int(sig.SIGKILL)
STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)")


def open_fds() -> list[str]:
    """The descriptors this process holds now (not the one that listed them)."""
    held = []
    for name in os.listdir("/proc/self/fd"):
        try:
            os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:
            continue  # the listing's own descriptor, closed by now
        held.append(name)
    return sorted(held)


class Children:
    """Child processes of this test; each is killed and reaped at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def sleep(self) -> subprocess.Popen[bytes]:
        """Start ``sleep 60``."""
        p = subprocess.Popen(["sleep", "60"])
        self.procs.append(p)
        return p

    def stubborn(self) -> subprocess.Popen[bytes]:
        """Start a Python that ignores SIGTERM, once it does."""
        p = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE)
        self.procs.append(p)
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"
        p.stdout.close()
        return p

    def target(self, p: subprocess.Popen[bytes]) -> kill.Target:
        """The Target of child ``p`` as a scan would see it."""
        for _ in range(100):  # /proc/PID/stat exists once the fork is done
            try:
                return kill.Target(p.pid, read_starttime(FS, p.pid))
            except Exception:
                time.sleep(0.01)
        raise AssertionError(f"child {p.pid} has no readable stat")

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()  # our own child, by its PID
            p.wait(10)


@pytest.fixture
def kids() -> Iterator[Children]:
    c = Children()
    try:
        yield c
    finally:
        c.cleanup()


def alive(p: subprocess.Popen[bytes]) -> bool:
    """Whether child ``p`` has not exited (a zombie has), without reaping it."""
    try:
        st = os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return st is None


def only_for(pid: int, real: Callable[..., Any], err: int,
             signals: tuple[int, ...] = ()) -> Callable[..., Any]:
    """Wrap ``real`` (first argument a PID or pidfd) to fail with ``err`` for ``pid``.

    With ``signals``, only those signals fail (or, with err 0, are dropped).
    """
    def wrapper(first: int, *args: Any) -> Any:
        target = first
        if real is sig.pidfd_send_signal or getattr(real, "__name__", "") == "pidfd_send_signal":
            target = pidfd_pid(first)
        if target == pid and (not signals or args[0] in signals):
            if err == 0:
                return None
            raise OSError(err, os.strerror(err))
        return real(first, *args)
    return wrapper


def via(t: kill.Target) -> str:
    """How signals were sent to ``t``: ``pidfd``, or ``kill()`` (its note says why)."""
    return "kill()" if t.note else "pidfd"


def pidfd_pid(fd: int) -> int:
    """The PID a pidfd refers to (``Pid:`` in its fdinfo)."""
    with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
        for line in f:
            if line.startswith(b"Pid:"):
                return int(line.split()[1])
    return -1


def run(targets: list[kill.Target], first: int = SIGTERM, grace: float = 1.0,
        settle: float | None = None) -> kill.Outcome:
    """signal_targets on the real /proc with the real clock."""
    return kill.signal_targets(FS, targets, first, grace, time.monotonic,
                               kill.KILL_SETTLE if settle is None else settle)


# --- the plain path -----------------------------------------------------------------------

def test_sigterm_kills_through_the_pidfd_and_closes_it(kids: Children) -> None:
    p = kids.sleep()
    t = kids.target(p)
    before = open_fds()
    out = run([t])
    assert t.state == kill.EXITED and via(t) == "pidfd" and t.why == "" and t.note == "", t
    assert out.last == SIGTERM and out.signalled and 0 <= out.took < 1.0
    assert t.fd == -1 and open_fds() == before
    assert p.wait(5) == -SIGTERM


def test_ignored_sigterm_escalates_to_sigkill_after_grace(kids: Children) -> None:
    p = kids.stubborn()
    out = run([kids.target(p)], grace=0.3)
    assert out.targets[0].state == kill.EXITED
    assert out.last == SIGKILL and 0.3 <= out.took < 2.0, out
    assert p.wait(5) == -SIGKILL


def test_sigkill_first_is_not_repeated(kids: Children) -> None:
    p = kids.sleep()
    out = run([kids.target(p)], first=SIGKILL)
    assert out.targets[0].state == kill.EXITED and out.last == SIGKILL
    assert p.wait(5) == -SIGKILL


def test_exited_before_the_signal_is_gone(kids: Children) -> None:
    p = kids.sleep()
    t = kids.target(p)
    p.kill()
    p.wait()
    out = run([t])
    assert t.state == kill.GONE and "exited before the signal" in t.why
    assert out.last == 0 and not out.signalled


def test_recycled_pid_is_gone_and_not_signalled(kids: Children) -> None:
    p = kids.sleep()
    t = kids.target(p)
    t.starttime -= 1  # as if the scanned process had been another one
    out = run([t])
    assert t.state == kill.GONE and "was recycled" in t.why, t
    assert not out.signalled and alive(p)


def test_recycled_pid_is_spared_without_pidfds(kids: Children,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "pidfd_open")
    p = kids.sleep()
    t = kids.target(p)
    t.starttime += 1
    out = run([t])
    assert t.state == kill.GONE and "was recycled" in t.why and via(t) == "kill()", t
    assert not out.signalled and alive(p)


# --- defect 1: refusals -------------------------------------------------------------------

@pytest.mark.parametrize("err", [errno.EPERM, errno.EACCES])
def test_refused_target_is_reported_and_the_group_still_signalled(
        kids: Children, monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    a, b, c = kids.sleep(), kids.sleep(), kids.sleep()
    monkeypatch.setattr(sig, "pidfd_send_signal", only_for(b.pid, sig.pidfd_send_signal, err))
    monkeypatch.setattr(os, "kill", only_for(b.pid, os.kill, err))
    targets = [kids.target(x) for x in (a, b, c)]
    before = open_fds()
    out = run(targets)
    assert [t.state for t in targets] == [kill.EXITED, kill.REFUSED, kill.EXITED], out
    text = os.strerror(err)
    assert targets[1].why == f"pidfd_send_signal: {text}; kill(): {text}"
    assert out.having(kill.REFUSED) == [targets[1]]
    assert alive(b) and a.wait(5) == -SIGTERM and c.wait(5) == -SIGTERM
    assert open_fds() == before


def test_refused_main_victim_alone_is_not_raised(kids: Children,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    p = kids.stubborn()
    monkeypatch.setattr(sig, "pidfd_send_signal",
                        only_for(p.pid, sig.pidfd_send_signal, errno.EPERM))
    monkeypatch.setattr(os, "kill", only_for(p.pid, os.kill, errno.EPERM))
    out = run([kids.target(p)], first=SIGKILL)
    assert out.targets[0].state == kill.REFUSED and not out.signalled and out.last == 0
    assert alive(p)


def test_pidfd_send_signal_refused_falls_back_to_checked_kill(
        kids: Children, monkeypatch: pytest.MonkeyPatch) -> None:
    """A seccomp filter that answers EPERM for pidfd_send_signal but allows kill()."""
    p = kids.stubborn()
    monkeypatch.setattr(sig, "pidfd_send_signal",
                        only_for(p.pid, sig.pidfd_send_signal, errno.EPERM))
    t = kids.target(p)
    out = run([t], grace=0.2)
    assert t.state == kill.EXITED and via(t) == "kill()", t
    assert t.note == "pidfd_send_signal: Operation not permitted"
    assert out.last == SIGKILL and p.wait(5) == -SIGKILL


@pytest.mark.parametrize("err", [errno.EPERM, errno.EACCES, errno.ENOSYS, errno.ENOMEM])
def test_pidfd_open_failing_falls_back_to_checked_kill(
        kids: Children, monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    p = kids.sleep()
    monkeypatch.setattr(os, "pidfd_open", only_for(p.pid, os.pidfd_open, err))
    t = kids.target(p)
    before = open_fds()
    out = run([t])
    assert t.state == kill.EXITED and t.note == f"pidfd_open: {os.strerror(err)}", t
    assert out.last == SIGTERM and p.wait(5) == -SIGTERM and open_fds() == before


def test_pidfd_open_and_kill_both_refused_is_refused(
        kids: Children, monkeypatch: pytest.MonkeyPatch) -> None:
    p = kids.sleep()
    monkeypatch.setattr(os, "pidfd_open", only_for(p.pid, os.pidfd_open, errno.EPERM))
    monkeypatch.setattr(os, "kill", only_for(p.pid, os.kill, errno.EPERM))
    t = kids.target(p)
    run([t])
    assert t.state == kill.REFUSED and t.why == "kill(): Operation not permitted", t
    assert alive(p)


def test_unexpected_send_error_fails_one_target_only(
        kids: Children, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = kids.sleep(), kids.sleep()
    monkeypatch.setattr(sig, "pidfd_send_signal",
                        only_for(a.pid, sig.pidfd_send_signal, errno.EINVAL))
    ta, tb = kids.target(a), kids.target(b)
    before = open_fds()
    out = run([ta, tb])
    assert ta.state == kill.FAILED and ta.why == "pidfd_send_signal: Invalid argument"
    assert tb.state == kill.EXITED and out.signalled and open_fds() == before
    assert alive(a)


# --- defect 2: a victim that survives SIGKILL ---------------------------------------------

def test_survivor_is_returned_dying_quickly_with_its_pidfd(
        kids: Children, monkeypatch: pytest.MonkeyPatch) -> None:
    p = kids.stubborn()
    # SIGKILL "does not work" on p: dropped, as a frozen task would ignore it.
    monkeypatch.setattr(sig, "pidfd_send_signal",
                        only_for(p.pid, sig.pidfd_send_signal, 0, (SIGKILL,)))
    t = kids.target(p)
    before = open_fds()
    began = time.monotonic()
    out = run([t], grace=0.2, settle=0.2)
    assert time.monotonic() - began < 1.5, "the loop was blocked by a survivor"
    assert t.state == kill.DYING and out.last == SIGKILL and 0.4 <= out.took < 1.5, out
    assert t.fd >= 0 and os.fstat(t.fd) is not None
    # Not really sent SIGKILL, so the kernel does not consider it dying.
    assert t.mrelease in ("process_mrelease: Invalid argument",
                        "process_mrelease not supported (Linux < 5.15)"), t
    assert open_fds() == sorted([*before, str(t.fd)]), (open_fds(), before, t.fd)
    assert not kill.exited(FS, t)
    p.kill()  # really, now: the test's own child
    p.wait(5)
    assert kill.exited(FS, t)
    kill.close_pidfd(t)
    kill.close_pidfd(t)  # twice is harmless
    assert t.fd == -1 and open_fds() == before


def test_survivor_still_running_is_waited_for_up_to_exit_wait(
        kids: Children, monkeypatch: pytest.MonkeyPatch) -> None:
    """A survivor in state R is freeing its memory: choosing another now would overkill."""
    p = subprocess.Popen([sys.executable, "-c", "print('ready', flush=True)\nwhile True: pass"],
                         stdout=subprocess.PIPE)
    kids.procs.append(p)
    assert p.stdout is not None and p.stdout.readline() == b"ready\n"
    monkeypatch.setattr(sig, "pidfd_send_signal",
                        only_for(p.pid, sig.pidfd_send_signal, 0, (SIGKILL,)))
    monkeypatch.setattr(kill, "EXIT_WAIT", 0.8)
    t = kids.target(p)
    out = run([t], first=SIGKILL, settle=0.1)
    assert t.state == kill.DYING and 0.75 <= out.took < 1.5, out
    kill.close_pidfd(t)


def test_survivor_without_pidfd_is_followed_in_proc(
        kids: Children, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "pidfd_open")
    p = kids.sleep()
    monkeypatch.setattr(os, "kill", only_for(p.pid, os.kill, 0, (SIGKILL,)))
    t = kids.target(p)
    before = open_fds()
    out = run([t], first=SIGKILL, settle=0.1)
    assert t.state == kill.DYING and t.fd == kill.NO_PIDFD and out.took < 1.0, t
    assert t.mrelease == "no pidfd for process_mrelease"
    assert not kill.exited(FS, t) and open_fds() == before
    monkeypatch.undo()
    p.kill()  # really, now
    p.wait(5)
    assert kill.exited(FS, t)
    kill.close_pidfd(t)
    assert t.fd == -1


def test_reap_reports_what_the_kernel_said(kids: Children) -> None:
    p = kids.sleep()
    t = kids.target(p)
    assert kill.release_memory(t) == "no pidfd for process_mrelease"
    t.fd = os.pidfd_open(p.pid)
    try:
        first = kill.release_memory(t)  # alive and not killed: not "dying"
        p.kill()
        p.wait(5)
        gone = kill.release_memory(t)  # reaped: nothing left to free
    finally:
        kill.close_pidfd(t)
    if first == "process_mrelease not supported (Linux < 5.15)":
        assert gone == first
    else:
        assert first == "process_mrelease: Invalid argument"
        assert gone == "process_mrelease: No such process"


# --- defect 8 and RLIMIT_NOFILE: descriptors --------------------------------------------

def fail_read_starttime(monkeypatch: pytest.MonkeyPatch, pid: int, err: int,
                        times: int = 1000) -> None:
    """Make kill's identity read of ``pid`` fail with ``err`` ``times`` times."""
    real = read_starttime  # what kill.py imported
    left = [times]

    def fake(fs: ProcFS, p: int) -> int:
        if p == pid and left[0] > 0:
            left[0] -= 1
            raise OSError(err, os.strerror(err))
        return real(fs, p)
    monkeypatch.setattr(kill, "read_starttime", fake)


def test_enomem_in_the_identity_read_closes_every_pidfd(
        kids: Children, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, c = kids.sleep(), kids.sleep(), kids.sleep()
    targets = [kids.target(x) for x in (a, b, c)]
    fail_read_starttime(monkeypatch, c.pid, errno.ENOMEM)
    before = open_fds()
    for _ in range(3):  # the loop retries every second: nothing may pile up
        for t in targets[2:]:
            run([t])
            assert t.state == kill.FAILED
            assert t.why == "cannot check its identity: stat: Cannot allocate memory"
        assert open_fds() == before
    out = run(targets)
    assert [t.state for t in targets] == [kill.EXITED, kill.EXITED, kill.FAILED], out
    assert alive(c) and open_fds() == before


@pytest.mark.parametrize("err", [errno.EMFILE, errno.ENFILE])
def test_no_descriptor_for_the_identity_read_uses_kill_for_all(
        kids: Children, monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    a, b, c = kids.sleep(), kids.sleep(), kids.sleep()
    targets = [kids.target(x) for x in (a, b, c)]
    fail_read_starttime(monkeypatch, b.pid, err, times=1)  # the pidfd took the last one
    before = open_fds()
    out = run(targets)
    assert [t.state for t in targets] == [kill.EXITED] * 3, out
    assert all(via(t) == "kill()" and "EMFILE" in t.note for t in targets)
    assert open_fds() == before and out.last == SIGTERM


@pytest.mark.parametrize("err", [errno.EMFILE, errno.ENFILE])
def test_pidfd_open_without_a_descriptor_uses_kill(
        kids: Children, monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    a, b = kids.sleep(), kids.stubborn()
    monkeypatch.setattr(os, "pidfd_open", only_for(b.pid, os.pidfd_open, err))
    targets = [kids.target(x) for x in (a, b)]
    before = open_fds()
    out = run(targets, grace=0.2)
    assert [t.state for t in targets] == [kill.EXITED] * 2
    assert [via(t) for t in targets] == ["kill()"] * 2, out
    assert out.last == SIGKILL and b.wait(5) == -SIGKILL and open_fds() == before


# A real RLIMIT_NOFILE, in a child interpreter (this one must keep its descriptors):
# descriptors are filled up to the limit, then ``free`` of them are closed.
RLIMIT = r"""
import errno, json, os, resource, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from bustd import kill
from bustd.process import read_starttime
from bustd.procfs import ProcFS
fs = ProcFS("/proc")
free = int(sys.argv[2])
child = subprocess.Popen(["sleep", "60"])
time.sleep(0.1)
target = kill.Target(child.pid, read_starttime(fs, child.pid))
resource.setrlimit(resource.RLIMIT_NOFILE, (32, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
filler = []
while True:
    try:
        filler.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as err:
        assert err.errno == errno.EMFILE
        break
for _ in range(free):
    os.close(filler.pop())
before = len(os.listdir("/proc/self/fd")) if free else None
out = kill.signal_targets(fs, [target], 15, 1.0, time.monotonic)
after = len(os.listdir("/proc/self/fd")) if free else None
for fd in filler:
    os.close(fd)
alive = child.poll() is None
child.kill()
print(json.dumps({"state": target.state, "why": target.why, "note": target.note,
                  "rc": child.wait(), "alive": alive, "fds": [before, after]}))
"""


def in_child(code: str, *args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", code, REPO, *args], capture_output=True,
                         text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_rlimit_nofile_reached_still_kills_through_checked_kill() -> None:
    # One descriptor free, as after a scan: the pidfd takes it, the identity
    # read finds none, so all pidfds are closed and kill() is used.
    r = in_child(RLIMIT, "1")
    assert r["state"] == kill.EXITED and r["rc"] == -SIGTERM, r
    assert r["note"] == "no free file descriptor for a pidfd (EMFILE/ENFILE)"
    assert r["fds"][0] == r["fds"][1], r


def test_rlimit_nofile_without_any_descriptor_fails_without_signalling() -> None:
    r = in_child(RLIMIT, "0")
    assert r["state"] == kill.FAILED and r["alive"], r
    assert r["why"] == "cannot check its identity: stat: Too many open files"


# --- a Python without pidfd functions -----------------------------------------------------

NO_PIDFD_PYTHON = r"""
import json, os, subprocess, sys, time
import _signal
del os.pidfd_open, _signal.pidfd_send_signal
sys.path.insert(0, sys.argv[1])
from bustd import kill, runtime, sig
from bustd.process import read_starttime
from bustd.procfs import ProcFS
fs = ProcFS("/proc")
try:
    sig.pidfd_send_signal(0, 0)
    stub = "no error"
except OSError as err:
    stub = str(err)
child = subprocess.Popen([sys.executable, "-c", sys.argv[2]], stdout=subprocess.PIPE)
child.stdout.readline()
target = kill.Target(child.pid, read_starttime(fs, child.pid))
out = kill.signal_targets(fs, [target], 15, 0.3, time.monotonic)
print(json.dumps({"state": target.state, "note": target.note, "last": out.last,
                  "rc": child.wait(5), "stub": stub}))
"""


def test_python_without_pidfd_functions_imports_and_kills() -> None:
    r = in_child(NO_PIDFD_PYTHON, STUBBORN)
    assert r["state"] == kill.EXITED and r["last"] == SIGKILL and r["rc"] == -SIGKILL, r
    assert r["note"] == "this Python has no os.pidfd_open"
    assert r["stub"] == "[Errno 38] this Python has no signal.pidfd_send_signal"


def test_pidfd_without_pidfd_send_signal_kills_with_kill_and_waits_on_the_pidfd(
        kids: Children, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(*args: object) -> None:
        raise OSError(errno.ENOSYS, "this Python has no signal.pidfd_send_signal")
    monkeypatch.setattr(sig, "pidfd_send_signal", missing)
    p = kids.stubborn()
    t = kids.target(p)
    out = run([t], grace=0.2)
    assert t.state == kill.EXITED and out.last == SIGKILL
    assert t.note == "pidfd_send_signal: this Python has no signal.pidfd_send_signal"
    assert p.wait(5) == -SIGKILL


# --- waiting on the right thing -----------------------------------------------------------

# A process whose main thread has exited while another thread lives and
# ignores SIGTERM: /proc shows the leader as a zombie (issue 10, defect 3).
ZOMBIE_LEADER = (
    "import ctypes, signal, threading, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "threading.Thread(target=time.sleep, args=(60,)).start()\n"
    "print('ready', flush=True)\n"
    "ctypes.CDLL(None).pthread_exit(None)\n")


@pytest.mark.parametrize("pidfd", [True, False])
def test_zombie_leader_with_a_live_thread_is_not_taken_for_exited(
        kids: Children, monkeypatch: pytest.MonkeyPatch, pidfd: bool) -> None:
    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open")
    p = subprocess.Popen([sys.executable, "-c", ZOMBIE_LEADER], stdout=subprocess.PIPE)
    kids.procs.append(p)
    assert p.stdout is not None and p.stdout.readline() == b"ready\n"
    t = kids.target(p)
    for _ in range(100):
        if FS.read_pid(p.pid, "stat").rsplit(b")", 1)[1].split()[0] == b"Z":
            break
        time.sleep(0.01)
    else:
        raise AssertionError("the main thread did not exit")
    out = run([t], grace=0.3)
    assert t.state == kill.EXITED and out.last == SIGKILL, out
    assert p.wait(5) == -SIGKILL


def test_exited_in_a_fake_tree_follows_state_threads_and_starttime(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path)
    fs = fake.fs
    t = kill.Target(FAKE_PID, 1000)
    t.fd = kill.NO_PIDFD
    fake.add(FAKE_PID, b"x", starttime=1000)
    assert not kill.exited(fs, t)
    fake.add(FAKE_PID, b"x", state=b"Z", starttime=1000)
    fake.write(f"{FAKE_PID}/status", b"Name:\tx\nState:\tZ (zombie)\nThreads:\t3\n")
    assert not kill.exited(fs, t)
    fake.write(f"{FAKE_PID}/status", b"Name:\tx\nState:\tZ (zombie)\nThreads:\t1\n")
    assert kill.exited(fs, t)
    fake.add(FAKE_PID, b"x", starttime=1001)  # another process at that PID
    assert kill.exited(fs, t)
    fake.remove(FAKE_PID)
    assert kill.exited(fs, t)


# --- no descriptor lost, whatever fails -------------------------------------------------

def test_descriptors_are_closed_when_poll_itself_fails(
        kids: Children, monkeypatch: pytest.MonkeyPatch) -> None:
    class BrokenPoll:
        def register(self, fd: int, events: int) -> None:
            pass

        def poll(self, timeout: int) -> list[tuple[int, int]]:
            raise OSError(errno.ENOMEM, "poll failed")

    a, b = kids.sleep(), kids.sleep()
    targets = [kids.target(a), kids.target(b)]
    monkeypatch.setattr(select, "poll", BrokenPoll)
    before = open_fds()
    with pytest.raises(OSError, match="poll failed"):
        run(targets)
    assert open_fds() == before and all(t.fd == -1 for t in targets)


def test_targets_are_reset_for_a_second_call(kids: Children) -> None:
    p = kids.sleep()
    t = kids.target(p)
    t.starttime += 1
    run([t])
    assert t.state == kill.GONE
    t.starttime -= 1
    out = run([t])
    assert t.state == kill.EXITED and t.why == "" and out.signalled


# -- rehearsal (issue 10: a warm kill path) --------------------------------------

def test_rehearse_walks_the_kill_path_against_itself_and_sends_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[int] = []
    real = sig.pidfd_send_signal

    def record(fd: int, signum: int, *args: Any) -> None:
        sent.append(signum)
        real(fd, signum, *args)

    monkeypatch.setattr(sig, "pidfd_send_signal", record)
    monkeypatch.setattr(os, "kill", lambda *a: pytest.fail(f"kill{a} during a rehearsal"))
    before = open_fds()
    kill.rehearse(FS, os.getpid(), time.monotonic)
    assert sent == [0]  # signal 0: a permission check, nothing delivered
    assert open_fds() == before


def test_rehearse_of_a_missing_process_is_quiet(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path)
    fake.add(FAKE_PID)  # in the tree, but no such process on this kernel
    before = open_fds()
    kill.rehearse(fake.fs, FAKE_PID, time.monotonic)
    kill.rehearse(fake.fs, FAKE_PID + 1, time.monotonic)  # not even in the tree
    assert open_fds() == before
