"""The lean runtime as users start it: daemon mode, fake trees, no root.

Each run is confined to a private PID namespace, so even a mistake could
only signal processes started there.
"""

from __future__ import annotations

import json
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
        'echo "thp=$(awk \'/^THP_enabled:/ {print $2}\' /proc/$pid/status)"\n'
        'echo "nice=$(ps -o ni= -p "$pid" | tr -d " ")"\n'
        '"$1" -m bustd --daemon --pid-file "$2" -r 0 2>>"$3"; echo "second=$?"\n'
        'kill -TERM "$pid"; i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do'
        ' sleep 0.1; i=$((i+1)); done\n'
        '[ -e "$2" ] && echo "pidfile=left" || echo "pidfile=removed"\n',
        str(pid_file), str(tmp_path / "log"))
    lines = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
    log = (tmp_path / "log").read_text()
    assert lines["first"] == "0", (out.stdout, out.stderr, log)
    assert lines["comm"] == "bustd"
    assert lines["thp"] == "0"  # transparent huge pages off for the daemon (lock_memory)
    assert lines["nice"] == "-10"  # raise_priority: busy CPUs must not delay its checks
    assert lines["second"] == "4"
    assert f"bustd already running as pid {lines['pid']}" in log
    assert lines["pidfile"] == "removed", log
    assert "bustd exiting after 0 kills" in log


def start_daemon(pid_file: str, setup: str = "") -> tuple[str, str]:
    """Run ``setup``, then ``bustd --daemon`` (dry run), confined; return (exit code, stderr).

    The exit code is the one the starting shell sees: the daemon's own
    when it fails to start, so the documented code must arrive here.
    """
    out = in_namespace(
        f'{setup}\n"$1" -m bustd --daemon --dry-run --pid-file "$2" -r 0 2>&1; echo "rc=$?"',
        pid_file, timeout=30)
    assert out.stderr == "", out.stderr
    *log, rc = out.stdout.splitlines()
    assert rc.startswith("rc="), out.stdout
    text = "\n".join(log)
    assert "Traceback" not in text, text
    return rc[3:], text


@pytest.mark.parametrize(("content", "problem"), [
    ("99999999999\n", "holds b'99999999999\\n', not a pid"),
    ("0\n", "holds b'0\\n', not a pid"),
    ("-5\n", "holds b'-5\\n', not a pid"),
    ("12ab\n", "holds b'12ab\\n', not a pid"),
    ("1\n", "bustd already running as pid 1"),  # PID 1 of the namespace: the shell
])
def test_pid_file_not_naming_a_dead_process_exits_4(tmp_path: Path, content: str,
                                                     problem: str) -> None:
    pid_file = tmp_path / "bustd.pid"
    pid_file.write_text(content)
    rc, log = start_daemon(str(pid_file))
    assert (rc, log) == ("4", f"error: pid file {pid_file}: {problem}" + (
        ": remove it, or choose another --pid-file" if "not a pid" in problem else ""))
    assert pid_file.read_text() == content  # left alone


def test_pid_file_that_is_a_directory_exits_4(tmp_path: Path) -> None:
    rc, log = start_daemon(str(tmp_path))
    assert (rc, log) == ("4", f"error: pid file {tmp_path}: not a regular file")


def test_pid_file_that_is_a_fifo_exits_4_without_waiting(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "bustd.pid")
    rc, log = start_daemon(str(tmp_path / "bustd.pid"))
    assert (rc, log) == ("4", f"error: pid file {tmp_path / 'bustd.pid'}: not a regular file")


def test_pid_file_in_a_missing_directory_exits_4_in_the_caller(tmp_path: Path) -> None:
    pid_file = tmp_path / "no" / "such" / "bustd.pid"
    rc, log = start_daemon(str(pid_file))
    assert (rc, log) == ("4", f"error: pid file {pid_file}: No such file or directory")


def test_pid_file_in_a_read_only_directory_exits_4_in_the_caller(tmp_path: Path) -> None:
    # Root may write anywhere on a writable file system; a read-only bind
    # mount (private to the test's mount namespace) stops even root.
    ro = tmp_path / "ro"
    ro.mkdir()
    rc, log = start_daemon(str(ro / "bustd.pid"), setup=f"mount --bind -o ro '{ro}' '{ro}' || exit")
    assert (rc, log) == ("4", f"error: pid file {ro / 'bustd.pid'}: Read-only file system")
    assert list(ro.iterdir()) == []  # no temporary file left either


@pytest.mark.parametrize("content", ["", "\n", "4000000\n"])
def test_empty_or_stale_pid_file_is_replaced(tmp_path: Path, content: str) -> None:
    pid_file = tmp_path / "bustd.pid"
    pid_file.write_text(content)
    out = in_namespace(
        '"$1" -m bustd --daemon --dry-run --pid-file "$2" -r 0 2>"$3"; echo "rc=$?"\n'
        'pid=$(cat "$2"); echo "pid=$pid argv=$(tr \'\\0\' , </proc/$pid/cmdline)"\n'
        'kill -TERM "$pid"\n'
        'i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done',
        str(pid_file), str(tmp_path / "log"))
    lines = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
    log = (tmp_path / "log").read_text()
    # The pid file is written when the caller returns, and names the daemon.
    assert lines["rc"] == "0", (out.stdout, log)
    assert "-S,-I," in lines["argv"] and "/bustd/lean.py," in lines["argv"], out.stdout
    assert "Traceback" not in log and "error" not in log, log


def test_fake_tree_runs_the_full_runtime_as_a_dry_run(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path)
    fake.set_meminfo(total=8 << 20, available=300 << 10)  # 3.7 %: below 10 %
    fake.set_pressure()
    fake.add(FAKE_PID, b"hog) R (x", oom_score=900, rss_kib=4 << 20)
    fake.add(FAKE_PID + 1, b"small", oom_score=700, rss_kib=1 << 10)
    # --foreground: one SIGINT, to the daemon only (see the test below for two)
    out = in_namespace('timeout --foreground --preserve-status -s INT 6 "$1" -m bustd '
                       '-m 10,0 -r 0 --proc-root "$2"; echo rc=$?', str(tmp_path))
    assert out.stdout.strip() == "rc=0", out.stderr
    assert f"dry run: would kill pid={FAKE_PID} name=hog) R (x " in out.stderr
    assert "kill: pid=" not in out.stderr
    assert "PSI trigger" not in out.stderr  # a fake tree takes no kernel trigger
    assert "DRY RUN" in out.stderr


@pytest.mark.parametrize("first, second", [("SIGTERM", "SIGINT"), ("SIGINT", "SIGINT"),
                                           ("SIGTERM", "SIGTERM"), ("SIGINT", "SIGTERM")])
def test_a_second_stop_request_is_the_same_request(tmp_path: Path, first: str,
                                                   second: str) -> None:
    # systemd, a terminal and GNU timeout (which signals the child, then its
    # whole group) can all ask twice; the second may arrive while the
    # daemon logs its exit line, or once the interpreter is finalizing.
    fake = FakeProc(tmp_path)
    fake.set_meminfo(total=8 << 20, available=6 << 20)
    fake.set_pressure()
    out = confined([sys.executable, str(REPO / "tests/integration/stop_twice.py"),
                    sys.executable, str(tmp_path), first, second], 30, text=True, cwd=REPO)
    result = json.loads(out.stdout)
    assert result["sent"] > 0, result  # the second request did come
    assert result["rc"] == 0, result["stderr"]
    assert result["stderr"].count("bustd exiting after 0 kills") == 1, result["stderr"]
    assert "Traceback" not in result["stderr"] and "ignored" not in result["stderr"]


def test_missing_psi_means_memory_only_said_once(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path)
    fake.set_meminfo(total=8 << 20, available=6 << 20)
    out = in_namespace('timeout --foreground -s INT 5 "$1" -m bustd -r 0 --proc-root "$2"',
                       str(tmp_path))
    assert out.stderr.count("PSI not available") == 1, out.stderr
    assert "acting on memory thresholds alone" in out.stderr


@pytest.mark.skipif(not os.access("/usr/bin/python3", os.X_OK) or not shutil.which("setpriv"),
                    reason="needs /usr/bin/python3 (readable by nobody) and setpriv")
def test_unprivileged_start_says_so() -> None:
    out = in_namespace(
        'timeout --foreground -s INT 5 setpriv --reuid=65534 --regid=65534 --clear-groups '
        '"$1" -m bustd -r 0', python="/usr/bin/python3")
    assert "running as uid 65534, not root" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
