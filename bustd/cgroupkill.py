"""Finding and killing victims' cgroups (--kill-cgroup; --cgroup for membership).

:class:`Units` finds the cgroup of a process from ``/proc/PID/cgroup`` and
who is in a cgroup's subtree; :func:`refusal` says why a cgroup may not die
whole, and :func:`kill` kills it with ``cgroup.kill`` (kill.kill_cgroup
checks once more right before). Loaded with the watch-zone modules, only
with ``--cgroup`` or ``--kill-cgroup``; reading a cgroup is cgroup.py.
"""

from __future__ import annotations

import os

from .cgroup import (
    TooManyCgroups,
    cgroup_mount,
    leaf_of,
    members,
    parse_mountinfo,
    parse_procs,
    read_all,
)
from .procfs import NoSuchProcess, ProcFS

__all__ = ["Units", "kill", "members_by_proc", "refusal", "units_of"]


def members_by_proc(units: Units, path: str) -> dict[int, str]:
    """Return :func:`members` of ``path`` found the other way round: each
    process's ``/proc/PID/cgroup``, one read per process whatever the number
    of cgroups (for a subtree with more than MAX_CGROUPS of them)."""
    top = path.rstrip("/") or "/"
    below = top.rstrip("/") + "/"
    out: dict[int, str] = {}
    for pid in units.fs.pids():
        leaf = units.leaf(pid)
        if leaf == top or leaf.startswith(below):
            out[pid] = leaf
    return out


def refusal(path: str, pids: dict[int, str] | list[int], self_pid: int) -> str | None:
    """Return why the cgroup at ``path`` may not be killed whole, or None.

    ``pids`` are the processes of its subtree (:func:`members`), which
    ``cgroup.kill`` would all kill: never bustd itself, nor PID 1. The root
    cgroup (the only one without ``cgroup.type``) is never killed.
    """
    if not os.path.exists(f"{path}/cgroup.type"):
        return "it is the root cgroup" if os.path.isdir(path) else "it is gone"
    if self_pid in pids:
        return f"it holds bustd itself (pid {self_pid})"
    if 1 in pids:
        return "it holds PID 1"
    return None


def kill(path: str) -> None:
    """Kill every process in the cgroup at ``path`` and below (``cgroup.kill``, Linux 5.14).

    Raises OSError: ENOENT without ``cgroup.kill`` (an older kernel, or the
    cgroup is gone), EROFS/EACCES where the hierarchy is read-only to bustd
    (systemd's ProtectControlGroups=).
    """
    fd = os.open(f"{path}/cgroup.kill", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, b"1")
    finally:
        os.close(fd)


class Units:
    """Where a process's cgroup is, who is in it, and whether it may die whole.

    ``mount`` is (root, mount point) of the cgroup v2 hierarchy (from
    ``/proc/self/mountinfo``), None when none is mounted.
    """

    __slots__ = ("fs", "mount")

    def __init__(self, fs: ProcFS, mount: tuple[str, str] | None) -> None:
        self.fs = fs
        self.mount = mount

    def leaf(self, pid: int) -> str:
        """Return the folder of the cgroup holding ``pid`` ("" if unknown or gone)."""
        try:
            text = self.fs.read_pid(pid, "cgroup")
        except (NoSuchProcess, OSError):
            return ""
        return leaf_of(text, self.mount) or ""

    def members(self, folder: str) -> dict[int, str]:
        """Return the processes of the subtree at ``folder`` (see :func:`members`)."""
        return members(folder)

    def subtree(self, folder: str) -> dict[int, str]:
        """Return the processes of the watched subtree at ``folder`` (--cgroup):
        :func:`members`, or :func:`members_by_proc` where it has more cgroups
        than members() walks, so that a subtree that wide is still watched."""
        try:
            return members(folder)
        except TooManyCgroups:
            return members_by_proc(self, folder)

    def holds(self, folder: str, pid: int) -> bool:
        """Return whether ``folder``'s own ``cgroup.procs`` lists ``pid`` now."""
        try:
            return pid in parse_procs(read_all(f"{folder}/cgroup.procs"))
        except (OSError, ValueError):
            return False

    def refusal(self, folder: str, pids: dict[int, str], self_pid: int) -> str | None:
        """Return why the cgroup at ``folder`` may not be killed whole (see :func:`refusal`)."""
        return refusal(folder, pids, self_pid)


def units_of(fs: ProcFS) -> tuple[Units, OSError | None]:
    """Return the :class:`Units` of the cgroup v2 hierarchy ``fs``'s
    ``self/mountinfo`` shows, and the error if it cannot be read (then no
    process's cgroup is known)."""
    try:
        mount = cgroup_mount(parse_mountinfo(fs.read("self/mountinfo", 1 << 20)))
    except OSError as err:
        return Units(fs, None), err
    return Units(fs, mount), None
