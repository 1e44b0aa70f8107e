"""A notification server for tests: owns org.freedesktop.Notifications on a bus.

Usage: notify_listener.py ADDRESS SITE_PACKAGES [hang]. Runs as the bus's
user (nobody) with Debian's /usr/bin/python3, importing jeepney (a well-kept
D-Bus library, test-only) from SITE_PACKAGES. Prints one JSON line when it
owns the name ({"ready": unique name}), then one per Notify call it answers
(app, summary, body, hints, the caller's uid). With "hang", it owns the name
and never answers: a hung notification service.
"""

from __future__ import annotations

import json
import sys

sys.path.insert(0, sys.argv[2])

from jeepney import (  # type: ignore[import-untyped]
    HeaderFields,
    MessageType,
    new_error,
    new_method_return,
)
from jeepney.bus_messages import message_bus  # type: ignore[import-untyped]
from jeepney.io.blocking import open_dbus_connection  # type: ignore[import-untyped]


def main() -> None:
    """Serve Notify calls until killed."""
    hang = "hang" in sys.argv[3:]
    conn = open_dbus_connection(sys.argv[1])
    reply = conn.send_and_get_reply(message_bus.RequestName("org.freedesktop.Notifications"))
    print(json.dumps({"ready": conn.unique_name, "request_name": reply.body[0]}), flush=True)
    count = 0
    while True:
        msg = conn.receive()
        h = msg.header
        if h.message_type != MessageType.method_call or hang:
            continue
        fields = h.fields
        if (fields.get(HeaderFields.interface) != "org.freedesktop.Notifications"
                or fields.get(HeaderFields.member) != "Notify"):
            conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod"))
            continue
        sender = fields.get(HeaderFields.sender)
        uid = conn.send_and_get_reply(message_bus.GetConnectionUnixUser(sender)).body[0]
        app, replaces, icon, summary, body, actions, hints, timeout = msg.body
        count += 1
        conn.send(new_method_return(msg, "u", (count,)))
        print(json.dumps({"app": app, "replaces": replaces, "icon": icon, "summary": summary,
                          "body": body, "actions": list(actions),
                          "hints": {k: list(v) for k, v in hints.items()},
                          "timeout": timeout, "signature": fields.get(HeaderFields.signature),
                          "sender_uid": uid}), flush=True)


if __name__ == "__main__":
    main()
