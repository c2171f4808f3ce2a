"""Stored answers to ambiguous matches (the web page's review queue) steer matching: a linked
weak key joins like a strong one, an apart key joins nobody."""

from __future__ import annotations

from sync.match import MatchPolicy

from .test_graph import R, groups

PHONE = ("phone", "+14155552671")


def test_a_linked_phone_joins_two_different_emails_without_a_review() -> None:
    recs = [
        R("acq", "a1", ("email=mum@x.com", "phone=+14155552671")),
        R("ghl", "g1", ("email=kid@x.com", "phone=+14155552671")),
    ]
    g, result = groups(recs)
    assert g == [["a1"], ["g1"]] and [r.kind for r in result.reviews] == ["ambiguous_match"]
    g, result = groups(recs, MatchPolicy(linked=frozenset({PHONE})))
    assert g == [["a1", "g1"]]
    assert result.reviews == []


def test_an_apart_phone_joins_nobody_even_when_the_guard_would_allow_it() -> None:
    # One side has no email: the phone alone would join them; the stored decision says no.
    recs = [
        R("acq", "a1", ("email=mum@x.com", "phone=+14155552671")),
        R("dm", "d1", ("phone=+14155552671",)),
    ]
    g, _ = groups(recs)
    assert g == [["a1", "d1"]]
    g, result = groups(recs, MatchPolicy(apart=frozenset({PHONE})))
    assert g == [["a1"], ["d1"]]
    assert result.reviews == []


def test_a_decision_on_one_key_leaves_other_keys_alone() -> None:
    recs = [
        R("acq", "a1", ("email=a@x.com", "phone=+14155550001")),
        R("ghl", "g1", ("email=b@x.com", "phone=+14155550001")),
        R("acq", "a2", ("email=c@x.com", "phone=+14155550002")),
        R("ghl", "g2", ("email=d@x.com", "phone=+14155550002")),
    ]
    g, result = groups(recs, MatchPolicy(linked=frozenset({("phone", "+14155550001")})))
    assert g == [["a1", "g1"], ["a2"], ["g2"]]
    assert [r.key for r in result.reviews] == ["phone:+14155550002"]
