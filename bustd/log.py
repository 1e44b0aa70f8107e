"""Minimal logging to stderr (no ``logging`` import: it costs ~2.4 MiB RSS)."""
# Under systemd, whose journal reads stderr, each line carries a ``<N>``
# syslog-priority prefix (sd-daemon(3)) so the journal records the level;
# elsewhere lines are prefixed with the level name when it is not "info".
# Names from /proc are untrusted: :func:`safe` renders them printable.

from __future__ import annotations

import os

__all__ = ["DEBUG", "ERROR", "INFO", "WARNING", "Log", "one_line", "pct", "safe", "size"]

ERROR, WARNING, INFO, DEBUG = 3, 4, 6, 7
_NAMES = {ERROR: "error: ", WARNING: "warning: ", INFO: "", DEBUG: "debug: "}


def safe(raw: bytes, limit: int = 256) -> str:
    """Return ``raw`` decoded for a log line: invalid UTF-8 and control
    characters (newlines included) escaped, at most ``limit`` characters."""
    return one_line(raw[:limit * 4].decode("utf-8", "backslashreplace"))[:limit]


def one_line(text: str) -> str:
    """Return ``text`` with newlines and other unprintable characters escaped (``\\n``)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _stderr_is_journal() -> bool:
    """Return whether fd 2 is the stream systemd named in $JOURNAL_STREAM."""
    dev_ino = os.environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = dev_ino.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return f"{st.st_dev}:{st.st_ino}" == f"{dev}:{ino}"


class Log:
    """Writes one line per message to a file descriptor (stderr by default)."""

    __slots__ = ("fd", "verbose", "journal")

    def __init__(self, verbose: bool = False, fd: int = 2) -> None:
        self.fd = fd
        self.verbose = verbose
        self.journal = fd == 2 and _stderr_is_journal()

    def write(self, level: int, message: str) -> None:
        """Write ``message`` at ``level``; DEBUG only when verbose."""
        if level == DEBUG and not self.verbose:
            return
        prefix = f"<{level}>" if self.journal else _NAMES[level]
        line = f"{prefix}{message}\n".encode("utf-8", "backslashreplace")
        try:
            os.write(self.fd, line)
        except OSError:
            pass  # stderr closed (e.g. daemonized): nothing sensible to do

    def error(self, message: str) -> None:
        """Log at error level."""
        self.write(ERROR, message)

    def warning(self, message: str) -> None:
        """Log at warning level."""
        self.write(WARNING, message)

    def info(self, message: str) -> None:
        """Log at info level."""
        self.write(INFO, message)

    def debug(self, message: str) -> None:
        """Log at debug level (only with --verbose)."""
        self.write(DEBUG, message)


def pct(part: float, whole: float) -> str:
    """Return ``part`` as a percentage of ``whole`` with one decimal ("0%" of nothing)."""
    return f"{100.0 * part / whole:.1f}%" if whole else "0%"


def size(kib: float) -> str:
    """Return a KiB figure as a short human-readable size (``1.5 GiB``)."""
    if kib >= 1024 * 1024:
        return f"{kib / (1024 * 1024):.1f} GiB"
    if kib >= 1024:
        return f"{kib / 1024:.1f} MiB"
    return f"{kib:.0f} KiB"
