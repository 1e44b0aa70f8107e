"""Footprint and speed of bustd beside earlyoom and nohang: ``bench/run``.

Three measurements, each inside private PID namespaces (``unshare --pid
--fork --mount-proc``) so no daemon can signal a process of this host:

idle
    earlyoom, nohang and bustd (once per interpreter) run at the same time,
    each in its own namespace with its packaged default thresholds, for
    ``--seconds`` after a ``--settle`` time. Reported per daemon: VmRSS,
    RssAnon, VmLck (/proc/PID/status), Pss (/proc/PID/smaps_rollup), CPU time
    per minute (first field of /proc/PID/task/*/schedstat) and wakeups per
    minute (voluntary + nonvoluntary context switches), with ratios against
    earlyoom.
scan
    N sleeping processes in a namespace; median of ``--scan-repeats`` of
    bustd's ``find_victim`` (fresh ``PY -S -I`` each time) versus
    ``ps -e -o pid=,rss=`` on the same processes.
latency
    One victim (oom_score_adj 1000) and bustd with ``-m 100 -s 100`` (always
    "low"): time from start to the kill log line and to the victim's death,
    with and without ``--dry-run``.
soak (only with ``--only soak``; soak.py)
    bustd in a dry run, deciding about once a second for ``--soak-seconds``
    (20 minutes) beside ``--soak-processes`` (100,000) short-lived processes:
    VmRSS growth, descriptors, CPU time, its log.

The report is Markdown on stdout and in bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

from procstat import Sample, children_of, read_sample

HERE = os.path.dirname(os.path.abspath(__file__))
NSINIT = os.path.join(HERE, "nsinit.py")
HELPER_PY = "/usr/bin/python3"  # runs nsinit.py: its own footprint is never measured
MIB = 1024.0
TARGET_RSS_KIB = 10 * 1024
TARGET_ANON_KIB = 4 * 1024
TARGET_SCAN_RATIO = 1.5


class Daemon(NamedTuple):
    """One process to measure while idle."""

    name: str
    argv: list[str]
    cwd: str | None
    note: str


class Running(NamedTuple):
    """A daemon started in its own namespace."""

    daemon: Daemon
    unshare: subprocess.Popen[bytes]
    log_path: str


class IdleRow(NamedTuple):
    """What one daemon cost over the idle window."""

    name: str
    note: str
    exe: str
    end: Sample
    cpu_ms_per_min: float
    wakeups_per_min: float


def namespaced(argv: list[str]) -> list[str]:
    """Return ``argv`` prefixed to run as PID 1's child in a new PID namespace.

    ``--kill-child`` makes the namespace die with unshare, whatever happens
    to this script.
    """
    return ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL",
            HELPER_PY, "-S", "-I", NSINIT, *argv]


def mem_available_kib() -> tuple[int, int]:
    """Return (MemTotal, MemAvailable) of this host in KiB."""
    values: dict[str, int] = {}
    with open("/proc/meminfo", "rb") as f:
        for line in f:
            name, _, rest = line.partition(b":")
            values[name.decode()] = int(rest.split()[0])
    return values["MemTotal"], values["MemAvailable"]


def loadavg() -> str:
    """Return the 1-minute load average and the number of running tasks."""
    with open("/proc/loadavg") as f:
        fields = f.read().split()
    return f"load {fields[0]} (1 min), {fields[3].split('/')[0]} running"


def resolve_python(name: str) -> tuple[str, str]:
    """Return (sys.executable, version) of the interpreter ``name``; raises OSError."""
    out = subprocess.run([name, "-c", "import sys; print(sys.executable); "
                          "print(sys.version.split()[0])"],
                         stdout=subprocess.PIPE, check=True, timeout=20).stdout.decode().split()
    return out[0], out[1]


def bustd_works(python: str, repo: str) -> bool:
    """Return whether ``python -m bustd --help`` exits 0 in ``repo``."""
    try:
        proc = subprocess.run([python, "-m", "bustd", "--help"], cwd=repo, timeout=20,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def start(daemon: Daemon, deadline: float, log_dir: str) -> Running:
    """Start ``daemon`` in its own PID namespace, output to a log file."""
    log_path = os.path.join(log_dir, f"{daemon.name.replace(' ', '_')}.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(namespaced(["run", "--deadline", str(deadline), "--",
                                            *daemon.argv]),
                                cwd=daemon.cwd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
    return Running(daemon, proc, log_path)


def daemon_pid(run: Running, timeout: float = 10.0) -> int:
    """Return the host PID of the daemon (the child of the namespace's PID 1).

    Raises RuntimeError if it does not appear within ``timeout`` seconds.
    """
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if run.unshare.poll() is not None:
            break
        for init in children_of(run.unshare.pid):
            kids = children_of(init)
            if kids:
                return kids[0]
        time.sleep(0.1)
    raise RuntimeError(f"{run.daemon.name} did not start; see {run.log_path}")


def stop(runs: list[Running]) -> None:
    """End the namespaces: SIGTERM to each PID 1, SIGKILL to what is left after 5 s.

    unshare(1) blocks SIGTERM while it waits, so the signal goes to the
    namespace's PID 1 (nsinit.py), which passes it on to the daemon. Killing
    unshare kills the namespace too (``--kill-child``).
    """
    for run in runs:
        if run.unshare.poll() is None:
            for init in children_of(run.unshare.pid):
                try:
                    os.kill(init, signal.SIGTERM)
                except ProcessLookupError:
                    pass
    end = time.monotonic() + 5.0
    for run in runs:
        try:
            run.unshare.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            run.unshare.kill()
            run.unshare.wait()


def measure_idle(daemons: list[Daemon], seconds: float, settle: float,
                 log_dir: str) -> list[IdleRow]:
    """Run ``daemons`` together for ``settle + seconds``; return one row each.

    Raises RuntimeError if a daemon exits early.
    """
    runs = [start(d, settle + seconds + 60, log_dir) for d in daemons]
    try:
        pids = [daemon_pid(r) for r in runs]
        time.sleep(settle)  # bustd execs its lean runtime in the same PID
        t0 = time.monotonic()
        first = [read_sample(p) for p in pids]
        end = t0 + seconds
        while time.monotonic() < end:
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            for r in runs:
                if r.unshare.poll() is not None:
                    raise RuntimeError(f"{r.daemon.name} exited early; see {r.log_path}")
        last = [read_sample(p) for p in pids]
        minutes = (time.monotonic() - t0) / 60.0
        exes = [os.path.realpath(f"/proc/{p}/exe") for p in pids]
    finally:
        stop(runs)
    return [IdleRow(r.daemon.name, r.daemon.note, exe, b,
                    (b.cpu_ns - a.cpu_ns) / 1e6 / minutes, (b.switches - a.switches) / minutes)
            for r, exe, a, b in zip(runs, exes, first, last)]


def measure_scan(count: int, repeats: int, python: str, repo: str,
                 budget_mib: int) -> dict[str, object]:
    """Run the scan benchmark with ``count`` processes; return nsinit's JSON.

    Raises RuntimeError if the PID space is too small or the run fails.
    """
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    in_use = sum(1 for n in os.listdir("/proc") if n.isdigit())
    if in_use + count + 2000 > pid_max:
        raise RuntimeError(f"pid_max {pid_max} leaves no room for {count} more processes")
    argv = namespaced(["scan", "--count", str(count), "--repeats", str(repeats),
                       "--python", python, "--repo", repo, "--budget-mib", str(budget_mib),
                       "--sleep-seconds", "900", "--deadline", "600"])
    proc = subprocess.run(argv, capture_output=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"scan {count}: {proc.stderr.decode(errors='replace')[-1000:]}")
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def measure_latency(python: str, repo: str, runs: int, dry_run: bool) -> dict[str, object]:
    """Run the kill-latency benchmark; return nsinit's JSON; raises RuntimeError."""
    argv = namespaced(["latency", "--python", python, "--repo", repo, "--runs", str(runs),
                       *(["--dry-run"] if dry_run else []), "--", "-m", "100", "-s", "100"])
    proc = subprocess.run(argv, capture_output=True, timeout=60 + 30 * runs)
    if proc.returncode != 0:
        raise RuntimeError(f"latency: {proc.stderr.decode(errors='replace')[-1000:]}")
    result: dict[str, object] = json.loads(proc.stdout)
    return result


# --- report -----------------------------------------------------------------

def _mib(kib: float) -> str:
    return f"{kib / MIB:.1f}"


def _ratio(value: float, ref: float) -> str:
    return f"{value / ref:.2f}x" if ref else "n/a"


def idle_table(rows: list[IdleRow]) -> list[str]:
    """Return the Markdown lines of the idle table and its ratio table."""
    out = ["| daemon | VmRSS MiB | RssAnon MiB | Pss MiB | VmLck MiB | CPU ms/min "
           "| wakeups/min | threads | executable |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        s = r.end
        out.append(f"| {r.name} | {_mib(s.vm_rss)} | {_mib(s.rss_anon)} | {_mib(s.pss)} "
                   f"| {_mib(s.vm_lck)} | {r.cpu_ms_per_min:.1f} | {r.wakeups_per_min:.1f} "
                   f"| {s.threads} | `{r.exe}` |")
    ref = next((r for r in rows if r.name == "earlyoom"), None)
    if ref is not None:
        out += ["", "Against earlyoom (value / earlyoom's):", "",
                "| daemon | VmRSS | RssAnon | Pss | CPU/min | wakeups/min |",
                "|---|---:|---:|---:|---:|---:|"]
        e = ref.end
        for r in rows:
            s = r.end
            out.append(f"| {r.name} | {_ratio(s.vm_rss, e.vm_rss)} "
                       f"| {_ratio(s.rss_anon, e.rss_anon)} | {_ratio(s.pss, e.pss)} "
                       f"| {_ratio(r.cpu_ms_per_min, ref.cpu_ms_per_min)} "
                       f"| {_ratio(r.wakeups_per_min, ref.wakeups_per_min)} |")
    notes = [f"- {r.name}: {r.note}" for r in rows if r.note]
    return out + (["", *notes] if notes else [])


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def scan_summary(result: dict[str, object]) -> dict[str, float]:
    """Return the medians (seconds) and the ratio of one scan result."""
    probes = result["probes"]
    assert isinstance(probes, list)
    ps = result["ps_s"]
    assert isinstance(ps, list)
    first = _median([float(p["first_s"]) for p in probes])
    return {"ps": _median([float(x) for x in ps]), "first": first,
            "second": _median([float(p["second_s"]) for p in probes]),
            "wall": _median([float(p["process_wall_s"]) for p in probes]),
            "pids": float(result["pids_seen"]),  # type: ignore[arg-type]
            "kib_per_process": float(result["kib_per_process"])}  # type: ignore[arg-type]


def scan_table(results: list[tuple[str, dict[str, object]]]) -> list[str]:
    """Return the Markdown lines of the scan table."""
    out = ["| processes | interpreter | ps -e -o pid=,rss= ms | bustd find_victim ms "
           "(fresh process) | bustd/ps | find_victim warm ms | bustd process wall ms "
           "| runs |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for python, res in results:
        s = scan_summary(res)
        runs = len(res["probes"])  # type: ignore[arg-type]
        out.append(f"| {int(s['pids'])} | `{python}` | {s['ps'] * 1e3:.1f} "
                   f"| {s['first'] * 1e3:.1f} | {s['first'] / s['ps']:.2f}x "
                   f"| {s['second'] * 1e3:.1f} | {s['wall'] * 1e3:.1f} | {runs} |")
    return out


# bustd's kill line: "...; reaction=12 ms after PSI trigger wakeup; ..."
REACTION = re.compile(r"reaction=(\d+) ms after (PSI trigger|timer) wakeup")


def parse_reaction(lines: list[str]) -> tuple[int, str] | None:
    """Return (ms, "PSI trigger" or "timer") of the first kill line, or None."""
    for line in lines:
        m = REACTION.search(line)
        if m:
            return int(m.group(1)), m.group(2)
    return None


def latency_summary(result: dict[str, object]) -> dict[str, float]:
    """Return median seconds from start to each mark of a latency result.

    ``reaction`` is the median of bustd's own reaction times (from the
    wakeup of the check that killed to the signal), in seconds; NaN in a dry
    run, whose line has none. ``timer_n`` counts the timer-woken kills.
    """
    runs = result["runs"]
    assert isinstance(runs, list)
    out: dict[str, float] = {}
    for mark in ("started", "log", "death"):
        vals = [float(r["marks_s"][mark]) for r in runs if mark in r["marks_s"]]
        out[mark] = _median(vals)
        out[mark + "_n"] = float(len(vals))
    reactions = [x for x in (parse_reaction(list(r.get("log", []))) for r in runs) if x]
    out["reaction"] = _median([ms / 1e3 for ms, _by in reactions])
    out["reaction_n"] = float(len(reactions))
    out["timer_n"] = float(sum(1 for _ms, by in reactions if by == "timer"))
    out["runs"] = float(len(runs))
    return out


def latency_table(results: list[tuple[str, str, dict[str, object]]]) -> list[str]:
    """Return the Markdown lines of the latency table (median ms from start)."""
    out = ["| mode | interpreter | start -> 'watching' line | start -> kill line "
           "| 'watching' -> kill line | start -> victim dead | bustd's reaction (its log) "
           "| runs (kill seen) |",
           "|---|---|---:|---:|---:|---:|---|---:|"]
    for mode, python, res in results:
        s = latency_summary(res)
        dead = "n/a (no signal)" if mode == "dry run" else f"{s['death'] * 1e3:.0f}"
        reaction = "-"
        if s["reaction_n"]:
            woken = f"{int(s['timer_n'])} timer, {int(s['reaction_n'] - s['timer_n'])} PSI"
            reaction = f"{s['reaction'] * 1e3:.0f} ms ({woken})"
        out.append(f"| {mode} | `{python}` | {s['started'] * 1e3:.0f} | {s['log'] * 1e3:.0f} "
                   f"| {(s['log'] - s['started']) * 1e3:.0f} | {dead} | {reaction} "
                   f"| {int(s['runs'])} ({int(s['log_n'])}) |")
    return out


def targets(rows: list[IdleRow], scans: list[tuple[str, dict[str, object]]]) -> list[str]:
    """Return one Markdown line per target and bustd run: met or missed, by how much."""
    out: list[str] = []
    ref = next((r for r in rows if r.name == "earlyoom"), None)
    for r in rows:
        if not r.name.startswith("bustd"):
            continue
        s = r.end
        for label, value, limit, unit in (
                ("idle VmRSS <= 10 MiB", s.vm_rss / MIB, TARGET_RSS_KIB / MIB, "MiB"),
                ("idle RssAnon <= 4 MiB", s.rss_anon / MIB, TARGET_ANON_KIB / MIB, "MiB")):
            verdict = "met" if value <= limit else f"MISSED by {value - limit:.1f} {unit}"
            out.append(f"- {r.name}: {label}: {value:.1f} {unit}, {verdict}")
        if ref is not None:
            ok = r.cpu_ms_per_min <= ref.cpu_ms_per_min
            verdict = "met" if ok else (
                f"MISSED ({r.cpu_ms_per_min / ref.cpu_ms_per_min:.2f}x earlyoom's)")
            out.append(f"- {r.name}: idle CPU/min <= earlyoom's ({ref.cpu_ms_per_min:.1f} ms): "
                       f"{r.cpu_ms_per_min:.1f} ms, {verdict}")
    for python, res in scans:
        sc = scan_summary(res)
        if sc["pids"] < 2000:
            ratio = sc["first"] / sc["ps"]
            verdict = "met" if ratio <= TARGET_SCAN_RATIO else (
                f"MISSED by {ratio - TARGET_SCAN_RATIO:.2f}x")
            out.append(f"- scan+rank of {int(sc['pids'])} processes <= 1.5x ps "
                       f"(`{python}`): {ratio:.2f}x, {verdict}")
    return out


def lean_imports(python: str, repo: str) -> str:
    """Return the modules the lean runtime imports (beyond a bare ``-S -I``)."""
    code = ("import sys; base = set(sys.modules); sys.path.insert(0, sys.argv[1]); "
            "import bustd.runtime; print(' '.join(sorted(set(sys.modules) - base)))")
    try:
        proc = subprocess.run([python, "-S", "-I", "-c", code, repo], capture_output=True,
                              timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return "(could not import bustd.runtime)"
    return proc.stdout.decode().strip()


# --- main -------------------------------------------------------------------

def warm_pyc(python: str, repo: str) -> None:
    """Import the lean runtime once so its .pyc files exist, as after an install.

    Writes only into the git-ignored ``__pycache__`` folders of ``repo``.
    """
    code = "import sys; sys.path.insert(0, sys.argv[1]); import bustd.runtime"
    subprocess.run([python, "-S", "-I", "-c", code, repo], check=False, timeout=30,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cold_copy(repo: str, tmp: str, name: str) -> str:
    """Copy ``repo``/bustd without any .pyc into ``tmp``/``name``; return the new root."""
    root = os.path.join(tmp, name)
    shutil.copytree(os.path.join(repo, "bustd"), os.path.join(root, "bustd"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return root


# Run "$@" from a read-only bind mount of "$0", made in the namespace's own
# mount namespace (unshare(1) makes its propagation private, so the host never
# sees it). chmod would not do: root writes through permissions.
READ_ONLY = ('mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && cd "$0" '
             '&& exec "$@"')


def build_daemons(pythons: list[tuple[str, str]], repo: str, with_bustd: bool,
                  baseline: bool, cold_roots: tuple[str, str] | None = None) -> list[Daemon]:
    """Return the daemons to run while idle, earlyoom first.

    With ``cold_roots`` (two copies of bustd without .pyc files) two more
    bustd rows run with the first interpreter: one from a writable copy, where
    the front end compiles the runtime's .pyc files before it execs, and one
    from a read-only bind mount of the other copy, where nothing can be
    written and the runtime compiles its modules in memory at every start.
    """
    out = [Daemon("earlyoom", ["earlyoom", "-r", "3600"], None,
                  "Debian's packaged arguments (-r 3600)")]
    if shutil.which("nohang"):
        out.append(Daemon("nohang", ["nohang", "--monitor", "--config",
                                     "/etc/nohang/nohang.conf"], None,
                          "Debian's packaged unit, /usr/bin/python3"))
    for exe, version in pythons:
        if with_bustd:
            out.append(Daemon(f"bustd ({version})", [exe, "-m", "bustd"], repo,
                              f"`{exe} -m bustd`, defaults"))
        if with_bustd and cold_roots is not None and exe == pythons[0][0]:
            writable, read_only = cold_roots
            out.append(Daemon(f"bustd ({version}, no .pyc, writable)", [exe, "-m", "bustd"],
                              writable,
                              f"`{exe} -m bustd` from a writable copy without .pyc files "
                              "(the front end writes them before it execs the runtime)"))
            out.append(Daemon(f"bustd ({version}, no .pyc, read-only)",
                              ["/bin/sh", "-c", READ_ONLY, read_only, exe, "-m", "bustd"],
                              None,
                              f"`{exe} -m bustd` from a read-only bind mount of a copy "
                              "without .pyc files (the modules are compiled at every start)"))
        if baseline:
            out.append(Daemon(f"bare python {version}",
                              [exe, "-S", "-I", "-c",
                               "import time\nwhile True: time.sleep(1)"], None,
                              f"`{exe} -S -I`, sleeping 1 s at a time: the floor"))
    return out


def main(argv: list[str]) -> int:
    """Run the benchmark; return the exit code."""
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n")[0])
    parser.add_argument("--repo", default=os.path.dirname(HERE),
                        help="bustd checkout to run (default: this one)")
    parser.add_argument("--python", action="append", dest="pythons",
                        help="interpreter for bustd (repeatable; default: python3 on PATH "
                             "and /usr/bin/python3)")
    parser.add_argument("--seconds", type=float, default=60.0, help="idle window (60)")
    parser.add_argument("--settle", type=float, default=5.0, help="wait before it (5)")
    parser.add_argument("--scan-counts", default="1000,10000",
                        help="process counts for the scan benchmark (1000,10000)")
    parser.add_argument("--scan-repeats", type=int, default=7)
    parser.add_argument("--latency-runs", type=int, default=5)
    parser.add_argument("--only", choices=("idle", "scan", "latency", "soak"),
                        action="append",
                        help="run only these parts (repeatable); soak runs only when named")
    parser.add_argument("--soak-seconds", type=float, default=1200.0,
                        help="length of the soak, warm-up included (1200)")
    parser.add_argument("--soak-processes", type=int, default=100000,
                        help="short-lived processes started over the soak (100000)")
    parser.add_argument("--soak-warmup", type=float, default=60.0,
                        help="seconds before the soak's RSS baseline (60)")
    parser.add_argument("--soak-interval", type=float, default=5.0,
                        help="seconds between samples of bustd in the soak (5)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the bare-interpreter rows")
    parser.add_argument("--no-cold", action="store_true",
                        help="skip the bustd rows started without .pyc files")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    parts = set(args.only or ("idle", "scan", "latency"))
    repo = os.path.abspath(args.repo)

    if os.geteuid() != 0 or not shutil.which("unshare"):
        print("bench: needs root and unshare(1) for the PID namespaces", file=sys.stderr)
        return 2
    total, avail = mem_available_kib()
    if avail < total * 0.3:
        print(f"bench: only {avail // 1024} MiB available: refusing to run beside a "
              "system already short of memory", file=sys.stderr)
        return 2
    names = args.pythons or ["python3", "/usr/bin/python3"]
    pythons: list[tuple[str, str]] = []
    for name in names:
        exe, version = resolve_python(name)
        if exe not in [p[0] for p in pythons]:
            pythons.append((exe, version))
    usable = [p for p in pythons if bustd_works(p[0], repo)]
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H%M%S")
    os.makedirs(args.out, exist_ok=True)
    log_dir = os.path.join(args.out, f"logs_{stamp}")
    os.makedirs(log_dir, exist_ok=True)

    lines = [f"# bustd benchmark, {stamp.replace('_', ' ')}", "",
             f"Host: {platform.node()}, Linux {platform.release()}, {os.cpu_count()} CPUs, "
             f"MemTotal {total // 1024} MiB, MemAvailable {avail // 1024} MiB at start. "
             f"Repository: `{repo}` ({_git_head(repo)}).", ""]
    if not usable:
        lines += ["**bustd did not start (`python3 -m bustd --help` failed): "
                  "only the other daemons were measured.**", ""]
    rows: list[IdleRow] = []
    failures: list[str] = []
    scans: list[tuple[str, dict[str, object]]] = []
    soak_json: dict[str, object] = {}
    if "idle" in parts:
        for exe, _version in usable:
            warm_pyc(exe, repo)
        tmp = tempfile.mkdtemp(prefix="bustd-bench-")
        cold = ((cold_copy(repo, tmp, "writable"), cold_copy(repo, tmp, "read-only"))
                if usable and not args.no_cold else None)
        daemons = build_daemons(usable or pythons, repo, bool(usable), not args.no_baseline,
                                cold)
        print(f"bench: idle, {len(daemons)} processes together, {args.settle:g} s settle + "
              f"{args.seconds:g} s...", file=sys.stderr)
        before = loadavg()
        try:
            rows = measure_idle(daemons, args.seconds, args.settle, log_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        lines += [f"## Idle, {args.seconds:g} s together after {args.settle:g} s settle", "",
                  f"Host before: {before}; after: {loadavg()}. Other work on the host "
                  "inflates CPU time and wakeups alike; compare rows of one run.", ""]
        lines += [*idle_table(rows), ""]
    if "scan" in parts and usable:
        budget = min(4096, avail // 1024 // 5)
        counts = [int(c) for c in args.scan_counts.split(",") if c]
        for count in counts:
            for exe, _version in usable:
                print(f"bench: scan, {count} processes, {exe}...", file=sys.stderr)
                try:
                    scans.append((exe, measure_scan(count, args.scan_repeats, exe, repo,
                                                    budget)))
                except (RuntimeError, subprocess.TimeoutExpired) as err:
                    failures.append(f"- scan of {count} processes with `{exe}` failed: "
                                    f"{str(err).strip().splitlines()[-1]}")
        lines += ["## Scan and rank (median of runs; processes = PIDs in the namespace)", "",
                  f"Host after: {loadavg()}.", ""]
        lines += [*scan_table(scans), ""]
        per = scan_summary(scans[-1][1])["kib_per_process"] if scans else float("nan")
        lines += [f"Sleepers cost ~{per:.0f} KiB each (RssAnon + VmPTE of a pilot + 64 KiB "
                  "kernel allowance). ps and bustd alternate in the same namespace; "
                  "'fresh process' times the first find_victim call in a new `PY -S -I` "
                  "after its imports, 'process wall' the whole process.", ""]
    if "latency" in parts and usable:
        lat: list[tuple[str, str, dict[str, object]]] = []
        for exe, _version in usable:
            for dry in (True, False):
                print(f"bench: latency, {exe}, dry_run={dry}...", file=sys.stderr)
                try:
                    lat.append(("dry run" if dry else "real kill", exe,
                                measure_latency(exe, repo, args.latency_runs, dry)))
                except (RuntimeError, subprocess.TimeoutExpired) as err:
                    failures.append(f"- latency with `{exe}` (dry run {dry}) failed: "
                                    f"{str(err).strip().splitlines()[-1]}")
        lines += ["## Threshold crossing to kill (bustd -m 100 -s 100, median ms)", ""]
        lines += [*latency_table(lat), ""]
    if "soak" in parts and usable:
        import soak  # only here: it imports this module back for the namespace helpers

        exe = usable[0][0]
        warm_pyc(exe, repo)
        print(f"bench: soak, {args.soak_seconds:g} s, {args.soak_processes} processes, "
              f"{exe}...", file=sys.stderr)
        try:
            run = soak.measure_soak(exe, repo, args.soak_seconds, args.soak_processes,
                                    args.soak_interval, log_dir)
        except (RuntimeError, OSError) as err:
            failures.append(f"- soak with `{exe}` failed: {str(err).strip().splitlines()[-1]}")
        else:
            lines += [*soak.soak_report(run, args.soak_warmup, args.soak_seconds,
                                        args.soak_interval, exe, os.sysconf("SC_CLK_TCK")),
                      ""]
            soak_json = {"points": [p._asdict() for p in run.points], "result": run.result,
                         "log": run.log._asdict(), "pwned": run.pwned,
                         "checks": [c._asdict() for c in soak.checks(
                             run, args.soak_warmup, args.soak_seconds, args.soak_interval)]}
    if failures:
        lines += ["## Failed parts", "", *failures, ""]
    if usable:
        met = targets(rows, scans)
        if met:
            lines += ["## Targets", "", *met, ""]
        lines += ["## Modules the lean runtime imports beyond a bare `-S -I`", ""]
        for exe, _version in usable:
            mods = lean_imports(exe, repo)
            lines += [f"- `{exe}` ({len(mods.split())}): {mods}"]
        lines += [""]
    report = "\n".join(lines)
    print(report)
    for name in (f"{stamp}.md", "latest.md"):
        with open(os.path.join(args.out, name), "w") as f:
            f.write(report)
    with open(os.path.join(args.out, f"{stamp}.json"), "w") as f:
        json.dump({"idle": [r._asdict() | {"end": r.end._asdict()} for r in rows],
                   "scan": scans, "soak": soak_json}, f, indent=1)
    print(f"bench: report in {os.path.join(args.out, stamp)}.md", file=sys.stderr)
    return 0


def _git_head(repo: str) -> str:
    try:
        return subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              timeout=10).stdout.decode().strip() or "no git"
    except (OSError, subprocess.SubprocessError):
        return "no git"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
