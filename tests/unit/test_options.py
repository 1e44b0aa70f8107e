"""The option table (options.py) agrees with the Config, the reload rule and the documentation.

Adding an option is one row in the table, a key in config.DEFAULTS and its
documentation: these tests fail until all of them agree.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from bustd import cli, manpage, options
from bustd.config import DEFAULTS, Config
from bustd.options import CHECK_OPTIONS, OPTIONS
from bustd.reload import FIXED_AT_START

REPO = Path(__file__).resolve().parents[2]
# In-file options contrib/bustd.conf leaves out on purpose: the unit runs
# bustd in the foreground with its own pid file handling, the roots are for
# tests, --sort-by-rss is a compatibility spelling of --rank, and the
# default avoid list is too long to show (--print-config shows it).
NOT_IN_SHIPPED_CONF = {"daemon", "no-daemon", "pid-file", "proc-root", "sys-root",
                       "sort-by-rss", "default-avoid"}


def test_every_config_key_has_exactly_one_row() -> None:
    keys = Counter(key for row in OPTIONS for key in row.keys)
    assert set(keys) == set(DEFAULTS)
    assert [key for key, n in keys.items() if n != 1] == []
    assert all(not row.keys for row in CHECK_OPTIONS)  # check's own options set nothing


def _text(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@pytest.mark.parametrize("row", [row for row in OPTIONS if row.keys and row.default is not None],
                         ids=lambda row: row.flags[-1])
def test_the_default_of_a_row_is_the_config_default(row: options.Option) -> None:
    assert len(row.keys) == 1 and row.dest == row.keys[0], row.flags
    assert row.default == DEFAULTS[row.keys[0]]
    assert type(row.default) is type(DEFAULTS[row.keys[0]])


def test_no_options_build_the_default_config() -> None:
    """Also for the rows without a default (None: not given), whose keys keep the Config's."""
    assert cli.build_config(options.parser().parse_args([])) == Config()


@pytest.mark.parametrize("row", OPTIONS + CHECK_OPTIONS, ids=lambda row: row.flags[-1])
def test_a_default_the_help_names_is_the_default(row: options.Option) -> None:
    said = [d for d in re.findall(r"(?:\(|; )default ([^\s;):]+)", row.help) if d != "half"]
    if row.default is not None:
        expected = {_text(row.default)}
    elif row.keys:
        expected = {_text(DEFAULTS[row.keys[0]]), ",".join(_text(DEFAULTS[k]) for k in row.keys)}
    else:
        expected = set()
    assert set(said) <= expected, (said, expected)


def test_the_reloadable_flag_is_fixed_at_start() -> None:
    fixed = {key for row in OPTIONS if not row.reload for key in row.keys}
    assert fixed == set(FIXED_AT_START)
    assert all(row.keys for row in OPTIONS if not row.reload)


def test_the_parsers_have_the_rows_in_the_table_order() -> None:
    daemon = [tuple(a.option_strings) for a in options.parser()._actions]
    assert daemon == [("-h", "--help"), *(row.flags for row in OPTIONS)]
    check = [tuple(a.option_strings) for a in options.check_parser()._actions]
    assert check == [*daemon, *(row.flags for row in CHECK_OPTIONS)]


def test_a_config_file_may_set_every_option_but_four() -> None:
    assert {row.flags[-1] for row in OPTIONS if not row.in_file} == {
        "--version", "--print-config", "--config"}
    assert all(not row.in_file for row in CHECK_OPTIONS)
    assert all(row.flags[-1].startswith("--") for row in OPTIONS + CHECK_OPTIONS)


def test_the_man_page_lists_every_row() -> None:
    page = manpage.render()
    for section, rows, more in (("OPTIONS", OPTIONS, 1), ("CHECK OPTIONS", CHECK_OPTIONS, 0)):
        body = page.split(f"\n.SH {section}\n", 1)[1].split("\n.SH ", 1)[0]
        entries = re.findall(r"^\.TP\n(.*)$", body, re.M)
        for row in rows:
            names = ", ".join(f"\\fB{manpage.escape(flag)}\\fR" for flag in row.flags)
            assert any(entry.startswith(names) for entry in entries), row.flags
        assert len(entries) == len(rows) + more  # the daemon's -h/--help besides


def test_the_readme_table_lists_every_row() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme.split("\n## Options\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    for row in OPTIONS:
        assert any(f"`{row.flags[-1]}" in line for line in rows), row.flags
    assert len(rows) == len(OPTIONS)
    for row in CHECK_OPTIONS:
        assert f"`{row.flags[-1]}" in table, row.flags


def test_the_shipped_config_file_shows_every_option_it_may() -> None:
    text = (REPO / "contrib" / "bustd.conf").read_text()
    shown = set(re.findall(r"^#? ?([a-z][a-z-]*) = ", text, re.M))
    may = {row.flags[-1][2:] for row in OPTIONS if row.in_file}
    assert shown <= may
    assert may - shown == NOT_IN_SHIPPED_CONF
