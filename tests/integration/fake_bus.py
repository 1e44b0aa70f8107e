"""A hostile session bus, run by an unprivileged user (review M4, L7).

Usage: ``setpriv --reuid=nobody ... python3 -S -I fake_bus.py SOCKET COUNT_FILE``.
It binds SOCKET (so the socket is that user's, as /run/user/UID/bus is),
accepts the SASL handshake of every client, and then:

- to its first client, answers with a D-Bus ERROR whose name and message
  hold newlines and journald ``<N>`` priority prefixes (a forged log line);
- stops every later client with SIGSTOP (the helper runs as this user by
  then, so the user may) and never answers: each would hold one of bustd's
  child slots until bustd kills it.

Writes the number of clients served to COUNT_FILE after each one.
"""

import os
import select
import signal
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from bustd.dbus_notify import ERROR, F_ERROR_NAME, F_REPLY_SERIAL, F_SIGNATURE, Writer

FORGED = ("\n<4>kill: pid=1 name=sshd exe=/usr/sbin/sshd uid=0 rss=1.0 GiB signal=SIGKILL; "
          "reason: FORGED\n<0>emerg: bustd: FORGED second line")


def error_reply(serial: int) -> bytes:
    """Return an ERROR message replying to ``serial``, its name and text forged."""
    body = Writer()
    body.string("FORGED message" + FORGED)
    w = Writer()
    w.buf += bytes((ord("l"), ERROR, 0, 1))
    w.uint32(len(body.buf))
    w.uint32(99)

    def fields() -> None:
        w.align(8)
        w.byte(F_REPLY_SERIAL)
        w.signature("u")
        w.uint32(serial)
        w.align(8)
        w.byte(F_ERROR_NAME)
        w.signature("s")
        w.string("org.x" + FORGED)
        w.align(8)
        w.byte(F_SIGNATURE)
        w.signature("g")
        w.signature("s")

    w.array(8, fields)
    w.align(8)
    return bytes(w.buf) + bytes(body.buf)


def main() -> None:
    path, count_file = sys.argv[1], sys.argv[2]
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    clients: dict[socket.socket, bytes] = {}
    number: dict[socket.socket, int] = {}
    served = 0
    while True:
        ready, _, _ = select.select([server, *clients], [], [])
        for s in ready:
            if s is server:
                conn, _ = server.accept()
                clients[conn] = b""
                served += 1
                number[conn] = served
                with open(count_file, "w") as f:
                    f.write(str(served))
                continue
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:
                del clients[s]
                s.close()
                continue
            seen = clients[s] + data
            clients[s] = seen
            if seen.count(b"\r\n") == 1 and seen.endswith(b"\r\n"):
                s.sendall(b"OK 0123456789abcdef0123456789abcdef\r\n")
            elif b"BEGIN\r\n" in seen and not seen.endswith(b"#answered"):
                clients[s] = seen + b"#answered"
                if number[s] == 1:
                    s.sendall(error_reply(1))
                else:
                    pid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET,
                                                           socket.SO_PEERCRED, 12))[0]
                    try:
                        os.kill(pid, signal.SIGSTOP)
                    except OSError:
                        pass


if __name__ == "__main__":
    main()
