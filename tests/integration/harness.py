"""Runs as PID 1 of a private PID namespace; drives one bustd scenario.

Usage (from a test): ``unshare --pid --fork --mount-proc python3 harness.py
SPEC_JSON``. Everything it starts lives in the namespace, so bustd can only
see and signal these children; when this process exits the kernel kills the
rest of the namespace. Prints one JSON object: the children's PIDs, which are
still alive, bustd's log and whether bustd is still running.

SPEC keys: children (list of {name, mib, adj, ignore_term, group, exe,
argv0, kind, user}); group is "new" (own process group) or the name of a
child whose group to join; exe runs the child with a copy of the interpreter
of that file name (so /proc/PID/exe ends in it; owned by ``user`` if given);
argv0 sets its argv[0]; kind is child.py's KIND (private, shm=N, file=PATH,
grow=R, zombie); user runs it as that user (setpriv, no groups). bustd
(argument list); bustd_prefix (a command to start bustd with, e.g.
prlimit); margin_of (optional: the name of the child that should be
killed: add ``-M`` = MemAvailable now + a quarter of the drop of MemAvailable
measured when that child started, so the emergency ends once it is freed,
however much other work on the host moves MemAvailable); kills (kill lines
to wait for); settle (seconds to watch after that); timeout (seconds).
tmpfs_mib (optional): once the children run, mount a tmpfs private to the
namespace's mount namespace and write a file of that many MiB into it, held
by no process once closed (the result's ``tmpfs`` is its mount point);
level_above_kib (optional): then add ``-M`` = MemAvailable + that, a forced
level no kill of the children can reach (review H1).
The result has each child's measured drop of MemAvailable (``drops``, KiB).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def mem_available_kib() -> int:
    """Return MemAvailable in KiB."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def settled_available_kib(limit_s: float = 5.0) -> int:
    """Return MemAvailable once it has stopped moving (within 16 MiB over 0.3 s).

    On some hosts MemAvailable follows an allocation with a delay; a drop
    read too early is charged to the next child.
    """
    deadline = time.monotonic() + limit_s
    last = mem_available_kib()
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = mem_available_kib()
        if abs(now - last) < 16 * 1024:
            return now
        last = now
    return last


def interpreter(exe: str, folder: str, system: bool = False) -> tuple[str, dict[str, str]]:
    """Return a copy of this interpreter named ``exe`` in ``folder``, and its environment.

    A copy, not a link: /proc/PID/exe names the file the kernel executed,
    after links are resolved. PYTHONHOME keeps the standard library found.
    ``system``: a copy of /usr/bin/python3 instead (another user can run it:
    this interpreter may lie in root's home).
    """
    path = os.path.join(folder, exe)
    if system:
        shutil.copy2(os.path.realpath("/usr/bin/python3"), path)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        return path, {**env, "PYTHONHOME": "/usr"}
    if not os.path.exists(path):
        shutil.copy2(os.path.realpath(sys.executable), path)
    return path, {**os.environ, "PYTHONHOME": sys.base_prefix}


def start_child(spec: dict[str, object], groups: dict[str, int],
                folder: str) -> subprocess.Popen[bytes]:
    """Start one child.py and wait until it says ready."""
    program, env = sys.executable, dict(os.environ)
    user = str(spec.get("user", ""))
    if spec.get("exe"):
        sub = os.path.join(folder, user or "root")
        os.makedirs(sub, exist_ok=True)
        program, env = interpreter(str(spec["exe"]), sub, bool(user))
        if user:
            import pwd
            pw = pwd.getpwnam(user)
            os.chown(sub, pw.pw_uid, pw.pw_gid)  # the user's own folder and copy
            os.chown(program, pw.pw_uid, pw.pw_gid)
    argv = [str(spec.get("argv0", program)), os.path.join(HERE, "child.py"), str(spec["name"]),
            str(spec.get("mib", 1)), str(spec.get("adj", 0))]
    if spec.get("ignore_term"):
        argv.append("ignore-term")
    if spec.get("kind"):
        argv.append(str(spec["kind"]))
    if user:
        # setpriv execs the program by path; argv0 is then its path.
        import pwd
        pw = pwd.getpwnam(user)
        argv = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
                program, *argv[1:]]
        program = "setpriv"
    group = spec.get("group")
    pgid = 0 if group == "new" else groups.get(str(group), -1)

    def setpgid() -> None:
        if pgid >= 0:
            os.setpgid(0, pgid)

    proc = subprocess.Popen(argv, executable=shutil.which(program) or program,
                            stdout=subprocess.PIPE, preexec_fn=setpgid, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != b"ready":
        raise RuntimeError(f"child {spec['name']} did not start: {line!r}")
    return proc


def fill_tmpfs(folder: str, mib: int) -> str:
    """Mount a tmpfs in ``folder`` (private: this is a mount namespace of its own)
    and write a ``mib`` MiB file into it; return the mount point."""
    point = os.path.join(folder, "tmpfs")
    os.mkdir(point)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib + 16}m", "tmpfs", point],
                   check=True)
    block = os.urandom(1 << 20)
    with open(os.path.join(point, "held-by-nobody"), "wb") as f:
        for _ in range(mib):
            f.write(block)
    settled_available_kib()
    return point


def main() -> None:
    """Run the scenario in SPEC (argv[1]) and print the JSON result."""
    spec = json.loads(sys.argv[1])
    if os.getpid() != 1:
        raise SystemExit("harness.py must run as PID 1 of a new PID namespace")
    children: dict[str, subprocess.Popen[bytes]] = {}
    groups: dict[str, int] = {}
    drops: dict[str, int] = {}
    folder = tempfile.mkdtemp(prefix="bustd-it-")
    os.chmod(folder, 0o755)  # a child run as another user reaches its copy
    before = settled_available_kib()
    for c in spec["children"]:
        proc = start_child(c, groups, folder)
        after = settled_available_kib()
        drops[c["name"]] = before - after
        before = after
        children[c["name"]] = proc
        groups[c["name"]] = os.getpgid(proc.pid)
    args = list(spec["bustd"])
    tmpfs = None
    if "tmpfs_mib" in spec:
        tmpfs = fill_tmpfs(folder, int(spec["tmpfs_mib"]))
    if "level_above_kib" in spec:
        args += ["-M", str(settled_available_kib() + int(spec["level_above_kib"]))]
    if "margin_of" in spec:
        drop = drops[spec["margin_of"]]
        if drop < 64 * 1024:
            raise SystemExit(f"MemAvailable fell only {drop} KiB when {spec['margin_of']} "
                             "started: too little to set a margin from")
        # A quarter: on some hosts MemAvailable rises by only about half the
        # drop when the child dies (seen here: -2.2 GiB at start, +1.1 GiB
        # at its death), and a margin above that rise means a second kill.
        args += ["-M", str(mem_available_kib() + drop // 4)]
    prefix = list(spec.get("bustd_prefix", []))
    daemon = subprocess.Popen([*prefix, sys.executable, "-m", "bustd", "-r", "0", *args],
                              cwd=REPO, stderr=subprocess.PIPE)
    assert daemon.stderr is not None
    log = b""
    deadline = time.monotonic() + spec.get("timeout", 20)
    want = spec.get("kills", 1)
    settle_until = None
    os.set_blocking(daemon.stderr.fileno(), False)
    while time.monotonic() < (settle_until or deadline):
        ready, _, _ = select.select([daemon.stderr], [], [], 0.1)
        if ready:
            chunk = daemon.stderr.read() or b""
            log += chunk
            if not chunk and daemon.poll() is not None:
                break
        for proc in children.values():
            proc.poll()  # reap, so a killed child is not a zombie
        if settle_until is None and log.count(b"kill: ") + log.count(b"would kill") >= want:
            settle_until = time.monotonic() + spec.get("settle", 2.0)
    for proc in children.values():
        proc.poll()
    result = {
        "pids": {name: p.pid for name, p in children.items()},
        "alive": {name: p.returncode is None for name, p in children.items()},
        "bustd_alive": daemon.poll() is None,
        "bustd_pid": daemon.pid,
        "drops": drops,
        "tmpfs": tmpfs,
    }
    daemon.terminate()
    try:
        _, rest = daemon.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        daemon.kill()
        _, rest = daemon.communicate()
    result["log"] = (log + (rest or b"")).decode("utf-8", "replace")
    result["bustd_exit"] = daemon.returncode
    if tmpfs is not None:
        subprocess.run(["umount", tmpfs], check=False)
    shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
