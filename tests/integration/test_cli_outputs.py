"""The options of the outputs (issue 8) through the real command: values and refusals.

Every call exits before the loop starts (--print-config), so it runs outside
a namespace. A bad hook, kill log or metrics path is one line and exit 2.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.test_cli import REPO as REPO_TEXT
from tests.integration.test_cli import bustd, config, write_conf

REPO = Path(REPO_TEXT)


def hook(path: Path, mode: int = 0o755) -> str:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(mode)
    return str(path)


def test_defaults_leave_every_output_off() -> None:
    c = config()
    assert (c["warn_percent"], c["notify"], c["notify_owner_only"]) == ("0.0", "False", "False")
    assert (c["pre_kill_hook"], c["post_kill_hook"], c["hook_timeout"]) == ("''", "''", "0.2")
    assert (c["kill_log"], c["metrics_file"]) == ("''", "''")


def test_output_options_on_the_command_line(tmp_path: Path) -> None:
    pre, post = hook(tmp_path / "pre"), hook(tmp_path / "post")
    c = config("--warn", "20", "--notify-owner-only", "--pre-kill-hook", pre,
               "--post-kill-hook", post, "--hook-timeout", "0.5", "--kill-log", "kills.jsonl",
               "--metrics-file", "bustd.prom")
    assert (c["warn_percent"], c["notify"], c["notify_owner_only"]) == ("20.0", "True", "True")
    assert (c["pre_kill_hook"], c["post_kill_hook"]) == (repr(pre), repr(post))
    assert c["hook_timeout"] == "0.5"
    assert c["kill_log"] == repr(str(REPO / "kills.jsonl"))  # made absolute (cwd: REPO)
    assert c["metrics_file"] == repr(str(REPO / "bustd.prom"))
    assert config("-N")["notify"] == "True"


def test_output_options_in_a_config_file(tmp_path: Path) -> None:
    pre = hook(tmp_path / "pre")
    conf = write_conf(tmp_path / "bustd.conf",
                      f"warn = 15\nnotify = true\npre-kill-hook = {pre}\nhook-timeout = 0.1\n"
                      f"kill-log = {tmp_path}/k.jsonl  # JSON lines\n"
                      f"metrics-file = {tmp_path}/b.prom\n")
    c = config("-c", str(conf))
    assert (c["warn_percent"], c["notify"], c["pre_kill_hook"]) == ("15.0", "True", repr(pre))
    assert (c["hook_timeout"], c["kill_log"]) == ("0.1", repr(f"{tmp_path}/k.jsonl"))
    assert c["metrics_file"] == repr(f"{tmp_path}/b.prom")


def bad(*args: str) -> str:
    out = bustd(*args, "--print-config")
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bustd: error: argument "), out.stderr
    assert "Traceback" not in out.stderr
    return lines[0]


@pytest.mark.parametrize(("args", "message"), [
    (["--warn", "101"], "--warn: invalid value '101'"),
    (["--warn", "x"], "--warn: invalid value 'x'"),
    (["--hook-timeout", "11"], "--hook-timeout: invalid value '11'"),
    (["--hook-timeout", "-0.1"], "--hook-timeout: invalid value '-0.1'"),
    (["--pre-kill-hook", "relative/hook"], "a hook must be an absolute path"),
    (["--post-kill-hook", ""], "a hook must be an absolute path"),
    (["--pre-kill-hook", "/nonexistent/hook"], "/nonexistent/hook: No such file or directory"),
    (["--pre-kill-hook", "/"], "/: a directory, not a regular file"),
    (["--post-kill-hook", "/dev/null"], "/dev/null: a character device, not a regular file"),
    (["--pre-kill-hook", "/etc/passwd"], "/etc/passwd: not executable"),
    (["--kill-log", "/nonexistent/dir/kills"], "no such folder /nonexistent/dir"),
    (["--kill-log", "/"], "/: a directory, not a regular file"),
    (["--kill-log", "/dev/null"], "/dev/null: a character device, not a regular file"),
    (["--kill-log", ""], "--kill-log: invalid value ''"),
    (["--metrics-file", "/tmp/bustd.txt"], "the name must end in .prom"),
    (["--metrics-file", "/tmp/.prom"], "the name must end in .prom"),
    (["--metrics-file", "/nonexistent/bustd.prom"], "no such folder /nonexistent"),
])
def test_bad_output_option_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    assert message in bad(*args)


def test_hook_writable_by_others_is_refused(tmp_path: Path) -> None:
    line = bad("--pre-kill-hook", hook(tmp_path / "h", 0o775))
    assert line.endswith(f"{tmp_path}/h: it is writable by group or others (mode 0775); "
                         "chmod go-w it")


def test_hook_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = hook(tmp_path / "h")
    os.chown(path, 65534, 65534)
    assert bad("--post-kill-hook", path).endswith(
        f"{path}: it is owned by uid 65534, not root")


def test_hook_in_a_folder_others_may_write_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "open"
    folder.mkdir()
    folder.chmod(0o777)
    assert bad("--pre-kill-hook", hook(folder / "h")).endswith(
        f"folder {folder} is writable by group or others (mode 0777); chmod go-w it")
    folder.chmod(0o1777)  # sticky, as /tmp: others cannot replace our file
    assert config("--pre-kill-hook", str(folder / "h"))["pre_kill_hook"] == repr(
        str(folder / "h"))


def test_hook_behind_a_link_is_checked_where_it_lives(tmp_path: Path) -> None:
    folder = tmp_path / "open"
    folder.mkdir()
    target = hook(folder / "h")
    folder.chmod(0o777)
    (tmp_path / "link").symlink_to(target)
    assert "writable by group or others" in bad("--pre-kill-hook", str(tmp_path / "link"))


def test_kill_log_that_is_a_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "log").symlink_to("/etc/passwd")
    assert bad("--kill-log", str(tmp_path / "log")).endswith(
        f"{tmp_path}/log: a symbolic link, not a regular file")


def test_bad_hook_in_a_config_file_names_the_file_and_line(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "bustd.conf", "notify = true\npre-kill-hook = hook\n")
    out = bustd("-c", str(conf), "--print-config")
    assert out.returncode == 2
    assert out.stderr.strip() == (f"bustd: error: {conf}:2: argument --pre-kill-hook: invalid "
                                  "value 'hook': a hook must be an absolute path")


def test_help_lists_the_output_options() -> None:
    out = bustd("--help")
    for option in ("--warn", "--notify", "-N", "--notify-owner-only", "--pre-kill-hook",
                   "--post-kill-hook", "--hook-timeout", "--kill-log", "--metrics-file"):
        assert option in out.stdout, option


def test_hook_path_with_a_nul_byte_is_refused() -> None:
    import argparse

    from bustd.optvalues import hook as check_hook
    with pytest.raises(argparse.ArgumentTypeError, match="NUL byte"):
        check_hook("/a\0b")
