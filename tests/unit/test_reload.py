"""Reload on SIGHUP, piece by piece: the front end's validate-only mode, the
answer's parsing, the spawned reader (reload.Reload), Monitor.apply and
the loop that ties them together (in simulated time, on fake trees).

Only the test's own children are ever signalled (a stand-in front end that
never answers, by its PID); the Monitors read fake trees and never signal.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bustd import cli, reload
from bustd.config import Config, encode
from bustd.monitor import Monitor
from bustd.reload import Reload, ReloadError, parse_answer
from tests.fakeproc import PAGE_KIB
from tests.unit.monitor_env import SELF, Env, P, env, no_signals

__all__ = ["env", "no_signals"]  # fixtures, used by name

REPO = Path(__file__).resolve().parents[2]
VALIDATE = str(REPO / "bustd" / "validate.py")
REAL_KILL = os.kill  # before no_signals replaces it


def allow_killing(monkeypatch: pytest.MonkeyPatch, r: Reload) -> None:
    """Let ``r`` signal its own child (by its PID), and nothing else."""
    child = r.pid

    def kill_child(pid: int, signum: int) -> None:
        assert pid == child and pid > 1, f"tried to signal pid {pid}, not the test's child"
        REAL_KILL(pid, signum)

    monkeypatch.setattr(os, "kill", kill_child)


def write_conf(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o644)
    return path


def answer(cfg: Config, path: str = "/etc/bustd.conf") -> bytes:
    return f"{cli.RELOAD_MAGIC}\n{path}\n{encode(cfg)}\n{cli.RELOAD_END}\n".encode()


# --- the front end's validate-only mode ------------------------------------------

def validate(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.validate_main(argv)
    return code, out.getvalue(), err.getvalue()


def test_validate_answers_the_encoded_config_read_from_the_start_folder(
        tmp_path: Path) -> None:
    write_conf(tmp_path / "b.conf", "mem = 7\nprefer = ^x$\n")
    here = os.getcwd()
    try:
        os.chdir("/")
        code, out, err = validate([str(tmp_path), "-c", "b.conf", "--swap", "20"])
        assert os.getcwd() == str(tmp_path)  # the child's own folder: it exits next
    finally:
        os.chdir(here)
    assert (code, err) == (0, "")
    cfg, path = parse_answer(0, out.encode())
    assert path == str(tmp_path / "b.conf")
    assert (cfg.mem_term_percent, cfg.swap_term_percent, cfg.prefer) == (7.0, 20.0, "^x$")


def test_validate_names_file_line_and_option_of_a_bad_file(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "b.conf", "mem = 7\n\npsi = lots\n")
    code, out, err = validate([str(tmp_path), "--config", "b.conf"])
    assert (code, out) == (2, "")
    assert err == (f"bustd: error: {conf}:3: argument -p/--psi: invalid value 'lots': "
                   "expected a percentage from 0 to 100\n")


def test_validate_from_a_folder_that_is_gone(tmp_path: Path) -> None:
    code, out, err = validate([str(tmp_path / "gone"), "-m", "5"])
    assert (code, out) == (2, "")
    assert err == (f"bustd: error: cannot enter {tmp_path / 'gone'}, the folder bustd "
                   "started in: No such file or directory\n")


def test_validate_without_a_config_file_answers_no_path() -> None:
    code, out, _ = validate(["", "-m", "9"])
    assert code == 0
    cfg, path = parse_answer(0, out.encode())
    assert (cfg.mem_term_percent, path) == (9.0, "")


# --- the answer --------------------------------------------------------------------

def test_parse_answer() -> None:
    cfg = Config(mem_term_percent=3.0, ignore="a\nb\\c")
    assert parse_answer(0, answer(cfg)) == (cfg, "/etc/bustd.conf")
    assert parse_answer(None, answer(cfg)) == (cfg, "/etc/bustd.conf")  # not reaped yet
    with pytest.raises(ReloadError, match=r"^/etc/b.conf:2: unknown option 'x'$"):
        parse_answer(2, b"", b"bustd: error: /etc/b.conf:2: unknown option 'x'\n")
    with pytest.raises(ReloadError, match=r"^the front end failed \(exited with status 1\): "
                                          r"ZeroDivisionError: oops$"):
        parse_answer(1, b"", b"Traceback (most recent call last):\n  File x\n"
                             b"ZeroDivisionError: oops\n")
    with pytest.raises(ReloadError, match=r"^the front end exited with status 0 and said nothing$"):
        parse_answer(0, b"")
    with pytest.raises(ReloadError, match=r"^the front end was killed by SIGKILL and said"):
        parse_answer(-9, b"")
    with pytest.raises(ReloadError, match=r"bad line 'new_option.*\(was bustd upgraded\? restart"):
        parse_answer(0, answer(cfg).replace(b"\nbustd-end", b"\nnew_option\t1\nbustd-end"))
    with pytest.raises(ReloadError, match=r"^the front end gave no answer"):
        parse_answer(0, b"odd\n")  # exit 0 without the magic line is no answer
    with pytest.raises(ReloadError, match=r"^the front end gave no answer \(had not exited\)"):
        parse_answer(None, answer(cfg)[:-12])  # cut short: never read as a Config


def test_a_warning_on_stderr_never_breaks_a_good_answer() -> None:
    """Review M5: the answer and the diagnostics are two channels."""
    cfg = Config(ignore="[[a]")
    warning = b"bustd/optvalues.py:133: FutureWarning: Possible nested set at position 1\n"
    assert parse_answer(0, answer(cfg), warning) == (cfg, "/etc/bustd.conf")


# --- the spawned reader -------------------------------------------------------------

def fake_python(tmp_path: Path, script: str) -> str:
    """A stand-in for the interpreter: a shell script run as ``python -S -I SCRIPT CWD ...``."""
    path = tmp_path / "python"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return str(path)


def drive(r: Reload, limit: float = 20.0) -> None:
    """Poll the reader as the loop does until its output has ended."""
    poller = select.poll()
    poller.register(r.fd, select.POLLIN)
    deadline = time.monotonic() + limit
    while not r.read():
        assert time.monotonic() < deadline, "no end of output"
        poller.poll(100)


def test_reader_passes_cwd_and_argv_and_returns_the_config(tmp_path: Path) -> None:
    out = tmp_path / "answer"
    out.write_bytes(answer(Config(grace=2.0), "/x.conf"))
    python = fake_python(tmp_path, f'echo "$@" > {tmp_path}/args; cat {out}\n')
    r = Reload(python, "/pkg/bustd/validate.py", "/start", ["-c", "a b.conf"], 0.0)
    drive(r)
    assert r.finish() == (Config(grace=2.0), "/x.conf")
    assert (tmp_path / "args").read_text() == "-S -I /pkg/bustd/validate.py /start -c a b.conf\n"
    assert r.fd == -1
    reap_all([r])


def test_reader_reports_the_error_line_from_stderr(tmp_path: Path) -> None:
    python = fake_python(tmp_path, 'echo "bustd: error: /c:1: unknown option \'q\'" >&2\n'
                                   "exit 2\n")
    r = Reload(python, "v.py", "", [], 0.0)
    drive(r)
    with pytest.raises(ReloadError, match=r"^/c:1: unknown option 'q'$"):
        r.finish()


def test_reader_gives_the_child_no_stdin(tmp_path: Path) -> None:
    python = fake_python(tmp_path, "if read x; then echo got >&2; else echo none >&2; fi; "
                                   "exit 3\n")
    r = Reload(python, "v.py", "", [], 0.0)
    drive(r)
    with pytest.raises(ReloadError, match=r"^the front end failed \(.*\): none$"):
        r.finish()
    reap_all([r])


def test_reader_cancel_kills_and_reaps_its_child(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    python = fake_python(tmp_path, "exec sleep 60\n")
    r = Reload(python, "v.py", "", [], 100.0, timeout=5.0)
    allow_killing(monkeypatch, r)
    assert r.deadline == 105.0
    pid = r.pid
    assert not r.read()
    start = time.monotonic()
    r.cancel()  # never waits: reaped now, or by reap_left at a later check
    assert time.monotonic() - start < 0.1
    assert r.fd == -1
    reap_all([r])
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped


def test_reader_stops_at_a_megabyte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    python = fake_python(tmp_path, "exec yes bustd\n")
    r = Reload(python, "v.py", "", [], 0.0)
    allow_killing(monkeypatch, r)
    drive(r)
    assert len(r.data) <= reload.MAX_ANSWER
    with pytest.raises(ReloadError, match=r"^the front end gave no answer"):
        r.finish()
    reap_all([r])  # killed by reap_left, as the loop does


def reap_all(rs: list[Reload], limit: float = 10.0) -> None:
    """Call reap_left as the loop does until every child is reaped."""
    left = [r for r in rs if r.pid > 0]
    deadline = time.monotonic() + limit
    while left:
        assert time.monotonic() < deadline, "a child was never reaped"
        # At 0.0, before every deadline: only cancel() kills.
        reload.reap_left(left, 0.0)  # type: ignore[arg-type]
        time.sleep(0.01)


def test_a_front_end_that_will_not_die_never_holds_up_the_loop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review M6: a child stuck after its answer (or its timeout) is reaped later."""
    python = fake_python(tmp_path, f"cat {tmp_path}/answer; exec sleep 60\n")
    (tmp_path / "answer").write_bytes(answer(Config(grace=2.0)))
    r = Reload(python, "v.py", "", [], 0.0)
    allow_killing(monkeypatch, r)
    poller = select.poll()
    poller.register(r.fd, select.POLLIN)
    deadline = time.monotonic() + 10
    while len(r.data) < len(answer(Config(grace=2.0))):
        assert time.monotonic() < deadline
        poller.poll(100)
        r.read()
    assert not r.read()  # the answer is whole but the child holds stdout open
    start = time.monotonic()
    r.cancel()
    assert time.monotonic() - start < 0.1
    reap_all([r])


def test_reader_without_an_interpreter_raises_oserror(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError):
        Reload(str(tmp_path / "no-python"), "v.py", "", [], 0.0)
    assert len(os.listdir("/proc/self/fd")) == before  # no descriptor left open


def test_reader_with_the_real_front_end(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "b.conf", "mem = 6\nreport = 60\n")
    r = Reload(sys.executable, VALIDATE, str(tmp_path), ["-c", "b.conf", "-r", "0"], 0.0)
    drive(r)
    cfg, path = r.finish()
    assert (cfg.mem_term_percent, cfg.report, path) == (6.0, 0.0, str(conf))
    write_conf(conf, "mem = 6\nmem = 600\n")
    r = Reload(sys.executable, VALIDATE, str(tmp_path), ["-c", "b.conf"], 0.0)
    drive(r)
    with pytest.raises(ReloadError) as err:
        r.finish()
    assert str(err.value) == (f"{conf}:2: argument -m/--mem: invalid value '600': "
                              "expected percentages from 0 to 100")


def test_a_pattern_start_up_accepts_reloads_too(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Review M5: re.compile warns about '[[a]' on stderr; the reload still works."""
    conf = write_conf(tmp_path / "b.conf", "ignore = [[a]\n")
    r = Reload(sys.executable, VALIDATE, str(tmp_path), ["-c", "b.conf"], 0.0)
    allow_killing(monkeypatch, r)
    drive(r)
    cfg, path = r.finish()
    assert (cfg.ignore, path) == ("[[a]", str(conf))
    assert any("FutureWarning" in line for line in r.diagnostics()), r.said
    reap_all([r])


def test_reload_and_runtime_never_import_argparse() -> None:
    """The runtime loads nothing for reload until SIGHUP, and reload.py loads no heavy module."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); base = set(sys.modules);"
            " import bustd.runtime; idle = set(sys.modules) - base;"
            " import bustd.reload; more = set(sys.modules) - base - idle;"
            " print(sorted(idle)); print(sorted(more))")
    out = subprocess.run([sys.executable, "-S", "-I", "-c", code, str(REPO)],
                         capture_output=True, text=True, timeout=60, check=True)
    idle, more = out.stdout.splitlines()
    for name in ("argparse", "subprocess", "bustd.reload", "bustd.cli", "bustd.options",
                 "bustd.optvalues", "bustd.conffile", "bustd.check"):
        assert f"'{name}'" not in idle, idle
    assert more == "['bustd.reload']", more


# --- Monitor.apply ------------------------------------------------------------------

def populate(env: Env) -> None:
    env.fake.add(SELF, b"python3", oom_score=1500)
    env.fake.add(P, b"small", oom_score=200, rss_kib=10 * PAGE_KIB)
    env.fake.add(P + 1, b"hog", oom_score=900, rss_kib=1000 * PAGE_KIB)


def test_a_changed_threshold_changes_the_description_and_the_next_decision(env: Env) -> None:
    populate(env)
    m = env.monitor(mem_term_percent=5.0, mem_kill_percent=2.0)
    env.set_mem(8, 0)  # 8 % available, swap exhausted
    m.check()
    assert env.out.lines() == []
    before = m.describe()
    changed = m.apply(m.cfg.replace(mem_term_percent=10.0, mem_kill_percent=5.0))
    assert changed == ["mem_term_percent", "mem_kill_percent"]
    assert "SIGTERM at MemAvailable <= 819.2 MiB" in m.describe() != before
    m.check()
    (line,) = env.out.lines()
    assert line.startswith(f"warning: dry run: would kill pid={P + 1} name=hog ")
    assert "with SIGTERM: MemAvailable 655.4 MiB (8.0%) <= 819.2 MiB" in line


def test_changed_name_rules_are_rebuilt(env: Env) -> None:
    populate(env)
    m = env.monitor()
    env.set_mem(4, 0)
    m.check()
    assert f"would kill pid={P + 1} name=hog" in env.out.lines()[-1]
    env.fake.set_exe(P + 1, b"/usr/bin/true")  # a name protects only a root-owned file
    assert m.apply(m.cfg.replace(unkillables="true")) == ["unkillables"]
    env.clock.now += 10
    m.check()
    assert f"would kill pid={P} name=small" in env.out.lines()[-1]


def test_psi_settings_reopen_the_pressure_file(env: Env) -> None:
    m = env.monitor()
    first = m.sensors.psi_fd
    assert first >= 0
    assert m.apply(m.cfg.replace(psi_cutoff=0.0)) == ["psi_cutoff"]
    assert m.sensors.psi_fd == -1
    assert "PSI off" in m.describe()
    m.sensors.stall_meter.add(1.0, 5)
    m.apply(m.cfg.replace(psi_cutoff=30.0, psi_metric="full"))
    assert m.sensors.psi_fd >= 0 and m.sensors.stall_meter.percent() is None
    assert "full stall >= 30%" in m.describe()
    fd = m.sensors.psi_fd
    m.apply(m.cfg.replace(psi_duration=1.0, psi_mem_percent=20.0))
    assert m.sensors.psi_fd == fd  # other PSI settings need no new descriptor


def test_settings_fixed_at_start_are_kept_with_one_line(env: Env) -> None:
    m = env.monitor()
    root = m.cfg.proc_root
    changed = m.apply(m.cfg.replace(daemon=True, pid_file="/run/x.pid",
                                          proc_root="/proc", grace=1.0))
    assert changed == ["grace"]
    assert (m.cfg.daemon, m.cfg.pid_file, m.cfg.proc_root) == (False, "/run/bustd.pid", root)
    assert env.out.lines() == ["warning: reload: daemon, pid-file, proc-root cannot change "
                               "while bustd runs: kept until a restart"]


def test_switches_and_timers_follow_the_new_config(env: Env) -> None:
    m = env.monitor(verbose=False)
    assert m.next_report == float("inf")
    verbose = [env.out.log.verbose]
    m.apply(m.cfg.replace(verbose=True, report=60.0, dry_run=True, sys_root="/nowhere"))
    verbose.append(env.out.log.verbose)
    assert verbose == [False, True]
    assert m.next_report == env.clock.now + 60.0
    assert m.sensors.sys.root == "/nowhere"
    e = m.load_watch_code()
    m.apply(m.cfg.replace(dry_run=False))
    assert not e.may_signal  # a fake tree is never live, whatever the file says


# --- the loop ------------------------------------------------------------------------

class Stop(BaseException):
    """Ends Monitor.run in a test."""


class FakeReload:
    """A reload under way whose answer the test chooses."""

    def __init__(self, now: float, outcome: tuple[Config, str] | Exception,
                 timeout: float = 10.0) -> None:
        self.read_end, self.write_end = os.pipe()
        self.fd = self.read_end
        self.deadline = now + timeout
        self.outcome = outcome
        self.cancelled = False
        self.reads = 0
        self.pid = -1
        self.killed = False

    def diagnostics(self) -> list[str]:
        return []

    def kill(self) -> None:
        self.killed = True

    def read(self) -> bool:
        self.reads += 1
        return self.reads >= 2  # the answer arrives in two parts

    def finish(self) -> tuple[Config, str]:
        self.close()
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome

    def cancel(self) -> None:
        self.cancelled = True
        self.close()

    def close(self) -> None:
        for fd in (self.read_end, self.write_end):
            with contextlib.suppress(OSError):
                os.close(fd)


def loop(env: Env, m: Monitor, script: list[str]) -> list[FakeReload]:
    """Run the loop; at each wait do the next step of ``script``.

    Steps: "hup" (a SIGHUP arrives), "answer" (the reload's fd is readable),
    "idle" (the timeout passes), "late" (30 s pass).
    """
    started: list[FakeReload] = []
    outcomes: list[tuple[Config, str] | Exception] = []

    def reloader(now: float) -> FakeReload:
        r = FakeReload(now, outcomes.pop(0) if outcomes else
                       (m.cfg.replace(mem_term_percent=7.0), "/etc/b.conf"))
        started.append(r)
        return r

    m.reloader = reloader
    steps = list(script)

    def wait(timeout: float) -> list[tuple[int, int]]:
        if not steps:
            raise Stop
        step = steps.pop(0)
        env.clock.now += 30.0 if step == "late" else min(timeout, 0.01)
        if step == "hup":
            m.hangup()
        if step == "answer":
            assert m.reloading is not None
            return [(m.reloading.fd, select.POLLIN)]
        return []

    m._wait = wait
    with pytest.raises(Stop):
        m.run()
    return started


def test_loop_reloads_once_the_answer_is_complete(env: Env) -> None:
    m = env.monitor()
    started = loop(env, m, ["hup", "idle", "answer", "answer", "idle"])
    assert len(started) == 1 and started[0].reads == 2
    assert m.cfg.mem_term_percent == 7.0 and m.reloading is None
    (line,) = env.out.lines()
    assert line.startswith("reloaded /etc/b.conf: mem_term_percent=7.0; SIGTERM at "
                           "MemAvailable <= 573.4 MiB")


def test_loop_keeps_the_config_when_the_answer_is_an_error(env: Env) -> None:
    m = env.monitor()
    before = m.cfg

    def bad(now: float) -> FakeReload:
        return FakeReload(now, ReloadError("/etc/b.conf:3: argument -p/--psi: invalid value"))

    m.reloader = bad
    steps = ["hup", "answer", "answer"]

    def wait(timeout: float) -> list[tuple[int, int]]:
        if not steps:
            raise Stop
        step = steps.pop(0)
        if step == "hup":
            m.hangup()
            return []
        assert m.reloading is not None
        return [(m.reloading.fd, select.POLLIN)]

    m._wait = wait
    with pytest.raises(Stop):
        m.run()
    assert m.cfg is before
    assert env.out.lines() == ["error: reload failed, running configuration kept: "
                               "/etc/b.conf:3: argument -p/--psi: invalid value"]


def test_loop_gives_up_on_a_front_end_that_does_not_answer(env: Env) -> None:
    m = env.monitor()
    started = loop(env, m, ["hup", "idle", "late", "idle"])
    assert started[0].cancelled and m.reloading is None
    assert m.cfg.mem_term_percent == 10.0
    assert env.out.count("reload failed, running configuration kept: the front end gave "
                         "no answer in time") == 1


def test_loop_waits_no_longer_than_the_reload_deadline(env: Env) -> None:
    m = env.monitor()
    timeouts: list[float] = []

    def reloader(now: float) -> FakeReload:
        return FakeReload(now, (m.cfg, ""), timeout=0.25)

    m.reloader = reloader
    m.hangup()

    def wait(timeout: float) -> list[tuple[int, int]]:
        timeouts.append(timeout)
        raise Stop

    m._wait = wait
    with pytest.raises(Stop):
        m.run()
    assert timeouts == [0.25]
    r = m.end_reload()
    assert isinstance(r, FakeReload)
    r.close()


def test_a_sighup_during_a_reload_starts_another_after_it(env: Env) -> None:
    m = env.monitor()
    started = loop(env, m, ["hup", "hup", "answer", "answer", "idle", "answer", "answer"])
    assert len(started) == 2
    assert env.out.count("reloaded /etc/b.conf: mem_term_percent=7.0") == 1
    assert env.out.count("reloaded /etc/b.conf: no change") == 1


def test_a_front_end_that_cannot_start_is_one_line(env: Env) -> None:
    m = env.monitor()

    def broken(now: float) -> FakeReload:
        raise FileNotFoundError(2, "No such file or directory", "/usr/bin/python3")

    m.reloader = broken
    m.hangup()
    steps = [1]

    def wait(timeout: float) -> list[tuple[int, int]]:
        if not steps:
            raise Stop
        steps.pop()
        return []

    m._wait = wait
    with pytest.raises(Stop):
        m.run()
    assert env.out.lines() == [
        "error: reload failed, running configuration kept: cannot start the front end "
        "([Errno 2] No such file or directory: '/usr/bin/python3')"]
    assert not m.reload_wanted and m.reloading is None


def test_the_wakeup_pipe_is_drained(env: Env) -> None:
    m = env.monitor()
    r, w = os.pipe()
    os.set_blocking(r, False)
    m.wake_on(r)
    os.write(w, b"\x01\x01\x01")
    steps = [[(r, select.POLLIN)], []]

    def wait(timeout: float) -> list[tuple[int, int]]:
        if not steps:
            raise Stop
        return steps.pop(0)

    m._wait = wait
    with pytest.raises(Stop):
        m.run()
    with pytest.raises(BlockingIOError):
        os.read(r, 1)
    m.close()
    assert m.wake_fd == -1 and m.sensors.mem_fd == -1
    os.close(w)
    m.sensors.mem_fd = os.open(os.devnull, os.O_RDONLY)  # for the fixture, which closes it


def test_a_reload_under_way_is_cancelled_at_exit(env: Env) -> None:
    m = env.monitor()
    r = FakeReload(0.0, (m.cfg, ""))
    m.reloader = lambda now: r
    m.hangup()
    m._start_reload()
    under_way = [m.reloading]
    m.cancel_reload()
    under_way.append(m.reloading)
    assert r.cancelled and under_way == [r, None]
    m.cancel_reload()  # nothing under way: nothing to do
