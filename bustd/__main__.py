"""``python3 -m bustd``: validate the options, then run the daemon."""

import sys

from .cli import main

sys.exit(main())
