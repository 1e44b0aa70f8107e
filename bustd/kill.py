"""Killing through pidfds: identity re-check, signal, wait, escalate, let go.

Contract of :func:`signal_targets`, the one entry point:

* **Identity.** A PID can be recycled between the scan and the signal. For
  each target bustd opens a pidfd, then checks that the process now at that
  PID has the start time seen in the scan: the scanned process existed
  before the pidfd was opened and still exists after, so the pidfd refers to
  it and the signal cannot reach a newcomer.
* **Without a pidfd** (kernels before 5.3, a Python built without
  ``os.pidfd_open``/``signal.pidfd_send_signal``, EMFILE/ENFILE, a
  seccomp or LSM denial of the pidfd calls) the identity check comes right
  before ``kill()``; ``Target.note`` says why, so the caller can log it.
  With no free descriptor (EMFILE/ENFILE) every pidfd of the call is closed
  so that each identity check has the descriptor it needs.
* **Every target gets a state**: EXITED, DYING (alive after SIGKILL),
  GONE (exited or PID recycled before the signal), REFUSED (the kernel
  said EPERM/EACCES: this process cannot be signalled, pass it over) or
  FAILED (could not be checked or signalled, e.g. ENOMEM: not signalled,
  may work later). One target's failure never stops the others.
* **Waiting.** Exit is awaited by polling the pidfds (readable once the
  process has exited), without a pidfd by reading /proc every 50 ms. After
  SIGTERM bustd waits ``grace`` seconds, then sends SIGKILL. After SIGKILL it
  waits only ``settle`` seconds: a process that survives that (a frozen
  cgroup, uninterruptible sleep) will not die sooner for being waited on.
  Its memory is released at once with ``process_mrelease`` (Linux 5.15),
  and it is returned as DYING with its pidfd still open. Only a survivor
  that is still running (freeing its memory on its way out) is waited for
  longer, up to EXIT_WAIT seconds after SIGKILL.
* **Descriptors.** Nothing returned holds a descriptor except DYING
  targets, whose pidfd now belongs to the caller: check them later with
  :func:`exited` (never blocks) and close them with :func:`close_pidfd`. On
  every other path, exceptions included, every descriptor opened is closed.

Nothing raises for a single target; only a failure of ``poll`` itself (or
a bug) propagates, after every descriptor has been closed.
"""

from __future__ import annotations

import errno
import os
import select

from . import sig
from .process import DEAD_STATES, parse_stat, parse_status_threads, read_starttime
from .procfs import NoSuchProcess, ProcFS, start_thread

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Sequence

__all__ = ["DYING", "EXIT_WAIT", "EXITED", "FAILED", "FREED", "GONE", "KILL_SETTLE",
           "NO_PIDFD", "Outcome", "PENDING", "REFUSED", "Target", "close_pidfd", "exited",
           "kill_cgroup", "rehearse", "release_memory", "signal_targets"]

# After SIGKILL a process that is not stuck exits within milliseconds plus
# the time to unmap its memory (measured on a 2-core VM: 5 ms at 64 MiB,
# 63 ms at 1 GiB, 128 ms at 2 GiB). One that is frozen or in uninterruptible
# sleep does not exit sooner for being waited on, and each second spent
# waiting is a second the loop is blind. 0.2 s lets ordinary victims of a
# few GiB be reported as exited; for the others process_mrelease frees the
# memory at once and the caller follows them with exited().
KILL_SETTLE = 0.2
# ...except while a survivor is still running (state R): it is then tearing
# down its memory after exit_mm(), where the memory is in neither its RSS nor
# MemAvailable, and process_mrelease can do nothing more. Choosing another
# victim before it is done would be a second kill for one emergency, so such
# a survivor is waited for, up to EXIT_WAIT seconds after SIGKILL (teardown
# takes about 63 ms per GiB here, several times that on a starved CPU).
EXIT_WAIT = 3.0
NO_PIDFD = -2  # Target.fd when the target is signalled with kill(), without a pidfd
FALLBACK_POLL = 0.05  # seconds between /proc checks when there is no pidfd

# Target states.
PENDING = "pending"  # not handled yet
EXITED = "exited"    # signalled, and exited
DYING = "dying"      # sent SIGKILL, still alive after ``settle``: the caller owns ``fd``
GONE = "gone"        # exited or PID recycled before the signal: nothing sent
REFUSED = "refused"  # EPERM/EACCES: the kernel will not let bustd signal it
FAILED = "failed"    # could not be checked or signalled (ENOMEM, no descriptor...)

# Target.mrelease when process_mrelease succeeded: the memory is freed, or is
# already being freed by the exit (the kernel answers 0 once exit_mm() ran).
FREED = "memory released"
# Longest wait for process_mrelease before the loop goes on (it finishes in
# its thread); freeing a few GiB takes about 63 ms per GiB unstarved.
MRELEASE_WAIT = 0.25

# process_mrelease(2), Linux 5.15: one number on every architecture since
# the syscall tables were unified at 424, except alpha (which adds 110).
_NR_PROCESS_MRELEASE = 448
_NR_PROCESS_MRELEASE_ALPHA = 558
_REFUSED = frozenset((errno.EPERM, errno.EACCES))
_NO_ROOM = frozenset((errno.EMFILE, errno.ENFILE))


class Target:
    """A process to signal, identified by its PID and scanned start time.

    After :func:`signal_targets`: ``state`` is one of the states above;
    ``why`` explains GONE, REFUSED and FAILED; ``note`` is empty when the
    pidfd was used, else why ``kill()`` was; ``mrelease`` is the outcome of
    process_mrelease for a target alive after SIGKILL (:data:`FREED` on
    success), empty if not tried; ``fd`` is the pidfd of a DYING target
    (NO_PIDFD if it has none) and -1 otherwise.
    """

    __slots__ = ("pid", "starttime", "fd", "state", "why", "note", "mrelease")

    def __init__(self, pid: int, starttime: int) -> None:
        self.pid = pid
        self.starttime = starttime
        self.fd = -1
        self.state = PENDING
        self.why = ""
        self.note = ""
        self.mrelease = ""

    def __repr__(self) -> str:
        return (f"Target(pid={self.pid}, starttime={self.starttime}, state={self.state}, "
                f"fd={self.fd}, why={self.why!r}, note={self.note!r}, mrelease={self.mrelease!r})")


class Outcome:
    """What :func:`signal_targets` did.

    ``targets`` are the targets given, in order, each with its state;
    ``last`` is the last signal sent to any of them (0 if none was sent);
    ``took`` is the seconds from the first signal until all signalled
    targets had exited, or until DYING ones were given up on;
    ``cgroup_note`` why a cgroup asked to be killed whole was not ("" when
    it was, or none was asked).
    """

    __slots__ = ("targets", "last", "took", "cgroup_note")

    def __init__(self, targets: list[Target], last: int, took: float,
                 cgroup_note: str = "") -> None:
        self.targets = targets
        self.last = last
        self.took = took
        self.cgroup_note = cgroup_note

    def having(self, *states: str) -> list[Target]:
        """Return the targets in any of ``states``, in the order given."""
        return [t for t in self.targets if t.state in states]

    @property
    def signalled(self) -> bool:
        """Whether any target was signalled (it is EXITED or DYING)."""
        return any(t.state in (EXITED, DYING) for t in self.targets)

    def __repr__(self) -> str:
        return f"Outcome(last={self.last}, took={self.took:.3f}, targets={self.targets})"


def _why(call: str, err: OSError) -> str:
    return f"{call}: {err.strerror or err}"


def _set(target: Target, state: str, why: str = "") -> None:
    target.state = state
    target.why = why


def _gone(target: Target, again: bool, why: str) -> None:
    """Record a target found gone: EXITED if a signal reached it before, else GONE."""
    if again:
        _set(target, EXITED)
    else:
        _set(target, GONE, why)


def _identity(fs: ProcFS, target: Target) -> str | None:
    """Return why the process now at ``target.pid`` is not the target, or None.

    Raises OSError when /proc cannot be read for another reason (ENOMEM,
    EMFILE): then nobody knows who the PID belongs to.
    """
    try:
        now = read_starttime(fs, target.pid)
    except (NoSuchProcess, ValueError):
        return "exited before the signal"
    if now != target.starttime:
        return f"PID {target.pid} was recycled (start time {target.starttime} -> {now})"
    return None


def _close(target: Target) -> None:
    if target.fd >= 0:
        fd, target.fd = target.fd, -1
        os.close(fd)


def _open(fs: ProcFS, target: Target) -> bool:
    """Open a pidfd for ``target`` and check its identity.

    Sets ``target.fd`` (a pidfd or NO_PIDFD, with ``note`` saying why) or
    the state GONE/FAILED. Returns False only when no descriptor was free
    (EMFILE/ENFILE), so the caller must make room; ``target`` then holds none.
    """
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        target.fd, target.note = NO_PIDFD, "this Python has no os.pidfd_open"
        return True
    try:
        target.fd = opener(target.pid)
    except ProcessLookupError:
        _set(target, GONE, "exited before the signal")
        return True
    except OSError as err:
        if err.errno in _NO_ROOM:
            return False
        # ENOSYS (Linux < 5.3), EPERM from a seccomp filter, ENOMEM...: a
        # pidfd makes the kill safer but is never a precondition for it.
        target.fd, target.note = NO_PIDFD, _why("pidfd_open", err)
        return True
    try:
        why = _identity(fs, target)
    except OSError as err:
        _close(target)
        if err.errno in _NO_ROOM:
            return False
        _set(target, FAILED, f"cannot check its identity: {_why('stat', err)}")
        return True
    if why is not None:
        _close(target)
        _set(target, GONE, why)
    return True


def _kill_checked(fs: ProcFS, target: Target, signum: int, again: bool) -> bool:
    """Send ``signum`` with kill() right after the identity check.

    Returns whether it was sent; if not, sets the state (see :func:`_send`).
    The window between the check and kill() is far shorter than any PID
    reuse.
    """
    try:
        why = _identity(fs, target)
    except OSError as err:
        _set(target, FAILED, f"cannot check its identity: {_why('stat', err)}")
        return False
    if why is None:
        try:
            os.kill(target.pid, signum)
            return True
        except ProcessLookupError:
            why = "exited before the signal"
        except OSError as err:
            why = _why("kill()", err)
            if target.note.startswith("pidfd_send_signal"):
                why = f"{target.note}; {why}"
            _set(target, REFUSED if err.errno in _REFUSED else FAILED, why)
            return False
    _gone(target, again, why)
    return False


def _send(fs: ProcFS, target: Target, signum: int, again: bool) -> bool:
    """Send ``signum`` to ``target``; return whether it was sent.

    If not, sets the state: GONE if it was gone before any signal (EXITED if
    ``again``, a signal having been sent before), REFUSED on EPERM/EACCES
    from every way tried, FAILED on other errors.
    """
    if not target.note:
        try:
            sig.pidfd_send_signal(target.fd, signum)
            return True
        except ProcessLookupError:
            _gone(target, again, "exited before the signal")
            return False
        except OSError as err:
            if err.errno not in _REFUSED and err.errno != errno.ENOSYS:
                _set(target, FAILED, _why("pidfd_send_signal", err))
                return False
            # A seccomp filter answering EPERM for a syscall it does not know
            # (systemd's SystemCallErrorNumber=EPERM), or a Python without
            # pidfd_send_signal: kill() may still be allowed. The pidfd stays
            # open for the wait.
            target.note = _why("pidfd_send_signal", err)
    return _kill_checked(fs, target, signum, again)


def _threads(fs: ProcFS, pid: int) -> int:
    """Return the ``Threads:`` count of ``pid``, 0 if it cannot be read."""
    try:
        # Whole: Threads: comes after a long Groups: line.
        return parse_status_threads(fs.read_pid_all(pid, "status"))
    except (NoSuchProcess, OSError, ValueError):
        return 0


def _exited_proc(fs: ProcFS, target: Target) -> bool:
    """Without a pidfd: whether ``target`` has exited (gone, zombie or replaced).

    A zombie leader whose other threads still run has not exited (its
    memory is still held). Returns False when /proc cannot tell (EMFILE).
    """
    try:
        st = parse_stat(fs.read_pid(target.pid, "stat"))
    except (NoSuchProcess, ValueError):
        return True
    except OSError:
        return False
    if st.starttime != target.starttime:
        return True
    return st.state in DEAD_STATES and _threads(fs, target.pid) <= 1


def _running(fs: ProcFS, target: Target) -> bool:
    """Whether ``target`` is on a CPU or waiting for one (state R), so making progress.

    A frozen task or one in uninterruptible sleep shows D; a zombie leader
    shows Z. False when /proc cannot tell.
    """
    try:
        st = parse_stat(fs.read_pid(target.pid, "stat"))
    except (NoSuchProcess, ValueError, OSError):
        return False
    return st.starttime == target.starttime and st.state == ord("R")


def exited(fs: ProcFS, target: Target) -> bool:
    """Return whether a signalled ``target`` has exited, without blocking.

    Polls its pidfd with a zero timeout, or without one reads /proc. Meant
    for DYING targets the caller keeps between checks. Never raises for a
    vanished process; on a /proc read error it answers False.
    """
    if target.fd >= 0:
        poller = select.poll()
        poller.register(target.fd, select.POLLIN)
        return bool(poller.poll(0))
    return _exited_proc(fs, target)


def close_pidfd(target: Target) -> None:
    """Close the pidfd of ``target``, if it holds one (idempotent)."""
    _close(target)
    if target.fd == NO_PIDFD:
        target.fd = -1


def release_memory(target: Target, timeout: float = MRELEASE_WAIT) -> str:
    """Free the memory of a SIGKILLed ``target`` now with process_mrelease(2).

    Returns :data:`FREED`, or why not: no pidfd, a kernel before 5.15
    (ENOSYS), a process not dying or sharing its memory (EINVAL), already
    reaped (ESRCH), or a call still under way after ``timeout`` s. The
    call runs in a thread of its own on a copy of the pidfd: it takes the
    victim's mmap_lock, which a writer stuck on a hung filesystem can hold
    for good, and the loop must decide again meanwhile (review M6); the
    thread ends by itself when the call does. Never raises.
    """
    if target.fd < 0:
        return "no pidfd for process_mrelease"
    import _thread

    try:
        fd = os.dup(target.fd)  # close-on-exec, as every dup
    except OSError as err:
        return f"process_mrelease: {os.strerror(err.errno or 0)}"
    done = _thread.allocate_lock()
    done.acquire()
    result = ["process_mrelease still under way (the victim's memory lock is held)"]

    def call() -> None:
        try:
            result[0] = _mrelease(fd)
        finally:
            os.close(fd)
            done.release()

    if not start_thread(call):  # a small stack, locked by mlockall
        call()  # no thread to spare: call it here
    done.acquire(True, max(0.0, timeout))
    return result[0]


def _mrelease(fd: int) -> str:
    """Call process_mrelease(2) on pidfd ``fd``; return FREED or why not."""
    import ctypes  # loaded once by the runtime (lock_memory); free here

    nr = _NR_PROCESS_MRELEASE_ALPHA if os.uname().machine == "alpha" else _NR_PROCESS_MRELEASE
    libc = ctypes.CDLL(None, use_errno=True)
    # syscall(2) reads longs: pass longs, not ctypes' default ints.
    if libc.syscall(ctypes.c_long(nr), ctypes.c_long(fd), ctypes.c_long(0)) == 0:
        return FREED
    err = ctypes.get_errno()
    if err == errno.ENOSYS:
        return "process_mrelease not supported (Linux < 5.15)"
    return f"process_mrelease: {os.strerror(err)}"


def _wait(fs: ProcFS, targets: list[Target], timeout: float,
          clock: Callable[[], float]) -> list[Target]:
    """Wait up to ``timeout`` s for ``targets`` to exit; return those still alive.

    Pidfds become readable when their process exits; targets without one
    are checked in /proc every FALLBACK_POLL seconds.
    """
    alive = list(targets)
    poller = select.poll()
    for t in alive:
        if t.fd >= 0:
            poller.register(t.fd, select.POLLIN)
    deadline = clock() + timeout
    while alive:
        left = deadline - clock()
        if left <= 0:
            break
        if any(t.fd < 0 for t in alive):
            left = min(left, FALLBACK_POLL)
        done = {fd for fd, _ in poller.poll(max(1, int(left * 1000)))}
        for fd in done:
            poller.unregister(fd)
        alive = [t for t in alive if t.fd not in done
                 and not (t.fd < 0 and _exited_proc(fs, t))]
    return alive


def _open_all(fs: ProcFS, targets: list[Target]) -> None:
    """Give every target a pidfd, NO_PIDFD, or the state GONE/FAILED.

    With no descriptor free (EMFILE/ENFILE), every pidfd opened so far is
    closed and all targets go without one: each identity check before
    kill() then opens and closes a single descriptor, which the scan that
    chose the targets just proved available.
    """
    for t in targets:
        if _open(fs, t):
            continue
        for o in targets:
            _close(o)
            if o.state == PENDING:
                o.fd = NO_PIDFD
                o.note = "no free file descriptor for a pidfd (EMFILE/ENFILE)"
        return


def kill_cgroup(folder: str, self_pid: int,
                vet: Callable[[list[int]], str] | None = None) -> str:
    """Kill the cgroup at ``folder`` whole with ``cgroup.kill``; return "" or why not.

    Checked once more right before the write: never a cgroup holding bustd
    itself or PID 1, never the root cgroup (cgroupkill.refusal), and, with
    ``vet`` (choose.vet_members), never one holding a process that is
    protected or cannot be checked, such as one that joined it after the
    choice (review L2). Never raises.
    """
    from . import cgroup, cgroupkill  # only with --kill-cgroup
    try:
        pids = cgroup.members(folder)
        why = cgroupkill.refusal(folder, pids, self_pid)
        if why is None and vet is not None:
            why = vet(sorted(pids)) or None
    except (OSError, ValueError) as err:
        return f"cannot list its processes: {err}"
    if why is not None:
        return why
    try:
        cgroupkill.kill(folder)
    except OSError as err:
        if err.errno == errno.ENOENT and os.path.isdir(folder):
            return "no cgroup.kill (Linux < 5.14)"
        return _why("cgroup.kill", err)
    return ""


def signal_targets(fs: ProcFS, targets: Sequence[Target], first: int, grace: float,
                   clock: Callable[[], float], settle: float = KILL_SETTLE,
                   cgroup: str = "", self_pid: int = 0,
                   vet: Callable[[list[int]], str] | None = None) -> Outcome:
    """Signal ``targets`` with ``first``; escalate to SIGKILL after ``grace`` s.

    ``cgroup``: first kill that cgroup whole (:func:`kill_cgroup`, SIGKILL
    to all its processes, ``self_pid`` being bustd, ``vet`` its last
    check of the members), then SIGKILL each
    target, so that one that left the cgroup meanwhile dies too; where the
    cgroup may not be killed whole the targets get ``first`` as usual and
    ``Outcome.cgroup_note`` says why.

    Targets still alive ``settle`` s after SIGKILL get process_mrelease and
    come back DYING, their pidfd open and owned by the caller (see
    :func:`exited`, :func:`close_pidfd`); only those still running are waited
    for longer, up to EXIT_WAIT s after SIGKILL. Returns the Outcome; a
    target that cannot be signalled is in it (GONE, REFUSED, FAILED), never
    raised. Raises only if ``poll`` fails, having closed every descriptor.
    """
    todo = list(targets)
    for t in todo:
        t.fd, t.state, t.why, t.note, t.mrelease = -1, PENDING, "", "", ""
    last = 0
    note = ""
    try:
        _open_all(fs, todo)  # identities checked and pidfds held before anything dies
        start = clock()
        killed = start
        if cgroup:
            note = kill_cgroup(cgroup, self_pid, vet)
            if not note:
                first = sig.SIGKILL
                last = first
        if cgroup and not note:
            # Already killed with their cgroup: "exited" rather than "gone".
            live = [t for t in todo if t.state == PENDING and _send(fs, t, first, True)]
        else:
            live = [t for t in todo if t.state == PENDING and _send(fs, t, first, False)]
        if live:
            last = first
        if first != sig.SIGKILL and live:
            live = _wait(fs, live, grace, clock)
            if live:
                killed = clock()
                live = [t for t in live if _send(fs, t, sig.SIGKILL, True)]
                if live:
                    last = sig.SIGKILL
        if live:
            live = _wait(fs, live, settle, clock)
            for t in live:
                t.mrelease = release_memory(t)
            deadline = killed + EXIT_WAIT
            while live and any(_running(fs, t) for t in live) and clock() < deadline:
                live = _wait(fs, live, min(FALLBACK_POLL, deadline - clock()), clock)
            live = [t for t in live if not exited(fs, t)]
        for t in todo:
            if t.state == PENDING:
                t.state = DYING if t in live else EXITED
        return Outcome(todo, last, clock() - start, note)
    finally:
        for t in todo:
            if t.state != DYING:
                close_pidfd(t)


def rehearse(fs: ProcFS, pid: int, clock: Callable[[], float]) -> None:
    """Walk the code of a kill against ``pid`` (bustd itself) without signalling.

    Opens a pidfd, checks the identity, sends signal 0 (a permission check,
    nothing is delivered), polls for an exit that does not come, asks
    process_mrelease (which refuses a process that is not dying), and closes
    everything. Under mlockall(MCL_ONFAULT) this makes the pages of the kill
    path resident and locked before an emergency needs them (issue 10).
    Never raises for a failure of any step.
    """
    try:
        t = Target(pid, read_starttime(fs, pid))
    except (NoSuchProcess, ValueError, OSError):
        return
    try:
        _open_all(fs, [t])
        if t.state == PENDING and _send(fs, t, 0, False):
            _wait(fs, [t], 0.001, clock)
            exited(fs, t)
            _running(fs, t)
            release_memory(t)
    except OSError:
        pass
    finally:
        close_pidfd(t)
