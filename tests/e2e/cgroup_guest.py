"""Guest side of the cgroup v2 test: runs every case of cgroup_cases.py in one VM.

Started by the host (tests/e2e/special.py) as the VM's only command:

  cd HARNESS && python3 -m tests.e2e.cgroup_guest --repo REPO --out DIR

Mounts cgroup2 if virtme-ng's init has not, enables the memory controller,
then for each case builds the tree, starts the holders, bustd (with
``--cgroup <tree>/work``) and the hog, waits for the hog to die (or the case
to time out), stops bustd and records the facts in DIR/result.json:
``{"cases": {name: facts}, "mount": ..., "kernel": ...}``. It judges
nothing. Like guest.py it refuses to run unless PID 1 is virtme-ng's init:
it fills memory (inside a cgroup, but still).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from typing import Any, Callable

from bustd.cgroup import cgroup_mount, parse_mountinfo
from tests.e2e import cgroup_cases, daemons
from tests.e2e.guest import (
    in_vm,
    lock_self,
    note,
    parse_kernel_oom_kills,
    read_text,
    write_result,
    write_text,
)

__all__ = ["main"]

TREE = "bustd-e2e"
WORK = "/run/e2e-cgroup"  # tmpfs: logs
READY_WAIT_S = 60.0
SETTLE_S = 3.0  # after the hog died: a second kill would show


def mount_point() -> str:
    """Return the cgroup2 mount point, mounting it first if needed.

    Raises RuntimeError if cgroup2 cannot be mounted.
    """
    mount = cgroup_mount(parse_mountinfo(read_text("/proc/self/mountinfo").encode()))
    if mount is not None:
        return mount[1]
    for point in ("/sys/fs/cgroup", "/run/cgroup2"):
        os.makedirs(point, exist_ok=True)
        if subprocess.run(["mount", "-t", "cgroup2", "cgroup2", point],
                          check=False).returncode == 0:
            return point
    raise RuntimeError("cannot mount cgroup2")


def enable_memory(folder: str) -> None:
    """Enable the memory controller for the children of ``folder``."""
    write_text(f"{folder}/cgroup.subtree_control", "+memory")


def build_tree(point: str) -> str:
    """Create a fresh tree under ``point``; return its folder."""
    top = f"{point}/{TREE}"
    remove_tree(top)
    os.mkdir(top)
    enable_memory(top)
    for rel in ("work", "work/a", "work/b", "outside"):
        os.mkdir(f"{top}/{rel}")
        if rel == "work":
            enable_memory(f"{top}/work")
            write_text(f"{top}/work/memory.max", str(cgroup_cases.LIMIT_MIB << 20))
            if os.path.exists(f"{top}/work/memory.swap.max"):
                write_text(f"{top}/work/memory.swap.max", "0")
    return top


def remove_tree(top: str) -> None:
    """Kill what is left in the tree at ``top`` and remove its folders, deepest first."""
    if not os.path.isdir(top):
        return
    folders = sorted((d for d, _, _ in os.walk(top)), key=len, reverse=True)
    for folder in folders:
        if os.path.exists(f"{folder}/cgroup.kill"):
            write_text(f"{folder}/cgroup.kill", "1")
    deadline = time.monotonic() + 10
    for folder in folders:
        while True:
            try:
                os.rmdir(folder)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def into(folder: str) -> Callable[[], None]:
    """Return a preexec function: join cgroup ``folder``, oom_score_adj back to 0."""
    def join() -> None:
        write_text(f"{folder}/cgroup.procs", "0")
        write_text("/proc/self/oom_score_adj", "0")
    return join


def start(p: cgroup_cases.Proc, top: str, here: str) -> subprocess.Popen[bytes]:
    """Start one process of the case in its cgroup."""
    argv = [sys.executable, f"{here}/workloads.py", p.kind, "--mib", str(p.mib), "--rate",
            str(p.rate)]
    with open(f"{WORK}/{p.name}.log", "wb") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=into(f"{top}/{p.cgroup}"))


def rss_kib(pid: int) -> int:
    """Return the VmRSS of ``pid`` in KiB (0 if gone)."""
    m = re.search(r"^VmRSS:\s+(\d+)", read_text(f"/proc/{pid}/status"), re.M)
    return int(m.group(1)) if m else 0


def events(path: str) -> dict[str, int]:
    """Return a flat-keyed cgroup file (``memory.events``, ``cgroup.events``) as a dict."""
    out = {}
    for line in read_text(path).splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def stop(popen: subprocess.Popen[bytes], signum: int = signal.SIGKILL) -> None:
    """Signal ``popen`` if it still runs and reap it."""
    if popen.poll() is None:
        popen.send_signal(signum)
    try:
        popen.wait(10)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()


def run_case(case: cgroup_cases.Case, point: str, repo: str, here: str) -> dict[str, Any]:
    """Run one case on a fresh tree; return its facts."""
    facts: dict[str, Any] = {"errors": []}
    top = build_tree(point)
    work = f"{top}/work"
    facts["work"] = work
    subprocess.run(["dmesg", "-C"], check=False)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    daemon: subprocess.Popen[bytes] | None = None
    try:
        for p in cgroup_cases.PROCS:
            if p.kind == "hold":
                procs[p.name] = start(p, top, here)
                deadline = time.monotonic() + 60
                while (time.monotonic() < deadline and procs[p.name].poll() is None
                       and rss_kib(procs[p.name].pid) < p.mib * 1024 * 0.9):
                    time.sleep(0.2)
        if case.check:
            # What would bustd do here? Only the cgroup's processes are candidates.
            out = subprocess.run(["python3", "-m", "bustd", "check", "--json", "--top", "0",
                                  "--interval", "0.5", "--cgroup", work], cwd=repo,
                                 capture_output=True, check=False, timeout=120)
            try:
                report = json.loads(out.stdout)
            except ValueError:
                report = None
            facts["check"] = {"rc": out.returncode, "report": report,
                              "stderr": out.stderr.decode(errors="replace")[-2000:]}
        log_path = f"{WORK}/{case.name}.daemon.log"
        argv = ["python3", "-m", "bustd", "--cgroup", work, *case.args]
        facts["daemon_argv"] = argv
        join = into(f"{top}/{case.daemon_cgroup}") if case.daemon_cgroup else into(point)
        with open(log_path, "wb") as log:
            daemon = subprocess.Popen(argv, cwd=repo, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, preexec_fn=join)
        started = time.monotonic()
        pattern = daemons.DAEMONS["bustd"].ready_pattern
        while (time.monotonic() - started < READY_WAIT_S and daemon.poll() is None
               and not re.search(pattern, read_text(log_path), re.M)):
            time.sleep(0.1)
        ready = bool(re.search(pattern, read_text(log_path), re.M))
        note(f"case {case.name}: bustd pid {daemon.pid} ready {ready} after "
             f"{time.monotonic() - started:.1f} s")
        time.sleep(2.0)
        hog_spec = next(p for p in cgroup_cases.PROCS if p.name == "hog")
        t0 = time.monotonic()
        procs["hog"] = start(hog_spec, top, here)
        hog = procs["hog"]
        while time.monotonic() - t0 < cgroup_cases.CASE_TIMEOUT_S and hog.poll() is None:
            time.sleep(0.1)
        facts["hog_dead_after_s"] = (round(time.monotonic() - t0, 2) if hog.poll() is not None
                                     else None)
        note(f"case {case.name}: hog ended {hog.poll()} after {time.monotonic() - t0:.1f} s")
        time.sleep(SETTLE_S)
        facts["oom_kill"] = events(f"{work}/memory.events").get("oom_kill")
        facts["populated"] = {rel: events(f"{top}/{rel}/cgroup.events").get("populated")
                              for rel in ("work/a", "work/b", "outside")}
        facts["procs"] = {}
        for name, popen in procs.items():
            code = popen.poll()
            facts["procs"][name] = {
                "pid": popen.pid, "alive_at_end": code is None, "exit_code": code,
                "signal": -code if code is not None and code < 0 else None}
        facts["daemon"] = {"pid": daemon.pid, "ready": ready,
                           "alive_at_end": daemon.poll() is None}
    except Exception:
        facts["errors"].append(traceback.format_exc())
    finally:
        if daemon is not None:
            stop(daemon, signal.SIGTERM)
            facts.setdefault("daemon", {})["exit_code"] = daemon.returncode
            facts["daemon"]["log"] = read_text(f"{WORK}/{case.name}.daemon.log")[-20000:]
        for popen in procs.values():
            stop(popen)
        dmesg = subprocess.run(["dmesg"], capture_output=True, check=False).stdout.decode(
            errors="replace")
        facts["kernel_oom_kills"] = parse_kernel_oom_kills(dmesg)
        try:
            remove_tree(top)
        except OSError as err:
            facts["errors"].append(f"cannot remove {top}: {err}")
    return facts


def main(argv: list[str]) -> int:
    """Run every case; write result.json. Returns 0 when written, 2 outside the VM."""
    parser = argparse.ArgumentParser(prog="cgroup_guest.py")
    parser.add_argument("--repo", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cases", default=",".join(c.name for c in cgroup_cases.CASES))
    parser.add_argument("--i-am-in-a-vm", action="store_true")
    args = parser.parse_args(argv)
    if not (args.i_am_in_a_vm or in_vm()):
        print("cgroup_guest.py: refusing to run outside the test VM", file=sys.stderr)
        return 2
    here = os.path.dirname(os.path.abspath(__file__))
    os.makedirs(WORK, exist_ok=True)
    result: dict[str, Any] = {"kernel": os.uname().release, "errors": [], "cases": {}}
    try:
        result["mlockall"] = lock_self()
        point = mount_point()
        enable_memory(point)
        result["mount"] = point
        note(f"cgroup2 at {point}: controllers {read_text(point + '/cgroup.controllers')!r}")
        wanted = args.cases.split(",")
        for case in cgroup_cases.CASES:
            if case.name in wanted:
                result["cases"][case.name] = run_case(case, point, args.repo, here)
    except Exception:
        result["errors"].append(traceback.format_exc())
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
