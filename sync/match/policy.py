"""Matching policy: which identity keys join records, and how strongly.

Pure data, built from the configuration by ``sync/plan/context.py`` (this package must not depend on
the pydantic config). A *strong* key joins any records that share it; a *weak* key joins them
only when that does not bring two different guard-kind keys (emails, by default) into one
person — a family or an office sharing a phone number is an ambiguous match, kept apart and
stored for review.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

STRONG = "strong"
WEAK = "weak"
IGNORE = "ignore"

DEFAULT_KEYS: Mapping[str, str] = {"email": STRONG, "phone": WEAK, "identity:*": STRONG}


@dataclass(frozen=True)
class MatchPolicy:
    """How keys join records.

    ``keys`` maps a key kind (``email``, ``phone``, ``identity:<type>``, or the pattern
    ``identity:*``) to ``strong``, ``weak`` or ``ignore``; a kind not listed is ignored.
    ``guard_kind`` is the kind a weak key may never reconcile two different values of.
    ``infer_merges``: see the field comment.
    """

    keys: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_KEYS))
    guard_kind: str = "email"
    # Connections whose vanished records may be inferred merged (their strong key now sits on a
    # live record of the same connection): platforms with a native merge that leaves no signal
    # (Acquire). None: every connection. Elsewhere a vanished record is just deleted.
    infer_merges: frozenset[str] | None = None
    # A person's answers to ambiguous matches (``store.review.decisions()``), as (kind, value)
    # keys: a ``linked`` key joins every record holding it, as a strong key would; an ``apart``
    # key never joins anyone, whatever the guard keys say later.
    linked: frozenset[tuple[str, str]] = frozenset()
    apart: frozenset[tuple[str, str]] = frozenset()

    def strength(self, kind: str) -> str:
        """The strength of a key kind: exact entry first, then the ``identity:*`` pattern."""
        found = self.keys.get(kind)
        if found is not None:
            return found
        if kind.startswith("identity:"):
            return self.keys.get("identity:*", IGNORE)
        return IGNORE
