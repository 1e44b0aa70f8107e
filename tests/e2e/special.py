"""Host side of the two VM tests that are not memory scenarios: cgroup v2 and systemd.

``cgroup``: one guest runs every case of cgroup_cases.py on a real cgroup2
hierarchy (tests/e2e/cgroup_guest.py). ``systemd``: one guest boots with
systemd as PID 1 and runs tests/e2e/systemd_guest.py as its only job
(see systemd_cases.py for how, and what is checked), after installing the
checkout as README.md says, installs two builds of its Debian package
(built here first, :func:`build_debs`). Each leaves its files
in ``<results>/<name>/r<K>/`` (result.json, console.log, vm.json, and what
the guest saved) and gives one Outcome per case, judged here on the host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e import cgroup_cases, systemd_cases, vm
from tests.packaging import debbuild

__all__ = ["NAMES", "CaseOutcome", "describe", "run"]

HERE = os.path.dirname(os.path.abspath(__file__))
HARNESS_ROOT = os.path.dirname(os.path.dirname(HERE))
NAMES = ("cgroup", "systemd")
# Guest wall time allowed: boot (up to ~90 s on a busy host under TCG), and for
# cgroup three cases of up to ~2 min each, for systemd its boot to the job
# (~2-4 min) and the job itself, the package's part included (four dpkg
# runs, three of them reloading systemd's units: 30-120 s each under TCG).
TIMEOUT_S = {"cgroup": 900.0, "systemd": 2100.0}
UPGRADE_SUFFIX = "+e2e1"  # added to the checkout's version for the newer build


@dataclass(frozen=True)
class CaseOutcome:
    """One case of a special test: its name, the failed checks and a summary."""

    test: str
    case: str
    failed: tuple[str, ...]
    summary: str
    vm_seconds: float
    out_dir: str
    run: int


def _guest_complaint(console: str) -> str:
    """Return ": <line>" for the guest's last error line in ``console``, "" if none."""
    try:
        with open(console, errors="replace") as f:
            lines = [ln.strip() for ln in f if "-guest " in ln and
                     ("error:" in ln or "cannot write" in ln)]
    except OSError:
        return ""
    return f": {lines[-1]}" if lines else ""


def run_dir(results: str, name: str, run: int) -> str:
    """Return the folder of run ``run`` of the special test ``name``."""
    return os.path.join(results, name, f"r{run}")


def build_debs(repo: str, out_dir: str) -> dict[str, Any]:
    """Build ``repo``'s package twice (its version, then a newer one) into ``out_dir``/debs.

    Writes and returns debs.json: {"debs": [{"file", "version"}, ...] (files
    relative to ``out_dir``), "seconds"}, or {"error"} naming what failed.
    The guest installs the first and upgrades to the second.
    """
    facts: dict[str, Any] = {"debs": []}
    try:
        missing = debbuild.missing_tools()
        if missing:
            raise RuntimeError(f"missing: {', '.join(missing)} (tests/install-test-packages)")
        for n in (1, 2):
            src = debbuild.clean_copy(Path(repo), Path(out_dir) / "debs" / f"b{n}" / "src")
            if not (src / "debian" / "changelog").exists():
                raise RuntimeError(f"{repo} has no debian/changelog")
            version = subprocess.run(["dpkg-parsechangelog", "-S", "Version"], cwd=src,
                                     capture_output=True, text=True, check=True).stdout.strip()
            if n == 2:
                version += UPGRADE_SUFFIX
                debbuild.bump(src, version, "A newer build for the VM test's upgrade.")
            built = debbuild.build(src)
            shutil.rmtree(src)
            facts["debs"].append({"file": os.path.relpath(built.deb, out_dir),
                                  "version": version, "seconds": round(built.seconds, 1)})
    except (OSError, RuntimeError, ValueError, subprocess.CalledProcessError) as err:
        facts["error"] = f"building the package: {err}"
    with open(os.path.join(out_dir, "debs.json"), "w") as f:
        json.dump(facts, f)
    return facts


def boot(name: str, cfg: vm.VmConfig, repo: str, out_dir: str) -> vm.VmRun:
    """Boot the guest of test ``name`` with its output in ``out_dir``."""
    console = os.path.join(out_dir, "console.log")
    if name == "cgroup":
        command = ["python3", "-m", "tests.e2e.cgroup_guest", "--repo", repo, "--out", out_dir]
        return vm.boot(cfg, out_dir, HARNESS_ROOT, command, console, TIMEOUT_S[name])
    build_debs(repo, out_dir)
    return vm.boot_systemd(cfg, out_dir, systemd_cases.kernel_args(HARNESS_ROOT, repo, out_dir),
                           console, TIMEOUT_S[name])


def judge(name: str, out_dir: str, run: int) -> list[CaseOutcome]:
    """Return one CaseOutcome per case of test ``name`` from the files in ``out_dir``."""
    from tests.e2e.runner import read_json  # runner imports this module: not at the top
    result = read_json(os.path.join(out_dir, "result.json"))
    booted = read_json(os.path.join(out_dir, "vm.json")) or {}
    seconds = float(booted.get("seconds", 0.0))
    common: list[str] = []
    code = booted.get("exit_code", 0)
    if code is None:
        common.append(f"VM killed after {seconds:.0f} s")
    elif code != 0:
        common.append(f"VM exited with code {code}")
    if result is None:
        common.append("no result.json" + _guest_complaint(os.path.join(out_dir, "console.log")))
    else:
        common += [f"guest error: {e.strip().splitlines()[-1]}"
                   for e in result.get("errors", []) if e.strip()]
    out = []
    if name == "cgroup":
        cases = (result or {}).get("cases", {})
        for case in cgroup_cases.CASES:
            facts = cases.get(case.name)
            failed = common + cgroup_cases.failures(case, facts)
            out.append(CaseOutcome(name, case.name, tuple(failed),
                                   cgroup_cases.summary(facts), seconds, out_dir, run))
    else:
        for check, failed, text in systemd_cases.judge(result, out_dir):
            out.append(CaseOutcome(name, check, tuple(common + failed), text, seconds,
                                   out_dir, run))
    return out


def run(name: str, cfg: vm.VmConfig, repo: str, results: str, run_no: int = 1
        ) -> list[CaseOutcome]:
    """Boot one VM for run ``run_no`` of the special test ``name``; judge its cases.

    Run 1 first removes the saved runs of that test.
    """
    if run_no == 1:
        shutil.rmtree(os.path.join(results, name), ignore_errors=True)
    out_dir = run_dir(results, name, run_no)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    booted = boot(name, cfg, repo, out_dir)
    with open(os.path.join(out_dir, "vm.json"), "w") as f:
        json.dump({"exit_code": booted.exit_code, "seconds": round(booted.seconds, 1)}, f)
    return judge(name, out_dir, run_no)


def describe(o: CaseOutcome) -> str:
    """Return the one line printed for a case."""
    status = "FAIL" if o.failed else "PASS"
    line = (f"{status} {o.test} {o.case} run {o.run}: vm {o.vm_seconds:.0f} s; {o.summary}")
    if o.failed:
        line += " -- " + "; ".join(o.failed)
    return line
