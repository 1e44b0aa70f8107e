"""Faults the daemon must survive on the real kernel, confined to a PID namespace.

Issue 10: no free file descriptor (RLIMIT_NOFILE reached) and being stopped
for a while must each give a clear log line, and bustd must still kill.
"""

from __future__ import annotations

import json
import os
import sys

from tests.integration.confine import confined
from tests.integration.scenario import kill_lines, run

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def test_no_free_descriptor_still_kills_through_checked_kill() -> None:
    # bustd holds stdin/out/err, meminfo, pressure and its trigger: 6 fds.
    # With 7 allowed, a scan has one descriptor at a time, and a pidfd leaves
    # none for the identity check: the kill goes through kill() after it.
    result = run({
        "children": [{"name": "hog", "mib": 2048}, {"name": "bystander", "mib": 8}],
        "bustd": [], "bustd_prefix": ["prlimit", "--nofile=7"], "margin_of": "hog",
        "settle": 3})
    log = result["log"]
    kills = kill_lines(log)
    assert len(kills) == 1 and "name=hog" in kills[0], log
    assert "signalled with kill(), not a pidfd: no free file descriptor" in log, log
    assert result["alive"] == {"hog": False, "bystander": True}
    assert result["bustd_alive"] and "Traceback" not in log


STOPPED = r"""
import json, os, signal, subprocess, sys, time
repo = sys.argv[1]

def available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])

# An emergency only once 512 MiB more are in use than now.
level = available() - 512 * 1024
bustd = subprocess.Popen([sys.executable, "-m", "bustd", "-r", "0", "-M", str(level)],
                         cwd=repo, stderr=subprocess.PIPE)
first = bustd.stderr.readline()  # the "watching" line: the loop is about to start
time.sleep(1.0)
bustd.send_signal(signal.SIGSTOP)
time.sleep(60)  # a minute (issue 10): longer than any sleep bustd plans (10 s)
bustd.send_signal(signal.SIGCONT)
time.sleep(0.5)
code = "b = bytearray(3 << 30); b[::4096] = b'x' * (len(b) // 4096); print('ready', flush=True)" \
       "; import time; time.sleep(60)"
hog = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
hog.stdout.readline()
deadline = time.monotonic() + 20
while hog.poll() is None and time.monotonic() < deadline:
    time.sleep(0.1)
alive = bustd.poll() is None
bustd.terminate()
log = first + bustd.communicate(timeout=10)[1]
print(json.dumps({"log": log.decode("utf-8", "replace"), "hog": hog.poll(),
                  "bustd_alive": alive}))
"""


def test_stopped_for_a_while_says_so_and_still_kills() -> None:
    out = confined([sys.executable, "-c", STOPPED, REPO], 150)
    assert out.returncode == 0, out.stderr.decode()
    result = json.loads(out.stdout)
    log = result["log"]
    assert "s later than planned (stopped, frozen or suspended?)" in log, log
    assert result["hog"] is not None and result["hog"] < 0, log  # died of a signal
    assert len(kill_lines(log)) == 1, log
    assert result["bustd_alive"]
