"""The real command from a table of argument lists: exit codes and messages.

Bad input never starts the daemon: the front end exits before exec. Good
input is checked with --print-config, which also exits before exec. Every
bad input must be one line on stderr and exit code 2, never a traceback
(which exits 1, a code the unit's RestartPreventExitStatus does not cover).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def bustd(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python3 -m bustd ARGS`` from the repository; never starts the loop."""
    # Only calls that exit before the loop starts: this runs outside a namespace.
    assert {"--print-config", "--version", "--help", "--proc-root"} & set(args), args
    return subprocess.run([sys.executable, "-m", "bustd", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=30, check=False)


BAD = [
    (["-m", "abc"], "-m/--mem", "'abc'"),
    (["--mem", "101"], "-m/--mem", "'101'"),
    (["-m", "-5"], "-m/--mem", "'-5'"),
    (["-m", "5,9"], "-m/--mem", "'5,9'"),
    (["-m", "nan"], "-m/--mem", "'nan'"),
    (["-s", "10,x"], "-s/--swap", "'10,x'"),
    (["-M", "1.5"], "-M/--mem-size", "'1.5'"),
    (["-M", "100,200"], "-M/--mem-size", "'100,200'"),
    (["-S", "-1"], "-S/--swap-size", "'-1'"),
    (["-p", "200"], "-p/--psi", "'200'"),
    (["--psi-metric", "half"], "--psi-metric", "'half'"),
    (["--psi-mem", "x"], "--psi-mem", "'x'"),
    (["--grace", "-1"], "--grace", "'-1'"),
    (["-r", "inf"], "-r/--report", "'inf'"),
    (["--prefer", "("], "--prefer", "'('"),
    (["--avoid", "[a"], "--avoid", "'[a'"),
    (["--ignore", "*x"], "--ignore", "'*x'"),
    (["-u", "a||b"], "-u/--unkillables", "'a||b'"),
    (["--daemon", "-n"], "--no-daemon", "--daemon"),
    (["--frobnicate"], "unrecognized arguments", "--frobnicate"),
    (["-m"], "-m/--mem", "expected one argument"),
    # Regexes that crash re.compile with something other than re.error.
    (["--ignore", "a{4294967296}"], "--ignore", "'a{4294967296}'"),
    (["--prefer", "(" * 1200 + ")" * 1200], "--prefer", "'((((("),
    (["--avoid", "x{2,1}"], "--avoid", "'x{2,1}'"),
    (["--ignore", "(?P<a>x)(?P<a>y)"], "--ignore", "'(?P<a>x)(?P<a>y)'"),
    (["--prefer", "\\"], "--prefer", "'\\\\'"),
    (["--avoid", "(?<=a+)b"], "--avoid", "'(?<=a+)b'"),
    (["--ignore", "(?L)a"], "--ignore", "'(?L)a'"),
    (["--prefer", "[a"], "--prefer", "'[a'"),
    (["--ignore", "\\8"], "--ignore", "'\\\\8'"),
    # Globs: an empty one (spaces only counts as empty).
    (["-u", "|"], "-u/--unkillables", "'|'"),
    (["-u", "sshd|"], "-u/--unkillables", "'sshd|'"),
    (["--unkillables", "sshd | | Xorg"], "-u/--unkillables", "'sshd | | Xorg'"),
    (["-u", "a|\t|b"], "-u/--unkillables", "'a|\\t|b'"),
    (["-u", "a\nb"], "-u/--unkillables", "'a\\nb'"),
    # The default avoid list is by real path (issue 13).
    (["--default-avoid", "sshd"], "--default-avoid", "'sshd'"),
    (["--default-avoid", "/usr/sbin/sshd|Xorg"], "--default-avoid", "'Xorg'"),
    (["--default-avoid", "/usr/sbin/sshd||/x"], "--default-avoid", "'/usr/sbin/sshd||/x'"),
    # Numbers.
    (["-m", "inf"], "-m/--mem", "'inf'"),
    (["-m", "1e400"], "-m/--mem", "'1e400'"),
    (["-m", "10,"], "-m/--mem", "'10,'"),
    (["-m", ",5"], "-m/--mem", "',5'"),
    (["-m", "5,-1"], "-m/--mem", "'5,-1'"),
    (["-m", "0x10"], "-m/--mem", "'0x10'"),
    (["-m", "10 5"], "-m/--mem", "'10 5'"),
    (["-s", "101,5"], "-s/--swap", "'101,5'"),
    (["--swap", "nan,1"], "-s/--swap", "'nan,1'"),
    (["-M", "abc"], "-M/--mem-size", "'abc'"),
    (["-M", "-5"], "-M/--mem-size", "'-5'"),
    (["-M", "18014398509481984"], "-M/--mem-size", "'18014398509481984'"),
    (["--mem-size", "1e20"], "-M/--mem-size", "'1e20'"),
    (["-S", "10,20"], "-S/--swap-size", "'10,20'"),
    (["-S", "1.5,1"], "-S/--swap-size", "'1.5,1'"),
    (["--swap-size", "inf"], "-S/--swap-size", "'inf'"),
    (["-p", "-1"], "-p/--psi", "'-1'"),
    (["--psi", "nan"], "-p/--psi", "'nan'"),
    (["-p", "abc"], "-p/--psi", "'abc'"),
    (["--psi-metric", "SOME"], "--psi-metric", "'SOME'"),
    (["--psi-metric", ""], "--psi-metric", "''"),
    (["--psi-mem", "101"], "--psi-mem", "'101'"),
    (["--psi-mem", "-0.1"], "--psi-mem", "'-0.1'"),
    (["--grace", "86401"], "--grace", "'86401'"),
    (["--grace", "10.5"], "--grace", "expected seconds from 0 to 10"),  # review L4
    (["--grace", "9", "--hook-timeout", "2"], "--grace", "9 s with --hook-timeout 2 s: more "
     "than the 10 s a kill may wait"),
    (["--grace", "nan"], "--grace", "'nan'"),
    (["--grace", "1s"], "--grace", "'1s'"),
    (["-r", "-5"], "-r/--report", "'-5'"),
    (["--report", "1e9"], "-r/--report", "'1e9'"),
    # Paths.
    (["--pid-file", ""], "--pid-file", "''"),
    (["--proc-root", ""], "--proc-root", "''"),
    (["-c", "/dev/zero"], "config file /dev/zero", "a character device"),
    (["-c", "/dev/null"], "config file /dev/null", "a character device"),
    (["--config", "/"], "config file /", "a directory"),
    (["-c", ""], "config file :", "No such file"),
    # cgroup v2: a folder on a cgroup2 file system, with the memory controller.
    (["--cgroup", ""], "--cgroup", "''"),
    (["--cgroup", "/nonexistent/cg"], "argument --cgroup", "/nonexistent/cg: not a folder"),
    (["--cgroup", "/proc"], "argument --cgroup", "/proc: not on a cgroup v2 file system (it "
     "is on proc)"),
    (["--kill-cgroup", "-g"], "argument --kill-cgroup", "not allowed with --kill-pgroup"),
    # The command line itself.
    (["--psi-metric"], "--psi-metric", "expected one argument"),
    (["extra"], "unrecognized arguments", "extra"),
    (["--frob\nnicate"], "unrecognized arguments", "--frob\\nnicate"),
    (["--mem=5", "--mem"], "-m/--mem", "expected one argument"),
    # argparse drops a value of exactly '--' and hands the option a list.
    (["--ignore=--"], "--ignore", "'--'"),
    (["--pid-file=--"], "--pid-file", "'--'"),
    (["--mem=--"], "-m/--mem", "'--'"),
    (["--config=--"], "-c/--config", "'--'"),
]


@pytest.mark.parametrize(("args", "option", "value"), BAD)
def test_bad_input_is_one_line_and_exit_2(args: list[str], option: str, value: str) -> None:
    out = bustd(*args, "--print-config")
    assert out.returncode == 2, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("bustd: error: ")
    assert option in lines[0] and value in lines[0], lines[0]
    assert "Traceback" not in out.stderr


def test_unreadable_proc_root_exits_3() -> None:
    out = bustd("--proc-root", "/nonexistent/proc")
    assert out.returncode == 3
    assert out.stderr.strip() == (
        "bustd: error: cannot read /nonexistent/proc/meminfo: is --proc-root a /proc tree?")


def config(*args: str) -> dict[str, str]:
    out = bustd(*args, "--print-config")
    assert out.returncode == 0, out.stderr
    return dict(line.split(" = ", 1) for line in out.stdout.splitlines())


def test_defaults() -> None:
    c = config()
    assert (c["mem_term_percent"], c["mem_kill_percent"]) == ("10.0", "5.0")
    assert (c["swap_term_percent"], c["swap_kill_percent"]) == ("10.0", "5.0")
    assert (c["psi_cutoff"], c["psi_metric"], c["psi_mem_percent"]) == ("25.0", "'some'", "15.0")
    assert (c["grace"], c["dry_run"], c["proc_root"]) == ("0.5", "False", "'/proc'")


def test_the_default_avoid_list_is_shown_cleared_and_replaced() -> None:
    shipped = config()["default_avoid"].strip("'").split("|")
    assert {"/usr/sbin/sshd", "/usr/bin/gnome-shell", "/usr/bin/Xorg", "/usr/bin/dpkg",
            "/usr/lib/systemd/systemd-logind", "/usr/bin/dbus-daemon"} <= set(shipped)
    assert all(p.startswith("/") for p in shipped)
    assert config("--default-avoid", "")["default_avoid"] == "''"
    assert config("--default-avoid", "/opt/a | /opt/b*")["default_avoid"] == "'/opt/a|/opt/b*'"


def test_kill_level_defaults_to_half() -> None:
    c = config("-m", "8", "-s", "20")
    assert (c["mem_term_percent"], c["mem_kill_percent"]) == ("8.0", "4.0")
    assert (c["swap_term_percent"], c["swap_kill_percent"]) == ("20.0", "10.0")


def test_absolute_size_alone_applies_alone() -> None:
    c = config("-M", "500000")
    assert (c["mem_term_kib"], c["mem_kill_kib"]) == ("500000", "250000")
    assert c["mem_term_percent"] == "100.0"
    c = config("-M", "500000,1000", "-m", "20")
    assert (c["mem_term_kib"], c["mem_kill_kib"], c["mem_term_percent"]) == (
        "500000", "1000", "20.0")


def test_other_proc_root_implies_dry_run(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemTotal: 1000 kB\nMemAvailable: 500 kB\n")
    c = config("--proc-root", str(tmp_path))
    assert (c["dry_run"], c["proc_root"]) == ("True", repr(str(tmp_path)))
    c = config("--proc-root", "/proc/self/..")
    assert (c["dry_run"], c["proc_root"]) == ("False", "'/proc'")  # normalised to /proc
    assert config("--dry-run")["dry_run"] == "True"


def test_version_and_help() -> None:
    out = bustd("--version")
    assert out.returncode == 0 and out.stdout.startswith("bustd ")
    out = bustd("--help")
    assert out.returncode == 0
    for option in ("--mem", "--swap", "--mem-size", "--swap-size", "--psi", "--psi-metric",
                   "--psi-mem", "--sort-by-rss", "--unkillables", "--ignore", "--prefer",
                   "--avoid", "--default-avoid", "--grace", "--kill-pgroup", "--no-daemon",
                   "--daemon",
                   "--pid-file", "--dry-run", "--report", "--verbose", "--version",
                   "--proc-root", "--print-config", "--config"):
        assert option in out.stdout, option
    assert "'bustd check [OPTIONS]'" in out.stdout and "SIGHUP" in out.stdout


def write_conf(path: Path, text: str | bytes, mode: int = 0o644) -> Path:
    """Write a config file bustd accepts (owned by us, not group-writable)."""
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(mode)  # whatever the umask
    return path


def test_config_file_sets_options_and_the_command_line_overrides(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "bustd.conf",
                      "# comment\n\nmem = 7,3\nswap_size = 2048\nprefer = '^(a b)$'\n"
                      "dry-run = true\nkill-pgroup = false\n  psi-metric=full  \n")
    c = config("--config", str(conf), "-m", "9")
    assert (c["mem_term_percent"], c["mem_kill_percent"]) == ("9.0", "4.5")
    assert (c["swap_term_kib"], c["swap_kill_kib"]) == ("2048", "1024")
    assert (c["prefer"], c["dry_run"], c["kill_pgroup"]) == ("'^(a b)$'", "True", "False")
    assert c["psi_metric"] == "'full'"


def test_shipped_config_file_is_valid_and_all_defaults(tmp_path: Path) -> None:
    # A copy: a checkout made under umask 002 is group-writable, and refused.
    shipped = Path(REPO, "contrib", "bustd.conf").read_text()
    assert config("-c", str(write_conf(tmp_path / "bustd.conf", shipped))) == config()


def test_globs_are_trimmed(tmp_path: Path) -> None:
    """Defect 4: 'sshd | Xorg' must protect sshd and Xorg, not 'sshd ' and ' Xorg'."""
    assert config("-u", " sshd | Xorg\t|Web Content ")["unkillables"] == (
        "'sshd|Xorg|Web Content'")
    conf = write_conf(tmp_path / "bustd.conf", "unkillables = sshd | Xorg\n")
    assert config("-c", str(conf))["unkillables"] == "'sshd|Xorg'"


@pytest.mark.parametrize(("line", "option", "value"), [
    ("ignore = ^postgres$   # the database", "ignore", "'^postgres$'"),
    ("ignore = ^postgres$\t# the database", "ignore", "'^postgres$'"),
    ("prefer = a#b", "prefer", "'a#b'"),
    ("prefer = '^(a #1|b)$'  # quoted", "prefer", "'^(a #1|b)$'"),
    ('prefer = "it\'s # here"#c', "prefer", '"it\'s # here"'),
    ("prefer = 'x'", "prefer", "'x'"),
    ("prefer = it's", "prefer", '"it\'s"'),
    ("unkillables = sshd | Xorg # the basics", "unkillables", "'sshd|Xorg'"),
    ("dry-run = true # for now", "dry_run", "True"),
    ("mem = 7 # percent", "mem_term_percent", "7.0"),
    ("ignore = # nothing", "ignore", "''"),
    ("pid-file = /run/b#1.pid", "pid_file", "'/run/b#1.pid'"),
])
def test_inline_comments(tmp_path: Path, line: str, option: str, value: str) -> None:
    """A '#' after a space or tab, outside quotes, starts a comment."""
    conf = write_conf(tmp_path / "bustd.conf", line + "\n")
    assert config("-c", str(conf))[option] == value


# (config file text, line of the error, then what the message must name:
# the option and the bad value, or the problem).
BAD_FILE = [
    ("mem = 200\n", 1, "argument -m/--mem: invalid value", "'200'"),
    ("\n# x\nfrobnicate = 1\n", 3, "unknown option", "'frobnicate'"),
    ("just words\n", 1, "expected 'option = value'", "'just words'"),
    ("dry-run = maybe\n", 1, "dry-run: expected true or false", "'maybe'"),
    ("config = /etc/other\n", 1, "unknown option", "'config'"),
    ("prefer = (\n", 1, "argument --prefer: invalid regular expression", "'('"),
    ("ignore = a{4294967296}\n", 1, "argument --ignore", "'a{4294967296}'"),
    ("prefer = " + "(" * 1200 + ")" * 1200 + "\n", 1, "argument --prefer", "'((((("),
    ("ignore = ^postgres$  #\nprefer = (#x\n", 2, "argument --prefer", "'(#x'"),
    ("ignore = a\0b\n", 1, "ignore: NUL byte", "'a\\x00b'"),
    ("pid-file = /run/x\0y\n", 1, "pid-file: NUL byte", "'/run/x\\x00y'"),
    ("proc-root = /pr\0oc\n", 1, "proc-root: NUL byte", "'/pr\\x00oc'"),
    ("# ok\nunkillables = ss\0hd\n", 2, "unkillables: NUL byte", "'ss\\x00hd'"),
    ("psi-metric = so\0me\n", 1, "psi-metric: NUL byte", "'so\\x00me'"),
    ("prefer = 'x\0'\n", 1, "prefer: NUL byte", "'x\\x00'"),
    ("mem\0 = 5\n", 1, "NUL byte in the line", ""),
    ("ignore = 'abc\n", 1, "ignore: no closing '", "\"'abc\""),
    ('ignore = "abc\n', 1, 'ignore: no closing "', "'\"abc'"),
    ("ignore = 'abc' def\n", 1, "ignore: text after the closing quote", "'def'"),
    ("mem = 5 5\n", 1, "argument -m/--mem: invalid value", "'5 5'"),
    ("mem = 5#x\n", 1, "argument -m/--mem: invalid value", "'5#x'"),
    ("mem =\n", 1, "argument -m/--mem: invalid value", "''"),
    ("unkillables = sshd | | Xorg\n", 1, "argument -u/--unkillables", "'sshd | | Xorg'"),
    ("unkillables = sshd |\n", 1, "argument -u/--unkillables", "'sshd |'"),
    ("= 5\n", 1, "expected 'option = value'", "'= 5'"),
    ("mem\n", 1, "expected 'option = value'", "'mem'"),
    ("mem 5\n", 1, "expected 'option = value'", "'mem 5'"),
    ("--mem = 5\n", 1, "unknown option", "'--mem'"),
    ("m = 5\n", 1, "unknown option", "'m'"),
    ("help = true\n", 1, "unknown option", "'help'"),
    ("version = true\n", 1, "unknown option", "'version'"),
    ("print-config = true\n", 1, "unknown option", "'print-config'"),
    ("dry-run = 2\n", 1, "dry-run: expected true or false", "'2'"),
    ("daemon = on\n", 1, "daemon: expected true or false", "'on'"),
    ("sort_by_rss = yes please\n", 1, "sort-by-rss: expected true or false", "'yes please'"),
    ("grace = -1\n", 1, "argument --grace", "'-1'"),
    ("report = forever\n", 1, "argument -r/--report", "'forever'"),
    ("psi = 101\n", 1, "argument -p/--psi", "'101'"),
    ("psi-mem = x\n", 1, "argument --psi-mem", "'x'"),
    ("mem-size = 1.5\n", 1, "argument -M/--mem-size", "'1.5'"),
    ("swap-size = 10,20\n", 1, "argument -S/--swap-size", "'10,20'"),
    ("swap = 5,9\n", 1, "argument -s/--swap", "'5,9'"),
    ("psi-metric = half\n", 1, "argument --psi-metric", "'half'"),
    ("mem = 10\r\nmem = abc\r\n", 2, "argument -m/--mem", "'abc'"),
    ("ignore = [a\n", 1, "argument --ignore", "'[a'"),
    ("avoid = *x\n", 1, "argument --avoid", "'*x'"),
    ("pid-file =\n", 1, "argument --pid-file", "''"),
    ("avoid = --\n", 1, "argument --avoid", "'--'"),
    ("grace = '--'\n", 1, "argument --grace", "'--'"),
    ("mem = 10\n\u2028mem = 1\n\xff = 1\n", 3, "unknown option", "'\xff'"),
    ("\x1b[31m = 1\n", 1, "unknown option", "'\\x1b[31m'"),
]


@pytest.mark.parametrize(("text", "line", "option", "value"), BAD_FILE)
def test_bad_config_file_names_file_line_option_and_value(
        tmp_path: Path, text: str, line: int, option: str, value: str) -> None:
    conf = write_conf(tmp_path / "bad.conf", text)
    out = bustd("--config", str(conf), "--print-config")
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines() == [out.stderr.strip()], out.stderr
    message = out.stderr.strip()
    assert message.startswith(f"bustd: error: {conf}:{line}: {option}"), message
    assert value in message, message


def test_bad_table_is_long_enough() -> None:
    assert len(BAD) + len(BAD_FILE) >= 60


def refused(conf: Path | str, problem: str) -> None:
    out = bustd("--config", str(conf), "--print-config")
    assert out.returncode == 2, out.stderr
    assert out.stderr == f"bustd: error: config file {conf}: {problem}\n"


def test_missing_config_file(tmp_path: Path) -> None:
    refused(tmp_path / "none.conf", "No such file or directory")


def test_config_file_not_utf8_names_the_line(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "bustd.conf", b"mem = 5\nignore = caf\xe9\n")
    out = bustd("--config", str(conf), "--print-config")
    assert (out.returncode, out.stderr) == (
        2, f"bustd: error: {conf}:2: not UTF-8 text (byte 0xe9)\n")


def test_config_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.conf"
    os.mkfifo(fifo)
    refused(fifo, "a FIFO, not a regular file")  # a hang would time out


def test_config_symlink_to_dev_zero_is_refused(tmp_path: Path) -> None:
    (tmp_path / "zero.conf").symlink_to("/dev/zero")
    refused(tmp_path / "zero.conf", "a character device, not a regular file")


def test_config_file_larger_than_1_mib_is_refused(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "big.conf", "#" * (1 << 20) + "\n")
    refused(conf, f"{(1 << 20) + 1} bytes, more than the 1048576 a config file may have")
    assert config("-c", str(write_conf(tmp_path / "ok.conf", "#" * ((1 << 20) - 1) + "\n")))


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666, 0o620, 0o602])
def test_config_file_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    conf = write_conf(tmp_path / "bustd.conf", "mem = 5\n", mode)
    refused(conf, f"writable by group or others (mode {mode:04o}); chmod go-w it")


def test_config_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root to give the file away: run tests/run as root")
    conf = write_conf(tmp_path / "bustd.conf", "mem = 5\n", 0o644)
    os.chown(conf, 1234, 1234)
    refused(conf, "owned by uid 1234, not by root")
    os.chown(conf, 0, 1234)  # the group does not matter while it cannot write
    assert config("-c", str(conf))["mem_term_percent"] == "5.0"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o644


def test_print_config_into_a_closed_pipe_is_quiet() -> None:
    """`bustd --print-config | head -5`: the reader leaves early, no traceback."""
    for args in (["--print-config"], ["--help"], ["--version"]):
        read, write = os.pipe()
        os.close(read)  # every write now fails with EPIPE, deterministically
        try:
            out = subprocess.run([sys.executable, "-m", "bustd", *args], cwd=REPO,
                                 stdout=write, stderr=subprocess.PIPE, text=True,
                                 timeout=30, check=False)
        finally:
            os.close(write)
        assert (out.returncode, out.stderr) == (0, ""), (args, out.stderr)


def test_print_config_through_head() -> None:
    out = subprocess.run(f"{sys.executable} -m bustd --print-config | head -5", shell=True,
                         cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
    assert (out.returncode, out.stderr) == (0, "")
    assert len(out.stdout.splitlines()) == 5


def test_print_config_to_a_full_disk_is_one_line() -> None:
    if not os.path.exists("/dev/full"):
        pytest.fail("needs /dev/full")
    with open("/dev/full", "w") as full:
        out = subprocess.run([sys.executable, "-m", "bustd", "--print-config"], cwd=REPO,
                             stdout=full, stderr=subprocess.PIPE, text=True, timeout=30,
                             check=False)
    assert (out.returncode, out.stderr) == (
        1, "bustd: error: cannot write to standard output: No space left on device\n")


def test_cgroup_on_a_fake_tree(tmp_path: Path) -> None:
    from tests.fakecgroup import FakeCgroup
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text("MemTotal: 1000 kB\nMemAvailable: 500 kB\n")
    cg = FakeCgroup(tmp_path / "cgroup")
    work = cg.add("work", max_mib=64)
    c = config("--proc-root", str(proc), "--cgroup", work + "/", "--kill-cgroup")
    assert (c["cgroup"], c["kill_cgroup"]) == (repr(work), "True")
    out = bustd("--proc-root", str(proc), "--cgroup", cg.root, "--print-config")
    assert out.returncode == 2
    assert out.stderr == (f"bustd: error: argument --cgroup: {cg.root}: the root cgroup: watch "
                          "the whole machine without --cgroup instead\n")
    (Path(work) / "memory.pressure").unlink()
    out = bustd("--proc-root", str(proc), "--cgroup", work, "--print-config")
    assert out.returncode == 2
    assert out.stderr == (f"bustd: error: argument --cgroup: {work}: no memory.pressure (is the "
                          "memory controller enabled in the parent's cgroup.subtree_control?)\n")
    assert config("--proc-root", str(proc), "--cgroup", work, "--psi", "0")["cgroup"] == repr(work)


def test_cgroup_on_the_real_hierarchy(tmp_path: Path) -> None:
    """The host's own cgroup v2 root is refused; a new child of it is accepted only
    where the memory controller reaches it (on this host or not)."""
    from bustd.cgroup import cgroup_mount, parse_mountinfo
    with open("/proc/self/mountinfo", "rb") as f:
        mount = cgroup_mount(parse_mountinfo(f.read()))
    if mount is None:
        pytest.skip("no cgroup v2 hierarchy mounted on this host")
    point = mount[1]
    out = bustd("--cgroup", point, "--print-config")
    assert out.returncode == 2 and "the root cgroup" in out.stderr, out.stderr
    child = Path(point) / f"bustd-cli-test-{os.getpid()}"
    try:
        child.mkdir()
    except OSError as err:
        pytest.skip(f"cannot create a cgroup under {point}: {err.strerror}")
    try:
        out = bustd("--cgroup", str(child), "--print-config")
        if (child / "memory.current").exists():
            assert out.returncode == 0, out.stderr
            assert f"cgroup = {str(child)!r}" in out.stdout
        else:
            assert out.returncode == 2
            assert out.stderr.startswith(f"bustd: error: argument --cgroup: {child}: no "
                                         "memory.current, memory.max, memory.high, memory.stat")
    finally:
        child.rmdir()
