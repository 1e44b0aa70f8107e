"""Shared test bench for Monitor tests: a fake tree, a log, a simulated clock.

The Config's proc_root is the fake tree, so the Monitor is not live: it may
only log dry-run kill lines. As a second guard, every way to signal a process
is replaced by a function that fails the test (``no_signals``), and all PIDs
are above the kernel's PID_MAX_LIMIT.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from bustd import kill, sig
from bustd.config import Config
from bustd.log import Log
from bustd.monitor import Monitor
from bustd.procfs import ProcFS
from tests.fakeproc import FAKE_PID, FakeProc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from bustd.emergency import Emergency

__all__ = ["P", "SELF", "SWAP", "TOTAL", "Clock", "Env", "LogFile", "emergency", "env",
           "never_wait",
           "no_signals", "refuse"]

P = FAKE_PID
SELF = FAKE_PID - 1
TOTAL = 8 << 20  # 8 GiB in KiB
SWAP = 2 << 20


class Clock:
    """Simulated monotonic time."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def emergency(m: Monitor) -> Emergency:
    """Return the Monitor's Emergency, which must exist (memory has entered the watch zone)."""
    assert m.emergency is not None, "memory never entered the watch zone"
    return m.emergency


def never_wait(timeout: float) -> list[tuple[int, int]]:
    raise AssertionError("unit tests must not run the loop")


def refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("a unit test tried to signal a process")


@pytest.fixture(autouse=True)
def no_signals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kill, "signal_targets", refuse)
    monkeypatch.setattr(os, "kill", refuse)
    monkeypatch.setattr(os, "killpg", refuse)
    monkeypatch.setattr(signal, "pidfd_send_signal", refuse)
    monkeypatch.setattr(sig, "pidfd_send_signal", refuse)


class LogFile:
    """A Log writing to a temporary file, and the lines written so far."""

    def __init__(self, path: Path, verbose: bool = False) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        self.log = Log(verbose, self.fd)

    def lines(self) -> list[str]:
        return os.pread(self.fd, 1 << 20, 0).decode().splitlines()

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines())


class Env:
    """A fake tree, a log, a clock, and the Monitors built on them."""

    def __init__(self, tmp: Path) -> None:
        self.fake = FakeProc(tmp / "proc")
        self.out = LogFile(tmp / "log")
        self.clock = Clock()
        self.monitors: list[Monitor] = []
        self.psi = {"some": 1_000_000_000, "full": 400_000_000}  # stalled microseconds
        self.set_mem(50, 50)
        self.fake.set_pressure(self.psi["some"], self.psi["full"])
        self.pswpin = 0  # pages swapped in since "boot"
        self.pswpout = 0  # and out
        self.fake.set_vmstat(self.pswpin)

    def set_mem(self, avail_pct: float, swap_pct: float, swap_total: int = SWAP) -> None:
        self.mem = [TOTAL, int(TOTAL * avail_pct / 100), swap_total,
                    int(swap_total * swap_pct / 100)]
        self.fake.set_meminfo(*self.mem)

    def free(self, kib: int) -> None:
        """Give ``kib`` back to MemAvailable, as a victim's exit does."""
        self.mem[1] += kib
        self.fake.set_meminfo(*self.mem)

    def monitor(self, verbose: bool = False, **settings: object) -> Monitor:
        cfg = Config(proc_root=self.fake.root, report=0.0, **settings)
        assert not cfg.live
        self.out.log.verbose = verbose
        m = Monitor(cfg, ProcFS(self.fake.root), self.out.log, SELF, self.clock, never_wait)
        self.monitors.append(m)
        return m

    def close(self) -> None:
        for m in self.monitors:
            os.close(m.sensors.mem_fd)
            if m.sensors.psi_fd >= 0:
                os.close(m.sensors.psi_fd)
            assert m.sensors.trigger_fd < 0  # a fake tree never arms a kernel trigger
        os.close(self.out.fd)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.close()
