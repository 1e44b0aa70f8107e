"""bustd(8) and --help come from the same option definitions, and the shipped
man/bustd.8 is what the generator writes.

The comparison parses the man page back (``.TP`` entries) and checks, both
ways, that every option of ``options.parser()`` and of ``bustd check`` appears
with its metavar and help text, and nothing else does.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bustd import manpage, options

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "man" / "bustd.8"

Entries = dict[tuple[str, ...], tuple[str, str]]


def unroff(text: str) -> str:
    """Return roff text as plain text (fonts dropped, escapes resolved)."""
    text = re.sub(r"\\f[BIRP]", "", text)
    return text.replace("\\-", "-").replace("\\&", "").replace("\\e", "\\")


def man_entries(text: str, section: str) -> Entries:
    """Return {option strings: (metavar, help)} of the ``.TP`` entries in ``section``."""
    body = text.split(f".SH {section}\n", 1)[1].split("\n.SH ", 1)[0]
    out: Entries = {}
    for block in body.split(".TP\n")[1:]:
        head, *rest = block.split("\n")
        words = unroff(head).split(", ")
        *names, last = words
        flag, _, metavar = last.partition(" ")
        help_text = " ".join(unroff(" ".join(rest)).split())
        out[tuple([*names, flag])] = (metavar, help_text)
    return out


def parser_entries(p: argparse.ArgumentParser, only: set[str] | None = None) -> Entries:
    """Return {option strings: (metavar, help)} as ``--help`` shows them."""
    formatter = p._get_formatter()
    out: Entries = {}
    for a in p._actions:
        if not a.option_strings or (only is not None and not set(a.option_strings) & only):
            continue
        metavar = "" if a.nargs == 0 else formatter._format_args(a, a.dest.upper())
        out[tuple(a.option_strings)] = (metavar, " ".join(formatter._expand_help(a).split()))
    return out


def check_only() -> set[str]:
    daemon = {s for a in options.parser()._actions for s in a.option_strings}
    return {s for a in options.check_parser()._actions for s in a.option_strings} - daemon


def disagreements(text: str) -> list[str]:
    """Return every option that differs between ``text`` and the parsers (both ways)."""
    problems = []
    for section, want in (("OPTIONS", parser_entries(options.parser())),
                          ("CHECK OPTIONS", parser_entries(options.check_parser(), check_only()))):
        have = man_entries(text, section)
        for key in sorted(set(want) | set(have)):
            if want.get(key) != have.get(key):
                problems.append(f"{section} {'/'.join(key)}: --help {want.get(key)!r}, "
                                f"man page {have.get(key)!r}")
    return problems


def test_man_page_and_help_agree_both_ways() -> None:
    text = SHIPPED.read_text()
    assert disagreements(text) == []
    assert len(man_entries(text, "OPTIONS")) == len(
        [a for a in options.parser()._actions if a.option_strings])
    assert set(man_entries(text, "CHECK OPTIONS")) == {("--json",), ("--interval",), ("--top",)}


def test_shipped_man_page_is_the_generated_one() -> None:
    assert SHIPPED.read_text() == manpage.render(), (
        "man/bustd.8 is out of date: run python3 -m bustd.manpage man/bustd.8")


def test_the_comparison_can_fail() -> None:
    text = manpage.render()
    # An option missing from the man page, one the parser lacks, a changed help text.
    missing = re.sub(r"\.TP\n\\fB\\-\\-grace\\fR[^\n]*\n[^\n]*\n", "", text)
    assert missing != text
    assert disagreements(missing) == [
        "OPTIONS --grace: --help ('SECONDS', 'after SIGTERM, wait this long for the exit "
        "before SIGKILL (default 0.5; at most 10 together with --hook-timeout)'), man page "
        "None"]
    extra = text.replace(".SH CHECK OPTIONS\n",
                         ".TP\n\\fB\\-\\-frobnicate\\fR\nfrob\n.SH CHECK OPTIONS\n")
    assert disagreements(extra) == [
        "OPTIONS --frobnicate: --help None, man page ('', 'frob')"]
    changed = text.replace("print the effective settings and exit", "print settings")
    assert len(disagreements(changed)) == 1


def test_man_page_renders_without_warnings() -> None:
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed: rendering not checked")
    out = subprocess.run(["groff", "-man", "-ww", "-z", str(SHIPPED)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert (out.returncode, out.stderr) == (0, "")


def test_generator_writes_a_file(tmp_path: Path) -> None:
    assert manpage.main([str(tmp_path / "bustd.8")]) == 0
    assert (tmp_path / "bustd.8").read_text() == manpage.render()
    assert manpage.render().startswith('.TH BUSTD 8 "" "bustd ')


def test_the_sighup_entry_names_every_option_a_reload_keeps() -> None:
    """SIGHUP's entry lists exactly the options reload.FIXED_AT_START keeps until a restart."""
    from bustd.reload import FIXED_AT_START

    body = unroff(manpage.render().split(".B SIGHUP\n", 1)[1].split(".TP\n", 1)[0])
    kept = body.split("the option. ", 1)[1].split(" keep their values", 1)[0]
    named = set(re.findall(r"--[a-z-]+", kept))
    want = {o.flags[-1] for o in options.OPTIONS if set(o.keys) & set(FIXED_AT_START)}
    assert named == want and len(want) == len(FIXED_AT_START)
