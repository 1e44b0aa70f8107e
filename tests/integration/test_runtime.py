"""The lean runtime as users start it: daemon mode, fake trees, no root.

Each run is confined to a private PID namespace, so even a mistake could
only signal processes started there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakeproc import FAKE_PID, FakeProc
from tests.integration.confine import confined

REPO = Path(__file__).resolve().parents[2]


def in_namespace(script: str, *args: str, timeout: float = 30,
                 python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    """Run a shell ``script`` as PID 1 of a new PID namespace, in the repository."""
    return confined(["sh", "-c", script, "sh", python, *args], timeout, text=True, cwd=REPO)


def test_daemon_mode_writes_pid_file_refuses_a_second_and_cleans_up(tmp_path: Path) -> None:
    pid_file = tmp_path / "bustd.pid"
    out = in_namespace(
        '"$1" -m bustd --daemon --pid-file "$2" -r 0 2>"$3"; echo "first=$?"\n'
        'sleep 1; pid=$(cat "$2"); echo "pid=$pid comm=$(cat /proc/$pid/comm)"\n'
        '"$1" -m bustd --daemon --pid-file "$2" -r 0 2>>"$3"; echo "second=$?"\n'
        'kill -TERM "$pid"; i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do'
        ' sleep 0.1; i=$((i+1)); done\n'
        '[ -e "$2" ] && echo "pidfile=left" || echo "pidfile=removed"\n',
        str(pid_file), str(tmp_path / "log"))
    lines = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
    log = (tmp_path / "log").read_text()
    assert lines["first"] == "0", (out.stdout, out.stderr, log)
    assert lines["comm"] == "bustd"
    assert lines["second"] == "4"
    assert f"bustd already running as pid {lines['pid']}" in log
    assert lines["pidfile"] == "removed", log
    assert "bustd exiting after 0 kills" in log


def test_fake_tree_runs_the_full_runtime_as_a_dry_run(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path)
    fake.set_meminfo(total=8 << 20, available=300 << 10)  # 3.7 %: below 10 %
    fake.set_pressure()
    fake.add(FAKE_PID, b"hog) R (x", oom_score=900, rss_kib=4 << 20)
    fake.add(FAKE_PID + 1, b"small", oom_score=700, rss_kib=1 << 10)
    out = in_namespace('timeout --preserve-status -s INT 6 "$1" -m bustd -m 10,0 -r 0 '
                       '--proc-root "$2"; echo rc=$?', str(tmp_path))
    assert out.stdout.strip() == "rc=0", out.stderr
    assert f"dry run: would kill pid={FAKE_PID} name=hog) R (x " in out.stderr
    assert "kill: pid=" not in out.stderr
    assert "PSI trigger" not in out.stderr  # a fake tree takes no kernel trigger
    assert "DRY RUN" in out.stderr


def test_missing_psi_means_memory_only_said_once(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path)
    fake.set_meminfo(total=8 << 20, available=6 << 20)
    out = in_namespace('timeout -s INT 5 "$1" -m bustd -r 0 --proc-root "$2"', str(tmp_path))
    assert out.stderr.count("PSI not available") == 1, out.stderr
    assert "acting on memory thresholds alone" in out.stderr


@pytest.mark.skipif(not os.access("/usr/bin/python3", os.X_OK) or not shutil.which("setpriv"),
                    reason="needs /usr/bin/python3 (readable by nobody) and setpriv")
def test_unprivileged_start_says_so() -> None:
    out = in_namespace(
        'timeout -s INT 5 setpriv --reuid=65534 --regid=65534 --clear-groups '
        '"$1" -m bustd -r 0', python="/usr/bin/python3")
    assert "running as uid 65534, not root" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
