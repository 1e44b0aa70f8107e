"""The values of options: argparse value types, the checks of paths, the --cgroup folder.

Each type returns the value of the text a user wrote, or raises
``argparse.ArgumentTypeError`` quoting it (argparse adds the option's name);
the paths bustd runs or writes are checked as vet.py walks them. Front end
only (options.py builds the parsers from these): the runtime never imports it.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["MAX_KILL_WAIT", "UsageError", "cgroup_folder", "count", "fstype_of", "globs", "grace",
           "hook", "hook_timeout", "kib_pair", "metrics_file", "mib_rate", "output_file", "path",
           "percent", "percent_pair", "real_paths", "regex", "seconds", "validate"]

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


def hook_timeout(text: str) -> float:
    """Parse the pre-kill hook's timeout, 0 to 10 seconds; raises ArgumentTypeError."""
    return _number(text, 0, 10, "seconds")


def count(text: str) -> int:
    """Parse a whole number from 0 to 100000; raises ArgumentTypeError."""
    value = _number(text, 0, 100_000, "a whole number")
    if value != int(value):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a whole number")
    return int(value)


def _no_nul(text: str) -> None:
    """Raise ArgumentTypeError if ``text`` holds a NUL byte: no name, path or environment
    variable can hold one (the value would be cut there, or the hand-over would fail)."""
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


def metrics_file(text: str) -> str:
    """Check a metrics file path: as :func:`output_file`, and named ``*.prom``."""
    if not text.endswith(".prom") or text.endswith("/.prom"):
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: the name must end in .prom (node_exporter's textfile "
            "collector reads only *.prom files)")
    return output_file(text)


def cgroup_folder(given: str, psi: bool, live: bool) -> str:
    """Return the ``--cgroup`` folder resolved ("" for none); raises UsageError.

    On the real /proc it must be a cgroup v2 folder with the memory
    controller (and ``memory.pressure`` when PSI is on); with a fake
    ``--proc-root`` any folder with the same files does (tests).
    """
    if not given:
        return ""
    from .cgroup import CgroupError, parse_mountinfo
    mounts = None
    if live:
        try:
            with open("/proc/self/mountinfo", "rb") as f:
                mounts = parse_mountinfo(f.read())
        except OSError as err:
            raise UsageError(f"argument --cgroup: cannot read /proc/self/mountinfo: "
                             f"{err.strerror or err}") from None
    try:
        return validate(given, psi, mounts)
    except CgroupError as err:
        raise UsageError(f"argument --cgroup: {err}") from None


def fstype_of(folder: str, mounts: list[tuple[str, str, str]]) -> str | None:
    """Return the type of the file system ``folder`` (absolute, resolved) is on."""
    best, kind = "", None
    for _, point, fstype in mounts:
        inside = folder == point or folder.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fstype
    return kind


def validate(given: str, psi: bool, mounts: list[tuple[str, str, str]] | None) -> str:
    """Return cgroup folder ``given`` resolved if it is a usable cgroup v2 folder.

    ``mounts`` (parsed /proc/self/mountinfo) must show it on a cgroup2 file
    system when given (a live /proc; a fake tree is not checked). ``psi``:
    ``memory.pressure`` is needed too. Raises cgroup.CgroupError with the reason.
    """
    from .cgroup import REQUIRED, Cgroup, CgroupError, parse_procs, read_all
    real = os.path.realpath(given)
    if not os.path.isdir(real):
        raise CgroupError(f"{given}: not a folder")
    if mounts is not None:
        kind = fstype_of(real, mounts)
        if kind != "cgroup2":
            raise CgroupError(f"{given}: not on a cgroup v2 file system (it is on "
                              f"{kind or 'an unknown file system'})")
    if not os.path.exists(f"{real}/cgroup.controllers"):
        raise CgroupError(f"{given}: not a cgroup v2 folder (no cgroup.controllers)")
    if not os.path.exists(f"{real}/cgroup.type"):
        raise CgroupError(f"{given}: the root cgroup: watch the whole machine without "
                          "--cgroup instead")
    needed = [*REQUIRED, "memory.pressure"] if psi else list(REQUIRED)
    missing = [n for n in needed if not os.path.exists(f"{real}/{n}")]
    if missing:
        raise CgroupError(f"{given}: no {', '.join(missing)} (is the memory controller "
                          "enabled in the parent's cgroup.subtree_control?)")
    group = Cgroup(real)
    try:
        group.read()
        parse_procs(read_all(group.file("cgroup.procs")))
    except OSError as err:
        raise CgroupError(f"{given}: cannot read its memory files: "
                          f"{err.strerror or err}") from None
    except ValueError as err:
        raise CgroupError(f"{given}: {err}") from None
    finally:
        group.close()
    return real
