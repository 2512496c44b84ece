"""``python -m exposure_engine ...`` is the ``exposure-engine`` command (used to start the daemon detached)."""
import sys

from .cli import main

if __name__ == "__main__":  # not when imported (e.g. by a multiprocessing child re-importing the main module)
    sys.exit(main())
