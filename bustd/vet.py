"""Paths nobody but root can change: hooks, output folders, the config file (issue 15).

bustd runs as root and executes its hooks, reads its config file and
writes its metrics, kill log and pid file. Whoever can change one of those
paths steers a root daemon, so each is accepted only when every component
on the way to it, the symbolic links included, is owned by root (or the
user bustd runs as) and not writable by group or others, as sshd checks
its files. A folder with the sticky bit (``/tmp``) may be writable by
others: there nobody can rename or remove an entry they do not own.

The walk never lets the kernel follow a link: each component is looked at
with ``lstat`` relative to a descriptor of the folder already checked
(``O_PATH``, ``dir_fd``), and a link's target is walked the same way, from
``/`` or from the folder that holds the link. So what is checked is what is
opened: :func:`open_hook` returns a descriptor of the very file checked,
and the hook is run from it (spawn.py), so a later swap of a link changes
nothing.

Only ``os`` and ``stat`` (already loaded by ``os``): the runtime uses it too.
"""

from __future__ import annotations

import os
import stat

__all__ = ["MAX_LINKS", "Missing", "Unsafe", "distrust", "kind", "open_append", "open_hook",
           "replace", "resolve", "unsafe", "vet_folder"]

MAX_LINKS = 40  # links followed in one path (the kernel's own limit, MAXSYMLINKS)
_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


class Unsafe(ValueError):
    """A path someone else could change, or that cannot be checked; the message says which."""


class Missing(Unsafe):
    """A folder on the way does not exist; the message names it."""


def distrust(st: os.stat_result, euid: int) -> str:
    """Return why a file, folder or link with lstat ``st`` is not trusted: "owner", "mode" or "".

    The one rule for every path bustd trusts (a hook, the config file, the
    folders and links on the way to them and to what it writes): "owner"
    for an owner other than root or ``euid``; "mode" for write access by
    group or others, except on a symbolic link (whose own mode means
    nothing) and a folder with the sticky bit; "" when trusted.
    """
    if st.st_uid not in (0, euid):
        return "owner"
    if stat.S_ISLNK(st.st_mode):
        return ""
    sticky_dir = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not sticky_dir:
        return "mode"
    return ""


def unsafe(st: os.stat_result, euid: int, what: str) -> str | None:
    """Return why ``what`` (a file, folder or link with lstat ``st``) is refused, or None.

    Refused as :func:`distrust` says; the message names ``what``.
    """
    problem = distrust(st, euid)
    if problem == "owner":
        who = "root" if euid == 0 else f"root or uid {euid}"
        return f"{what} is owned by uid {st.st_uid}, not {who}"
    if problem == "mode":
        return (f"{what} is writable by group or others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); chmod go-w it")
    return None


def _join(folder: str, name: str) -> str:
    return folder.rstrip("/") + "/" + name


def resolve(path: str, euid: int | None = None, last_may_link: bool = True
            ) -> tuple[int, str, str, os.stat_result | None]:
    """Walk absolute ``path``, checking every component; return where it ends.

    Returns ``(folder_fd, name, where, st)``: an ``O_PATH`` descriptor of
    the checked folder that holds the last component (the caller closes
    it), that component's name, the path it was found at (links resolved),
    and its lstat, or None if it does not exist. Every folder on the way
    and every link followed is checked with :func:`unsafe`; the last
    component itself is not (the caller knows what it must be). With
    ``last_may_link`` false a link as the last component is returned, not
    followed. Raises Unsafe naming the component and the problem.
    """
    if euid is None:
        euid = os.geteuid()
    if not path.startswith("/"):
        raise Unsafe(f"{path}: not an absolute path")
    if "\0" in path:
        raise Unsafe(f"{path!r}: holds a NUL byte")
    todo = [p for p in path.split("/") if p and p != "."]
    todo.reverse()  # a stack: the next component last
    links = 0
    fd = -1
    where = "/"

    def restart() -> None:
        nonlocal fd, where
        if fd >= 0:
            os.close(fd)
        fd, where = -1, "/"
        fd = os.open("/", _PATH | os.O_DIRECTORY)
        problem = unsafe(os.fstat(fd), euid, "folder /")
        if problem:
            raise Unsafe(problem)

    try:
        restart()
        while todo:
            name = todo.pop()
            if name == "..":
                # Back up to a folder already checked (or "/" itself).
                parent = os.path.dirname(where) or "/"
                new = os.open("..", _PATH | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd, where = new, parent
                continue
            full = _join(where, name)
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if todo:
                    raise Missing(f"no such folder {full}") from None
                fd_out, fd = fd, -1
                return fd_out, name, where, None
            if stat.S_ISLNK(st.st_mode) and (todo or last_may_link):
                problem = unsafe(st, euid, f"link {full}")
                if problem:
                    raise Unsafe(problem)
                links += 1
                if links > MAX_LINKS:
                    raise Unsafe(f"{path}: more than {MAX_LINKS} symbolic links")
                target = os.readlink(name, dir_fd=fd)
                parts = [p for p in target.split("/") if p and p != "."]
                todo.extend(reversed(parts))
                if target.startswith("/"):
                    restart()
                continue
            if not todo:
                fd_out, fd = fd, -1
                return fd_out, name, where, st
            if not stat.S_ISDIR(st.st_mode):
                raise Unsafe(f"{full}: not a folder")
            problem = unsafe(st, euid, f"folder {full}")
            if problem:
                raise Unsafe(problem)
            new = os.open(name, _PATH | os.O_DIRECTORY, dir_fd=fd)
            seen = os.fstat(new)
            if (seen.st_dev, seen.st_ino) != (st.st_dev, st.st_ino):
                os.close(new)
                raise Unsafe(f"folder {full} changed while it was checked")
            os.close(fd)
            fd, where = new, full
        # The path named "/" (or only "..", "."): the folder itself.
        fd_out, fd = fd, -1
        return fd_out, ".", where, os.fstat(fd_out)
    except OSError as err:
        raise Unsafe(f"{path}: {err.strerror or err}") from None
    finally:
        if fd >= 0:
            os.close(fd)


def kind(mode: int) -> str:
    """Return what a non-regular file is, for an error message."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "an unusual file"


def open_hook(path: str, euid: int | None = None) -> int:
    """Return an ``O_PATH`` descriptor of hook ``path``, checked as the module says.

    The hook must be an executable regular file owned by root (or
    ``euid``), not writable by group or others, with no more than one
    name (a hard link elsewhere could be a name someone else may change).
    Raises Unsafe naming the problem.
    """
    if euid is None:
        euid = os.geteuid()
    try:
        folder, name, where, st = resolve(path, euid)
    except Missing as err:
        raise Unsafe(f"{path}: No such file or directory ({err})") from None
    try:
        full = _join(where, name)
        if st is None:
            raise Unsafe(f"{path}: No such file or directory")
        if not stat.S_ISREG(st.st_mode):
            raise Unsafe(f"{path}: {kind(st.st_mode)}, not a regular file")
        if not st.st_mode & 0o111:
            raise Unsafe(f"{path}: not executable (chmod +x it)")
        what = "it" if full == path else f"{full} (where it leads)"
        problem = unsafe(st, euid, what)
        if problem:
            raise Unsafe(f"{path}: {problem}")
        if st.st_nlink != 1:
            raise Unsafe(f"{path}: {st.st_nlink} hard links to it: a hook has one name")
        try:
            fd = os.open(name, _PATH, dir_fd=folder)
        except OSError as err:
            raise Unsafe(f"{path}: {err.strerror or err}") from None
        seen = os.fstat(fd)
        if (seen.st_dev, seen.st_ino) != (st.st_dev, st.st_ino):
            os.close(fd)
            raise Unsafe(f"{path}: changed while it was checked")
        return fd
    finally:
        os.close(folder)


def vet_folder(path: str, what: str, euid: int | None = None) -> os.stat_result | None:
    """Check the folders (and links) above file ``path``; return its lstat (None: absent).

    The file itself may not be a symbolic link (bustd opens it with
    O_NOFOLLOW) and, if it exists, must be a regular file with one name
    (a FIFO would hang a writer, a device would be written to, a hard link
    would carry root's writes to another name), owned and writable as
    :func:`unsafe` allows. Raises Unsafe naming
    ``what`` (``kill log /x``), the component and the problem.
    """
    try:
        folder, _, _, st = resolve(path, euid, last_may_link=False)
    except Unsafe as err:
        raise Unsafe(f"{what}: {err}") from None
    os.close(folder)
    if st is None:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise Unsafe(f"{what}: {kind(st.st_mode)}, not a regular file")
    if st.st_nlink != 1:
        raise Unsafe(f"{what}: {st.st_nlink} hard links to it: refusing to write through one")
    problem = unsafe(st, os.geteuid() if euid is None else euid, "it")
    if problem:
        raise Unsafe(f"{what}: {problem}")
    return st


def _writable(st: os.stat_result, what: str) -> None:
    """Raise Unsafe unless ``st`` is a regular file with one name that root (or we) own."""
    if not stat.S_ISREG(st.st_mode):
        raise Unsafe(f"{what}: {kind(st.st_mode)}, not a regular file: not written")
    if st.st_nlink != 1:
        raise Unsafe(f"{what}: {st.st_nlink} hard links to it: not written")
    if st.st_uid not in (0, os.geteuid()):
        raise Unsafe(f"{what}: owned by uid {st.st_uid}: not written")


def open_append(path: str, mode: int) -> int:
    """Open ``path`` to append to it (created with ``mode``); return the descriptor.

    Never through a link (O_NOFOLLOW), never waiting (O_NONBLOCK: a FIFO
    with no reader fails at once), never into a FIFO, a device, a file with
    another name or one someone else owns: what is there is looked at with
    lstat before it is opened and with fstat after (review M3). Raises
    OSError, or Unsafe naming the problem.
    """
    try:
        _writable(os.lstat(path), path)
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                 | os.O_NOCTTY | os.O_CLOEXEC, mode)
    try:
        _writable(os.fstat(fd), path)
        os.set_blocking(fd, True)  # a regular file: the flag only mattered for the open
    except BaseException:
        os.close(fd)
        raise
    return fd


def replace(path: str, data: bytes, mode: int, sync: bool = False) -> None:
    """Write ``data`` to a new file beside ``path`` and rename it over ``path``.

    The temporary name is unpredictable and created with O_EXCL and
    O_NOFOLLOW, so nothing another user planted (a link, a FIFO, a hard
    link to a root file) is ever opened; its mode is set to ``mode``
    whatever the umask. Something other than a regular file with one name
    at ``path`` is refused, not replaced. With ``sync`` the data reaches
    the disk before the rename. Raises OSError, or Unsafe naming the problem.
    """
    folder, base = os.path.split(path)
    try:
        _writable(os.lstat(path), path)
    except FileNotFoundError:
        pass
    tmp = os.path.join(folder, f".{base}.{os.urandom(8).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NOCTTY
                 | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
