"""Stop a dry-run daemon with one signal, then keep asking it to stop.

Usage (as PID 1 of a private PID namespace): stop_twice.py PYTHON ROOT FIRST
SECOND. Starts ``PYTHON -m bustd -r 0 --proc-root ROOT``, waits for its
"watching" line, sends the signal named FIRST (e.g. SIGTERM) once, then the
one named SECOND over and over until the daemon has exited, the way a
terminal's Ctrl-C after a SIGTERM, GNU timeout's second signal to the group
or an impatient init would. Prints one JSON line: the exit status, how many
second signals were sent, and the daemon's whole stderr.
"""

import json
import os
import signal
import subprocess
import sys


def main() -> None:
    """Run the daemon, stop it twice or more, report."""
    python, root, first, second = sys.argv[1:5]
    daemon = subprocess.Popen([python, "-m", "bustd", "-r", "0", "--proc-root", root],
                              stderr=subprocess.PIPE, text=True)
    assert daemon.stderr is not None
    lines: list[str] = []
    while not lines or "watching" not in lines[-1]:
        line = daemon.stderr.readline()
        if not line:
            break
        lines.append(line)
    os.kill(daemon.pid, signal.Signals[first])
    sent = 0
    while daemon.poll() is None:
        try:
            os.kill(daemon.pid, signal.Signals[second])
        except ProcessLookupError:
            break
        sent += 1
    lines.append(daemon.stderr.read())
    daemon.wait()
    print(json.dumps({"rc": daemon.returncode, "sent": sent, "stderr": "".join(lines)}))


if __name__ == "__main__":
    main()
