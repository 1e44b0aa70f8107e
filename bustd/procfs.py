"""The one place that opens /proc files and maps OS errors."""
# Every reader in bustd takes a :class:`ProcFS`, whose ``root`` is ``/proc`` in
# production and a fake tree in tests. Files are read in binary with raw
# ``os.open``/``os.read`` (one syscall each, no buffered file object) because a
# scan reads several files for every process on the machine.
#
# A process that vanishes, or whose files become unreadable, between listing
# ``/proc`` and reading its files is a normal event: it raises
# :class:`NoSuchProcess`, which callers skip.

from __future__ import annotations

import _thread
import errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

__all__ = ["THREAD_STACK", "BackgroundRead", "NoSuchProcess", "ProcFS", "own_major_faults",
           "start_thread"]

# ENOENT/ESRCH: the process exited. EACCES/EPERM: hidepid or a setuid
# transition made it unreadable. EINVAL: reading a file of a dying task.
_GONE = frozenset((errno.ENOENT, errno.ESRCH, errno.EACCES, errno.EPERM, errno.EINVAL))
_FLAGS = os.O_RDONLY | os.O_CLOEXEC
# Field 12 of /proc/PID/stat (proc(5)), counted in the fields after the
# comm's closing ')', which start at field 3.
_MAJFLT = 12 - 3


class NoSuchProcess(Exception):
    """A process vanished, or became unreadable, while bustd read it."""

    def __init__(self, pid: int, name: str) -> None:
        super().__init__(f"process {pid} vanished or is unreadable ({name})")
        self.pid = pid


# Stack of bustd's helper threads (a BackgroundRead, background.py's writes,
# spawn.py's posix_spawn, kill.py's process_mrelease): each makes a few calls.
# Small, so that mlockall(MCL_FUTURE) on kernels without MCL_ONFAULT does not
# lock the default 8 MiB per thread.
THREAD_STACK = 256 * 1024


def start_thread(function: Callable[..., object], args: tuple[object, ...] = ()) -> bool:
    """Start ``function(*args)`` in a thread of THREAD_STACK; False if none could start."""
    old = _thread.stack_size(THREAD_STACK)
    try:
        _thread.start_new_thread(function, args)
    except RuntimeError:
        return False
    finally:
        _thread.stack_size(old)
    return True


class BackgroundRead:
    """A read of a /proc file in a thread of its own, never waited on for long."""
    # ``/proc/PID/cmdline`` is served under the target's ``mmap_lock``, which a
    # process thrashing or being torn down can hold for seconds (issue 10):
    # bustd starts the read, goes on with the kill, and takes whatever has
    # arrived by then.

    __slots__ = ("_done", "data")

    def __init__(self, path: str, size: int) -> None:
        self.data: bytes | None = None
        self._done = _thread.allocate_lock()
        self._done.acquire()
        if not start_thread(self._read, (path, size)):
            self._done.release()  # no thread could be started: go without

    def _read(self, path: str, size: int) -> None:
        try:
            fd = os.open(path, _FLAGS)
            try:
                self.data = os.read(fd, size)
            finally:
                os.close(fd)
        except OSError:
            self.data = b""
        finally:
            self._done.release()

    def done(self) -> bool:
        """Return whether the read has finished (successfully or not)."""
        if self._done.acquire(False):
            self._done.release()
            return True
        return False

    def result(self, timeout: float) -> bytes | None:
        """Return the bytes read (b"" if unreadable), or None if not done in ``timeout`` s."""
        if self._done.acquire(True, max(0.0, timeout)):
            self._done.release()
            return self.data
        return None


def own_major_faults() -> int:
    """Return bustd's own major page faults so far (field 12 of /proc/self/stat), -1 if unknown.

    Always the real /proc: bustd's own faults, whatever tree it watches.
    """
    try:
        fd = os.open("/proc/self/stat", _FLAGS)
        try:
            buf = os.read(fd, 1024)
        finally:
            os.close(fd)
        return int(buf[buf.rfind(b")") + 1:].split()[_MAJFLT])
    except (OSError, ValueError, IndexError):
        return -1


class ProcFS:
    """A /proc tree rooted at ``root`` (``/proc`` unless testing)."""

    __slots__ = ("root",)

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/") or "/"

    def path(self, rel: str) -> str:
        """Return the absolute path of ``rel`` inside this tree."""
        return f"{self.root}/{rel}"

    def open(self, rel: str, flags: int = _FLAGS) -> int:
        """Open ``rel`` and return the file descriptor; raises OSError."""
        return os.open(f"{self.root}/{rel}", flags | os.O_CLOEXEC)

    def read(self, rel: str, size: int = 65536) -> bytes:
        """Return up to ``size`` bytes of a system file such as ``meminfo``;
        raises OSError unchanged."""
        # A missing system file is not a vanished process: the caller decides
        # what it means.
        fd = os.open(f"{self.root}/{rel}", _FLAGS)
        try:
            return os.read(fd, size)
        finally:
            os.close(fd)

    def read_pid(self, pid: int, name: str, size: int = 4096) -> bytes:
        """Return up to ``size`` bytes of ``/proc/PID/name``.

        Raises NoSuchProcess if the process is gone or unreadable; other
        OSErrors propagate.
        """
        try:
            fd = os.open(f"{self.root}/{pid}/{name}", _FLAGS)
        except OSError as err:
            if err.errno in _GONE:
                raise NoSuchProcess(pid, name) from err
            raise
        try:
            return os.read(fd, size)
        except OSError as err:
            if err.errno in _GONE:
                raise NoSuchProcess(pid, name) from err
            raise
        finally:
            os.close(fd)

    def read_pid_all(self, pid: int, name: str, first: int = 8192) -> bytes:
        """Return the whole of ``/proc/PID/name``, however long (issue 13)."""
        # One read of ``first`` bytes covers nearly every ``status``; a file
        # that fills it (65536 supplementary groups make ``status`` about
        # 460 KB, with the sizes after the ``Groups:`` line) is read again
        # with a buffer eight times larger until it fits (a single-record
        # proc file gives all it has to one large read). Errors as
        # :meth:`read_pid`.
        size = first
        buf = self.read_pid(pid, name, size)
        while len(buf) >= size:
            size *= 8
            buf = self.read_pid(pid, name, size)
        return buf

    def read_pid_later(self, pid: int, name: str, size: int = 4096) -> BackgroundRead:
        """Start reading ``/proc/PID/name`` in the background (see :class:`BackgroundRead`)."""
        return BackgroundRead(f"{self.root}/{pid}/{name}", size)

    def readlink_pid(self, pid: int, name: str) -> bytes:
        """Return the target of the link ``/proc/PID/name`` (``exe``); raises
        NoSuchProcess if the process is gone or the link unreadable (another
        user's process, a zombie); other OSErrors propagate."""
        try:
            return os.readlink(f"{self.root}/{pid}/{name}".encode())
        except OSError as err:
            if err.errno in _GONE:
                raise NoSuchProcess(pid, name) from err
            raise

    def exists_pid(self, pid: int) -> bool:
        """Return whether ``/proc/PID`` exists."""
        return os.path.exists(f"{self.root}/{pid}")

    def pids(self) -> list[int]:
        """Return the PIDs listed in the tree; raises OSError if unreadable."""
        return [int(n) for n in os.listdir(self.root) if n.isdigit()]

    def tids(self, pid: int) -> list[int]:
        """Return the thread IDs of ``pid``; raises NoSuchProcess if it is gone."""
        try:
            return [int(n) for n in os.listdir(f"{self.root}/{pid}/task") if n.isdigit()]
        except OSError as err:
            if err.errno in _GONE or err.errno == errno.ENOTDIR:
                raise NoSuchProcess(pid, "task") from err
            raise
