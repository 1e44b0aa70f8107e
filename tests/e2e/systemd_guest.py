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
6. ``systemctl stop bustd``;
7. undoes that install and installs the Debian package the host built
   (``debs.json`` in the out folder) with ``dpkg -i``: enabled, active, the
   packaged runtime with its .pyc, idle memory against the checkout's
   daemon of step 1, ``bustd check``, a hog killed; an edit of
   /etc/bustd.conf, then ``dpkg -i`` of the newer build (the edit kept, the
   service restarted); ``dpkg -r`` (stopped, the conffile kept) and
   ``dpkg -P`` (the conffile gone).

It records every command's output and the journal in result.json (and
journal.txt, journal-bustd.json) in the out folder, judges nothing (the host
does: systemd_cases.judge) and exits 0, so systemd powers the guest off.
Refuses to run unless PID 1 is systemd and the kernel command line names
this test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from tests.e2e import systemd_cases  # noqa: E402
from tests.e2e.guest import read_text, write_result  # noqa: E402

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


IDLE_S = 10.0  # how long a freshly started daemon idles before its memory is read


def idle_memory(main_pid: str) -> dict[str, int]:
    """Return VmRSS, RssAnon and RssFile (KiB) of ``main_pid`` after IDLE_S s of idling.

    Empty if it is gone. RssAnon is the process's own memory (what compiling
    modules at start would add to); RssFile the pages of the interpreter
    and libraries it has touched, shared with every other Python.
    """
    time.sleep(IDLE_S)
    text = read_text(f"/proc/{int(main_pid or 0)}/status")
    return {m.group(1): int(m.group(2)) for m in
            re.finditer(r"^(VmRSS|RssAnon|RssFile):\s+(\d+)", text, re.M)}


def entries_of(pid: str) -> list[dict[str, Any]]:
    """Return the journal entries of bustd.service (this boot) logged by ``pid``."""
    return [e for e in (json.loads(line) for line in journal(UNIT, "-o", "json").splitlines()
                        if line.startswith("{")) if e.get("_PID") == pid]


def wait_entry(pid: str, text: str, timeout: float) -> dict[str, Any] | None:
    """Wait for a journal entry of ``pid`` whose MESSAGE holds ``text``; return it."""
    deadline = time.monotonic() + timeout
    while True:
        found = systemd_cases.first_entry(entries_of(pid), text)
        if found is not None or time.monotonic() >= deadline:
            return found
        time.sleep(1.0)


def dpkg(name: str, *args: str) -> dict[str, Any]:
    """Run ``dpkg ARGS`` as step ``name``, stdin closed: a conffile prompt fails it."""
    return step(name, sh("dpkg", *args, timeout=900, stdin=subprocess.DEVNULL))


def package_state() -> dict[str, Any]:
    """Return what dpkg and systemd say of the package and its unit now."""
    status = sh("dpkg-query", "-W", "-f", "${Version} ${db:Status-Abbrev}", "bustd")
    return {"dpkg": str(status["out"]).strip() if status["rc"] == 0 else "",
            "enabled": str(sh("systemctl", "is-enabled", UNIT)["out"]).strip(),
            "unit": show(), "conf": os.path.exists("/etc/bustd.conf"),
            "command": os.path.exists("/usr/bin/bustd"),
            "wants_link": os.path.lexists(f"/etc/systemd/system/multi-user.target.wants/{UNIT}")}


def wait_active(old_pid: str = "") -> dict[str, str]:
    """Wait (up to 120 s) for the unit to be active with a main PID other than ``old_pid``."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = show()
        if state.get("ActiveState") == "active" and state.get("MainPID") not in ("0", old_pid):
            return state
        time.sleep(0.5)
    return show()


def hog_killed(pid: str) -> dict[str, Any]:
    """Start ``tail /dev/zero`` as nobody; return how it ended and bustd's kill line."""
    hog = start_as(NOBODY, ["/usr/bin/tail", "/dev/zero"])
    t = time.monotonic()
    try:
        hog.wait(180)
        timed_out = False
    except subprocess.TimeoutExpired:
        hog.kill()
        hog.wait()
        timed_out = True
    return {"pid": hog.pid, "exit": hog.returncode, "timed_out": timed_out,
            "dead_after_s": round(time.monotonic() - t, 1),
            "line": wait_entry(pid, f"kill: pid={hog.pid} ", 30)}


def package(out: str) -> None:
    """Install the Debian package the host built, then upgrade, remove and purge it.

    First the checkout's install is undone (unit, config file, wrapper), and
    /usr, /var/lib and /var/cache get writable overlays (dpkg writes there),
    with the host's policy-rc.d (a container's, which forbids starting
    services) hidden, as a real machine has none. Facts go into
    ``results["package"]``.
    """
    facts: dict[str, Any] = {}
    results["package"] = facts
    try:
        with open(f"{out}/debs.json") as f:
            debs = json.load(f)
    except (OSError, ValueError) as err:
        facts["error"] = f"no debs.json from the host: {err}"
        return
    facts["debs"] = debs
    if debs.get("error"):
        return
    first, newer = (f"{out}/{d['file']}" for d in debs["debs"])
    # What `systemctl disable` would do, without its reload of systemd's units
    # (30-120 s under TCG): dpkg's postinst reloads them anyway.
    for path in (f"/etc/systemd/system/multi-user.target.wants/{UNIT}",
                 f"/etc/systemd/system/{UNIT}", "/etc/bustd.conf"):
        os.unlink(path)
    for path in ("/usr", "/var/lib", "/var/cache"):
        overlay(path)  # hides the /usr/local/bin overlay and its wrapper too
    facts["policy_rc_d_hidden"] = os.path.exists("/usr/sbin/policy-rc.d")
    if facts["policy_rc_d_hidden"]:
        os.unlink("/usr/sbin/policy-rc.d")
    facts["wrapper_gone"] = not os.path.exists("/usr/local/bin/bustd")
    # Install: enabled, started, the runtime from dist-packages, compiled.
    dpkg("pkg-install", "-i", first)
    facts["after_install"] = package_state()
    state = wait_active()
    pid = state.get("MainPID", "0")
    facts["installed_pid"] = pid
    facts["start_line"] = wait_entry(pid, " watching /proc: ", 120)
    facts["idle_memory_kib"] = idle_memory(pid)
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            facts["cmdline"] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError as err:
        facts["cmdline"] = f"unreadable: {err}"
    site = "/usr/lib/python3/dist-packages/bustd"
    facts["py"] = sorted(n[:-3] for n in os.listdir(site) if n.endswith(".py"))
    cache = f"{site}/__pycache__"
    facts["pyc"] = sorted(n.split(".")[0] for n in os.listdir(cache)) if os.path.isdir(
        cache) else []
    check = step("pkg-check", sh("/usr/bin/bustd", "check", "--json", "--top", "0",
                                 "--interval", "0.5", timeout=180))
    try:
        facts["check_candidates"] = len(json.loads(check["out"]).get("candidates", []))
    except ValueError:
        facts["check_candidates"] = None
    facts["hog"] = hog_killed(pid)
    time.sleep(3)
    facts["after_kill"] = show()
    # An administrator's edit, then the newer build: the edit stays, the
    # service restarts into the new version.
    edit = "\n# e2e: an administrator's edit, kept across upgrades\nreport = 900\n"
    with open("/etc/bustd.conf", "a") as f:
        f.write(edit)
    facts["edit"] = edit
    dpkg("pkg-upgrade", "-i", newer)
    facts["after_upgrade"] = package_state()
    with open("/etc/bustd.conf") as f:
        facts["conf_kept"] = f.read().endswith(edit)
    state = wait_active(pid)
    facts["upgraded_pid"] = state.get("MainPID", "0")
    facts["upgraded_start_line"] = wait_entry(facts["upgraded_pid"], " watching /proc: ", 120)
    facts["old_exit_line"] = wait_entry(pid, "bustd exiting after ", 10)
    # Remove: stopped, the config kept; purge: the config gone.
    dpkg("pkg-remove", "-r", "bustd")
    facts["after_remove"] = package_state()
    facts["upgraded_pid_alive"] = os.path.exists(f"/proc/{facts['upgraded_pid']}")
    dpkg("pkg-purge", "-P", "bustd")
    facts["after_purge"] = package_state()


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
    results["idle_memory_kib"] = idle_memory(results["state_after_start"].get("MainPID", "0"))
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
    # 7. The Debian package, installed, upgraded, removed and purged.
    package(out)


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
