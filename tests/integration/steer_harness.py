"""Runs as PID 1 of a private PID (and mount) namespace: another user tries to steer bustd.

Usage (from test_steer.py): ``unshare --pid --fork --mount-proc python3 steer_harness.py
CASE``. Every attack step runs as a real unprivileged user (``setpriv
--reuid=nobody --regid=nogroup --clear-groups``); bustd, when started, can
signal only the children started here. Prints one JSON object with what
each CASE observed (review H4, L3, L6, L7, M3, M4):

- ``user_link``: hooks reached through a folder or a link that nobody owns;
- ``hook_swap``: the hook's link repointed after start; what the hook saw
  of its oom_score_adj and THP setting;
- ``outputs_start``: output files and folders nobody planted, at start;
- ``outputs_run``: bustd's writers against what nobody planted meanwhile;
- ``config``: the config file's folder, at start and at reload;
- ``bus``: a session bus of nobody's that forges log lines and stops helpers.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script

from tests.integration.dbus_session import NOBODY, setpriv
from tests.integration.harness import REPO, mem_available_kib, start_child

HERE = Path(__file__).resolve().parent
# The harness, the fake bus, the hooks' shell commands: never victims here.
SPARE = "python*|dash|bash|sh|setpriv|sleep|env|timeout|cat|grep|tr"
# A victim: a copy of the interpreter named "victim" (so SPARE does not cover it).
VICTIM = {"name": "victim", "mib": 1, "adj": 1000, "exe": "victim"}


def as_nobody(*argv: str) -> None:
    """Run ``argv`` as nobody (no groups); raises if it fails."""
    subprocess.run([*setpriv(NOBODY), *argv], check=True, timeout=30)


def force() -> list[str]:
    return ["-M", str(mem_available_kib() + (1 << 20))]


def script(path: Path, body: str) -> str:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def front_end(*args: str, timeout: float = 20) -> dict[str, Any]:
    """Start bustd with ``args`` (a dry run); return its exit code and stderr lines.

    A start that is refused ends at once; one that is not is stopped after
    ``timeout`` s (exit code None).
    """
    proc = subprocess.Popen([sys.executable, "-m", "bustd", "-r", "0", "--dry-run", *args],
                            cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        proc.terminate()
        _, err = proc.communicate()
        code = None
    return {"exit": code, "lines": err.splitlines()}


class Daemon:
    """A running bustd whose stderr is collected without blocking."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bustd", "-r", "0", *args],
                                     cwd=REPO, stderr=subprocess.PIPE)
        assert self.proc.stderr is not None
        os.set_blocking(self.proc.stderr.fileno(), False)
        self.log = b""

    def text(self) -> str:
        return self.log.decode("utf-8", "replace")

    def wait_for(self, done: Callable[[str], bool], timeout: float) -> bool:
        """Collect the log until ``done(log)`` or ``timeout`` s; return whether it was done."""
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done(self.text()):
                return True
            ready, _, _ = select.select([self.proc.stderr], [], [], 0.1)
            if ready:
                self.log += self.proc.stderr.read() or b""
        return done(self.text())

    def stop(self) -> str:
        self.proc.terminate()
        try:
            _, rest = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, rest = self.proc.communicate()
        self.log += rest or b""
        return self.text()


def case_user_link(top: Path) -> dict[str, Any]:
    hooks = top / "hooks"
    hooks.mkdir(mode=0o755)
    good = script(hooks / "good", "exit 0")
    user = top / "user"
    user.mkdir(mode=0o755)
    os.chown(user, NOBODY, NOBODY)
    public = top / "public"
    public.mkdir()
    public.chmod(0o1777)  # as /tmp
    as_nobody("ln", "-s", good, str(user / "hook"))
    as_nobody("ln", "-s", good, str(public / "hook"))
    return {"folder": front_end("--pre-kill-hook", str(user / "hook"), timeout=8),
            "link": front_end("--post-kill-hook", str(public / "hook"), timeout=8),
            "user": str(user), "public": str(public)}


def case_hook_swap(top: Path) -> dict[str, Any]:
    hooks = top / "hooks"
    hooks.mkdir(mode=0o755)
    ran = top / "ran"
    script(hooks / "a", f'{{ echo "a $(cat /proc/self/oom_score_adj) '
                        f'$(grep THP_enabled /proc/self/status | tr -d " \\t")"; }} >> {ran}')
    script(hooks / "b", f"echo b >> {ran}")
    (hooks / "hook").symlink_to(hooks / "a")
    victim = start_child(VICTIM, {}, str(top))
    d = Daemon("--dry-run", *force(), "--unkillables", SPARE, "--pre-kill-hook",
               str(hooks / "hook"), "--hook-timeout", "2")

    def runs() -> list[str]:
        return ran.read_text().splitlines() if ran.exists() else []

    first = d.wait_for(lambda log: bool(runs()), 30)
    new = hooks / "hook.new"
    new.symlink_to(hooks / "b")
    os.replace(new, hooks / "hook")  # the link now leads to b
    swapped_at = len(runs())
    more = d.wait_for(lambda log: len(runs()) >= swapped_at + 2, 30)
    log = d.stop()
    victim.kill()
    victim.wait()
    return {"first": first, "more": more, "runs": runs(), "swapped_at": swapped_at,
            "log": log}


def case_outputs_start(top: Path) -> dict[str, Any]:
    public = top / "public"
    public.mkdir()
    public.chmod(0o1777)
    user = top / "user"
    user.mkdir(mode=0o755)
    os.chown(user, NOBODY, NOBODY)
    as_nobody("mkfifo", str(public / "fifo.jsonl"))
    as_nobody("touch", str(public / "own.jsonl"))
    return {
        "fifo": front_end("--kill-log", str(public / "fifo.jsonl"), timeout=8),
        "owned": front_end("--kill-log", str(public / "own.jsonl"), timeout=8),
        "metrics_folder": front_end("--metrics-file", str(user / "b.prom"), timeout=8),
        "pid_folder": front_end("--daemon", "--pid-file", str(user / "b.pid"), timeout=8),
        "public": str(public), "user": str(user)}


def in_time(call: Callable[[], object], limit: float = 5.0) -> str:
    """Run ``call`` in a thread; return "returned", "raised: ..." or "hung"."""
    outcome = ["hung"]

    def run() -> None:
        try:
            call()
            outcome[0] = "returned"
        except Exception as err:
            outcome[0] = f"raised: {type(err).__name__}: {err}"

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit)
    return outcome[0]


def case_outputs_run(top: Path) -> dict[str, Any]:
    from bustd.background import Background
    from bustd.killlog import KillLog
    from bustd.log import Log
    from bustd.metrics import Metrics
    from bustd.procfs import ProcFS
    from bustd.runtime import _write_pid_file

    public = top / "public"
    public.mkdir()
    public.chmod(0o1777)
    log_path = top / "bustd.log"
    log = Log(False, os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    secret = top / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    out: dict[str, Any] = {}
    # The metrics file: nobody plants its own file and a FIFO at the names
    # the old code used for the temporary file.
    as_nobody("touch", str(public / ".owned.prom.tmp"))
    as_nobody("mkfifo", str(public / ".fifo.prom.tmp"))
    for name in ("owned", "fifo"):
        m = Metrics(str(public / f"{name}.prom"), Background(), log, ProcFS("/proc"), "some")
        out[f"metrics_{name}"] = in_time(partial(m.replace, b"bustd_info 1\n"))
        try:
            out[f"metrics_{name}_owner"] = os.stat(public / f"{name}.prom").st_uid
        except OSError as err:
            out[f"metrics_{name}_owner"] = err.strerror
    # The kill log: a FIFO that nobody made there, and a hard link to a root file.
    as_nobody("mkfifo", str(public / "kills.jsonl"))
    k = KillLog(str(public / "kills.jsonl"), Background(), log)
    out["killlog_fifo"] = in_time(lambda: k.append(b'{"x": 1}\n'))
    os.link(secret, public / "linked.jsonl")  # what protected_hardlinks=0 lets anyone do
    k2 = KillLog(str(public / "linked.jsonl"), Background(), log)
    out["killlog_link"] = in_time(lambda: k2.append(b'{"x": 1}\n'))
    # The pid file: links at every name the old code could pick for its temporary file.
    for pid in range(2, 400):
        as_nobody("ln", "-s", str(secret), str(public / f"bustd.pid.{pid}"))
    out["pidfile"] = in_time(lambda: _write_pid_file(str(public / "bustd.pid")))
    st = os.lstat(public / "bustd.pid") if (public / "bustd.pid").exists() else None
    out["pidfile_regular"] = st is not None and not os.path.islink(public / "bustd.pid")
    out["secret"] = secret.read_text()
    out["secret_mode"] = oct(secret.stat().st_mode & 0o777)
    out["log"] = log_path.read_text()
    return out


def case_config(top: Path) -> dict[str, Any]:
    user = top / "user"
    user.mkdir(mode=0o755)
    (user / "bustd.conf").write_text("dry-run = true\n")
    (user / "bustd.conf").chmod(0o644)
    os.chown(user, NOBODY, NOBODY)
    start = front_end("-c", str(user / "bustd.conf"), "--print-config", timeout=8)
    etc = top / "etc"
    etc.mkdir(mode=0o755)
    conf = etc / "bustd.conf"
    conf.write_text("dry-run = true\n")
    conf.chmod(0o644)
    empty = top / "empty"
    empty.write_text("")
    empty.chmod(0o644)
    d = Daemon("-c", str(conf))
    up = d.wait_for(lambda log: "watching" in log, 30)
    os.chown(etc, NOBODY, NOBODY)  # the administrator's mistake; then nobody's attack:
    as_nobody("sh", "-c", f"rm -f {conf} && ln -s {empty} {conf}")
    assert d.proc.pid > 1
    os.kill(d.proc.pid, signal.SIGHUP)
    answered = d.wait_for(lambda log: "reload" in log, 30)
    return {"start": start, "up": up, "answered": answered, "log": d.stop(),
            "etc": str(etc)}


def case_bus(top: Path) -> dict[str, Any]:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run/user"],
                   check=True)
    home = Path(f"/run/user/{NOBODY}")
    home.mkdir(mode=0o700)
    os.chown(home, NOBODY, NOBODY)
    count = top / "count"
    count.touch()
    count.chmod(0o666)
    bus = subprocess.Popen([*setpriv(NOBODY), "/usr/bin/python3", "-S", "-I",
                            str(HERE / "fake_bus.py"), str(home / "bus"), str(count)])
    deadline = time.monotonic() + 20
    while not (home / "bus").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    hooks = top / "hooks"
    hooks.mkdir(mode=0o755)
    ran = top / "ran"
    hook = script(hooks / "pre", f'echo "$BUSTD_PID" >> {ran}')
    victims = [start_child(VICTIM, {}, str(top)) for _ in range(20)]
    d = Daemon(*force(), "--unkillables", SPARE, "-N", "--pre-kill-hook", hook,
               "--hook-timeout", "2")
    # Kills in vain here (a forced level): issue 14's back-off lets about
    # four come in a minute, each with its helper and its hook.
    killed = d.wait_for(lambda log: sum(line.startswith("warning: kill: pid=")
                                        for line in log.splitlines()) >= 4, 90)
    d.wait_for(lambda log: False, 1.0)
    log = d.stop()
    for v in victims:
        v.kill()
        v.wait()
    bus.kill()
    bus.wait()
    return {"killed": killed, "log": log, "hook_runs": ran.read_text().splitlines()
            if ran.exists() else [], "connections": count.read_text()}


CASES = {"user_link": case_user_link, "hook_swap": case_hook_swap,
         "outputs_start": case_outputs_start, "outputs_run": case_outputs_run,
         "config": case_config, "bus": case_bus}


def main() -> None:
    if os.getpid() != 1:
        raise SystemExit("steer_harness.py must run as PID 1 of a new PID namespace")
    top = Path(tempfile.mkdtemp(prefix="bustd-steer-", dir="/tmp"))
    top.chmod(0o755)  # nobody must reach what is inside
    try:
        result = CASES[sys.argv[1]](top)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
