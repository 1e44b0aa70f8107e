"""Hooks, children, desktop notifications (text, sessions, helpers), the D-Bus marshalling.

Hooks and helpers here are harmless scripts of the test's own, started for
real (spawning is what is tested); the only processes signalled are those
children, by their own PID (Children.kill).
"""

from __future__ import annotations

import errno
import os
import socket
import time
from pathlib import Path

import pytest
from jeepney import (  # type: ignore[import-untyped]
    HeaderFields,
    MessageType,
    new_error,
    new_method_return,
)
from jeepney.low_level import Message, Parser  # type: ignore[import-untyped]

from bustd import dbus_notify, notify, sig
from bustd.dbus_notify import method_call, notify_body, parse_header, sasl_auth_line
from bustd.hooks import PostKillHook, PreKillHook, hook_env
from bustd.log import Log
from bustd.meminfo import MemInfo
from bustd.notify import Notifier, kill_text, markup_escape, sessions, warn_text
from bustd.outputs import CheckRecord
from bustd.process import Candidate
from bustd.procfs import BackgroundRead
from bustd.record import KillRecord, Reading, WarnRecord
from bustd.spawn import MAX_CHILDREN, NOT_YET, PATH, Children, spawn, wait_status_text

HOSTILE = b'$(touch /tmp/pwned) "; rm -rf ~ <a href="x">&'


class LogLines:
    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "bustd.log"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.log = Log(True, self.fd)

    def text(self) -> str:
        return self.path.read_text()


def candidate(comm: bytes = HOSTILE, pid: int = 4242) -> Candidate:
    c = Candidate(pid, 900, 2048, 1000, pid, comm)
    c.freeable_kib, c.shmem_kib, c.own_shmem_kib, c.file_kib = 1536, 1024, 512, 300
    return c


def reading() -> Reading:
    return Reading(100_000, 8_000_000, 5, 10, 0, None, 0.0, "some")


def record(comm: bytes = HOSTILE, dry: bool = False) -> KillRecord:
    r = KillRecord(1.0, candidate(comm), 1000, 0, b"/usr/bin/x\nfake", 2048, 1024, "growth",
                   "MemAvailable 97.7 MiB (1.2%) <= 781.2 MiB, no swap", sig.SIGTERM,
                   reading(), dry)
    r.cmdline = b"prog\0--name=\xff\0"
    return r


def script(path: Path, body: str) -> str:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def settle(children: Children, timeout: float = 5.0) -> list[int]:
    """Reap until every spawn under way has started (or failed); return the pids running."""
    deadline = time.monotonic() + timeout
    while children.spawning and time.monotonic() < deadline:
        time.sleep(0.005)
        children.reap()
    assert children.spawning == []
    return sorted(children.running)


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().split("\0") if line)


# -- the hooks' environment ---------------------------------------------------

def test_hook_env_holds_only_path_and_the_victim_rendered_as_in_the_log() -> None:
    env = hook_env(record(), "pre-kill")
    assert env == {
        "PATH": PATH, "BUSTD_PHASE": "pre-kill", "BUSTD_PID": "4242",
        "BUSTD_NAME": HOSTILE.decode(), "BUSTD_EXE": "/usr/bin/x\\nfake",
        "BUSTD_CMDLINE": "prog --name=\\xff", "BUSTD_UID": "1000", "BUSTD_RSS_KIB": "2048",
        "BUSTD_SWAP_KIB": "1024", "BUSTD_FREEABLE_KIB": "1536", "BUSTD_SHMEM_KIB": "1024",
        "BUSTD_OWN_SHMEM_KIB": "512", "BUSTD_FILE_KIB": "300",
        "BUSTD_OOM_SCORE": "900", "BUSTD_OOM_SCORE_ADJ": "0",
        "BUSTD_SIGNAL": "SIGTERM", "BUSTD_REASON": record().reason, "BUSTD_CAUSE": "memory",
        "BUSTD_MEM_AVAILABLE_KIB": "100000", "BUSTD_SWAP_FREE_KIB": "5", "BUSTD_DRY_RUN": "0",
        "BUSTD_EXPECTED_KIB": "0"}


def test_hook_env_after_the_kill_says_how_it_went() -> None:
    r = record(dry=True)
    r.exited, r.exit_s, r.reaction_s, r.cmdline = True, 0.5, 0.012, None
    env = hook_env(r, "post-kill")
    assert env["BUSTD_EXITED"] == "1" and env["BUSTD_EXIT_S"] == "0.500"
    assert env["BUSTD_REACTION_MS"] == "12" and env["BUSTD_DRY_RUN"] == "1"
    assert env["BUSTD_CMDLINE"] == ""
    assert "BUSTD_FREED_KIB" not in env  # not measured
    r.freed_kib, r.vain = 2048, False
    env = hook_env(r, "post-kill")
    assert env["BUSTD_FREED_KIB"] == "2048" and env["BUSTD_IN_VAIN"] == "0"


# -- spawning and children -----------------------------------------------------

def test_spawned_child_gets_its_argv_and_env_alone_and_oom_score_adj_0(tmp_path: Path) -> None:
    out = tmp_path / "out"
    prog = script(tmp_path / "p", f'cat /proc/self/oom_score_adj > "{out}.adj"; '
                                  f'printf "%s" "$1" > "{out}.arg"; '
                                  f'cat /proc/self/environ > "{out}.env"; '
                                  f'ps -o sid= -p $$ > "{out}.sid"; echo $$ > "{out}.pid"')
    pid = spawn([prog, "$(touch pwned)"], {"PATH": PATH, "BUSTD_X": "1"})
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert Path(f"{out}.arg").read_text() == "$(touch pwned)"
    env = read_env(Path(f"{out}.env"))
    assert set(env) - {"PWD"} == {"PATH", "BUSTD_X"}
    assert int(Path(f"{out}.sid").read_text()) == pid  # a session of its own
    assert not Path("pwned").exists()


def test_pre_kill_hook_is_waited_for_when_quick(tmp_path: Path) -> None:
    out = LogLines(tmp_path)
    children = Children(out.log)
    hook = script(tmp_path / "hook", f'env -0 > "{tmp_path}/env"')
    (tmp_path / "cmdline").write_bytes(b"victim\0--x\0")
    r = record()
    r.cmdline = None  # not read yet: the hook waits a little for it
    cmdline = BackgroundRead(str(tmp_path / "cmdline"), 4096)
    PreKillHook(hook, -1, 1.0, children, out.log)(r, cmdline)
    env = read_env(tmp_path / "env")  # written before the call returned
    assert env["BUSTD_NAME"] == HOSTILE.decode() and env["BUSTD_PHASE"] == "pre-kill"
    assert env["BUSTD_CMDLINE"] == "victim --x"
    assert children.running == {}
    assert "done in" in out.text()


def test_pre_kill_hook_that_hangs_costs_at_most_the_timeout(tmp_path: Path) -> None:
    out = LogLines(tmp_path)
    children = Children(out.log)
    hook = script(tmp_path / "hook", "exec sleep 30")
    start = time.monotonic()
    PreKillHook(hook, -1, 0.2, children, out.log)(record())
    took = time.monotonic() - start
    assert 0.15 <= took < 0.5, took
    assert "still running after 0.2 s: killing without waiting for it" in out.text()
    (pid,) = children.running
    children.kill(pid, "test over")
    deadline = time.monotonic() + 5
    while children.running and time.monotonic() < deadline:
        children.reap()
        time.sleep(0.01)
    assert children.running == {}
    assert children.failures == {"pre-kill hook": 1}


def test_pre_kill_hook_whose_spawn_hangs_costs_at_most_the_timeout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # posix_spawn returns only once the child has exec'd: on a thrashing
    # disk that can take seconds. Simulated by a spawn that sleeps first.
    import bustd.spawn as spawn_module
    real = spawn_module.spawn

    def slow(argv: list[str], env: dict[str, str], *rest: int) -> int:
        time.sleep(0.6)
        return real(argv, env)

    monkeypatch.setattr(spawn_module, "spawn", slow)
    out = LogLines(tmp_path)
    children = Children(out.log)
    hook = script(tmp_path / "hook", f'touch "{tmp_path}/ran"')
    start = time.monotonic()
    PreKillHook(hook, -1, 0.2, children, out.log)(record())
    took = time.monotonic() - start
    assert 0.15 <= took < 0.45, took
    assert "not started after 0.2 s (its executable still being read?): killing without " \
        "waiting for it" in out.text()
    assert len(children.spawning) == 1 and children.running == {}
    # Adopted by a later reap once started, then reaped when done; never lost.
    deadline = time.monotonic() + 5
    while (children.spawning or children.running) and time.monotonic() < deadline:
        children.reap()
        time.sleep(0.01)
    assert children.spawning == [] and children.running == {}
    assert (tmp_path / "ran").exists()
    assert children.failures == {}


def test_pre_kill_hook_whose_spawn_fails_in_its_thread_is_logged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bustd.spawn as spawn_module

    def refuse(argv: list[str], env: dict[str, str], *rest: int) -> int:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(spawn_module, "spawn", refuse)
    out = LogLines(tmp_path)
    children = Children(out.log)
    PreKillHook("/usr/local/bin/hook", -1, 0.2, children, out.log)(record())
    assert "cannot start the pre-kill hook /usr/local/bin/hook for pid 4242 " \
        "(/usr/local/bin/hook): [Errno 11] Resource temporarily unavailable" in out.text()
    assert children.failures == {"pre-kill hook": 1} and children.running == {}


def test_post_kill_hook_failure_is_logged_when_reaped(tmp_path: Path) -> None:
    out = LogLines(tmp_path)
    clock = [0.0]
    children = Children(out.log, lambda: clock[0])
    hook = script(tmp_path / "hook", "exit 7")
    post = PostKillHook(hook, -1, children)
    post(CheckRecord(0.0, MemInfo(1, 1, 0, 0), None, False, 0.0, 0, 0))  # ignored
    assert children.running == {}
    post(record())
    assert len(children.spawning) + len(children.running) == 1  # not waited for
    settle(children)
    deadline = time.monotonic() + 5
    while children.running and time.monotonic() < deadline:
        children.on_record(CheckRecord(0.0, MemInfo(1, 1, 0, 0), None, False, 0.0, 0, 0))
        time.sleep(0.01)
    assert f"post-kill hook {hook} for pid 4242 (pid " in out.text()
    assert "failed after" in out.text() and "exited with status 7" in out.text()
    assert children.failures == {"post-kill hook": 1}


def test_child_past_its_deadline_is_killed_with_its_session(tmp_path: Path) -> None:
    out = LogLines(tmp_path)
    clock = [0.0]
    children = Children(out.log, lambda: clock[0])
    prog = script(tmp_path / "p", f'sleep 30 & echo $! > "{tmp_path}/grandchild"; wait')
    assert children.start([prog], {"PATH": PATH}, "test child", "post-kill hook",
                          10.0) == NOT_YET
    [pid] = settle(children)
    deadline = time.monotonic() + 5
    while not (tmp_path / "grandchild").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    grandchild = int((tmp_path / "grandchild").read_text())
    children.reap()
    assert pid in children.running  # not yet due
    clock[0] = 11.0
    children.reap()
    assert f"test child (pid {pid}) still running after 11.0 s: killing it" in out.text()
    while children.running and time.monotonic() < deadline:
        children.reap()
        time.sleep(0.01)
    assert children.running == {}
    while time.monotonic() < deadline:  # the grandchild went with the session
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.01)
    else:
        pytest.fail("the hook's own child survived")


def test_child_that_cannot_start_is_logged_and_counted(tmp_path: Path) -> None:
    out = LogLines(tmp_path)
    children = Children(out.log)
    assert children.start([str(tmp_path / "missing")], {}, "post-kill hook x",
                          "post-kill hook", 1.0) == NOT_YET
    assert settle(children) == []
    assert "cannot start the post-kill hook x" in out.text()
    assert children.failures == {"post-kill hook": 1}


def test_no_more_than_max_children_run_at_once(tmp_path: Path) -> None:
    out = LogLines(tmp_path)
    children = Children(out.log)
    prog = script(tmp_path / "p", "exec sleep 30")
    started = [children.start([prog], {}, "helper", "notification", 60.0)
               for _ in range(MAX_CHILDREN + 2)]
    pids = settle(children)
    try:
        assert started[-2:] == [-1, -1] and set(started[:-2]) == {NOT_YET}
        assert len(pids) == MAX_CHILDREN
        assert out.text().count(f"{MAX_CHILDREN} children of bustd still run") == 1
    finally:
        for pid in list(children.running):
            children.kill(pid, "test over")
        for pid in pids:
            os.waitpid(pid, 0)


def test_status_text() -> None:
    assert wait_status_text(3 << 8) == "exited with status 3"
    assert wait_status_text(9) == "killed by signal 9"


# -- notifications --------------------------------------------------------------

def test_kill_text_names_the_victim_and_escapes_markup_in_the_body() -> None:
    summary, body = kill_text(record())
    assert summary == f"bustd killed {HOSTILE.decode()} (pid 4242) to free memory"
    assert "<" not in body and "&lt;a href=\"x\"&gt;&amp;" in body
    assert "held 1.5 MiB of its own memory; it was sent SIGTERM. It had not exited yet." in body


def test_warn_text_names_the_likely_victim() -> None:
    w = WarnRecord(1.0, "memory", "MemAvailable low", reading(), candidate(b"<b>x</b>"))
    summary, body = warn_text(w)
    assert summary == "Memory is running out: <b>x</b> (pid 4242) may be killed"
    assert body.startswith("bustd may soon kill &lt;b&gt;x&lt;/b&gt; (pid 4242, 1.5 MiB)")
    summary, body = warn_text(WarnRecord(1.0, "memory", "low", reading(), None))
    assert summary == "Memory is running out" and "No process may be killed" in body


def test_markup_escape() -> None:
    assert markup_escape("a<b>&c") == "a&lt;b&gt;&amp;c"


def make_bus(folder: Path, uid: int, owner: int | None = None) -> socket.socket:
    (folder / str(uid)).mkdir(parents=True)
    os.chown(folder / str(uid), uid, uid + 1)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(folder / str(uid) / "bus"))
    os.chown(folder / str(uid) / "bus", uid if owner is None else owner, 0)
    return s


def test_sessions_are_sockets_owned_by_their_uid(tmp_path: Path) -> None:
    root = tmp_path / "run-user"
    keep = [make_bus(root, 1000), make_bus(root, 1001, owner=0), make_bus(root, 1002)]
    (root / "1003").mkdir()
    (root / "1003" / "bus").write_text("not a socket")
    (root / "notauid").mkdir()
    assert sessions(str(root)) == [(1000, 1001, f"{root}/1000/bus"),
                                   (1002, 1003, f"{root}/1002/bus")]
    assert sessions(str(root), 1002) == [(1002, 1003, f"{root}/1002/bus")]
    assert sessions(str(root), 1001) == []  # its bus is not its own
    assert sessions(str(tmp_path / "none")) == []
    for s in keep:
        s.close()


def test_notifier_starts_one_helper_per_session_with_the_text_in_its_environment(
        tmp_path: Path) -> None:
    root = tmp_path / "run-user"
    keep = [make_bus(root, 1000), make_bus(root, 2000)]
    out = LogLines(tmp_path)
    children = Children(out.log)
    # Stands in for python3 -S -I dbus_notify.py UID GID BUS: records what it was given.
    python = script(tmp_path / "python", f'env -0 > "{tmp_path}/env.$4"; '
                                         f'echo "$@" > "{tmp_path}/argv.$4"')
    helper = "/path/of/dbus_notify.py"
    everyone = Notifier(False, children, python=python, helper=helper, root=str(root))
    everyone(record(dry=True))  # dry runs are not notified
    assert children.running == {}
    everyone(record())
    for pid in settle(children):
        children.wait(pid, 5)
    for uid in (1000, 2000):
        env = read_env(tmp_path / f"env.{uid}")
        assert env["BUSTD_SUMMARY"] == kill_text(record())[0]
        assert env["BUSTD_BODY"] == kill_text(record())[1]
        assert env["BUSTD_URGENCY"] == "1"
        assert set(env) - {"PWD"} == {"PATH", "BUSTD_SUMMARY", "BUSTD_BODY", "BUSTD_URGENCY"}
        assert (tmp_path / f"argv.{uid}").read_text() == (
            f"-S -I {helper} {uid} {uid + 1} {root}/{uid}/bus\n")
    owner = Notifier(True, children, python=python, helper=helper, root=str(root))
    (tmp_path / "env.1000").unlink()
    (tmp_path / "env.2000").unlink()
    w = WarnRecord(1.0, "memory", "low", reading(), candidate(), uid=2000, exe=b"/x")
    owner(w)
    for pid in settle(children):
        children.wait(pid, 5)
    assert not (tmp_path / "env.1000").exists()
    assert read_env(tmp_path / "env.2000")["BUSTD_URGENCY"] == "2"
    for s in keep:
        s.close()


def test_helper_exit_codes_are_explained() -> None:
    assert notify.explain(4) == "exit 4: no session bus there"
    assert notify.explain(99) is None


# -- the D-Bus wire format, checked against jeepney's parser ---------------------

def parse(data: bytes) -> Message:
    parser = Parser()
    parser.add_data(data)
    msg = parser.get_next_message()
    assert msg is not None
    return msg


def test_method_call_parses_with_jeepney() -> None:
    msg = parse(method_call(7, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                            "org.freedesktop.DBus", "Hello"))
    h = msg.header
    assert h.message_type == MessageType.method_call and h.serial == 7
    assert h.fields[HeaderFields.destination] == "org.freedesktop.DBus"
    assert h.fields[HeaderFields.path] == "/org/freedesktop/DBus"
    assert h.fields[HeaderFields.member] == "Hello"
    assert HeaderFields.signature not in h.fields and msg.body == ()


@pytest.mark.parametrize("summary", ["plain", HOSTILE.decode(), "é\u2028\U0001f600", ""])
def test_notify_call_parses_with_jeepney(summary: str) -> None:
    msg = parse(method_call(2, "org.freedesktop.Notifications",
                            "/org/freedesktop/Notifications", "org.freedesktop.Notifications",
                            "Notify", "susssasa{sv}i", notify_body(summary, "body <b>", 2)))
    assert msg.header.fields[HeaderFields.signature] == "susssasa{sv}i"
    assert msg.body == ("bustd", 0, "dialog-warning", summary, "body <b>", [],
                        {"urgency": ("y", 2)}, -1)


def test_parse_header_reads_replies_and_errors_made_by_jeepney() -> None:
    call = parse(method_call(2, "a.b", "/a", "a.b", "M"))
    call.header.fields[HeaderFields.sender] = ":1.5"
    reply = new_method_return(call, "u", (42,)).serialise(serial=9)
    h = parse_header(reply)
    assert h is not None and h.type == dbus_notify.METHOD_RETURN and h.reply_serial == 2
    assert h.length == len(reply)
    error = new_error(call, "org.freedesktop.DBus.Error.ServiceUnknown", "s",
                      ("no such name",)).serialise(serial=10)
    h = parse_header(error)
    assert h is not None and h.type == dbus_notify.ERROR and h.reply_serial == 2
    assert h.error_name == "org.freedesktop.DBus.Error.ServiceUnknown"
    assert dbus_notify._error_text(error, h) == (
        "org.freedesktop.DBus.Error.ServiceUnknown: no such name")
    assert parse_header(reply[:10]) is None  # incomplete: read more
    with pytest.raises(ValueError):
        parse_header(b"X" + reply[1:])


def test_sasl_auth_line_is_the_uid_in_hex() -> None:
    assert sasl_auth_line(1000) == b"AUTH EXTERNAL 31303030\r\n"


# -- issue 15: nothing waits for an exec, helpers' words, hooks' slots -------------

def test_children_start_without_waiting_for_the_exec(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Review M6: a post-kill hook or a helper whose exec takes a second costs the loop none."""
    import bustd.spawn as spawn_module
    real = spawn_module.spawn

    def slow(argv: list[str], env: dict[str, str], *rest: int) -> int:
        time.sleep(1.0)  # an executable paged in from a thrashing disk
        return real(argv, env, *rest)

    monkeypatch.setattr(spawn_module, "spawn", slow)
    out = LogLines(tmp_path)
    children = Children(out.log)
    hook = script(tmp_path / "hook", "exit 0")
    start = time.monotonic()
    PostKillHook(hook, -1, children)(record())
    assert time.monotonic() - start < 0.5
    for pid in settle(children):
        children.wait(pid, 5)
    assert f"post-kill hook {hook} for pid 4242 (pid " in out.text()
    assert "done in" in out.text() and children.failures == {}


def test_a_helpers_words_stay_inside_bustds_line(tmp_path: Path) -> None:
    """Review M4: what a helper writes is read by bustd, escaped and bounded, marked as its."""
    out = LogLines(tmp_path)
    children = Children(out.log)
    prog = script(tmp_path / "p", "printf 'org.x\\n<0>emerg: FORGED %s' "
                                  "\"$(printf '%4000s' '' | tr ' ' x)\" >&2; exit 6")
    children.start([prog], {"PATH": PATH}, "notification helper for uid 7", "notification",
                   10.0, notify.explain, capture=True)
    for pid in settle(children):
        children.wait(pid, 5)
    lines = out.text().splitlines()
    assert not [line for line in lines if line.startswith("<") or "emerg" in line[:20]]
    (line,) = [line for line in lines if "FORGED" in line]
    assert line.startswith("warning: notification helper for uid 7 (pid ")
    assert 'exit 6: the bus answered with an error (no notification service?); it said: ' \
        '"org.x\\n<0>emerg: FORGED xxx' in line
    assert len(line) < 800  # bounded


def test_helpers_leave_the_hooks_slots_free_and_run_one_per_user(tmp_path: Path) -> None:
    """Review L7: helpers a user's bus holds can never starve the administrator's hooks."""
    from bustd.spawn import HOOK_SLOTS
    out = LogLines(tmp_path)
    children = Children(out.log)
    prog = script(tmp_path / "p", "exec sleep 30")
    try:
        got = [children.start([prog], {}, f"helper {uid}", "notification", 60.0,
                              key=f"notify {uid}", spare=HOOK_SLOTS) for uid in range(20)]
        assert got.count(NOT_YET) == MAX_CHILDREN - HOOK_SLOTS
        assert children.start([prog], {}, "helper 0 again", "notification", 60.0,
                              key="notify 0", spare=HOOK_SLOTS) == -1
        hooks = [children.start([prog], {}, "post-kill hook", "post-kill hook", 60.0)
                 for _ in range(HOOK_SLOTS)]
        assert hooks == [NOT_YET] * HOOK_SLOTS
        assert len(settle(children)) == MAX_CHILDREN
    finally:
        settle(children)
        for pid in list(children.running):
            children.kill(pid, "test over")
        for pid in list(children.running):
            os.waitpid(pid, 0)


def test_process_mrelease_that_waits_costs_the_loop_at_most_its_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Review M6: process_mrelease waits on the victim's mmap_lock in a thread of its own."""
    from bustd import kill

    def stuck(fd: int) -> str:
        time.sleep(2.0)  # a writer holds the victim's mmap_lock (a hung filesystem)
        return kill.FREED

    monkeypatch.setattr(kill, "_mrelease", stuck)
    t = kill.Target(os.getpid(), 0)
    t.fd = os.pidfd_open(os.getpid())
    try:
        start = time.monotonic()
        why = kill.release_memory(t)
        assert time.monotonic() - start < kill.MRELEASE_WAIT + 0.5
        assert why.startswith("process_mrelease still under way")
    finally:
        os.close(t.fd)


def test_a_hook_runs_from_the_descriptor_it_was_checked_with(tmp_path: Path) -> None:
    """Review H4, L6: the file checked at start runs, whatever its name leads to later."""
    from bustd.vet import open_hook
    folder = tmp_path / "hooks"
    folder.mkdir()
    out = tmp_path / "out"
    script(folder / "a", f'echo "a $(cat /proc/self/oom_score_adj)" > "{out}"')
    script(folder / "b", f'echo b > "{out}"')
    (folder / "hook").symlink_to(folder / "a")
    fd = open_hook(str(folder / "hook"))
    try:
        (folder / "new").symlink_to(folder / "b")
        os.replace(folder / "new", folder / "hook")
        pid = spawn([str(folder / "hook")], {"PATH": PATH}, fd)
        _, status = os.waitpid(pid, 0)
        assert status == 0
        assert out.read_text() == "a 0\n"
    finally:
        os.close(fd)
