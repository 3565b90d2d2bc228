"""Configuration shared by every kind of test."""

import os
import sys
from pathlib import Path

# Tests import the packages of this checkout, whatever state the installed copy is in: an
# editable install made before a package had its ``__init__.py`` maps it as a namespace package.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

# Hypothesis profiles: ``ci`` is bounded and deterministic so the suite stays inside its time
# budget; ``thorough`` explores far more and runs on demand (``make test-thorough``). How much
# each crash/resume property test explores under a profile (at least 500 crash points in ``ci``,
# 10,000 in ``thorough``) is set in ``tests/property/stats.py`` (``BUDGETS``).
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci",
    max_examples=100,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,  # random seeds: a failure prints the blob that replays it
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
