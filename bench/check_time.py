"""Time one idle check (``Monitor.check``) of the bustd in a checkout.

    unshare --pid --fork --mount-proc /usr/bin/python3 -S -I bench/check_time.py TREE [TREE ...]

Builds a dry-run Monitor on the real ``/proc`` (root, in a PID namespace, so
even a bug could only see this process), runs 200 checks to warm up, then
five rounds of 20,000 and prints the microseconds per check of each round.
On a machine with memory to spare every check is idle: the watch-zone code
stays unloaded (the last column says so). Give two trees in one run,
alternately more than once, to compare them: the figure moves with the host.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

ROUNDS, CHECKS, WARMUP = 5, 20000, 200


def time_tree(tree: str) -> str:
    """Return one line: the tree, the µs per check of each round, whether it stayed idle."""
    sys.path.insert(0, tree)
    from bustd.config import Config
    from bustd.log import Log
    from bustd.monitor import Monitor
    from bustd.procfs import ProcFS

    cfg = Config(dry_run=True)
    m = Monitor(cfg, ProcFS(cfg.proc_root), Log(), os.getpid(), time.monotonic, wall=time.time)
    for _ in range(WARMUP):
        m.check()
    rounds = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        for _ in range(CHECKS):
            m.check()
        rounds.append((time.perf_counter() - t) / CHECKS * 1e6)
    if hasattr(m, "emergency"):  # since issue 16: made when memory first runs short
        idle = m.emergency is None
    else:
        idle = not getattr(m, "watch_code_loaded", getattr(m, "armed", True))
    return f"{tree}: {' '.join(f'{r:.1f}' for r in rounds)} µs per check; idle: {idle}"


def main(argv: list[str]) -> int:
    """Time each tree in a fresh interpreter (each imports its own bustd); return 0 or 2."""
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    if len(argv) == 1:
        print(time_tree(os.path.abspath(argv[0])))
        return 0
    for tree in argv:
        subprocess.run([sys.executable, "-S", "-I", os.path.abspath(__file__), tree], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
