"""Command line: argv -> validated Config, then exec the lean runtime.

This is the only place that knows ``/proc`` is the default root. Parsing and
validation happen here, once, with argparse; the daemon itself then runs as
``python3 -S -I bustd/lean.py`` so argparse, re-validation and ``site`` never
stay resident. Every user error is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .config import DEFAULTS, ENV, EXIT_CONFIG, EXIT_PROC, Config, encode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn, Sequence

__all__ = ["build_config", "main", "parser"]


class UsageError(Exception):
    """An invalid option or value; the message names both."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Raise UsageError (main prints it as one line and exits 2)."""
        raise UsageError(message)


def _number(text: str, low: float, high: float, what: str, whole: str = "") -> float:
    """Return ``text`` as a number in [low, high]; the error quotes ``whole``."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # also rejects nan and inf
        raise argparse.ArgumentTypeError(
            f"invalid value {whole or text!r}: expected {what} from {low:g} to {high:g}")
    return value


def _pair(text: str, low: float, high: float, what: str) -> tuple[float, float | None]:
    term, sep, kill = text.partition(",")
    t = _number(term, low, high, what, text)
    if not sep:
        return t, None
    k = _number(kill, low, high, what, text)
    if k > t:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: the kill level {kill} is above the terminate level {term}")
    return t, k


def percent_pair(text: str) -> tuple[float, float | None]:
    """Parse ``PERCENT[,KILL_PERCENT]``; raises ArgumentTypeError."""
    return _pair(text, 0, 100, "percentages")


def kib_pair(text: str) -> tuple[float, float | None]:
    """Parse ``KiB[,KiB]``; raises ArgumentTypeError."""
    term, kill = _pair(text, 0, 2**53, "KiB sizes")
    if term != int(term) or (kill is not None and kill != int(kill)):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected whole KiB")
    return term, kill


def percent(text: str) -> float:
    """Parse a percentage from 0 to 100; raises ArgumentTypeError."""
    return _number(text, 0, 100, "a percentage")


def seconds(text: str) -> float:
    """Parse a duration from 0 to one day; raises ArgumentTypeError."""
    return _number(text, 0, 86400, "seconds")


def regex(text: str) -> str:
    """Check that ``text`` compiles as a regular expression; raises ArgumentTypeError."""
    import re
    try:
        re.compile(text)
    except re.error as err:
        raise argparse.ArgumentTypeError(f"invalid regular expression {text!r}: {err}") from None
    return text


def globs(text: str) -> str:
    """Check a ``glob|glob`` list; raises ArgumentTypeError."""
    if not text:
        return text
    if any(not g.strip() for g in text.split("|")) or any(c in text for c in "\n\0"):
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: expected names or globs separated by '|'")
    return text


def parser() -> argparse.ArgumentParser:
    """Return the argument parser (its help text documents every option)."""
    p = _Parser(prog="bustd", description=(
        "Prevent out-of-memory freezes: watch MemAvailable, SwapFree and memory "
        "pressure (PSI) and kill the process with the highest oom_score first."),
        epilog="Exit codes: 0 normal, 2 bad option or value, 3 /proc unreadable, "
               "4 pid file in use or unwritable.")
    a = p.add_argument
    a("-m", "--mem", type=percent_pair, metavar="PERCENT[,KILL_PERCENT]",
      help="SIGTERM when MemAvailable <= PERCENT of MemTotal (default 10) and swap is "
           "low too; SIGKILL at KILL_PERCENT (default half of PERCENT)")
    a("-s", "--swap", type=percent_pair, metavar="PERCENT[,KILL_PERCENT]",
      help="swap level that must also be reached: SwapFree <= PERCENT of SwapTotal "
           "(default 10,5); no swap counts as none free")
    a("-M", "--mem-size", type=kib_pair, metavar="KiB[,KiB]",
      help="absolute form of --mem in KiB; with both, the lower applies")
    a("-S", "--swap-size", type=kib_pair, metavar="KiB[,KiB]",
      help="absolute form of --swap in KiB; with both, the lower applies")
    a("-p", "--psi", type=percent, metavar="CUTOFF", default=DEFAULTS["psi_cutoff"],
      help="SIGTERM when memory stall (over the last second) >= CUTOFF percent of "
           "time and MemAvailable <= --psi-mem (default 25; 0 disables PSI)")
    a("--psi-metric", choices=("some", "full"), default=DEFAULTS["psi_metric"],
      help="PSI line to use: some (a task stalled) or full (all stalled); default some")
    a("--psi-mem", type=percent, metavar="PERCENT", default=DEFAULTS["psi_mem_percent"],
      help="pressure may only kill when MemAvailable <= PERCENT of MemTotal (default 15)")
    a("--psi-duration", type=seconds, metavar="SECONDS", default=DEFAULTS["psi_duration"],
      help="pressure kills only when the stall has stayed >= CUTOFF this long (default 4): "
           "a stall the kernel resolves by swapping in less time is not an emergency")
    a("--watch", type=percent, metavar="PERCENT", default=DEFAULTS["watch_percent"],
      help="below this MemAvailable percent (or after a PSI event) sample stall, zram and "
           "the growth of the largest processes at every check (default 25)")
    a("--rank", choices=("growth", "oom_score", "rss"), default=DEFAULTS["rank"],
      help="victim ranking: growth (oom_score plus 30 s of recent growth), oom_score, or "
           "rss (RSS plus swap); default growth")
    a("--sort-by-rss", action="store_const", const="rss", dest="rank",
      help="same as --rank rss (compatibility)")
    a("-u", "--unkillables", type=globs, metavar="'GLOB|GLOB'", default="",
      help="never kill processes whose name or program matches one of these globs")
    a("--ignore", type=regex, metavar="REGEX", default="",
      help="never kill processes whose name matches REGEX")
    a("--prefer", type=regex, metavar="REGEX", default="",
      help="add 300 to the oom_score of processes whose name matches REGEX")
    a("--avoid", type=regex, metavar="REGEX", default="",
      help="subtract 300 from the oom_score of processes whose name matches REGEX")
    a("--grace", type=seconds, metavar="SECONDS", default=DEFAULTS["grace"],
      help="after SIGTERM, wait this long for the exit before SIGKILL (default 0.5)")
    a("-g", "--kill-pgroup", action="store_true",
      help="signal the victim's whole process group (protected members are spared)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("-n", "--no-daemon", action="store_true",
                      help="stay in the foreground (the default; for compatibility)")
    mode.add_argument("--daemon", action="store_true",
                      help="fork to the background and write --pid-file")
    a("--pid-file", metavar="PATH", default=DEFAULTS["pid_file"],
      help="pid file written with --daemon (default /run/bustd.pid)")
    a("--dry-run", action="store_true",
      help="decide and log the kill line, marked as a dry run, but never signal")
    a("-r", "--report", type=seconds, metavar="SECONDS", default=DEFAULTS["report"],
      help="log a status line every SECONDS (default 3600; 0 disables)")
    a("-V", "--verbose", action="store_true", help="also log debug lines")
    a("--version", action="version", version=f"bustd {__version__}")
    a("--proc-root", metavar="PATH", default="/proc",
      help="read this tree instead of /proc (for tests); any other root implies "
           "--dry-run and no PSI trigger")
    a("--sys-root", metavar="PATH", default="/sys",
      help="read zram statistics from this tree instead of /sys (for tests)")
    a("--print-config", action="store_true",
      help="print the effective settings and exit")
    a("-c", "--config", metavar="FILE",
      help="read options from FILE first ('option = value' lines, see "
           "contrib/bustd.conf); options on the command line override them")
    return p


# Options a config file may not set: they act on the command line itself.
_NOT_IN_FILE = frozenset(("config", "help", "version", "print-config"))


def config_file_args(p: argparse.ArgumentParser, path: str) -> list[str]:
    """Return the argv equivalent of config file ``path``.

    Each line is ``option = value`` with the long option name without its
    dashes (``mem = 5,2``; ``dry-run = true`` for a flag); ``#`` starts a
    comment. Raises UsageError naming the file, line and option.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"config file {path}: {getattr(err, 'strerror', None) or err}") from None
    flags = {a.option_strings[-1][2:]: a for a in p._actions
             if a.option_strings and a.option_strings[-1].startswith("--")}
    argv: list[str] = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        where = f"{path}:{number}"
        key, sep, value = (part.strip() for part in text.partition("="))
        key = key.replace("_", "-")
        if not sep or not key:
            raise UsageError(f"{where}: expected 'option = value', got {text[:60]!r}")
        action = flags.get(key)
        if action is None or key in _NOT_IN_FILE:
            raise UsageError(f"{where}: unknown option {key!r}")
        if action.nargs == 0:  # a flag
            if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
                raise UsageError(f"{where}: {key}: expected true or false, got {value!r}")
            item = [f"--{key}"] if value.lower() in ("true", "yes", "1") else []
        else:
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            item = [f"--{key}={value}"]
        try:
            p.parse_args(item)
        except UsageError as err:
            raise UsageError(f"{where}: {err}") from None
        argv += item
    return argv


def build_config(args: argparse.Namespace) -> Config:
    """Return the Config for parsed ``args``.

    The kill level defaults to half the terminate level. An absolute size
    given without its percentage form applies alone.
    """
    values: dict[str, object] = {}

    def levels(name: str, pct: tuple[float, float | None] | None,
               kib: tuple[float, float | None] | None) -> None:
        if pct is not None:
            values[f"{name}_term_percent"] = pct[0]
            values[f"{name}_kill_percent"] = pct[0] / 2 if pct[1] is None else pct[1]
        elif kib is not None:
            values[f"{name}_term_percent"] = values[f"{name}_kill_percent"] = 100.0
        if kib is not None:
            values[f"{name}_term_kib"] = int(kib[0])
            values[f"{name}_kill_kib"] = int(kib[0]) // 2 if kib[1] is None else int(kib[1])

    levels("mem", args.mem, args.mem_size)
    levels("swap", args.swap, args.swap_size)
    root = os.path.normpath(args.proc_root)
    return Config(
        **values, psi_cutoff=args.psi, psi_metric=args.psi_metric,
        psi_mem_percent=args.psi_mem, psi_duration=args.psi_duration,
        watch_percent=args.watch, rank=args.rank,
        unkillables=args.unkillables, ignore=args.ignore, prefer=args.prefer,
        avoid=args.avoid, grace=args.grace, kill_pgroup=args.kill_pgroup,
        dry_run=args.dry_run or root != "/proc", daemon=args.daemon,
        pid_file=os.path.abspath(args.pid_file), report=args.report,
        verbose=args.verbose, proc_root=root, sys_root=os.path.normpath(args.sys_root))


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, then replace this process with the lean runtime.

    Returns an exit code only when not exec'ing (--print-config, errors).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    p = parser()
    try:
        args = p.parse_args(argv)
        if args.config is not None:
            args = p.parse_args([*config_file_args(p, args.config), *argv])
        cfg = build_config(args)
    except UsageError as err:
        print(f"bustd: error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    meminfo = os.path.join(cfg.proc_root, "meminfo")
    if not os.access(meminfo, os.R_OK):
        print(f"bustd: error: cannot read {meminfo}: is --proc-root a /proc tree?",
              file=sys.stderr)
        return EXIT_PROC
    if args.print_config:
        for key in DEFAULTS:
            print(f"{key} = {getattr(cfg, key)!r}")
        return 0
    package = os.path.dirname(os.path.abspath(__file__))
    # Make sure the runtime's .pyc files exist (even under
    # PYTHONDONTWRITEBYTECODE): a runtime that must compile its modules keeps
    # ~1 MiB more resident (bench/README.md). A read-only tree is left as is.
    import compileall
    compileall.compile_dir(package, maxlevels=0, quiet=2)
    python = sys.executable or "python3"
    lean = os.path.join(package, "lean.py")
    os.environ[ENV] = encode(cfg)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(python, [python, "-S", "-I", lean, *argv])
