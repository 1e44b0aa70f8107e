"""runtime.raise_priority with the priority calls replaced (no process's nice changes)."""

from __future__ import annotations

import errno
import os

import pytest

from bustd import runtime
from bustd.log import Log


class Calls:
    def __init__(self, start: int, fail: int = 0) -> None:
        self.nice = start
        self.fail = fail
        self.set: list[int] = []

    def get(self, which: int, who: int) -> int:
        assert (which, who) == (os.PRIO_PROCESS, 0)
        return self.nice

    def put(self, which: int, who: int, nice: int) -> None:
        assert (which, who) == (os.PRIO_PROCESS, 0)
        if self.fail:
            raise OSError(self.fail, os.strerror(self.fail))
        self.set.append(nice)
        self.nice = nice


def fake(monkeypatch: pytest.MonkeyPatch, calls: Calls) -> None:
    monkeypatch.setattr(os, "getpriority", calls.get)
    monkeypatch.setattr(os, "setpriority", calls.put)


def test_raised_from_the_default_to_nice_minus_10(monkeypatch: pytest.MonkeyPatch,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    calls = Calls(0)
    fake(monkeypatch, calls)
    runtime.raise_priority(Log(False))
    assert calls.set == [runtime.NICE] == [-10]
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("start", [-10, -15, -20])
def test_a_higher_priority_it_was_started_at_is_kept(monkeypatch: pytest.MonkeyPatch,
                                                     start: int) -> None:
    calls = Calls(start)
    fake(monkeypatch, calls)
    runtime.raise_priority(Log(False))
    assert calls.set == [] and calls.nice == start


def test_without_cap_sys_nice_one_line_says_what_it_costs(
        monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    fake(monkeypatch, Calls(5, fail=errno.EPERM))
    runtime.raise_priority(Log(False))
    err = capfd.readouterr().err
    assert err.count("\n") == 1
    assert "cannot raise own priority to nice -10 (Operation not permitted; needs " \
           "CAP_SYS_NICE)" in err
