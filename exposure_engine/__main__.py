"""``python -m exposure_engine ...`` is the ``exposure-engine`` command (used to start the daemon detached)."""
import sys

from .cli import main

if __name__ == "__main__":  # not when a spawned helper process re-imports the main module (daemon.predict_helper)
    sys.exit(main())
