"""Settings shared by every test: the hypothesis profile of the test command.

``tests/run`` (and plain ``pytest``) uses the "bustd" profile: at least
10,000 examples for each property test (issue 10), no per-example deadline
(the machine is shared, timing is not what is tested) and no example
database written into the tree. A failure prints the seed and a blob to
replay it with ``@reproduce_failure``. For a quick look while editing, set
BUSTD_HYPOTHESIS_PROFILE=quick (200 examples); the test command never does.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "bustd", max_examples=10_000, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("quick", parent=settings.get_profile("bustd"), max_examples=200)
settings.load_profile(os.environ.get("BUSTD_HYPOTHESIS_PROFILE", "bustd"))
