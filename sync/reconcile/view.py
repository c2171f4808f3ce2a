"""What pure reconcile looks at: one person, and per connection its record(s) and snapshot.

Built by ``sync/plan/slice.py`` from the store (``sync/store/persons.py``) and the mappings, or
directly by tests and the in-memory property test. All values are canonical field dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

from connectors.base import Capabilities
from sync.canonical import CUSTOM_PREFIX, FieldDict

ALL_CUSTOM = CUSTOM_PREFIX + "*"


def covers(names: Iterable[str], name: str) -> bool:
    """True when ``name`` is in ``names`` (``custom.*`` stands for every custom field)."""
    if type(names) is not frozenset and type(names) is not set:
        names = frozenset(names)
    return name in names or (name.startswith(CUSTOM_PREFIX) and ALL_CUSTOM in names)


@dataclass(frozen=True)
class ConnectionInfo:
    """One connection as reconcile needs it.

    ``readable``: canonical fields its mapping reads. ``create_fields`` / ``update_fields``:
    the ones a create / an update may carry (the mapping's writable fields, narrowed by the
    connector's capabilities: DM Champ sets a phone on create but can never change it).
    ``shape``: the lens round trip ``read(write(values))`` — what the platform will hold after
    being sent these values (one email where it keeps one, say); None means it holds them
    exactly. Comparing shaped values is what keeps a lossy platform from looking changed.
    ``confirm_from_payload``: a create's ``confirms`` is left unshaped because the planner
    renders the payload anyway and reads the confirmed values back from it (one lens pass
    instead of two).
    """

    name: str
    readable: frozenset[str]
    create_fields: frozenset[str]
    update_fields: frozenset[str]
    capabilities: Capabilities
    shape: Callable[[FieldDict], FieldDict] | None = None
    confirm_from_payload: bool = False

    @cached_property
    def tracked(self) -> frozenset[str]:
        """The fields a snapshot of this connection keeps: those it reads or updates."""
        return self.readable | self.update_fields

    def shaped(self, values: FieldDict) -> FieldDict:
        """``values`` as this platform would hold them."""
        return dict(values) if self.shape is None else self.shape(values)


@dataclass(frozen=True)
class RecordState:
    """One remote record: its id, canonical values as last pulled (None: unknown, e.g. a
    lookup-only platform), remote updated-at, and whether it is (believed) deleted."""

    remote_id: str
    current: FieldDict | None
    updated_at: datetime | None = None
    deleted: bool = False


@dataclass(frozen=True)
class Side:
    """A person on one connection: the primary record (None: not there yet), the snapshot
    (values last confirmed there; None: never synced) and further live records of that
    connection in the same person (duplicates, or losers of a merge)."""

    connection: str
    record: RecordState | None = None
    snapshot: FieldDict | None = None
    others: tuple[RecordState, ...] = ()


@dataclass(frozen=True)
class PersonView:
    """A person to reconcile: the golden record as last decided, and its sides. ``merged`` is
    set when a platform merge joined persons into this one in this run; ``merge_inferred`` when
    that merge was inferred (no platform signal), so it never deletes unless deletes propagate.
    ``withheld``: (list field, value) pairs a suspected merge contests — not carried to a
    platform that does not hold them already."""

    person_id: int
    golden: FieldDict = field(default_factory=dict)
    sides: Mapping[str, Side] = field(default_factory=dict)
    merged: bool = False
    merge_inferred: bool = False
    # (list field, value) keys of the records merged away on their platform (a merge's losers,
    # this run or before): not added where a loser's contact still holds them.
    absorbed: frozenset[tuple[str, str]] = frozenset()
    withheld: frozenset[tuple[str, str]] = frozenset()
