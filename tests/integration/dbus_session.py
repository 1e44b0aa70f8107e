"""A real session bus for tests: ``dbus-daemon --session`` run as nobody, and a listener.

The bus runs as nobody (a user with a passwd entry, as dbus-daemon needs)
in a folder of the test's own, so it admits only nobody: a helper that did
not drop to nobody's uid is refused, as on a real desktop. The listener
(notify_listener.py, run as nobody with /usr/bin/python3 and jeepney from
the test venv) owns org.freedesktop.Notifications and reports each Notify
call. tests/install-test-packages installs dbus-daemon and /usr/bin/python3.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import jeepney  # type: ignore[import-untyped]

__all__ = ["NOBODY", "Listener", "listener", "reachable_folder", "session_bus", "setpriv"]

NOBODY = 65534
HERE = Path(__file__).resolve().parent
SITE_PACKAGES = str(Path(jeepney.__file__).resolve().parent.parent)


def setpriv(uid: int) -> list[str]:
    """Return the command prefix that runs a program as ``uid`` (gid the same, no groups)."""
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]


@contextmanager
def reachable_folder() -> Iterator[Path]:
    """Yield a new folder under /tmp that other users can reach (pytest's are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="bustd-test-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def session_bus(folder: Path, uid: int = NOBODY) -> Iterator[tuple[str, Path]]:
    """Run a session bus at ``folder/bus`` as ``uid``; yield (address, socket path).

    ``folder`` (made ``uid``'s, mode 0700, like /run/user/UID) must be
    reachable by ``uid``: see :func:`reachable_folder`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    os.chown(folder, uid, uid)
    folder.chmod(0o700)
    bus = folder / "bus"
    proc = subprocess.Popen(
        [*setpriv(uid), "dbus-daemon", "--session", "--nofork", "--print-address",
         f"--address=unix:path={bus}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"PATH": os.environ["PATH"], "HOME": str(folder)})
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert address.startswith("unix:path="), (
            address, proc.stderr.read() if proc.stderr else "")
        yield address, bus
    finally:
        proc.terminate()
        proc.wait(10)


class Listener:
    """A running notify_listener.py and the calls it reported."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.calls: list[dict[str, Any]] = []
        self._buf = b""

    def wait_for(self, count: int, timeout: float) -> list[dict[str, Any]]:
        """Return the calls reported so far, waiting up to ``timeout`` s for ``count``."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            wait = max(0.0, min(0.1, left)) if len(self.calls) < count else 0.0
            ready, _, _ = select.select([fd], [], [], wait)
            if ready:
                chunk = os.read(fd, 65536)
                if chunk:
                    self._buf += chunk
                    *lines, self._buf = self._buf.split(b"\n")
                    self.calls += [json.loads(line) for line in lines if line]
                    continue
            if len(self.calls) >= count or left <= 0 or (ready and not chunk):
                return self.calls


@contextmanager
def listener(address: str, uid: int = NOBODY, hang: bool = False) -> Iterator[Listener]:
    """Run notify_listener.py on ``address`` as ``uid``; yield it once it owns the name."""
    proc = subprocess.Popen(
        [*setpriv(uid), "/usr/bin/python3", "-I", str(HERE / "notify_listener.py"), address,
         SITE_PACKAGES, *(["hang"] if hang else [])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
    try:
        assert proc.stdout is not None
        first = b""
        while not first.endswith(b"\n"):  # unbuffered: later lines stay in the pipe
            byte = os.read(proc.stdout.fileno(), 1)
            assert byte, proc.stderr.read() if proc.stderr else "listener died"
            first += byte
        assert json.loads(first)["request_name"] == 1, first  # the primary owner
        yield Listener(proc)
    finally:
        proc.kill()
        proc.wait(10)
