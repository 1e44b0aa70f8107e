"""The config file: ``option = value`` lines read as the command line they stand for.

Each line names an option of the table (options.py) by its long name
without the dashes, so the file and the command line have one vocabulary;
:func:`config_file_args` returns the equivalent argv, checked value by
value with the daemon's parser, and the command line then overrides it.
The file itself is trusted only as a hook is (vet.py): whoever can change
it chooses what bustd may kill. Front end only.
"""

from __future__ import annotations

import os
import stat

from .options import OPTIONS, parse_args
from .optvalues import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

__all__ = ["MAX_CONFIG_BYTES", "config_file_args", "parse_config_line", "read_config_file"]

# A config file is a few hundred bytes; anything near this is a mistake
# (a log, a device, a disk image) and is refused before it is read.
MAX_CONFIG_BYTES = 1 << 20


def read_config_file(name: str) -> str:
    """Return the text of config file ``name``.

    Refuses, as sshd does, a file not owned by root or by the user bustd runs
    as, or writable by group or others (vet.distrust, the rule of hooks):
    whoever can change it chooses what bustd may kill. Refuses anything but
    a regular file of at most MAX_CONFIG_BYTES: it is opened without
    blocking (a FIFO would wait for a writer) and checked with fstat before
    a byte is read (``/dev/zero`` never ends). Raises UsageError naming the
    file and the problem.
    """
    def refuse(problem: str) -> UsageError:
        return UsageError(f"config file {name}: {problem}")

    from .vet import Unsafe, distrust, kind, resolve
    if "\0" in name:
        raise refuse("it holds a NUL byte")
    if not name:
        raise refuse("No such file or directory")
    try:
        # Every folder and link on the way is checked too (review L3): a
        # user who could swap a link there would choose bustd's settings.
        folder, last, _, _ = resolve(os.path.abspath(name))
    except Unsafe as err:
        raise refuse(str(err)) from None
    try:
        fd = os.open(last, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
                     | os.O_NOFOLLOW, dir_fd=folder)
    except OSError as err:
        raise refuse(err.strerror or str(err)) from None
    finally:
        os.close(folder)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise refuse(f"{kind(st.st_mode)}, not a regular file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise refuse(f"{st.st_size} bytes, more than the {MAX_CONFIG_BYTES} "
                         "a config file may have")
        euid = os.geteuid()
        problem = distrust(st, euid)
        if problem == "owner":
            who = "root" if euid == 0 else f"root or uid {euid} (the user bustd runs as)"
            raise refuse(f"owned by uid {st.st_uid}, not by {who}")
        if problem == "mode":
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
        raise UsageError(f"{name}:{line}: not UTF-8 text "
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


def config_file_args(p: argparse.ArgumentParser, name: str) -> list[str]:
    """Return the argv equivalent of config file ``name``, each value checked with ``p``.

    Each line is ``option = value`` with the long option name without its
    dashes (``mem = 5,2``; ``dry-run = true`` for a flag); a line starting
    with ``#`` is a comment, and so is the rest of a line from a ``#`` after
    a space or tab outside quotes. The names are those of the option table
    (options.OPTIONS). Raises UsageError naming the file, the line
    and the option (see :func:`read_config_file` for what is refused).
    """
    lines = read_config_file(name).split("\n")
    # name -> whether it is a flag, for each option a file may set
    flags = {o.flags[-1][2:]: o.action != "store" for o in OPTIONS if o.in_file}
    argv: list[str] = []
    for number, line in enumerate(lines, 1):
        where = f"{name}:{number}"
        try:
            parsed = parse_config_line(line)
        except ValueError as err:
            raise UsageError(f"{where}: {err}") from None
        if parsed is None:
            continue
        key, value = parsed
        if key not in flags:
            raise UsageError(f"{where}: unknown option {key!r}")
        if flags[key]:
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
