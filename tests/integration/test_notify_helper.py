"""The notification helper against a real ``dbus-daemon --session`` and a jeepney listener.

The helper is started as root, as the daemon starts it, and must drop to the
bus owner's uid (the bus refuses root), authenticate, and make one Notify
call the listener receives with the text unchanged. It signals nothing, so
it runs outside a PID namespace.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from bustd import dbus_notify
from bustd.notify import HELPER
from tests.integration.dbus_session import NOBODY, listener, reachable_folder, session_bus

HOSTILE = '$(touch /tmp/bustd-pwned) "; rm -rf ~ <b>bold</b> & `id`'


def helper(uid: int, gid: int, bus: Path | str, summary: str, body: str = "",
           urgency: str = "2", timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the helper as the daemon does: python -S -I, argv list, environment only."""
    return subprocess.run(
        [sys.executable, "-S", "-I", HELPER, str(uid), str(gid), str(bus)],
        env={"PATH": "/usr/bin:/bin", "BUSTD_SUMMARY": summary, "BUSTD_BODY": body,
             "BUSTD_URGENCY": urgency},
        capture_output=True, text=True, timeout=timeout, check=False, cwd="/")


def test_helper_delivers_one_notify_as_the_user() -> None:
    with reachable_folder() as home, session_bus(home / "user") as (address, bus), \
            listener(address) as heard:
        out = helper(NOBODY, NOBODY, bus, f"bustd killed {HOSTILE}", f"body {HOSTILE}")
        assert out.returncode == 0, out.stderr
        calls = heard.wait_for(1, 10)
    assert len(calls) == 1, calls
    call = calls[0]
    assert call["summary"] == f"bustd killed {HOSTILE}"
    assert call["body"] == f"body {HOSTILE}"
    assert call["app"] == "bustd" and call["replaces"] == 0 and call["actions"] == []
    assert call["hints"] == {"urgency": ["y", 2]} and call["timeout"] == -1
    assert call["signature"] == "susssasa{sv}i"
    assert call["sender_uid"] == NOBODY  # it dropped to the user's uid
    assert not os.path.exists("/tmp/bustd-pwned")


def test_helper_that_stays_root_is_refused_by_the_users_bus() -> None:
    # The bus admits only its owner: asked to stay uid 0, the helper cannot
    # authenticate. This is what proves the drop in the test above matters.
    with reachable_folder() as home, session_bus(home / "user") as (address, bus), \
            listener(address) as heard:
        out = helper(0, 0, bus, "never shown")
        assert out.returncode == dbus_notify.EXIT_AUTH, (out.returncode, out.stderr)
        assert heard.wait_for(1, 1) == []


def test_helper_without_a_bus_exits_4(tmp_path: Path) -> None:
    out = helper(NOBODY, NOBODY, tmp_path / "no-such-bus", "x")
    assert out.returncode == dbus_notify.EXIT_BUS, out.stderr


def test_helper_with_no_notification_service_exits_6_with_the_error_name() -> None:
    with reachable_folder() as home, session_bus(home / "user") as (_address, bus):
        out = helper(NOBODY, NOBODY, bus, "x")
    assert out.returncode == dbus_notify.EXIT_ERROR, out.stderr
    assert "org.freedesktop.DBus.Error.ServiceUnknown" in out.stderr, out.stderr


def test_helper_on_a_hung_bus_gives_up_by_itself(tmp_path: Path) -> None:
    # A socket that accepts and never says a word: the helper's alarm ends it.
    path = tmp_path / "bus"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(5)
    start = time.monotonic()
    try:
        out = helper(os.getuid(), os.getgid(), path, "x", timeout=30)
    finally:
        server.close()
    took = time.monotonic() - start
    assert out.returncode == -14, out  # SIGALRM
    assert dbus_notify.TIMEOUT - 0.5 <= took < dbus_notify.TIMEOUT + 5, took


def test_helper_with_a_hung_notification_service_gives_up_by_itself() -> None:
    with reachable_folder() as home, session_bus(home / "user") as (address, bus), \
            listener(address, hang=True):
        start = time.monotonic()
        out = helper(NOBODY, NOBODY, bus, "x")
    assert out.returncode == -14, out
    assert time.monotonic() - start < dbus_notify.TIMEOUT + 5


def test_helper_refuses_bad_arguments() -> None:
    out = subprocess.run([sys.executable, "-S", "-I", HELPER, "x"], capture_output=True,
                         text=True, timeout=30, check=False, env={})
    assert out.returncode == dbus_notify.EXIT_USAGE
    assert "usage" in out.stderr
