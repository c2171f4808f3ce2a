"""Convergence, as a hypothesis state machine.

Four in-memory platforms shaped like Acquire (native merge, read-only tags), GoHighLevel (one
email and phone), Comm100 and DM Champ (lookup only: never read, phone set on create only).
Random creates, edits, merges and deletes happen on the readable platforms; a sync runs the
real matching, view building and reconcile, and applies the plan in memory the way the apply
step does (snapshot := confirms, a deleted record loses its snapshot). After syncing:

* every platform's primary record of a person holds the golden values (as that platform holds
  them) on every field it can update;
* one more cycle with no new edits plans nothing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from connectors.base import Capabilities, PullMode
from sync.canonical import FieldDict, is_empty
from sync.match import MatchInput, MatchPolicy, match_records
from sync.plan import OpKind, Plan
from sync.plan.context import PlanContext
from sync.plan.slice import person_view
from sync.reconcile import (
    ConflictPolicy,
    ConnectionInfo,
    DeletePolicy,
    FieldRule,
    MergePolicy,
    ReconcilePolicy,
    reconcile,
    same,
)
from sync.store.persons import PersonRows, RecordRow

T0 = datetime(2026, 1, 1, tzinfo=UTC)
FIRST = ["Ada", "Grace", "Alan", "Edsger"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra"]
EMAILS = [f"p{i}@x.com" for i in range(6)]
PHONES = [f"+1415555000{i}" for i in range(5)]
COMPANIES = ["Acme", "Initech", "Hooli"]
TAGS = ["vip", "lead", "cold"]
MAX_CYCLES = 6


def _keep_one(fields: FieldDict) -> FieldDict:
    out = dict(fields)
    for name in ("emails", "phones"):
        if out.get(name):
            out[name] = tuple(out[name])[:1]  # type: ignore[arg-type]
    return out


def _info(
    name: str,
    fields: set[str],
    caps: Capabilities,
    *,
    read_only: frozenset[str] = frozenset(),
    create_only: frozenset[str] = frozenset(),
    one_value: bool = False,
) -> ConnectionInfo:
    writable = frozenset(fields)
    return ConnectionInfo(
        name,
        readable=writable | frozenset(read_only),
        create_fields=writable,
        update_fields=writable - frozenset(create_only),
        capabilities=caps,
        shape=(lambda f: {k: v for k, v in _keep_one(f).items() if k in writable})
        if one_value
        else (lambda f: {k: v for k, v in f.items() if k in writable}),
    )


BASE = {"first_name", "last_name", "emails", "phones"}
INFOS = {
    "acq": _info("acq", BASE, Capabilities(PullMode.FULL_SCAN, can_merge=True), read_only={"tags"}),
    "ghl": _info("ghl", BASE | {"company", "tags"}, Capabilities(PullMode.CHANGE_FEED), one_value=True),
    "c100": _info("c100", BASE | {"company"}, Capabilities(PullMode.SORTED_SCAN)),
    "dm": _info(
        "dm",
        BASE,
        Capabilities(PullMode.LOOKUP_ONLY, can_delete=False, required_for_create=("phones",)),
        create_only={"phones"},
        one_value=True,
    ),
}
READABLE = ["acq", "ghl", "c100"]  # DM Champ cannot be listed: nobody's edits there are seen
POLICY = ReconcilePolicy(
    conflicts=ConflictPolicy(
        rule="newest", priority=("ghl", "acq", "c100", "dm"), overrides={"tags": FieldRule(rule="union")}
    ),
    merges=MergePolicy(fallback="delete"),
)
# Other corners of the policy space, each run as its own machine.
TAGGING = ReconcilePolicy(
    conflicts=ConflictPolicy(rule="priority", priority=("c100", "acq", "ghl")),
    deletes=DeletePolicy(mode="tag", tag="gone"),
    merges=MergePolicy(fallback="tag"),
)
PROPAGATING = ReconcilePolicy(
    conflicts=ConflictPolicy(rule="union"),
    deletes=DeletePolicy(mode="propagate"),
    merges=MergePolicy(fallback="leave"),
    duplicates="merge",
)


@dataclass
class Rec:
    id: int
    fields: FieldDict
    updated: datetime
    deleted: bool = False
    merged_into: str | None = None


@dataclass
class _Reads:
    fields: FieldDict


class _IdentityMapping:
    """In memory a payload *is* its canonical field dict."""

    def read(self, raw: dict[str, Any]) -> _Reads:
        return _Reads(dict(raw))


@dataclass
class World:
    policy: ReconcilePolicy = POLICY
    platforms: dict[str, dict[str, Rec]] = field(default_factory=lambda: {n: {} for n in INFOS})
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))  # type: ignore[type-arg]
    clock: int = 0
    # Engine state, as the store would hold it.
    person_of: dict[tuple[str, str], int] = field(default_factory=dict)
    snapshots: dict[tuple[int, str], FieldDict] = field(default_factory=dict)
    golden: dict[int, FieldDict] = field(default_factory=dict)
    persons: itertools.count = field(default_factory=lambda: itertools.count(1))  # type: ignore[type-arg]
    primaries: dict[tuple[int, str], str] = field(default_factory=dict)
    sides: dict[tuple[int, str], str] = field(default_factory=dict)
    deleted_persons: set[int] = field(default_factory=set)
    # Deletions a match has already seen (the store's dirty flag is cleared once matched).
    seen_deleted: set[tuple[str, str]] = field(default_factory=set)

    def tick(self) -> datetime:
        self.clock += 1
        return T0 + timedelta(seconds=self.clock)

    def add(self, conn: str, fields: FieldDict) -> str:
        rid = f"{conn}-{next(self.ids)}"
        shaped = INFOS[conn].shaped({k: v for k, v in fields.items() if not is_empty(v)})
        self.platforms[conn][rid] = Rec(int(rid.rsplit("-", 1)[1]), shaped, self.tick())
        return rid

    def live(self, conn: str) -> list[str]:
        return sorted(
            (r for r, rec in self.platforms[conn].items() if not rec.deleted and not rec.merged_into),
            key=lambda r: self.platforms[conn][r].id,
        )

    # -- one cycle: match, view, reconcile, apply ------------------------------------------

    def cycle(self) -> Plan:
        order = sorted(
            ((c, r) for c in INFOS for r in self.platforms[c]), key=lambda cr: self.platforms[cr[0]][cr[1]].id
        )
        kr: list[int] = []
        kk: list[str] = []
        kv: list[str] = []
        for i, (c, r) in enumerate(order):
            rec = self.platforms[c][r]
            for e in rec.fields.get("emails") or ():  # type: ignore[union-attr]
                kr.append(i), kk.append("email"), kv.append(e)  # type: ignore[func-returns-value]
            for p in rec.fields.get("phones") or ():  # type: ignore[union-attr]
                kr.append(i), kk.append("phone"), kv.append(p)  # type: ignore[func-returns-value]
        result = match_records(
            MatchInput(
                record_ids=[self.platforms[c][r].id for c, r in order],
                connections=[c for c, _ in order],
                remote_ids=[r for _, r in order],
                person_ids=[self.person_of.get(cr) for cr in order],
                merged_into=[self.platforms[c][r].merged_into for c, r in order],
                deleted=[self.platforms[c][r].deleted for c, r in order],
                key_records=kr,
                key_kinds=kk,
                key_values=kv,
                vanished_now=[self.platforms[c][r].deleted and (c, r) not in self.seen_deleted for c, r in order],
            ),
            MatchPolicy(infer_merges=frozenset({"acq"})),
        )
        self.seen_deleted.update(cr for cr in order if self.platforms[cr[0]][cr[1]].deleted)
        fresh: dict[int, int] = {}
        for i, cr in enumerate(order):
            p = int(result.person_of[i])
            if p < 0:
                p = fresh.setdefault(p, next(self.persons))
            self.person_of[cr] = p
        for loser, survivor in result.folds.items():
            # As the store does: the survivor's golden record gains what only the loser had.
            for name, value in self.golden.get(loser, {}).items():
                self.golden.setdefault(survivor, {}).setdefault(name, value)
            for conn in INFOS:
                snap = self.snapshots.pop((loser, conn), None)
                if snap is not None:
                    self.snapshots.setdefault((survivor, conn), snap)
            self.golden.pop(loser, None)

        def real(p: int) -> int:
            return fresh.get(p, p)

        merged = {real(p) for p in result.merge_persons}
        primaries = {(real(d.person), d.connection): order[d.records[0]][1] for d in result.duplicates}
        self.primaries = primaries
        people: dict[int, PersonRows] = {}
        for c, r in order:
            pid = self.person_of[(c, r)]
            rec = self.platforms[c][r]
            rows = people.setdefault(pid, PersonRows(pid, dict(self.golden.get(pid, {}))))
            rows.records.append(RecordRow(rec.id, c, r, dict(rec.fields), rec.updated, rec.deleted, rec.merged_into))
        for rows in people.values():
            rows.snapshots = {c: s for (p, c), s in self.snapshots.items() if p == rows.person_id}
        mappings = {n: _IdentityMapping() for n in INFOS}
        ctx = PlanContext(mappings, {})  # type: ignore[arg-type]
        views = [person_view(rows, INFOS, mappings, ctx, merged, primaries) for rows in people.values()]  # type: ignore[arg-type]
        # The records reconcile paired with each snapshot (what convergence is judged on).
        self.sides = {(v.person_id, c): s.record.remote_id for v in views for c, s in v.sides.items() if s.record}
        self.deleted_persons = {
            v.person_id for v in views if any(s.record and s.record.deleted for s in v.sides.values())
        }
        plan = reconcile(views, INFOS, self.policy)
        self.apply(plan)
        return plan

    def apply(self, plan: Plan) -> None:
        self.golden.update({p: dict(g) for p, g in plan.golden.items()})
        for key, snap in plan.snapshots.items():
            self.snapshots[key] = dict(snap)
        for op in plan.ops:
            recs = self.platforms[op.connection]
            shape = INFOS[op.connection].shaped
            if op.kind is OpKind.CREATE:
                rid = self.add(op.connection, op.fields)
                self.person_of[(op.connection, rid)] = op.person_id
                self.snapshots[(op.person_id, op.connection)] = dict(op.confirms)
            elif op.kind in (OpKind.UPDATE, OpKind.TAG):
                rec = recs[op.remote_id]  # type: ignore[index]
                new = {**rec.fields, **op.fields}
                rec.fields = {k: v for k, v in shape(new).items() if not is_empty(v)}
                if op.connection == "acq":  # tags are read-only there, and kept
                    rec.fields.update({k: v for k, v in new.items() if k == "tags" and v})
                rec.updated = self.tick()
                self.snapshots[(op.person_id, op.connection)] = dict(op.confirms)
            elif op.kind is OpKind.DELETE:
                recs[op.remote_id].deleted = True  # type: ignore[index]
                self.snapshots.pop((op.person_id, op.connection), None)
            elif op.kind is OpKind.MERGE:
                self.native_merge(op.connection, op.remote_id, list(op.loser_ids))  # type: ignore[arg-type]

    def native_merge(self, conn: str, survivor: str, losers: list[str]) -> None:
        """Acquire's merge: the survivor keeps its values and gains the losers' other emails and
        phones; the losers vanish (no merge signal: matching must infer it)."""
        recs = self.platforms[conn]
        keep = recs[survivor]
        for loser in losers:
            gone = recs[loser]
            for name in ("emails", "phones"):
                values = list(keep.fields.get(name) or ())  # type: ignore[arg-type]
                values += [v for v in gone.fields.get(name) or () if v not in values]  # type: ignore[union-attr]
                if values:
                    keep.fields[name] = tuple(values)
            gone.deleted = True
        keep.updated = self.tick()


contact = st.fixed_dictionaries(
    {"first_name": st.sampled_from(FIRST), "last_name": st.sampled_from(LAST)},
    optional={
        "emails": st.lists(st.sampled_from(EMAILS), min_size=1, max_size=2, unique=True).map(tuple),
        "phones": st.lists(st.sampled_from(PHONES), min_size=1, max_size=1).map(tuple),
        "company": st.sampled_from(COMPANIES),
        "tags": st.frozensets(st.sampled_from(TAGS), min_size=1),
    },
)
edits = st.one_of(
    st.tuples(st.just("first_name"), st.sampled_from(FIRST)),
    st.tuples(st.just("last_name"), st.sampled_from(LAST)),
    st.tuples(st.just("company"), st.sampled_from(COMPANIES)),
    st.tuples(st.just("tags"), st.frozensets(st.sampled_from(TAGS))),
    st.tuples(st.just("emails"), st.lists(st.sampled_from(EMAILS), min_size=1, max_size=2, unique=True).map(tuple)),
)


class Convergence(RuleBasedStateMachine):
    """Random platform activity between syncs; every sync must converge."""

    policy = POLICY

    @initialize()
    def start(self) -> None:
        self.world = World(self.policy)

    @rule(conn=st.sampled_from(READABLE), fields=contact)
    def create(self, conn: str, fields: FieldDict) -> None:
        self.world.add(conn, fields)

    @rule(conn=st.sampled_from(READABLE), pick=st.integers(0, 50), edit=edits)
    def edit(self, conn: str, pick: int, edit: tuple[str, Any]) -> None:
        live = self.world.live(conn)
        if not live:
            return
        rec = self.world.platforms[conn][live[pick % len(live)]]
        name, value = edit
        rec.fields = {k: v for k, v in INFOS[conn].shaped({**rec.fields, name: value}).items() if not is_empty(v)}
        if conn == "acq" and name == "tags" and value:
            rec.fields["tags"] = value  # read-only through the API, but people edit them in the app
        rec.updated = self.world.tick()

    @rule(conn=st.sampled_from(READABLE), pick=st.integers(0, 50))
    def delete(self, conn: str, pick: int) -> None:
        live = self.world.live(conn)
        if live:
            rec = self.world.platforms[conn][live[pick % len(live)]]
            rec.deleted = True

    @rule(pick=st.integers(0, 50), other=st.integers(1, 50))
    def merge_on_comm100(self, pick: int, other: int) -> None:
        """Comm100 reports a merge with mergeToContactId."""
        live = self.world.live("c100")
        if len(live) < 2:
            return
        survivor = live[pick % len(live)]
        loser = live[(pick + other) % len(live)]
        if loser != survivor:
            self.world.platforms["c100"][loser].merged_into = survivor
            self.world.platforms["c100"][loser].updated = self.world.tick()

    @rule(pick=st.integers(0, 50), other=st.integers(1, 50))
    def merge_on_acquire(self, pick: int, other: int) -> None:
        live = self.world.live("acq")
        if len(live) < 2:
            return
        survivor = live[pick % len(live)]
        loser = live[(pick + other) % len(live)]
        if loser != survivor:
            self.world.native_merge("acq", survivor, [loser])

    @precondition(lambda self: hasattr(self, "world"))
    @rule()
    def sync(self) -> None:
        for _ in range(MAX_CYCLES):
            if self.world.cycle().is_empty():
                break
        else:
            raise AssertionError(f"no convergence in {MAX_CYCLES} cycles")
        self.assert_converged()
        # A further cycle with no new edits plans nothing.
        again = self.world.cycle()
        assert again.is_empty(), [op for op in again.ops if op.kind is not OpKind.EXCLUDE]

    def teardown(self) -> None:
        # Every example ends with a sync, whatever the last step was.
        if hasattr(self, "world"):
            self.sync()

    def assert_converged(self) -> None:
        w = self.world
        for (conn, rid), pid in w.person_of.items():
            rec = w.platforms[conn][rid]
            if rec.deleted or rec.merged_into or pid not in w.golden:
                continue
            if w.sides.get((pid, conn)) != rid:
                continue  # a duplicate left in place (flagged for review), not a side
            if w.policy.deletes.mode == "propagate" and pid in w.deleted_persons:
                continue  # being deleted everywhere; what cannot be deleted is left as it was
            info = INFOS[conn]
            want = info.shaped({k: v for k, v in w.golden[pid].items() if k in info.update_fields})
            for name in info.update_fields:
                assert same(want.get(name), rec.fields.get(name)), (
                    conn,
                    rid,
                    name,
                    want.get(name),
                    rec.fields.get(name),
                )

    @invariant()
    def persons_are_stable(self) -> None:
        # A record never leaves a person except into the one it was folded into.
        if hasattr(self, "world"):
            assert all(p > 0 for p in self.world.person_of.values())


class ConvergenceTagging(Convergence):
    policy = TAGGING


class ConvergencePropagating(Convergence):
    policy = PROPAGATING


# derandomize: CI runs the same examples every time, so a red build is a regression, not a new
# draw; the known open case below is kept as its own test until it is fixed.
_SETTINGS = settings(
    max_examples=120,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
Convergence.TestCase.settings = _SETTINGS
ConvergenceTagging.TestCase.settings = _SETTINGS
ConvergencePropagating.TestCase.settings = _SETTINGS
TestConvergence = Convergence.TestCase
TestConvergenceTagging = ConvergenceTagging.TestCase
TestConvergencePropagating = ConvergencePropagating.TestCase


def test_email_of_a_deleted_person_reused_by_another_record_converges() -> None:
    state = ConvergencePropagating()
    state.start()
    state.create(
        conn="acq",
        fields={"first_name": "Ada", "last_name": "Lovelace", "emails": ("p1@x.com",), "tags": frozenset(["vip"])},
    )
    state.sync()
    state.delete(conn="ghl", pick=0)
    state.create(conn="acq", fields={"first_name": "Ada", "last_name": "Lovelace", "emails": ("p0@x.com",)})
    state.sync()
    state.edit(conn="acq", edit=("emails", ("p1@x.com",)), pick=0)
    state.sync()
