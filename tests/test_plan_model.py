"""The Plan value's two shapes: a kept plan holds its ops, a counted plan only counts them;
both summarise the same."""

from __future__ import annotations

from sync.plan import OpKind, Plan, new_op


def ops() -> list:
    return [
        new_op("acq", 1, OpKind.CREATE, {"emails": ("a@x.io",)}, {"emails": ("a@x.io",)}),
        new_op("ghl", 1, OpKind.UPDATE, {"company": "X"}, {"company": "X"}, remote_id="g1"),
        new_op("ghl", 2, OpKind.EXCLUDE, {}, {}),
    ]


def test_a_kept_plan_holds_its_ops_and_a_counted_one_only_counts_them() -> None:
    kept = Plan(ops=ops())
    counted = Plan.counted()
    counted.count(ops())
    assert kept.keeps_ops and not counted.keeps_ops
    assert counted.ops == [] and len(kept.ops) == 3
    assert kept.summary() == counted.summary() == {"acq": {"create": 1}, "ghl": {"exclude": 1, "update": 1}}
    assert not kept.is_empty() and not counted.is_empty()
    assert counted.by_connection() == {}


def test_exclusions_alone_leave_either_shape_empty() -> None:
    kept = Plan(ops=ops()[2:])
    counted = Plan.counted()
    counted.count(ops()[2:])
    assert kept.is_empty() and counted.is_empty()
