"""``bustd check``: the report on fake trees and on the real /proc, never a signal.

Every way to signal a process is replaced by a function that fails the test
(``no_signals`` below), for every test in this file. The JSON document is
validated against docs/check-schema.json with a pinned jsonschema; the text
must fit in 80 columns whatever the names.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import jsonschema
import pytest

from bustd import check, kill, sig
from bustd.config import DEFAULTS, Config
from tests.fakeproc import FAKE_PID, PAGE_KIB, FakeProc

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "docs" / "check-schema.json").read_text())
P = FAKE_PID
SELF = FAKE_PID - 1
TOTAL = 8 << 20  # KiB
SWAP = 2 << 20
PF_KTHREAD = 0x00200000


def refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("bustd check tried to signal a process")


@pytest.fixture(autouse=True)
def no_signals(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every signalling function fails the test, in the check and in kill.py."""
    for name in ("kill", "killpg"):
        monkeypatch.setattr(os, name, refuse)
    for name in ("pidfd_send_signal", "pthread_kill", "raise_signal"):
        monkeypatch.setattr(signal, name, refuse)
    monkeypatch.setattr(sig, "pidfd_send_signal", refuse)
    for name in dir(kill):
        if not name.startswith("_") and callable(getattr(kill, name)) \
                and getattr(getattr(kill, name), "__module__", "") == "bustd.kill":
            monkeypatch.setattr(kill, name, refuse)


def validate(doc: dict[str, Any]) -> None:
    """Fail unless ``doc`` is valid under docs/check-schema.json."""
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)


class Tree:
    """A fake machine: memory, zram swap, PSI, and processes of every kind."""

    def __init__(self, tmp: Path, avail_pct: float = 50.0, zram_used: int = 1 << 20,
                 swapin_mib_s: float = 12.0, swapout_mib_s: float = 12.0) -> None:
        self.fake = FakeProc(tmp / "proc")
        self.pswpin = self.pswpout = 1000
        self.swapin_pages = int(swapin_mib_s * 1024 // PAGE_KIB)
        self.swapout_pages = int(swapout_mib_s * 1024 // PAGE_KIB)
        self.fake.set_vmstat(self.pswpin, self.pswpout)
        self.sys = tmp / "sys"
        self.now = 100.0
        self.some, self.full = 5_000_000, 1_000_000
        self.fake.set_meminfo(TOTAL, int(TOTAL * avail_pct / 100), SWAP, SWAP - zram_used)
        self.fake.write("swaps", b"Filename\tType\tSize\tUsed\tPriority\n"
                                 b"/dev/zram0 partition\t%d\t%d\t100\n" % (SWAP, zram_used))
        mm = self.sys / "block" / "zram0"
        mm.mkdir(parents=True)
        # 1 GiB stored in 512 MiB of RAM: ratio 2, each free KiB worth half a KiB.
        (mm / "mm_stat").write_text(f"{zram_used * 1024} {zram_used * 400} "
                                    f"{zram_used * 512} 0 0 0 0 0 0\n")
        self.fake.set_pressure(self.some, self.full)
        f = self.fake
        f.add(1, b"init", oom_score=0, rss_kib=8 << 10)
        f.add(P, b"hog", oom_score=600, rss_kib=2 << 20, uid=0)
        f.add(P + 1, b"idle", oom_score=700, rss_kib=3 << 20, uid=0, swap_kib=4096)
        # Name rules protect only what no user can forge (issue 13): real
        # root-owned executables stand in for sshd and postgres here.
        f.add(P + 2, b"sshd", oom_score=900, rss_kib=9 << 10, exe=b"/usr/bin/true")
        f.add(P + 3, b"db", oom_score=950, oom_score_adj=-1000, rss_kib=4 << 20)
        f.add(P + 4, b"postgres", oom_score=990, rss_kib=1 << 20, exe=b"/usr/bin/env")
        f.add(P + 5, b"kworker/0:1", flags=PF_KTHREAD, oom_score=0, rss_kib=0)
        f.add(P + 6, b"dead", state=b"Z", oom_score=0, rss_kib=0)
        f.add(P + 7, b"bustd", oom_score=1, rss_kib=9 << 10,
              cmdline=b"/usr/bin/python3\0-S\0-I\0/opt/x/bustd/lean.py\0-c\0/etc/b.conf\0",
              exe=b"/usr/bin/python3.11")
        f.add(P + 8, b"gone", oom_score=5)
        f.remove_file(P + 8, "stat")  # listed, but its files cannot be read
        f.add(SELF, b"bustd", oom_score=2, rss_kib=20 << 10)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        """One interval passes: 30 % some stall, 10 % full, the hog grows 512 MiB."""
        self.now += seconds
        self.some += int(seconds * 300_000)
        self.full += int(seconds * 100_000)
        self.fake.set_pressure(self.some, self.full)
        self.fake.set_status_sizes(P, (2 << 20) + (512 << 10))
        self.pswpin += int(seconds * self.swapin_pages)
        self.pswpout += int(seconds * self.swapout_pages)
        self.fake.set_vmstat(self.pswpin, self.pswpout)

    def gather(self, interval: float = 1.0, top: int = 10, **settings: object
               ) -> dict[str, Any]:
        cfg = Config(proc_root=self.fake.root, sys_root=str(self.sys), **settings)
        return check.gather(cfg, interval, top, None, self.sleep, self.clock,
                            lambda: 1.7e9, SELF)


def test_report_of_a_quiet_machine(tmp_path: Path) -> None:
    r = Tree(tmp_path).gather(unkillables="true", ignore="^env$")
    validate(r)
    assert r["memory"] == {"total_kib": TOTAL, "available_kib": TOTAL // 2,
                           "available_percent": 50.0, "user_kib": TOTAL}  # no AnonPages
    assert r["held"] is not None and r["held"]["shmem_kib"] == 0
    # zram: 1 GiB free slots worth half as much; 1 GiB stored in 512 MiB.
    assert r["swap"]["free_kib"] == 1 << 20
    assert r["swap"]["effective_free_kib"] == 512 << 10
    assert r["swap"]["zram"] == [{
        "name": "zram0", "size_kib": SWAP, "used_kib": 1 << 20, "stored_kib": 1 << 20,
        "ram_kib": 512 << 10, "limit_kib": 0, "ratio": 2.0, "worth": 0.5,
        "room_kib": 1 << 20}]
    p = r["pressure"]
    assert (p["some_percent"], p["full_percent"], p["stall_percent"]) == (30.0, 10.0, 30.0)
    assert r["interval_s"] == 1.0
    assert r["decision"] == {
        "action": "none", "victim_pid": None, "note": None,
        "reason": "MemAvailable 4.0 GiB > 819.2 MiB; some stall 30% but MemAvailable "
                  "4.0 GiB > 1.2 GiB (--psi-mem)"}
    assert not r["watching"]
    assert r["thresholds"]["sigterm"] == {"mem_kib": TOTAL // 10, "swap_kib": SWAP // 10}
    assert r["settings"]["unkillables"] == "true"
    # Kill order: the hog grew 512 MiB in a second and outranks the larger idle one.
    assert [c["pid"] for c in r["candidates"]] == [P, P + 1]
    hog, idle = r["candidates"]
    assert (hog["name"], hog["exe"], hog["user"], hog["uid"]) == ("hog", "/usr/bin/hog",
                                                                 "root", 0)
    assert (hog["rss_kib"], hog["growth_kib"], hog["growth_s"]) == (
        (2 << 20) + (512 << 10), 512 << 10, 1.0)
    assert hog["score"] > idle["score"] == 700  # no growth: its oom_score
    assert (idle["swap_kib"], idle["growth_kib"], idle["oom_score_adj"]) == (4096, 0, 0)
    assert r["candidates_total"] == 2
    skipped = {(s["pid"], s["kind"]): s["reason"] for s in r["skipped"]}
    assert skipped == {
        (P + 2, "protected"): "matches --unkillables 'true'",
        (P + 3, "protected"): "has oom_score_adj -1000",
        (P + 4, "protected"): "matches --ignore '^env$'",
        (P + 7, "bustd"): "is a running bustd (a daemon never kills itself)",
        (SELF, "self"): "is this check",
        (1, "pid1"): "is PID 1",
        (P + 5, "kernel_thread"): "is a kernel thread",
        (P + 6, "zombie"): "is a zombie: its memory is already freed",
        (P + 8, "unreadable"): "its stat cannot be read",
    }
    # Every process is accounted for exactly once.
    listed = [c["pid"] for c in r["candidates"]] + [s["pid"] for s in r["skipped"]]
    assert sorted(listed) == sorted(int(n) for n in os.listdir(tmp_path / "proc")
                                    if n.isdigit())


def test_pressure_that_lasted_long_enough_decides_sigterm(tmp_path: Path) -> None:
    r = Tree(tmp_path, avail_pct=12).gather(psi_duration=0.5)
    validate(r)
    assert r["watching"]
    assert r["pressure"]["held_s"] == 1.0
    assert r["decision"] == {
        "action": "SIGTERM", "victim_pid": P, "note": None,
        "reason": "memory some stall 30% >= 25% and swap-in 12.0 MiB/s (1.00 of swap-out) "
                  "for 1.0 s with MemAvailable 983.0 MiB (12.0%) <= 15%"}


def test_pressure_seen_shorter_than_its_duration_is_explained(tmp_path: Path) -> None:
    r = Tree(tmp_path, avail_pct=12).gather()
    assert r["decision"]["action"] == "none"
    assert r["decision"]["reason"].endswith(
        "some stall 30% >= 25% seen for 1.0 s; the daemon acts once it has lasted 5 s")


def test_stall_while_pages_only_go_out_is_not_thrashing(tmp_path: Path) -> None:
    r = Tree(tmp_path, avail_pct=12, swapin_mib_s=0.0).gather()
    validate(r)
    assert r["pressure"]["swapin_mib_s"] == 0.0 and r["pressure"]["held_s"] == 0.0
    assert r["decision"]["reason"].endswith(
        "some stall 30% >= 25% but swap-in only 0.0 MiB/s < 1 (--swapin-rate): pages going "
        "out to swap, not thrashing")


def test_swap_ins_well_below_the_swap_outs_are_growth_not_thrashing(tmp_path: Path) -> None:
    # Issue 14: a program growing fast into zram re-reads some of its pages
    # (scenario 10: 6-22 MiB/s in, at most 0.49 of what went out).
    r = Tree(tmp_path, avail_pct=12, swapin_mib_s=12.0, swapout_mib_s=30.0).gather()
    validate(r)
    assert r["pressure"]["swapout_mib_s"] == 30.0 and r["pressure"]["held_s"] == 0.0
    assert r["decision"]["reason"].endswith(
        "some stall 30% >= 25% but swap-in 12.0 MiB/s is under 0.6 of swap-out 30.0 MiB/s: "
        "more pages going out than coming back (a program growing into swap), not thrashing")
    r = Tree(tmp_path / "b", avail_pct=12, swapin_mib_s=20.0, swapout_mib_s=30.0).gather(
        psi_duration=1.0)
    assert r["decision"]["action"] == "SIGTERM"
    assert "swap-in 20.0 MiB/s (0.67 of swap-out)" in r["decision"]["reason"]


def test_memory_held_outside_processes_is_named(tmp_path: Path) -> None:
    tree = Tree(tmp_path, avail_pct=3)
    tree.fake.set_meminfo(TOTAL, TOTAL * 3 // 100, SWAP, 0, anon=TOTAL // 10,
                          shmem=TOTAL * 6 // 10, slab=TOTAL // 100)
    r = tree.gather(psi_cutoff=0.0)
    validate(r)
    assert r["held"]["shmem_kib"] == TOTAL * 6 // 10 and r["held"]["significant"]
    assert r["memory"]["user_kib"] == TOTAL * 3 // 100 + TOTAL // 10
    text = check.to_text(r)
    assert "outside   " in text and "the reason memory is short: Shmem" in text


def test_memory_and_zram_exhausted_decide_sigkill_and_a_dry_run_says_so(
        tmp_path: Path) -> None:
    # zram full: SwapFree 0; MemAvailable 3 % < 5 %.
    r = Tree(tmp_path, avail_pct=3, zram_used=SWAP).gather(dry_run=True, psi_cutoff=0.0)
    validate(r)
    assert r["swap"]["effective_free_kib"] == 0
    d = r["decision"]
    assert (d["action"], d["victim_pid"]) == ("SIGKILL", P)
    assert d["reason"].startswith("MemAvailable 245.8 MiB (3.0%) <= 409.6 MiB, SwapFree 0 KiB")
    assert d["note"] == "dry run: the daemon would only log the kill line"
    assert r["pressure"]["stall_percent"] == 30.0  # read, though --psi 0 ignores it
    text = check.to_text(r)
    assert "decision  SIGKILL to pid 5000000 (hog): MemAvailable 245.8 MiB" in text
    assert "ranking   by growth, DRY RUN" in text


def test_nobody_killable_is_said(tmp_path: Path) -> None:
    t = Tree(tmp_path, avail_pct=3, zram_used=SWAP)
    for pid in (P, P + 1):
        t.fake.set_exe(pid, b"/usr/bin/true")
    r = t.gather(unkillables="true|env")
    assert r["decision"]["note"] == "no process may be killed"
    assert r["decision"]["victim_pid"] is None
    assert r["candidates"] == [] and r["candidates_total"] == 0
    assert "decision  SIGKILL: MemAvailable" in check.to_text(r)


def test_interval_zero_reads_once(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    r = t.gather(interval=0)
    validate(r)
    assert t.now == 100.0  # never slept
    assert r["interval_s"] == 0.0
    assert r["pressure"]["some_percent"] is None and r["pressure"]["held_s"] == 0.0
    assert all(c["growth_kib"] is None and c["growth_s"] is None for c in r["candidates"])
    assert "no stall rate (PSI unavailable, or --interval 0)" in r["decision"]["reason"]
    # Without growth the larger oom_score goes first (db, at -1000, is skipped).
    assert [c["pid"] for c in r["candidates"]][:2] == [P + 4, P + 2]


def test_top_limits_the_list_not_the_count(tmp_path: Path) -> None:
    r = Tree(tmp_path).gather(top=1)
    assert [c["pid"] for c in r["candidates"]] == [P]
    assert r["candidates_total"] == 4  # sshd and postgres too: no rules given


def test_kill_pgroup_lists_the_group(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    t.fake.add(P + 20, b"helper", pgrp=P, oom_score=10)
    t.fake.add(P + 21, b"helper2", pgrp=P, oom_score=11, oom_score_adj=-1000)
    r = t.gather(kill_pgroup=True)
    validate(r)
    assert r["candidates"][0]["group"] == [P + 20]
    assert "(+1 of its group)" in check.to_text(r)


def test_no_psi_and_no_swap(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path / "proc")
    fake.set_meminfo(TOTAL, TOTAL // 2)
    fake.add(P, b"only", oom_score=10)
    cfg = Config(proc_root=fake.root)
    r = check.gather(cfg, 0.01, 10, "/etc/x.conf", lambda s: None, self_pid=SELF)
    validate(r)
    assert r["pressure"]["available"] is False
    assert r["pressure"]["error"] == "No such file or directory"
    assert r["swap"] == {"total_kib": 0, "free_kib": 0, "effective_free_kib": 0,
                         "zram": [], "zram_error": None}
    text = check.to_text(r)
    assert "pressure  PSI not available (No such file or directory)" in text
    assert "swap      none" in text and "config /etc/x.conf" in " ".join(text.split())


def test_unreadable_pressure_is_named_and_swap_traffic_goes_unmeasured(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    t.fake.write("pressure/memory", b"some garbage\n")
    r = t.gather()
    validate(r)
    p = r["pressure"]
    assert (p["available"], p["error"]) == (False, "pressure: malformed item b'garbage'")
    # As in the daemon, whose sensors count swap traffic only beside the stall.
    assert (p["swapin_mib_s"], p["swapout_mib_s"], p["held_s"]) == (None, None, 0.0)
    assert "pressure  PSI not available (pressure: malformed item b'garbage')" in \
        check.to_text(r)


def test_unreadable_zram_is_reported(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    t.fake.write("swaps", b"Filename\n/dev/zram0 garbage\n")
    r = t.gather()
    validate(r)
    assert r["swap"]["zram"] == [] and "malformed" in (r["swap"]["zram_error"] or "")
    assert "zram unreadable" in check.to_text(r)


def test_settings_in_the_schema_are_settings() -> None:
    props = SCHEMA["properties"]["settings"]["properties"]
    assert set(props) <= set(DEFAULTS)
    assert set(SCHEMA["properties"]["settings"]["required"]) == set(props)


def test_the_schema_refuses_what_it_should(tmp_path: Path) -> None:
    """The checker can fail: a field missing, one added, a wrong type or kind."""
    good = Tree(tmp_path).gather()
    validate(good)
    breakages: list[Callable[[dict[str, Any]], object]] = [
        lambda d: d.pop("decision"),
        lambda d: d["memory"].update(extra=1),
        lambda d: d["candidates"][0].update(pid="5"),
        lambda d: d["skipped"][0].update(kind="friend"),
        lambda d: d["decision"].update(action="SIGSTOP"),
        lambda d: d["swap"]["zram"][0].pop("ratio"),
        lambda d: d["pressure"].update(some_percent=101),
        lambda d: d.update(schema="bustd-check/2"),
    ]
    for breakage in breakages:
        doc = json.loads(json.dumps(good))
        breakage(doc)
        with pytest.raises(jsonschema.ValidationError):
            validate(doc)


HOSTILE = [b"a\nb\x1b[31mred", b"()()()())))(((()))", b"\xff\xfe bad utf8", b"x" * 15,
           "日本語の名前".encode()]


def test_text_fits_80_columns_whatever_the_names(tmp_path: Path) -> None:
    t = Tree(tmp_path)
    for i, name in enumerate(HOSTILE):
        t.fake.add(P + 30 + i, name, oom_score=650 + i, uid=4_000_000 + i,
                   exe=b"/opt/" + b"very-long-folder-name/" * 12 + name)
    long_name = "program-with-a-" + "long-" * 20 + "name"
    t.fake.add(P + 50, b"program-with-a", oom_score=5, exe=b"/usr/bin/" + long_name.encode())
    r = t.gather(unkillables=f"{long_name[:-2]}*|sshd", top=0)
    text = check.to_text(r)
    lines = text.splitlines()
    assert max(check.width(line) for line in lines) <= 80, max(lines, key=check.width)
    assert all(line.isprintable() for line in lines)
    assert "4000000" in text  # a uid without a name shows as its number
    # Its name matches, but /usr/bin holds no such file here: not protected, and
    # the check says why under its line.
    assert "        matches --unkillables 'program-with-a-long-long-" in text
    assert "日本語の名前" in text and "a\\nb\\x1b[31mred" in text
    validate(r)
    names = {c["name"] for c in r["candidates"]}
    assert "a\nb\x1b[31mred" in names and "\\xff\\xfe bad utf8" in names


def test_real_proc_without_signals() -> None:
    """The real machine, read-only: valid, self and PID 1 accounted for, fits 80 columns."""
    r = check.gather(Config(), 0.2, 0)
    validate(r)
    kinds = {s["pid"]: s["kind"] for s in r["skipped"]}
    assert kinds[os.getpid()] == "self"
    assert kinds.get(1) in ("pid1", None)  # PID 1 may be unreadable to us only in theory
    assert all(len(line) <= 80 for line in check.to_text(r).splitlines())
    assert json.loads(check.to_json(r)) == r


def test_check_never_loads_the_kill_path() -> None:
    """`bustd check` runs without kill.py ever being imported (it has no way to signal)."""
    code = ("import sys; from bustd import cli; rc = cli.main(['check', '--interval', '0',"
            " '--json']); assert rc == 0, rc; bad = {'bustd.kill', 'signal', 'subprocess'}"
            " & set(sys.modules); assert not bad, bad")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    validate(json.loads(out.stdout))


def test_wrapping_never_parts_a_number_from_its_unit() -> None:
    text = "x" * 63 + " 22.4 GiB and 4 s, then 10 MiB"  # "22.4" alone would fit
    lines = check._field("decision", text)
    assert lines == ["decision  " + "x" * 63, "          22.4 GiB and 4 s, then 10 MiB"]


def test_a_check_not_run_as_root_says_so(tmp_path: Path) -> None:
    r = Tree(tmp_path).gather()
    assert r["euid"] == os.geteuid()
    r["euid"] = 65534
    validate(r)
    assert ("note      run as uid 65534, not root: other users' executables may be "
            "unreadable") in check.to_text(r)
    r["euid"] = 0
    assert "not root" not in check.to_text(r)


def test_a_cgroup_is_reported_as_the_daemon_sees_it(tmp_path: Path) -> None:
    """--cgroup: the cgroup's limit, use and swap, its processes only (the machine is fine)."""
    from tests.fakecgroup import FakeCgroup
    t = Tree(tmp_path)
    cg = FakeCgroup(tmp_path / "cgroup")
    t.fake.write("self/mountinfo", cg.mountinfo())
    cg.add("work", [], current_mib=96, max_mib=100, swap_current_mib=0, swap_max_mib=0)
    cg.add("work/a", [P])
    cg.add("elsewhere", [P + 1, P + 2, 1])
    for pid, rel in ((P, "work/a"), (P + 1, "elsewhere"), (P + 2, "elsewhere")):
        t.fake.write(f"{pid}/cgroup", f"0::/{rel}\n".encode())
    r = t.gather(cgroup=cg.path("work"))
    validate(r)
    work = cg.path("work")
    assert r["cgroup"] == {"path": work, "current_kib": 96 << 10, "limit_kib": 100 << 10,
                           "limit_name": "memory.max", "reclaimable_kib": 0}
    assert r["memory"] == {"total_kib": 100 << 10, "available_kib": 4 << 10,
                           "available_percent": 4.0, "user_kib": 100 << 10}
    assert (r["swap"]["total_kib"], r["swap"]["effective_free_kib"]) == (0, 0)
    # Only the cgroup's process is a candidate: the larger idle one lives elsewhere.
    assert [c["pid"] for c in r["candidates"]] == [P]
    assert r["decision"]["action"] == "SIGKILL" and r["decision"]["victim_pid"] == P
    assert r["decision"]["reason"].startswith(f"cgroup {work} available 4.0 MiB (4.0%) <= ")
    text = check.to_text(r)
    assert "96.0 MiB in use (0 KiB reclaimable)," in text and "memory.max 100.0 MiB" in text
    assert "SIGKILL   at cgroup available <= 5.0 MiB and swap free <= 0 KiB" in text
    assert "memory    cgroup available 4.0 MiB of 100.0 MiB (4.0%)" in text
    assert max(check.width(line) for line in text.splitlines()) <= 80
    # The machine's own report names no cgroup.
    assert t.gather()["cgroup"] is None


def test_a_cgroup_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    from bustd.cgroup import CgroupError
    t = Tree(tmp_path)
    with pytest.raises(CgroupError, match=f"cgroup {tmp_path}/nowhere: "):
        t.gather(cgroup=str(tmp_path / "nowhere"))
