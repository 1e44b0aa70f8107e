"""Soak: bustd's decision firing for a long time beside a stream of processes.

``bench/run --only soak`` (issue 10): bustd runs from the repository in a
dry run with thresholds that are always crossed (``--dry-run -m 100 -s 100``:
every check is in the watch zone, and a decision with its kill line is made
about once a second), in a private PID namespace whose PID 1
(``nsinit.py soak``) starts N short-lived processes at an even rate over
the run and reaps them. Some grow 16 MiB in 2 s (the growth tracker ranks
them), some name themselves with hostile names (shell injections whose only
effect would be to create /tmp/pwned, newlines, invalid UTF-8) or carry a
hostile argv[0], and these rank first, so their names and command lines go
through bustd's log line. Nothing is signalled and no memory pressure is made:
the growers hold at most ~0.5 GiB together.

From outside the namespace this module samples bustd every few seconds:
VmRSS, RssAnon, open file descriptors, threads, CPU time and its log. After
a warm-up (the first entry into the watch zone loads and rehearses the kill
path) the targets are: VmRSS growth <= 64 KiB, a constant descriptor count,
no /tmp/pwned; and for the run to count, bustd lived to the end, logged no
error and no line of unknown shape, decided in every sampling interval and
all the processes were started.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import NamedTuple

from nsinit import LOAD_DONE, PWNED
from procstat import children_of, count_fds, ns_child, read_cpu_ticks, read_sample

from bench import Daemon, Running, loadavg, namespaced, stop

__all__ = ["BUSTD_ARGS", "TARGET_GROWTH_KIB", "Check", "LogCounter", "LogSummary", "Point",
           "SoakRun", "checks", "measure_soak", "parse_log", "soak_report"]

BUSTD_ARGS = ("--dry-run", "-m", "100", "-s", "100", "-r", "60")
TARGET_GROWTH_KIB = 64
LOAD_TAIL = 120.0  # longest wait after --soak-seconds for the namespace's last process
DECISION_GAP = 2.0  # bustd decides about once a second: no window this long goes without
DECISION = b"warning: dry run: would kill "
ERROR = b"error: "
# How every line bustd writes starts (log.py: a level prefix, none for
# info; runtime.py and monitor.py's info lines). Anything else is a line
# forged by a name with a newline, or a traceback.
KNOWN_STARTS = (b"warning: ", b"error: ", b"debug: ", b"bustd ", b"status: ",
                b"cannot set own oom_score_adj ", b"memory recovered before the kill")


class Point(NamedTuple):
    """One sample of bustd, taken from outside its namespace."""

    t: float  # seconds since bustd was found
    vm_rss: int  # KiB
    rss_anon: int  # KiB
    fds: int  # open descriptors, transient ones left out (see _steady_fds)
    fds_raw: int  # the first listing of /proc/PID/fd
    threads: int
    cpu_ticks: int  # utime + stime, threads that exited included
    log_lines: int
    decisions: int  # dry-run kill lines so far


class LogSummary(NamedTuple):
    """What bustd's whole log said."""

    lines: int
    decisions: int
    errors: list[str]
    stray: list[str]  # lines of no known shape


class Check(NamedTuple):
    """One verdict: what was checked, whether it held, the figures."""

    label: str
    ok: bool
    detail: str


class SoakRun(NamedTuple):
    """Everything one soak measured."""

    points: list[Point]
    result: dict[str, object]  # nsinit's JSON
    log: LogSummary
    pwned: bool
    load_before: str
    load_after: str
    log_path: str


class LogCounter:
    """Counts lines and dry-run decisions of a log that is still being written."""

    __slots__ = ("lines", "decisions", "_partial")

    def __init__(self) -> None:
        self.lines = 0
        self.decisions = 0
        self._partial = b""

    def feed(self, data: bytes) -> None:
        """Count the complete lines in ``data`` (a line may span calls)."""
        *complete, self._partial = (self._partial + data).split(b"\n")
        self.lines += len(complete)
        self.decisions += sum(1 for line in complete if line.startswith(DECISION))


def _show(line: bytes) -> str:
    return repr(line[:200])[2:-1]


def parse_log(data: bytes) -> LogSummary:
    """Return the line, decision and error counts and the stray lines of a log.

    A last line without its newline (bustd stopped while writing) counts
    like the others.
    """
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return LogSummary(len(lines), sum(1 for x in lines if x.startswith(DECISION)),
                      [_show(x) for x in lines if x.startswith(ERROR)],
                      [_show(x) for x in lines if not x.startswith(KNOWN_STARTS)])


def _steady_fds(pid: int, previous: int | None) -> tuple[int, int]:
    """Return (descriptors held, first reading) of ``pid``; raises OSError if gone.

    bustd opens and closes a descriptor for every /proc file it reads, so
    one listing can catch one in passing: a count that differs from the
    previous one is read again (up to 3 times, 20 ms apart) and the lowest
    kept. A leaked descriptor stays in every listing.
    """
    first = n = count_fds(pid)
    tries = 0
    while n != previous and tries < 3:
        time.sleep(0.02)
        n = min(n, count_fds(pid))
        tries += 1
    return n, first


def _take(pid: int, t: float, previous: Point | None, counter: LogCounter) -> Point:
    sample = read_sample(pid)
    fds, raw = _steady_fds(pid, previous.fds if previous else None)
    return Point(t, sample.vm_rss, sample.rss_anon, fds, raw, sample.threads,
                 read_cpu_ticks(pid), counter.lines, counter.decisions)


def _find_bustd(unshare: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    """Return the host PID of bustd: PID 2 of the namespace; raises RuntimeError."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and unshare.poll() is None:
        for init in children_of(unshare.pid):
            pid = ns_child(init, 2)
            if pid is not None:
                return pid
        time.sleep(0.1)
    raise RuntimeError("bustd did not start in the soak namespace")


def _load_done(unshare: subprocess.Popen[bytes], ns_log: str, timeout: float) -> bool:
    """Wait until nsinit says the last process was reaped; return whether it did."""
    end = time.monotonic() + timeout
    while unshare.poll() is None and time.monotonic() < end:
        with open(ns_log, "rb") as f:
            if LOAD_DONE.encode() in f.read():
                return True
        time.sleep(0.2)
    return False


def measure_soak(python: str, repo: str, seconds: float, count: int, interval: float,
                 log_dir: str) -> SoakRun:
    """Run the soak for ``seconds`` with ``count`` processes; return what it measured.

    Samples bustd every ``interval`` seconds from the moment it is seen,
    and once more when the namespace has started and reaped its last
    process (the load starts a little after bustd, and may lag). Raises
    RuntimeError if /tmp/pwned exists already (the check would mean
    nothing), if bustd does not start or nsinit writes no result.
    """
    if os.path.lexists(PWNED):
        raise RuntimeError(f"{PWNED} exists already: remove it, the soak checks that no "
                           "hostile process name creates it")
    log_path = os.path.join(log_dir, "soak_bustd.log")
    result_path = os.path.join(log_dir, "soak_result.json")
    ns_log = os.path.join(log_dir, "soak_nsinit.log")
    argv = namespaced(["soak", "--python", python, "--repo", repo, "--seconds", str(seconds),
                       "--count", str(count), "--log", log_path, "--result", result_path,
                       "--", *BUSTD_ARGS])
    before = loadavg()
    with open(ns_log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    run = Running(Daemon("soak", argv, None, ""), proc, ns_log)
    points: list[Point] = []
    counter = LogCounter()
    try:
        pid = _find_bustd(proc)
        t0 = time.monotonic()
        with open(log_path, "rb") as log:
            while proc.poll() is None:
                t = time.monotonic() - t0
                final = t >= seconds
                if final:
                    _load_done(proc, ns_log, LOAD_TAIL)
                    t = time.monotonic() - t0
                counter.feed(log.read())
                try:
                    points.append(_take(pid, t, points[-1] if points else None, counter))
                except OSError:
                    break  # bustd is gone: the result says how
                if final:
                    break
                time.sleep(max(0.0, min(interval, seconds - t)))
        after = loadavg()
    finally:
        stop([run])
    try:
        with open(result_path) as f:
            result: dict[str, object] = json.load(f)
    except (OSError, ValueError) as err:
        raise RuntimeError(f"soak: no result from the namespace ({err}); see {ns_log}") from err
    with open(log_path, "rb") as f:
        summary = parse_log(f.read())
    return SoakRun(points, result, summary, os.path.lexists(PWNED), before, after, log_path)


# --- verdict and report -------------------------------------------------------

def _window(points: list[Point], warmup: float) -> list[Point]:
    """Return the points from the first one at or after ``warmup`` seconds on."""
    return [p for p in points if p.t >= warmup]


def checks(run: SoakRun, warmup: float, seconds: float, interval: float) -> list[Check]:
    """Return the targets, then the conditions for the run to count, each met or not."""
    win = _window(run.points, warmup)
    res = run.result
    out: list[Check] = []
    if len(win) < 2:
        return [Check("samples after the warm-up", False,
                      f"{len(win)} sample(s) after {warmup:g} s: the run was too short "
                      "or bustd stopped")]
    first, last = win[0], win[-1]
    growth = last.vm_rss - first.vm_rss
    out.append(Check(f"VmRSS growth after the warm-up <= {TARGET_GROWTH_KIB} KiB",
                     growth <= TARGET_GROWTH_KIB,
                     f"{first.vm_rss} KiB at {first.t:.0f} s, {last.vm_rss} KiB at "
                     f"{last.t:.0f} s: {growth:+d} KiB"))
    fds = [p.fds for p in win]
    out.append(Check("open descriptors constant after the warm-up", min(fds) == max(fds),
                     f"min {min(fds)}, max {max(fds)}"))
    out.append(Check(f"no {PWNED} created", not run.pwned,
                     f"{PWNED} {'exists' if run.pwned else 'absent'} after the run"))
    out.append(Check("no log line of unknown shape (forged by a name, or a traceback)",
                     not run.log.stray,
                     f"{len(run.log.stray)} of {run.log.lines}"
                     + (f", first: {run.log.stray[0]}" if run.log.stray else "")))
    out.append(Check("no error logged", not run.log.errors,
                     f"{len(run.log.errors)}"
                     + (f", first: {run.log.errors[0]}" if run.log.errors else "")))
    early = bool(res.get("bustd_exited_early"))
    out.append(Check("bustd ran to the end and exited 0 at SIGTERM",
                     not early and res.get("bustd_exit") == 0 and last.t >= seconds - interval,
                     f"last sample at {last.t:.0f} s, exit {res.get('bustd_exit')}"
                     + (f" at {res.get('bustd_exit_at_s')} s into the load" if early else "")))
    spans = [(a, b) for a, b in zip(win, win[1:]) if b.t - a.t >= DECISION_GAP]
    silent = sum(1 for a, b in spans if b.decisions == a.decisions)
    out.append(Check("a dry-run decision in every sampling interval after the warm-up",
                     silent == 0 and last.decisions > first.decisions,
                     f"{last.decisions - first.decisions} decisions in "
                     f"{last.t - first.t:.0f} s; {silent} of {len(spans)} intervals of "
                     f">= {DECISION_GAP:g} s without"))
    started, count = res.get("started"), res.get("count")
    out.append(Check("every process started", started == count and not res.get("aborted"),
                     f"{started} of {count}"
                     + (f"; stopped: {res['aborted']}" if res.get("aborted") else "")
                     + (f"; {res['spawn_failures']} failed to start, last: "
                        f"{res['last_spawn_error']}" if res.get("spawn_failures") else "")))
    return out


def _kib(n: int) -> str:
    return f"{n:,} KiB ({n / 1024:.2f} MiB)"


def soak_report(run: SoakRun, warmup: float, seconds: float, interval: float,
                python: str, clk_tck: int) -> list[str]:
    """Return the Markdown lines of the soak section: figures, RSS over time, verdict."""
    res = run.result
    pts = run.points
    win = _window(pts, warmup)
    out = [f"## Soak: {seconds:g} s, {res.get('count'):,} processes, "
           f"`{python} -m bustd {' '.join(BUSTD_ARGS)}`", "",
           f"Host before: {run.load_before}; after: {run.load_after}. "
           f"bustd's log: `{run.log_path}`.", ""]
    res_kinds = res.get("kinds")
    kinds = (", ".join(f"{k} {v:,}" for k, v in res_kinds.items())
             if isinstance(res_kinds, dict) else "?")
    out += ["| figure | value |", "|---|---|",
            f"| processes started | {res.get('started'):,} ({kinds}); at most "
            f"{res.get('max_live')} alive at once; starts at most "
            f"{float(res.get('max_lag_s', 0.0)) * 1e3:.0f} ms late "  # type: ignore[arg-type]
            f"|",
            f"| children that exited non-zero / orphans reaped | {res.get('child_failures')}"
            f" / {res.get('orphans')} |",
            f"| dry-run decisions logged | {run.log.decisions:,} "
            f"({run.log.decisions / (seconds / 60):.1f}/min) |",
            f"| log lines | {run.log.lines:,} |"]
    if len(win) >= 2:
        first, last = win[0], win[-1]
        rss = [p.vm_rss for p in win]
        fds = [p.fds for p in win]
        raw = [p.fds_raw for p in win]
        threads = [p.threads for p in win]
        minutes = (last.t - first.t) / 60
        cpu_window = (last.cpu_ticks - first.cpu_ticks) / clk_tck
        out += [f"| VmRSS after the warm-up (t={first.t:.0f} s) | {_kib(first.vm_rss)} |",
                f"| VmRSS at the end (t={last.t:.0f} s) | {_kib(last.vm_rss)} |",
                f"| VmRSS growth | {last.vm_rss - first.vm_rss:+,} KiB |",
                f"| VmRSS min / max after the warm-up | {min(rss):,} / {max(rss):,} KiB |",
                f"| RssAnon after the warm-up / at the end | {first.rss_anon:,} / "
                f"{last.rss_anon:,} KiB ({last.rss_anon - first.rss_anon:+,}) |",
                f"| open descriptors min / max (listings as read: min / max) | {min(fds)} / "
                f"{max(fds)} ({min(raw)} / {max(raw)}) |",
                f"| threads min / max | {min(threads)} / {max(threads)} |",
                f"| CPU time, whole run / after the warm-up | {last.cpu_ticks / clk_tck:.1f} s"
                f" / {cpu_window:.1f} s ({cpu_window * 1e3 / minutes:.0f} ms/min) |"]
    if pts:
        step = max(1, len(pts) // 10)
        shown = pts[::step] + ([pts[-1]] if (len(pts) - 1) % step else [])
        out += ["", "VmRSS KiB (RssAnon, descriptors, decisions so far) over time:", "",
                "| t s | " + " | ".join(f"{p.t:.0f}" for p in shown) + " |",
                "|---|" + "---:|" * len(shown),
                "| VmRSS | " + " | ".join(f"{p.vm_rss:,}" for p in shown) + " |",
                "| RssAnon | " + " | ".join(f"{p.rss_anon:,}" for p in shown) + " |",
                "| fds | " + " | ".join(str(p.fds) for p in shown) + " |",
                "| decisions | " + " | ".join(f"{p.decisions:,}" for p in shown) + " |"]
    verdict = checks(run, warmup, seconds, interval)
    passed = all(c.ok for c in verdict)
    out += ["", f"Soak verdict: **{'PASS' if passed else 'FAIL'}**", ""]
    out += [f"- {'met' if c.ok else 'FAILED'}: {c.label}: {c.detail}" for c in verdict]
    return out
