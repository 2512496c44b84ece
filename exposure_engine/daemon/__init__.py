"""The local inference daemon (ZeroMQ): protocol, server, client, CURVE keys. docs/protocol.md describes it.

Import-light on purpose: ``from exposure_engine.daemon import Client`` pulls in pyzmq and numpy, not torch.
"""
from __future__ import annotations

from .client import Client, DaemonError, DaemonUnavailable, RemotePrediction, ensure_daemon
from .protocol import DEFAULT_URL, PROTOCOL, Code, Limits, ProtocolError

__all__ = ["Client", "Code", "DEFAULT_URL", "DaemonError", "DaemonUnavailable", "Limits", "PROTOCOL",
           "ProtocolError", "RemotePrediction", "ensure_daemon"]
