"""Issue 15, end to end over the four emulators (real HTTP through httpx transports, the test's
SQLite file or PostgreSQL database): the defects found through the vendor APIs (item 6), and the
engine converging under every GoHighLevel and DM Champ variant. End states are asserted through
the emulators' own views: the values on every platform, one contact per human."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from connectors.dmchamp import behaviours as dm_bh
from connectors.emulation import RecordingTransport
from connectors.gohighlevel import EMULATOR as GHL
from connectors.gohighlevel import behaviours as ghl_bh
from sync.cli import app
from sync.store.models import OutboxStatus

from .world import World, make_emulators
from helpers import request, run

ADA = {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.test", "phone": "+14155557181"}
GRACE = {"first_name": "Grace", "last_name": "Hopper", "email": "grace@navy.test", "phone": "+12125550100"}


def _no_failed_rows(w: World) -> None:
    failed = w.store.outbox.items([OutboxStatus.FAILED.value])
    assert not failed, [(f.connection, f.op, f.last_error) for f in failed]


def _ghl_create_lagging(w: World, **fields: Any) -> str:
    """A contact made on GoHighLevel through its API moments ago: not in search results yet."""
    ghl = w.emulators["ghl"]
    ghl.next_search_delay = 3600.0  # type: ignore[attr-defined]
    version = "v3" if ghl.variants[ghl_bh.VERSION] == "v3" else "2021-07-28"  # type: ignore[attr-defined]
    headers = {"Authorization": f"Bearer {ghl.credentials['token']}", "Version": version}
    body = {"locationId": ghl.location_id, **fields}  # type: ignore[attr-defined]
    response = run(request(ghl, "POST", "/contacts/", json=body, headers=headers))
    assert response.status_code == 201, response.text
    return str(response.json()["contact"]["id"])


# --------------------------------------------------------------------------- item 6 (a)


@pytest.mark.parametrize(
    ("via", "fallback", "deletes"),
    [("endpoint", "tag", "ignore"), ("put", "tag", "ignore"), (None, "delete", "propagate")],
)
def test_a_merge_carried_to_comm100_converges_in_one_cycle(
    db_url: str, tmp_path: Path, via: str | None, fallback: str, deletes: str
) -> None:
    emulators = make_emulators(comm100={"merge_endpoint": True} if via == "endpoint" else {})
    c100 = emulators["comm100"]
    if via is not None:
        site = c100.site_id  # type: ignore[attr-defined]
        c100.connector_options = lambda: {"site_id": site, "merge_via": via}  # type: ignore[method-assign]
    w = World(
        db_url,
        tmp_path,
        emulators=emulators,
        extra={"deletes": {"max_share": 1.0, "policy": deletes}, "merges": {"fallback": fallback}},
    )
    try:
        w.emulators["acquire"].seed([ADA, GRACE])
        w.backfill()
        w.converge()
        (ada,) = w.holding("acquire", phone=ADA["phone"])
        (grace,) = w.holding("acquire", phone=GRACE["phone"])
        (c_grace,) = w.holding("comm100", phone=GRACE["phone"])
        # An agent merges Ada into Grace on Acquire; carried to Comm100 (which refuses one
        # identity value on two contacts) in the very next cycle, without a refused write.
        w.emulators["acquire"].state.merge(int(grace["_raw"]["id"]), [int(ada["_raw"]["id"])])  # type: ignore[attr-defined]
        report = w.engine.run("default")
        assert report.status == "ok", (report.error, report.counts())
        _no_failed_rows(w)
        assert w.engine.run("default").write_calls() == 0
        (survivor,) = [c for c in w.contacts("comm100") if str(c["_raw"]["id"]) == str(c_grace["_raw"]["id"])]
        assert set(survivor["emails"]) == {ADA["email"], GRACE["email"]}
        assert set(survivor["phones"]) == {ADA["phone"], GRACE["phone"]}
        # The loser is gone from the live view (merged or deleted), never left holding the keys.
        assert [c for c in w.contacts("comm100") if ADA["email"] in (c.get("emails") or ())] == [survivor]
    finally:
        w.close()


# --------------------------------------------------------------------------- item 6 (b)


def test_platform_filled_defaults_never_become_writes_elsewhere(db_url: str, tmp_path: Path) -> None:
    w = World(db_url, tmp_path)
    try:
        w.emulators["acquire"].seed([ADA, GRACE])
        w.backfill()
        w.converge()
        # GoHighLevel filled dnd: false on its new contacts by itself. Edit both persons there.
        recorder = RecordingTransport(w.emulators["dmchamp"].transport())
        w.engine.transports["dmchamp"] = recorder
        ghl = w.emulators["ghl"]
        for human in (ADA, GRACE):
            (contact,) = w.holding("ghl", phone=human["phone"])
            ghl.external_edit(str(contact["_raw"]["id"]), {"lastName": "Edited"})
        ghl.clock.advance(30)
        w.converge()
        puts = [json.loads(q.content) for q, _ in recorder.exchanges if q.method == "PUT"]
        assert puts == [{"lastName": "Edited"}, {"lastName": "Edited"}], puts
        assert all(c["last_name"] == "Edited" for c in w.contacts("dmchamp"))
    finally:
        w.close()


# --------------------------------------------------------------------------- item 6 (c), (d)


def test_status_counts_no_engine_create_as_invalid_and_test_domains_travel(db_url: str, tmp_path: Path) -> None:
    w = World(db_url, tmp_path)
    try:
        w.emulators["acquire"].seed([ADA, GRACE])
        w.emulators["ghl"].seed([{"first_name": "Linus", "email": "linus@kernel.test", "phone": "+15035550199"}])
        w.backfill()
        w.converge()
        result = CliRunner().invoke(app, ["status", "-c", str(w.config_path), "--json"])
        assert result.exit_code == 0, result.output
        status = json.loads(result.output)
        assert {n: c["invalid"] for n, c in status["connections"].items()} == dict.fromkeys(status["connections"], 0)
        # Addresses on the reserved .test domain reach every platform (email-validator's
        # test_environment), and real validation still refuses a special-use name.
        w.assert_one_each([(h["email"], h["phone"]) for h in (ADA, GRACE)] + [("linus@kernel.test", "+15035550199")])
        for name in ("acquire", "ghl", "comm100", "dmchamp"):
            assert {e for c in w.contacts(name) for e in c.get("emails") or ()} >= {ADA["email"], GRACE["email"]}
        dm = w.emulators["dmchamp"]
        bad = run(
            request(
                dm,
                "POST",
                "/contacts",
                params={"apiKey": dm.credentials["api_key"]},
                json={"phoneNumber": "+14155550100", "email": "x@host.invalid"},
            )
        )
        assert bad.status_code == 400
    finally:
        w.close()


# --------------------------------------------------------------------------- item 6 (e)


def test_a_ghl_contact_not_yet_in_search_is_adopted_with_its_own_values(db_url: str, tmp_path: Path) -> None:
    w = World(db_url, tmp_path)
    try:
        w.emulators["acquire"].seed([{"first_name": "Ada", "last_name": "Lovelace", "email": ADA["email"]}])
        made = _ghl_create_lagging(
            w,
            firstName="Ada",
            lastName="Lovelace",
            email=ADA["email"],
            phone=ADA["phone"],
            companyName="Analytical Engines",
        )
        w.backfill()
        w.converge()
        # One contact on GoHighLevel (the one made there), and its phone and company everywhere
        # they can be held.
        (ghl,) = w.contacts("ghl")
        assert str(ghl["_raw"]["id"]) == made
        w.assert_one_each([(ADA["email"], ADA["phone"])])
        for name in ("acquire", "comm100", "dmchamp"):
            (contact,) = w.holding(name, email=ADA["email"])
            assert contact.get("phones") == (ADA["phone"],), (name, contact)
        (c100,) = w.contacts("comm100")
        assert c100.get("company") == "Analytical Engines"
    finally:
        w.close()


# --------------------------------------------------------------------------- every variant


VARIANTS = [("ghl", b.name, v) for b in ghl_bh.BEHAVIOURS for v in b.variants] + [
    ("dmchamp", b.name, v) for b in dm_bh.BEHAVIOURS for v in b.variants
]


@pytest.mark.parametrize(("platform", "behaviour", "variant"), VARIANTS)
def test_the_engine_converges_under_every_ghl_and_dmchamp_variant(
    db_url: str, tmp_path: Path, platform: str, behaviour: str, variant: str
) -> None:
    """Overlapping people, a DM Champ contact typed without "+", a GoHighLevel contact not yet in
    search, then edits on two platforms: one contact per human everywhere, every value kept.
    A location that keeps duplicates is handled as measured (the probe's finding)."""
    emulators = make_emulators(**{platform: {"variants": {behaviour: variant}}})
    w = World(db_url, tmp_path, emulators=emulators)
    if variant == "allowed":
        w.engine.settings_overrides["ghl"] = {"behaviours": {behaviour: variant}}
    try:
        w.emulators["acquire"].seed([ADA, GRACE])
        w.emulators["dmchamp"].seed_raw(  # type: ignore[attr-defined]
            {"phoneNumber": ADA["phone"].lstrip("+"), "firstName": "Ada", "lastName": "Unknown"}
        )
        _ghl_create_lagging(w, firstName="Grace", lastName="Hopper", email=GRACE["email"], companyName="Navy")
        w.backfill()
        w.converge()
        # Edits after the backfill: incremental GoHighLevel pulls (the date filter), updates.
        w.emulators["ghl"].clock.advance(60)
        (g_ada,) = w.holding("ghl", email=ADA["email"])
        w.emulators["ghl"].external_edit(str(g_ada["_raw"]["id"]), {"city": "London"})
        (a_grace,) = w.holding("acquire", email=GRACE["email"])
        w.emulators["acquire"].external_edit(str(a_grace["_raw"]["id"]), {"fields": {"name": "Grace Brewster"}})
        w.emulators["ghl"].clock.advance(60)
        w.converge()
        _no_failed_rows(w)
        w.assert_one_each([(h["email"], h["phone"]) for h in (ADA, GRACE)])
        for name in ("acquire", "ghl", "comm100"):
            (ada,) = w.holding(name, email=ADA["email"])
            assert ada.get("address.city") == "London", (name, ada)
        for name in ("acquire", "ghl", "comm100", "dmchamp"):
            (grace,) = w.holding(name, email=GRACE["email"])
            assert grace.get("last_name") == "Brewster", (name, grace)
        (dm_ada,) = w.holding("dmchamp", phone=ADA["phone"])
        assert dm_ada["last_name"] == "Lovelace"
    finally:
        w.close()


# --------------------------------------------------------------------------- item 5


def test_config_example_as_is_writes_no_field_id_anywhere(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """config.example.yaml copied as it is, against the emulators (``contactsync emulate --all``
    with generated contacts, whose GoHighLevel custom field "plan" has a location id): no
    Acquire contact gets a field named after that id, GoHighLevel gets no pointless update, and
    ``config check --remote`` finds the field."""
    from connectors.gohighlevel.settings import looks_like_field_id
    from connectors.loopback import LoopbackEmulators
    from connectors.registry import emulator_class
    from sync.config import load_config
    from sync.cycle import CycleRunner
    from sync.store import Store

    repo = Path(__file__).resolve().parents[2]
    platforms = {"acquire": "acquire", "dmchamp": "dmchamp", "ghl": "gohighlevel", "comm100": "comm100"}
    factories = {n: (lambda url, p=p: emulator_class(p)(base_url=url, rate_scale=1000.0)) for n, p in platforms.items()}
    with LoopbackEmulators(factories) as served:
        served.emulators["ghl"].seed(6, rng_seed=1)
        served.emulators["acquire"].seed(4, rng_seed=2)
        for name, env in (
            ("acquire", "ACQUIRE_URL"),
            ("dmchamp", "DMCHAMP_URL"),
            ("ghl", "GHL_URL"),
            ("comm100", "COMM100_URL"),
        ):
            monkeypatch.setenv(env, served.urls[name])
        monkeypatch.setenv("CONTACTSYNC_DATABASE_URL", db_url)
        config_path = tmp_path / "config.yaml"
        config_path.write_text((repo / "config.example.yaml").read_text())
        store = Store.open(db_url)
        try:
            config = load_config(config_path)
            engine = CycleRunner(config, store)
            name = next(iter(config.effective_profiles()))
            assert engine.run(name, kind="backfill", full=True).status in ("ok", "partial")
            for _ in range(4):
                if engine.run(name).write_calls() == 0:
                    break
            else:
                raise AssertionError("no quiet cycle")
            ghl_writes = [
                e for e in served.emulators["ghl"].request_log if e.method in ("PUT", "POST") and "search" not in e.path
            ]
            served.emulators["ghl"].request_log.clear()
            assert engine.run(name).write_calls() == 0
            assert not [e for e in served.emulators["ghl"].request_log if e.method == "PUT"]
        finally:
            store.close()
        plan_ids = served.emulators["ghl"].custom_field_ids  # type: ignore[attr-defined]
        assert set(plan_ids) == {"plan"}, plan_ids
        for contact in served.emulators["acquire"].records():
            keys = set(contact.get("fields") or {})
            assert not {k for k in keys if looks_like_field_id(k)}, keys
        assert any("plan" in (c.get("fields") or {}) for c in served.emulators["acquire"].records())
        assert ghl_writes  # the Acquire people were created there
        result = CliRunner().invoke(app, ["config", "check", "-c", str(config_path), "--remote"])
        assert result.exit_code == 0, result.output
        assert f"plan ({plan_ids['plan']})" in result.output


def test_config_check_flags_raw_ids_where_keys_belong(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    text = (repo / "config.example.yaml").read_text()
    bad = text.replace("custom.*: {ids: {}}", "custom.*: {ids: {abc: nGisiWgNZqITZMjtgUeR}}")
    assert bad != text
    path = tmp_path / "bad.yaml"
    path.write_text(bad)
    result = CliRunner().invoke(app, ["config", "check", "-c", str(path)])
    assert "looks like a GoHighLevel field id" in result.output, result.output
    reversed_ids = text.replace(
        '      version: "2021-07-28"\n',
        '      version: "2021-07-28"\n      custom_field_ids: {nGisiWgNZqITZMjtgUeR: plan}\n',
    )
    assert reversed_ids != text
    path.write_text(reversed_ids)
    result = CliRunner().invoke(app, ["config", "check", "-c", str(path)])
    assert result.exit_code == 2 and "looks like a field id used as a key" in result.output, result.output


def test_config_check_remote_reports_a_custom_field_the_location_lacks(db_url: str, tmp_path: Path) -> None:
    import yaml

    from connectors.loopback import LoopbackEmulators, emulator_config

    with LoopbackEmulators({"ghl": lambda url: GHL(base_url=url)}) as served:
        served.emulators["ghl"].add_custom_field("plan", "Plan")  # type: ignore[attr-defined]
        cfg = emulator_config(
            served.emulators,
            served.urls,
            db_url,
            secrets_dir=tmp_path / "secrets",
            conflicts={"fields": {"custom.plan": "newest", "custom.tier": "newest"}},
        )
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(cfg))
        result = CliRunner().invoke(app, ["config", "check", "-c", str(path), "--remote"])
    assert result.exit_code == 2, result.output
    assert "custom field 'tier' named by the config is not a field of the location" in result.output
    assert "'plan'" not in result.output.split("custom fields of location")[1].split("\n", 1)[1]
