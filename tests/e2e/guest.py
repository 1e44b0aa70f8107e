"""Guest-side scenario driver: runs ONE scenario inside the throwaway VM.

Started by the host runner as the VM's only command (as root, guest python3):

  cd REPO && python3 -m tests.e2e.guest --scenario N --daemon NAME --repo REPO --out DIR

It sets up zram swap if the scenario wants it, starts the holders (bystander,
protected, idle), the interactive probe and the daemon, then the hog and load
processes; waits until each of those is dead or done, plus the scenario's
settle time (or until the scenario times out); and writes into --out (a
directory shared with the host):

  result.json   everything the host asserts on and reports (see runner.Outcome);
                "samples": every 0.25 s the PSI memory some/full totals,
                MemAvailable, SwapFree, swap-in/out and anonymous refault
                counters and each zram device's mm_stat and disksize;
                "sizes": every second each process's VmRSS and VmSwap;
                "at_low_memory": who was largest when MemAvailable first fell
                to 15 % of MemTotal (tests/e2e/profile.py prints them)
  daemon.log    the daemon's stdout+stderr
  dmesg.txt     the kernel log of the run

It judges nothing: the host does (verdict.py). It must never run on a real
machine: it creates real memory exhaustion. It refuses to start unless PID 1
is virtme-ng's init (or --i-am-in-a-vm is given).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from typing import Any

from tests.e2e import daemons, scenarios

__all__ = [
    "main",
    "parse_meminfo",
    "parse_psi_totals",
    "parse_kernel_oom_kills",
    "parse_vmstat",
    "parse_mm_stat",
    "parse_status_sizes",
    "sample_columns",
    "sample_row",
]

WORK = "/run/e2e"  # tmpfs in the guest: logs written here never block on 9p
POLL_S = 0.25  # the poll and the fine samples (PSI, meminfo, vmstat, zram)
SIZES_EVERY = 4  # per-process RSS and swap every 4th poll: once a second
READY_WAIT_S = 60.0  # the most the driver waits for the daemon's ready line
TRACE_S = 2.0  # how often the coarse memory trace is recorded in result.json
# /proc/vmstat counters kept in every fine sample: swap traffic, and pages
# read back soon after eviction (refaults), anonymous and file, and of the
# anonymous refaults those the kernel judged part of the working set
# (activate: refault distance within the workingset; restore: the page was
# active when it was evicted, mm/workingset.c's "the existing workingset is
# thrashing"; issue 14 chooses the thrashing rule from them). The
# workingset_*_anon counters exist from Linux 5.9 (None before).
VMSTAT_FIELDS = ("pswpin", "pswpout", "workingset_refault_anon", "workingset_refault_file",
                 "workingset_activate_anon", "workingset_restore_anon")
# zram's /sys/block/zramN/mm_stat, first fields (Documentation/admin-guide/
# blockdev/zram.rst): bytes of data stored, compressed, and all memory used.
MM_STAT_FIELDS = ("orig_data_size", "compr_data_size", "mem_used_total")


def parse_meminfo(text: str) -> dict[str, int]:
    """Return /proc/meminfo as {field: KiB}; lines that don't parse are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            out[key.strip()] = int(fields[0])
    return out


def parse_psi_totals(text: str) -> dict[str, int]:
    """Return {"some": us, "full": us} from /proc/pressure/memory text.

    Missing lines are absent from the result (see the kernel's
    Documentation/accounting/psi.rst for the format).
    """
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"(some|full)\b.*\btotal=(\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


# mm/oom_kill.c, __oom_kill_process(): "<message>: Killed process <pid>
# (<comm>) total-vm:...", where <message> is "Out of memory", "Out of memory
# (oom_kill_allocating_task)" or "Memory cgroup out of memory". comm is at
# most 15 bytes and may itself contain ") ".
_KERNEL_KILL = re.compile(
    r"out of memory(?: \([^)\n]*\))?: Killed process (\d+) \((.{0,16}?)\) total-vm",
    re.IGNORECASE,
)


def parse_kernel_oom_kills(dmesg: str) -> list[dict[str, Any]]:
    """Return [{"pid", "name"}] for each kernel OOM kill in a dmesg text.

    Global, memory cgroup and oom_kill_allocating_task kills all count.
    """
    return [
        {"pid": int(m.group(1)), "name": m.group(2)} for m in _KERNEL_KILL.finditer(dmesg)
    ]


def parse_vmstat(text: str) -> dict[str, int]:
    """Return /proc/vmstat as {counter: value}; lines that don't parse are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].isdigit():
            out[fields[0]] = int(fields[1])
    return out


def parse_mm_stat(text: str) -> dict[str, int]:
    """Return the MM_STAT_FIELDS of a zram mm_stat text, in bytes.

    Returns {} if the text has fewer fields or they are not numbers (a
    device being reset, or not initialised).
    """
    fields = text.split()
    if len(fields) < len(MM_STAT_FIELDS) or not all(
        f.isdigit() for f in fields[: len(MM_STAT_FIELDS)]
    ):
        return {}
    return {name: int(v) for name, v in zip(MM_STAT_FIELDS, fields)}


def parse_status_sizes(text: str) -> tuple[int, int] | None:
    """Return (VmRSS, VmSwap) in KiB from a /proc/PID/status text.

    None when there is no VmRSS line (the process is gone or a zombie); a
    missing VmSwap counts as 0.
    """
    rss = re.search(r"^VmRSS:\s+(\d+)", text, re.M)
    if rss is None:
        return None
    swap = re.search(r"^VmSwap:\s+(\d+)", text, re.M)
    return int(rss.group(1)), int(swap.group(1)) if swap else 0


def sample_columns(zram_devices: list[str]) -> list[str]:
    """Return the column names of the fine samples for these zram devices."""
    cols = ["t", "some_us", "full_us", "mem_available_kib", "swap_free_kib", *VMSTAT_FIELDS]
    for dev in zram_devices:
        cols += [f"{dev}.{f}" for f in (*MM_STAT_FIELDS, "disksize")]
    return cols


def sample_row(
    t: float, psi: str, meminfo: str, vmstat: str, zram: list[tuple[str, str]]
) -> list[float | int | None]:
    """Return one fine sample from the texts read at time t (see sample_columns).

    zram holds (mm_stat, disksize) texts, one pair per device in column
    order. A value that cannot be read is None.
    """
    p = parse_psi_totals(psi)
    m = parse_meminfo(meminfo)
    v = parse_vmstat(vmstat)
    row: list[float | int | None] = [
        round(t, 3),
        p.get("some"),
        p.get("full"),
        m.get("MemAvailable"),
        m.get("SwapFree"),
    ]
    row += [v.get(f) for f in VMSTAT_FIELDS]
    for mm_stat, disksize in zram:
        mm = parse_mm_stat(mm_stat)
        row += [mm.get(f) for f in MM_STAT_FIELDS]
        row.append(int(disksize) if disksize.strip().isdigit() else None)
    return row


def note(msg: str) -> None:
    """Print a progress line to the console (kept in the host's console.log)."""
    print(f"[guest {time.monotonic():8.2f}] {msg}", file=sys.stderr, flush=True)


def read_text(path: str) -> str:
    """Return a file's text ('' if it is gone, e.g. a process that exited)."""
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def write_text(path: str, text: str) -> None:
    """Write text to a file (a /proc or /sys knob, or an output file)."""
    with open(path, "w") as f:
        f.write(text)


def write_result(out: str, result: dict[str, Any]) -> None:
    """Write ``result`` to ``out``/result.json whole (a temporary file, then a rename),
    so the host never reads half of it."""
    write_text(f"{out}/result.json.tmp", json.dumps(result, indent=1))
    os.replace(f"{out}/result.json.tmp", f"{out}/result.json")


def rss_kib(pid: int) -> int:
    """Return the VmRSS of pid in KiB, 0 if it is gone."""
    m = re.search(r"^VmRSS:\s+(\d+)", read_text(f"/proc/{pid}/status"), re.M)
    return int(m.group(1)) if m else 0


def rss_parts(pid: int) -> dict[str, int]:
    """Return VmRSS and its parts (RssAnon, RssFile, RssShmem) and VmLck of pid, in KiB."""
    text = read_text(f"/proc/{pid}/status")
    return {k: int(v) for k, v in re.findall(r"^(VmRSS|RssAnon|RssFile|RssShmem|VmLck):\s+(\d+)",
                                              text, re.M)}


def setup_zram(mib: int) -> None:
    """Create and enable a zram swap device of `mib` MiB.

    Raises subprocess.CalledProcessError if a step fails.
    """
    subprocess.run(["modprobe", "zram", "num_devices=1"], check=True)
    write_text("/sys/block/zram0/disksize", f"{mib}M")
    subprocess.run(["mkswap", "/dev/zram0"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["swapon", "/dev/zram0"], check=True)


def reset_oom_score_adj() -> None:
    """In a child before exec: undo the -1000 inherited from the driver.

    Without this every hog would be immune to every OOM killer, and a daemon
    would pick the guest's shell instead.
    """
    write_text("/proc/self/oom_score_adj", "0")


def lock_self() -> bool:
    """mlockall() the driver so its own timing survives thrashing.

    Returns whether it worked. The driver is the measuring instrument, not a
    party to the scenario: it also gets oom_score_adj -1000.
    """
    write_text("/proc/self/oom_score_adj", "-1000")
    libc = ctypes.CDLL(None, use_errno=True)
    mcl_current, mcl_future = 1, 2
    ok: int = libc.mlockall(mcl_current | mcl_future)
    return ok == 0


class Child:
    """One started process and what became of it."""

    def __init__(self, proc: scenarios.Proc, argv: list[str], mib: int, hot_mib: int = 0) -> None:
        self.spec = proc
        self.argv = argv
        self.mib = mib
        self.hot_mib = hot_mib
        self.log_path = f"{WORK}/{proc.name}.log"
        self.done_path = f"{WORK}/{proc.name}.done"
        # The child keeps its own copy of the descriptor; ours can close.
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=reset_oom_score_adj,
            )
        self.exit_code: int | None = None
        self.t_exit: float | None = None
        self.t_done: float | None = None
        if proc.oom_score_adj is not None:
            write_text(f"/proc/{self.popen.pid}/oom_score_adj", str(proc.oom_score_adj))

    @property
    def pid(self) -> int:
        """The child's pid."""
        return self.popen.pid

    def poll(self, now: float) -> bool:
        """Record the exit code and time the first time the child is seen dead.

        Also records when a "grow"/"absorb" child first reached its size.
        Returns True only on the first time it is seen dead.
        """
        if self.t_done is None and os.path.exists(self.done_path):
            self.t_done = now
        if self.exit_code is None:
            code = self.popen.poll()
            if code is not None:
                self.exit_code, self.t_exit = code, now
                return True
        return False

    def finished(self) -> bool:
        """True once the child died or (a "grow"/"absorb" child) reached its size."""
        return self.exit_code is not None or self.t_done is not None

    def sizes(self) -> tuple[int, int] | None:
        """Return (VmRSS, VmSwap) in KiB now, None once the child has exited."""
        if self.exit_code is not None:
            return None
        return parse_status_sizes(read_text(f"/proc/{self.pid}/status"))

    def report(self) -> dict[str, Any]:
        """Return this child's outcome as a JSON-able dict."""
        out: dict[str, Any] = {
            "name": self.spec.name,
            "role": self.spec.role,
            "kind": self.spec.kind,
            "pid": self.pid,
            "mib": self.mib,
            "alive_at_end": self.exit_code is None,
            "exit_code": self.exit_code,
            "signal": -self.exit_code if self.exit_code and self.exit_code < 0 else None,
            "t_exit_s": None if self.t_exit is None else round(self.t_exit, 2),
            "t_done_s": None if self.t_done is None else round(self.t_done, 2),
        }
        if self.hot_mib:
            out["hot_mib"] = self.hot_mib
        if self.exit_code is not None and self.exit_code > 0:
            out["log_tail"] = read_text(self.log_path)[-2000:]
        return out


def trace_point(now: float, mem: dict[str, int], active: list[Child]) -> dict[str, Any]:
    """Return one trace sample: time, memory, swap, PSI avg10 and active RSS (MiB)."""
    psi = read_text("/proc/pressure/memory")
    avg10 = dict(re.findall(r"(some|full) avg10=([\d.]+)", psi))
    return {
        "t": round(now, 1),
        "avail_mib": mem.get("MemAvailable", 0) // 1024,
        "swap_used_mib": (mem.get("SwapTotal", 0) - mem.get("SwapFree", 0)) // 1024,
        "some10": float(avg10.get("some", 0)),
        "full10": float(avg10.get("full", 0)),
        "hogs_rss_mib": sum(rss_kib(h.pid) for h in active if h.exit_code is None) // 1024,
    }


def proc_argv(proc: scenarios.Proc, mib: int, here: str, done: str, hot_mib: int = 0) -> list[str]:
    """Return the command line for one scenario process."""
    if proc.kind == "tail":
        return ["tail", "/dev/zero"]
    argv = [
        sys.executable,
        f"{here}/workloads.py",
        proc.kind,
        "--mib",
        str(mib),
        "--rate",
        str(proc.rate_mib_s),
        "--random",
        str(proc.random_fraction),
        "--done",
        done,
    ]
    if proc.kind in ("absorb", "session", "mapread"):
        argv += ["--hot-mib", str(hot_mib)]
    return argv


def size_mib(proc: scenarios.Proc, mem: dict[str, int]) -> int:
    """Return the size in MiB a process should reach, from fractions of meminfo."""
    kib = proc.size_of_available * mem["MemAvailable"] + proc.size_of_total * mem["MemTotal"]
    return proc.size_mib + int(kib // 1024)


def start(proc: scenarios.Proc, mem: dict[str, int], here: str) -> Child:
    """Start one scenario process."""
    mib = size_mib(proc, mem)
    hot = int(proc.hot_of_available * mem["MemAvailable"] // 1024)
    argv = proc_argv(proc, mib, here, f"{WORK}/{proc.name}.done", hot)
    return Child(proc, argv, mib, hot)


def wait_resident(child: Child, timeout_s: float) -> None:
    """Wait until a holder has most of its memory resident (or timeout)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and child.popen.poll() is None:
        if rss_kib(child.pid) >= child.mib * 1024 * 0.9:
            return
        time.sleep(0.2)


def zram_texts(devices: list[str]) -> list[tuple[str, str]]:
    """Return (mm_stat, disksize) texts of each zram device."""
    return [
        (read_text(f"/sys/block/{d}/mm_stat"), read_text(f"/sys/block/{d}/disksize"))
        for d in devices
    ]


TMPFS = "/run/e2e-tmpfs"  # scenario 14's tmpfs (a mount of its own in the guest)


def fill_tmpfs(leave_pct: float) -> int:
    """Mount a tmpfs at TMPFS and write one file (held by no process once
    closed) until MemAvailable is at most ``leave_pct`` % of MemTotal; return
    its MiB."""
    os.makedirs(TMPFS, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=95%", "tmpfs", TMPFS], check=True)
    chunk = bytes(range(256)) * 4096  # 1 MiB

    def avail_pct() -> float:
        mem = parse_meminfo(read_text("/proc/meminfo"))
        return 100.0 * mem["MemAvailable"] / mem["MemTotal"]

    written = 0
    with open(f"{TMPFS}/fill", "wb", buffering=0) as f:
        while avail_pct() > leave_pct:
            f.write(chunk)
            written += 1
        # MemAvailable goes on falling for a while as the kernel trims the
        # caches it counted as available (seen: 5 % asked, 1.4 % reached):
        # give back what went below the target, for 5 s.
        for _ in range(10):
            time.sleep(0.5)
            while avail_pct() < leave_pct - 0.5 and written > 4:
                written -= 4
                f.truncate(written << 20)
    return written


def run(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Run the scenario, filling `result` as it goes (so a crash keeps the facts)."""
    scen = scenarios.SCENARIOS[args.scenario]
    daemon = daemons.DAEMONS[args.daemon]
    here = os.path.dirname(os.path.abspath(__file__))
    os.makedirs(WORK, exist_ok=True)
    result["uptime_at_start_s"] = float(read_text("/proc/uptime").split()[0])
    result["kernel"] = os.uname().release
    result["python"] = sys.version.split()[0]
    result["mlockall"] = lock_self()
    note(f"scenario {scen.id} ({scen.name}) with {daemon.name}, mlockall {result['mlockall']}")
    if scen.zram_mib:
        setup_zram(scen.zram_mib)
        note(f"zram swap of {scen.zram_mib} MiB on")
    zram_devices = sorted(d for d in os.listdir("/sys/block") if d.startswith("zram"))
    result["zram_devices"] = zram_devices
    result["swap_total_kib"] = parse_meminfo(read_text("/proc/meminfo"))["SwapTotal"]
    subprocess.run(["dmesg", "-C"], check=True)
    # The kernel's own count of OOM kills: a check on the dmesg parse.
    oom_kill0 = parse_vmstat(read_text("/proc/vmstat")).get("oom_kill")

    children: list[Child] = []
    mem = parse_meminfo(read_text("/proc/meminfo"))
    result["mem_total_kib"] = mem["MemTotal"]
    for proc in scen.procs:
        if proc.role in scenarios.HOLDER_ROLES:
            child = start(proc, mem, here)
            children.append(child)
            wait_resident(child, 60)
    note("holders resident")
    probe_out = f"{WORK}/probe.json"
    probe = Child(
        scenarios.Proc("probe", "probe", "probe"),
        [sys.executable, f"{here}/workloads.py", "probe", "--out", probe_out],
        0,
    )
    children.append(probe)

    daemon_proc: subprocess.Popen[bytes] | None = None
    result["daemon_argv"] = list(daemon.argv)
    if daemon.argv:
        started = time.monotonic()
        with open(f"{WORK}/daemon.log", "wb") as daemon_log:
            daemon_proc = subprocess.Popen(
                list(daemon.argv),
                cwd=args.repo,
                stdout=daemon_log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=reset_oom_score_adj,
            )
        if daemon.ready_pattern:
            # Under TCG on a busy host the front end alone can take longer
            # than settle_s: the hogs must meet the daemon, not its front end.
            deadline = time.monotonic() + READY_WAIT_S
            while (time.monotonic() < deadline and daemon_proc.poll() is None
                   and not re.search(daemon.ready_pattern, read_text(f"{WORK}/daemon.log"),
                                     re.M)):
                time.sleep(0.1)
            result["daemon_ready_after_s"] = round(time.monotonic() - started, 2)
            note(f"daemon ready after {result['daemon_ready_after_s']} s")
        time.sleep(daemon.settle_s)
        result["daemon_alive_after_start"] = daemon_proc.poll() is None
        note(f"daemon pid {daemon_proc.pid} alive: {result['daemon_alive_after_start']}")

    if scen.tmpfs_leave_pct:
        result["tmpfs_mib"] = fill_tmpfs(scen.tmpfs_leave_pct)
        note(f"tmpfs filled with {result['tmpfs_mib']} MiB; waiting {scen.tmpfs_wait_s:g} s")
        time.sleep(scen.tmpfs_wait_s)
        result["kills_during_tmpfs_wait"] = [
            c.spec.name for c in children if c.popen.poll() is not None]
    mem = parse_meminfo(read_text("/proc/meminfo"))
    result["mem_available_before_hogs_kib"] = mem["MemAvailable"]
    psi0 = parse_psi_totals(read_text("/proc/pressure/memory"))
    t0 = time.monotonic()
    active = [start(p, mem, here) for p in scen.procs if p.role in scenarios.ACTIVE_ROLES]
    hogs = [c for c in active if c.spec.role == "hog"]
    children.extend(active)
    note("started: " + ", ".join(f"{c.spec.name} pid {c.pid} {c.mib} MiB" for c in active))

    sized = [c for c in children if c.spec.role != "probe"]
    samples: dict[str, Any] = {
        "interval_s": POLL_S,
        "columns": sample_columns(zram_devices),
        "rows": [],
    }
    sizes: dict[str, Any] = {
        "interval_s": POLL_S * SIZES_EVERY,
        "columns": ["t"] + [f"{c.spec.name}.{k}" for c in sized for k in ("rss_kib", "swap_kib")],
        "rows": [],
    }
    result["samples"] = samples
    result["sizes"] = sizes
    low_kib = scenarios.LOW_MEMORY_FRACTION * mem["MemTotal"]
    min_avail = mem["MemAvailable"]
    max_swap_used = 0
    daemon_rss_max = 0
    daemon_rss_at_max: dict[str, int] = {}
    settle_until: float | None = None
    timed_out = False
    trace: list[dict[str, Any]] = []
    result["trace"] = trace
    next_trace = 0.0
    tick = 0
    while True:
        now = time.monotonic() - t0
        for child in children:
            if child.poll(now):
                note(f"{child.spec.name} exited {child.exit_code} at {now:.2f} s")
        meminfo = read_text("/proc/meminfo")
        m = parse_meminfo(meminfo)
        samples["rows"].append(
            sample_row(
                now,
                read_text("/proc/pressure/memory"),
                meminfo,
                read_text("/proc/vmstat"),
                zram_texts(zram_devices),
            )
        )
        if tick % SIZES_EVERY == 0:
            row: list[Any] = [round(now, 3)]
            for c in sized:
                row += list(c.sizes() or (None, None))
            sizes["rows"].append(row)
        avail = m.get("MemAvailable", min_avail)
        if "at_low_memory" not in result and avail <= low_kib:
            now_sizes = {c.spec.name: c.sizes() for c in sized}
            kib = {name: sum(v) for name, v in now_sizes.items() if v is not None}
            result["at_low_memory"] = {
                "t": round(now, 2),
                "mem_available_kib": avail,
                "sizes_kib": kib,
                "largest": max(kib, key=lambda n: kib[n]) if kib else None,
            }
            note(f"memory short at {now:.2f} s: largest {result['at_low_memory']['largest']}")
        min_avail = min(min_avail, avail)
        max_swap_used = max(max_swap_used, m.get("SwapTotal", 0) - m.get("SwapFree", 0))
        if daemon_proc is not None:
            parts = rss_parts(daemon_proc.pid)
            if parts.get("VmRSS", 0) > daemon_rss_max:
                daemon_rss_max, daemon_rss_at_max = parts["VmRSS"], parts
        if now >= next_trace:
            next_trace += TRACE_S
            trace.append(trace_point(now, m, active))
        if settle_until is None and all(c.finished() for c in active):
            settle_until = now + scen.settle_s
            note(f"every hog and load process dead or done at {now:.2f} s")
        if settle_until is not None and now >= settle_until:
            break
        if now >= scen.timeout_s:
            timed_out = True
            break
        # The next tick on the fixed grid; ticks missed while stalled are skipped.
        tick = max(tick + 1, int((time.monotonic() - t0) / POLL_S))
        delay = t0 + tick * POLL_S - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    run_s = time.monotonic() - t0
    note(f"run over after {run_s:.1f} s, timed out: {timed_out}")
    psi1 = parse_psi_totals(read_text("/proc/pressure/memory"))

    result["timed_out"] = timed_out
    result["run_s"] = round(run_s, 2)
    result["psi_full_ms"] = round((psi1.get("full", 0) - psi0.get("full", 0)) / 1000)
    result["psi_some_ms"] = round((psi1.get("some", 0) - psi0.get("some", 0)) / 1000)
    result["min_mem_available_kib"] = min_avail
    result["max_swap_used_kib"] = max_swap_used
    hog_deaths = [h.t_exit for h in hogs if h.t_exit is not None]
    result["time_to_first_hog_death_s"] = round(min(hog_deaths), 2) if hog_deaths else None

    # Stop: the daemon first (so it cannot react to the teardown), then the
    # probe (SIGTERM makes it save its summary), then everything else.
    if daemon_proc is not None:
        result["daemon_alive_at_end"] = daemon_proc.poll() is None
        result["daemon_exit_code"] = daemon_proc.poll()
        result["daemon_rss_kib_end"] = rss_kib(daemon_proc.pid)
        result["daemon_rss_kib_max"] = max(daemon_rss_max, result["daemon_rss_kib_end"])
        result["daemon_rss_at_max"] = daemon_rss_at_max
        result["daemon_rss_parts_end"] = rss_parts(daemon_proc.pid)
        stop(daemon_proc)
    result["processes"] = [c.report() for c in children]
    if probe.popen.poll() is None:
        probe.popen.send_signal(signal.SIGTERM)
        try:
            probe.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass
    probe_text = read_text(probe_out)
    result["probe"] = json.loads(probe_text) if probe_text else None
    for child in children:
        stop(child.popen)

    dmesg = subprocess.run(["dmesg"], capture_output=True, check=False).stdout.decode(
        errors="replace"
    )
    write_text(f"{args.out}/dmesg.txt", dmesg)
    result["kernel_oom_kills"] = parse_kernel_oom_kills(dmesg)
    oom_kill1 = parse_vmstat(read_text("/proc/vmstat")).get("oom_kill")
    result["vmstat_oom_kill"] = (
        None if oom_kill0 is None or oom_kill1 is None else oom_kill1 - oom_kill0
    )
    log = ""
    if daemon_proc is not None:
        log = read_text(f"{WORK}/daemon.log")
        write_text(f"{args.out}/daemon.log", log)
    result["daemon_reported_kills"] = daemons.killed_pids(daemon, log)
    result["daemon_reactions"] = daemons.reactions(daemon, log)
    result["daemon_major_faults"] = daemons.major_faults(daemon, log)
    result["daemon_log_tail"] = log[-3000:]


def stop(popen: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process if it still runs and reap it."""
    if popen.poll() is None:
        popen.kill()
    try:
        popen.wait(10)
    except subprocess.TimeoutExpired:
        pass


def in_vm() -> bool:
    """True if PID 1 is virtme-ng's init, i.e. this is the throwaway guest."""
    return "virtme" in read_text("/proc/1/cmdline")


def main(argv: list[str]) -> int:
    """Run one scenario and write result.json.

    Returns 0 when the result was written (whatever it says), 2 on bad
    arguments or when not inside the test VM.
    """
    parser = argparse.ArgumentParser(prog="guest.py")
    parser.add_argument("--scenario", type=int, required=True, choices=sorted(scenarios.SCENARIOS))
    parser.add_argument("--daemon", required=True, choices=sorted(daemons.DAEMONS))
    parser.add_argument("--repo", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--i-am-in-a-vm", action="store_true")
    args = parser.parse_args(argv)
    if not (args.i_am_in_a_vm or in_vm()):
        print("guest.py: refusing to run outside the test VM", file=sys.stderr)
        return 2
    result: dict[str, Any] = {"scenario": args.scenario, "daemon": args.daemon, "errors": []}
    try:
        run(args, result)
    except Exception:  # the host must get the facts gathered so far
        result["errors"].append(traceback.format_exc())
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
