"""--kill-cgroup's kill path on the kernel's own cgroup v2 hierarchy, in a PID namespace.

The script runs as PID 1 of a private PID namespace, creates a cgroup of its
own under the host's cgroup2 mount, moves only its own children into it and
hands them to kill.signal_targets with ``cgroup=``: cgroup.kill can reach
nothing else, and the cgroup is removed at the end. The memory controller is
not needed (the VM suite covers --cgroup's memory files: tests/e2e).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from bustd.cgroup import cgroup_mount, parse_mountinfo
from tests.integration.confine import confined

REPO = str(Path(__file__).resolve().parents[2])

CODE = r"""
import json, os, signal, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from bustd import kill
from bustd.process import read_starttime
from bustd.procfs import ProcFS
fs = ProcFS("/proc")
mount = sys.argv[2]
group = os.path.join(mount, f"bustd-test-{time.time_ns()}")
os.mkdir(group)
children = []

def start(into):
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    children.append(p)
    if into:
        with open(into + "/cgroup.procs", "w") as f:
            f.write(str(p.pid))
    time.sleep(0.05)
    return p

def target(p):
    return kill.Target(p.pid, read_starttime(fs, p.pid))

def rc(p):
    try:
        return p.wait(5)
    except subprocess.TimeoutExpired:
        return "alive"

result = {}
try:
    if not os.path.exists(group + "/cgroup.kill"):
        result["skip"] = f"no cgroup.kill in {group} (Linux < 5.14)"
    else:
        # 1. The cgroup holds "bustd" (a child standing in for it): never
        #    killed whole; the target alone gets SIGTERM, the stand-in lives.
        a, pretend = start(group), start(group)
        out = kill.signal_targets(fs, [target(a)], signal.SIGTERM, 0.5, time.monotonic,
                                  cgroup=group, self_pid=pretend.pid)
        result["holds_bustd"] = {"note": out.cgroup_note, "state": out.targets[0].state,
                                 "last": out.last, "a": rc(a), "pretend": pretend.poll()}
        # 2. Nothing forbids it: cgroup.kill kills every process in it, the
        #    target and the two that were not targets alike, with SIGKILL.
        b, c = start(group), start(group)
        out = kill.signal_targets(fs, [target(b)], signal.SIGTERM, 0.5, time.monotonic,
                                  cgroup=group, self_pid=os.getpid())
        result["whole"] = {"note": out.cgroup_note, "state": out.targets[0].state,
                           "last": out.last, "b": rc(b), "c": rc(c), "pretend": rc(pretend)}
        # 3. The root cgroup (where this namespace's children start) is never
        #    killed whole: the target alone gets SIGTERM.
        d, e = start(None), start(None)
        out = kill.signal_targets(fs, [target(d)], signal.SIGTERM, 0.5, time.monotonic,
                                  cgroup=mount, self_pid=os.getpid())
        result["root"] = {"note": out.cgroup_note, "state": out.targets[0].state,
                          "last": out.last, "d": rc(d), "e": e.poll()}
finally:
    for p in children:
        if p.poll() is None:
            p.kill()
            p.wait()
    for _ in range(100):
        try:
            os.rmdir(group)
            break
        except OSError:
            time.sleep(0.05)
    result["removed"] = not os.path.exists(group)
print(json.dumps(result))
"""


def cgroup2() -> str:
    """Return the mount point of the host's cgroup v2 hierarchy, or skip."""
    with open("/proc/self/mountinfo", "rb") as f:
        mount = cgroup_mount(parse_mountinfo(f.read()))
    if mount is None:
        pytest.skip("no cgroup v2 hierarchy mounted on this host")
    return mount[1]


def test_kill_cgroup_on_the_real_hierarchy() -> None:
    out = confined([sys.executable, "-c", CODE, REPO, cgroup2()], 90, text=True)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    if "skip" in result:
        pytest.skip(result["skip"])
    assert result["removed"]
    refused = result["holds_bustd"]
    assert refused["note"].startswith("it holds bustd itself (pid ")
    assert (refused["state"], refused["last"], refused["a"]) == ("exited", 15, -15)
    assert refused["pretend"] is None  # bustd's stand-in is alive
    whole = result["whole"]
    assert (whole["note"], whole["state"], whole["last"]) == ("", "exited", 9)
    assert (whole["b"], whole["c"], whole["pretend"]) == (-9, -9, -9)
    root = result["root"]
    assert (root["note"], root["state"], root["last"], root["d"]) == (
        "it is the root cgroup", "exited", 15, -15)
    assert root["e"] is None  # another process of the root cgroup: untouched
