"""kill.py against the kernel's own refusals and survivors, in a PID namespace.

Each scenario is a Python script run as PID 1 of a private PID namespace: it
starts its own children and hands them to kill.signal_targets, so nothing
outside can be reached, and the kernel kills whatever is left when it ends.
Needs root (to freeze a cgroup and to drop to another user).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from bustd import kill
from tests.integration.confine import confined

REPO = str(Path(__file__).resolve().parents[2])
FREEZER = "/sys/fs/cgroup/freezer"  # cgroup v1: a frozen task survives SIGKILL until thawed

PREAMBLE = r"""
import ctypes, errno, json, os, select, signal, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from bustd import kill
from bustd.process import read_starttime
from bustd.procfs import ProcFS
fs = ProcFS("/proc")

def fds():
    return len(os.listdir("/proc/self/fd"))

def target(p):
    time.sleep(0.05)
    return kill.Target(p.pid, read_starttime(fs, p.pid))
"""


def kernel() -> tuple[int, int]:
    """The running kernel's (major, minor) version."""
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def python_in_namespace(code: str, *args: str) -> dict[str, Any]:
    """Run ``code`` as PID 1 of a new PID namespace; return its JSON output."""
    out = confined([sys.executable, "-c", PREAMBLE + code, REPO, *args], 60)
    assert out.returncode == 0, out.stderr.decode()
    result: dict[str, Any] = json.loads(out.stdout)
    return result


# A child that touched 64 MiB, frozen in a cgroup v1 freezer, is sent SIGTERM
# then SIGKILL: it must come back DYING quickly, its memory freed by
# process_mrelease, and be seen to exit once thawed.
FROZEN = r"""
group = sys.argv[2]
os.mkdir(group)
hog = ("b = bytearray(64 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
       "print(1, flush=True)\nimport time; time.sleep(60)")
child = subprocess.Popen([sys.executable, "-c", hog], stdout=subprocess.PIPE)
child.stdout.readline()
t = target(child)
def rss():
    for line in open(f"/proc/{child.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1
result = {}
try:
    with open(f"{group}/cgroup.procs", "w") as f:
        f.write(str(child.pid))
    with open(f"{group}/freezer.state", "w") as f:
        f.write("FROZEN")
    for _ in range(100):
        if open(f"{group}/freezer.state").read().strip() == "FROZEN":
            break
        time.sleep(0.02)
    result["rss_before"] = rss()
    before = fds()
    began = time.monotonic()
    out = kill.signal_targets(fs, [t], signal.SIGTERM, 0.2, time.monotonic)
    result.update(wall=time.monotonic() - began, took=out.took, last=out.last,
                  state=t.state, reaped=t.mrelease, fd_open=t.fd >= 0, rss_after=rss(),
                  fds_held=fds() - before, exited_frozen=kill.exited(fs, t))
finally:
    with open(f"{group}/freezer.state", "w") as f:
        f.write("THAWED")
    for _ in range(200):
        if kill.exited(fs, t):
            result["exited_thawed"] = True
            break
        time.sleep(0.01)
    kill.close_pidfd(t)
    result["fds_after_release"] = fds() - before
    result["rc"] = child.wait(5)
    os.rmdir(group)
print(json.dumps(result))
"""


def test_frozen_victim_is_dying_its_memory_freed_and_followed_until_it_exits() -> None:
    if not os.path.exists(f"{FREEZER}/cgroup.procs"):
        pytest.skip(f"no cgroup v1 freezer at {FREEZER}: cannot make a SIGKILL survivor")
    group = f"{FREEZER}/bustd-test-{os.getpid()}"
    try:
        r = python_in_namespace(FROZEN, group)
    finally:
        if os.path.isdir(group):  # the script failed before cleaning up
            with open(f"{group}/freezer.state", "w") as f:
                f.write("THAWED")
            os.rmdir(group)
    assert r["state"] == kill.DYING and r["last"] == 9 and r["fd_open"], r
    # Frozen shows state D: not waited for beyond the settle time (not EXIT_WAIT).
    assert r["wall"] < 0.2 + kill.KILL_SETTLE + 0.6 < kill.EXIT_WAIT and r["took"] >= 0.4, r
    assert not r["exited_frozen"] and r["exited_thawed"], r
    assert r["fds_held"] == 1 and r["fds_after_release"] == 0, r
    assert r["rc"] in (-9, -15), r  # SIGTERM is fatal to it already: it exits by that
    if kernel() >= (5, 15):  # process_mrelease
        assert r["reaped"] == kill.FREED, r
        assert r["rss_before"] > 60_000 and r["rss_after"] < 8_000, r


# PID 1 (root) starts one child as root and one as nobody, then drops to
# nobody and kills both: the root one is refused by the kernel, the other is
# killed all the same.
REFUSED = r"""
mine = subprocess.Popen(["sleep", "60"], user=65534, group=65534)
roots = subprocess.Popen(["sleep", "60"])
targets = [target(roots), target(mine)]
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
before = fds()
out = kill.signal_targets(fs, targets, signal.SIGTERM, 0.5, time.monotonic)
print(json.dumps({"states": [t.state for t in targets], "why": targets[0].why,
                  "last": out.last, "fds": fds() - before,
                  "roots_alive": roots.poll() is None, "mine_rc": mine.wait(5)}))
"""


def test_kernel_refusal_is_reported_and_the_rest_of_the_group_killed() -> None:
    r = python_in_namespace(REFUSED)
    assert r["states"] == [kill.REFUSED, kill.EXITED], r
    assert r["why"] == ("pidfd_send_signal: Operation not permitted; "
                        "kill(): Operation not permitted"), r
    assert r["roots_alive"] and r["mine_rc"] == -15 and r["last"] == 15 and r["fds"] == 0, r
