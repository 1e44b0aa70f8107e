"""Command line: argv -> validated Config, then exec the lean runtime.

This is the only place that knows ``/proc`` is the default root. Parsing and
validation happen here, once, with argparse; the daemon itself then runs as
``python3 -S -I bustd/lean.py`` so argparse, re-validation and ``site`` never
stay resident. Every user error is one line on stderr and exit code 2: never
a traceback, which exits 1 and so escapes the unit's
``RestartPreventExitStatus=2 3 4`` (systemd would restart a misconfigured
bustd for ever).

Three ways in: ``bustd [OPTIONS]`` starts the daemon; ``bustd check
[OPTIONS]`` prints a one-shot report (check.py) and never signals; and the
validate-only mode (:func:`validate_main`, entered through validate.py),
which the runtime spawns on SIGHUP to read the config file again.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys

from . import __version__
from .config import CHOICES, DEFAULTS, ENV, EXIT_CONFIG, EXIT_PROC, Config, encode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn, Sequence

__all__ = ["CHECK", "MAX_CONFIG_BYTES", "MAX_KILL_WAIT", "RELOAD_END", "RELOAD_MAGIC",
           "UsageError", "build_config", "check_parser", "config_file_args", "grace", "hook",
           "load_config", "main", "metrics_file", "output_file", "parse_args",
           "parse_config_line", "parser", "read_config_file", "validate_main"]

CHECK = "check"  # the subcommand: ``bustd check [OPTIONS]``
# First line of a successful answer of the validate-only mode (the runtime
# checks it, so a stray line of output is never taken for a Config).
RELOAD_MAGIC = "bustd-validated 1"
RELOAD_END = "bustd-end"  # and its last line: an answer cut short is no answer

# A config file is a few hundred bytes; anything near this is a mistake
# (a log, a device, a disk image) and is refused before it is read.
MAX_CONFIG_BYTES = 1 << 20
# Stack frames kept free when the front end compiles a regex: the runtime
# compiles it again (choose.make_rules) at a different depth, so the
# front end must refuse a pattern nested too deep a little early.
_REGEX_STACK_MARGIN = 100
# The longest --grace plus --hook-timeout: the loop reads no memory while it
# waits for the hook and the SIGTERMed victim, and systemd's watchdog
# (WatchdogSec=30 in contrib/bustd.service, pinged every 15 s) must still
# hear from it with EXIT_WAIT (3 s) on top (review L4).
MAX_KILL_WAIT = 10.0


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


def mib_rate(text: str) -> float:
    """Parse a rate in MiB/s from 0 to 1,000,000; raises ArgumentTypeError."""
    return _number(text, 0, 1_000_000, "MiB/s")


def seconds(text: str) -> float:
    """Parse a duration from 0 to one day; raises ArgumentTypeError."""
    return _number(text, 0, 86400, "seconds")


def grace(text: str) -> float:
    """Parse --grace, 0 to MAX_KILL_WAIT seconds; raises ArgumentTypeError."""
    return _number(text, 0, MAX_KILL_WAIT, "seconds")


def _no_nul(text: str) -> None:
    """Raise ArgumentTypeError if ``text`` holds a NUL byte.

    No name, path or environment variable can hold one (the value would be
    cut there, or the hand-over to the runtime would fail).
    """
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: it holds a NUL byte")


def regex(text: str) -> str:
    """Check that ``text`` compiles as a regular expression; raises ArgumentTypeError.

    Besides ``re.error``, a repeat count too large (OverflowError) and a
    pattern nested too deep (RecursionError) are refused the same way.
    """
    import re
    _no_nul(text)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit - _REGEX_STACK_MARGIN)
    try:
        re.compile(text)
    except (re.error, OverflowError, RecursionError, ValueError) as err:
        reason = {OverflowError: "a repeat count is too large",
                  RecursionError: "nested too deep"}.get(type(err), str(err))
        raise argparse.ArgumentTypeError(
            f"invalid regular expression {text!r}: {reason}") from None
    finally:
        sys.setrecursionlimit(limit)
    return text


def globs(text: str) -> str:
    """Return a ``glob|glob`` list with the spaces around each glob removed.

    ``sshd | Xorg`` protects ``sshd`` and ``Xorg``, not ``'sshd '`` and
    ``' Xorg'``. The empty string means none. Raises ArgumentTypeError for an
    empty glob or a newline or NUL byte.
    """
    if not text:
        return text
    items = [g.strip() for g in text.split("|")]
    if not all(items) or any(c in text for c in "\n\0"):
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: expected names or globs separated by '|'")
    return "|".join(items)


def real_paths(text: str) -> str:
    """Return a ``path|path`` list of absolute path globs (see :func:`globs`).

    Raises ArgumentTypeError for an entry that does not start with '/'.
    """
    text = globs(text)
    bad = [g for g in text.split("|") if text and not g.startswith("/")]
    if bad:
        raise argparse.ArgumentTypeError(
            f"invalid value {bad[0]!r}: expected real paths (starting with '/') "
            "separated by '|'")
    return text


def path(text: str) -> str:
    """Check a file or folder path (not empty, no NUL byte); raises ArgumentTypeError."""
    _no_nul(text)
    if not text:
        raise argparse.ArgumentTypeError("invalid value '': expected a path")
    return text


def parser() -> argparse.ArgumentParser:
    """Return the argument parser (its help text documents every option)."""
    p = _Parser(prog="bustd", description=(
        "Prevent out-of-memory freezes: watch MemAvailable, SwapFree and memory "
        "pressure (PSI) and kill the process with the highest oom_score first."),
        epilog="'bustd check [OPTIONS]' prints what bustd sees and would do now, with the "
               "same options, and never signals (see 'bustd check --help'). SIGHUP makes "
               "the daemon read --config again; SIGTERM and SIGINT stop it. "
               "Exit codes: 0 normal, 2 bad option or value, 3 /proc unreadable, "
               "4 pid file in use or unwritable.")
    a = p.add_argument
    a("-m", "--mem", type=percent_pair, metavar="PERCENT[,KILL_PERCENT]",
      help="SIGTERM when MemAvailable <= PERCENT of user memory (MemAvailable + "
           "AnonPages, as earlyoom 1.8: memory in tmpfs or shared memory, which no kill "
           "frees, is left out; default 10) and swap is low too; SIGKILL at KILL_PERCENT "
           "(default half of PERCENT)")
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
    a("--psi-metric", choices=CHOICES["psi_metric"], default=DEFAULTS["psi_metric"],
      help="PSI line to use: some (a task stalled) or full (all stalled); default some")
    a("--psi-mem", type=percent, metavar="PERCENT", default=DEFAULTS["psi_mem_percent"],
      help="pressure may only kill when MemAvailable <= PERCENT of MemTotal (default 15)")
    a("--psi-duration", type=seconds, metavar="SECONDS", default=DEFAULTS["psi_duration"],
      help="pressure kills only once the machine has thrashed this long (default 5): the "
           "stall >= CUTOFF and, with swap, pages swapped back in at >= --swapin-rate and at "
           "least 0.6 as fast as they go out, all along; 0 acts on one reading")
    a("--swapin-rate", type=mib_rate, metavar="MiB/s", default=DEFAULTS["swapin_rate"],
      help="with swap, the swap-in rate that makes a stall thrashing (default 1), with "
           "swap-ins at least 0.6 of swap-outs; a stall while more pages go out than come "
           "back (a program growing into zram) never kills; 0: the stall alone")
    a("--watch", type=percent, metavar="PERCENT", default=DEFAULTS["watch_percent"],
      help="below this MemAvailable percent (or after a PSI event) sample stall, zram and "
           "the growth of the largest processes at every check (default 25)")
    a("--rank", choices=CHOICES["rank"], default=DEFAULTS["rank"],
      help="victim ranking: growth (oom_score plus 30 s of recent growth), oom_score, or "
           "rss (RSS plus swap); default growth")
    a("--sort-by-rss", action="store_const", const="rss", dest="rank",
      help="same as --rank rss (compatibility)")
    a("-u", "--unkillables", type=globs, metavar="'GLOB|GLOB'", default="",
      help="never kill processes whose executable matches one of these globs: the whole "
           "real path for a glob with a '/', else the name of a root-owned executable in "
           "root-owned folders (what no other user can forge)")
    a("--ignore", type=regex, metavar="REGEX", default="",
      help="never kill processes whose executable matches REGEX (as --unkillables: "
           "the whole path with a '/', else the name of a root-owned executable)")
    a("--prefer", type=regex, metavar="REGEX", default="",
      help="add 300 to the oom_score of processes whose executable matches REGEX")
    a("--avoid", type=regex, metavar="REGEX", default="",
      help="subtract 300 from the oom_score of processes whose executable matches REGEX "
           "(as --ignore)")
    a("--default-avoid", type=real_paths, metavar="'PATH|PATH'",
      default=DEFAULTS["default_avoid"],
      help="executables (real paths, globs) avoided unless no other candidate frees "
           "what the emergency needs; the default lists init, display servers, "
           "compositors, desktop shells, session and display managers, logind, D-Bus, sshd "
           "and package managers (see --print-config); '' clears it")
    a("--grace", type=grace, metavar="SECONDS", default=DEFAULTS["grace"],
      help="after SIGTERM, wait this long for the exit before SIGKILL (default 0.5; at "
           f"most {MAX_KILL_WAIT:g} together with --hook-timeout)")
    a("-g", "--kill-pgroup", action="store_true",
      help="signal the victim's whole process group (protected members are spared)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("-n", "--no-daemon", action="store_true",
                      help="stay in the foreground (the default; for compatibility)")
    mode.add_argument("--daemon", action="store_true",
                      help="fork to the background and write --pid-file")
    a("--pid-file", type=path, metavar="PATH", default=DEFAULTS["pid_file"],
      help="pid file written with --daemon (default /run/bustd.pid)")
    a("--dry-run", action="store_true",
      help="decide and log the kill line, marked as a dry run, but never signal")
    a("-r", "--report", type=seconds, metavar="SECONDS", default=DEFAULTS["report"],
      help="log a status line every SECONDS (default 3600; 0 disables)")
    a("-V", "--verbose", action="store_true", help="also log debug lines")
    a("--version", action="version", version=f"bustd {__version__}")
    a("--proc-root", type=path, metavar="PATH", default="/proc",
      help="read this tree instead of /proc (for tests); any other root implies "
           "--dry-run and no PSI trigger")
    a("--sys-root", type=path, metavar="PATH", default="/sys",
      help="read zram statistics from this tree instead of /sys (for tests)")
    a("--print-config", action="store_true",
      help="print the effective settings and exit")
    a("-c", "--config", metavar="FILE",
      help="read options from FILE first ('option = value' lines, see "
           "contrib/bustd.conf); options on the command line override them")
    _output_options(p)
    g = p.add_argument_group("cgroup v2")
    g.add_argument("--cgroup", type=path, metavar="PATH",
                   help="watch this cgroup v2 subtree instead of the machine (e.g. "
                        "/sys/fs/cgroup/system.slice/foo.service): memory.current against "
                        "memory.max (or memory.high) as MemAvailable against MemTotal, its "
                        "memory.pressure as PSI, and victims only among its processes; "
                        "kept until a restart")
    g.add_argument("--kill-cgroup", action="store_true",
                   help="kill the victim's whole cgroup at once with cgroup.kill (Linux "
                        ">= 5.14, always SIGKILL); where that is not possible (an older "
                        "kernel, a cgroup holding bustd, PID 1 or a protected process) its "
                        "killable processes are signalled one by one, and the log says why")
    return p


def count(text: str) -> int:
    """Parse a whole number from 0 to 100000; raises ArgumentTypeError."""
    value = _number(text, 0, 100_000, "a whole number")
    if value != int(value):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a whole number")
    return int(value)


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
    g = p.add_argument_group("check options")
    g.add_argument("--json", action="store_true",
                   help="print one JSON document (schema: docs/check-schema.json) instead "
                        "of the report")
    g.add_argument("--interval", type=seconds, metavar="SECONDS", default=1.0,
                   help="sample the stall and the growth of the largest processes over this "
                        "long (default 1; 0 reads once: no stall rate, no growth)")
    g.add_argument("--top", type=count, metavar="N", default=10,
                   help="show the first N candidates in kill order (default 10; 0 shows "
                        "all)")
    return p


def _output_options(p: argparse.ArgumentParser) -> None:
    """Add the options of warnings, notifications, hooks, kill log and metrics (issue 8)."""
    g = p.add_argument_group("telling people and machines")
    a = g.add_argument
    a("--warn", type=percent, metavar="PERCENT", default=DEFAULTS["warn_percent"],
      help="warn (log line, notification, metrics) when MemAvailable and SwapFree fall to "
           "PERCENT, or the stall reaches half of --psi below --psi-mem, naming the likely "
           "victim; again only after memory recovered (default 0: off)")
    a("-N", "--notify", action="store_true",
      help="desktop notification of each kill and warning to every user with a session "
           "bus (/run/user/UID/bus)")
    a("--notify-owner-only", action="store_true",
      help="notify only the victim's owner (implies --notify)")
    a("--pre-kill-hook", type=hook, metavar="PATH",
      help="run PATH (no shell; victim in BUSTD_* environment variables) before each "
           "signal, waiting at most --hook-timeout")
    a("--post-kill-hook", type=hook, metavar="PATH",
      help="run PATH after each kill (not waited for)")
    a("--hook-timeout", type=hook_timeout, metavar="SECONDS",
      default=DEFAULTS["hook_timeout"],
      help="longest wait for the pre-kill hook before the signal (default 0.2)")
    a("--kill-log", type=output_file, metavar="FILE",
      help="append one JSON object per kill to FILE")
    a("--metrics-file", type=metrics_file, metavar="PATH",
      help="write Prometheus metrics to PATH (*.prom, for node_exporter's textfile "
           "collector) at most every 5 s")


def hook_timeout(text: str) -> float:
    """Parse the pre-kill hook's timeout, 0 to 10 seconds; raises ArgumentTypeError."""
    return _number(text, 0, 10, "seconds")


def hook(text: str) -> str:
    """Check a hook: an absolute path to an executable regular file nobody else can change.

    Like sshd's checks of its files: the file, every folder above it and
    every symbolic link on the way (each checked where it lies, with
    lstat: vet.py) must be owned by root or the user bustd runs as and not
    writable by group or others (a folder with the sticky bit, such as
    /tmp, may be). Raises ArgumentTypeError naming the component and its
    owner. The runtime checks it again and runs it from the descriptor of
    that check.
    """
    from .vet import Unsafe, open_hook
    _no_nul(text)
    if not os.path.isabs(text):
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: a hook must be an absolute path")
    try:
        os.close(open_hook(text))
    except Unsafe as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if not os.access(text, os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: not executable (chmod +x it)")
    return text


def output_file(text: str) -> str:
    """Check a file bustd will write (kill log, metrics, pid file).

    Its folder, every folder above and every link on the way must be safe
    as for a hook (vet.py), so nobody else can put a link, a FIFO or a hard
    link where bustd writes (review M3, L3). The file itself, if it exists,
    must be a regular file with one name, owned by root (or bustd's user);
    a symbolic link is refused (bustd opens it with O_NOFOLLOW).
    Raises ArgumentTypeError naming the component and the problem.
    """
    from .vet import Unsafe, vet_folder
    path(text)
    full = os.path.abspath(text)
    folder = os.path.dirname(full)
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"{text}: no such folder {folder}")
    try:
        vet_folder(full, text)
    except Unsafe as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


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


def metrics_file(text: str) -> str:
    """Check a metrics file path: as :func:`output_file`, and named ``*.prom``."""
    if not text.endswith(".prom") or text.endswith("/.prom"):
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: the name must end in .prom (node_exporter's textfile "
            "collector reads only *.prom files)")
    return output_file(text)


def _output_values(args: argparse.Namespace) -> dict[str, object]:
    """Return the Config values of the options added by :func:`_output_options`."""
    return {
        "warn_percent": args.warn,
        "notify": args.notify or args.notify_owner_only,
        "notify_owner_only": args.notify_owner_only,
        "pre_kill_hook": args.pre_kill_hook or "",
        "post_kill_hook": args.post_kill_hook or "",
        "hook_timeout": args.hook_timeout,
        "kill_log": os.path.abspath(args.kill_log) if args.kill_log else "",
        "metrics_file": os.path.abspath(args.metrics_file) if args.metrics_file else "",
    }


# Options a config file may not set: they act on the command line itself.
_NOT_IN_FILE = frozenset(("config", "help", "version", "print-config"))


def _kind(mode: int) -> str:
    """Return what a non-regular file is, for an error message."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "an unusual file"


def read_config_file(path: str) -> str:
    """Return the text of config file ``path``.

    Refuses, as sshd does, a file not owned by root or by the user bustd runs
    as, or writable by group or others: whoever can change it chooses what
    bustd may kill. Refuses anything but a regular file of at most
    MAX_CONFIG_BYTES: it is opened without blocking (a FIFO would wait for a
    writer) and checked with fstat before a byte is read (``/dev/zero`` never
    ends). Raises UsageError naming the file and the problem.
    """
    def refuse(problem: str) -> UsageError:
        return UsageError(f"config file {path}: {problem}")

    from .vet import Unsafe, resolve
    if "\0" in path:
        raise refuse("it holds a NUL byte")
    if not path:
        raise refuse("No such file or directory")
    try:
        # Every folder and link on the way is checked too (review L3): a
        # user who could swap a link there would choose bustd's settings.
        folder, name, _, _ = resolve(os.path.abspath(path))
    except Unsafe as err:
        raise refuse(str(err)) from None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
                     | os.O_NOFOLLOW, dir_fd=folder)
    except OSError as err:
        raise refuse(err.strerror or str(err)) from None
    finally:
        os.close(folder)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise refuse(f"{_kind(st.st_mode)}, not a regular file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise refuse(f"{st.st_size} bytes, more than the {MAX_CONFIG_BYTES} "
                         "a config file may have")
        euid = os.geteuid()
        if st.st_uid not in (0, euid):
            who = "root" if euid == 0 else f"root or uid {euid} (the user bustd runs as)"
            raise refuse(f"owned by uid {st.st_uid}, not by {who}")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise refuse(f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                         "chmod go-w it")
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_CONFIG_BYTES:  # the file may grow after fstat
            chunk = os.read(fd, MAX_CONFIG_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise refuse(err.strerror or str(err)) from None
    finally:
        os.close(fd)
    if size > MAX_CONFIG_BYTES:
        raise refuse(f"more than the {MAX_CONFIG_BYTES} bytes a config file may have")
    data = b"".join(chunks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise UsageError(f"{path}:{line}: not UTF-8 text "
                         f"(byte 0x{data[err.start]:02x})") from None


def _value(rest: str) -> str:
    """Return the value in ``rest`` (what follows the '='), without its comment.

    A value in single or double quotes runs to the next quote of the same
    kind and may hold '#' and spaces; only a comment may follow it. An
    unquoted value ends at a '#' that starts it or follows a space or tab.
    Raises ValueError (the message names the problem).
    """
    rest = rest.strip()
    if rest[:1] in ("'", '"'):
        end = rest.find(rest[0], 1)
        if end < 0:
            raise ValueError(f"no closing {rest[0]} in {rest!r}")
        after = rest[end + 1:].strip()
        if after and not after.startswith("#"):
            raise ValueError(f"text after the closing quote: {after!r}")
        return rest[1:end]
    for i, ch in enumerate(rest):
        if ch == "#" and (i == 0 or rest[i - 1] in " \t"):
            return rest[:i].rstrip()
    return rest


def parse_config_line(line: str) -> tuple[str, str] | None:
    """Return (option, value) of one config-file line; None for a blank or comment line.

    The option is the long name without dashes ('_' read as '-'). Raises
    ValueError with a message naming the problem (the caller adds file:line).
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    key, sep, rest = text.partition("=")
    key = key.strip().replace("_", "-")
    if not sep or not key:
        raise ValueError(f"expected 'option = value', got {text[:60]!r}")
    try:
        value = _value(rest)
    except ValueError as err:
        raise ValueError(f"{key}: {err}") from None
    if "\0" in value:
        raise ValueError(f"{key}: NUL byte in value {value!r}")
    if "\0" in text:
        raise ValueError("NUL byte in the line")
    return key, value


def config_file_args(p: argparse.ArgumentParser, path: str) -> list[str]:
    """Return the argv equivalent of config file ``path``.

    Each line is ``option = value`` with the long option name without its
    dashes (``mem = 5,2``; ``dry-run = true`` for a flag); a line starting
    with ``#`` is a comment, and so is the rest of a line from a ``#`` after
    a space or tab outside quotes. Raises UsageError naming the file, the
    line and the option (see :func:`read_config_file` for what is refused).
    """
    lines = read_config_file(path).split("\n")
    flags = {a.option_strings[-1][2:]: a for a in p._actions
             if a.option_strings and a.option_strings[-1].startswith("--")}
    argv: list[str] = []
    for number, line in enumerate(lines, 1):
        where = f"{path}:{number}"
        try:
            parsed = parse_config_line(line)
        except ValueError as err:
            raise UsageError(f"{where}: {err}") from None
        if parsed is None:
            continue
        key, value = parsed
        action = flags.get(key)
        if action is None or key in _NOT_IN_FILE:
            raise UsageError(f"{where}: unknown option {key!r}")
        if action.nargs == 0:  # a flag
            if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
                raise UsageError(f"{where}: {key}: expected true or false, got {value!r}")
            item = [f"--{key}"] if value.lower() in ("true", "yes", "1") else []
        else:
            item = [f"--{key}={value}"]
        try:
            parse_args(p, item)
        except UsageError as err:
            raise UsageError(f"{where}: {err}") from None
        argv += item
    return argv


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
        swapin_rate=args.swapin_rate,
        watch_percent=args.watch, rank=args.rank,
        unkillables=args.unkillables, ignore=args.ignore, prefer=args.prefer,
        avoid=args.avoid, default_avoid=args.default_avoid, grace=args.grace,
        kill_pgroup=args.kill_pgroup,
        dry_run=args.dry_run or root != "/proc", daemon=args.daemon,
        pid_file=os.path.abspath(args.pid_file), report=args.report,
        verbose=args.verbose, proc_root=root, sys_root=os.path.normpath(args.sys_root),
        **_output_values(args),
        cgroup=_cgroup(args.cgroup or "", args.psi > 0, root == "/proc"),
        kill_cgroup=args.kill_cgroup)


def _cgroup(given: str, psi: bool, live: bool) -> str:
    """Return the ``--cgroup`` folder resolved ("" for none); raises UsageError.

    On the real /proc it must be a cgroup v2 folder with the memory
    controller (and ``memory.pressure`` when PSI is on); with a fake
    ``--proc-root`` any folder with the same files does (tests).
    """
    if not given:
        return ""
    from . import cgroup
    mounts = None
    if live:
        try:
            with open("/proc/self/mountinfo", "rb") as f:
                mounts = cgroup.parse_mountinfo(f.read())
        except OSError as err:
            raise UsageError(f"argument --cgroup: cannot read /proc/self/mountinfo: "
                             f"{err.strerror or err}") from None
    try:
        return cgroup.validate(given, psi, mounts)
    except cgroup.CgroupError as err:
        raise UsageError(f"argument --cgroup: {err}") from None


def _one_line(text: str) -> str:
    """Return ``text`` with newlines and other unprintable characters escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _quiet_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's last flush cannot fail again."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, then replace this process with the lean runtime.

    Returns an exit code only when not exec'ing (--print-config, --help,
    errors). A reader that stops early (``--print-config | head -5``) ends
    the output quietly with exit code 0; any other failure to write it is
    one line on stderr and exit code 1.
    """
    try:
        try:
            code = _main(argv)
        except SystemExit as done:  # argparse after --help or --version
            code = done.code if isinstance(done.code, int) else 0
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except OSError as err:  # e.g. --print-config > /dev/full
        _quiet_stdout()
        print(f"bustd: error: cannot write to standard output: {err.strerror or err}",
              file=sys.stderr)
        return 1
    return code


def load_config(p: argparse.ArgumentParser, argv: Sequence[str], absolute: bool = False
                ) -> tuple[argparse.Namespace, Config]:
    """Return the parsed ``argv`` and its Config, the config file read first.

    The file is read as the daemon's options (a ``check`` option in it is
    unknown); options on the command line override it. With ``absolute``,
    ``args.config`` and the errors name the file by its absolute path.
    Raises UsageError.
    """
    args = parse_args(p, argv)
    if args.config is not None:
        if absolute:
            args.config = os.path.abspath(args.config)
        args = parse_args(p, [*config_file_args(parser(), args.config), *argv])
        if absolute:
            args.config = os.path.abspath(args.config)
    return args, build_config(args)


def _usage_error(err: Exception) -> int:
    """Print the one line for an error in the options; return EXIT_CONFIG."""
    if isinstance(err, UsageError):
        print(f"bustd: error: {_one_line(str(err))}", file=sys.stderr)
    else:  # a bug, but input caused it: still one line and exit 2
        print(f"bustd: error: cannot validate the options ({type(err).__name__}: "
              f"{_one_line(str(err))}); please report this", file=sys.stderr)
    return EXIT_CONFIG


def _proc_readable(cfg: Config) -> bool:
    """Return whether the meminfo of ``cfg.proc_root`` is readable; says why not."""
    meminfo = os.path.join(cfg.proc_root, "meminfo")
    if os.access(meminfo, os.R_OK):
        return True
    print(f"bustd: error: cannot read {_one_line(meminfo)}: is --proc-root a /proc tree?",
          file=sys.stderr)
    return False


def _main(argv: Sequence[str] | None) -> int:
    """Do the work of :func:`main`; returns an exit code or exec's the runtime."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [CHECK]:
        return _check(argv[1:])
    loaded = _load_or_exit(parser(), argv)
    if isinstance(loaded, int):
        return loaded
    _, cfg = loaded
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


def _load_or_exit(p: argparse.ArgumentParser, argv: list[str]
                  ) -> tuple[argparse.Namespace, Config] | int:
    """Parse ``argv`` with ``p`` into a Config, or return the exit code to end with.

    Bad options: one line, EXIT_CONFIG; no readable /proc tree: EXIT_PROC;
    --print-config: the settings are printed and 0 returned.
    """
    try:
        args, cfg = load_config(p, argv)
    except Exception as err:
        return _usage_error(err)
    if not _proc_readable(cfg):
        return EXIT_PROC
    if args.print_config:
        for key in DEFAULTS:
            print(f"{key} = {getattr(cfg, key)!r}")
        return 0
    return args, cfg


def _check(argv: list[str]) -> int:
    """Run ``bustd check ARGV``: print the report; returns the exit code."""
    loaded = _load_or_exit(check_parser(), argv)
    if isinstance(loaded, int):
        return loaded
    args, cfg = loaded
    from . import check
    from .cgroup import CgroupError
    try:
        report = check.gather(cfg, args.interval, args.top, args.config)
    except CgroupError as err:
        print(f"bustd: error: cannot read {_one_line(str(err))}", file=sys.stderr)
        return EXIT_PROC
    except (OSError, ValueError) as err:
        print(f"bustd: error: cannot read {_one_line(cfg.proc_root)}: {_one_line(str(err))}",
              file=sys.stderr)
        return EXIT_PROC
    sys.stdout.write(check.to_json(report) if args.json else check.to_text(report))
    return 0


def validate_main(argv: Sequence[str]) -> int:
    """The validate-only mode the runtime spawns on SIGHUP (see reload.py).

    ``argv`` is the folder bustd started in, then the daemon's original
    arguments. Reads them (and the config file) again exactly as at start,
    from that folder, so relative paths mean what they meant then (``--daemon``
    has moved the daemon to ``/``). Prints RELOAD_MAGIC, the config file's
    path and the encoded Config, and returns 0; or prints the one-line error
    on stderr and returns EXIT_CONFIG. Never starts anything.
    """
    if not argv:
        return _usage_error(UsageError("validate: no start folder given"))
    cwd, *rest = argv
    try:
        if cwd:
            try:
                os.chdir(cwd)
            except OSError as err:
                raise UsageError(f"cannot enter {cwd}, the folder bustd started in: "
                                 f"{err.strerror or err}") from None
        args, cfg = load_config(parser(), rest, absolute=True)
    except Exception as err:
        return _usage_error(err)
    path = "" if args.config is None else args.config
    sys.stdout.write(f"{RELOAD_MAGIC}\n{_one_line(path)}\n{encode(cfg)}\n{RELOAD_END}\n")
    return 0
