"""systemd's notification protocol: READY, STATUS and WATCHDOG on a socket of the test's own."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from bustd.log import Log
from bustd.meminfo import MemInfo
from bustd.outputs import CheckRecord
from bustd.record import WarnRecord
from bustd.sdnotify import STATUS_EVERY, SystemdNotify, from_environment, status_line
from tests.unit.test_hooks_notify import LogLines, reading, record


class Receiver:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)

    def messages(self) -> list[list[str]]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode().split("\n"))
            except BlockingIOError:
                return out


def check(now: float, kills: int = 0) -> CheckRecord:
    return CheckRecord(now, MemInfo(8 << 20, 4 << 20, 0, 0), 3.0, False, 0.0, kills, 0)


def test_ready_once_then_watchdog_at_half_the_interval_and_status_every_so_often(
        tmp_path: Path) -> None:
    rx = Receiver(str(tmp_path / "notify"))
    n = SystemdNotify(str(tmp_path / "notify"), 4.0, Log(False, os.open(os.devnull, os.O_WRONLY)))
    n(check(100.0))
    first = rx.messages()
    assert first == [["READY=1", "WATCHDOG=1",
                      "STATUS=MemAvailable 4.0 GiB (50.0%), no swap, stall 3%; 0 kills"]]
    n(check(101.0))
    assert rx.messages() == []  # nothing due
    n(check(102.0))
    assert rx.messages() == [["WATCHDOG=1"]]
    n(record())  # a kill: STATUS at the next check
    n(check(102.5, kills=1))
    (msg,) = rx.messages()
    assert msg[0].startswith("STATUS=") and msg[0].endswith(
        "; 1 kills; last: killed pid 4242 ($(touch /tmp/pwned) \"; rm -rf ~ <a href=\"x\">&)")
    n(WarnRecord(1.0, "pressure", "x", reading(), None))
    n(check(103.0, kills=1))
    assert rx.messages()[0][0].endswith("last: warned: pressure")
    n(check(103.0 + STATUS_EVERY))
    assert "WATCHDOG=1" in rx.messages()[0]
    n.close()
    assert rx.messages() == [["STOPPING=1"]]


def test_no_watchdog_without_an_interval(tmp_path: Path) -> None:
    rx = Receiver(str(tmp_path / "notify"))
    n = SystemdNotify(str(tmp_path / "notify"), 0.0, Log(False, os.open(os.devnull, os.O_WRONLY)))
    for t in range(30):
        n(check(float(t)))
    assert not any("WATCHDOG=1" in m for m in rx.messages())


def test_abstract_address(tmp_path: Path) -> None:
    name = f"bustd-test-{os.getpid()}"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind("\0" + name)
    n = SystemdNotify("@" + name, 0.0, Log(False, os.open(os.devnull, os.O_WRONLY)))
    n(check(1.0))
    assert rx.recv(4096).startswith(b"READY=1\n")
    rx.close()


def test_a_missing_socket_is_said_once_and_never_raises(tmp_path: Path) -> None:
    out = LogLines(tmp_path)
    n = SystemdNotify(str(tmp_path / "nobody-listens"), 1.0, out.log)
    for t in range(5):
        n(check(float(t)))
    assert out.text().count("cannot notify systemd") == 1


@pytest.mark.parametrize(("environ", "watchdog"), [
    ({"NOTIFY_SOCKET": "/run/x"}, 0.0),
    ({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"}, 15.0),
    ({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "77"}, 15.0),
    ({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "78"}, 0.0),
    ({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "lots"}, 0.0),
])
def test_from_environment(environ: dict[str, str], watchdog: float, tmp_path: Path) -> None:
    notifier, close = from_environment(environ, LogLines(tmp_path).log, 77)
    assert notifier is not None and notifier.ping_every == watchdog
    close()


@pytest.mark.parametrize("address", ["", "relative/path", "x"])
def test_no_notifier_without_a_usable_socket(address: str, tmp_path: Path) -> None:
    notifier, close = from_environment({"NOTIFY_SOCKET": address}, LogLines(tmp_path).log, 1)
    assert notifier is None
    close()


def test_status_text_with_swap() -> None:
    assert status_line(1024, 2048, 512, 1024, None, 2, "") == (
        "MemAvailable 1.0 MiB (50.0%), SwapFree 512 KiB of 1.0 MiB; 2 kills")
