"""Entry point of the lean runtime: ``python3 -S -I bustd/lean.py [ARGS]``."""
# Run by the front end (``python3 -m bustd``) after it validated the options;
# the arguments are only shown in ``ps``, the configuration comes in
# $BUSTD_CONFIG. ``-I`` keeps the script's folder off sys.path, so the
# repository (or site-packages) folder holding the package is added here.

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bustd.runtime import main

sys.exit(main())
