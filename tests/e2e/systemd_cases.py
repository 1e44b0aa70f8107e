"""The systemd VM test (issue 9): how the guest is booted, and the verdict. Pure.

``vng --systemd`` boots the host's own file system (read-only over 9p) with
systemd as PID 1, but runs no command. Two things stood in the way:

* The host's root holds ``/.dockerenv`` (this host is a container image), so
  systemd took the guest for a Docker container: it then reads its "kernel
  command line" from its own argv (``/sbin/init``, nothing else), and every
  ``systemd.*`` option on the real command line was ignored, ``systemd.run=``
  included (the first try in issue 9 saw no output in 280 s because of this).
  ``container=`` (empty) on the kernel command line reaches PID 1's
  environment and tells it, authoritatively, that it is not in a container.
* Other processes (the generators) still read the host's ``/.dockerenv`` or
  PID 1's ``container=`` and take the guest for a container: they read the
  command line of PID 1. So the options the generators need go into
  ``SYSTEMD_PROC_CMDLINE`` (systemd's override of the kernel command line),
  which PID 1 hands to generators and services through ``systemd.setenv=``.

``systemd.run=`` then makes systemd-run-generator boot into a
``kernel-command-line.service`` that runs tests/e2e/systemd_guest.py, and
``systemd.run_success_action=poweroff`` ends the guest when it is done. Two
units are masked: ``systemd-tmpfiles-setup`` spent 60-120 s under TCG trying
to clean the host's read-only /tmp over 9p, and ``systemd-timesyncd`` fails
without a writable /var/lib. The job's output goes to the ``--rwdir`` folder,
which the job mounts itself (by its 9p tag, ``virtme.initmount0``): under
``--systemd`` nothing else mounts it.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MASKED", "PACKAGE_CHECKS", "START_KEYS", "exposure", "first_entry", "judge",
           "judge_package", "kernel_args", "sandbox_properties", "wrapper"]

MASKED = ("systemd-tmpfiles-setup.service", "systemd-timesyncd.service")
# systemd-analyze security's exposure of contrib/bustd.service (systemd 252)
# before issue 15 added process_mrelease and the writable slices: no worse.
MAX_EXPOSURE = 2.3
NOBODY = 65534
# [Service] settings that shape start-up and restarts, not the sandbox: left
# out when the check runs in a transient unit with bustd.service's sandbox.
START_KEYS = frozenset(("Type", "ExecStart", "ExecStartPre", "ExecStartPost", "ExecReload",
                        "ExecStop", "ExecStopPost", "Restart", "RestartSec",
                        "RestartPreventExitStatus", "WatchdogSec", "NotifyAccess",
                        "TimeoutStartSec", "TimeoutStopSec", "TimeoutSec", "PIDFile",
                        "RemainAfterExit", "SuccessExitStatus"))


def kernel_args(harness: str, repo: str, out: str) -> list[str]:
    """Return the kernel command-line options that run the test (see the module doc).

    Raises ValueError if a path holds whitespace or a quote (the kernel
    command line could not carry it).
    """
    for path in (harness, repo, out):
        if re.search(r"[\s\"']", path):
            raise ValueError(f"path {path!r}: no whitespace or quotes allowed here")
    inner = " ".join([f"systemd.run={harness}/tests/e2e/systemd_guest.py",
                      "systemd.run_success_action=poweroff",
                      "systemd.run_failure_action=poweroff",
                      *(f"systemd.mask={unit}" for unit in MASKED)])
    return ["container=", f"systemd.setenv=SYSTEMD_PROC_CMDLINE={inner}",
            f"systemd.setenv=BUSTD_E2E_REPO={repo}", f"systemd.setenv=BUSTD_E2E_OUT={out}"]


def wrapper(repo: str) -> str:
    """Return /usr/local/bin/bustd for the guest: the checkout under test.

    ``pip install .`` would put the real command there; the guest's root is
    read-only, so this stands in for it (the unit file itself is unchanged).
    """
    return ("#!/bin/sh\n# The systemd e2e guest's stand-in for the installed bustd command.\n"
            f'cd {repo} && exec /usr/bin/python3 -m bustd "$@"\n')


def sandbox_properties(unit_text: str) -> list[str]:
    """Return the [Service] settings of a unit file, start-up ones left out (START_KEYS)."""
    out: list[str] = []
    section = ""
    for raw in unit_text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        key, sep, value = line.partition("=")
        if section == "[Service]" and sep and key.strip() not in START_KEYS:
            out.append(f"{key.strip()}={value.strip()}")
    return out


_EXPOSURE = re.compile(r"Overall exposure level for \S+: ([\d.]+) (\S+)")


def exposure(security_out: str) -> tuple[float, str] | None:
    """Return (score, verdict) of ``systemd-analyze security UNIT``, None if absent."""
    m = _EXPOSURE.search(re.sub(r"\x1b\[[0-9;]*m", "", security_out))
    return (float(m.group(1)), m.group(2)) if m else None


def first_entry(entries: list[dict[str, Any]], text: str) -> dict[str, Any] | None:
    """Return the first journal entry whose MESSAGE holds ``text``."""
    for e in entries:
        message = e.get("MESSAGE")
        if isinstance(message, str) and text in message:
            return e
    return None


def judge(result: dict[str, Any] | None, out_dir: str) -> list[tuple[str, list[str], str]]:
    """Return (check, failures, summary) for each check of the systemd test.

    ``result`` is the guest's result.json (see systemd_guest.py).
    """
    r = result or {}
    steps: dict[str, dict[str, Any]] = r.get("steps", {})
    entries: list[dict[str, Any]] = r.get("journal_json", [])

    def rc(name: str) -> object:
        return steps.get(name, {}).get("rc", "missing")

    out: list[tuple[str, list[str], str]] = []
    # The unit starts and stays active.
    f = []
    start = first_entry(entries, " watching /proc: ")
    if rc("enable-now") != 0:
        f.append(f"systemctl enable --now: {rc('enable-now')}: "
                 f"{steps.get('enable-now', {}).get('err', '')[-300:]}")
    st = r.get("state_after_start", {})
    if (st.get("ActiveState"), st.get("SubState")) != ("active", "running"):
        f.append(f"after start: {st}")
    if not r.get("start_line_seen") or start is None:
        f.append("no start line in the journal")
    for state in ("state_after_reloads", "state_after_kill"):
        s = r.get(state, {})
        if s.get("ActiveState") != "active" or s.get("NRestarts") != "0" or (
                s.get("MainPID") != st.get("MainPID")):
            f.append(f"{state}: {s} (was {st})")
    stop = r.get("state_after_stop", {})
    if rc("stop") != 0 or (stop.get("ActiveState"), stop.get("Result")) != (
            "inactive", "success"):
        f.append(f"systemctl stop: {rc('stop')}, then {stop}")
    out.append(("active", f, f"{r.get('systemd', '?')}; active {r.get('active_after_s')} s "
                             f"into the job, main PID {st.get('MainPID')}"))
    # The kill line reaches the journal as a warning, the start line as info.
    f = []
    hog = r.get("hog_pid")
    kill = first_entry(entries, f"kill: pid={hog} ")
    if kill is None:
        f.append(f"no kill line for the hog (pid {hog}) in the journal")
    else:
        if kill.get("PRIORITY") != "4":
            f.append(f"kill line priority {kill.get('PRIORITY')}, not 4 (warning)")
        if f"kill: pid={hog} " not in r.get("journal_warning", ""):
            f.append("kill line missing from journalctl -u bustd -p warning")
    if start is not None:
        if start.get("PRIORITY") != "6":
            f.append(f"start line priority {start.get('PRIORITY')}, not 6 (info)")
        if " watching /proc: " in r.get("journal_warning", ""):
            f.append("the start line (info) is in journalctl -p warning")
    out.append(("journal", f, "kill line at priority "
                f"{kill.get('PRIORITY') if kill else '?'}, start line at "
                f"{start.get('PRIORITY') if start else '?'}"))
    # systemctl reload: a good file applies, a bad one keeps the running settings.
    f = []
    good = first_entry(entries, "reloaded /etc/bustd.conf: report=600.0")
    bad = first_entry(entries, "reload failed, running configuration kept: /etc/bustd.conf:")
    if rc("reload-good") != 0 or not r.get("reload_good_seen") or good is None:
        f.append(f"good reload: rc {rc('reload-good')}, line {good is not None}")
    elif good.get("PRIORITY") != "6":
        f.append(f"reload line priority {good.get('PRIORITY')}")
    if rc("reload-bad") != 0 or not r.get("reload_bad_seen") or bad is None:
        f.append(f"bad reload: rc {rc('reload-bad')}, line {bad is not None}")
    elif bad.get("PRIORITY") != "3" or "argument -p/--psi: invalid value 'lots'" not in str(
            bad.get("MESSAGE")):
        f.append(f"bad reload line: {bad.get('PRIORITY')} {bad.get('MESSAGE')!r}")
    out.append(("reload", f, "good file applied, bad file kept the running settings"
                if not f else "reload"))
    # The hardening lets bustd read every /proc/PID, register its trigger, kill.
    f = []
    message = str(start.get("MESSAGE")) if start else ""
    if "kernel trigger 1 s window" not in message:
        f.append(f"no 1 s PSI trigger (CAP_SYS_RESOURCE) in the start line: {message!r}")
    for bad_line in ("mlockall failed", "cannot set own oom_score_adj", "running as uid"):
        if first_entry(entries, bad_line) is not None:
            f.append(f"journal: {bad_line!r}")
    check = r.get("check")
    if rc("check-in-sandbox") != 0 or not isinstance(check, dict):
        f.append(f"bustd check in the sandbox: rc {rc('check-in-sandbox')}: "
                 f"{steps.get('check-in-sandbox', {}).get('err', '')[-300:]}")
    else:
        unreadable = [s for s in check.get("skipped", []) if s.get("kind") == "unreadable"
                      and "exited" not in str(s.get("reason"))]
        if unreadable:
            f.append(f"unreadable to bustd's sandbox: {unreadable[:5]}")
        by_pid = {c.get("pid"): c for c in check.get("candidates", [])}
        for pid in r.get("other_users_pids", []):
            c = by_pid.get(pid)
            if c is None or not c.get("exe") or c.get("uid") in (None, 0):
                f.append(f"another user's pid {pid} not read in full: {c}")
    if r.get("hog_exit") not in (-9, -15) or r.get("hog_timed_out"):
        f.append(f"the hog ended with {r.get('hog_exit')}, not bustd's signal")
    if kill is not None:
        line = str(kill.get("MESSAGE"))
        if f"uid={NOBODY} " not in line or "exe=/usr/bin/tail " not in line:
            f.append(f"the kill line does not name the hog's user and executable: {line!r}")
    out.append(("hardening", f, f"hog killed {r.get('hog_dead_after_s')} s after it started; "
                f"check saw {len((check or {}).get('candidates', []))} candidates"))
    # The kill path's calls pass the sandbox (issue 15): EPERM is the seccomp
    # filter, EROFS a read-only /sys/fs/cgroup.
    f = []
    probe = r.get("probe")
    expected = {"pidfd_open": ("OK",), "pidfd_send_signal": ("OK",),
                "process_mrelease_live": ("EINVAL",),
                "process_mrelease_killed": ("OK", "ESRCH", "EINVAL"), "cgroup_kill": ("OK",)}
    if not isinstance(probe, dict):
        f.append(f"sandbox probe: rc {rc('probe-in-sandbox')}: "
                 f"{steps.get('probe-in-sandbox', {}).get('err', '')[-300:]}")
    else:
        for call, allowed in expected.items():
            if probe.get(call) not in allowed:
                f.append(f"{call}: {probe.get(call)} under the unit, not "
                         f"{' or '.join(allowed)}")
        if r.get("probe_cgroup_target_exit") != -9:
            f.append(f"cgroup.kill left its target: {r.get('probe_cgroup_target_exit')}")
    for bad_line in ("not a pidfd", "process_mrelease: Operation not permitted",
                     "cgroup.kill: Read-only"):
        if first_entry(entries, bad_line) is not None:
            f.append(f"journal: {bad_line!r}")
    out.append(("kill-calls", f, f"in the unit's sandbox: {probe}"))
    # systemd's own judgement of the unit: the hardening stays.
    f = []
    score = exposure(str(steps.get("security", {}).get("out", "")))
    if rc("verify") != 0:
        f.append(f"systemd-analyze verify: {steps.get('verify', {}).get('err', '')[-300:]}")
    if score is None:
        f.append("no exposure level from systemd-analyze security")
    elif score[0] > MAX_EXPOSURE:
        f.append(f"exposure {score[0]} {score[1]}, above {MAX_EXPOSURE} (the unit's level "
                 "before issue 15)")
    out.append(("security", f, "systemd-analyze security: "
                + (f"{score[0]} {score[1]}" if score else "?")))
    return out + judge_package(r)


PACKAGE_CHECKS = ("package-install", "package-kill", "package-upgrade", "package-remove",
                  "package-purge")
# The packaged daemon's idle RssAnon (its own memory, not the shared pages
# of the interpreter's files) may exceed the checkout's by this much (KiB):
# a runtime that had to compile its modules keeps ~1 MiB more
# (bench/README.md), so this fails when the .pyc files are missing.
RSS_MARGIN_KIB = 512


def judge_package(r: dict[str, Any]) -> list[tuple[str, list[str], str]]:
    """Return (check, failures, summary) for the Debian package's part of the test.

    ``r`` is the guest's result.json; its "package" facts come from
    systemd_guest.package (and the host's debs.json they include).
    """
    p: dict[str, Any] = r.get("package") or {}
    steps: dict[str, dict[str, Any]] = r.get("steps", {})
    debs = p.get("debs") or {}
    common = [str(e) for e in (p.get("error"), debs.get("error")) if e]
    if not p:
        common.append("the package part did not run")

    def ran(name: str) -> list[str]:
        rec = steps.get(name)
        if rec is None:
            return [f"{name}: not run"]
        if rec.get("rc") != 0:
            return [f"{name}: rc {rec.get('rc')}: {str(rec.get('err', ''))[-400:]}"]
        return []

    out: list[tuple[str, list[str], str]] = []
    # Installed: enabled, active, the runtime from dist-packages with its
    # .pyc compiled at install, and as small as the checkout's.
    f = common + ran("pkg-install")
    inst = p.get("after_install", {})
    version = (debs.get("debs") or [{}])[0].get("version", "?")
    if inst.get("enabled") != "enabled" or not str(inst.get("dpkg", "")).startswith(
            f"{version} ii"):
        f.append(f"after dpkg -i: {inst}")
    if p.get("policy_rc_d_hidden") is None or not p.get("wrapper_gone"):
        f.append("the checkout's install was not undone before the package's")
    if p.get("start_line") is None:
        f.append(f"no start line from the package's main PID {p.get('installed_pid')}")
    if "/usr/lib/python3/dist-packages/bustd/lean.py" not in str(p.get("cmdline")):
        f.append(f"the main process is not the packaged runtime: {p.get('cmdline')!r}")
    missing = sorted(set(p.get("py", [])) - set(p.get("pyc", [])))
    if not p.get("py") or missing:
        f.append(f"modules without a .pyc after dpkg -i: {missing or 'no modules'}")
    ours, theirs = p.get("idle_memory_kib") or {}, r.get("idle_memory_kib") or {}
    anon, anon0 = ours.get("RssAnon", 0), theirs.get("RssAnon", 0)
    if not anon or not anon0:
        f.append(f"idle memory not measured (package {ours}, checkout {theirs} KiB)")
    elif anon > anon0 + RSS_MARGIN_KIB:
        f.append(f"the packaged daemon's idle RssAnon {anon} KiB exceeds the checkout's "
                 f"{anon0} KiB by more than {RSS_MARGIN_KIB} KiB")
    f += ran("pkg-check")
    if not p.get("check_candidates"):
        f.append(f"bustd check listed no candidates: {p.get('check_candidates')}")
    out.append(("package-install", f, f"{version}: idle VmRSS/RssAnon "
                f"{ours.get('VmRSS')}/{anon} KiB installed, {theirs.get('VmRSS')}/{anon0} KiB "
                f"from the checkout; {len(p.get('pyc', []))} .pyc"))
    # The packaged service kills a hog, and says so in the journal.
    f = list(common)
    hog = p.get("hog") or {}
    line = hog.get("line")
    if hog.get("exit") not in (-9, -15) or hog.get("timed_out"):
        f.append(f"the hog ended with {hog.get('exit')}, not bustd's signal")
    if line is None:
        f.append(f"no kill line for the hog (pid {hog.get('pid')}) from the package's bustd")
    elif line.get("PRIORITY") != "4" or f"uid={NOBODY} " not in str(line.get("MESSAGE")):
        f.append(f"kill line: {line.get('PRIORITY')} {line.get('MESSAGE')!r}")
    after = p.get("after_kill", {})
    if after.get("ActiveState") != "active" or after.get("MainPID") != p.get("installed_pid"):
        f.append(f"after the kill: {after}")
    out.append(("package-kill", f, f"hog killed {hog.get('dead_after_s')} s after it started"))
    # Upgrade: the administrator's edit kept, the service restarted.
    f = common + ran("pkg-upgrade")
    newer = (debs.get("debs") or [{}, {}])[-1].get("version", "?")
    up = p.get("after_upgrade", {})
    if not str(up.get("dpkg", "")).startswith(f"{newer} ii"):
        f.append(f"after the upgrade dpkg says {up.get('dpkg')!r}, not {newer} installed")
    if not p.get("conf_kept"):
        f.append("the administrator's edit of /etc/bustd.conf was lost")
    if p.get("upgraded_pid") in (None, "0", p.get("installed_pid")) or p.get(
            "upgraded_start_line") is None:
        f.append(f"not restarted: main PID {p.get('installed_pid')} -> "
                 f"{p.get('upgraded_pid')}, start line {p.get('upgraded_start_line') is not None}")
    if p.get("old_exit_line") is None:
        f.append("no exit line from the old daemon")
    out.append(("package-upgrade", f, f"{version} -> {newer}: main PID "
                f"{p.get('installed_pid')} -> {p.get('upgraded_pid')}, edit kept "
                f"{p.get('conf_kept')}"))
    # Remove: stopped, the conffile kept; purge: gone.
    f = common + ran("pkg-remove")
    rm = p.get("after_remove", {})
    if rm.get("unit", {}).get("ActiveState") != "inactive" or p.get("upgraded_pid_alive"):
        f.append(f"still running after dpkg -r: {rm.get('unit')}, pid alive "
                 f"{p.get('upgraded_pid_alive')}")
    if not rm.get("conf") or rm.get("command") or not str(rm.get("dpkg", "")).endswith("rc"):
        f.append(f"after dpkg -r: {rm} (expected the conffile kept, the command gone, rc)")
    out.append(("package-remove", f, f"dpkg -r: {rm.get('dpkg')!r}, unit "
                f"{rm.get('unit', {}).get('ActiveState')}"))
    f = common + ran("pkg-purge")
    pg = p.get("after_purge", {})
    if pg.get("conf") or pg.get("wants_link") or str(pg.get("dpkg", "")).strip() not in (
            "", "pn", "un"):
        f.append(f"after dpkg -P: {pg} (expected no /etc/bustd.conf, no unit link)")
    out.append(("package-purge", f, f"dpkg -P: /etc/bustd.conf gone {not pg.get('conf')}"))
    return out
