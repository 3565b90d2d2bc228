"""Configuration shared by every kind of test."""

import sys
from pathlib import Path

# Tests import the packages of this checkout, whatever state the installed copy is in: an
# editable install made before a package had its ``__init__.py`` maps it as a namespace package.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
