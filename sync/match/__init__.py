"""Matching: the identity graph that links staged records to persons (pure code).

``match_records(MatchInput, MatchPolicy) -> MatchResult``; the store side (loading the dirty
records with their neighbourhood, writing person ids back) is ``sync/store/persons.py``.
"""

from __future__ import annotations

from sync.match.graph import Duplicate, MatchInput, MatchResult, Review, match_records
from sync.match.policy import DEFAULT_KEYS, IGNORE, STRONG, WEAK, MatchPolicy

__all__ = [
    "DEFAULT_KEYS",
    "IGNORE",
    "STRONG",
    "WEAK",
    "Duplicate",
    "MatchInput",
    "MatchPolicy",
    "MatchResult",
    "Review",
    "match_records",
]
