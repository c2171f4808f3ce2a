"""Lazy exports for the platform packages.

A platform package (``connectors/<platform>/__init__.py``) exposes its settings models eagerly
(config validation needs them, and they are cheap) and its connector, emulator and probe lazily:
the HTTP client and the emulator load only when something asks for them, so the CLI starts fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, targets: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving ``name`` to ``"module:attribute"`` in ``targets`` on
    first use (``module`` relative to ``package``)."""

    def __getattr__(name: str) -> Any:
        target = targets.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = target.partition(":")
        return getattr(importlib.import_module(f"{package}.{module}"), attribute)

    return __getattr__
