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
                   "--proc-root", "--print-config", "--config"):
        assert option in out.stdout, option


def test_config_file_sets_options_and_the_command_line_overrides(tmp_path: Path) -> None:
    conf = tmp_path / "bustd.conf"
    conf.write_text("# comment\n\nmem = 7,3\nswap_size = 2048\nprefer = '^(a b)$'\n"
                    "dry-run = true\nkill-pgroup = false\n  psi-metric=full  \n")
    c = config("--config", str(conf), "-m", "9")
    assert (c["mem_term_percent"], c["mem_kill_percent"]) == ("9.0", "4.5")
    assert (c["swap_term_kib"], c["swap_kill_kib"]) == ("2048", "1024")
    assert (c["prefer"], c["dry_run"], c["kill_pgroup"]) == ("'^(a b)$'", "True", "False")
    assert c["psi_metric"] == "'full'"


def test_shipped_config_file_is_valid_and_all_defaults() -> None:
    assert config("-c", os.path.join(REPO, "contrib", "bustd.conf")) == config()


@pytest.mark.parametrize(("text", "message"), [
    ("mem = 200\n", ":1: argument -m/--mem: invalid value '200'"),
    ("\n# x\nfrobnicate = 1\n", ":3: unknown option 'frobnicate'"),
    ("just words\n", ":1: expected 'option = value', got 'just words'"),
    ("dry-run = maybe\n", ":1: dry-run: expected true or false, got 'maybe'"),
    ("config = /etc/other\n", ":1: unknown option 'config'"),
    ("prefer = (\n", ":1: argument --prefer: invalid regular expression '('"),
])
def test_bad_config_file_names_file_line_and_option(tmp_path: Path, text: str,
                                                    message: str) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text(text)
    out = bustd("--config", str(conf), "--print-config")
    assert out.returncode == 2
    assert out.stderr.splitlines() == [out.stderr.strip()]
    assert out.stderr.startswith(f"bustd: error: {conf}{message}"), out.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    out = bustd("--config", str(tmp_path / "none.conf"), "--print-config")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"bustd: error: config file {tmp_path / 'none.conf'}: No such file or directory")
