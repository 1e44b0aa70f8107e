"""bustd on the real kernel, confined to a private PID namespace.

Each test runs harness.py as PID 1 of a new namespace (``unshare --pid
--fork --mount-proc``): the daemon sees and can signal only the children the
harness started there. Memory thresholds are set so the current state is an
emergency; ``margin_of`` makes it end once the expected victim's memory is freed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from tests.integration.confine import confined
from tests.integration.scenario import kill_lines, run

HERE = os.path.dirname(os.path.abspath(__file__))



def test_kills_the_largest_once_and_spares_the_rest() -> None:
    result = run({
        "children": [{"name": "hog", "mib": 2048}, {"name": "small", "mib": 64},
                     {"name": "bystander", "mib": 8}],
        "bustd": [], "margin_of": "hog", "settle": 3})
    kills = kill_lines(result["log"])
    assert len(kills) == 1, result["log"]
    assert f"pid={result['pids']['hog']} name=hog" in kills[0]
    assert "signal=SIGTERM" in kills[0] and "exited after" in kills[0]
    assert "MemAvailable" in kills[0] and "oom_score=" in kills[0] and "uid=0" in kills[0]
    reaction = int(kills[0].split("reaction=")[1].split(" ms after ")[0])
    assert 0 <= reaction < 5000 and " ms after timer wakeup" in kills[0], kills[0]
    assert result["alive"] == {"hog": False, "small": True, "bystander": True}
    assert result["bustd_alive"]


def test_unkillables_and_ignore_are_spared() -> None:
    # Name rules match the executable (/proc/PID/exe): the children run copies
    # of the interpreter named precious-db and keepme.
    result = run({
        "children": [{"name": "precious-db", "mib": 2600, "exe": "precious-db"},
                     {"name": "keepme", "mib": 2300, "exe": "keepme"},
                     {"name": "worker", "mib": 2000}, {"name": "bystander", "mib": 8}],
        # By full path: the copies lie in the harness's folder under /tmp, where a
        # name alone protects nothing (issue 13); the whole real path does.
        "bustd": ["-u", "bash | /tmp/bustd-it-*/root/precious*",
                  "--ignore", "/tmp/bustd-it-[^/]*/root/keep.*"], "margin_of": "worker",
        "settle": 3})
    kills = kill_lines(result["log"])
    assert len(kills) == 1, result["log"]
    assert "name=worker" in kills[0]
    assert result["alive"] == {"precious-db": True, "keepme": True, "worker": False,
                               "bystander": True}


def test_a_forged_name_does_not_protect() -> None:
    # Issue 10, defect 5: `exec -a /usr/sbin/sshd` and comm "sshd" do not make a
    # process unkillable by -u sshd; the real sshd executable would be.
    result = run({
        "children": [{"name": "sshd", "mib": 2600, "argv0": "/usr/sbin/sshd"},
                     {"name": "bystander", "mib": 1000}],
        "bustd": ["-u", "sshd"], "margin_of": "sshd", "settle": 3})
    kills = kill_lines(result["log"])
    assert len(kills) == 1 and "name=sshd" in kills[0], result["log"]
    assert result["alive"] == {"sshd": False, "bystander": True}


def test_prefer_and_avoid_shift_the_ranking() -> None:
    result = run({
        "children": [{"name": "big", "mib": 3000, "exe": "big"},
                     {"name": "chosen", "mib": 2000, "exe": "chosen"}],
        "bustd": ["--prefer", "^cho", "--avoid", "/tmp/bustd-it-[^/]*/root/big"],
        "margin_of": "chosen",
        "settle": 2})
    kills = kill_lines(result["log"])
    assert len(kills) == 1 and "name=chosen" in kills[0], result["log"]
    assert result["alive"] == {"big": True, "chosen": False}


def test_oom_score_adj_outranks_size() -> None:
    result = run({
        "children": [{"name": "big", "mib": 3000}, {"name": "expendable", "mib": 2000, "adj": 500}],
        "bustd": [], "margin_of": "expendable", "settle": 2})
    kills = kill_lines(result["log"])
    assert len(kills) == 1 and "name=expendable" in kills[0], result["log"]
    assert result["alive"] == {"big": True, "expendable": False}


def test_dry_run_kills_nothing() -> None:
    result = run({
        "children": [{"name": "hog", "mib": 64}, {"name": "bystander", "mib": 8}],
        "bustd": ["--dry-run", "-m", "100", "-s", "100"], "settle": 2.5})
    assert "dry run: would kill pid=" in result["log"]
    assert f"pid={result['pids']['hog']} name=hog" in result["log"]
    assert not kill_lines(result["log"])
    assert result["alive"] == {"hog": True, "bystander": True}


def test_sigterm_ignored_escalates_to_sigkill_after_grace() -> None:
    result = run({
        "children": [{"name": "stubborn", "mib": 2000, "ignore_term": True},
                     {"name": "bystander", "mib": 8}],
        "bustd": ["--grace", "0.3"], "margin_of": "stubborn", "settle": 2})
    kills = kill_lines(result["log"])
    assert len(kills) == 1 and "name=stubborn" in kills[0], result["log"]
    assert "signal=SIGKILL" in kills[0]
    took = float(kills[0].split("exited after ")[1].split(" s")[0])
    assert 0.3 <= took < 5, kills[0]
    assert result["alive"] == {"stubborn": False, "bystander": True}


def test_kill_levels_send_sigkill_at_once() -> None:
    result = run({
        "children": [{"name": "hog", "mib": 600, "ignore_term": True}],
        "bustd": ["-m", "100,100", "-s", "100,100", "--grace", "9"], "settle": 1})
    kills = kill_lines(result["log"])
    assert kills and "name=hog signal" not in kills[0]
    assert "signal=SIGKILL" in kills[0]
    took = float(kills[0].split("exited after ")[1].split(" s")[0])
    assert took < 5, kills[0]  # not the 30 s grace


def test_never_kills_itself_or_pid1_when_nothing_is_left() -> None:
    result = run({
        "children": [{"name": "only", "mib": 16}],
        "bustd": ["-m", "100", "-s", "100"], "settle": 3})
    kills = kill_lines(result["log"])
    assert len(kills) == 1 and "name=only" in kills[0], result["log"]
    assert result["bustd_alive"]
    assert result["log"].count("no process may be killed") == 1, result["log"]


def test_kill_pgroup_signals_the_whole_group() -> None:
    result = run({
        "children": [{"name": "leader", "mib": 2000, "group": "new"},
                     {"name": "member", "mib": 16, "group": "leader"},
                     {"name": "outsider", "mib": 16, "group": "new"}],
        "bustd": ["-g"], "margin_of": "leader", "settle": 2})
    kills = kill_lines(result["log"])
    assert len(kills) == 1 and "name=leader" in kills[0], result["log"]
    assert "with 1 more of its group" in kills[0]
    assert result["alive"] == {"leader": False, "member": False, "outsider": True}


# Runs in a new PID namespace: recycles a PID with ns_last_pid and asks
# kill.signal_targets to kill the old process at that PID. ``extra`` (set by
# the code before it) is printed with the result.
RECYCLE = r"""
a = subprocess.Popen(["sleep", "60"])
time.sleep(0.2)
pid, start = a.pid, read_starttime(fs, a.pid)
a.kill(); a.wait()
time.sleep(0.05)
with open("/proc/sys/kernel/ns_last_pid", "w") as f:
    f.write(str(pid - 1))
b = subprocess.Popen(["sleep", "60"])
time.sleep(0.2)
out = kill.signal_targets(fs, [kill.Target(pid, start)], signal.SIGKILL, 0.5, time.monotonic)
(t,) = out.targets
print(json.dumps({**extra, "a": pid, "b": b.pid, "state": t.state, "why": t.why,
                  "signalled": out.signalled, "b_alive": b.poll() is None}))
"""

PREAMBLE = r"""
import errno, json, os, signal, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from bustd import kill
from bustd.process import read_starttime
from bustd.procfs import ProcFS
fs = ProcFS("/proc")
extra = {}
"""


def python_in_namespace(code: str) -> dict[str, Any]:
    """Run Python ``code`` as PID 1 of a new PID namespace; return its JSON output."""
    out = confined([sys.executable, "-c", PREAMBLE + code,
                    os.path.dirname(os.path.dirname(HERE))], 30)
    assert out.returncode == 0, out.stderr.decode()
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def assert_recycled_pid_spared(result: dict[str, Any]) -> None:
    """Check the outcome of RECYCLE."""
    assert result["a"] == result["b"], "the test failed to recycle the PID"
    assert result["b_alive"]
    assert not result["signalled"]
    assert result["state"] == "gone" and "recycled" in result["why"]


def test_recycled_pid_is_not_killed() -> None:
    assert_recycled_pid_spared(python_in_namespace(RECYCLE))


NO_PIDFD = r"""
def no_pidfd(pid, flags=0):
    raise OSError(errno.ENOSYS, "pidfd_open not implemented")  # as on Linux < 5.3

os.pidfd_open = no_pidfd
code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
stubborn = subprocess.Popen([sys.executable, "-c", code])
time.sleep(0.5)
target = kill.Target(stubborn.pid, read_starttime(fs, stubborn.pid))
first = kill.signal_targets(fs, [target], signal.SIGTERM, 0.3, time.monotonic)
via = "kill()" if first.targets[0].note else "pidfd"  # a note says why not a pidfd
extra["first"] = [first.targets[0].state, first.last, first.took, via]
extra["stubborn_rc"] = stubborn.wait(5)
"""


def test_without_pidfds_kill_escalates_and_spares_a_recycled_pid() -> None:
    r = python_in_namespace(NO_PIDFD + RECYCLE)
    state, last, took, via = r["first"]
    assert state == "exited" and last == signal.SIGKILL and via == "kill()", r
    assert 0.3 <= took < 3, r
    assert r["stubborn_rc"] == -signal.SIGKILL
    assert_recycled_pid_spared(r)
