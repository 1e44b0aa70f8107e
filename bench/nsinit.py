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
``soak --seconds S --count N --log FILE --result FILE ... -- BUSTD_ARGS``
    Start bustd (PID 2, its stderr to FILE) and, for S seconds, N
    short-lived processes at an even rate (see :func:`cmd_soak`); reap them
    all; stop at SIGTERM; write one JSON object to the result FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import random
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

def _stop(daemon: subprocess.Popen[bytes]) -> None:
    """SIGTERM the daemon, SIGKILL it if it is still there after 5 s; reap it."""
    daemon.terminate()
    try:
        daemon.wait(timeout=5)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()


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
        _stop(daemon)
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


# --- soak -----------------------------------------------------------------

# The hostile names only ever create this file, should any program pass a
# name to a shell; the bench checks it never appears.
PWNED = "/tmp/pwned"
# Names a process gives itself through /proc/self/comm (the kernel keeps 15
# bytes): shell injections, a newline that would forge a log line starting
# with FORGED, invalid UTF-8, terminal escapes, format strings, and a name
# that shifts the fields of a /proc/PID/stat parser splitting at the first ')'.
HOSTILE_COMMS = (b"$(>/tmp/pwned)", b"`>/tmp/pwned`", b'"; >/tmp/pwned', b"';>/tmp/pwned'",
                 b"|>/tmp/pwned", b"x\nFORGED line", b"\xff\xfe\xc3(\x80 bad", b"a) Z 1 2 (b",
                 b"\x1b[2J\x1b[31mred", b"%s%n{0}{x!r}", b"\t \r", b"-rf ~")
# argv[0] of sleeps (any length; bustd logs the victim's cmdline).
HOSTILE_ARGV0 = (b"$(touch /tmp/pwned)", b"`touch /tmp/pwned`", b'"; touch /tmp/pwned; "',
                 b"'; touch /tmp/pwned; '", b"a\nFORGED line\nwarning: x",
                 b"\xff\xfe\xc3\x28 invalid utf-8", b"x) R 1 1 1 (y", b"\x1b]0;title\x07")
LOAD_DONE = "soak: every process started and reaped after"
GROW_CHUNK = 2 * 1024 * 1024
GROW_CHUNKS = 8  # growers reach 16 MiB


def _soak_kind(i: int) -> str:
    """Return the kind of the ``i``-th process (a cycle of 20).

    grow (2): fork, oom_score_adj 900, 2 MiB more every 0.25 s for 2 s, then
    1 s more. comm (2): fork, a hostile comm, oom_score_adj 1000 (950 in
    every other thousand, see :func:`_comm_adj`), 1-2 s. argv (1): a sleep
    with a hostile argv[0], oom_score_adj 1000, 1.5 s. sleep (8): a sleep of
    0.05-0.5 s. flash (7): fork and exit at once.
    """
    slot = i % 20
    if slot < 2:
        return "grow"
    if slot < 4:
        return "comm"
    if slot == 4:
        return "argv"
    return "sleep" if slot < 13 else "flash"


def _comm_adj(i: int) -> int:
    """Return the oom_score_adj of the ``i``-th process if it is of kind comm.

    Forks are larger than sleeps, so at equal adj they rank first. In odd
    thousands they rank below the hostile-argv sleeps, which then become the
    dry-run victims and have their command lines logged; in even thousands
    the hostile comms are the victims.
    """
    return 1000 if (i // 1000) % 2 == 0 else 950


def _set_adj(pid: int | str, adj: int) -> None:
    with open(f"/proc/{pid}/oom_score_adj", "w") as f:
        f.write(str(adj))


def _become(comm: bytes, adj: int, chunks: int, life: float) -> None:
    """Body of a forked soak process: rename, rank, grow, wait ``life`` s."""
    end = time.monotonic() + life
    if comm:
        with open("/proc/self/comm", "wb") as f:
            f.write(comm)
    if adj:
        _set_adj("self", adj)
    held: list[bytes] = []
    for _ in range(chunks):
        held.append(b"\x01" * GROW_CHUNK)  # written, so resident
        time.sleep(0.25)
    time.sleep(max(0.0, end - time.monotonic()))


def _fork(comm: bytes, adj: int, chunks: int, life: float) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _become(comm, adj, chunks, life)
            code = 0
        finally:
            os._exit(code)
    return pid


def _soak_start(i: int, kind: str, rng: random.Random) -> int:
    """Start the ``i``-th soak process of ``kind``; return its PID; raises OSError."""
    env = {"PATH": "/usr/bin:/bin"}
    if kind == "grow":
        return _fork(b"grower", 900, GROW_CHUNKS, 3.0)
    if kind == "comm":
        return _fork(HOSTILE_COMMS[(i // 20) % len(HOSTILE_COMMS)], _comm_adj(i), 0,
                     rng.uniform(1.0, 2.0))
    if kind == "argv":
        pid = os.posix_spawn(SLEEP, [HOSTILE_ARGV0[(i // 20) % len(HOSTILE_ARGV0)], b"1.5"],
                             env)
        try:
            _set_adj(pid, 1000)
        except OSError:
            pass  # it exited already: nothing to rank
        return pid
    if kind == "sleep":
        return os.posix_spawn(SLEEP, ["sleep", f"{rng.uniform(0.05, 0.5):.2f}"], env)
    return _fork(b"", 0, 0, 0.0)


def _soak_reap(live: dict[int, str], daemon_pid: int, counts: dict[str, int]) -> int | None:
    """Reap every exited child without blocking; return bustd's wait status if it exited."""
    daemon_status = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        if pid == daemon_pid:
            daemon_status = status
        elif live.pop(pid, None) is not None:
            counts["reaped"] += 1
            if os.waitstatus_to_exitcode(status) != 0:
                counts["child_failures"] += 1
        else:
            counts["orphans"] += 1
    return daemon_status


def _wait_for_line(path: str, text: bytes, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with open(path, "rb") as f:
            if text in f.read():
                return True
        time.sleep(0.05)
    return False


def cmd_soak(args: argparse.Namespace) -> int:
    """Run bustd beside ``count`` short-lived processes for ``seconds``; write JSON.

    bustd (``PY -m bustd BUSTD_ARGS`` in ``repo``) is PID 2, its stderr
    goes to ``--log``. Once it logs "watching", the processes start at an
    even rate over ``seconds`` (kinds: :func:`_soak_kind`). After that this
    process goes on reaping until SIGTERM or ``seconds + deadline``, then
    ends what is left, stops bustd with SIGTERM and writes the result. Prints
    LOAD_DONE on stdout once the last process has been reaped. The load
    stops early if MemAvailable falls below a quarter of MemTotal.
    """
    stop = {"asked": False}

    def on_term(signum: int, frame: object) -> None:
        stop["asked"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    with open("/proc/meminfo", "rb") as f:
        floor = int(f.readline().split()[1]) // 4  # MemTotal is the first line
    with open(args.log, "wb") as log:
        daemon = subprocess.Popen([args.python, "-m", "bustd", *args.bustd_args],
                                  cwd=args.repo, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=log)
    watching = _wait_for_line(args.log, b"watching", 20.0)
    rng = random.Random(args.seed)
    counts = {k: 0 for k in ("reaped", "child_failures", "orphans", "spawn_failures")}
    kinds = {k: 0 for k in ("grow", "comm", "argv", "sleep", "flash")}
    live: dict[int, str] = {}
    period = args.seconds / max(1, args.count)
    t0 = time.monotonic()
    hard = t0 + args.seconds + args.deadline
    i = started = max_live = 0
    max_lag = 0.0
    last_error = aborted = ""
    daemon_status: int | None = None
    daemon_end = -1.0
    load_end = -1.0
    while watching and not stop["asked"]:
        now = time.monotonic()
        while i < args.count and not aborted and t0 + i * period <= now:
            max_lag = max(max_lag, now - (t0 + i * period))
            kind = _soak_kind(i)
            try:
                live[_soak_start(i, kind, rng)] = kind
                kinds[kind] += 1
                started += 1
            except OSError as err:
                counts["spawn_failures"] += 1
                last_error = f"{kind}: {err}"
            i += 1
            if i % 200 == 0 and _mem_available_kib() < floor:
                aborted = f"MemAvailable fell below {floor // 1024} MiB after {i} processes"
        max_live = max(max_live, len(live))
        if load_end < 0 and (i >= args.count or aborted) and not live:
            load_end = time.monotonic() - t0
            print(f"{LOAD_DONE} {load_end:.1f} s", flush=True)  # the bench's last sample
        status = _soak_reap(live, daemon.pid, counts)
        if status is not None:
            daemon_status, daemon_end = status, time.monotonic() - t0
            daemon.returncode = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > hard:
            break
        due = t0 + i * period if i < args.count and not aborted else now + 0.2
        time.sleep(min(0.2, max(0.001, due - time.monotonic())))
    for pid in live:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    left = len(live)
    if daemon_status is None:
        _stop(daemon)
    while True:  # the rest, now killed
        try:
            os.wait()
        except ChildProcessError:
            break
    result = {"count": args.count, "seconds": args.seconds, "watching": watching,
              "started": started, "kinds": kinds, **counts, "left_at_end": left,
              "max_live": max_live, "max_lag_s": max_lag, "load_end_s": load_end,
              "last_spawn_error": last_error, "aborted": aborted,
              "bustd_exit": daemon.returncode, "bustd_exited_early": daemon_status is not None,
              "bustd_exit_at_s": daemon_end}
    with open(args.result, "w") as out:
        json.dump(result, out)
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
    soak = sub.add_parser("soak")
    soak.add_argument("--python", required=True)
    soak.add_argument("--repo", required=True)
    soak.add_argument("--seconds", type=float, required=True)
    soak.add_argument("--count", type=int, required=True)
    soak.add_argument("--log", required=True, help="bustd's stderr")
    soak.add_argument("--result", required=True, help="JSON written here at the end")
    soak.add_argument("--seed", type=int, default=1)
    soak.add_argument("--deadline", type=float, default=120.0,
                      help="seconds after the load to wait for SIGTERM")
    soak.add_argument("bustd_args", nargs="*")
    args = parser.parse_args(argv)
    _check_pid1()
    if args.mode == "run":
        return cmd_run(args)
    if args.mode == "scan":
        return cmd_scan(args)
    if args.mode == "soak":
        return cmd_soak(args)
    return cmd_latency(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
