"""The manual page bustd(8), generated from the option definitions of ``--help``.

``python3 -m bustd.manpage man/bustd.8`` writes it (no argument: to stdout).
Every option of :func:`options.parser` and of the ``check`` group of
:func:`options.check_parser` appears with its metavar and help text exactly as
``--help`` shows them; the prose around them is here. The test suite fails
when the shipped man/bustd.8 differs from what this module writes, and
checks the installed copy after ``pip install .``.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .options import CHECK, OPTIONS, check_parser, parser

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Sequence

__all__ = ["check_options", "daemon_options", "escape", "fixed_at_start", "main", "option_entries",
           "render"]

_SECTIONS_BEFORE = r"""
.SH SYNOPSIS
.B bustd
[\fIOPTIONS\fR]
.br
.B bustd check
[\fIOPTIONS\fR] [\fB\-\-json\fR] [\fB\-\-interval\fR \fISECONDS\fR] [\fB\-\-top\fR \fIN\fR]
.SH DESCRIPTION
{description}
.PP
Every check reads \fBMemAvailable\fR and \fBSwapFree\fR from \fI/proc/meminfo\fR.
When both are at or below their terminate levels bustd sends SIGTERM to the
best\-ranked process, and SIGKILL when both are at their kill levels. A swap
device on zram counts by the RAM it can still give back. When the memory stall
of \fI/proc/pressure/memory\fR has stayed at or above \fB\-\-psi\fR percent for
\fB\-\-psi\-duration\fR seconds and MemAvailable is at or below \fB\-\-psi\-mem\fR,
it sends SIGTERM too. Victims are ranked by \fBoom_score\fR plus 30 s of their
recent growth (\fB\-\-rank\fR); bustd itself, PID 1, kernel threads, processes
with \fBoom_score_adj\fR \-1000 and executables matching \fB\-\-unkillables\fR or
\fB\-\-ignore\fR are never killed. Each kill is one log line on stderr (with
syslog priorities under the systemd journal).
.PP
\fBpython3 \-m bustd\fR is the same program as \fBbustd\fR. The daemon validates its
options, then replaces itself with a lean runtime
(\fBpython3 \-S \-I .../bustd/lean.py\fR) that stays under 10 MiB resident.
.SH CHECK
\fBbustd check\fR [\fIOPTIONS\fR] (the word \fBcheck\fR first):
{check_description}
.PP
It takes every option of the daemon and its \fB\-\-config\fR file, so
\fBbustd check \-c /etc/bustd.conf \-\-mem 5\fR reports what that daemon would
use; \fB\-\-daemon\fR and \fB\-\-pid\-file\fR have no effect there.
.SH OPTIONS
""".strip("\n")

_SECTIONS_AFTER = r"""
.SH CONFIGURATION FILE
\fB\-\-config\fR \fIFILE\fR reads \fBoption = value\fR lines first, the long option
name without its dashes (\fBmem = 5,2\fR, \fBdry\-run = true\fR). A line starting with
\fB#\fR is a comment, and so is the rest of a line from a \fB#\fR that follows a space
or tab; a value in single or double quotes may hold a \fB#\fR after a space. Options on the command
line override the file. The file must be a regular file of at most 1 MiB, owned by
root or by the user bustd runs as, and not writable by group or others; errors
name the file, the line and the option.
.SH SIGNALS
.TP
.B SIGHUP
Read the command line and the \fB\-\-config\fR file again, as at start (the daemon
runs the front end in a validate\-only mode), and apply the new settings from the
next check. A bad file keeps the running configuration and logs one line naming
the file, the line and the option. {fixed} keep their values until a restart.
.TP
.BR SIGTERM ", " SIGINT
Stop (a kill under way is finished and logged first); exit status 0.
.SH EXIT STATUS
.TP
.B 0
Normal exit (SIGTERM, SIGINT); \fBbustd check\fR printed its report.
.TP
.B 2
An invalid option or value, or a config file refused.
.TP
.B 3
\fI/proc\fR (or \fB\-\-proc\-root\fR) unreadable.
.TP
.B 4
The pid file is in use or cannot be written (\fB\-\-daemon\fR).
.SH FILES
.TP
.I /etc/bustd.conf
The config file the shipped systemd unit passes with \fB\-\-config\fR.
.TP
.I /run/bustd.pid
The default \fB\-\-pid\-file\fR.
.TP
.IR /proc/meminfo ", " /proc/pressure/memory ", " /proc/swaps ", " /sys/block/zram*/mm_stat
What bustd reads.
.SH SEE ALSO
.BR proc (5),
.BR systemd.service (5),
the kernel's \fIDocumentation/accounting/psi.rst\fR and
\fIDocumentation/admin\-guide/blockdev/zram.rst\fR, and \fIREADME.md\fR of bustd.
""".strip("\n")


def escape(text: str) -> str:
    """Return ``text`` for roff: backslashes and hyphens escaped, no line starting with '.'."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line
                     for line in text.split("\n"))


def option_entries(p: argparse.ArgumentParser, actions: Sequence[argparse.Action]
                   ) -> list[tuple[list[str], str, str]]:
    """Return (option strings, metavar text, help text) of each option, as --help has them."""
    formatter = p._get_formatter()
    out = []
    for action in actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        metavar = ("" if action.nargs == 0
                   else formatter._format_args(action, action.dest.upper()))
        help_text = formatter._expand_help(action) if action.help else ""
        out.append((list(action.option_strings), metavar, " ".join(help_text.split())))
    return out


def daemon_options() -> list[tuple[list[str], str, str]]:
    """Return the entries of every option of :func:`options.parser`."""
    p = parser()
    return option_entries(p, p._actions)


def check_options() -> list[tuple[list[str], str, str]]:
    """Return the entries of the options only ``bustd check`` has."""
    p = check_parser()
    daemon = {s for a in parser()._actions for s in a.option_strings}
    return option_entries(p, [a for a in p._actions
                              if a.option_strings and not set(a.option_strings) & daemon])


def _entry(strings: list[str], metavar: str, help_text: str) -> str:
    names = ", ".join(f"\\fB{escape(s)}\\fR" for s in strings)
    arg = f" \\fI{escape(metavar)}\\fR" if metavar else ""
    return f".TP\n{names}{arg}\n{escape(help_text)}"


def fixed_at_start() -> str:
    """Return, in roff, the options a reload cannot change (the table's reload=False rows)."""
    names = [f"\\fB{escape(o.flags[-1])}\\fR" for o in OPTIONS if not o.reload]
    return ", ".join(names[:-1]) + " and " + names[-1]


def render() -> str:
    """Return the text of bustd(8) in roff (man(7) macros)."""
    p, c = parser(), check_parser()
    head = (f'.TH BUSTD 8 "" "bustd {__version__}" "System Administration"\n'
            f".SH NAME\nbustd \\- prevent out\\-of\\-memory freezes by killing the right "
            f"process early")
    body = _SECTIONS_BEFORE.format(description=escape(p.description or ""),
                                   check_description=escape(c.description or ""))
    options = "\n".join(_entry(*e) for e in daemon_options())
    checks = "\n".join(_entry(*e) for e in check_options())
    return (f"{head}\n{body}\n{options}\n.SH CHECK OPTIONS\n"
            f"Only after \\fB{CHECK}\\fR, besides the options above:\n{checks}\n"
            f"{_SECTIONS_AFTER.format(fixed=fixed_at_start())}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Write bustd(8) to the path in ``argv`` (stdout without one); returns 0."""
    args = list(sys.argv[1:] if argv is None else argv)
    text = render()
    if args:
        with open(args[0], "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
