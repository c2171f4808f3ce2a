"""Unit tests of pure reconcile: every rule of the three-way merge, conflicts, deletes,
merges, duplicates, exclusions and echo suppression."""

from __future__ import annotations

from dataclasses import replace

import pytest

from connectors.base import Capabilities, PullMode
from sync.canonical import FieldDict
from sync.plan import ConflictDecision, OpKind, PlanOp
from sync.reconcile import (
    ConflictPolicy,
    DeletePolicy,
    FieldRule,
    MergePolicy,
    PersonView,
    ReconcilePolicy,
    RecordState,
    Side,
    reconcile,
    reconcile_person,
)

from .helpers import CONNECTIONS, GHL_FIELDS, at

ADA: FieldDict = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "emails": ("ada@x.com",),
    "phones": ("+14155552671",),
}


def synced(conn: str, rid: str, fields: FieldDict, current: FieldDict | None = None, minute: int = 0) -> Side:
    """A side in sync (snapshot = what it holds), optionally with a new current value."""
    info = CONNECTIONS[conn]
    held = {k: v for k, v in info.shaped(fields).items() if k in info.readable or k.startswith("custom.")}
    now = held if current is None else {**held, **current}
    return Side(conn, RecordState(rid, now, at(minute)), snapshot=held)


def everywhere(fields: FieldDict, **changes: FieldDict) -> dict[str, Side]:
    return {c: synced(c, f"{c}-1", fields, changes.get(c)) for c in CONNECTIONS}


def ops_of(result, kind: OpKind | None = None) -> list[PlanOp]:  # type: ignore[no-untyped-def]
    return [op for op in result.ops if kind is None or op.kind is kind]


def run(view: PersonView, policy: ReconcilePolicy | None = None):  # type: ignore[no-untyped-def]
    return reconcile_person(view, CONNECTIONS, policy or ReconcilePolicy())


def test_new_person_on_one_platform_is_created_everywhere_else() -> None:
    view = PersonView(1, {}, {"acq": Side("acq", RecordState("12", dict(ADA), at(0)))})
    result = run(view)
    creates = {op.connection: op for op in ops_of(result, OpKind.CREATE)}
    assert set(creates) == {"ghl", "c100", "dm"}
    assert creates["ghl"].fields == ADA
    assert result.golden == ADA
    assert result.snapshots == {"acq": ADA}
    assert result.conflicts == []


def test_create_excluded_when_required_fields_missing() -> None:
    no_phone = {k: v for k, v in ADA.items() if k != "phones"}
    result = run(PersonView(1, {}, {"ghl": Side("ghl", RecordState("g", no_phone, at(0)))}))
    (excl,) = ops_of(result, OpKind.EXCLUDE)
    assert excl.connection == "dm" and excl.reason == "dm needs phones"
    assert {op.connection for op in ops_of(result, OpKind.CREATE)} == {"acq", "c100"}


def test_create_excluded_when_platform_cannot_create() -> None:
    conns = dict(CONNECTIONS)
    conns["c100"] = replace(conns["c100"], capabilities=Capabilities(PullMode.FULL_SCAN, can_create=False))
    view = PersonView(1, {}, {"ghl": Side("ghl", RecordState("g", dict(ADA), at(0)))})
    result = reconcile_person(view, conns, ReconcilePolicy())
    excl = [op for op in result.ops if op.connection == "c100"]
    assert [(op.kind, op.reason) for op in excl] == [(OpKind.EXCLUDE, "c100 cannot create contacts")]


def test_change_on_one_side_propagates_only_that_field() -> None:
    view = PersonView(1, dict(ADA), everywhere(ADA, ghl={"last_name": "King"}))
    result = run(view)
    updates = {op.connection: op for op in ops_of(result, OpKind.UPDATE)}
    assert set(updates) == {"acq", "c100", "dm"}
    for op in updates.values():
        assert op.fields == {"last_name": "King"}
        assert op.before == {"last_name": "Lovelace"}
        assert op.confirms["last_name"] == "King"
    assert result.golden["last_name"] == "King"
    assert result.conflicts == []
    # The side that changed gets no write; its snapshot advances by reading.
    assert result.snapshots["ghl"]["last_name"] == "King"
    assert set(result.snapshots) == {"ghl"}


def test_same_change_on_several_sides_is_not_a_conflict() -> None:
    view = PersonView(1, dict(ADA), everywhere(ADA, ghl={"first_name": "Augusta"}, acq={"first_name": "Augusta"}))
    result = run(view)
    assert result.conflicts == []
    assert {op.connection for op in ops_of(result, OpKind.UPDATE)} == {"c100", "dm"}


def _conflict_view() -> PersonView:
    sides = everywhere(ADA)
    sides["acq"] = replace(
        sides["acq"], record=RecordState("acq-1", {**sides["acq"].snapshot, "first_name": "Augusta"}, at(5))
    )  # type: ignore[dict-item]
    sides["ghl"] = replace(
        sides["ghl"], record=RecordState("ghl-1", {**sides["ghl"].snapshot, "first_name": "Ada A."}, at(9))
    )  # type: ignore[dict-item]
    return PersonView(1, dict(ADA), sides)


def test_different_changes_newest_wins_and_the_conflict_is_recorded() -> None:
    result = run(_conflict_view())
    (conflict,) = result.conflicts
    assert conflict.field == "first_name"
    assert conflict.rule == "newest"
    assert conflict.decision == "Ada A."
    assert not conflict.needs_review  # a clear winner
    assert [(c.connection, c.value, c.updated_at) for c in conflict.candidates] == [
        ("acq", "Augusta", at(5)),
        ("ghl", "Ada A.", at(9)),
    ]
    updates = {op.connection: op.fields for op in ops_of(result, OpKind.UPDATE)}
    assert updates == {
        "acq": {"first_name": "Ada A."},
        "c100": {"first_name": "Ada A."},
        "dm": {"first_name": "Ada A."},
    }


def test_priority_policy_prefers_the_listed_connection() -> None:
    policy = ReconcilePolicy(conflicts=ConflictPolicy(rule="priority", priority=("acq", "ghl")))
    result = run(_conflict_view(), policy)
    (conflict,) = result.conflicts
    assert (conflict.decision, conflict.rule) == ("Augusta", "priority:acq>ghl")
    assert "acq" not in {op.connection for op in ops_of(result, OpKind.UPDATE)}


def test_per_field_override_beats_the_default() -> None:
    policy = ReconcilePolicy(
        conflicts=ConflictPolicy(rule="newest", overrides={"first_name": FieldRule(rule="priority", priority=("acq",))})
    )
    (conflict,) = run(_conflict_view(), policy).conflicts
    assert (conflict.decision, conflict.rule) == ("Augusta", "priority:acq")


def test_newest_treats_a_missing_timestamp_as_oldest() -> None:
    view = _conflict_view()
    sides = dict(view.sides)
    sides["ghl"] = replace(sides["ghl"], record=replace(sides["ghl"].record, updated_at=None))  # type: ignore[arg-type]
    (conflict,) = run(replace(view, sides=sides)).conflicts
    assert conflict.decision == "Augusta"


def test_newest_with_equal_times_is_decided_by_a_tie_break_and_flagged_for_review() -> None:
    view = _conflict_view()
    sides = dict(view.sides)
    sides["ghl"] = replace(sides["ghl"], record=replace(sides["ghl"].record, updated_at=at(5)))  # type: ignore[arg-type]
    policy = ReconcilePolicy(conflicts=ConflictPolicy(rule="newest", priority=("ghl",)))
    (conflict,) = run(replace(view, sides=sides), policy).conflicts
    assert (conflict.decision, conflict.rule, conflict.needs_review) == ("Ada A.", "newest", True)


def test_newest_with_no_times_at_all_is_flagged_for_review() -> None:
    view = _conflict_view()
    sides = {
        c: replace(s, record=replace(s.record, updated_at=None)) if c in ("acq", "ghl") else s  # type: ignore[arg-type]
        for c, s in view.sides.items()
    }
    (conflict,) = run(replace(view, sides=sides)).conflicts
    assert conflict.needs_review


def test_priority_without_any_competing_connection_listed_is_flagged_for_review() -> None:
    listed = ReconcilePolicy(conflicts=ConflictPolicy(rule="priority", priority=("acq", "ghl")))
    assert not run(_conflict_view(), listed).conflicts[0].needs_review
    unlisted = ReconcilePolicy(conflicts=ConflictPolicy(rule="priority", priority=("c100",)))
    (conflict,) = run(_conflict_view(), unlisted).conflicts
    assert conflict.decision == "Augusta" and conflict.needs_review  # "acq" < "ghl" by name only


def test_a_decision_a_competing_side_cannot_be_updated_to_is_flagged_for_review() -> None:
    """Issue 14: GoHighLevel takes a company on create only. A conflict decided for another
    side's company can never reach it: the platforms would disagree for good under a conflict
    that passes for settled, so it is left for a person. Decided for the side that cannot be
    updated, the value reaches the others and nothing needs review."""
    conns = dict(CONNECTIONS)
    conns["ghl"] = replace(conns["ghl"], update_fields=GHL_FIELDS - {"company"})
    base = {**ADA, "company": "Babbage & Co"}
    sides = everywhere(base)
    sides["ghl"] = replace(
        sides["ghl"], record=RecordState("ghl-1", {**sides["ghl"].snapshot, "company": "Analytical Engines"}, at(5))
    )  # type: ignore[dict-item]
    sides["c100"] = replace(
        sides["c100"], record=RecordState("c100-1", {**sides["c100"].snapshot, "company": "Difference Engines"}, at(9))
    )  # type: ignore[dict-item]
    view = PersonView(1, dict(base), sides)
    (conflict,) = reconcile_person(view, conns, ReconcilePolicy()).conflicts
    assert (conflict.decision, conflict.rule, conflict.needs_review) == ("Difference Engines", "newest", True)
    # Where every competing side can take the decision, the rule settles it.
    (conflict,) = reconcile_person(view, CONNECTIONS, ReconcilePolicy()).conflicts
    assert (conflict.decision, conflict.needs_review) == ("Difference Engines", False)
    # Decided for GoHighLevel's own company: it reaches Comm100, nothing left for review.
    sides["ghl"] = replace(sides["ghl"], record=replace(sides["ghl"].record, updated_at=at(10)))  # type: ignore[arg-type]
    result = reconcile_person(PersonView(1, dict(base), sides), conns, ReconcilePolicy())
    (conflict,) = result.conflicts
    assert (conflict.decision, conflict.needs_review) == ("Analytical Engines", False)
    assert {op.connection: op.fields for op in ops_of(result, OpKind.UPDATE)}["c100"] == {
        "company": "Analytical Engines"
    }


def test_union_merges_set_changes_element_wise() -> None:
    base = {**ADA, "tags": frozenset({"lead", "old"})}
    conns = {"ghl": CONNECTIONS["ghl"], "g2": replace(CONNECTIONS["ghl"], name="g2")}
    sides = {
        "ghl": Side("ghl", RecordState("a", {**base, "tags": frozenset({"lead", "old", "vip"})}, at(1)), base),
        "g2": Side("g2", RecordState("b", {**base, "tags": frozenset({"lead"})}, at(2)), base),
    }
    policy = ReconcilePolicy(conflicts=ConflictPolicy(overrides={"tags": FieldRule(rule="union")}))
    result = reconcile_person(PersonView(1, dict(base), sides), conns, policy)
    (conflict,) = result.conflicts
    assert conflict.rule == "union"
    assert result.golden["tags"] == frozenset({"lead", "vip"})  # g2 removed "old", ghl added "vip"
    updates = {op.connection: op.fields for op in ops_of(result, OpKind.UPDATE)}
    assert updates == {"ghl": {"tags": frozenset({"lead", "vip"})}, "g2": {"tags": frozenset({"lead", "vip"})}}


def test_union_on_a_list_keeps_every_value_primary_from_priority() -> None:
    policy = ReconcilePolicy(conflicts=ConflictPolicy(rule="union", priority=("ghl",)))
    sides = everywhere(ADA, acq={"emails": ("ada@x.com", "a2@x.com")}, ghl={"emails": ("new@x.com",)})
    result = run(PersonView(1, dict(ADA), sides), policy)
    assert result.golden["emails"] == ("new@x.com", "a2@x.com")
    assert result.conflicts[0].rule == "union"


def test_union_on_a_scalar_falls_back_to_newest() -> None:
    policy = ReconcilePolicy(conflicts=ConflictPolicy(rule="union"))
    (conflict,) = run(_conflict_view(), policy).conflicts
    assert (conflict.decision, conflict.rule) == ("Ada A.", "newest")


def test_an_empty_value_never_erases_by_default() -> None:
    sides = everywhere(ADA, ghl={"last_name": None})
    result = run(PersonView(1, dict(ADA), sides))
    assert result.golden["last_name"] == "Lovelace"
    # ghl is told the value again (it lost it), nobody else changes.
    assert [(op.connection, op.fields) for op in ops_of(result, OpKind.UPDATE)] == [("ghl", {"last_name": "Lovelace"})]


def test_an_empty_value_erases_when_configured() -> None:
    policy = ReconcilePolicy(conflicts=ConflictPolicy(empty_erases=True))
    sides = everywhere(ADA, ghl={"last_name": None})
    result = run(PersonView(1, dict(ADA), sides), policy)
    assert "last_name" not in result.golden
    updates = {op.connection: op for op in ops_of(result, OpKind.UPDATE)}
    assert set(updates) == {"acq", "c100", "dm"}
    assert all(op.fields == {"last_name": None} and "last_name" not in op.confirms for op in updates.values())


def test_a_newly_linked_record_missing_a_field_does_not_erase_it() -> None:
    policy = ReconcilePolicy(conflicts=ConflictPolicy(empty_erases=True))
    sides = everywhere(ADA)
    sides["c100"] = Side("c100", RecordState("c-new", {"emails": ("ada@x.com",)}, at(3)))
    result = run(PersonView(1, dict(ADA), sides), policy)
    assert result.golden == ADA
    assert [(op.connection, op.fields) for op in ops_of(result, OpKind.UPDATE)] == [
        ("c100", {"first_name": "Ada", "last_name": "Lovelace", "phones": ("+14155552671",)})
    ]


def test_a_newly_linked_record_brings_its_new_values() -> None:
    sides = everywhere(ADA)
    sides["c100"] = Side("c100", RecordState("c-new", {**ADA, "company": "Analytical Engines"}, at(3)))
    result = run(PersonView(1, dict(ADA), sides))
    assert result.golden["company"] == "Analytical Engines"
    assert [(op.connection, op.fields) for op in ops_of(result, OpKind.UPDATE)] == [
        ("ghl", {"company": "Analytical Engines"})
    ]


def test_echo_of_our_own_write_is_not_a_change_and_a_quiet_cycle_plans_nothing() -> None:
    first = run(_conflict_view())
    # Apply: every op confirmed, and pulls read back exactly what was written.
    sides: dict[str, Side] = {}
    for conn, side in _conflict_view().sides.items():
        op = next((o for o in first.ops if o.connection == conn), None)
        snap = op.confirms if op else first.snapshots.get(conn, side.snapshot)
        assert side.record is not None
        sides[conn] = Side(conn, replace(side.record, current=dict(snap)), snapshot=dict(snap))  # type: ignore[arg-type]
    second = run(PersonView(1, first.golden, sides))
    assert second.ops == [] and second.conflicts == [] and second.snapshots == {}


def test_lookup_only_platform_is_never_a_source_of_change() -> None:
    sides = everywhere(ADA)
    # DM Champ's "current" is only what we last sent; a stale payload must not look like an edit.
    sides["dm"] = replace(sides["dm"], record=RecordState("dm-1", {**ADA, "first_name": "Stale"}, at(30)))
    result = run(PersonView(1, dict(ADA), sides))
    assert result.ops == [] and result.conflicts == []


def test_lossy_platform_holding_one_email_is_not_updated_forever() -> None:
    two = {**ADA, "emails": ("ada@x.com", "ada2@x.com")}
    sides = everywhere(two)
    assert sides["dm"].snapshot["emails"] == ("ada@x.com",)  # type: ignore[index]
    result = run(PersonView(1, dict(two), sides))
    assert result.ops == [] and result.conflicts == []


def test_platform_keeping_one_email_agrees_with_the_fuller_value() -> None:
    # First sync: dm holds the first of the two emails acq holds. Not a conflict.
    sides = {
        "acq": Side("acq", RecordState("12", {**ADA, "emails": ("ada@x.com", "ada2@x.com")}, at(1))),
        "dm": Side("dm", RecordState("d", {**ADA, "emails": ("ada@x.com",)}, at(2))),
    }
    result = run(PersonView(1, {}, sides))
    assert result.conflicts == []
    assert result.golden["emails"] == ("ada@x.com", "ada2@x.com")
    assert not [op for op in result.ops if op.connection == "dm"]


def test_phone_is_never_updated_on_dm_champ() -> None:
    result = run(PersonView(1, dict(ADA), everywhere(ADA, ghl={"phones": ("+14155550000",)})))
    assert "dm" not in {op.connection for op in ops_of(result, OpKind.UPDATE)}
    assert {op.connection for op in ops_of(result, OpKind.UPDATE)} == {"acq", "c100"}


def test_read_only_field_is_read_but_never_written() -> None:
    with_tags = {**ADA, "tags": frozenset({"vip"})}
    sides = everywhere(with_tags, ghl={"tags": frozenset({"vip", "new"})})
    result = run(PersonView(1, dict(with_tags), sides))
    assert result.golden["tags"] == frozenset({"vip", "new"})
    assert ops_of(result) == []  # acq reads tags but cannot write them


def test_delete_ignored_by_default_and_not_recreated() -> None:
    sides = everywhere(ADA)
    sides["ghl"] = replace(sides["ghl"], record=replace(sides["ghl"].record, deleted=True))  # type: ignore[arg-type]
    result = run(PersonView(1, dict(ADA), sides))
    assert result.ops == []


def test_delete_propagates_when_configured() -> None:
    sides = everywhere(ADA)
    sides["ghl"] = replace(sides["ghl"], record=replace(sides["ghl"].record, deleted=True))  # type: ignore[arg-type]
    result = run(PersonView(1, dict(ADA), sides), ReconcilePolicy(deletes=DeletePolicy(mode="propagate")))
    kinds = sorted((op.connection, op.kind.value, op.reason) for op in result.ops)
    assert kinds == [
        ("acq", "delete", "deleted on ghl"),
        ("c100", "delete", "deleted on ghl"),
        ("dm", "exclude", "deleted on ghl; dm cannot delete contacts"),
    ]


def test_delete_tags_the_others_when_configured() -> None:
    sides = everywhere(ADA)
    sides["acq"] = replace(sides["acq"], record=replace(sides["acq"].record, deleted=True))  # type: ignore[arg-type]
    policy = ReconcilePolicy(deletes=DeletePolicy(mode="tag", tag="gone"))
    result = run(PersonView(1, dict(ADA), sides), policy)
    (tag,) = ops_of(result, OpKind.TAG)
    assert tag.connection == "ghl" and tag.fields == {"tags": frozenset({"gone"})}
    assert tag.confirms["tags"] == frozenset({"gone"})
    assert ops_of(result, OpKind.UPDATE) == [] and ops_of(result, OpKind.CREATE) == []


def _merged_view() -> PersonView:
    sides = everywhere(ADA)
    loser_acq = RecordState("11", {**ADA, "emails": ("old@x.com",)}, at(1))
    loser_ghl = RecordState("ghl-2", {**ADA, "tags": frozenset({"x"})}, at(1))
    sides["acq"] = replace(sides["acq"], others=(loser_acq,))
    sides["ghl"] = replace(sides["ghl"], others=(loser_ghl,))
    return PersonView(1, dict(ADA), sides, merged=True)


def test_merge_is_carried_natively_where_the_platform_can() -> None:
    result = run(_merged_view())
    (merge,) = ops_of(result, OpKind.MERGE)
    assert (merge.connection, merge.remote_id, merge.loser_ids) == ("acq", "acq-1", ("11",))


@pytest.mark.parametrize(
    ("fallback", "expected"),
    [
        ("leave", []),
        ("delete", [("delete", "ghl-2", {})]),
        ("tag", [("tag", "ghl-2", {"tags": frozenset({"x", "merged"})})]),
    ],
)
def test_merge_fallback_where_the_platform_cannot(fallback: str, expected: list) -> None:  # type: ignore[type-arg]
    result = run(_merged_view(), ReconcilePolicy(merges=MergePolicy(fallback=fallback)))
    got = [(op.kind.value, op.remote_id, op.fields) for op in result.ops if op.connection == "ghl"]
    assert got == expected


def test_duplicates_are_linked_by_default_and_merged_natively_when_asked() -> None:
    view = replace(_merged_view(), merged=False)
    assert run(view).ops == []
    result = run(view, ReconcilePolicy(duplicates="merge"))
    assert [(op.connection, op.kind) for op in result.ops] == [("acq", OpKind.MERGE)]


def test_no_update_is_ever_empty() -> None:
    sides = everywhere(ADA, ghl={"company": ""})
    result = run(PersonView(1, dict(ADA), sides))
    assert all(op.fields for op in result.ops if op.kind is OpKind.UPDATE)
    assert result.ops == []


def test_custom_fields_follow_the_custom_pattern() -> None:
    with_custom = {**ADA, "custom.plan": "gold"}
    sides = everywhere(with_custom, acq={"custom.plan": "platinum"})
    result = run(PersonView(1, dict(with_custom), sides))
    assert [(op.connection, op.fields) for op in ops_of(result, OpKind.UPDATE)] == [
        ("ghl", {"custom.plan": "platinum"})
    ]


def test_reconcile_gathers_a_plan() -> None:
    views = [PersonView(1, dict(ADA), everywhere(ADA, ghl={"last_name": "King"})), _conflict_view()]
    views[1] = replace(views[1], person_id=2)
    plan = reconcile(views, CONNECTIONS)
    assert plan.summary() == {"acq": {"update": 2}, "c100": {"update": 2}, "dm": {"update": 2}}
    assert [c.person_id for c in plan.conflicts] == [2]
    assert set(plan.golden) == {1, 2}
    assert (1, "ghl") in plan.snapshots
    assert not plan.is_empty()


def test_values_missing_from_the_golden_record_are_adopted_from_the_sides() -> None:
    # After a fold the survivor's golden record may lack what a side holds unchanged.
    sides = everywhere(ADA)
    result = run(PersonView(1, {"first_name": "Ada"}, sides))
    assert result.golden == ADA
    assert result.ops == [] and result.conflicts == []


def test_a_union_that_keeps_a_side_it_cannot_update_is_not_left_for_review() -> None:
    """A union decision holding every tag of the side that cannot take updates leaves that side
    lacking only the others' additions — the documented limit of a read-only field, nothing a
    person could settle — so it is not raised for review. A decision that drops one of that
    side's tags (another side removed it) is: the sides would disagree for good."""
    base = {**ADA, "tags": frozenset({"lead", "old"})}
    union = ReconcilePolicy(conflicts=ConflictPolicy(overrides={"tags": FieldRule(rule="union")}))

    def decide_with_read_only(read_only: str) -> ConflictDecision:
        conns = {
            "ghl": CONNECTIONS["ghl"],
            "g2": replace(CONNECTIONS["ghl"], name="g2"),
        }
        conns[read_only] = replace(conns[read_only], update_fields=GHL_FIELDS - {"tags"})
        sides = {
            "ghl": Side("ghl", RecordState("a", {**base, "tags": frozenset({"lead", "old", "vip"})}, at(1)), base),
            "g2": Side("g2", RecordState("b", {**base, "tags": frozenset({"lead"})}, at(2)), base),
        }
        (conflict,) = reconcile_person(PersonView(1, dict(base), sides), conns, union).conflicts
        assert conflict.decision == frozenset({"lead", "vip"})  # g2 removed "old", ghl added "vip"
        return conflict

    assert decide_with_read_only("g2").needs_review is False  # g2's {"lead"} is kept: it lacks "vip" only
    assert decide_with_read_only("ghl").needs_review is True  # ghl keeps "old", which the others dropped
