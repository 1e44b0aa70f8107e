"""The notification helper: one desktop notification on one user's session bus.

Run by the daemon (notify.py) as a short-lived child, never imported by it::

    python3 -S -I bustd/dbus_notify.py UID GID BUS_PATH

with the notification in $BUSTD_SUMMARY, $BUSTD_BODY and $BUSTD_URGENCY
(0 low, 1 normal, 2 critical). It drops to UID and GID (no supplementary
groups), connects to the bus socket, and speaks the small part of the D-Bus
wire protocol it needs (the D-Bus specification: SASL ``AUTH EXTERNAL``,
``Hello``, then one ``org.freedesktop.Notifications.Notify`` call, all in
little-endian marshalling) with the standard library alone, so bustd needs
no D-Bus library and the daemon never waits on a bus. It gives up after
TIMEOUT seconds (SIGALRM ends it).

Exit codes: 0 delivered; 2 bad arguments; 3 cannot become UID/GID; 4 no
session bus there (cannot connect); 5 the bus refused authentication or
broke the protocol; 6 the bus answered Notify with an error (no
notification service; its name goes to stderr).
"""

from __future__ import annotations

import os
import struct
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket
    from typing import Callable, NoReturn

__all__ = ["EXIT_AUTH", "EXIT_BUS", "EXIT_ERROR", "EXIT_USAGE", "EXIT_USER", "Writer",
           "method_call", "notify_body", "parse_header", "sasl_auth_line"]

TIMEOUT = 5  # seconds for the whole conversation
EXIT_USAGE, EXIT_USER, EXIT_BUS, EXIT_AUTH, EXIT_ERROR = 2, 3, 4, 5, 6
# Message types and header field codes (D-Bus specification, "Message Format").
METHOD_CALL, METHOD_RETURN, ERROR = 1, 2, 3
F_PATH, F_INTERFACE, F_MEMBER, F_ERROR_NAME, F_REPLY_SERIAL = 1, 2, 3, 4, 5
F_DESTINATION, F_SIGNATURE = 6, 8
_FIXED = 16  # bytes before the header fields: endian, type, flags, version, 3 x uint32
_MAX_MESSAGE = 1 << 20  # a reply larger than this is not one we wait for


class Writer:
    """Marshals D-Bus values, little-endian, aligned from the start of ``buf``."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def align(self, n: int) -> None:
        """Pad with NUL bytes to a multiple of ``n``."""
        self.buf += b"\0" * (-len(self.buf) % n)

    def byte(self, value: int) -> None:
        """Write a BYTE (y)."""
        self.buf.append(value)

    def uint32(self, value: int) -> None:
        """Write a UINT32 (u)."""
        self.align(4)
        self.buf += struct.pack("<I", value)

    def int32(self, value: int) -> None:
        """Write an INT32 (i)."""
        self.align(4)
        self.buf += struct.pack("<i", value)

    def string(self, value: str) -> None:
        """Write a STRING (s) or OBJECT_PATH (o): length, UTF-8, NUL."""
        data = value.encode("utf-8", "replace").replace(b"\0", b"")
        self.uint32(len(data))
        self.buf += data + b"\0"

    def signature(self, value: str) -> None:
        """Write a SIGNATURE (g): one-byte length, ASCII, NUL."""
        data = value.encode("ascii")
        self.byte(len(data))
        self.buf += data + b"\0"

    def array(self, element_alignment: int, write: Callable[[], None]) -> None:
        """Write an ARRAY whose elements ``write()`` appends (the length is patched in)."""
        self.uint32(0)
        at = len(self.buf)
        self.align(element_alignment)
        start = len(self.buf)
        write()
        struct.pack_into("<I", self.buf, at - 4, len(self.buf) - start)


def method_call(serial: int, destination: str, path: str, interface: str, member: str,
                signature: str = "", body: bytes = b"") -> bytes:
    """Return one METHOD_CALL message (header, padding, ``body`` marshalled for ``signature``)."""
    w = Writer()
    w.buf += bytes((ord("l"), METHOD_CALL, 0, 1))  # little-endian, no flags, protocol 1
    w.uint32(len(body))
    w.uint32(serial)
    fields = [(F_PATH, "o", path), (F_INTERFACE, "s", interface), (F_MEMBER, "s", member),
              (F_DESTINATION, "s", destination), (F_SIGNATURE, "g", signature)]

    def write_fields() -> None:
        for code, kind, value in fields:
            if not value:
                continue
            w.align(8)  # each field is a STRUCT (yv)
            w.byte(code)
            w.signature(kind)
            if kind == "g":
                w.signature(value)
            else:
                w.string(value)

    w.array(8, write_fields)
    w.align(8)  # the body starts on an 8-byte boundary
    return bytes(w.buf) + body


def notify_body(summary: str, body: str, urgency: int, app: str = "bustd",
                icon: str = "dialog-warning", timeout_ms: int = -1) -> bytes:
    """Return the marshalled arguments of Notify, signature ``susssasa{sv}i``.

    No actions; one hint, ``urgency`` (a BYTE in a VARIANT).
    """
    w = Writer()
    w.string(app)
    w.uint32(0)  # replaces_id: a new notification
    w.string(icon)
    w.string(summary)
    w.string(body)
    w.array(4, lambda: None)  # actions: none

    def hints() -> None:
        w.align(8)  # DICT_ENTRY
        w.string("urgency")
        w.signature("y")
        w.byte(urgency)

    w.array(8, hints)
    w.int32(timeout_ms)
    return bytes(w.buf)


def sasl_auth_line(uid: int) -> bytes:
    """Return the SASL line that authenticates as ``uid`` with EXTERNAL."""
    return b"AUTH EXTERNAL " + str(uid).encode().hex().encode() + b"\r\n"


class Header:
    """What a received message is: type, total length and the fields bustd reads."""

    __slots__ = ("type", "length", "reply_serial", "error_name", "body_start", "endian")

    def __init__(self, type_: int, length: int, reply_serial: int, error_name: str,
                 body_start: int, endian: str) -> None:
        self.type = type_
        self.length = length
        self.reply_serial = reply_serial
        self.error_name = error_name
        self.body_start = body_start
        self.endian = endian


def _align(pos: int, n: int) -> int:
    return pos + (-pos % n)


def parse_header(buf: bytes) -> Header | None:
    """Return the Header of the message at the start of ``buf``, None if incomplete.

    Raises ValueError for a message bustd cannot read (bad endianness flag,
    an unknown field type, more than _MAX_MESSAGE bytes).
    """
    if len(buf) < _FIXED:
        return None
    endian = {ord("l"): "<", ord("B"): ">"}.get(buf[0])
    if endian is None:
        raise ValueError(f"bad endianness flag {buf[0]!r}")
    body_len, _serial, fields_len = struct.unpack_from(endian + "III", buf, 4)
    body_start = _align(_FIXED + fields_len, 8)
    length = body_start + body_len
    if length > _MAX_MESSAGE:
        raise ValueError(f"message of {length} bytes")
    if len(buf) < body_start:
        return None
    reply_serial, error_name = 0, ""
    pos, end = _FIXED, _FIXED + fields_len
    while pos < end:
        pos = _align(pos, 8)
        if pos >= end:
            break
        code, siglen = buf[pos], buf[pos + 1]
        kind = buf[pos + 2:pos + 2 + siglen].decode("ascii", "replace")
        pos += 3 + siglen
        if kind in ("s", "o"):
            pos = _align(pos, 4)
            (n,) = struct.unpack_from(endian + "I", buf, pos)
            value = buf[pos + 4:pos + 4 + n].decode("utf-8", "replace")
            pos += 5 + n
            if code == F_ERROR_NAME:
                error_name = value
        elif kind == "g":
            pos += 2 + buf[pos]
        elif kind == "u":
            pos = _align(pos, 4)
            (n,) = struct.unpack_from(endian + "I", buf, pos)
            pos += 4
            if code == F_REPLY_SERIAL:
                reply_serial = n
        else:
            raise ValueError(f"header field {code} of type {kind!r}")
    return Header(buf[1], length, reply_serial, error_name, body_start, endian)


def _error_text(buf: bytes, h: Header) -> str:
    """Return the error name and, if the body starts with a string, its message."""
    text = h.error_name or "an error"
    if h.length - h.body_start >= 4:
        (n,) = struct.unpack_from(h.endian + "I", buf, h.body_start)
        message = buf[h.body_start + 4:h.body_start + 4 + n].decode("utf-8", "replace")
        text += f": {message}" if message else ""
    return text


def _exit(code: int, message: str = "") -> NoReturn:
    if message:
        sys.stderr.write(f"bustd notification helper: {message}\n")
        sys.stderr.flush()
    os._exit(code)


def _converse(sock: _socket.socket, uid: int, summary: str, body: str,
              urgency: int) -> NoReturn:
    """Authenticate, say Hello, call Notify; exits with the outcome."""
    sock.sendall(b"\0" + sasl_auth_line(uid))
    line = b""
    while not line.endswith(b"\r\n"):
        chunk = sock.recv(512)
        if not chunk or len(line) > 4096:
            _exit(EXIT_AUTH)
        line += chunk
    if not line.startswith(b"OK "):
        _exit(EXIT_AUTH)
    sock.sendall(b"BEGIN\r\n")
    sock.sendall(method_call(1, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                             "org.freedesktop.DBus", "Hello"))
    sock.sendall(method_call(2, "org.freedesktop.Notifications",
                             "/org/freedesktop/Notifications",
                             "org.freedesktop.Notifications", "Notify", "susssasa{sv}i",
                             notify_body(summary, body, urgency)))
    buf = b""
    while True:
        try:
            h = parse_header(buf)
        except ValueError:
            _exit(EXIT_AUTH)
        if h is not None and len(buf) >= h.length:
            message, buf = buf[:h.length], buf[h.length:]
            if h.type in (METHOD_RETURN, ERROR) and h.reply_serial in (1, 2):
                if h.type == ERROR:
                    _exit(EXIT_ERROR, f"uid {uid}: {_error_text(message, h)}")
                if h.reply_serial == 2:
                    _exit(0)
            continue
        chunk = sock.recv(65536)
        if not chunk:
            _exit(EXIT_AUTH)
        buf += chunk


def main(argv: list[str]) -> None:
    """Deliver one notification as described in the module docstring; never returns."""
    if TYPE_CHECKING:
        import signal as _signal
    else:
        import _signal  # not signal.py, which loads enum: this runs under memory pressure
    import _socket
    _signal.alarm(TIMEOUT)
    try:
        uid, gid, path = int(argv[1]), int(argv[2]), argv[3]
        summary = os.environ["BUSTD_SUMMARY"]
        body = os.environ.get("BUSTD_BODY", "")
        urgency = int(os.environ.get("BUSTD_URGENCY", "1"))
    except (IndexError, KeyError, ValueError):
        _exit(EXIT_USAGE, "usage: dbus_notify.py UID GID BUS_PATH, with $BUSTD_SUMMARY")
    try:
        if os.getuid() != uid or os.getgid() != gid:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        if os.getuid() != uid or os.geteuid() != uid or os.getegid() != gid:
            raise PermissionError("credentials did not change")
    except OSError as err:
        _exit(EXIT_USER, f"cannot become uid {uid} gid {gid}: {err}")
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect(path)
    except OSError:
        _exit(EXIT_BUS)
    try:
        _converse(sock, uid, summary, body, urgency)
    except OSError:
        _exit(EXIT_AUTH)


if __name__ == "__main__":
    main(sys.argv)
