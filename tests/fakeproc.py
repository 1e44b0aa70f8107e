"""A fake ``/proc`` tree for tests: meminfo, pressure/memory and PID folders.

Build one in a temporary folder and point bustd at it with ``ProcFS(fake.root)``
(or ``Config(proc_root=fake.root)``)::

    fake = FakeProc(tmp_path)
    fake.set_meminfo(total=8 << 20, available=4 << 20)
    fake.add(FAKE_PID, b"firefox", oom_score=800, rss_kib=2 << 20)

Files are rewritten *in place* (same inode), so a descriptor bustd keeps open
(``/proc/meminfo``, ``/proc/pressure/memory``) sees the new text on its next
``pread``, as with the kernel's files.

Use PIDs from :data:`FAKE_PID` upwards: they are above the kernel's
PID_MAX_LIMIT (4194304, include/linux/threads.h), so no real process can ever
have them, and even a mistaken signal could not reach one.
"""

from __future__ import annotations

import os
import shutil

from bustd.procfs import ProcFS

__all__ = ["FAKE_PID", "PAGE_KIB", "FakeProc", "meminfo_text", "pressure_text", "stat_line"]

FAKE_PID = 5_000_000  # > PID_MAX_LIMIT: never a real process
PAGE_KIB = os.sysconf("SC_PAGESIZE") // 1024


def stat_line(pid: int, comm: bytes, state: bytes = b"S", ppid: int = 1, pgrp: int = 0,
              flags: int = 0x400000, starttime: int = 1000, rss_pages: int = 100) -> bytes:
    """Return a ``/proc/PID/stat`` line with all 52 fields of proc(5).

    ``pgrp`` 0 means the process leads its own group (pgrp = pid).
    """
    fields: list[object] = [0] * 52
    fields[0] = pid            # 1 pid
    fields[2] = state.decode()  # 3 state
    fields[3] = ppid           # 4 ppid
    fields[4] = pgrp or pid    # 5 pgrp
    fields[5] = pgrp or pid    # 6 session
    fields[8] = flags          # 9 flags
    fields[17] = 20            # 18 priority
    fields[19] = 1             # 20 num_threads
    fields[21] = starttime     # 22 starttime
    fields[22] = rss_pages * PAGE_KIB * 1024 * 4  # 23 vsize (bytes)
    fields[23] = rss_pages     # 24 rss (pages)
    fields[24] = 2**64 - 1     # 25 rsslim
    head = f"{pid} (".encode()
    tail = (") " + " ".join(str(f) for f in fields[2:]) + "\n").encode()
    return head + comm + tail


def meminfo_text(total: int, available: int | None, swap_total: int = 0,
                 swap_free: int = 0, free: int | None = None, cached: int = 0,
                 buffers: int = 0, anon: int | None = None, shmem: int | None = None,
                 slab: int | None = None) -> bytes:
    """Return ``/proc/meminfo`` text (KiB); ``available=None`` omits MemAvailable.

    AnonPages, Shmem and SUnreclaim are written only when given.
    """
    free = available if free is None else free
    lines = [f"MemTotal:       {total} kB", f"MemFree:        {free or 0} kB"]
    if available is not None:
        lines.append(f"MemAvailable:   {available} kB")
    lines += [f"Buffers:        {buffers} kB", f"Cached:         {cached} kB",
              f"SwapCached:     {cached + 12345} kB", "Active:         1000 kB",
              f"SwapTotal:      {swap_total} kB", f"SwapFree:       {swap_free} kB",
              "Dirty:              0 kB", "HugePages_Total:       0",
              "Hugepagesize:       2048 kB"]
    for key, value in (("AnonPages", anon), ("Shmem", shmem), ("SUnreclaim", slab)):
        if value is not None:
            lines.append(f"{key}:{value:>16} kB")
    return ("\n".join(lines) + "\n").encode()


def pressure_text(some_total: int = 0, full_total: int = 0, some_avg10: float = 0.0,
                  full_avg10: float = 0.0) -> bytes:
    """Return the text of a PSI file (``/proc/pressure/memory``)."""
    return (f"some avg10={some_avg10:.2f} avg60=0.00 avg300=0.00 total={some_total}\n"
            f"full avg10={full_avg10:.2f} avg60=0.00 avg300=0.00 total={full_total}\n"
            ).encode()


class FakeProc:
    """A fake /proc tree rooted at ``root`` (created if missing)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)
        os.makedirs(self.root, exist_ok=True)

    @property
    def fs(self) -> ProcFS:
        """A ProcFS reading this tree."""
        return ProcFS(self.root)

    def path(self, rel: str) -> str:
        """Return the absolute path of ``rel`` in the tree."""
        return os.path.join(self.root, rel)

    def write(self, rel: str, data: bytes) -> None:
        """Write ``data`` to ``rel`` in place (an open descriptor sees it)."""
        path = self.path(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:  # O_TRUNC keeps the inode
            f.write(data)

    def set_meminfo(self, total: int, available: int | None, swap_total: int = 0,
                    swap_free: int = 0, **extra: int) -> None:
        """Write ``meminfo`` (figures in KiB); see :func:`meminfo_text`."""
        self.write("meminfo", meminfo_text(total, available, swap_total, swap_free, **extra))

    def set_vmstat(self, pswpin: int = 0, pswpout: int = 0) -> None:
        """Write ``vmstat`` with the swap counters (pages since boot)."""
        self.write("vmstat", b"nr_free_pages 12345\nworkingset_refault_anon 0\n"
                   b"pswpin %d\npswpout %d\npgfault 999\n" % (pswpin, pswpout))

    def set_pressure(self, some_total: int = 0, full_total: int = 0,
                     some_avg10: float = 0.0, full_avg10: float = 0.0) -> None:
        """Write ``pressure/memory``; totals are microseconds stalled."""
        self.write("pressure/memory",
                   pressure_text(some_total, full_total, some_avg10, full_avg10))

    def add(self, pid: int, comm: bytes = b"worker", *, state: bytes = b"S", ppid: int = 1,
            pgrp: int = 0, flags: int = 0x400000, starttime: int = 1000,
            rss_kib: int = 100 * PAGE_KIB, oom_score: int = 100, oom_score_adj: int = 0,
            uid: int = 1000, cmdline: bytes | None = None, exe: bytes | None = None,
            swap_kib: int = 0, threads: int = 1, shmem_kib: int | None = None,
            file_kib: int = 0) -> None:
        """Create ``PID/`` with stat, oom_score, oom_score_adj, status, statm, cmdline, exe.

        ``cmdline`` defaults to ``/usr/bin/<comm>``; pass the NUL-separated argv.
        ``exe`` (the symbolic link's target) defaults to ``/usr/bin/<comm>``;
        b"" leaves the link out (unreadable, as for a zombie). ``shmem_kib``
        and ``file_kib`` split the RSS: status then has RssAnon, RssFile and
        RssShmem lines (as since Linux 4.5); without ``shmem_kib`` it has none.
        """
        rss_pages = rss_kib // PAGE_KIB
        os.makedirs(self.path(str(pid)), exist_ok=True)
        self.write(f"{pid}/stat", stat_line(pid, comm, state, ppid, pgrp, flags, starttime,
                                            rss_pages))
        self.write(f"{pid}/oom_score", b"%d\n" % oom_score)
        self.write(f"{pid}/oom_score_adj", b"%d\n" % oom_score_adj)
        self.write(f"{pid}/status", b"Name:\t%s\nUmask:\t0022\nState:\tS (sleeping)\n"
                   b"Tgid:\t%d\nPid:\t%d\nPPid:\t%d\nUid:\t%d\t%d\t%d\t%d\n"
                   b"Gid:\t100\t100\t100\t100\nVmRSS:\t%d kB\n%sVmSwap:\t%d kB\n"
                   b"Threads:\t%d\n"
                   % (comm[:15], pid, pid, ppid, uid, uid, uid, uid, rss_kib,
                      b"" if shmem_kib is None else
                      b"RssAnon:\t%d kB\nRssFile:\t%d kB\nRssShmem:\t%d kB\n"
                      % (rss_kib - shmem_kib - file_kib, file_kib, shmem_kib),
                      swap_kib, threads))
        self.write(f"{pid}/statm", b"%d %d 50 10 0 80 0\n" % (rss_pages * 4, rss_pages))
        argv = b"/usr/bin/" + comm + b"\0" if cmdline is None else cmdline
        self.write(f"{pid}/cmdline", argv)
        self.set_exe(pid, b"/usr/bin/" + comm if exe is None else exe)

    def set_exe(self, pid: int, target: bytes) -> None:
        """Point ``PID/exe`` at ``target`` (b"": no link, as for a zombie)."""
        link = self.path(f"{pid}/exe").encode()
        if os.path.lexists(link):
            os.unlink(link)
        if target:
            os.symlink(target, link)

    def set_status_sizes(self, pid: int, rss_kib: int, swap_kib: int = 0) -> None:
        """Rewrite the VmRSS and VmSwap lines of ``PID/status`` (a process growing)."""
        with open(self.path(f"{pid}/status"), "rb") as f:
            text = f.read()
        lines = [line for line in text.split(b"\n")
                 if not line.startswith((b"VmRSS:", b"VmSwap:", b"RssAnon:")) and line]
        lines += [b"VmRSS:\t%d kB" % rss_kib, b"VmSwap:\t%d kB" % swap_kib]
        if b"\nRssShmem:" in text:  # the shared part stays, the growth is private
            held = sum(int(line.split()[1]) for line in lines
                       if line.startswith((b"RssFile:", b"RssShmem:")))
            lines.append(b"RssAnon:\t%d kB" % (rss_kib - held))
        self.write(f"{pid}/status", b"\n".join(lines) + b"\n")
    def set_rollup(self, pid: int, pss_shmem_kib: int) -> None:
        """Write ``PID/smaps_rollup`` with that ``Pss_Shmem`` (Linux >= 5.14 lines)."""
        self.write(f"{pid}/smaps_rollup",
                   b"00400000-7ffc00000000 ---p 00000000 00:00 0    [rollup]\n"
                   b"Rss:              300000 kB\nPss:              120000 kB\n"
                   b"Pss_Dirty:         10000 kB\nPss_Anon:          10000 kB\n"
                   b"Pss_File:           1000 kB\nPss_Shmem:       %8d kB\n"
                   b"Shared_Clean:       2000 kB\nSwap:                 0 kB\n"
                   % pss_shmem_kib)

    def remove(self, pid: int) -> None:
        """Remove ``PID/`` as if the process had exited and been reaped."""
        shutil.rmtree(self.path(str(pid)))

    def remove_file(self, pid: int, name: str) -> None:
        """Remove one file of ``PID/`` (a process vanishing between reads)."""
        os.unlink(self.path(f"{pid}/{name}"))
