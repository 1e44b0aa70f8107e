"""PID 1 of a private PID namespace made by ``unshare --pid --fork --mount-proc``.

Everything an OOM killer might signal during the benchmark lives in such a
namespace, so a kill can only reach processes the benchmark started; when
this process exits the kernel kills whatever is left in the namespace.

Modes (each bounded by a deadline):

``run [--deadline S] -- ARGV``
    Start ARGV as PID 2 and wait for it (idle measurement). SIGTERM is passed
    on to it; at the deadline it is killed.
``scan --count N ...``
    Start N sleeping processes, then alternately time ``ps -e -o pid=,rss=``
    and a fresh ``PY -S -I scan_probe.py`` (bustd's scan and rank); print
    one JSON object on stdout.
``latency ...``
    Start one victim (``sleep`` with oom_score_adj 1000) and bustd with
    thresholds that trigger at once; time the kill. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SLEEP = "/bin/sleep"


def _mem_available_kib() -> int:
    with open("/proc/meminfo", "rb") as f:
        for line in f:
            if line.startswith(b"MemAvailable:"):
                return int(line.split()[1])
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def _count_pids() -> int:
    return sum(1 for n in os.listdir("/proc") if n.isdigit())


def _check_pid1() -> None:
    if os.getpid() != 1:
        sys.exit("nsinit: refusing to run outside a fresh PID namespace "
                 "(use unshare --pid --fork --mount-proc)")


# --- run ------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    """Run ARGV as a child until it exits or the deadline; return its status."""
    child = subprocess.Popen(args.argv)
    stop = {"asked": False}

    def on_term(signum: int, frame: object) -> None:
        stop["asked"] = True
        try:
            child.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    deadline = time.monotonic() + args.deadline
    while child.poll() is None:
        if time.monotonic() > deadline:
            child.kill()
            child.wait()
            return 124
        time.sleep(0.2)
        # Reap orphans re-parented to us (PID 1 duty).
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
    return 0 if stop["asked"] else child.returncode


# --- scan -----------------------------------------------------------------

KERNEL_KIB_PER_TASK = 64  # task_struct, kernel stack, mm and file tables: a generous guess


def _own_kib(pid: int) -> int:
    """Return RssAnon + VmPTE of ``pid`` in KiB: what it alone costs in user memory."""
    total = 0
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith((b"RssAnon:", b"VmPTE:")):
                total += int(line.split()[1])
    return total


def spawn_sleepers(count: int, seconds: int, budget_kib: int) -> tuple[list[int], float]:
    """Start ``count`` sleep processes; return their PIDs and estimated KiB each.

    The estimate is RssAnon + VmPTE of a pilot of 100, plus
    KERNEL_KIB_PER_TASK: MemAvailable is no measure on a shared host, where
    other work moves it by gigabytes. Raises RuntimeError (after killing
    what it started) if ``count`` of them would exceed ``budget_kib``, or if
    MemAvailable falls below a quarter of MemTotal while spawning.
    """
    env = {"PATH": "/usr/bin:/bin"}
    argv = ["sleep", str(seconds)]
    pids: list[int] = []
    with open("/proc/meminfo", "rb") as f:
        floor = int(f.readline().split()[1]) // 4  # MemTotal is the first line
    per_kib = 0.0
    try:
        pilot = min(100, count)
        for _ in range(pilot):
            pids.append(os.posix_spawn(SLEEP, argv, env))
        time.sleep(0.5)  # let them exec
        per_kib = sum(_own_kib(p) for p in pids) / pilot + KERNEL_KIB_PER_TASK
        if per_kib * count > budget_kib:
            raise RuntimeError(
                f"{count} processes would use ~{per_kib * count / 1024:.0f} MiB "
                f"(~{per_kib:.0f} KiB each), over the {budget_kib // 1024} MiB budget")
        while len(pids) < count:
            pids.append(os.posix_spawn(SLEEP, argv, env))
            if len(pids) % 500 == 0 and _mem_available_kib() < floor:
                raise RuntimeError(f"MemAvailable fell below {floor // 1024} MiB "
                                   f"after {len(pids)} processes")
    except BaseException:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        raise
    time.sleep(1.0)  # let the last children finish exec before measuring
    return pids, per_kib


def _time_ps() -> float:
    t0 = time.perf_counter()
    out = subprocess.run(["ps", "-e", "-o", "pid=,rss="], stdout=subprocess.PIPE,
                         check=True).stdout
    took = time.perf_counter() - t0
    if not out:
        raise RuntimeError("ps printed nothing")
    return took


def _time_probe(python: str, repo: str) -> dict[str, object]:
    t0 = time.perf_counter()
    proc = subprocess.run([python, "-S", "-I", os.path.join(HERE, "scan_probe.py"), repo],
                          capture_output=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"scan probe failed: {proc.stderr.decode(errors='replace')[-800:]}")
    result: dict[str, object] = json.loads(proc.stdout)
    result["process_wall_s"] = wall
    return result


def cmd_scan(args: argparse.Namespace) -> int:
    """Start the sleepers, time ps and the probe alternately, print JSON."""
    _pids, per_kib = spawn_sleepers(args.count, args.sleep_seconds, args.budget_mib * 1024)
    seen = _count_pids()
    ps_times: list[float] = []
    probes: list[dict[str, object]] = []
    deadline = time.monotonic() + args.deadline
    for i in range(args.repeats):
        if time.monotonic() > deadline:
            break
        # Alternate who goes first so neither always gets the warmer cache.
        if i % 2 == 0:
            ps_times.append(_time_ps())
            probes.append(_time_probe(args.python, args.repo))
        else:
            probes.append(_time_probe(args.python, args.repo))
            ps_times.append(_time_ps())
    json.dump({"count": args.count, "pids_seen": seen, "kib_per_process": per_kib,
               "ps_s": ps_times, "probes": probes}, sys.stdout)
    sys.stdout.write("\n")
    return 0


# --- latency --------------------------------------------------------------

def _one_kill(args: argparse.Namespace) -> dict[str, object]:
    victim = os.posix_spawn(SLEEP, ["sleep", "120"], {"PATH": "/usr/bin:/bin"})
    with open(f"/proc/{victim}/oom_score_adj", "w") as f:
        f.write("1000")
    pidfd = os.pidfd_open(victim)
    t0 = time.perf_counter()
    extra = ["--dry-run"] if args.dry_run else []
    daemon = subprocess.Popen([args.python, "-m", "bustd", *args.bustd_args, *extra],
                              cwd=args.repo,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    assert daemon.stderr is not None
    err_fd = daemon.stderr.fileno()
    poller = select.poll()
    poller.register(err_fd, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    marks: dict[str, float] = {}
    buf = b""
    lines: list[str] = []
    deadline = t0 + args.timeout
    want = "would kill" if args.dry_run else "kill"
    try:
        while time.perf_counter() < deadline:
            done = "log" in marks and ("death" in marks or args.dry_run)
            if done:
                break
            for fd, _ev in poller.poll(100):
                now = time.perf_counter()
                if fd == pidfd:
                    marks.setdefault("death", now)
                    poller.unregister(pidfd)
                    continue
                chunk = os.read(err_fd, 65536)
                if not chunk:
                    poller.unregister(err_fd)
                    continue
                buf += chunk
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    line = raw.decode(errors="replace")
                    lines.append(line)
                    if "watching" in line:
                        marks.setdefault("started", now)
                    if want in line and f"pid={victim}" in line:
                        marks.setdefault("log", now)
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=5)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(victim, 0)
        os.close(pidfd)
    rel = {k: v - t0 for k, v in marks.items()}
    return {"victim": victim, "marks_s": rel, "log": lines[-6:]}


def cmd_latency(args: argparse.Namespace) -> int:
    """Time ``runs`` kills (or dry-run decisions); print JSON."""
    runs = [_one_kill(args) for _ in range(args.runs)]
    json.dump({"dry_run": args.dry_run, "runs": runs}, sys.stdout)
    sys.stdout.write("\n")
    return 0


def main(argv: list[str]) -> int:
    """Parse ``argv`` and run one mode; return the exit code."""
    parser = argparse.ArgumentParser(prog="nsinit")
    sub = parser.add_subparsers(dest="mode", required=True)
    run = sub.add_parser("run")
    run.add_argument("--deadline", type=float, default=300.0)
    run.add_argument("argv", nargs="+")
    scan = sub.add_parser("scan")
    scan.add_argument("--count", type=int, required=True)
    scan.add_argument("--repeats", type=int, default=7)
    scan.add_argument("--python", required=True)
    scan.add_argument("--repo", required=True)
    scan.add_argument("--sleep-seconds", type=int, default=600)
    scan.add_argument("--budget-mib", type=int, default=4096)
    scan.add_argument("--deadline", type=float, default=300.0)
    lat = sub.add_parser("latency")
    lat.add_argument("--python", required=True)
    lat.add_argument("--repo", required=True)
    lat.add_argument("--runs", type=int, default=5)
    lat.add_argument("--timeout", type=float, default=20.0)
    lat.add_argument("--dry-run", action="store_true")
    lat.add_argument("bustd_args", nargs="*")
    args = parser.parse_args(argv)
    _check_pid1()
    if args.mode == "run":
        return cmd_run(args)
    if args.mode == "scan":
        return cmd_scan(args)
    return cmd_latency(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
