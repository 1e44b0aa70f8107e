"""vet.py: paths nobody but root may change (issue 15, review H4, L3, M3).

Run as root: the files here are the test's own, chowned to uid 65534 (nobody)
where another user's file is needed; nothing is executed or signalled.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bustd import vet

NOBODY = 65534


def tree(tmp_path: Path) -> Path:
    top = tmp_path / "t"
    (top / "bin").mkdir(parents=True)
    hook = top / "bin" / "hook"
    hook.write_text("#!/bin/sh\n")
    hook.chmod(0o755)
    return top


def test_a_relative_link_and_dotdot_are_walked_and_checked_where_they_lie(tmp_path: Path) -> None:
    top = tree(tmp_path)
    (top / "cur").symlink_to("bin")
    (top / "up").symlink_to("bin/../bin/hook")
    for path in (top / "cur" / "hook", top / "up"):
        fd = vet.open_hook(str(path))
        try:
            assert os.fstat(fd).st_ino == (top / "bin" / "hook").stat().st_ino
        finally:
            os.close(fd)


def test_a_link_owned_by_another_user_is_refused_even_in_a_safe_folder(tmp_path: Path) -> None:
    top = tree(tmp_path)
    (top / "link").symlink_to(top / "bin" / "hook")
    os.lchown(top / "link", NOBODY, NOBODY)
    with pytest.raises(vet.Unsafe, match=f"link {top}/link is owned by uid 65534, not root"):
        vet.open_hook(str(top / "link"))


def test_a_folder_reached_through_a_link_is_checked_too(tmp_path: Path) -> None:
    top = tree(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    os.chown(other, NOBODY, NOBODY)
    (other / "hook").write_text("#!/bin/sh\n")
    (other / "hook").chmod(0o755)
    (top / "link").symlink_to(other)
    with pytest.raises(vet.Unsafe, match=f"folder {other} is owned by uid 65534"):
        vet.open_hook(str(top / "link" / "hook"))


def test_link_loops_end_with_one_line(tmp_path: Path) -> None:
    top = tree(tmp_path)
    (top / "a").symlink_to("b")
    (top / "b").symlink_to("a")
    with pytest.raises(vet.Unsafe, match="more than 40 symbolic links"):
        vet.open_hook(str(top / "a"))


def test_a_hook_with_two_names_or_not_executable_is_refused(tmp_path: Path) -> None:
    top = tree(tmp_path)
    os.link(top / "bin" / "hook", top / "second")
    with pytest.raises(vet.Unsafe, match="2 hard links to it"):
        vet.open_hook(str(top / "bin" / "hook"))
    (top / "plain").write_text("x")
    with pytest.raises(vet.Unsafe, match="not executable"):
        vet.open_hook(str(top / "plain"))


def test_output_paths_refuse_links_fifos_hard_links_and_other_users_files(
        tmp_path: Path) -> None:
    top = tree(tmp_path)
    assert vet.vet_folder(str(top / "new.jsonl"), "kill log") is None
    (top / "link").symlink_to(top / "x")
    os.mkfifo(top / "fifo")
    (top / "owned").write_text("")
    os.chown(top / "owned", NOBODY, NOBODY)
    os.link(top / "bin" / "hook", top / "linked")
    for name, why in (("link", "a symbolic link"), ("fifo", "a FIFO"),
                      ("owned", "owned by uid 65534"), ("linked", "2 hard links")):
        with pytest.raises(vet.Unsafe, match=f"^kill log: .*{why}"):
            vet.vet_folder(str(top / name), "kill log")


def test_writers_never_open_what_is_not_a_regular_file_of_roots(tmp_path: Path) -> None:
    top = tree(tmp_path)
    os.mkfifo(top / "fifo")
    with pytest.raises(vet.Unsafe, match="a FIFO, not a regular file: not written"):
        vet.open_append(str(top / "fifo"), 0o640)  # never blocks: refused before open
    with pytest.raises(vet.Unsafe, match="a FIFO"):
        vet.replace(str(top / "fifo"), b"x", 0o644)
    vet.replace(str(top / "m.prom"), b"bustd_info 1\n", 0o644)
    st = (top / "m.prom").stat()
    assert (st.st_uid, st.st_mode & 0o777, (top / "m.prom").read_bytes()) == (
        0, 0o644, b"bustd_info 1\n")
    assert [p.name for p in top.iterdir() if p.name.endswith(".tmp")] == []
    fd = vet.open_append(str(top / "k.jsonl"), 0o640)
    os.close(fd)
    assert (top / "k.jsonl").stat().st_mode & 0o777 == 0o640 & ~_umask()


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old
