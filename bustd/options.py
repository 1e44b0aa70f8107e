"""The option table: one row per option, from which the front end is built.

A row gives the option's flags, the Config keys it sets, how its value is
read (a type of optvalues.py, choices, or none for a flag), its metavar,
default and help, and whether a reload may change it. From it come
:func:`parser` (``--help``) and :func:`check_parser`, so the man page
(manpage.py); the names a config file may use (conffile.py); and the
mapping to the Config (cli.build_config). Front end only: config.py stays
free of the help texts, which never become resident in the runtime.
"""

from __future__ import annotations

import argparse
import os

from . import __version__
from . import optvalues as value
from .config import CHOICES, DEFAULTS
from .optvalues import MAX_KILL_WAIT, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, NoReturn, Sequence

__all__ = ["CHECK", "CHECK_OPTIONS", "CONFIG", "OPTIONS", "Option", "check_parser", "parse_args",
           "parser"]

CHECK = "check"  # the subcommand: ``bustd check [OPTIONS]``
_OUT, _CGROUP, _CHECK = "telling people and machines", "cgroup v2", "check options"  # sections
_MODE = "mode"  # -n and --daemon: one excludes the other
CONFIG = object()  # a row's default: its Config key's, config.DEFAULTS (one source)


class Option:
    """One row of the table (see the module docstring)."""

    __slots__ = ("flags", "keys", "parse", "metavar", "default", "help", "action", "reload",
                 "group", "dest", "in_file")

    def __init__(self, flags: str, keys: str, parse: Callable[[str], Any] | tuple[str, ...]
                 | str | None, metavar: str | None, default: object, help: str, *,
                 action: str = "store", reload: bool = True, group: str = "", dest: str = "",
                 in_file: bool = True) -> None:
        self.flags = tuple(flags.split())
        self.keys = tuple(keys.split())  # the Config keys it sets (none: it sets none)
        self.parse = parse  # a type, the choices, None (a plain string or a flag), a const
        self.metavar = metavar
        # None: not given (its Config default applies); CONFIG: config.DEFAULTS's
        self.default = DEFAULTS[self.keys[0]] if default is CONFIG else default
        self.help = help
        self.action = action
        self.reload = reload  # False: kept until a restart (reload.FIXED_AT_START)
        self.group = group
        self.dest = dest or (self.keys[0] if len(self.keys) == 1 else "")
        self.in_file = in_file  # a config file may set it


def _flag(flags: str, keys: str, help: str, **more: Any) -> Option:
    return Option(flags, keys, None, None, False, help, action="store_true", **more)


OPTIONS = (
    Option("-m --mem", "mem_term_percent mem_kill_percent", value.percent_pair,
           "PERCENT[,KILL_PERCENT]", None,
           "SIGTERM when MemAvailable <= PERCENT of user memory (MemAvailable + "
           "AnonPages, as earlyoom 1.8: memory in tmpfs or shared memory, which no kill "
           "frees, is left out; default 10) and swap is low too; SIGKILL at KILL_PERCENT "
           "(default half of PERCENT)"),
    Option("-s --swap", "swap_term_percent swap_kill_percent", value.percent_pair,
           "PERCENT[,KILL_PERCENT]", None,
           "swap level that must also be reached: SwapFree <= PERCENT of SwapTotal "
           "(default 10,5); no swap counts as none free"),
    Option("-M --mem-size", "mem_term_kib mem_kill_kib", value.kib_pair, "KiB[,KiB]", None,
           "absolute form of --mem in KiB; with both, the lower applies"),
    Option("-S --swap-size", "swap_term_kib swap_kill_kib", value.kib_pair, "KiB[,KiB]", None,
           "absolute form of --swap in KiB; with both, the lower applies"),
    Option("-p --psi", "psi_cutoff", value.percent, "CUTOFF", CONFIG,
           "SIGTERM when memory stall (over the last second) >= CUTOFF percent of "
           "time and MemAvailable <= --psi-mem (default 25; 0 disables PSI)"),
    Option("--psi-metric", "psi_metric", CHOICES["psi_metric"], None, CONFIG,
           "PSI line to use: some (a task stalled) or full (all stalled); default some"),
    Option("--psi-mem", "psi_mem_percent", value.percent, "PERCENT", CONFIG,
           "pressure may only kill when MemAvailable <= PERCENT of MemTotal (default 15)"),
    Option("--psi-duration", "psi_duration", value.seconds, "SECONDS", CONFIG,
           "pressure kills only once the machine has thrashed this long (default 5): the "
           "stall >= CUTOFF and, with swap, pages swapped back in at >= --swapin-rate and at "
           "least 0.6 as fast as they go out, all along; 0 acts on one reading"),
    Option("--swapin-rate", "swapin_rate", value.mib_rate, "MiB/s", CONFIG,
           "with swap, the swap-in rate that makes a stall thrashing (default 1), with "
           "swap-ins at least 0.6 of swap-outs; a stall while more pages go out than come "
           "back (a program growing into zram) never kills; 0: the stall alone"),
    Option("--watch", "watch_percent", value.percent, "PERCENT", CONFIG,
           "below this MemAvailable percent (or after a PSI event) sample stall, zram and "
           "the growth of the largest processes at every check (default 25)"),
    Option("--rank", "rank", CHOICES["rank"], None, CONFIG,
           "victim ranking: growth (oom_score plus 30 s of recent growth), oom_score, or "
           "rss (RSS plus swap); default growth"),
    Option("--sort-by-rss", "", "rss", None, None, "same as --rank rss (compatibility)",
           action="store_const", dest="rank"),
    Option("-u --unkillables", "unkillables", value.globs, "'GLOB|GLOB'", CONFIG,
           "never kill processes whose executable matches one of these globs: the whole "
           "real path for a glob with a '/', else the name of a root-owned executable in "
           "root-owned folders (what no other user can forge)"),
    Option("--ignore", "ignore", value.regex, "REGEX", CONFIG,
           "never kill processes whose executable matches REGEX (as --unkillables: "
           "the whole path with a '/', else the name of a root-owned executable)"),
    Option("--prefer", "prefer", value.regex, "REGEX", CONFIG,
           "add 300 to the oom_score of processes whose executable matches REGEX"),
    Option("--avoid", "avoid", value.regex, "REGEX", CONFIG,
           "subtract 300 from the oom_score of processes whose executable matches REGEX "
           "(as --ignore)"),
    Option("--default-avoid", "default_avoid", value.real_paths, "'PATH|PATH'", CONFIG,
           "executables (real paths, globs) avoided unless no other candidate frees "
           "what the emergency needs; the default lists init, display servers, "
           "compositors, desktop shells, session and display managers, logind, D-Bus, sshd "
           "and package managers (see --print-config); '' clears it"),
    Option("--grace", "grace", value.grace, "SECONDS", CONFIG,
           "after SIGTERM, wait this long for the exit before SIGKILL (default 0.5; at "
           f"most {MAX_KILL_WAIT:g} together with --hook-timeout)"),
    _flag("-g --kill-pgroup", "kill_pgroup",
          "signal the victim's whole process group (protected members are spared)"),
    _flag("-n --no-daemon", "", "stay in the foreground (the default; for compatibility)",
          group=_MODE),
    _flag("--daemon", "daemon", "fork to the background and write --pid-file", group=_MODE,
          reload=False),
    Option("--pid-file", "pid_file", value.path, "PATH", CONFIG,
           "pid file written with --daemon (default /run/bustd.pid)", reload=False),
    _flag("--dry-run", "dry_run",
          "decide and log the kill line, marked as a dry run, but never signal"),
    Option("-r --report", "report", value.seconds, "SECONDS", CONFIG,
           "log a status line every SECONDS (default 3600; 0 disables)"),
    _flag("-V --verbose", "verbose", "also log debug lines"),
    Option("--version", "", None, None, None, "", action="version", in_file=False),
    Option("--proc-root", "proc_root", value.path, "PATH", CONFIG,
           "read this tree instead of /proc (for tests); any other root implies "
           "--dry-run and no PSI trigger", reload=False),
    Option("--sys-root", "sys_root", value.path, "PATH", CONFIG,
           "read zram statistics from this tree instead of /sys (for tests)"),
    _flag("--print-config", "", "print the effective settings and exit", in_file=False),
    Option("-c --config", "", None, "FILE", None,
           "read options from FILE first ('option = value' lines, see "
           "contrib/bustd.conf); options on the command line override them", in_file=False),
    # Warnings, notifications, hooks, kill log and metrics (issue 8).
    Option("--warn", "warn_percent", value.percent, "PERCENT", CONFIG,
           "warn (log line, notification, metrics) when MemAvailable and SwapFree fall to "
           "PERCENT, or the stall reaches half of --psi below --psi-mem, naming the likely "
           "victim; again only after memory recovered (default 0: off)", group=_OUT),
    _flag("-N --notify", "notify",
          "desktop notification of each kill and warning to every user with a session "
          "bus (/run/user/UID/bus)", group=_OUT, reload=False),
    _flag("--notify-owner-only", "notify_owner_only",
          "notify only the victim's owner (implies --notify)", group=_OUT, reload=False),
    Option("--pre-kill-hook", "pre_kill_hook", value.hook, "PATH", None,
           "run PATH (no shell; victim in BUSTD_* environment variables) before each "
           "signal, waiting at most --hook-timeout", group=_OUT, reload=False),
    Option("--post-kill-hook", "post_kill_hook", value.hook, "PATH", None,
           "run PATH after each kill (not waited for)", group=_OUT, reload=False),
    Option("--hook-timeout", "hook_timeout", value.hook_timeout, "SECONDS", CONFIG,
           "longest wait for the pre-kill hook before the signal (default 0.2)", group=_OUT,
           reload=False),
    Option("--kill-log", "kill_log", value.output_file, "FILE", None,
           "append one JSON object per kill to FILE", group=_OUT, reload=False),
    Option("--metrics-file", "metrics_file", value.metrics_file, "PATH", None,
           "write Prometheus metrics to PATH (*.prom, for node_exporter's textfile "
           "collector) at most every 5 s", group=_OUT, reload=False),
    # cgroup v2 (issue 9).
    Option("--cgroup", "cgroup", value.path, "PATH", None,
           "watch this cgroup v2 subtree instead of the machine (e.g. "
           "/sys/fs/cgroup/system.slice/foo.service): memory.current against "
           "memory.max (or memory.high) as MemAvailable against MemTotal, its "
           "memory.pressure as PSI, and victims only among its processes; "
           "kept until a restart", group=_CGROUP, reload=False),
    _flag("--kill-cgroup", "kill_cgroup",
          "kill the victim's whole cgroup at once with cgroup.kill (Linux "
          ">= 5.14, always SIGKILL); where that is not possible (an older "
          "kernel, a cgroup holding bustd, PID 1 or a protected process) its "
          "killable processes are signalled one by one, and the log says why", group=_CGROUP),
)

# What only ``bustd check`` takes: how to report, no setting of the daemon.
CHECK_OPTIONS = (
    _flag("--json", "", "print one JSON document (schema: docs/check-schema.json) instead "
          "of the report", group=_CHECK, in_file=False),
    Option("--interval", "", value.seconds, "SECONDS", 1.0,
           "sample the stall and the growth of the largest processes over this "
           "long (default 1; 0 reads once: no stall rate, no growth)", group=_CHECK,
           in_file=False),
    Option("--top", "", value.count, "N", 10,
           "show the first N candidates in kill order (default 10; 0 shows all)",
           group=_CHECK, in_file=False),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Raise UsageError (main prints it as one line and exits 2)."""
        raise UsageError(message)


def _add(p: argparse.ArgumentParser, rows: Sequence[Option]) -> None:
    """Add ``rows`` to ``p``, each in its help section, in the table's order."""
    sections: dict[str, Any] = {"": p}
    for row in rows:
        if row.group not in sections:
            sections[row.group] = (p.add_mutually_exclusive_group() if row.group == _MODE
                                   else p.add_argument_group(row.group))
        more: dict[str, Any] = {"dest": row.dest} if row.dest else {}
        if row.action == "store":
            more["choices" if isinstance(row.parse, tuple) else "type"] = row.parse
            more.update(metavar=row.metavar, default=row.default)
        elif row.action == "store_const":
            more["const"] = row.parse
        elif row.action == "version":
            more["version"] = f"bustd {__version__}"
        else:
            more["default"] = row.default
        if row.help:
            more["help"] = row.help
        sections[row.group].add_argument(*row.flags, action=row.action, **more)


def parser() -> argparse.ArgumentParser:
    """Return the argument parser of the daemon (its help text documents every option)."""
    p = _Parser(prog="bustd", description=(
        "Prevent out-of-memory freezes: watch MemAvailable, SwapFree and memory "
        "pressure (PSI) and kill the process with the highest oom_score first."),
        epilog="'bustd check [OPTIONS]' prints what bustd sees and would do now, with the "
               "same options, and never signals (see 'bustd check --help'). SIGHUP makes "
               "the daemon read --config again; SIGTERM and SIGINT stop it. "
               "Exit codes: 0 normal, 2 bad option or value, 3 /proc unreadable, "
               "4 pid file in use or unwritable.")
    _add(p, OPTIONS)
    return p


def check_parser() -> argparse.ArgumentParser:
    """Return the parser of ``bustd check``: every daemon option, then its own group.

    The daemon's options (and ``--config``) give the settings to report, so
    ``bustd check -c /etc/bustd.conf --mem 5`` shows what that daemon would
    use; options that only shape the daemon process (``--daemon``,
    ``--pid-file``) are accepted and have no effect.
    """
    # A new parser with the daemon's options copied in (``parents``): the
    # daemon's parser itself is left as it is.
    p = _Parser(
        prog=f"bustd {CHECK}", parents=[parser()], add_help=False, description=(
            "Print what bustd sees and would do right now: memory, swap (zram at its RAM "
            "worth), memory pressure, the thresholds in force, the decision and why, the "
            "candidates in kill order and the processes that are never killed. It takes "
            "the daemon's options and config file, reads /proc only, and never signals "
            "anything: it is safe to run anywhere."),
        epilog="Exit codes: 0 report printed, 2 bad option or value, 3 /proc unreadable. "
               "The --json document is described in docs/check.md.")
    _add(p, CHECK_OPTIONS)
    return p


def parse_args(p: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Return ``p.parse_args(argv)``; raises UsageError.

    argparse reads a value that is exactly ``--`` (``--ignore=--``) as the
    end of the options and hands the option an empty list instead: that is
    refused here, not left to crash further on.
    """
    args = p.parse_args(argv)
    if getattr(args, "kill_cgroup", False) and getattr(args, "kill_pgroup", False):
        raise UsageError("argument --kill-cgroup: not allowed with --kill-pgroup (a "
                         "cgroup and a process group are two different units: choose one)")
    for action in p._actions:
        if action.option_strings and isinstance(getattr(args, action.dest, None), list):
            raise UsageError(f"argument {'/'.join(action.option_strings)}: invalid value "
                             "'--': a value cannot be '--' alone")
    wait = getattr(args, "grace", 0.0) + getattr(args, "hook_timeout", 0.0)
    if wait > MAX_KILL_WAIT:
        raise UsageError(f"argument --grace: {args.grace:g} s with --hook-timeout "
                         f"{args.hook_timeout:g} s: more than the {MAX_KILL_WAIT:g} s a kill "
                         "may wait (the loop and systemd's watchdog keep their rhythm)")
    if getattr(args, "daemon", False):  # only --daemon writes it
        _pid_file_folders(args.pid_file)
    return args


def _pid_file_folders(text: str) -> None:
    """Check the folders and links above pid file ``text`` as for a hook; raises UsageError.

    What is at the path itself (a FIFO, a directory, a running bustd's pid)
    and a missing folder are the runtime's to refuse, with exit code 4.
    """
    from .vet import Missing, Unsafe, resolve
    try:
        folder, _, _, _ = resolve(os.path.abspath(text), last_may_link=False)
    except Missing:
        return
    except Unsafe as err:
        raise UsageError(f"argument --pid-file: {text}: {err}") from None
    os.close(folder)
