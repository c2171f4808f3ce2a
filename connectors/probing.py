"""Inferred platform behaviours, their plausible variants, and what a probe measured.

Wherever a vendor page is silent, the engine must not rest on one guess. Each such guess is a
:class:`Behaviour` with every plausible variant; each platform lists its own in
``connectors/<platform>/behaviours.py`` as ``BEHAVIOURS``. The emulator of a platform runs any
variant (``variants={"<behaviour name>": "<variant>"}``), the connector must be right under each,
and ``contactsync probe`` (``connectors/<platform>/probe.py``) measures which variant a real
account runs with a throwaway contact; the findings are stored and handed back to the connector
as ``ConnectionSettings.behaviours`` (behaviour name -> measured variant).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Behaviour:
    """One inferred behaviour of a platform: a question its documentation leaves open."""

    name: str  # "<platform>.<what>", e.g. "comm100.put_semantics"
    question: str  # the open question, in words
    variants: tuple[str, ...]  # every plausible answer
    emulator_default: str  # the variant the emulator runs unless told otherwise
    source: str  # where the docs speak (seed file and line) and what they leave open


@dataclass(frozen=True)
class Finding:
    """What a probe measured for one behaviour on one connection."""

    behaviour: str
    variant: str
    evidence: str  # what was sent and seen, in words


def check_variants(behaviours: tuple[Behaviour, ...], chosen: Mapping[str, str]) -> dict[str, str]:
    """Every behaviour's variant: ``chosen`` where given (validated), the emulator default otherwise."""
    known = {b.name: b for b in behaviours}
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise ValueError(f"unknown behaviour(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    result = {}
    for name, behaviour in known.items():
        variant = chosen.get(name, behaviour.emulator_default)
        if variant not in behaviour.variants:
            raise ValueError(f"{name}: unknown variant {variant!r}; one of {', '.join(behaviour.variants)}")
        result[name] = variant
    return result
