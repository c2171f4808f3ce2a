"""Issue 14 E: merges fold the right way.

A platform merge names its survivor; the survivor's person is kept on every platform, the loser's
person folds into it, and on the other platforms the contact linked to the survivor's person is the
one kept (the loser's contacts are merged into it natively, or handled by the configured fallback).
An inferred merge whose only evidence is a moved key is not carried out: it is recorded for review,
and nothing is deleted under ``deletes: ignore``.

Asserted through the emulators' own views (``World.contacts``), on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sync.store.models import OutboxStatus
from tests.e2e.world import World

ADA = {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com", "phone": "+14155552671"}
GRACE = {"first_name": "Grace", "last_name": "Hopper", "email": "grace@navy.example", "phone": "+12125550100"}
MERGED_TAG = "contactsync:merged"


def _world(db_url: str, tmp_path: Path, **extra: Any) -> World:
    # Two contacts per platform: the merge's loser vanishing from Acquire's scan is half the
    # account. A merge is not a delete: the delete breaker (default limits) does not count it.
    return World(db_url, tmp_path, extra=extra or None)


def _seeded(w: World) -> dict[str, dict[str, str]]:
    """Ada (the older person) and Grace on Acquire, synced everywhere; per platform, the remote id
    of each one's contact."""
    w.emulators["acquire"].seed([ADA, GRACE])
    w.backfill()
    w.converge()
    ids: dict[str, dict[str, str]] = {}
    for name in ("acquire", "ghl", "comm100", "dmchamp"):
        (ada,) = w.holding(name, phone=ADA["phone"])
        (grace,) = w.holding(name, phone=GRACE["phone"])
        ids[name] = {"ada": str(ada["_raw"]["id"]), "grace": str(grace["_raw"]["id"])}
    return ids


def _by_id(w: World, name: str) -> dict[str, dict[str, Any]]:
    return {str(c["_raw"]["id"]): c for c in w.contacts(name)}


def _converge_cleanly(w: World, cycles: int = 6) -> None:
    """Cycles until a quiet one, each ``ok`` with no failed write (Comm100 included)."""
    for _ in range(cycles):
        report = w.engine.run("default")
        assert report.status == "ok", (report.status, report.error, report.counts())
        if report.write_calls() == 0:
            break
    else:
        raise AssertionError("no convergence")
    failed = w.store.outbox.items([OutboxStatus.FAILED.value])
    assert not failed, [(f.connection, f.op, f.last_error) for f in failed]


def _assert_grace(contact: dict[str, Any]) -> None:
    assert (contact["first_name"], contact.get("last_name")) == ("Grace", "Hopper"), contact
    assert contact["emails"][0] == GRACE["email"], contact


def _assert_ada(contact: dict[str, Any]) -> None:
    assert (contact["first_name"], contact.get("last_name")) == ("Ada", "Lovelace"), contact


@pytest.mark.parametrize(
    ("fallback", "deletes", "deleted"),
    [
        ("tag", "ignore", False),
        # Acquire's merge leaves no signal (it is inferred): under deletes: ignore it never
        # deletes, the fallback tags instead.
        ("delete", "ignore", False),
        ("delete", "propagate", True),
    ],
)
def test_native_acquire_merge_keeps_the_survivor_everywhere(
    db_url: str, tmp_path: Path, fallback: str, deletes: str, deleted: bool
) -> None:
    w = _world(db_url, tmp_path, merges={"fallback": fallback}, deletes={"policy": deletes})
    try:
        ids = _seeded(w)
        # An agent merges Ada into Grace on Acquire: Grace survives (and keeps Ada's details).
        w.emulators["acquire"].state.merge(int(ids["acquire"]["grace"]), [int(ids["acquire"]["ada"])])  # type: ignore[attr-defined]
        _converge_cleanly(w)

        (acq,) = w.contacts("acquire")
        assert str(acq["_raw"]["id"]) == ids["acquire"]["grace"]
        _assert_grace(acq)

        # GoHighLevel cannot merge: Grace's own contact is kept with Grace's values; Ada's is
        # tagged or deleted per the policies, never rewritten.
        ghl = _by_id(w, "ghl")
        _assert_grace(ghl[ids["ghl"]["grace"]])
        if deleted:
            assert set(ghl) == {ids["ghl"]["grace"]}
        else:
            assert set(ghl) == {ids["ghl"]["grace"], ids["ghl"]["ada"]}
            _assert_ada(ghl[ids["ghl"]["ada"]])
            assert MERGED_TAG in (ghl[ids["ghl"]["ada"]].get("tags") or ())
            assert MERGED_TAG not in (ghl[ids["ghl"]["grace"]].get("tags") or ())

        # DM Champ cannot merge nor delete: its Ada contact keeps Ada's name.
        dm = _by_id(w, "dmchamp")
        assert set(dm) == {ids["dmchamp"]["ada"], ids["dmchamp"]["grace"]}
        _assert_ada(dm[ids["dmchamp"]["ada"]])
        assert dm[ids["dmchamp"]["grace"]]["first_name"] == "Grace"

        # Comm100 (no native merge configured): Grace's contact is Grace's; Ada's is left
        # alone (it cannot be tagged) or deleted per the policies; no cycle failed on an
        # identity already used.
        c100 = _by_id(w, "comm100")
        _assert_grace(c100[ids["comm100"]["grace"]])
        if deleted:
            assert set(c100) == {ids["comm100"]["grace"]}
        else:
            _assert_ada(c100[ids["comm100"]["ada"]])

        # One person left, Grace's, and a quiet cycle after.
        assert w.engine.run("default").write_calls() == 0
    finally:
        w.close()


def test_delete_plus_moved_email_is_reviewed_not_merged_under_deletes_ignore(db_url: str, tmp_path: Path) -> None:
    # Ada's phone stays behind: not what a merge leaves, so the vanished contact counts as a
    # delete for the breaker (1 of 2); its limits are opened so the review itself is tested.
    w = _world(db_url, tmp_path, merges={"fallback": "delete"}, deletes={"policy": "ignore", "max_share": 1.0})
    try:
        ids = _seeded(w)
        acquire = w.emulators["acquire"]
        # Someone deletes Ada on Acquire and types her email onto Grace's contact.
        acquire.state.delete(int(ids["acquire"]["ada"]))  # type: ignore[attr-defined]
        acquire.external_edit(ids["acquire"]["grace"], {"fields": {"otherEmails": [ADA["email"]]}})
        _converge_cleanly(w)

        # Nothing deleted, nothing renamed: Ada's contacts stay Ada's everywhere she was.
        for name in ("ghl", "comm100", "dmchamp"):
            contacts = _by_id(w, name)
            assert set(contacts) == {ids[name]["ada"], ids[name]["grace"]}, name
            _assert_ada(contacts[ids[name]["ada"]])
            assert contacts[ids[name]["grace"]]["first_name"] == "Grace", name
            assert MERGED_TAG not in (contacts[ids[name]["ada"]].get("tags") or ()), name
        (acq,) = w.contacts("acquire")
        _assert_grace(acq)

        # The suspected merge is listed for a human.
        reviews = w.store.status.reviews()
        assert any(ADA["email"] in r.key and r.kind == "suspected_merge" for r in reviews), reviews
        assert w.store.status.overview(list(w.emulators)).open_reviews >= 1
    finally:
        w.close()
