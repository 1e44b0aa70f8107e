"""The sensors alone (sensors.Sensors) on fake trees, in simulated time: the
readings the daemon's loop and ``bustd check`` share, without a Monitor."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from bustd.config import Config
from bustd.process import PAGE_MIB
from bustd.procfs import ProcFS
from bustd.sensors import Sensors
from tests.fakeproc import FakeProc
from tests.unit.monitor_env import LogFile

TOTAL = 8 << 20  # KiB
SWAP = 2 << 20


class Tree:
    """A fake machine with swap, PSI and swap counters that tests move on."""

    def __init__(self, tmp: Path) -> None:
        self.fake = FakeProc(tmp / "proc")
        self.out = LogFile(tmp / "log")
        self.sys = tmp / "sys"
        self.some = self.full = 0
        self.pswpin = self.pswpout = 0
        self.fake.set_meminfo(TOTAL, TOTAL // 10, SWAP, SWAP // 2)
        self.fake.set_pressure()
        self.fake.set_vmstat()
        self.sensors: list[Sensors] = []

    def make(self, min_span: float = 0.2, **settings: object) -> Sensors:
        cfg = Config(proc_root=self.fake.root, sys_root=str(self.sys), **settings)
        s = Sensors(cfg, ProcFS(self.fake.root), self.out.log, min_span=min_span)
        self.sensors.append(s)
        return s

    def second(self, some_pct: float, in_mib: float, out_mib: float) -> None:
        """One second passes: ``some_pct`` % stalled, pages in and out at these rates."""
        self.some += int(some_pct * 10_000)
        self.pswpin += int(in_mib / PAGE_MIB)
        self.pswpout += int(out_mib / PAGE_MIB)
        self.fake.set_pressure(self.some, self.full)
        self.fake.set_vmstat(self.pswpin, self.pswpout)


def psi_error(s: Sensors) -> str | None:
    """Return ``s.psi_error`` as read now (a function, so that mypy narrows nothing)."""
    return s.psi_error


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Tree]:
    t = Tree(tmp_path)
    yield t
    for s in t.sensors:
        s.close()
    os.close(t.out.fd)


def test_thrashing_is_timed_from_the_first_interval_it_held(tree: Tree) -> None:
    s = tree.make()
    s.open_psi()
    mem = s.read_mem()
    first = s.pressure(mem, 0.0, True)
    assert (first.percent, first.seconds, first.swapin) == (None, 0.0, None)
    for now in (1.0, 2.0):
        tree.second(40.0, 20.0, 20.0)  # stalled, as many pages back in as out
        st = s.pressure(mem, now, True)
        assert st.percent == pytest.approx(40.0)
        assert st.swapin == pytest.approx(20.0, rel=1e-3)
        assert st.swapout == pytest.approx(20.0, rel=1e-3)
        assert st.seconds == pytest.approx(now)  # since the interval that began at 0
    tree.second(40.0, 5.0, 30.0)  # more going out than coming back: growth, not thrashing
    assert s.pressure(mem, 3.0, True).seconds == 0.0


def test_not_watching_reads_no_pressure_and_forgets_the_history(tree: Tree) -> None:
    s = tree.make()
    s.open_psi()
    mem = s.read_mem()
    s.pressure(mem, 0.0, True)
    tree.second(40.0, 20.0, 20.0)
    assert s.pressure(mem, 1.0, True).seconds == pytest.approx(1.0)
    idle = s.pressure(mem, 2.0, False)
    assert (idle.percent, idle.seconds, idle.swapin) == (None, 0.0, None)
    assert s.stall_meter.percent() is None and s.thrashing.seconds(2.0) == 0.0
    assert s.vmstat_fd >= 0  # opened once while watching, kept


def test_a_trigger_event_vouches_for_the_cutoff_unless_it_predates_the_last_act(
        tree: Tree) -> None:
    s = tree.make()
    s.open_psi()
    s.trigger_window = 2.0  # as if a kernel trigger were armed
    mem = s.read_mem()
    assert s.pressure(mem, 10.0, True, fired=True, last_act=9.0).percent is None
    assert s.pressure(mem, 12.5, True, fired=True, last_act=9.0).percent == 25.0


def test_pressure_unreadable_is_said_once_kept_as_the_error_and_then_back(
        tree: Tree) -> None:
    s = tree.make()
    s.open_psi()
    mem = s.read_mem()
    tree.fake.write("pressure/memory", b"some garbage\n")
    for now in (0.0, 1.0):
        assert s.pressure(mem, now, True).percent is None
    assert tree.out.count("cannot read pressure/memory") == 1
    assert s.psi_error == "pressure: malformed item b'garbage'" and s.psi_fd >= 0
    tree.second(30.0, 0.0, 0.0)
    s.pressure(mem, 2.0, True)
    assert psi_error(s) is None
    assert tree.out.count("pressure/memory reads again: PSI back in use") == 1


def test_psi_off_opens_nothing_unless_asked_always(tree: Tree) -> None:
    s = tree.make(psi_cutoff=0.0)
    s.open_psi()
    assert s.psi_fd < 0 and s.psi_error is None
    s.open_psi(always=True)  # the check reports the pressure with --psi 0 too
    assert s.psi_fd >= 0 and s.psi is not None and s.trigger_fd < 0  # no trigger, a fake tree


def test_a_missing_psi_file_names_the_error(tree: Tree) -> None:
    os.unlink(tree.fake.path("pressure/memory"))
    s = tree.make()
    s.open_psi()
    assert s.psi_fd < 0 and s.psi_error == "No such file or directory"
    assert tree.out.count("PSI not available ([Errno 2] No such file or directory") == 1


def test_unreadable_zram_is_said_once_and_swap_counted_as_is(tree: Tree) -> None:
    tree.fake.write("swaps", b"Filename\n/dev/zram0 garbage\n")
    s = tree.make()
    mem = s.read_mem()
    for _ in range(2):
        assert s.with_zram_worth(mem).swap_free == mem.swap_free
    assert s.zram_error is not None and s.zram == []
    assert tree.out.count(f"cannot read {tree.fake.path('swaps')}") == 1


def test_close_closes_every_descriptor(tree: Tree) -> None:
    before = set(os.listdir("/proc/self/fd"))
    s = tree.make()
    s.open_psi()
    s.pressure(s.read_mem(), 0.0, True)  # opens vmstat too
    assert len(set(os.listdir("/proc/self/fd")) - before) == 3  # meminfo, PSI, vmstat
    s.close()
    assert set(os.listdir("/proc/self/fd")) - before == set()
    assert (s.mem_fd, s.psi_fd, s.vmstat_fd, s.trigger_fd) == (-1, -1, -1, -1)
