"""One module per ``exposure-engine`` subcommand, each with ``register(subparsers)`` (see cli.py)."""
