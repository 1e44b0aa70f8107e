#!/usr/bin/python3
"""Inside bustd.service's sandbox: do the kernel calls bustd kills with succeed? (issue 15)

Run by systemd_guest.py in a transient unit with every [Service] setting of
contrib/bustd.service (systemd-run, as ``bustd check`` is there)::

    python3 sandbox_probe.py CGROUP_FOLDER

It starts two children of its own and, on them only: opens a pidfd
(pidfd_open), sends signal 0 through it (pidfd_send_signal), calls
process_mrelease on the live one (EINVAL: the call passed the seccomp filter
and the kernel refused a process that is not dying; EPERM would be the
filter) and on the other after SIGKILL (0 or ESRCH), and writes "1" to
CGROUP_FOLDER/cgroup.kill (a cgroup the guest made, holding a sleep of its
own). Prints one JSON object: each call's errno name ("OK" for success).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import sys
import time

NR_PIDFD_SEND_SIGNAL, NR_PROCESS_MRELEASE = 424, 448  # x86_64 and every newer arch


def name(err: int) -> str:
    return "OK" if err == 0 else errno.errorcode.get(err, str(err))


def main() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    out: dict[str, str] = {}

    def syscall(nr: int, *args: int) -> str:
        ctypes.set_errno(0)
        rc = libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
        return name(0 if rc == 0 else ctypes.get_errno())

    live = os.posix_spawn("/bin/sleep", ["sleep", "60"], {})
    dying = os.posix_spawn("/bin/sleep", ["sleep", "60"], {})
    try:
        try:
            fd = os.pidfd_open(live)
            out["pidfd_open"] = "OK"
        except OSError as err:
            out["pidfd_open"] = name(err.errno or 0)
            fd = -1
        if fd >= 0:
            out["pidfd_send_signal"] = syscall(NR_PIDFD_SEND_SIGNAL, fd, 0, 0, 0)
            out["process_mrelease_live"] = syscall(NR_PROCESS_MRELEASE, fd, 0)
            os.close(fd)
        try:
            fd = os.pidfd_open(dying)
            os.kill(dying, signal.SIGKILL)
            out["process_mrelease_killed"] = syscall(NR_PROCESS_MRELEASE, fd, 0)
            os.close(fd)
        except OSError as err:
            out["process_mrelease_killed"] = name(err.errno or 0)
        try:
            with open(os.path.join(sys.argv[1], "cgroup.kill"), "w") as f:
                f.write("1")
            out["cgroup_kill"] = "OK"
        except OSError as err:
            out["cgroup_kill"] = name(err.errno or 0)
    finally:
        for pid in (live, dying):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            os.waitpid(pid, 0)
    time.sleep(0.1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
