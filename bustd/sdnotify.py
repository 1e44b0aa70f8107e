"""systemd's notification protocol (sd_notify(3)) over a plain datagram socket.

With ``Type=notify`` systemd sets $NOTIFY_SOCKET: bustd sends ``READY=1``
after its first check (it is watching), ``STATUS=`` with the last readings
and kills, and, when $WATCHDOG_USEC is set, ``WATCHDOG=1`` from the loop
itself, so a loop that hangs stops the pings and systemd restarts bustd.
The loop is woken at least every quarter of the watchdog interval
(``Monitor.max_sleep``) and pings when half of it has passed, so the
longest gap stays under half the interval.

The socket comes from the C module ``_socket``: ``socket.py`` would load
``enum``, ``selectors`` and more for good. Sends never block (a full queue
drops the message) and never raise.
"""

from __future__ import annotations

from .log import Log, pct, safe, size

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket as _socket
    from typing import Callable, Mapping

    from .outputs import Record
else:
    import _socket

__all__ = ["STATUS_EVERY", "SystemdNotify", "from_environment", "status_line"]

STATUS_EVERY = 10.0  # seconds at least between two STATUS= updates after checks


def status_line(available_kib: int, total_kib: int, swap_free_kib: int, swap_total_kib: int,
                stall: float | None, kills: int, last: str) -> str:
    """Return the STATUS= line: readings, kills and the last kill or warning."""
    swap = (f"SwapFree {size(swap_free_kib)} of {size(swap_total_kib)}" if swap_total_kib
            else "no swap")
    stall_text = "" if stall is None else f", stall {stall:.0f}%"
    return (f"MemAvailable {size(available_kib)} ({pct(available_kib, total_kib)}), "
            f"{swap}{stall_text}; {kills} kills{'; last: ' + last if last else ''}")


class SystemdNotify:
    """An output: READY, STATUS and WATCHDOG messages to ``address``."""

    __slots__ = ("address", "ping_every", "log", "sock", "ready", "last_ping", "last_status",
                 "last_event", "failing")

    def __init__(self, address: str, watchdog_s: float, log: Log) -> None:
        # An address starting with '@' is in the abstract namespace (sd_notify(3)).
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.ping_every = watchdog_s / 2 if watchdog_s > 0 else 0.0
        self.log = log
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
        self.sock.setblocking(False)
        self.ready = False
        self.last_ping = float("-inf")
        self.last_status = float("-inf")
        self.last_event = ""  # the last kill or warning, for STATUS=
        self.failing = False

    def send(self, message: str) -> bool:
        """Send one datagram; return whether it went (a failure is said once)."""
        try:
            self.sock.sendto(message.encode("utf-8", "replace"), self.address)
        except OSError as err:
            if not self.failing:
                self.log.warning(f"cannot notify systemd at {self.address!r}: {err}")
                self.failing = True
            return False
        self.failing = False
        return True

    def __call__(self, record: Record) -> None:
        """After a check: READY once, WATCHDOG and STATUS when due; a kill or warning
        changes STATUS at once."""
        if record.kind == "kill":
            if not record.dry_run:
                self.last_event = f"killed pid {record.pid} ({safe(record.comm, 64)})"
            self.last_status = float("-inf")
            return
        if record.kind == "warn":
            self.last_event = f"warned: {record.cause}"
            self.last_status = float("-inf")
            return
        lines = []
        if not self.ready:
            lines.append("READY=1")
        if self.ping_every and record.now - self.last_ping >= self.ping_every:
            lines.append("WATCHDOG=1")
            self.last_ping = record.now
        if not self.ready or record.now - self.last_status >= STATUS_EVERY:
            m = record.mem
            status = status_line(m.available, m.total, m.swap_free, m.swap_total,
                                 record.stall, record.kills, self.last_event)
            lines.append("STATUS=" + status.replace("\n", " "))
            self.last_status = record.now
        if lines and self.send("\n".join(lines)):
            self.ready = True

    def close(self) -> None:
        """Say STOPPING=1 and close the socket."""
        self.send("STOPPING=1")
        self.sock.close()


def from_environment(environ: Mapping[str, str], log: Log, pid: int
                     ) -> tuple[SystemdNotify | None, Callable[[], None]]:
    """Return the notifier systemd asks for in ``environ`` (None if none) and a closer.

    Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID (a watchdog meant
    for another process is ignored). Raises nothing: a bad value is logged.
    """
    address = environ.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return None, lambda: None
    watchdog = 0.0
    usec = environ.get("WATCHDOG_USEC", "")
    if usec:
        owner = environ.get("WATCHDOG_PID", "")
        try:
            if not owner or int(owner) == pid:
                watchdog = int(usec) / 1e6
        except ValueError:
            log.warning(f"ignoring WATCHDOG_USEC={usec!r} / WATCHDOG_PID={owner!r}: not numbers")
    try:
        notifier = SystemdNotify(address, watchdog, log)
    except OSError as err:
        log.warning(f"cannot notify systemd ({err}): no READY, STATUS or WATCHDOG")
        return None, lambda: None
    return notifier, notifier.close
