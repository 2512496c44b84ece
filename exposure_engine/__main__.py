"""``python -m exposure_engine ...`` is the ``exposure-engine`` command (used to start the daemon detached)."""
import sys

from .cli import main

sys.exit(main())
