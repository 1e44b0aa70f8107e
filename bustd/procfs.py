"""The one place that opens /proc files and maps OS errors.

Every reader in bustd takes a :class:`ProcFS`, whose ``root`` is ``/proc`` in
production and a fake tree in tests. Files are read in binary with raw
``os.open``/``os.read`` (one syscall each, no buffered file object) because a
scan reads several files for every process on the machine.

A process that vanishes, or whose files become unreadable, between listing
``/proc`` and reading its files is a normal event: it raises
:class:`NoSuchProcess`, which callers skip.
"""

from __future__ import annotations

import errno
import os

__all__ = ["NoSuchProcess", "ProcFS"]

# ENOENT/ESRCH: the process exited. EACCES/EPERM: hidepid or a setuid
# transition made it unreadable. EINVAL: reading a file of a dying task.
_GONE = frozenset((errno.ENOENT, errno.ESRCH, errno.EACCES, errno.EPERM, errno.EINVAL))
_FLAGS = os.O_RDONLY | os.O_CLOEXEC


class NoSuchProcess(Exception):
    """A process vanished, or became unreadable, while bustd read it."""

    def __init__(self, pid: int, name: str) -> None:
        super().__init__(f"process {pid} vanished or is unreadable ({name})")
        self.pid = pid


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
        """Return up to ``size`` bytes of a system file such as ``meminfo``.

        Raises OSError unchanged: a missing system file is not a vanished
        process, and the caller decides what it means.
        """
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

    def pids(self) -> list[int]:
        """Return the PIDs listed in the tree; raises OSError if unreadable."""
        return [int(n) for n in os.listdir(self.root) if n.isdigit()]
