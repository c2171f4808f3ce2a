"""The variant matrix: every inferred behaviour of every platform (``connectors/<platform>/
behaviours.py``, for each platform of ``connectors.registry.PLATFORMS`` that has one) with each
of its plausible variants, as test cases.

``cases()`` gives each non-default variant once, alone (every variant runs at least once: the
defaults run in every other case), plus one case per platform with every behaviour off its
default at once (the strictest reading the issue tried), plus pairwise combinations of two
platforms' strictest readings. A platform whose behaviours module appears later (another
branch) joins by itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from connectors.probing import Behaviour
from connectors.registry import PLATFORMS


def platform_behaviours() -> dict[str, tuple[Behaviour, ...]]:
    """Platform -> its BEHAVIOURS, for every registered platform that declares them."""
    out: dict[str, tuple[Behaviour, ...]] = {}
    for platform in PLATFORMS:
        try:
            module = importlib.import_module(f"connectors.{platform}.behaviours")
        except ModuleNotFoundError as exc:
            if exc.name != f"connectors.{platform}.behaviours":
                raise
            continue
        out[platform] = tuple(module.BEHAVIOURS)
    return out


def single_variants() -> list[tuple[str, dict[str, str]]]:
    """(id, variants) for every non-default variant of every behaviour, alone."""
    out = []
    for behaviours in platform_behaviours().values():
        for b in behaviours:
            for v in b.variants:
                if v != b.emulator_default:
                    out.append((f"{b.name}={v}", {b.name: v}))
    return out


def strictest(platform: str) -> dict[str, str]:
    """Every behaviour of ``platform`` on its last (least generous) variant."""
    return {b.name: b.variants[-1] for b in platform_behaviours()[platform] if b.variants[-1] != b.emulator_default}


def cases() -> list[tuple[str, Mapping[str, str]]]:
    out: list[tuple[str, Mapping[str, str]]] = list(single_variants())
    platforms = list(platform_behaviours())
    for p in platforms:
        out.append((f"{p}:strictest", strictest(p)))
    if len(platforms) > 1:
        everything: dict[str, str] = {}
        for p in platforms:
            everything.update(strictest(p))
        out.append(("all:strictest", everything))
    return out
