"""A fake cgroup v2 hierarchy for tests: folders with the memory files bustd reads.

    cg = FakeCgroup(tmp_path / "cgroup")          # the "mount point" (the root cgroup)
    work = cg.add("work", procs=[FAKE_PID], current_mib=90, max_mib=100)
    fake_proc.write("self/mountinfo", cg.mountinfo())

Files are rewritten in place (same inode), so a descriptor bustd keeps open
sees the new text on its next ``pread``, as with the kernel's files. The
root has no ``cgroup.type``, like the kernel's root cgroup; every other
folder has one, and ``cgroup.kill`` unless ``kill=False`` (a kernel before
5.14). Writing "1" to a fake ``cgroup.kill`` kills nothing: tests read it back.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable

__all__ = ["MIB", "FakeCgroup", "stat_text"]

MIB = 1 << 20  # bytes


def stat_text(anon: int = 0, active_file: int = 0, inactive_file: int = 0,
              slab_reclaimable: int = 0, refault_anon: int | None = 0,
              pswpin: int | None = None) -> bytes:
    """Return ``memory.stat`` text (sizes in bytes, counters in pages)."""
    lines = [f"anon {anon}", f"file {active_file + inactive_file + 4096}",
             "kernel_stack 16384", "shmem 4096", f"inactive_anon {anon}",
             "active_anon 0", f"inactive_file {inactive_file}", f"active_file {active_file}",
             "unevictable 0", f"slab_reclaimable {slab_reclaimable}", "slab_unreclaimable 8192"]
    if refault_anon is not None:
        lines.append(f"workingset_refault_anon {refault_anon}")
    lines.append("workingset_refault_file 7")
    if pswpin is not None:
        lines.append(f"pswpin {pswpin}")
    lines += ["pgfault 12345", "pgmajfault 3"]
    return ("\n".join(lines) + "\n").encode()


class FakeCgroup:
    """A fake cgroup2 mount at ``root`` (created if missing)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)
        os.makedirs(self.root, exist_ok=True)
        self.write("", "cgroup.procs", b"")
        self.write("", "cgroup.controllers", b"cpuset cpu io memory pids\n")
        self.write("", "memory.stat", stat_text())
        self.write("", "memory.pressure", self.pressure_text())

    def path(self, rel: str) -> str:
        """Return the folder of the cgroup ``rel`` ("" for the root)."""
        return os.path.join(self.root, rel) if rel else self.root

    def write(self, rel: str, name: str, data: bytes) -> None:
        """Write ``data`` to the file ``name`` of cgroup ``rel``, in place."""
        folder = self.path(rel)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)

    def read(self, rel: str, name: str) -> bytes:
        """Return the content of the file ``name`` of cgroup ``rel``."""
        with open(os.path.join(self.path(rel), name), "rb") as f:
            return f.read()

    @staticmethod
    def pressure_text(some_us: int = 0, full_us: int = 0) -> bytes:
        """Return ``memory.pressure`` text with these stalled microseconds."""
        return (f"some avg10=0.00 avg60=0.00 avg300=0.00 total={some_us}\n"
                f"full avg10=0.00 avg60=0.00 avg300=0.00 total={full_us}\n").encode()

    def add(self, rel: str, procs: Iterable[int] = (), *, current_mib: float = 10,
            max_mib: float | None = None, high_mib: float | None = None,
            file_mib: float = 0, swap_current_mib: float | None = 0,
            swap_max_mib: float | None = None, kill: bool = True) -> str:
        """Create cgroup ``rel`` with these figures; return its folder.

        ``None`` for a limit writes ``max``; ``swap_current_mib=None``
        leaves the swap files out (no swap accounting). ``file_mib`` is
        inactive page cache (reclaimable).
        """
        folder = self.path(rel)
        self.write(rel, "cgroup.type", b"domain\n")
        self.write(rel, "cgroup.controllers", b"memory pids\n")
        self.write(rel, "cgroup.events", b"populated 1\nfrozen 0\n")
        if kill:
            self.write(rel, "cgroup.kill", b"")
        self.set_procs(rel, procs)
        self.set_memory(rel, current_mib=current_mib, max_mib=max_mib, high_mib=high_mib,
                        file_mib=file_mib)
        if swap_current_mib is not None:
            self.write(rel, "memory.swap.current", b"%d\n" % int(swap_current_mib * MIB))
            self.write(rel, "memory.swap.max", self._limit(swap_max_mib))
        self.set_pressure(rel)
        return folder

    @staticmethod
    def _limit(mib: float | None) -> bytes:
        return b"max\n" if mib is None else b"%d\n" % int(mib * MIB)

    def set_memory(self, rel: str, *, current_mib: float, max_mib: float | None = None,
                   high_mib: float | None = None, file_mib: float = 0,
                   refault_anon: int | None = 0, pswpin: int | None = None) -> None:
        """Rewrite memory.current, memory.max, memory.high and memory.stat of ``rel``."""
        self.write(rel, "memory.current", b"%d\n" % int(current_mib * MIB))
        self.write(rel, "memory.max", self._limit(max_mib))
        self.write(rel, "memory.high", self._limit(high_mib))
        file_bytes = int(file_mib * MIB)
        self.write(rel, "memory.stat", stat_text(
            anon=max(0, int(current_mib * MIB) - file_bytes), inactive_file=file_bytes,
            refault_anon=refault_anon, pswpin=pswpin))

    def set_procs(self, rel: str, pids: Iterable[int]) -> None:
        """Rewrite ``cgroup.procs`` of ``rel``."""
        self.write(rel, "cgroup.procs", "".join(f"{p}\n" for p in pids).encode())

    def set_pressure(self, rel: str, some_us: int = 0, full_us: int = 0) -> None:
        """Rewrite ``memory.pressure`` of ``rel``."""
        self.write(rel, "memory.pressure", self.pressure_text(some_us, full_us))

    def remove(self, rel: str) -> None:
        """Remove cgroup ``rel`` and everything below it (a stopped service)."""
        shutil.rmtree(self.path(rel))

    def killed(self, rel: str) -> bool:
        """Return whether "1" was written to ``cgroup.kill`` of ``rel``."""
        return self.read(rel, "cgroup.kill") == b"1"

    def mountinfo(self) -> bytes:
        """Return ``/proc/self/mountinfo`` text with this hierarchy mounted at its root."""
        point = self.root.replace(" ", "\\040")
        return (b"22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
                b"35 22 0:30 / " + point.encode() + b" rw,nosuid,nodev,noexec,relatime "
                b"shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n")
