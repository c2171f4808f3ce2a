"""Reconcile's first-sight fast path (a new person on one connection) decides exactly what the
general per-field merge decides for the same person."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.canonical import FieldDict
from sync.reconcile import PersonView, ReconcilePolicy, RecordState, Side, merge, reconcile_person

from .helpers import CONNECTIONS, at

VALUES: dict[str, Any] = {
    "first_name": st.sampled_from(["Ada", "Grace", ""]),
    "last_name": st.sampled_from(["Lovelace", "King", None]),
    "emails": st.sampled_from([(), ("ada@x.com",), ("ada@x.com", "ada@y.org")]),
    "phones": st.sampled_from([(), ("+14155552671",)]),
    "company": st.sampled_from(["Babbage & Co", None]),
    "tags": st.sampled_from([frozenset(), frozenset({"vip"})]),
    "address.city": st.sampled_from(["London", None]),
    "custom.x_a": st.sampled_from(["1", None]),
    "identities": st.sampled_from([frozenset(), frozenset({"facebook:1"})]),
    "do_not_disturb": st.sampled_from([True, False, None]),
}
CURRENT = st.fixed_dictionaries({}, optional=VALUES)


def general(view: PersonView) -> merge.PersonPlan:
    """The general path for ``view``, called step by step (what reconcile_person did before
    the fast path)."""
    policy = ReconcilePolicy()
    out = merge.PersonPlan(view.person_id, golden=dict(view.golden))
    sides = {name: view.sides.get(name) or Side(name) for name in sorted(CONNECTIONS)}
    live = {n: s for n, s in sides.items() if s.record is not None and not s.record.deleted}
    holds = {n: merge._holds(CONNECTIONS[n], s) for n, s in live.items()}
    golden, erased = merge._decide_fields(view, CONNECTIONS, live, holds, policy, out)
    out.golden = golden
    for name, side in live.items():
        merge._plan_side(view.person_id, CONNECTIONS[name], side, holds[name], golden, erased, policy, out)
    for name, side in sides.items():
        if side.record is None:
            merge._plan_create(view.person_id, CONNECTIONS[name], golden, out)
    return out


@pytest.mark.parametrize("conn", sorted(CONNECTIONS))
def test_first_sight_fast_path_agrees_with_the_general_path(conn: str) -> None:
    @settings(max_examples=80, deadline=None)
    @given(CURRENT)
    def check(current: FieldDict) -> None:
        view = PersonView(7, {}, {conn: Side(conn, RecordState("r1", dict(current), at(3)))})
        fast = reconcile_person(view, CONNECTIONS, ReconcilePolicy())
        slow = general(view)
        assert fast.golden == slow.golden and list(fast.golden) == list(slow.golden)
        assert fast.snapshots == slow.snapshots
        assert fast.ops == slow.ops
        assert fast.conflicts == slow.conflicts == []

    check()


def test_new_op_is_the_plan_op_the_constructor_makes() -> None:
    import dataclasses

    from sync.plan import OpKind, PlanOp, new_op

    made = new_op("acq", 3, OpKind.CREATE, {"first_name": "Ada"}, {"first_name": "Ada"}, remote_id="r")
    plain = PlanOp("acq", 3, OpKind.CREATE, "r", fields={"first_name": "Ada"}, confirms={"first_name": "Ada"})
    assert made == plain and made.__dict__ == plain.__dict__
    # Every field set (a field added to PlanOp must be added to new_op too).
    assert set(made.__dict__) == {f.name for f in dataclasses.fields(PlanOp)}
