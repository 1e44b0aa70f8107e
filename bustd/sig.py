"""Signal functions without the ``signal`` module's enum wrappers."""
# ``import signal`` pulls in ``enum``, ``functools`` and ``collections``:
# about 0.8 MiB of resident memory in a process meant to stay small for
# months. The C module ``_signal`` holds the same functions and integer
# constants; type checkers see the public module's signatures.
#
# Some standalone Python builds lack ``pidfd_send_signal``: there it is a
# stand-in that raises OSError(ENOSYS), as a kernel without pidfds would, so
# the runtime still imports and kill.py falls back to ``kill()``.

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from signal import (
        SIG_IGN,
        SIGHUP,
        SIGINT,
        SIGKILL,
        SIGTERM,
        pidfd_send_signal,
        set_wakeup_fd,
        signal,
    )
else:
    from _signal import SIG_IGN, SIGHUP, SIGINT, SIGKILL, SIGTERM, set_wakeup_fd, signal

    try:
        from _signal import pidfd_send_signal
    except ImportError:
        def pidfd_send_signal(pidfd, sig, siginfo=None, flags=0):
            """Stand-in for a Python without it: fails as Linux < 5.3 would."""
            import errno
            raise OSError(errno.ENOSYS, "this Python has no signal.pidfd_send_signal")

__all__ = ["SIG_IGN", "SIGHUP", "SIGINT", "SIGKILL", "SIGTERM", "name", "pidfd_send_signal",
           "set_wakeup_fd", "signal"]

_NAMES: dict[int, str] = {
    int(SIGKILL): "SIGKILL", int(SIGTERM): "SIGTERM", int(SIGINT): "SIGINT", int(SIGHUP): "SIGHUP"}


def name(signum: int) -> str:
    """Return the name of ``signum`` (``SIGKILL``), or ``signal N``."""
    return _NAMES.get(signum, f"signal {signum}")
