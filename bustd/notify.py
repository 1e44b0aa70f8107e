"""-N/--notify: desktop notifications of each kill and warning.

For every user with a session bus at ``/run/user/UID/bus`` (systemd-logind's
layout; with ``--notify-owner-only`` only the victim's owner), the daemon
starts the helper ``dbus_notify.py`` as a short-lived child: it drops to
that user's uid and gid (the owner and group of ``/run/user/UID``, so no
user database is consulted) and makes one Notify call. The daemon loads no
D-Bus code and never waits on a bus: a hung or missing bus costs a child
that is reaped or killed later (HELPER_LIMIT), never a delayed kill.

Names reach the notification as the log line renders them, and the body
(which notification servers may read as markup) has ``&``, ``<`` and ``>``
escaped, so a process named ``<a href=...>`` or ``$(touch /tmp/pwned)`` is
shown as that text. Dry runs are not notified (they repeat every second).
"""

from __future__ import annotations

import os
import stat
import sys

from . import sig
from .log import safe, size
from .spawn import HOOK_SLOTS, PATH, Children

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .outputs import Record
    from .record import KillRecord, WarnRecord

__all__ = ["HELPER", "HELPER_LIMIT", "RUN_USER", "Notifier", "explain", "kill_text",
           "markup_escape", "sessions", "warn_text"]

RUN_USER = "/run/user"
HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dbus_notify.py")
HELPER_LIMIT = 10.0  # seconds before a helper still running is killed
URGENCY_NORMAL, URGENCY_CRITICAL = 1, 2

_MEANINGS = {2: "bad arguments", 3: "cannot become that user",
             4: "no session bus there", 5: "the bus refused authentication or broke the protocol",
             6: "the bus answered with an error (no notification service?)"}


def explain(code: int) -> str | None:
    """Return what a helper's exit ``code`` means (None if unknown)."""
    meaning = _MEANINGS.get(code)
    return f"exit {code}: {meaning}" if meaning else None


def markup_escape(text: str) -> str:
    """Return ``text`` with &, < and > escaped for a notification body."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def kill_text(r: KillRecord) -> tuple[str, str]:
    """Return the (summary, body) of the notification of a kill."""
    name = safe(r.comm, 64)
    freed = size(r.freeable_kib)
    outcome = "" if r.exited else " It had not exited yet."
    summary = f"bustd killed {name} (pid {r.pid}) to free memory"
    body = (f"{name} (pid {r.pid}) held {freed} of its own memory; it was sent "
            f"{sig.name(r.signal)}.{outcome} Reason: {r.reason}.")
    if r.freed_kib is not None:
        body += f" It gave back {size(r.freed_kib)} of memory."
        if r.vain:
            body += (" That was far less than expected: memory is held where no kill frees "
                     "it, and bustd pauses its kills.")
    return summary, markup_escape(body)


def warn_text(r: WarnRecord) -> tuple[str, str]:
    """Return the (summary, body) of a warning that a kill may come."""
    if r.victim is None:
        summary = "Memory is running out"
        body = f"No process may be killed to free it. {r.reason}."
    else:
        name = safe(r.victim.comm, 64)
        summary = f"Memory is running out: {name} (pid {r.victim.pid}) may be killed"
        body = (f"bustd may soon kill {name} (pid {r.victim.pid}, "
                f"{size(r.victim.freeable_kib)}) to free memory: save your work. {r.reason}.")
    if r.held is not None:
        from .held import held_text
        body += (f" {size(r.held.outside)} is held outside processes, where no kill frees "
                 f"it: {held_text(r.held)}.")
    return summary, markup_escape(body)


def sessions(root: str = RUN_USER, only_uid: int | None = None) -> list[tuple[int, int, str]]:
    """Return (uid, gid, bus path) of each user with a session bus under ``root``.

    A bus counts when ``root/UID/bus`` is a socket owned by UID; the gid is
    the group of ``root/UID``. With ``only_uid``, that user alone (if it has
    one). Never raises: an unreadable ``root`` means no sessions.
    """
    try:
        names = os.listdir(root) if only_uid is None else [str(only_uid)]
    except OSError:
        return []
    found = []
    for name in names:
        if not name.isdigit():
            continue
        uid, folder = int(name), os.path.join(root, name)
        bus = os.path.join(folder, "bus")
        try:
            st = os.stat(bus)
            gid = os.stat(folder).st_gid
        except OSError:
            continue
        if stat.S_ISSOCK(st.st_mode) and st.st_uid == uid:
            found.append((uid, gid, bus))
    return sorted(found)


class Notifier:
    """An output: one helper per user with a session bus, for each kill and warning."""

    __slots__ = ("owner_only", "children", "python", "helper", "root")

    def __init__(self, owner_only: bool, children: Children, python: str = "",
                 helper: str = HELPER, root: str = RUN_USER) -> None:
        self.owner_only = owner_only
        self.children = children
        self.python = python or sys.executable or "/usr/bin/python3"
        self.helper = helper
        self.root = root

    def __call__(self, record: Record) -> None:
        """Notify of a kill (not a dry run) or a warning; ignore other records."""
        if record.kind == "kill":
            if record.dry_run:
                return
            owner: int | None = record.uid
            summary, body = kill_text(record)
            urgency = URGENCY_NORMAL
        elif record.kind == "warn":
            if record.victim is None and self.owner_only:
                return
            owner = record.uid
            summary, body = warn_text(record)
            urgency = URGENCY_CRITICAL
        else:
            return
        env = {"PATH": PATH, "BUSTD_SUMMARY": summary, "BUSTD_BODY": body,
               "BUSTD_URGENCY": str(urgency)}
        for uid, gid, bus in sessions(self.root, owner if self.owner_only else None):
            # Its output is read by bustd, never left on bustd's stderr: the
            # error it reports comes from the user's bus (review M4). One
            # helper per user at a time, never in the hooks' slots (L7).
            self.children.start([self.python, "-S", "-I", self.helper, str(uid), str(gid), bus],
                                env, f"notification helper for uid {uid}", "notification",
                                HELPER_LIMIT, explain, capture=True, key=f"notify {uid}",
                                spare=HOOK_SLOTS)
