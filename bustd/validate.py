"""Entry of the validate-only front end: ``python3 -S -I bustd/validate.py CWD [ARGS]``.

The runtime spawns it on SIGHUP (see reload.py) with the folder it started
in and its original arguments; it reads the options and the config file
again and prints the encoded Config (or one line naming the error), so the
long-running process never imports argparse. ``-I`` keeps the script's
folder off sys.path, so the folder holding the package is added here, as
lean.py does.
"""

import os
import sys

try:  # not bustd's -1000, inherited (review L6): this child is not the daemon
    _fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
    os.write(_fd, b"0")
    os.close(_fd)
except OSError:
    pass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bustd.cli import validate_main

sys.exit(validate_main(sys.argv[1:]))
