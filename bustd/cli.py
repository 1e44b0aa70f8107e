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
which the runtime spawns on SIGHUP to read the config file again. The
front end's other modules: options.py (the option table and the parsers),
optvalues.py (the values and the checks of paths) and conffile.py (the
config file).
"""

from __future__ import annotations

import os
import sys

from .conffile import config_file_args
from .config import DEFAULTS, ENV, EXIT_CONFIG, EXIT_PROC, Config, encode
from .log import one_line
from .options import CHECK, OPTIONS, check_parser, parse_args, parser
from .optvalues import UsageError, cgroup_folder

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Sequence

__all__ = ["RELOAD_END", "RELOAD_MAGIC", "build_config", "load_config", "main", "validate_main"]

# First line of a successful answer of the validate-only mode (the runtime
# checks it, so a stray line of output is never taken for a Config).
RELOAD_MAGIC = "bustd-validated 1"
RELOAD_END = "bustd-end"  # and its last line: an answer cut short is no answer


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


def build_config(args: argparse.Namespace) -> Config:
    """Return the Config for parsed ``args``.

    An option with one Config key gives it its value (the argparse dest is
    the key); the rest is here. The kill level defaults to half the
    terminate level. An absolute size given without its percentage form
    applies alone. Raises UsageError (an unusable ``--cgroup``).
    """
    values = {row.dest: getattr(args, row.dest) for row in OPTIONS if len(row.keys) == 1}

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
    values.update(
        dry_run=args.dry_run or root != "/proc", pid_file=os.path.abspath(args.pid_file),
        proc_root=root, sys_root=os.path.normpath(args.sys_root),
        notify=args.notify or args.notify_owner_only,
        pre_kill_hook=args.pre_kill_hook or "", post_kill_hook=args.post_kill_hook or "",
        kill_log=os.path.abspath(args.kill_log) if args.kill_log else "",
        metrics_file=os.path.abspath(args.metrics_file) if args.metrics_file else "",
        cgroup=cgroup_folder(args.cgroup or "", args.psi_cutoff > 0, root == "/proc"))
    return Config(**values)


def _usage_error(err: Exception) -> int:
    """Print the one line for an error in the options; return EXIT_CONFIG."""
    if isinstance(err, UsageError):
        print(f"bustd: error: {one_line(str(err))}", file=sys.stderr)
    else:  # a bug, but input caused it: still one line and exit 2
        print(f"bustd: error: cannot validate the options ({type(err).__name__}: "
              f"{one_line(str(err))}); please report this", file=sys.stderr)
    return EXIT_CONFIG


def _proc_readable(cfg: Config) -> bool:
    """Return whether the meminfo of ``cfg.proc_root`` is readable; says why not."""
    meminfo = os.path.join(cfg.proc_root, "meminfo")
    if os.access(meminfo, os.R_OK):
        return True
    print(f"bustd: error: cannot read {one_line(meminfo)}: is --proc-root a /proc tree?",
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
        print(f"bustd: error: cannot read {one_line(str(err))}", file=sys.stderr)
        return EXIT_PROC
    except (OSError, ValueError) as err:
        print(f"bustd: error: cannot read {one_line(cfg.proc_root)}: {one_line(str(err))}",
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
    sys.stdout.write(f"{RELOAD_MAGIC}\n{one_line(path)}\n{encode(cfg)}\n{RELOAD_END}\n")
    return 0
