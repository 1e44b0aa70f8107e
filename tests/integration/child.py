"""A test process of known name, size and oom_score_adj.

Usage: child.py NAME MIB ADJ [ignore-term]. Sets its comm to NAME, raises
its own oom_score_adj to ADJ (raising needs no privilege), touches MIB MiB,
prints "ready" and sleeps until killed.
"""

import signal
import sys
import time


def main() -> None:
    """Become the described process and wait to be killed."""
    name, mib, adj = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if "ignore-term" in sys.argv[4:]:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open("/proc/self/comm", "w") as f:
        f.write(name)
    if adj:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(adj))
    block = bytearray(mib << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1  # touch every page so it is resident
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
