"""Time one bustd scan-and-rank: ``python3 -S -I scan_probe.py REPO``.

Run fresh for each measurement (by nsinit.py, inside the PID namespace that
holds the N processes). Imports bustd from REPO, then times
``find_victim`` on the real /proc twice: the first call in this fresh
process (the figure compared with ``ps``) and a second, warm one. Nothing is
signalled: find_victim only chooses. Prints one JSON object.
"""

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    """Time find_victim; print JSON; return the exit code."""
    repo = os.path.abspath(argv[1])
    sys.path.insert(0, repo)
    from bustd.choose import find_victim, make_rules
    from bustd.config import Config
    from bustd.procfs import ProcFS

    fs = ProcFS("/proc")
    rules = make_rules(Config(), os.getpid())
    pids = len(fs.pids())
    t0 = time.perf_counter()
    victim = find_victim(fs, rules)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    find_victim(fs, rules)
    second = time.perf_counter() - t0
    pid = None
    if victim is not None:
        pid = victim.candidate.pid
    json.dump({"first_s": first, "second_s": second, "pids": pids, "victim_pid": pid,
               "python": sys.executable, "version": sys.version.split()[0]}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
