"""The Exposure agent: actor / value / discriminator networks (networks.py) and the inference wrapper
:class:`~exposure_engine.agent.policy.Policy` (policy.py).

Import :mod:`exposure_engine.agent.policy` directly; this package stays import-light (no torch at import).
"""
from __future__ import annotations

__all__ = ["Policy", "Prediction"]


def __getattr__(name: str):
    # Lazy: `from exposure_engine.agent import Policy` works without importing torch for every CLI call.
    if name in __all__:
        from . import policy

        return getattr(policy, name)
    raise AttributeError(name)
