"""Host-only tests of the cgroup and systemd VM tests' pure parts (no VM is booted).

The facts and journal lines below are shaped like those the guests recorded
in real runs (tests/e2e/README.md); each check must fail when its fact is
wrong, and pass on a run that went right.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import cgroup_cases, runner, special, systemd_cases, vm

REPO = str(Path(__file__).resolve().parents[2])
WORK = "/sys/fs/cgroup/bustd-e2e/work"
START = (f"bustd 0.1.0 (pid 301) watching /proc: cgroup {WORK} (memory.max 160.0 MiB): SIGTERM "
         "at MemAvailable <= 16.0 MiB and SwapFree <= 0 KiB; SIGKILL at 8.0 MiB and 0 KiB; "
         "some stall >= 25% for 8 s below 15% MemAvailable, kernel trigger 1 s window on "
         f"{WORK}/memory.pressure; watching below 272.0 MiB, ranking by growth")


def cgroup_facts(case: cgroup_cases.Case) -> dict[str, Any]:
    """Facts of a case that went right."""
    procs = {p.name: {"pid": 400 + i, "alive_at_end": True, "exit_code": None, "signal": None}
             for i, p in enumerate(cgroup_cases.PROCS)}
    for name in case.dies:
        sig = 9 if name in case.by_sigkill else 15
        procs[name].update(alive_at_end=False, exit_code=-sig, signal=sig)
    line = ("warning: kill: pid=403 name=python3 exe=/usr/bin/python3.11 uid=0 rss=120 MiB"
            + case.line.format(work=WORK, daemon=301)
            + f"signal=SIGTERM exited after 0.1 s; reason: cgroup {WORK} available 15.9 MiB "
            "(9.9%) <= 16.0 MiB, no swap; runners-up: none; cmdline=x")
    facts: dict[str, Any] = {
        "errors": [], "work": WORK, "procs": procs, "oom_kill": 0, "kernel_oom_kills": [],
        "populated": {"work/a": 0 if case.by_sigkill else 1, "work/b": 1, "outside": 1},
        "daemon": {"pid": 301, "ready": True, "alive_at_end": True,
                   "log": START + "\n" + line + "\n"},
        "hog_dead_after_s": 6.5}
    if case.check:
        facts["check"] = {"rc": 0, "stderr": "", "report": {
            "cgroup": {"path": WORK, "current_kib": 40 << 10, "limit_kib": 160 << 10,
                       "limit_name": "memory.max", "reclaimable_kib": 0},
            "memory": {"total_kib": 160 << 10, "available_kib": 120 << 10,
                       "available_percent": 75.0},
            "candidates": [{"pid": procs["bystander"]["pid"]},
                           {"pid": procs["partner"]["pid"]}]}}
    return facts


@pytest.mark.parametrize("case", cgroup_cases.CASES, ids=[c.name for c in cgroup_cases.CASES])
def test_cgroup_case_passes_when_right(case: cgroup_cases.Case) -> None:
    assert cgroup_cases.failures(case, cgroup_facts(case)) == []
    assert cgroup_cases.summary(cgroup_facts(case)).startswith("died: ")


def _break(facts: dict[str, Any], what: str) -> None:
    procs, daemon = facts["procs"], facts["daemon"]
    if what == "kernel":
        facts["oom_kill"] = 1
    elif what == "dmesg":
        facts["kernel_oom_kills"] = [{"pid": 403, "name": "python3"}]
    elif what == "outside":
        procs["outside"].update(alive_at_end=False, exit_code=-15, signal=15)
    elif what == "hog-lives":
        procs["hog"].update(alive_at_end=True, exit_code=None, signal=None)
    elif what == "daemon-dead":
        daemon["alive_at_end"] = False
    elif what == "no-trigger":
        daemon["log"] = daemon["log"].replace("kernel trigger 1 s window", "polled")
    elif what == "wrong-victim":
        daemon["log"] = daemon["log"].replace("kill: pid=403", "kill: pid=400")
    elif what == "no-cgroup-in-line":
        daemon["log"] = daemon["log"].replace(" in cgroup ", " in ")
    elif what == "error":
        facts["errors"] = ["Traceback (most recent call last):\nOSError: boom\n"]
    elif what == "missing-proc":
        del procs["partner"]
    elif what == "outside-ranked":
        daemon["log"] = daemon["log"].replace("runners-up: none", "runners-up: pid=400 name=x")


@pytest.mark.parametrize("what", ["missing", "rc", "machine", "outside-candidate"])
def test_cgroup_check_fails_when_wrong(what: str) -> None:
    case = cgroup_cases.CASES[0]
    assert case.check
    facts = cgroup_facts(case)
    report = facts["check"]["report"]
    if what == "missing":
        del facts["check"]
    elif what == "rc":
        facts["check"]["rc"] = 3
    elif what == "machine":
        report["cgroup"] = None
        report["memory"]["total_kib"] = 958 << 10
    else:
        report["candidates"].append({"pid": facts["procs"]["outside"]["pid"]})
    assert cgroup_cases.failures(case, facts)


@pytest.mark.parametrize("what", ["kernel", "dmesg", "outside", "hog-lives", "daemon-dead",
                                  "no-trigger", "wrong-victim", "no-cgroup-in-line", "error",
                                  "missing-proc", "outside-ranked"])
def test_cgroup_case_fails_when_wrong(what: str) -> None:
    for case in cgroup_cases.CASES:
        facts = cgroup_facts(case)
        _break(facts, what)
        assert cgroup_cases.failures(case, facts), (case.name, what)
    assert cgroup_cases.failures(cgroup_cases.CASES[0], None) == ["no facts recorded"]


def test_cgroup_whole_kill_needs_sigkill_and_an_empty_cgroup() -> None:
    case = next(c for c in cgroup_cases.CASES if c.name == "kill-cgroup")
    facts = cgroup_facts(case)
    facts["procs"]["partner"].update(exit_code=-15, signal=15)
    assert any("not SIGKILL" in f for f in cgroup_cases.failures(case, facts))
    facts = cgroup_facts(case)
    facts["populated"]["work/a"] = 1
    assert any("still populated" in f for f in cgroup_cases.failures(case, facts))
    # The same partner death is wrong where it must survive.
    plain = cgroup_cases.CASES[0]
    facts = cgroup_facts(plain)
    facts["procs"]["partner"].update(alive_at_end=False, exit_code=-9, signal=9)
    assert any("partner died" in f for f in cgroup_cases.failures(plain, facts))


# -- systemd ----------------------------------------------------------------

def test_kernel_args_reach_pid_1_and_the_generators() -> None:
    args = systemd_cases.kernel_args("/h", "/repo", "/out")
    assert args[0] == "container="
    assert args[1] == ("systemd.setenv=SYSTEMD_PROC_CMDLINE=systemd.run=/h/tests/e2e/"
                       "systemd_guest.py systemd.run_success_action=poweroff "
                       "systemd.run_failure_action=poweroff "
                       "systemd.mask=systemd-tmpfiles-setup.service "
                       "systemd.mask=systemd-timesyncd.service")
    assert args[2:] == ["systemd.setenv=BUSTD_E2E_REPO=/repo", "systemd.setenv=BUSTD_E2E_OUT=/out"]
    with pytest.raises(ValueError, match="no whitespace"):
        systemd_cases.kernel_args("/h", "/my repo", "/out")


def test_vng_systemd_argv_keeps_each_option_whole() -> None:
    cfg = vm.VmConfig("/boot/vmlinuz-x")
    args = systemd_cases.kernel_args("/h", "/repo", "/out")
    argv = vm.vng_systemd_argv(cfg, "/out", args)
    assert argv[:4] == ["vng", "--run", "/boot/vmlinuz-x", "--systemd"]
    assert "--disable-kvm" in argv and "--exec" not in argv
    appended = [argv[i + 1] for i, a in enumerate(argv) if a == "--append"]
    # vng splits each --append like a shell: every option must come back whole.
    assert [shlex.split(a) for a in appended] == [[a] for a in args]


def test_guest_script_is_executable_and_in_the_harness() -> None:
    path = Path(REPO) / "tests" / "e2e" / "systemd_guest.py"
    assert os.access(path, os.X_OK)
    assert path.read_text().startswith("#!/usr/bin/python3\n")


def test_sandbox_properties_of_the_shipped_unit() -> None:
    text = (Path(REPO) / "contrib" / "bustd.service").read_text()
    props = systemd_cases.sandbox_properties(text)
    keys = [p.split("=", 1)[0] for p in props]
    assert not set(keys) & systemd_cases.START_KEYS
    for key in ("CapabilityBoundingSet", "ProtectSystem", "SystemCallFilter", "NoNewPrivileges",
                "MemoryDenyWriteExecute", "PrivateTmp"):
        assert key in keys
    assert keys.count("SystemCallFilter") == 2  # both lines, in order
    assert "Description" not in keys and "WantedBy" not in keys


def test_sandbox_properties_parser() -> None:
    text = ("[Unit]\nDescription=x\n[Service]\n# c\nType=notify\nExecStart=/x\n"
            "ProtectSystem=strict\n  PrivateTmp = yes \nWatchdogSec=30\n[Install]\nWantedBy=y\n")
    assert systemd_cases.sandbox_properties(text) == ["ProtectSystem=strict", "PrivateTmp=yes"]


def test_wrapper_runs_the_checkout() -> None:
    text = systemd_cases.wrapper("/work/x")
    assert text.startswith("#!/bin/sh\n")
    assert text.endswith('cd /work/x && exec /usr/bin/python3 -m bustd "$@"\n')


SECURITY = ("  NAME   DESCRIPTION   EXPOSURE\n\x1b[1m→ Overall exposure level for "
            "bustd.service: 2.1 OK \x1b[0m🙂\n")


def test_exposure() -> None:
    assert systemd_cases.exposure(SECURITY) == (2.1, "OK")
    assert systemd_cases.exposure("") is None


def journal_entry(message: str, priority: str) -> dict[str, str]:
    return {"MESSAGE": message, "PRIORITY": priority, "_SYSTEMD_UNIT": "bustd.service"}


def systemd_result() -> dict[str, Any]:
    """A result.json of a systemd run that went right."""
    state = {"ActiveState": "active", "SubState": "running", "MainPID": "310", "NRestarts": "0",
             "ExecMainStatus": "0", "Result": "success"}
    kill = ("kill: pid=420 name=tail exe=/usr/bin/tail uid=65534 rss=600 MiB swap=0 KiB "
            "signal=SIGTERM exited after 0.2 s")
    entries = [
        journal_entry("Started bustd.service - bustd: out-of-memory prevention daemon.", "6"),
        journal_entry("bustd 0.1.0 (pid 310) watching /proc: SIGTERM at MemAvailable <= 96 MiB; "
                      "some stall >= 25% for 8 s below 15% MemAvailable, kernel trigger 1 s "
                      "window; watching below 350 MiB, ranking by growth", "6"),
        journal_entry("reloaded /etc/bustd.conf: report=600.0; SIGTERM at ...", "6"),
        journal_entry("reload failed, running configuration kept: /etc/bustd.conf:82: "
                      "argument -p/--psi: invalid value 'lots': expected a percentage", "3"),
        journal_entry(kill, "4"),
    ]
    ok = {"rc": 0, "out": "", "err": "", "s": 1.0}
    result: dict[str, Any] = {
        "errors": [], "systemd": "systemd 252 (252.39-1~deb12u2)", "active_after_s": 40.0,
        "steps": {"enable-now": ok, "check-in-sandbox": ok, "reload-good": ok,
                  "reload-bad": ok, "verify": ok, "stop": ok, "probe-in-sandbox": ok,
                  "security": {**ok, "out": SECURITY}},
        "state_after_start": state, "state_after_reloads": state, "state_after_kill": state,
        "state_after_stop": {**state, "ActiveState": "inactive", "SubState": "dead",
                             "MainPID": "0"},
        "start_line_seen": True, "reload_good_seen": True, "reload_bad_seen": True,
        "other_users_pids": [330, 331], "hog_pid": 420, "hog_exit": -15,
        "hog_dead_after_s": 9.0, "kill_line_seen": True,
        "journal_warning": kill + "\n", "journal_json": entries,
        "check": {"candidates": [{"pid": 330, "uid": 65534, "exe": "/usr/bin/python3.11"},
                                 {"pid": 331, "uid": 1, "exe": "/usr/bin/sleep"}],
                  "skipped": [{"pid": 1, "kind": "pid1", "reason": "PID 1"}]},
        "idle_memory_kib": {"VmRSS": 7280, "RssAnon": 3000, "RssFile": 4280},
        "probe": {"pidfd_open": "OK", "pidfd_send_signal": "OK", "process_mrelease_live": "EINVAL",
                  "process_mrelease_killed": "OK", "cgroup_kill": "OK"},
        "probe_cgroup_target_exit": -9,
        "package": package_facts(),
    }
    for name in ("pkg-install", "pkg-check", "pkg-upgrade",
                 "pkg-remove", "pkg-purge"):
        result["steps"][name] = dict(ok)
    return result


def package_facts() -> dict[str, Any]:
    """The "package" facts of a systemd run whose package part went right."""
    running = {"ActiveState": "active", "SubState": "running", "MainPID": "510",
               "NRestarts": "0", "ExecMainStatus": "0", "Result": "success"}
    gone = {"ActiveState": "inactive", "SubState": "dead", "MainPID": "0"}
    modules = ["__init__", "lean", "runtime"]
    return {
        "debs": {"debs": [{"file": "debs/b1/bustd_0.1.0_all.deb", "version": "0.1.0"},
                          {"file": "debs/b2/bustd_0.1.0+e2e1_all.deb",
                           "version": "0.1.0+e2e1"}]},
        "policy_rc_d_hidden": True, "wrapper_gone": True,
        "after_install": {"dpkg": "0.1.0 ii ", "enabled": "enabled", "unit": running,
                          "conf": True, "command": True, "wants_link": True},
        "installed_pid": "510",
        "start_line": journal_entry("bustd 0.1.0 (pid 510) watching /proc: ...", "6"),
        "idle_memory_kib": {"VmRSS": 7624, "RssAnon": 3100, "RssFile": 4524},
        "cmdline": "/usr/bin/python3 -S -I /usr/lib/python3/dist-packages/bustd/lean.py "
                   "--config /etc/bustd.conf",
        "py": modules, "pyc": modules, "check_candidates": 12,
        "hog": {"pid": 600, "exit": -15, "timed_out": False, "dead_after_s": 9.5,
                "line": journal_entry("kill: pid=600 name=tail exe=/usr/bin/tail uid=65534 "
                                      "...", "4")},
        "after_kill": running,
        "conf_kept": True,
        "after_upgrade": {"dpkg": "0.1.0+e2e1 ii ", "enabled": "enabled",
                          "unit": {**running, "MainPID": "700"}, "conf": True,
                          "command": True, "wants_link": True},
        "upgraded_pid": "700",
        "upgraded_start_line": journal_entry("bustd 0.1.0 (pid 700) watching /proc: ...", "6"),
        "old_exit_line": journal_entry("bustd exiting after 1 kills", "6"),
        "after_remove": {"dpkg": "0.1.0+e2e1 rc", "enabled": "", "unit": gone, "conf": True,
                         "command": False, "wants_link": True},
        "upgraded_pid_alive": False,
        "after_purge": {"dpkg": "", "enabled": "", "unit": gone, "conf": False,
                        "command": False, "wants_link": False},
    }


def test_systemd_run_that_went_right_passes() -> None:
    verdicts = systemd_cases.judge(systemd_result(), "/out")
    assert [name for name, _, _ in verdicts] == ["active", "journal", "reload", "hardening",
                                                 "kill-calls", "security",
                                                 *systemd_cases.PACKAGE_CHECKS]
    assert [f for _, f, _ in verdicts] == [[]] * 11
    assert verdicts[5][2] == "systemd-analyze security: 2.1 OK"
    assert verdicts[6][2] == ("0.1.0: idle VmRSS/RssAnon 7624/3100 KiB installed, "
                              "7280/3000 KiB from the checkout; 3 .pyc")


def _mutate(r: dict[str, Any], what: str) -> str:
    """Break one fact of a good result; return the check that must fail."""
    entries = r["journal_json"]
    if what == "not-active":
        r["state_after_start"] = {**r["state_after_start"], "ActiveState": "failed"}
        return "active"
    if what == "restarted":
        r["state_after_kill"] = {**r["state_after_kill"], "NRestarts": "1", "MainPID": "333"}
        return "active"
    if what == "kill-priority":
        entries[-1]["PRIORITY"] = "6"
        return "journal"
    if what == "no-kill-line":
        r["journal_warning"] = ""
        return "journal"
    if what == "bad-reload-kept":
        entries[3]["MESSAGE"] = "reloaded /etc/bustd.conf: psi_cutoff=..."
        return "reload"
    if what == "reload-rc":
        r["steps"]["reload-good"]["rc"] = 1
        return "reload"
    if what == "polled":
        entries[1]["MESSAGE"] = entries[1]["MESSAGE"].replace("kernel trigger 1 s window",
                                                              "polled")
        return "hardening"
    if what == "unreadable":
        r["check"]["skipped"].append({"pid": 330, "kind": "unreadable",
                                      "reason": "Permission denied"})
        return "hardening"
    if what == "exe-hidden":
        r["check"]["candidates"][0]["exe"] = ""
        return "hardening"
    if what == "kernel-killed-hog":
        r["hog_exit"] = -9
        r["journal_warning"] = ""
        del entries[-1]
        return "journal"
    if what == "mlockall":
        entries.append(journal_entry("mlockall failed (Operation not permitted)", "4"))
        return "hardening"
    if what == "no-score":
        r["steps"]["security"]["out"] = ""
        return "security"
    if what == "mrelease-filtered":
        r["probe"]["process_mrelease_live"] = "EPERM"
        return "kill-calls"
    if what == "cgroup-read-only":
        r["probe"]["cgroup_kill"] = "EROFS"
        r["probe_cgroup_target_exit"] = "alive"
        return "kill-calls"
    if what == "no-probe":
        del r["probe"]
        return "kill-calls"
    p = r["package"]
    broken: dict[str, tuple[str, Any]] = {
        "pkg-install-rc": ("package-install", lambda: r["steps"]["pkg-install"].update(rc=1)),
        "pkg-disabled": ("package-install", lambda: p["after_install"].update(
            enabled="disabled")),
        "pkg-no-pyc": ("package-install", lambda: p.update(pyc=["__init__", "lean"])),
        "pkg-fat": ("package-install", lambda: p["idle_memory_kib"].update(RssAnon=4000)),
        "pkg-not-measured": ("package-install", lambda: p.update(idle_memory_kib={})),
        "pkg-from-checkout": ("package-install", lambda: p.update(
            cmdline="/usr/bin/python3 -S -I /run/e2e-repo/bustd/lean.py")),
        "pkg-no-build": ("package-install", lambda: p["debs"].update(error="no dpkg-dev")),
        "pkg-hog-lived": ("package-kill", lambda: p["hog"].update(exit=0, line=None)),
        "pkg-conf-lost": ("package-upgrade", lambda: p.update(conf_kept=False)),
        "pkg-not-restarted": ("package-upgrade", lambda: p.update(upgraded_pid="510")),
        "pkg-old-version": ("package-upgrade", lambda: p["after_upgrade"].update(
            dpkg="0.1.0 ii ")),
        "pkg-still-running": ("package-remove", lambda: p.update(upgraded_pid_alive=True)),
        "pkg-conf-removed": ("package-remove", lambda: p["after_remove"].update(conf=False)),
        "pkg-conf-after-purge": ("package-purge", lambda: p["after_purge"].update(conf=True)),
        "pkg-link-after-purge": ("package-purge", lambda: p["after_purge"].update(
            wants_link=True)),
    }
    check, act = broken[what]
    act()
    return check


@pytest.mark.parametrize("what", ["not-active", "restarted", "kill-priority", "no-kill-line",
                                  "bad-reload-kept", "reload-rc", "polled", "unreadable",
                                  "exe-hidden", "kernel-killed-hog", "mlockall", "no-score",
                                  "mrelease-filtered", "cgroup-read-only", "no-probe",
                                  "pkg-install-rc", "pkg-disabled", "pkg-no-pyc", "pkg-fat",
                                  "pkg-not-measured",
                                  "pkg-from-checkout", "pkg-no-build", "pkg-hog-lived",
                                  "pkg-conf-lost", "pkg-not-restarted", "pkg-old-version",
                                  "pkg-still-running", "pkg-conf-removed",
                                  "pkg-conf-after-purge", "pkg-link-after-purge"])
def test_systemd_run_fails_when_wrong(what: str) -> None:
    r = copy.deepcopy(systemd_result())
    check = _mutate(r, what)
    failed = {name: f for name, f, _ in systemd_cases.judge(r, "/out")}
    assert failed[check], (what, failed)


def test_systemd_nothing_recorded_fails_every_check() -> None:
    assert all(f for _, f, _ in systemd_cases.judge(None, "/out"))


# -- the host side: files in, one line per case out --------------------------

def test_judge_reads_the_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "cgroup" / "r1"
    out.mkdir(parents=True)
    (out / "vm.json").write_text(json.dumps({"exit_code": 0, "seconds": 240.0}))
    cases = {c.name: cgroup_facts(c) for c in cgroup_cases.CASES}
    (out / "result.json").write_text(json.dumps({"errors": [], "cases": cases}))
    outcomes = special.judge("cgroup", str(out), 1)
    assert [o.case for o in outcomes] == [c.name for c in cgroup_cases.CASES]
    assert all(not o.failed for o in outcomes)
    assert special.describe(outcomes[0]).startswith("PASS cgroup cgroup run 1: vm 240 s; died: hog")
    (out / "vm.json").write_text(json.dumps({"exit_code": None, "seconds": 900.0}))
    outcomes = special.judge("cgroup", str(out), 1)
    assert all(o.failed[0] == "VM killed after 900 s" for o in outcomes)
    (out / "result.json").unlink()
    sd = tmp_path / "systemd" / "r1"
    sd.mkdir(parents=True)
    outcomes = special.judge("systemd", str(sd), 1)
    assert len(outcomes) == 11 and all("no result.json" in o.failed for o in outcomes)
    # The guest's own complaint, from the console, says why there is none.
    (sd / "console.log").write_text(
        "[systemd-guest    58.0] stop: rc 0 in 0.53 s\n"
        "[systemd-guest    58.6] cannot write the results: [Errno 2] No such file or "
        "directory: '/tmp/x/journal.txt'\n[systemd-guest    58.6] done\n")
    outcomes = special.judge("systemd", str(sd), 1)
    assert all("no result.json: [systemd-guest    58.6] cannot write the results: [Errno 2] "
               "No such file or directory: '/tmp/x/journal.txt'" in o.failed for o in outcomes)


def test_runner_accepts_the_special_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert runner.main(["--scenarios", "cgroup,frob"]) == 2
    assert "unknown scenario 'frob'" in capsys.readouterr().err
    assert runner.main(["--scenarios", "systemd", "--daemon", "earlyoom"]) == 2
    assert "bustd only" in capsys.readouterr().err
