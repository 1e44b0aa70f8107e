"""A test process of known name, size and oom_score_adj.

Usage: child.py NAME MIB ADJ [ignore-term] [KIND]. Sets its comm to NAME,
raises its own oom_score_adj to ADJ (raising needs no privilege), holds MIB
MiB as KIND says, prints "ready" and sleeps until killed. KIND:

- ``private`` (the default): MIB MiB of its own, every page touched;
- ``shm=N``: a database's layout (issue 13): a MIB MiB shared segment (a
  memfd) filled here and mapped whole by N forked backends; exits 1 as soon
  as a backend dies, so the harness sees the loss;
- ``file=PATH``: reads a MIB MiB file at PATH (created if missing) through
  a shared read-only mapping: page cache, already counted in MemAvailable;
- ``grow=R``: MIB MiB of its own, then R MiB/s more until killed (at most
  256 MiB more: host test allocations stay small);
- ``zombie``: MIB MiB held by a second thread; the main thread then exits
  (pthread_exit), leaving a zombie thread-group leader whose live thread
  holds the memory (review M1).
"""

import os
import signal
import sys
import time

# Only built-in modules at the top: a child run with argv[0] elsewhere
# (/usr/sbin/sshd) may not find the interpreter's extension modules.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import mmap

MIB = 1 << 20
PAGE = 4096


def touch(buf: "bytearray | mmap.mmap") -> None:
    for i in range(0, len(buf), PAGE):
        buf[i] = 1


def shared_database(mib: int, backends: int) -> None:
    import mmap
    fd = os.memfd_create("shared_buffers")
    os.ftruncate(fd, mib * MIB)
    seg = mmap.mmap(fd, mib * MIB)
    touch(seg)
    pids = []
    for _ in range(backends):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            for i in range(0, len(seg), PAGE):
                seg[i]  # map every page of the segment
            os.write(w, b"1")
            while True:
                time.sleep(3600)
        os.close(w)
        os.read(r, 1)  # mapped
        os.close(r)
        pids.append(pid)
    print("ready", flush=True)
    while True:
        for pid in pids:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                os._exit(1)
        time.sleep(0.1)


def file_reader(mib: int, path: str) -> None:
    import mmap
    if not os.path.exists(path) or os.path.getsize(path) != mib * MIB:
        with open(path, "wb") as f:
            block = os.urandom(MIB)
            for _ in range(mib):
                f.write(block)
    with open(path, "rb") as f:
        view = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    total = 0
    for i in range(0, len(view), PAGE):
        total += view[i]
    print("ready", flush=True)
    while True:
        for i in range(0, len(view), PAGE):
            total += view[i]
        time.sleep(0.5)


def grower(mib: int, rate: float) -> None:
    held = [bytearray(mib * MIB)]
    touch(held[0])
    print("ready", flush=True)
    step = max(1, int(rate / 10))
    grown = 0
    while grown < 256:
        time.sleep(step / rate)
        chunk = bytearray(step * MIB)
        touch(chunk)
        held.append(chunk)
        grown += step
    while True:
        time.sleep(3600)


def zombie_leader(mib: int) -> None:
    import ctypes
    import threading
    ready = threading.Event()

    def hold() -> None:
        block = bytearray(mib * MIB)
        touch(block)
        ready.set()
        while True:
            time.sleep(3600)

    threading.Thread(target=hold).start()
    ready.wait()
    print("ready", flush=True)
    sys.stdout.flush()
    # CDLL releases the GIL for the call, so the holder thread runs on.
    ctypes.CDLL(None).pthread_exit(None)


def main() -> None:
    """Become the described process and wait to be killed."""
    name, mib, adj = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    flags = sys.argv[4:]
    if "ignore-term" in flags:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open("/proc/self/comm", "w") as f:
        f.write(name)
    if adj:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(adj))
    kind = next((f for f in flags if f != "ignore-term"), "private")
    if kind.startswith("shm="):
        shared_database(mib, int(kind[4:]))
    elif kind.startswith("file="):
        file_reader(mib, kind[5:])
    elif kind.startswith("grow="):
        grower(mib, float(kind[5:]))
    elif kind == "zombie":
        zombie_leader(mib)
    block = bytearray(mib << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1  # touch every page so it is resident
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
