"""``from exposure_engine.client import Client``: the daemon client (see :mod:`exposure_engine.daemon.client`)."""
from .daemon.client import Client, DaemonError, DaemonUnavailable, ensure_daemon

__all__ = ["Client", "DaemonError", "DaemonUnavailable", "ensure_daemon"]
