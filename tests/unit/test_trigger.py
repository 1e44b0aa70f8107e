"""pressure.arm_trigger: the text written, the window fallback, refusals, the real file.

Registering a PSI trigger is harmless (it only wakes the process that holds
it), so the last tests register real ones on this kernel's
/proc/pressure/memory, as root and as nobody.
"""

from __future__ import annotations

import errno
import json
import os
import select
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bustd import pressure
from bustd.pressure import arm_trigger

REPO = str(Path(__file__).resolve().parents[2])
PSI_MEMORY = "/proc/pressure/memory"
CAP_SYS_RESOURCE = 24  # include/uapi/linux/capability.h


def open_fds() -> list[str]:
    """The descriptors this process holds now (not the one that listed them)."""
    held = []
    for name in os.listdir("/proc/self/fd"):
        try:
            os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:
            continue
        held.append(name)
    return sorted(held)


@pytest.fixture
def psi_file(tmp_path: Path) -> str:
    """A regular file standing in for a PSI file: it takes any write."""
    path = tmp_path / "memory"
    path.write_bytes(b"")
    return str(path)


def writes_failing(monkeypatch: pytest.MonkeyPatch, err: int,
                   when: Callable[[bytes], bool]) -> list[bytes]:
    """Make os.write fail with ``err`` for the data ``when`` accepts; return all data seen."""
    seen: list[bytes] = []
    real = os.write

    def fake(fd: int, data: bytes) -> int:
        seen.append(bytes(data))
        if when(bytes(data)):
            raise OSError(err, os.strerror(err))
        return real(fd, data)
    monkeypatch.setattr(os, "write", fake)
    return seen


@pytest.mark.parametrize(("metric", "percent", "text"), [
    ("some", 25, b"some 250000 1000000\0"),
    ("full", 10, b"full 100000 1000000\0"),
    ("some", 12.5, b"some 125000 1000000\0"),
    ("some", 100, b"some 999999 1000000\0"),  # the stall must stay below the window
    ("some", 0.05, b"some 1000 1000000\0"),  # at least 1 ms
])
def test_trigger_text_is_exact(psi_file: str, metric: str, percent: float,
                               text: bytes) -> None:
    armed = arm_trigger(psi_file, metric, percent)
    assert armed is not None
    fd, window = armed
    try:
        assert window == 1.0
        assert Path(psi_file).read_bytes() == text
        flags = os.get_blocking(fd), os.get_inheritable(fd)
        assert flags == (False, False)  # O_NONBLOCK | O_CLOEXEC
    finally:
        os.close(fd)


def test_einval_for_one_second_falls_back_to_two(psi_file: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    seen = writes_failing(monkeypatch, errno.EINVAL, lambda d: d.endswith(b" 1000000\0"))
    before = open_fds()
    armed = arm_trigger(psi_file, "some", 25)
    assert armed is not None
    fd, window = armed
    try:
        assert window == 2.0
        assert seen == [b"some 250000 1000000\0", b"some 500000 2000000\0"]
        assert Path(psi_file).read_bytes() == b"some 500000 2000000\0"
        assert open_fds() == sorted([*before, str(fd)])  # the first attempt's fd closed
    finally:
        os.close(fd)


def test_einval_for_every_window_gives_none(psi_file: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    seen = writes_failing(monkeypatch, errno.EINVAL, lambda d: True)
    before = open_fds()
    assert arm_trigger(psi_file, "full", 50) is None
    assert seen == [b"full 500000 1000000\0", b"full 1000000 2000000\0"]
    assert len(pressure.TRIGGER_WINDOWS_US) == 2 and open_fds() == before


@pytest.mark.parametrize("err", [errno.EPERM, errno.EACCES, errno.EOPNOTSUPP, errno.EBUSY])
def test_a_refused_write_gives_none_and_closes(psi_file: str, monkeypatch: pytest.MonkeyPatch,
                                               err: int) -> None:
    seen = writes_failing(monkeypatch, err, lambda d: True)
    before = open_fds()
    assert arm_trigger(psi_file, "some", 25) is None
    assert len(seen) == 1 and open_fds() == before  # no second window after a refusal


def test_no_file_gives_none(tmp_path: Path) -> None:
    before = open_fds()
    assert arm_trigger(str(tmp_path / "missing"), "some", 25) is None
    assert arm_trigger(str(tmp_path), "some", 25) is None  # a directory: EISDIR
    assert open_fds() == before


def test_no_permission_to_open_gives_none(psi_file: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: str, flags: int, mode: int = 0o777) -> int:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    monkeypatch.setattr(os, "open", refuse)
    assert arm_trigger(psi_file, "some", 25) is None


def has_cap_sys_resource() -> bool:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    return False


def need_psi() -> None:
    if not os.path.exists(PSI_MEMORY):
        pytest.skip(f"{PSI_MEMORY} missing: kernel without PSI or booted with psi=0")


def test_real_trigger_registers_and_polls_for_pollpri() -> None:
    need_psi()
    armed = arm_trigger(PSI_MEMORY, "some", 25)
    assert armed is not None, f"no trigger on {PSI_MEMORY}"
    fd, window = armed
    try:
        # CAP_SYS_RESOURCE allows any window; without it only multiples of 2 s.
        assert window == (1.0 if has_cap_sys_resource() else 2.0)
        poller = select.poll()
        poller.register(fd, select.POLLPRI)
        events = poller.poll(0)
        assert all(ev == select.POLLPRI and got == fd for got, ev in events), events
    finally:
        os.close(fd)


UNPRIVILEGED = r"""
import json, os, select, sys
sys.path.insert(0, sys.argv[1])
from bustd.pressure import arm_trigger
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
armed = arm_trigger(sys.argv[2], "some", 25)
events = None
if armed is not None:
    poller = select.poll()
    poller.register(armed[0], select.POLLPRI)
    events = poller.poll(0)
print(json.dumps({"armed": armed and armed[1], "events": events}))
"""


def test_real_trigger_as_nobody_takes_the_two_second_window() -> None:
    need_psi()
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to nobody")
    out = subprocess.run([sys.executable, "-c", UNPRIVILEGED, REPO, PSI_MEMORY],
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    if os.stat(PSI_MEMORY).st_mode & stat.S_IWOTH:  # Linux >= 6.5: unprivileged triggers
        assert r == {"armed": 2.0, "events": []}, r
    else:
        assert r == {"armed": None, "events": None}, r
