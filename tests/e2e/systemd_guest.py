#!/usr/bin/python3
"""Guest side of the systemd test: contrib/bustd.service under systemd 252 as PID 1.

Run by systemd itself as ``kernel-command-line.service`` (``systemd.run=`` on
the kernel command line, see systemd_cases.kernel_args), as root, with
``$BUSTD_E2E_REPO`` (the checkout under test) and ``$BUSTD_E2E_OUT`` (the
host folder given to vng with ``--rwdir``, mounted at /run/e2e-out by its 9p
tag; the checkout is bound at /run/e2e-repo, since either may lie under /tmp,
which gets a tmpfs here). The
guest's root is the host's file system, read-only: this makes /tmp, /var/tmp,
/var/log tmpfs and /etc, /usr/local/bin writable overlays (as on a real machine),
installs the unit and the config file as README.md says (``cp``, ``systemctl
enable --now``), with ``/usr/local/bin/bustd`` a two-line wrapper that runs
the checkout (``pip install .`` is not possible in the read-only guest), and
then, in order:

1. waits for the unit to be ``active`` and its start line in the journal;
2. runs ``bustd check --json`` in a transient unit with every [Service]
   setting of bustd.service but the start-up ones (the same sandbox), with
   processes of another user running: every /proc/PID must be readable;
   then sandbox_probe.py there: pidfd_open, pidfd_send_signal,
   process_mrelease and cgroup.kill must pass the sandbox (issue 15);
3. ``systemctl reload`` with a changed config file, then a bad one;
4. starts a hog as user nobody and waits for bustd to kill it;
5. ``systemd-analyze verify`` and ``security`` on the unit;
6. ``systemctl stop bustd``.

It records every command's output and the journal in result.json (and
journal.txt, journal-bustd.json) in the out folder, judges nothing (the host
does: systemd_cases.judge) and exits 0, so systemd powers the guest off.
Refuses to run unless PID 1 is systemd and the kernel command line names
this test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from tests.e2e import systemd_cases  # noqa: E402
from tests.e2e.guest import write_result  # noqa: E402

UNIT = "bustd.service"
NOBODY = 65534
results: dict[str, Any] = {"errors": [], "steps": {}}
T0 = time.monotonic()


def note(msg: str) -> None:
    """Print a progress line on the console (the host keeps it in console.log)."""
    line = f"[systemd-guest {time.monotonic() - T0:7.1f}] {msg}\n"
    try:
        with open("/dev/console", "w") as console:
            console.write(line)
    except OSError:
        sys.stderr.write(line)


def sh(*argv: str, timeout: float = 120.0, check: bool = False, **kw: Any) -> dict[str, Any]:
    """Run ``argv``; return {"argv", "rc", "out", "err", "s"} (rc None on timeout)."""
    t = time.monotonic()
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                           check=False, **kw)
        rec: dict[str, Any] = {"argv": list(argv), "rc": p.returncode, "out": p.stdout,
                               "err": p.stderr[-5000:]}
    except subprocess.TimeoutExpired:
        rec = {"argv": list(argv), "rc": None, "out": "", "err": "timeout"}
    rec["s"] = round(time.monotonic() - t, 2)
    if check and rec["rc"] != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({rec['rc']}): {rec['err'][-500:]}")
    return rec


def step(name: str, rec: dict[str, Any]) -> dict[str, Any]:
    """Record ``rec`` as step ``name`` and return it."""
    results["steps"][name] = rec
    note(f"{name}: rc {rec.get('rc')} in {rec.get('s')} s")
    return rec


def overlay(path: str) -> None:
    """Make ``path`` writable with a tmpfs overlay (changes vanish with the guest)."""
    base = f"/run/e2e-overlay/{path.strip('/').replace('/', '-')}"
    os.makedirs(f"{base}/upper", exist_ok=True)
    os.makedirs(f"{base}/work", exist_ok=True)
    sh("mount", "-t", "overlay", "overlay", "-o",
       f"lowerdir={path},upperdir={base}/upper,workdir={base}/work", path, check=True)


GUEST_OUT = "/run/e2e-out"
GUEST_REPO = "/run/e2e-repo"


def prepare(repo: str) -> tuple[str, str]:
    """Mount the out folder; give the guest the writable places a real machine has.

    The out folder (9p tag ``virtme.initmount0``) is mounted at GUEST_OUT and
    the checkout bound at GUEST_REPO before /tmp and /var/tmp get their tmpfs:
    either may lie under /tmp on the host (pytest's tmp_path does), and the
    tmpfs would hide it. Returns (repo, out) as the guest now sees them.
    """
    os.makedirs(GUEST_OUT, exist_ok=True)
    sh("mount", "-t", "9p", "-o", "trans=virtio,version=9p2000.L", "virtme.initmount0",
       GUEST_OUT, check=True)
    os.makedirs(GUEST_REPO, exist_ok=True)
    sh("mount", "--bind", repo, GUEST_REPO, check=True)
    for tmp in ("/tmp", "/var/tmp"):
        sh("mount", "-t", "tmpfs", "-o", "mode=1777", "tmpfs", tmp, check=True)
    # LogsDirectory=bustd (for --kill-log) needs a writable /var/log.
    sh("mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", "/var/log", check=True)
    sh("modprobe", "overlay")
    overlay("/etc")
    overlay("/usr/local/bin")
    shutil.copyfile(f"{GUEST_REPO}/contrib/bustd.service", f"/etc/systemd/system/{UNIT}")
    shutil.copyfile(f"{GUEST_REPO}/contrib/bustd.conf", "/etc/bustd.conf")
    os.chmod("/etc/bustd.conf", 0o644)
    with open("/usr/local/bin/bustd", "w") as f:
        f.write(systemd_cases.wrapper(GUEST_REPO))
    os.chmod("/usr/local/bin/bustd", 0o755)
    return GUEST_REPO, GUEST_OUT


def journal(unit: str, *extra: str) -> str:
    """Return ``journalctl -u unit`` of this boot with ``extra`` options."""
    return str(sh("journalctl", "-b", "-u", unit, "--no-pager", *extra)["out"])


def wait_journal(text: str, timeout: float) -> bool:
    """Wait until bustd's journal holds ``text``; return whether it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in journal(UNIT, "-o", "cat"):
            return True
        time.sleep(1.0)
    return False


def show() -> dict[str, str]:
    """Return the unit's state properties."""
    out = sh("systemctl", "show", UNIT, "-p",
             "ActiveState,SubState,MainPID,NRestarts,ExecMainStatus,Result")["out"]
    return dict(line.split("=", 1) for line in str(out).splitlines() if "=" in line)


def start_as(uid: int, argv: list[str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` as ``uid`` (its own process group), oom_score_adj 0."""
    def drop() -> None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("0")
        if uid:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=drop, cwd="/")


def run(repo: str) -> None:
    """The steps of the module's docstring; facts go into ``results``."""
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("-1000")  # the instrument, not a party
    repo, out = prepare(repo)
    results["guest_paths"] = {"repo": repo, "out": out}
    results["systemd"] = sh("systemctl", "--version")["out"].splitlines()[0]
    results["virt"] = sh("systemd-detect-virt")["out"].strip()
    with open(f"/etc/systemd/system/{UNIT}") as f:
        results["unit_file"] = f.read()
    # 1. Start as README.md says, and wait for "active" and the start line.
    # (enable reloads systemd's units itself: 30-120 s under emulation, the
    # unit files being read over 9p.)
    step("enable-now", sh("systemctl", "enable", "--now", UNIT, timeout=400))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and show().get("ActiveState") != "active":
        time.sleep(0.5)
    results["state_after_start"] = show()
    results["start_line_seen"] = wait_journal(" watching /proc: ", 120)
    results["active_after_s"] = round(time.monotonic() - T0, 1)
    # Processes of other users for bustd to read (and, later, one to kill).
    others = [start_as(NOBODY, ["/usr/bin/python3", "-c", "import time; time.sleep(3600)"]),
              start_as(1, ["/bin/sleep", "3600"])]
    results["other_users_pids"] = [p.pid for p in others]
    # 2. bustd check inside the same sandbox: every /proc/PID readable.
    # systemd-run needs the system bus, which this boot (into one job) has
    # not started.
    step("start-dbus", sh("systemctl", "start", "dbus.service", timeout=120))
    props = systemd_cases.sandbox_properties(results["unit_file"])
    results["sandbox_properties"] = props
    argv = ["systemd-run", "--wait", "--pipe", "--quiet", "--unit", "bustd-check-e2e",
            *(f"--property={p}" for p in props), "/usr/local/bin/bustd", "check", "--json",
            "--top", "0", "--interval", "0.5"]
    check = step("check-in-sandbox", sh(*argv, timeout=180))
    try:
        results["check"] = json.loads(check["out"])
    except ValueError:
        results["check"] = None
    # 2b. The calls of the kill path in the same sandbox (issue 15): pidfds,
    # process_mrelease (not in @system-service), cgroup.kill (under
    # ProtectControlGroups=yes), on the probe's own children and a cgroup
    # made here for it.
    cg = "/sys/fs/cgroup/system.slice/bustd-e2e-probe"
    os.makedirs(cg, exist_ok=True)
    target = start_as(0, ["/bin/sleep", "3600"])
    with open(f"{cg}/cgroup.procs", "w") as f:
        f.write(str(target.pid))
    probe = step("probe-in-sandbox", sh(
        "systemd-run", "--wait", "--pipe", "--quiet", "--unit", "bustd-probe-e2e",
        *(f"--property={p}" for p in props), "/usr/bin/python3",
        f"{repo}/tests/e2e/sandbox_probe.py", cg, timeout=180))
    try:
        results["probe"] = json.loads(probe["out"])
    except ValueError:
        results["probe"] = None
    try:
        target.wait(10)
        results["probe_cgroup_target_exit"] = target.returncode
    except subprocess.TimeoutExpired:
        target.kill()
        target.wait()
        results["probe_cgroup_target_exit"] = "alive"
    try:
        os.rmdir(cg)
    except OSError:
        pass
    # 3. Reload: a changed file applies, a bad one changes nothing.
    with open("/etc/bustd.conf", "a") as f:
        f.write("\n# e2e: a change to apply with systemctl reload\nreport = 600\n")
    step("reload-good", sh("systemctl", "reload", UNIT, timeout=60))
    results["reload_good_seen"] = wait_journal("reloaded /etc/bustd.conf: report=600.0", 60)
    with open("/etc/bustd.conf", "a") as f:
        f.write("psi = lots\n")
    step("reload-bad", sh("systemctl", "reload", UNIT, timeout=60))
    results["reload_bad_seen"] = wait_journal("reload failed, running configuration kept: "
                                              "/etc/bustd.conf:", 60)
    results["state_after_reloads"] = show()
    # 4. A hog of user nobody: bustd must kill it, and stay.
    hog = start_as(NOBODY, ["/usr/bin/tail", "/dev/zero"])
    results["hog_pid"] = hog.pid
    t = time.monotonic()
    try:
        hog.wait(180)
    except subprocess.TimeoutExpired:
        hog.kill()
        hog.wait()
        results["hog_timed_out"] = True
    results["hog_exit"] = hog.returncode
    results["hog_dead_after_s"] = round(time.monotonic() - t, 1)
    results["kill_line_seen"] = wait_journal(f"kill: pid={hog.pid} ", 30)
    time.sleep(3)
    results["state_after_kill"] = show()
    results["journal_warning"] = journal(UNIT, "-p", "warning", "-o", "cat")
    results["journal_json"] = [json.loads(line) for line in
                               journal(UNIT, "-o", "json").splitlines() if line.startswith("{")]
    # 5. The unit as systemd judges it.
    step("verify", sh("systemd-analyze", "verify", f"/etc/systemd/system/{UNIT}", timeout=120))
    step("security", sh("systemd-analyze", "security", "--no-pager", UNIT, timeout=120))
    # 6. Stop: a clean exit.
    step("stop", sh("systemctl", "stop", UNIT, timeout=60))
    results["state_after_stop"] = show()
    for p in others:
        p.kill()
        p.wait()


def main() -> int:
    """Run the test, write the results; returns 0 (the guest then powers off), 2 if misplaced."""
    repo = os.environ.get("BUSTD_E2E_REPO", "")
    out = os.environ.get("BUSTD_E2E_OUT", "")
    with open("/proc/1/comm") as f:
        pid1 = f.read().strip()
    if pid1 != "systemd" or not repo or not out:
        print("systemd_guest.py: refusing to run outside the systemd test guest",
              file=sys.stderr)
        return 2
    note(f"start: repo {repo}, out {out} (in the guest: {GUEST_REPO}, {GUEST_OUT})")
    out = GUEST_OUT
    try:
        run(repo)
    except Exception:
        results["errors"].append(traceback.format_exc())
        note("error: " + traceback.format_exc().strip().splitlines()[-1])
    results["job_s"] = round(time.monotonic() - T0, 1)
    try:
        for name, argv in (("journal.txt", ["journalctl", "-b", "--no-pager"]),
                           ("journal-bustd.txt", ["journalctl", "-b", "-u", UNIT, "--no-pager",
                                                  "-o", "short-monotonic"])):
            with open(f"{out}/{name}", "w") as f:
                f.write(str(sh(*argv)["out"]))
        write_result(out, results)
    except OSError as err:
        note(f"cannot write the results: {err}")
    note("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
