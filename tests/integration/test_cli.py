"""The real command from a table of argument lists: exit codes and messages.

Bad input never starts the daemon: the front end exits before exec. Good
input is checked with --print-config, which also exits before exec.
"""

from __future__ import annotations

import os
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
                   "--avoid", "--grace", "--kill-pgroup", "--no-daemon", "--daemon",
                   "--pid-file", "--dry-run", "--report", "--verbose", "--version",
                   "--proc-root", "--print-config"):
        assert option in out.stdout, option
