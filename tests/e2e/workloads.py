"""Guest-side programs: memory hogs, holders and the interactive probe.

Run only inside the throwaway test VM (the guest driver starts them):

  workloads.py hold --mib N [--touch-s S]          allocate N MiB, keep it hot
  workloads.py leak --rate R [--random F]          allocate R MiB/s forever
  workloads.py grow --mib N --rate R --done FILE   allocate up to N MiB, then hold
  workloads.py workingset --mib N --rate R         allocate N MiB, then cycle over it
  workloads.py absorb --mib N --hot-mib H --rate R --done FILE
                                                   allocate up to N MiB while working
                                                   on the first H MiB; then hold N and
                                                   keep working on H
  workloads.py shmdb --mib N --backends K [--rate R]
                                                   a database's layout: one shared
                                                   segment of N MiB (a memfd) filled
                                                   here and mapped whole by K backends
                                                   (the last at R MiB/s if given);
                                                   exits 1 if a backend dies
  workloads.py session --mib N --rate R --hot-mib C  as /usr/bin/gnome-shell (installed
                                                   in the guest over an overlay of
                                                   /usr/bin): allocate N MiB, then
                                                   grow at R MiB/s up to C MiB, hold
  workloads.py mapread --mib N --rate R --hot-mib F  a reader of a large file: write an
                                                   F MiB file on an ext4 of its own (on a
                                                   zram disk, not swap), drop it from the
                                                   page cache, map it read-only, read the
                                                   first N MiB at once, the rest at R MiB/s,
                                                   then keep re-reading all of it
  workloads.py probe --out FILE [--interval-ms 50] spawn /bin/true like a shell

Pages are filled with a pattern whose first `--random` share of each 4 KiB page
is random bytes and the rest zeros, so zram swap compresses it by a known
ratio (a page of one repeated byte costs zram nothing, which would make the
swap scenarios meaningless).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from types import FrameType

__all__ = ["pattern_block", "main"]

PAGE = 4096
CHUNK = 1 << 20  # allocation unit: 1 MiB
MIB = 1 << 20


def pattern_block(random_fraction: float) -> bytes:
    """Return one CHUNK of pages, each `random_fraction` random, rest zeros.

    random_fraction 0 gives pages of a non-zero byte (real memory without
    swap, free in zram). Raises ValueError outside [0, 1].
    """
    if not 0.0 <= random_fraction <= 1.0:
        raise ValueError(f"random fraction {random_fraction} not in [0, 1]")
    if random_fraction == 0.0:
        return b"\x5a" * CHUNK
    nrand = max(1, int(PAGE * random_fraction))
    pages = [os.urandom(nrand) + bytes(PAGE - nrand) for _ in range(CHUNK // PAGE)]
    return b"".join(pages)


def sleep_until(due: float) -> None:
    """Sleep until the monotonic time ``due`` (not at all if it has passed)."""
    delay = due - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def require_vm(what: str) -> None:
    """Exit (naming ``what`` the program does) unless this is the test VM."""
    with open("/proc/1/cmdline", "rb") as f:
        if b"virtme" not in f.read():
            raise SystemExit(f"workloads.py {what}: only in the test VM")


def touch(chunk: bytearray, stamp: int) -> None:
    """Write one byte in every page of chunk (a C-level strided store)."""
    chunk[::PAGE] = bytes([stamp & 0xFF]) * len(range(0, len(chunk), PAGE))


class Allocator:
    """Allocates CHUNK-sized copies of a pattern at a given average rate."""

    def __init__(self, random_fraction: float, rate_mib_s: float) -> None:
        self.block = pattern_block(random_fraction)
        self.rate = rate_mib_s
        self.chunks: list[bytearray] = []
        self.start = time.monotonic()

    def step(self) -> None:
        """Allocate one chunk, sleeping first if ahead of the rate."""
        if self.rate > 0:
            sleep_until(self.start + len(self.chunks) / self.rate)
        self.chunks.append(bytearray(self.block))

    def fill(self, mib: int) -> None:
        """Allocate until `mib` MiB are held."""
        while len(self.chunks) < mib:
            self.step()


def hold_forever(chunks: list[bytearray], touch_s: float) -> None:
    """Keep the chunks resident by touching them every touch_s seconds."""
    stamp = 0
    while True:
        stamp += 1
        for chunk in chunks:
            touch(chunk, stamp)
        time.sleep(touch_s)


def cmd_hold(args: argparse.Namespace) -> None:
    """Allocate --mib MiB and keep it hot; never returns."""
    alloc = Allocator(args.random, 0)
    alloc.fill(args.mib)
    hold_forever(alloc.chunks, args.touch_s)


def cmd_leak(args: argparse.Namespace) -> None:
    """Allocate --rate MiB/s forever; never returns."""
    alloc = Allocator(args.random, args.rate)
    while True:
        alloc.step()


def cmd_grow(args: argparse.Namespace) -> None:
    """Allocate up to --mib at --rate, create --done, then hold; never returns."""
    alloc = Allocator(args.random, args.rate)
    alloc.fill(args.mib)
    with open(args.done, "w") as f:
        f.write(f"{args.mib}\n")
    hold_forever(alloc.chunks, args.touch_s)


def cmd_workingset(args: argparse.Namespace) -> None:
    """Allocate --mib at --rate, then write every page in a cycle forever.

    Cycling in order is the worst case for LRU reclaim: the page evicted is
    always one needed soon, so with the set larger than RAM every access
    faults and the system thrashes while swap stays far from full.
    """
    alloc = Allocator(args.random, args.rate)
    alloc.fill(args.mib)
    stamp = 0
    while True:
        stamp += 1
        for chunk in alloc.chunks:
            touch(chunk, stamp)


def work_on(chunks: list[bytearray], hot: int, pause_s: float) -> None:
    """Write every page of the first `hot` chunks, then pause; forever.

    The chunks list may still be growing (it is read afresh each pass).
    """
    stamp = 0
    while True:
        stamp += 1
        for chunk in chunks[:hot]:
            touch(chunk, stamp)
        time.sleep(pause_s)


def cmd_absorb(args: argparse.Namespace) -> None:
    """Grow to --mib at --rate while working on the first --hot-mib; never returns.

    A program whose working set fits in RAM but whose total does not: the
    pages outside the hot part are written once and never again, so the
    kernel can move them to swap and the machine settles. Creates --done
    once --mib are held. Raises ValueError if --hot-mib exceeds --mib.
    """
    if args.hot_mib > args.mib:
        raise ValueError(f"--hot-mib {args.hot_mib} exceeds --mib {args.mib}")
    alloc = Allocator(args.random, args.rate)
    worker = threading.Thread(
        target=work_on, args=(alloc.chunks, args.hot_mib, args.touch_s), daemon=True
    )
    worker.start()
    alloc.fill(args.mib)
    with open(args.done, "w") as f:
        f.write(f"{args.mib}\n")
    worker.join()


class Probe:
    """Starts a tiny program every interval and records how long each took."""

    def __init__(self, out: str, interval_s: float) -> None:
        self.out = out
        self.interval = interval_s
        self.latencies: list[float] = []
        self.max_gap = 0.0

    def summary(self) -> dict[str, float | int]:
        """Return samples, worst and p99 latency and worst gap, in ms."""
        lat = sorted(self.latencies)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0
        return {
            "samples": len(lat),
            "worst_ms": round(lat[-1] * 1000, 1) if lat else 0.0,
            "p99_ms": round(p99 * 1000, 1),
            "max_gap_ms": round(self.max_gap * 1000, 1),
        }

    def save(self) -> None:
        """Write the summary to the out file atomically."""
        tmp = self.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.summary(), f)
        os.replace(tmp, self.out)

    def run(self) -> None:
        """Loop until SIGTERM; then save and exit 0."""

        def stop(_sig: int, _frame: FrameType | None) -> None:
            self.save()
            sys.exit(0)

        signal.signal(signal.SIGTERM, stop)
        last_save = last_end = time.monotonic()
        while True:
            t0 = time.monotonic()
            pid = os.posix_spawn("/bin/true", ["true"], {})
            os.waitpid(pid, 0)
            end = time.monotonic()
            self.latencies.append(end - t0)
            # The gap is what a user would see: from the end of one command
            # to the end of the next, minus the intended pause.
            self.max_gap = max(self.max_gap, end - last_end - self.interval)
            last_end = end
            if end - last_save >= 1.0:
                self.save()
                last_save = end
            time.sleep(self.interval)


def cmd_shmdb(args: argparse.Namespace) -> None:
    """Fill a --mib MiB shared segment, fork --backends that map all of it; never returns.

    Like PostgreSQL's shared buffers: every process shows the whole segment
    in its RSS (RssShmem), and killing any one of them frees none of it.
    The "postmaster" exits 1 as soon as a backend dies, so the driver sees
    the loss.
    """
    import mmap

    size = args.mib * MIB
    fd = os.memfd_create("shared_buffers")
    os.ftruncate(fd, size)
    seg = mmap.mmap(fd, size)
    block = pattern_block(args.random)
    chunk = (block * (CHUNK // len(block) + 1))[:CHUNK]
    for off in range(0, size, CHUNK):
        seg[off:off + CHUNK] = chunk[: min(CHUNK, size - off)]

    def keep_hot() -> None:
        while True:
            for off in range(0, size, PAGE):
                seg[off]  # map (and keep resident) every page
            time.sleep(args.touch_s)

    def fault_in() -> None:
        # A backend that maps the segment at --rate MiB/s: its RSS grows
        # while it frees nothing (issue 13: "ranked as the top grower").
        step = PAGE * 256  # 1 MiB
        start = time.monotonic()
        for n, off in enumerate(range(0, size, step)):
            sleep_until(start + n / args.rate)
            for page in range(off, min(size, off + step), PAGE):
                seg[page]
        keep_hot()

    backends = []
    for i in range(args.backends):
        pid = os.fork()
        if pid == 0:
            if args.rate > 0 and i == args.backends - 1:
                fault_in()
            keep_hot()
        backends.append(pid)
    while True:
        for off in range(0, size, PAGE):
            seg[off]
        for pid in backends:
            done, _status = os.waitpid(pid, os.WNOHANG)
            if done:
                print(f"backend {pid} died", flush=True)
                os._exit(1)
        time.sleep(args.touch_s)


SESSION_EXE = "/usr/bin/gnome-shell"  # on bustd's default avoid list


def cmd_session(args: argparse.Namespace) -> None:
    """Become /usr/bin/gnome-shell and run ``grow-on``; never returns.

    The guest's root is the host's, read-only: a tmpfs-backed overlay on
    /usr/bin (root's, mode 755, like the real folder) takes a copy of this
    interpreter under the session's path, so /proc/PID/exe is a root-owned
    /usr/bin/gnome-shell, as on a desktop.
    """
    import shutil
    import subprocess

    require_vm("session mounts over /usr/bin")
    if not os.path.exists(SESSION_EXE):
        base = "/run/e2e-session"
        for sub in ("upper", "work"):
            os.makedirs(f"{base}/{sub}", mode=0o755, exist_ok=True)
        os.chmod(f"{base}/upper", 0o755)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir=/usr/bin,upperdir={base}/upper,workdir={base}/work",
                        "/usr/bin"], check=True)
        shutil.copy2(os.path.realpath(sys.executable), SESSION_EXE)
        os.chmod(SESSION_EXE, 0o755)
    os.execv(SESSION_EXE, [SESSION_EXE, os.path.abspath(__file__), "grow-on",
                           "--mib", str(args.mib), "--rate", str(args.rate),
                           "--random", str(args.random), "--hot-mib", str(args.hot_mib)])


def cmd_grow_on(args: argparse.Namespace) -> None:
    """Allocate --mib at once, then --rate MiB/s up to --hot-mib, hold; never returns."""
    alloc = Allocator(args.random, 0)
    alloc.fill(args.mib)
    alloc.rate = args.rate
    alloc.start = time.monotonic() - len(alloc.chunks) / args.rate
    while len(alloc.chunks) < args.hot_mib:
        alloc.step()
    hold_forever(alloc.chunks, args.touch_s)


FILES = "/run/e2e-files"  # mapread's ext4 (on /dev/zram0, a disk here, not swap)


def make_file(mib: int) -> str:
    """Create a `mib` MiB file on an ext4 of its own, out of the page cache.

    The guest's root is the host's (9p, read-only), so the file lives on an
    ext4 on a zram disk. Its pages are of one repeated byte, which zram keeps
    at no cost: the file costs RAM only in the page cache, as a file on a
    real disk would. Returns the file's path. Only in the test VM.
    """
    import subprocess

    require_vm("mapread makes a file system")
    path = f"{FILES}/data"
    if os.path.ismount(FILES):
        return path
    subprocess.run(["modprobe", "zram", "num_devices=1"], check=True)
    with open("/sys/block/zram0/disksize", "w") as f:
        f.write(f"{mib + 128}M")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", "/dev/zram0"], check=True)
    os.makedirs(FILES, exist_ok=True)
    subprocess.run(["mount", "-t", "ext4", "/dev/zram0", FILES], check=True)
    block = b"\x5a" * MIB
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return path


def cmd_mapread(args: argparse.Namespace) -> None:
    """Map a --hot-mib MiB file and read it; never returns.

    Reads the first --mib MiB at once, the rest at --rate MiB/s (its RSS
    grows in RssFile: clean page cache that MemAvailable already counts and
    that no kill needs to free), then re-reads every page every --touch-s
    seconds.
    Raises ValueError if --mib exceeds --hot-mib.
    """
    import mmap

    if args.mib > args.hot_mib:
        raise ValueError(f"--mib {args.mib} exceeds --hot-mib {args.hot_mib}")
    path = make_file(args.hot_mib)
    fd = os.open(path, os.O_RDONLY)
    size = args.hot_mib * MIB
    view = mmap.mmap(fd, size, prot=mmap.PROT_READ)

    def read_mib(n: int) -> None:
        for page in range(n * MIB, (n + 1) * MIB, PAGE):
            view[page]

    for n in range(args.mib):
        read_mib(n)
    start = time.monotonic() - args.mib / args.rate
    for n in range(args.mib, args.hot_mib):
        sleep_until(start + n / args.rate)
        read_mib(n)
    while True:
        for n in range(args.hot_mib):
            read_mib(n)
        time.sleep(args.touch_s)


def cmd_probe(args: argparse.Namespace) -> None:
    """Run the interactive probe; never returns."""
    Probe(args.out, args.interval_ms / 1000).run()


def main(argv: list[str]) -> int:
    """Parse argv and run the chosen program.

    Returns the exit code (the programs themselves run until killed).
    """
    parser = argparse.ArgumentParser(prog="workloads.py")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("hold", "leak", "grow", "workingset", "absorb", "shmdb", "session",
                 "grow-on", "mapread"):
        p = sub.add_parser(name)
        p.add_argument("--mib", type=int, default=0)
        p.add_argument("--rate", type=float, default=0.0)
        p.add_argument("--random", type=float, default=0.0)
        p.add_argument("--touch-s", type=float, default=1.0 if name != "absorb" else 0.5)
        p.add_argument("--done", default="")
        p.add_argument("--hot-mib", type=int, default=0)
        p.add_argument("--backends", type=int, default=3)
    p = sub.add_parser("probe")
    p.add_argument("--out", required=True)
    p.add_argument("--interval-ms", type=float, default=50.0)
    args = parser.parse_args(argv)
    commands = {
        "hold": cmd_hold,
        "leak": cmd_leak,
        "grow": cmd_grow,
        "workingset": cmd_workingset,
        "absorb": cmd_absorb,
        "shmdb": cmd_shmdb,
        "session": cmd_session,
        "grow-on": cmd_grow_on,
        "mapread": cmd_mapread,
        "probe": cmd_probe,
    }
    commands[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
