"""Unit tests of the pure identity graph (sync/match): every matching rule, on plain data."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.match import MatchInput, MatchPolicy, graph, match_records


@dataclass
class R:
    """A test record: connection, remote id, keys as "kind=value" strings."""

    connection: str
    remote_id: str
    keys: tuple[str, ...] = ()
    person: int | None = None
    merged_into: str | None = None
    deleted: bool = False
    record_id: int | None = None


def build(records: list[R]) -> MatchInput:
    kr: list[int] = []
    kk: list[str] = []
    kv: list[str] = []
    for i, r in enumerate(records):
        for key in r.keys:
            kind, _, value = key.partition("=")
            kr.append(i)
            kk.append(kind)
            kv.append(value)
    return MatchInput(
        record_ids=[r.record_id if r.record_id is not None else i + 1 for i, r in enumerate(records)],
        connections=[r.connection for r in records],
        remote_ids=[r.remote_id for r in records],
        person_ids=[r.person for r in records],
        merged_into=[r.merged_into for r in records],
        deleted=[r.deleted for r in records],
        key_records=kr,
        key_kinds=kk,
        key_values=kv,
    )


def groups(records: list[R], policy: MatchPolicy | None = None):  # type: ignore[no-untyped-def]
    result = match_records(build(records), policy)
    out: dict[int, set[str]] = {}
    for i, p in enumerate(result.person_of.tolist()):
        out.setdefault(p, set()).add(records[i].remote_id)
    return sorted(sorted(g) for g in out.values()), result


def test_shared_email_joins_records_across_connections() -> None:
    recs = [
        R("acq", "a1", ("email=ada@x.com",)),
        R("ghl", "g1", ("email=ada@x.com", "phone=+14155552671")),
        R("c100", "c1", ("identity:facebook=ada.l",)),
        R("dm", "d1", ("identity:facebook=ada.l", "phone=+14155550000")),
    ]
    g, result = groups(recs)
    assert g == [["a1", "g1"], ["c1", "d1"]]
    assert result.new_persons == 2
    assert all(p < 0 for p in result.person_of.tolist())
    assert result.reviews == [] and result.folds == {}


def test_transitive_strong_keys_make_one_person() -> None:
    recs = [
        R("acq", "a1", ("email=a@x.com",)),
        R("ghl", "g1", ("email=a@x.com", "email=b@x.com")),
        R("c100", "c1", ("email=b@x.com",)),
    ]
    g, _ = groups(recs)
    assert g == [["a1", "c1", "g1"]]


def test_weak_phone_joins_when_at_most_one_side_has_an_email() -> None:
    recs = [
        R("acq", "a1", ("email=a@x.com", "phone=+14155552671")),
        R("dm", "d1", ("phone=+14155552671",)),
    ]
    g, result = groups(recs)
    assert g == [["a1", "d1"]]
    assert result.reviews == []


def test_weak_phone_never_joins_two_different_emails() -> None:
    recs = [
        R("acq", "a1", ("email=mum@x.com", "phone=+14155552671")),
        R("ghl", "g1", ("email=kid@x.com", "phone=+14155552671")),
        R("dm", "d1", ("phone=+14155552671",)),
    ]
    g, result = groups(recs)
    # Kept apart; the email-less record does not guess a side either.
    assert g == [["a1"], ["d1"], ["g1"]]
    assert len(result.reviews) == 1
    review = result.reviews[0]
    assert review.kind == "ambiguous_match"
    assert review.key == "phone:+14155552671"
    assert review.records == (0, 1, 2)


def test_weak_chain_cannot_bridge_two_emails() -> None:
    # a1 -phone1- d1 -phone2- g1: joining both would put two emails in one person.
    recs = [
        R("acq", "a1", ("email=a@x.com", "phone=+14155550001")),
        R("dm", "d1", ("phone=+14155550001", "phone=+14155550002")),
        R("ghl", "g1", ("email=b@x.com", "phone=+14155550002")),
    ]
    g, result = groups(recs)
    assert g == [["a1", "d1"], ["g1"]]
    assert [r.kind for r in result.reviews] == ["ambiguous_match"]


def test_phone_configured_strong_joins_regardless_of_emails() -> None:
    policy = MatchPolicy(keys={"email": "strong", "phone": "strong"})
    recs = [
        R("acq", "a1", ("email=mum@x.com", "phone=+14155552671")),
        R("ghl", "g1", ("email=kid@x.com", "phone=+14155552671")),
    ]
    g, result = groups(recs, policy)
    assert g == [["a1", "g1"]]
    assert result.reviews == []


def test_ignored_kind_does_not_join() -> None:
    policy = MatchPolicy(keys={"email": "strong"})
    recs = [R("acq", "a1", ("identity:facebook=x",)), R("c100", "c1", ("identity:facebook=x",))]
    g, _ = groups(recs, policy)
    assert g == [["a1"], ["c1"]]


def test_existing_person_ids_are_stable_and_sticky() -> None:
    # g1 changed its email: it stays in person 7 (the change will propagate), and the new
    # record n1 joins the same person through the new email.
    recs = [
        R("acq", "a1", ("email=old@x.com",), person=7),
        R("ghl", "g1", ("email=new@x.com",), person=7),
        R("c100", "n1", ("email=new@x.com",)),
    ]
    g, result = groups(recs)
    assert g == [["a1", "g1", "n1"]]
    assert result.person_of.tolist() == [7, 7, 7]
    assert result.new_persons == 0


def test_two_persons_joined_by_a_key_fold_into_the_older() -> None:
    recs = [
        R("acq", "a1", ("email=a@x.com",), person=3),
        R("ghl", "g1", ("email=b@x.com",), person=5),
        R("c100", "c1", ("email=a@x.com", "email=b@x.com")),
    ]
    _, result = groups(recs)
    assert result.person_of.tolist() == [3, 3, 3]
    assert result.folds == {5: 3}
    assert result.merge_persons == frozenset()


def test_comm100_merge_to_contact_id_folds_persons_not_deletes() -> None:
    recs = [
        R("c100", "c-win", ("email=a@x.com",), person=1),
        R("c100", "c-lose", ("email=b@x.com",), person=2, merged_into="c-win"),
        R("ghl", "g-a", ("email=a@x.com",), person=1),
        R("ghl", "g-b", ("email=b@x.com",), person=2),
    ]
    _, result = groups(recs)
    assert result.person_of.tolist() == [1, 1, 1, 1]
    assert result.folds == {2: 1}
    assert result.merged == {1: 0}
    assert result.merge_persons == frozenset({1})
    # The merge is carried to GoHighLevel: its two records are a merge duplicate there.
    assert len(result.duplicates) == 1
    dup = result.duplicates[0]
    assert (dup.connection, dup.records, dup.via_merge) == ("ghl", (2, 3), True)
    # The merged-away Comm100 record is not a live duplicate; no review for merge duplicates.
    assert [r.kind for r in result.reviews] == []


def test_acquire_vanished_record_whose_email_sits_on_a_survivor_was_merged() -> None:
    recs = [
        R("acq", "12", ("email=a@x.com", "email=b@x.com"), person=1),  # otherEmails now holds b
        R("acq", "11", ("email=b@x.com",), person=2, deleted=True),
        R("ghl", "g2", ("email=b@x.com",), person=2),
    ]
    _, result = groups(recs)
    assert result.merged == {1: 0}
    assert result.person_of.tolist() == [1, 1, 1]
    assert result.folds == {2: 1}
    assert result.merge_persons == frozenset({1})


def test_a_plain_delete_is_not_a_merge() -> None:
    recs = [
        R("acq", "12", ("email=a@x.com",), person=1),
        R("acq", "11", ("email=b@x.com",), person=2, deleted=True),
        R("ghl", "g2", ("email=b@x.com",), person=2),
    ]
    _, result = groups(recs)
    assert result.merged == {}
    assert result.person_of.tolist() == [1, 2, 2]


def test_deleted_records_keys_do_not_join_other_persons() -> None:
    recs = [
        R("ghl", "g1", ("email=a@x.com",), person=1, deleted=True),
        R("acq", "a9", ("email=a@x.com",)),
    ]
    _, result = groups(recs)
    assert result.person_of.tolist()[0] == 1
    assert result.person_of.tolist()[1] < 0


def test_duplicates_on_one_connection_primary_is_oldest_and_flagged() -> None:
    recs = [
        R("ghl", "g-new", ("email=a@x.com",), record_id=20),
        R("ghl", "g-old", ("email=a@x.com",), record_id=10),
        R("acq", "a1", ("email=a@x.com",), record_id=30),
    ]
    _, result = groups(recs)
    assert len(result.duplicates) == 1
    dup = result.duplicates[0]
    assert dup.records == (1, 0) and not dup.via_merge
    assert [(r.kind, r.key, r.records) for r in result.reviews] == [("duplicate", "ghl:g-old", (1, 0))]


def test_duplicate_primary_prefers_the_record_already_in_the_surviving_person() -> None:
    recs = [
        R("ghl", "g-young", ("email=a@x.com",), person=1, record_id=50),
        R("ghl", "g-old", ("email=a@x.com",), person=2, record_id=10),
    ]
    _, result = groups(recs)
    assert result.duplicates[0].records == (0, 1)


def test_empty_input() -> None:
    result = match_records(build([]))
    assert result.person_of.shape == (0,)
    assert result.persons() == set()


def test_many_records_cluster_like_a_reference_union_find() -> None:
    rng = np.random.default_rng(7)
    recs = []
    for i in range(3000):
        keys = [f"email=e{int(rng.integers(0, 1500))}@x.com"]
        if rng.random() < 0.3:
            keys.append(f"email=e{int(rng.integers(0, 1500))}@x.com")
        recs.append(R(f"c{i % 4}", str(i), tuple(keys)))
    result = match_records(build(recs))
    # Reference: a plain union-find over the same keys.
    parent = list(range(len(recs)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first: dict[str, int] = {}
    for i, r in enumerate(recs):
        for key in r.keys:
            j = first.setdefault(key, i)
            parent[find(i)] = find(j)
    ref: dict[int, set[int]] = {}
    for i in range(len(recs)):
        ref.setdefault(find(i), set()).add(i)
    got: dict[int, set[int]] = {}
    for i, p in enumerate(result.person_of.tolist()):
        got.setdefault(p, set()).add(i)
    assert sorted(map(sorted, ref.values())) == sorted(map(sorted, got.values()))


def test_merge_inference_only_on_the_configured_connections() -> None:
    # A GoHighLevel contact deleted by a person, then another one carrying its email: a delete
    # and a new record, not a merge (GoHighLevel has no native merge that would explain it).
    recs = [
        R("ghl", "old", ("email=a@x.com",), person=1, deleted=True),
        R("ghl", "new", ("email=a@x.com",), person=2),
    ]
    policy = MatchPolicy(infer_merges=frozenset({"acq"}))
    result = match_records(build(recs), policy)
    assert result.merged == {}
    assert result.person_of.tolist() == [1, 2]
    assert match_records(build(recs)).merged == {0: 1}  # default: inferred everywhere


def test_merge_target_is_found_on_the_same_connection_even_when_ids_collide() -> None:
    recs = [
        R("c100", "42", ("email=a@x.com",), person=1),
        R("c100", "7", ("email=b@x.com",), person=2, merged_into="42"),
        R("acq", "42", ("email=z@x.com",), person=3),  # same remote id, another connection
    ]
    result = match_records(build(recs))
    assert result.merged == {1: 0}
    assert result.person_of.tolist() == [1, 1, 3]


def test_a_record_deleted_long_ago_is_not_inferred_merged_when_its_email_reappears() -> None:
    # Acquire contact "11" was deleted (and matched as deleted) in an earlier run; today its
    # email turns up on contact "12". Only a newly seen disappearance can be a merge.
    recs = [
        R("acq", "12", ("email=b@x.com",), person=1),
        R("acq", "11", ("email=b@x.com",), person=2, deleted=True),
    ]
    old_news = build(recs)
    old_news.vanished_now = [False, False]
    result = match_records(old_news, MatchPolicy(infer_merges=frozenset({"acq"})))
    assert result.merged == {}
    assert result.person_of.tolist() == [1, 2]
    assert result.folds == {}
    fresh = build(recs)
    fresh.vanished_now = [False, True]
    assert match_records(fresh, MatchPolicy(infer_merges=frozenset({"acq"}))).merged == {1: 0}


class _Colliding(str):
    """A key value whose hash collides with every other: interning must not trust hashes."""

    def __hash__(self) -> int:
        return 42


def test_hash_collisions_never_join_different_keys() -> None:
    recs = [
        R("acq", "a1", ("email=ada@x.com",)),
        R("ghl", "g1", ("email=bob@x.com",)),
        R("c100", "c1", ("email=ada@x.com", "identity:facebook=ada")),
        R("dm", "d1", ("identity:twitter=ada",)),  # same value, another kind: another key
    ]
    plain = match_records(build(recs))
    colliding = build(recs)
    colliding.key_values = [_Colliding(v) for v in colliding.key_values]
    result = match_records(colliding)
    assert result.person_of.tolist() == plain.person_of.tolist()
    assert len(set(result.person_of.tolist())) == 3


_CONNS = ("acq", "ghl", "c100", "dm")


@st.composite
def _record_sets(draw: st.DrawFn) -> list[R]:
    """Small worlds full of shared phones and emails, existing persons, deletes and merges."""
    n = draw(st.integers(1, 40))
    emails = draw(st.integers(1, max(1, n // 2)))
    phones = draw(st.integers(1, max(1, n // 2)))
    recs = []
    for i in range(n):
        keys = [f"email=e{draw(st.integers(0, emails))}" for _ in range(draw(st.integers(0, 2)))]
        keys += [f"phone=p{draw(st.integers(0, phones))}" for _ in range(draw(st.integers(0, 2)))]
        recs.append(
            R(
                draw(st.sampled_from(_CONNS)),
                f"r{i}",
                tuple(keys),
                person=draw(st.one_of(st.none(), st.integers(1, max(1, n // 3)))),
                merged_into=draw(st.one_of(st.none(), st.just(f"r{draw(st.integers(0, n - 1))}")))
                if i % 5 == 0
                else None,
                deleted=draw(st.booleans()) if i % 7 == 0 else False,
            )
        )
    return recs


@settings(max_examples=300, deadline=None, derandomize=True)
@given(recs=_record_sets(), email_weak=st.booleans())
def test_weak_joins_by_cluster_decide_like_one_key_at_a_time(recs: list[R], email_weak: bool) -> None:
    # The vectorized path (whole clusters joined at once where guard keys agree) against the
    # reference that decides every weak key in input order.
    policy = MatchPolicy(keys={"email": "weak" if email_weak else "strong", "phone": "weak"})
    fast = match_records(build(recs), policy)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(graph, "_weak_joins", functools.partial(graph._weak_joins, vectorized=False))
        ref = match_records(build(recs), policy)
    assert fast.person_of.tolist() == ref.person_of.tolist()
    assert (fast.folds, fast.merged, fast.duplicates, fast.reviews) == (
        ref.folds,
        ref.merged,
        ref.duplicates,
        ref.reviews,
    )


# -- issue 14 E: the survivor is the record the platform says survived ---------------------------


def test_comm100_merge_into_the_younger_person_keeps_the_survivors_person() -> None:
    # Ada (person 1, older) merged into Grace (person 2) on Comm100: Grace's person is kept.
    recs = [
        R("c100", "c-ada", ("email=ada@x.com",), person=1, merged_into="c-grace"),
        R("c100", "c-grace", ("email=grace@x.com",), person=2),
        R("ghl", "g-ada", ("email=ada@x.com",), person=1),
        R("ghl", "g-grace", ("email=grace@x.com",), person=2),
    ]
    _, result = groups(recs)
    assert result.person_of.tolist() == [2, 2, 2, 2]
    assert result.folds == {1: 2}
    assert result.merge_persons == frozenset({2})
    assert result.inferred_merge_persons == frozenset()  # signalled by mergeToContactId
    # On GoHighLevel the contact of the survivor's person is the primary, Ada's the loser.
    (dup,) = result.duplicates
    assert (dup.connection, dup.records, dup.via_merge) == ("ghl", (3, 2), True)


def test_acquire_merge_into_the_younger_person_is_inferred_and_keeps_the_survivors_person() -> None:
    # Acquire merged Ada (person 1) into Grace (person 2): Ada's contact vanished and every key
    # it held (email and phone) now sits on Grace's.
    recs = [
        R("acq", "11", ("email=ada@x.com", "phone=+14155552671"), person=1, deleted=True),
        R("acq", "12", ("email=grace@x.com", "email=ada@x.com", "phone=+14155552671"), person=2),
        R("ghl", "g-ada", ("email=ada@x.com", "phone=+14155552671"), person=1),
        R("dm", "d-ada", ("phone=+14155552671",), person=1),
    ]
    _, result = groups(recs, MatchPolicy(infer_merges=frozenset({"acq"})))
    assert result.merged == {0: 1}
    assert result.person_of.tolist() == [2, 2, 2, 2]
    assert result.folds == {1: 2}
    assert result.merge_persons == frozenset({2}) == result.inferred_merge_persons
    assert [r.kind for r in result.reviews] == []


def test_vanished_record_with_only_one_key_moved_is_a_suspected_merge_not_a_fold() -> None:
    # Ada deleted on Acquire and her email typed onto Grace's contact; her phone went nowhere.
    recs = [
        R("acq", "11", ("email=ada@x.com", "phone=+14155552671"), person=1, deleted=True),
        R("acq", "12", ("email=grace@x.com", "email=ada@x.com"), person=2),
        R("ghl", "g-ada", ("email=ada@x.com", "phone=+14155552671"), person=1),
        R("ghl", "g-grace", ("email=grace@x.com",), person=2),
    ]
    policy = MatchPolicy(infer_merges=frozenset({"acq"}))
    _, result = groups(recs, policy)
    assert result.merged == {}
    assert result.folds == {}
    assert result.person_of.tolist() == [1, 2, 1, 2]
    assert result.merge_persons == frozenset()
    (review,) = result.reviews
    assert (review.kind, review.key, review.records) == ("suspected_merge", "email:ada@x.com", (0, 1))
    assert result.withheld == {2: frozenset({("email", "ada@x.com")})}
    # A later run (the vanishing is old news) still keeps them apart.
    later = build(recs)
    later.vanished_now = [False] * len(recs)
    again = match_records(later, policy)
    assert again.person_of.tolist() == [1, 2, 1, 2]
    assert again.folds == {} and [r.kind for r in again.reviews] == ["suspected_merge"]
