"""Runs as PID 1 of a private PID (and mount) namespace; drives bustd with its outputs.

Usage (from a test): ``unshare --pid --fork --mount-proc python3 outputs_harness.py
SPEC_JSON``. It mounts a tmpfs on /run/user (private to the namespace's
mount namespace), runs a real ``dbus-daemon --session`` as nobody at
/run/user/65534/bus with a jeepney listener owning
org.freedesktop.Notifications (or one that never answers, ``hang_bus``),
starts the victims (child.py, as harness.py does), then bustd, and waits
for the kill lines and notifications asked for. Everything it starts lives
in the namespace, so bustd can signal only these processes. Prints one JSON
object: bustd's log, the Notify calls heard, connections to the decoy
buses, the victims' PIDs and which are alive.

SPEC keys: victims (harness.py's children specs), bustd (arguments),
force (add ``-M`` = MemAvailable + 1 GiB: an emergency at every check),
kills (kill lines to wait for), notifications (Notify calls to wait for),
decoys (uids that get a bus socket that only counts connections), hang_bus,
settle (seconds after that), timeout (seconds).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script

from tests.integration.dbus_session import NOBODY, listener, session_bus
from tests.integration.harness import REPO, mem_available_kib, start_child


def main() -> None:
    """Run the scenario in SPEC (argv[1]) and print the JSON result."""
    spec = json.loads(sys.argv[1])
    if os.getpid() != 1:
        raise SystemExit("outputs_harness.py must run as PID 1 of a new PID namespace")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run/user"],
                   check=True)
    folder = tempfile.mkdtemp(prefix="bustd-out-")
    result: dict[str, object] = {}
    with ExitStack() as stack:
        address, _bus = stack.enter_context(session_bus(Path(f"/run/user/{NOBODY}")))
        heard = stack.enter_context(listener(address, hang=spec.get("hang_bus", False)))
        decoys = []
        for uid in spec.get("decoys", []):
            os.makedirs(f"/run/user/{uid}", mode=0o700)
            os.chown(f"/run/user/{uid}", uid, uid)
            decoy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            decoy.bind(f"/run/user/{uid}/bus")
            os.chown(f"/run/user/{uid}/bus", uid, uid)
            decoy.listen(16)
            decoy.setblocking(False)
            decoys.append((uid, decoy))
        children = {}
        for c in spec.get("victims", []):
            children[c["name"]] = start_child(c, {}, folder)
        args = list(spec["bustd"])
        if spec.get("force"):
            args += ["-M", str(mem_available_kib() + (1 << 20))]
        daemon = subprocess.Popen([sys.executable, "-m", "bustd", "-r", "0", *args],
                                  cwd=REPO, stderr=subprocess.PIPE)
        assert daemon.stderr is not None
        os.set_blocking(daemon.stderr.fileno(), False)
        log = b""
        deadline = time.monotonic() + spec.get("timeout", 30)
        settle_until = None
        while time.monotonic() < (settle_until or deadline):
            ready, _, _ = select.select([daemon.stderr], [], [], 0.1)
            if ready:
                log += daemon.stderr.read() or b""
            for proc in children.values():
                proc.poll()
            calls = heard.wait_for(spec.get("notifications", 0), 0)
            if (settle_until is None
                    and log.count(b"kill: pid=") + log.count(b"would kill") >= spec.get("kills", 0)
                    and log.count(b"memory warning") >= spec.get("warnings", 0)
                    and len(calls) >= spec.get("notifications", 0)):
                settle_until = time.monotonic() + spec.get("settle", 1.0)
        daemon.terminate()
        try:
            _, rest = daemon.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            _, rest = daemon.communicate()
        for proc in children.values():
            proc.poll()
        accepted = {}
        for uid, decoy in decoys:
            count = 0
            while True:
                try:
                    conn, _ = decoy.accept()
                except BlockingIOError:
                    break
                conn.close()
                count += 1
            accepted[str(uid)] = count
        result = {
            "log": (log + (rest or b"")).decode("utf-8", "replace"),
            "bustd_exit": daemon.returncode,
            "calls": heard.wait_for(spec.get("notifications", 0), 1),
            "decoy_connections": accepted,
            "pids": {name: p.pid for name, p in children.items()},
            "alive": {name: p.returncode is None for name, p in children.items()},
            "completed": settle_until is not None,
        }
    shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
