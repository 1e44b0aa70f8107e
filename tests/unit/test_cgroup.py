"""cgroup v2 (issue 9): the parsers on literal text, the readers on fake hierarchies.

Nothing here touches a real cgroup or signals anything: the hierarchies are
folders built by tests/fakecgroup.py, and cgroup.kill there is a plain file.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from bustd import cgroup, cgroupkill
from bustd.cgroup import (
    CgroupError,
    Figures,
    cgroup_mount,
    leaf_of,
    members,
    meminfo_of,
    parse_limit,
    parse_mountinfo,
    parse_proc_cgroup,
    parse_procs,
    parse_stat,
    parse_value,
)
from bustd.cgroupkill import Units, refusal
from bustd.meminfo import MemInfo
from bustd.optvalues import fstype_of, validate
from bustd.procfs import ProcFS
from tests.fakecgroup import MIB, FakeCgroup, stat_text
from tests.fakeproc import FAKE_PID, FakeProc

GIB_KIB = 1 << 20
MACHINE = MemInfo(8 * GIB_KIB, 6 * GIB_KIB, 2 * GIB_KIB, GIB_KIB)


# -- parsers --------------------------------------------------------------

def test_parse_value_and_limit() -> None:
    assert parse_value(b"104857600\n", "memory.current") == 102400
    assert parse_value(b"1023", "memory.current") == 0
    assert parse_limit(b"max\n", "memory.max") is None
    assert parse_limit(b"268435456\n", "memory.max") == 256 * 1024
    for bad in (b"", b"-1\n", b"12 MiB\n", b"maximum\n", b"0x10\n"):
        with pytest.raises(ValueError, match=r"memory\.max"):
            parse_limit(bad, "memory.max")


def test_parse_stat_counts_file_cache_and_reclaimable_slab() -> None:
    text = stat_text(anon=50 * MIB, active_file=3 * MIB, inactive_file=4 * MIB,
                     slab_reclaimable=MIB, refault_anon=77)
    assert parse_stat(text) == (8 * 1024, 77)


def test_parse_stat_swapins_prefers_pswpin_then_refaults_then_none() -> None:
    assert parse_stat(stat_text(refault_anon=5, pswpin=9))[1] == 9
    assert parse_stat(stat_text(refault_anon=5))[1] == 5
    assert parse_stat(stat_text(refault_anon=None))[1] is None
    assert parse_stat(b"") == (0, None)


@pytest.mark.parametrize("bad", [b"anon\n", b"anon 1 2\n", b"anon -5\n", b"file x\n"])
def test_parse_stat_rejects_malformed_lines(bad: bytes) -> None:
    with pytest.raises(ValueError, match=r"memory\.stat"):
        parse_stat(b"anon 4096\n" + bad)


def test_parse_procs() -> None:
    assert parse_procs(b"1\n42\n4194304\n") == [1, 42, 4194304]
    assert parse_procs(b"") == []
    with pytest.raises(ValueError, match=r"cgroup\.procs"):
        parse_procs(b"12\nabc\n")


def test_parse_proc_cgroup_on_unified_and_hybrid_hosts() -> None:
    assert parse_proc_cgroup(b"0::/system.slice/foo.service\n") == "/system.slice/foo.service"
    hybrid = (b"12:memory:/user.slice\n11:pids:/user.slice\n1:name=systemd:/user.slice\n"
              b"0::/user.slice/user-1000.slice/session-2.scope\n")
    assert parse_proc_cgroup(hybrid) == "/user.slice/user-1000.slice/session-2.scope"
    assert parse_proc_cgroup(b"0::/\n") == "/"
    assert parse_proc_cgroup(b"4:memory:/a\n") is None  # cgroup v1 only
    assert parse_proc_cgroup(b"0::/gone (deleted)\n") is None
    assert parse_proc_cgroup(b"0::relative\n") is None
    assert parse_proc_cgroup(b"") is None


MOUNTINFO = (
    b"22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
    b"24 22 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw\n"
    b"30 24 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755\n"
    b"31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n"
    b"32 30 0:28 / /sys/fs/cgroup/memory rw,nosuid shared:11 - cgroup cgroup rw,memory\n"
    b"40 22 0:40 / /mnt/with\\040space rw - tmpfs none rw\n"
    b"garbage line\n"
)


def test_parse_mountinfo_and_the_cgroup2_mount() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert ("/", "/mnt/with space", "tmpfs") in mounts
    assert len(mounts) == 6
    assert cgroup_mount(mounts) == ("/", "/sys/fs/cgroup/unified")
    assert cgroup_mount(parse_mountinfo(MOUNTINFO[:60])) is None
    assert fstype_of("/sys/fs/cgroup/unified/a/b", mounts) == "cgroup2"
    assert fstype_of("/sys/fs/cgroup/unified", mounts) == "cgroup2"
    assert fstype_of("/sys/fs/cgroup/memory/x", mounts) == "cgroup"
    assert fstype_of("/sys/fs/cgroup/unifiedX", mounts) == "tmpfs"
    assert fstype_of("/home", mounts) == "ext4"


def test_leaf_of_maps_the_hierarchy_path_under_the_mount() -> None:
    mount = ("/", "/sys/fs/cgroup")
    assert (leaf_of(b"0::/system.slice/a.service\n", mount)
            == "/sys/fs/cgroup/system.slice/a.service")
    assert leaf_of(b"0::/\n", mount) == "/sys/fs/cgroup"
    assert leaf_of(b"0::/a\n", None) is None
    # A mount of a sub-tree (a container's view): paths outside it are unknown.
    sub = ("/lxc/c1", "/sys/fs/cgroup")
    assert leaf_of(b"0::/lxc/c1/app\n", sub) == "/sys/fs/cgroup/app"
    assert leaf_of(b"0::/lxc/c1\n", sub) == "/sys/fs/cgroup"
    assert leaf_of(b"0::/lxc/c10/app\n", sub) is None
    assert leaf_of(b"0::/other\n", sub) is None


# -- the table of cgroup.py: cgroup figures as a MemInfo ------------------

def fig(current_mib: float, limit_mib: float | None, reclaimable_mib: float = 0,
        swap_current_mib: float = 0, swap_max_mib: float | None = None) -> Figures:
    def kib(mib: float | None) -> int | None:
        return None if mib is None else int(mib * 1024)

    return Figures("/cg", int(current_mib * 1024), kib(limit_mib),
                   "memory.max" if limit_mib is not None else "",
                   int(reclaimable_mib * 1024), None, int(swap_current_mib * 1024),
                   kib(swap_max_mib))


def test_meminfo_of_a_limited_cgroup() -> None:
    m = meminfo_of(fig(400, 512, reclaimable_mib=30), MACHINE)
    assert (m.total, m.available) == (512 * 1024, (112 + 30) * 1024)
    assert m.scope == "/cg"
    # Over its limit (memory.max lowered under it): nothing left but the cache.
    m = meminfo_of(fig(600, 512, reclaimable_mib=20), MACHINE)
    assert m.available == 20 * 1024
    # Reclaimable can never make more available than the limit.
    assert meminfo_of(fig(500, 512, reclaimable_mib=500), MACHINE).available == 512 * 1024


def test_meminfo_of_a_cgroup_without_a_limit_is_the_machine() -> None:
    m = meminfo_of(fig(400, None), MACHINE)
    assert (m.total, m.available) == (MACHINE.total, MACHINE.available)
    # A limit the machine could never give counts as none.
    m = meminfo_of(fig(400, 64 * 1024), MACHINE)
    assert (m.total, m.available) == (MACHINE.total, MACHINE.available)


def test_meminfo_of_swap_limits() -> None:
    no_accounting = meminfo_of(fig(100, 512), MACHINE)
    assert (no_accounting.swap_total, no_accounting.swap_free) == (2 * GIB_KIB, GIB_KIB)
    capped = meminfo_of(fig(100, 512, swap_current_mib=100, swap_max_mib=256), MACHINE)
    assert (capped.swap_total, capped.swap_free) == (256 * 1024, 156 * 1024)
    # The machine's free swap bounds what the cgroup may still use.
    tight = MemInfo(MACHINE.total, MACHINE.available, 2 * GIB_KIB, 50 * 1024)
    m = meminfo_of(fig(100, 512, swap_current_mib=10, swap_max_mib=256), tight)
    assert m.swap_free == 50 * 1024
    none = meminfo_of(fig(100, 512, swap_max_mib=0), MACHINE)
    assert (none.swap_total, none.swap_free) == (0, 0)
    over = meminfo_of(fig(100, 512, swap_current_mib=300, swap_max_mib=256), MACHINE)
    assert over.swap_free == 0


# -- readers on a fake hierarchy -------------------------------------------

@pytest.fixture
def cg(tmp_path: Path) -> FakeCgroup:
    return FakeCgroup(tmp_path / "cgroup")


def test_cgroup_reads_max_then_high_then_none(cg: FakeCgroup) -> None:
    cg.add("svc", current_mib=100, max_mib=256, high_mib=200, file_mib=10)
    group = cgroup.Cgroup(cg.path("svc"))
    try:
        f = group.read()
        assert (f.current_kib, f.limit_kib, f.limit_name) == (100 * 1024, 256 * 1024,
                                                              "memory.max")
        assert f.reclaimable_kib == 10 * 1024
        assert (f.swap_current_kib, f.swap_max_kib) == (0, None)
        cg.set_memory("svc", current_mib=120, max_mib=None, high_mib=200)
        f = group.read()  # the same descriptors see the new text
        assert (f.current_kib, f.limit_kib, f.limit_name) == (120 * 1024, 200 * 1024,
                                                              "memory.high")
        cg.set_memory("svc", current_mib=120)
        f = group.read()
        assert (f.limit_kib, f.limit_name) == (None, "")
    finally:
        group.close()


def test_cgroup_without_swap_accounting(cg: FakeCgroup) -> None:
    cg.add("svc", swap_current_mib=None)
    group = cgroup.Cgroup(cg.path("svc"))
    try:
        assert group.read().swap_max_kib is None
    finally:
        group.close()


def test_cgroup_gone_raises_and_reopens_when_back(cg: FakeCgroup) -> None:
    cg.add("svc", current_mib=5, max_mib=64)
    group = cgroup.Cgroup(cg.path("svc"))
    group.read()
    group.close()
    cg.remove("svc")
    with pytest.raises(FileNotFoundError):
        group.read()
    assert group.fds == {}
    cg.add("svc", current_mib=7, max_mib=64)
    assert group.read().current_kib == 7 * 1024
    group.close()


def test_members_lists_the_whole_subtree_with_each_cgroup(cg: FakeCgroup) -> None:
    top = cg.add("work", [11])
    cg.add("work/a", [21, 22])
    cg.add("work/a/deep", [31])
    cg.add("work/b", [41])
    cg.add("other", [51])
    assert members(top) == {11: top, 21: top + "/a", 22: top + "/a", 31: top + "/a/deep",
                            41: top + "/b"}
    assert members(cg.path("work/b")) == {41: cg.path("work/b")}


def test_members_skips_a_sub_cgroup_without_procs_but_not_the_top(cg: FakeCgroup) -> None:
    top = cg.add("work", [11])
    cg.add("work/a", [21])
    os.unlink(os.path.join(cg.path("work/a"), "cgroup.procs"))  # removed while listing
    assert members(top) == {11: top}
    with pytest.raises(FileNotFoundError):
        members(cg.path("nothere"))
    cg.write("work", "cgroup.procs", b"11\nnot-a-pid\n")
    with pytest.raises(ValueError):
        members(top)


def test_refusal_never_the_root_bustd_or_pid_1(cg: FakeCgroup) -> None:
    leaf = cg.add("svc", [FAKE_PID])
    assert refusal(leaf, {FAKE_PID: leaf}, self_pid=FAKE_PID - 1) is None
    assert refusal(leaf, {FAKE_PID: leaf, FAKE_PID - 1: leaf}, FAKE_PID - 1) == (
        f"it holds bustd itself (pid {FAKE_PID - 1})")
    assert refusal(leaf, [1, FAKE_PID], FAKE_PID - 1) == "it holds PID 1"
    assert refusal(cg.root, {}, FAKE_PID - 1) == "it is the root cgroup"
    assert refusal(cg.path("gone"), {}, FAKE_PID - 1) == "it is gone"


def test_kill_writes_1_to_cgroup_kill(cg: FakeCgroup) -> None:
    leaf = cg.add("svc", [FAKE_PID])
    cgroupkill.kill(leaf)
    assert cg.killed("svc")
    old = cg.add("old", [FAKE_PID], kill=False)
    with pytest.raises(FileNotFoundError):
        cgroupkill.kill(old)


def test_validate(cg: FakeCgroup, tmp_path: Path) -> None:
    leaf = cg.add("svc", [FAKE_PID], max_mib=64)
    assert validate(leaf + "/", psi=True, mounts=None) == leaf
    mounts = parse_mountinfo(cg.mountinfo())
    assert validate(leaf, psi=True, mounts=mounts) == leaf
    other = parse_mountinfo(b"22 1 254:1 / / rw - ext4 /dev/vda1 rw\n")
    with pytest.raises(CgroupError, match=r"not on a cgroup v2 file system \(it is on ext4"):
        validate(leaf, psi=True, mounts=other)
    with pytest.raises(CgroupError, match="not a folder"):
        validate(str(tmp_path / "nothere"), psi=True, mounts=None)
    with pytest.raises(CgroupError, match="the root cgroup"):
        validate(cg.root, psi=True, mounts=None)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(CgroupError, match=r"not a cgroup v2 folder \(no cgroup\.controllers"):
        validate(str(plain), psi=True, mounts=None)
    os.unlink(os.path.join(leaf, "memory.pressure"))
    assert validate(leaf, psi=False, mounts=None) == leaf
    with pytest.raises(CgroupError, match=r"no memory\.pressure \(is the memory controller"):
        validate(leaf, psi=True, mounts=None)
    for name in ("memory.current", "memory.max"):
        os.unlink(os.path.join(leaf, name))
    with pytest.raises(CgroupError, match=r"no memory\.current, memory\.max"):
        validate(leaf, psi=False, mounts=None)
    cg.add("bad", max_mib=64)
    cg.write("bad", "memory.current", b"lots\n")
    with pytest.raises(CgroupError, match=r"memory\.current: expected a number"):
        validate(cg.path("bad"), psi=True, mounts=None)


def test_units_find_a_process_cgroup_from_proc(cg: FakeCgroup, tmp_path: Path) -> None:
    fake = FakeProc(tmp_path / "proc")
    fake.add(FAKE_PID, b"svc")
    fake.write(f"{FAKE_PID}/cgroup", b"0::/system.slice/svc.service\n")
    fake.add(FAKE_PID + 1, b"old")  # no cgroup file: gone or no v2 hierarchy
    leaf = cg.add("system.slice/svc.service", [FAKE_PID])
    units = Units(ProcFS(fake.root), cgroup_mount(parse_mountinfo(cg.mountinfo())))
    assert units.leaf(FAKE_PID) == leaf
    assert units.leaf(FAKE_PID + 1) == ""
    assert units.leaf(FAKE_PID + 2) == ""
    assert Units(ProcFS(fake.root), None).leaf(FAKE_PID) == ""
    assert units.holds(leaf, FAKE_PID)
    assert not units.holds(leaf, FAKE_PID + 1)
    assert not units.holds(cg.path("nothere"), FAKE_PID)


def test_a_cgroup_kill_without_the_file_is_enoent(cg: FakeCgroup) -> None:
    leaf = cg.add("svc", kill=False)
    with pytest.raises(OSError) as err:
        cgroupkill.kill(leaf)
    assert err.value.errno == errno.ENOENT


# -- issue 15: cgroup mode fails closed (review L2) ------------------------------------

def test_leaf_of_refuses_a_path_outside_the_cgroup_namespace() -> None:
    mount = ("/", "/sys/fs/cgroup")
    assert leaf_of(b"0::/../../other.slice/x.service\n", mount) is None
    assert leaf_of(b"0::/a/../b\n", mount) is None
    assert leaf_of(b"0::/a..b/c\n", mount) == "/sys/fs/cgroup/a..b/c"  # a name, not ".."


def test_members_that_cannot_be_checked_block_a_whole_cgroup_kill(tmp_path: Path) -> None:
    from bustd.choose import vet_members
    from bustd.procfs import ProcFS
    from bustd.victim import Rules
    fake = FakeProc(tmp_path / "proc")
    fake.add(100, b"victim")
    fake.add(101, b"true", exe=b"/usr/bin/true")  # root's, in root's folders: protectable
    fake.add(102, b"worker")
    os.makedirs(tmp_path / "proc" / "103")  # there, but nothing in it can be read
    fs, rules = ProcFS(str(tmp_path / "proc")), Rules(7, ["true"])
    assert vet_members(fs, rules, [100, 102], 100, {})[1] == ""
    assert vet_members(fs, rules, [100, 104], 100, {})[1] == ""  # 104 is gone
    assert "pid 101 (?) " in vet_members(fs, rules, [100, 101, 102], 100, {})[1]
    assert vet_members(fs, rules, [100, 103], 100, {})[1] == (
        "pid 103 (?) cannot be checked (its /proc files are unreadable)")
    assert vet_members(fs, rules, [0, 100], 100, {})[1] == (
        "it holds a process outside bustd's PID namespace")


def test_kill_cgroup_checks_the_members_again_right_before_the_write(tmp_path: Path) -> None:
    from bustd import kill
    cg = FakeCgroup(tmp_path / "cg")
    cg.write("a.service", "cgroup.procs", b"100\n101\n")
    cg.write("a.service", "cgroup.type", b"domain\n")
    cg.write("a.service", "cgroup.kill", b"")
    folder = cg.path("a.service")
    seen: list[list[int]] = []

    def vet(pids: list[int]) -> str:
        seen.append(pids)
        return "pid 101 (sshd) matches --unkillables"  # it joined after the choice

    assert kill.kill_cgroup(folder, 7, vet) == "pid 101 (sshd) matches --unkillables"
    assert seen == [[100, 101]]
    assert cg.read("a.service", "cgroup.kill") == b""  # never written


# -- review L2: a subtree too wide to walk ----------------------------------------

def test_members_gives_up_past_its_limit_of_cgroups(cg: FakeCgroup) -> None:
    top = cg.add("user.slice/user-1000.slice", [11])
    for i in range(3):
        cg.add(f"user.slice/user-1000.slice/c{i}", [20 + i])
    assert len(members(top, limit=4)) == 4  # the top and its three: within the limit
    with pytest.raises(cgroup.TooManyCgroups, match=f"more than 3 cgroups below {top}$"):
        members(top, limit=3)
    assert issubclass(cgroup.TooManyCgroups, ValueError)  # the kill path fails closed
    assert cgroup.MAX_CGROUPS >= 64


def test_members_by_proc_finds_a_wide_subtree_from_each_process(cg: FakeCgroup,
                                                                tmp_path: Path) -> None:
    fake = FakeProc(tmp_path / "proc")
    rows = {FAKE_PID: "/user.slice/u.service", FAKE_PID + 1: "/user.slice/u.service/x/y",
            FAKE_PID + 2: "/user.slice/u.serviceX", FAKE_PID + 3: "/system.slice/s.service"}
    for pid, path in rows.items():
        fake.add(pid, b"p")
        fake.write(f"{pid}/cgroup", f"0::{path}\n".encode())
    fake.add(FAKE_PID + 4, b"gone")  # no cgroup file
    top = cg.add("user.slice/u.service", [FAKE_PID])
    units = Units(ProcFS(fake.root), cgroup_mount(parse_mountinfo(cg.mountinfo())))
    found = cgroupkill.members_by_proc(units, top)
    assert found == {FAKE_PID: top, FAKE_PID + 1: top + "/x/y"}  # not the look-alike sibling
