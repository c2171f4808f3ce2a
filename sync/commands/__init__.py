"""The implementations behind the CLI commands (``sync/cli.py`` is a thin shell over these):
``plan``, ``run``, ``backfill``, ``status``, ``conflicts`` and ``demo``."""
