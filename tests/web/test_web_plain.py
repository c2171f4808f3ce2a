"""The page without a browser (Starlette's TestClient): authentication, CSRF refusal, no
credential ever shown, value validation shared with the CLI, and every page rendering."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from sync.cli import app as cli
from sync.fieldvalues import FieldValueError, parse_field_value
from sync.store.models import OutboxStatus
from sync.web import build_web_app
from sync.web.security import CSRF_COOKIE
from tests.e2e.world import World

from . import scenarios
from .conftest import TOKEN, with_token

runner = CliRunner()


def client(world: World, *, token: str | None = TOKEN, loopback: bool = False) -> TestClient:
    config = with_token(world.config, token)
    c = TestClient(
        build_web_app(world.store, config), client=("127.0.0.1", 50000) if loopback else ("203.0.113.9", 50000)
    )
    return c


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert m, "no CSRF field in the form"
    return m.group(1)


# -- value validation (one place for the page and the CLI) -----------------------------------


@pytest.mark.parametrize(
    ("field", "text", "value"),
    [
        ("address.city", "Paris", "Paris"),
        ("address.city", '"Lyon"', "Lyon"),
        ("address.postal_code", "02139", "02139"),
        ("emails", "Ada@Example.com, b@x.org", ["ada@example.com", "b@x.org"]),
        ("emails", '["a@x.org"]', ["a@x.org"]),
        ("phones", "(415) 555-2671", ["+14155552671"]),
        ("tags", "vip, lead, vip", ["lead", "vip"]),
        ("do_not_disturb", "yes", True),
        ("do_not_disturb", "false", False),
        ("custom.plan", "gold", "gold"),
        ("last_name", "null", None),
    ],
)
def test_typed_values_become_the_fields_canonical_json(field: str, text: str, value: object) -> None:
    assert parse_field_value(field, text) == value


@pytest.mark.parametrize(
    ("field", "text", "reason"),
    [
        ("address.city", '{"a": [1, 2]}', "expects a text value, found a mapping"),
        ("address.city", "[1, 2]", "found a list"),
        ("emails", "not-an-email", "emails"),
        ("phones", "12", "phones"),
        ("do_not_disturb", "maybe", "true or false"),
        ("tags", '{"a": 1}', "found a mapping"),
        ("identities", "nocolon", "identities expects"),
        ("no_such_field", "x", "not a canonical field"),
    ],
)
def test_values_that_do_not_fit_the_field_are_refused(field: str, text: str, reason: str) -> None:
    with pytest.raises(FieldValueError, match=re.escape(reason)):
        parse_field_value(field, text)


def test_the_cli_refuses_a_mapping_for_a_text_field_and_writes_nothing(world: World) -> None:
    cid = scenarios.conflict(world)
    before = world.store.operator.conflict(cid)
    out = runner.invoke(
        cli, ["conflicts", "-c", str(world.config_path), "--resolve", str(cid), "--value", '{"a": [1,2]}']
    )
    assert out.exit_code == 2, out.output
    assert "expects a text value, found a mapping" in out.output
    assert world.store.operator.conflict(cid) == before
    ok = runner.invoke(cli, ["conflicts", "-c", str(world.config_path), "--resolve", str(cid), "--value", "Byron"])
    assert ok.exit_code == 0, ok.output
    assert world.store.operator.conflict(cid).decision == "Byron"


def test_the_page_refuses_a_bad_typed_value_with_the_reason(world: World) -> None:
    cid = scenarios.conflict(world)
    c = client(world)
    c.headers["Authorization"] = f"Bearer {TOKEN}"
    page = c.get("/conflicts")
    assert page.status_code == 200
    r = c.post(
        f"/conflicts/{cid}/resolve",
        data={"csrf": csrf_of(page.text), "choice": "typed", "value": '{"a": [1,2]}'},
        follow_redirects=True,
    )
    assert "expects a text value, found a mapping" in r.text
    assert world.store.operator.conflict(cid).rule != "manual"


# -- authentication ---------------------------------------------------------------------------


def test_off_loopback_without_a_token_the_page_is_refused(world: World) -> None:
    c = client(world, token=None)
    r = c.get("/")
    assert r.status_code == 403 and "auth_token" in r.text
    assert client(world, token=None, loopback=True).get("/").status_code == 200


def test_with_a_token_every_page_needs_it(world: World) -> None:
    c = client(world)
    for path in ("/", "/failures", "/conflicts", "/review", "/persons", "/persons/1"):
        r = c.get(path, follow_redirects=False)
        assert r.status_code == 303 and "/login" in r.headers["location"], path
    assert c.post("/deletes/approve", data={}).status_code == 401
    # Even from loopback, once a token is configured.
    assert client(world, loopback=True).get("/", follow_redirects=False).status_code == 303
    c.headers["Authorization"] = "Bearer wrong"
    assert c.get("/", follow_redirects=False).status_code == 303
    c.headers["Authorization"] = f"Bearer {TOKEN}"
    assert c.get("/").status_code == 200


def test_the_login_form_sets_a_session_that_is_not_the_token(world: World) -> None:
    c = client(world)
    form = c.get("/login")
    bad = c.post(
        "/login", data={"csrf": csrf_of(form.text), "token": "nope", "next": "/review"}, follow_redirects=False
    )
    assert bad.status_code == 401
    ok = c.post("/login", data={"csrf": csrf_of(form.text), "token": TOKEN, "next": "/review"}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/review"
    session = c.cookies.get("contactsync_session")
    assert session and TOKEN not in session
    assert c.get("/review").status_code == 200
    # An open redirect is not offered.
    again = c.post(
        "/login", data={"csrf": csrf_of(form.text), "token": TOKEN, "next": "//evil.example"}, follow_redirects=False
    )
    assert again.headers["location"] == "/"


# -- CSRF ---------------------------------------------------------------------------------------


def test_posts_without_the_csrf_token_are_refused_and_change_nothing(world: World) -> None:
    scenarios.shared_phone(world)
    (failed,) = world.store.outbox.items([OutboxStatus.FAILED.value])
    c = client(world)
    c.headers["Authorization"] = f"Bearer {TOKEN}"
    page = c.get("/failures")
    assert page.status_code == 200 and f"write-{failed.id}" in page.text
    assert c.post(f"/failures/{failed.id}/retry", data={}).status_code == 403
    assert c.post(f"/failures/{failed.id}/retry", data={"csrf": "0" * 64}).status_code == 403
    # A token from another browser (another CSRF cookie) does not pass either.
    token = csrf_of(page.text)
    other = client(world)
    other.headers["Authorization"] = f"Bearer {TOKEN}"
    other.get("/failures")
    assert other.cookies.get(CSRF_COOKIE) != c.cookies.get(CSRF_COOKIE)
    assert other.post(f"/failures/{failed.id}/retry", data={"csrf": token}).status_code == 403
    assert world.store.outbox.get(failed.id).status == OutboxStatus.FAILED.value  # type: ignore[union-attr]
    ok = c.post(f"/failures/{failed.id}/retry", data={"csrf": token}, follow_redirects=True)
    assert ok.status_code == 200 and f"write #{failed.id} queued" in ok.text
    assert world.store.outbox.get(failed.id).status == OutboxStatus.PENDING.value  # type: ignore[union-attr]


def test_every_form_on_every_page_carries_the_csrf_field(world: World) -> None:
    scenarios.shared_phone(world)
    c = client(world, token=None, loopback=True)
    for path in ("/", "/failures", "/conflicts", "/review", "/persons?q=ann@example.com", "/persons/1"):
        html = c.get(path).text
        for form in re.findall(r"<form[^>]*method=\"post\".*?</form>", html, flags=re.S):
            assert 'name="csrf"' in form, (path, form[:200])


# -- credentials ------------------------------------------------------------------------------


def test_no_page_shows_a_credential(world: World) -> None:
    scenarios.shared_phone(world)
    secrets_ = [s for s in world.config.secret_values() if len(s) >= 4]
    assert secrets_
    # A platform that echoed a credential into its error message.
    (failed,) = world.store.outbox.items([OutboxStatus.FAILED.value])
    from sync.store import Failure

    world.store.outbox.record(
        failures=[Failure(failed.id, f"401 bad key {secrets_[0]}", status=OutboxStatus.FAILED.value)]
    )
    c = client(world)
    c.headers["Authorization"] = f"Bearer {TOKEN}"
    pids = {i.person_id for i in world.store.outbox.items([OutboxStatus.FAILED.value, OutboxStatus.DONE.value])}
    paths = ["/", "/failures", "/conflicts", "/review", "/persons?q=bob@example.com"] + [
        f"/persons/{p}" for p in pids if p
    ]
    for path in paths:
        html = c.get(path).text
        for s in [*secrets_, TOKEN]:
            assert s not in html, (path, "shows a credential")
    assert "401 bad key ***" in c.get("/failures").text


# -- the review queue and persons through the plain client -----------------------------------


def test_keep_apart_is_stored_and_matching_keeps_following_it(world: World) -> None:
    scenarios.shared_phone(world)
    (review,) = [r for r in world.store.status.reviews() if r.kind == "ambiguous_match"]
    c = client(world, token=None, loopback=True)
    page = c.get("/review")
    r = c.post(
        f"/review/{review.id}/decide", data={"csrf": csrf_of(page.text), "decision": "apart"}, follow_redirects=True
    )
    assert "kept apart for good" in r.text
    assert world.store.operator.decisions() == (frozenset(), frozenset({("phone", "+14155550001")}))
    # Later Bob's email disappears on Acquire: the shared phone alone would now join him to
    # Ann, but the stored decision keeps them apart.
    (bob,) = world.holding("acquire", email=scenarios.BOB[0])
    world.emulators["acquire"].external_edit(str(bob["_raw"]["id"]), {"email": ""})
    world.cycle()
    ann = world.store.operator.search("email", scenarios.ANN[0])
    assert len(ann) == 1
    person = world.store.operator.person(ann[0].person_id)
    assert {r.connection for r in person.records} >= {"ghl"}
    assert not any(r.connection == "acquire" and r.remote_id == str(bob["_raw"]["id"]) for r in person.records)


class _ListsLate(httpx.AsyncBaseTransport):
    """Forwards to ``inner``, answering its platform's contact listing late: the other
    platforms' listings are staged first, so their records get the lower record and person ids."""

    def __init__(self, inner: httpx.AsyncBaseTransport, path: str) -> None:
        self.inner, self.path = inner, path

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.rstrip("/").endswith(self.path) and "search" not in request.url.params:
            await asyncio.sleep(0.2)
        return await self.inner.handle_async_request(request)


@pytest.mark.parametrize(("late", "path"), [("ghl", "/contacts/search"), ("acquire", "/crm/objects/contact")])
def test_link_joins_the_two_whichever_platform_was_staged_first(world: World, late: str, path: str) -> None:
    # The records the answer marks dirty read exactly as their snapshots on the next pull: the
    # echo check must leave them dirty for matching (in one of these orders every one of them
    # is such an echo, and the link was once lost).
    world.engine.transports[late] = _ListsLate(world.emulators[late].transport(), path)
    scenarios.shared_phone(world)
    (review,) = [r for r in world.store.status.reviews() if r.kind == "ambiguous_match"]
    assert world.store.operator.search("email", scenarios.ANN[0])[0].person_id != (
        world.store.operator.search("email", scenarios.BOB[0])[0].person_id
    )
    c = client(world, token=None, loopback=True)
    r = c.post(
        f"/review/{review.id}/decide",
        data={"csrf": csrf_of(c.get("/review").text), "decision": "link"},
        follow_redirects=True,
    )
    assert "linked" in r.text
    world.cycle()
    (ann,) = world.store.operator.search("email", scenarios.ANN[0])
    (bob,) = world.store.operator.search("email", scenarios.BOB[0])
    assert ann.person_id == bob.person_id
    person = world.store.operator.person(ann.person_id)
    assert {r.connection for r in person.records if r.deleted_at is None} >= {"acquire", "ghl"}
    # Later cycles keep them together (the answer, now applied, still steers matching).
    world.emulators["acquire"].external_edit(
        str(world.holding("acquire", email=scenarios.BOB[0])[0]["_raw"]["id"]), {"first_name": "Robert"}
    )
    world.cycle()
    (ann2,) = world.store.operator.search("email", scenarios.ANN[0])
    (bob2,) = world.store.operator.search("email", scenarios.BOB[0])
    assert ann2.person_id == bob2.person_id == ann.person_id


def test_the_cli_person_command_prints_the_person(world: World) -> None:
    scenarios.seed_overlap(world)
    world.backfill()
    out = runner.invoke(cli, ["person", "ADA@example.com", "-c", str(world.config_path), "--json"])
    assert out.exit_code == 0, out.output
    import json

    data = json.loads(out.output)
    assert {r["connection"] for r in data["records"]} >= {"acquire", "ghl", "comm100"}
    golden = {g["field"]: g for g in data["golden"]}
    assert golden["last_name"]["value"] == "Lovelace" and golden["last_name"]["why"]
    text = runner.invoke(cli, ["person", str(data["person"]), "-c", str(world.config_path)])
    assert text.exit_code == 0 and "golden record" in text.output
    by_name = runner.invoke(cli, ["person", "lovelace", "-c", str(world.config_path), "--json"])
    assert by_name.exit_code == 0 and json.loads(by_name.output)["person"] == data["person"]
    by_phone = runner.invoke(cli, ["person", "(415) 555-2671", "-c", str(world.config_path), "--json"])
    assert by_phone.exit_code == 0 and json.loads(by_phone.output)["person"] == data["person"]
    missing = runner.invoke(cli, ["person", "nobody@example.com", "-c", str(world.config_path)])
    assert missing.exit_code == 1 and "no person matches" in missing.output


# -- contactsync serve and the web: config section ---------------------------------------------


def test_serve_refuses_to_listen_off_loopback_without_a_token(world: World) -> None:
    out = runner.invoke(cli, ["serve", "-c", str(world.config_path), "--host", "0.0.0.0", "--port", "0"])
    assert out.exit_code == 2, out.output
    assert "web.auth_token" in out.output


def test_serve_runs_the_page_for_a_store_another_process_syncs(world: World) -> None:
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    scenarios.seed_overlap(world)
    world.backfill()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CONTACTSYNC_DATABASE_URL": world.store.url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sync.cli", "serve", "-c", str(world.config_path), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/persons?q=ada@example.com", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(
                        proc.stderr.read().decode() if proc.stderr else "serve did not start"
                    ) from None
                time.sleep(0.2)
        assert r.status_code == 200 and "Lovelace" in r.text
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_web_token_is_a_secret_of_the_config(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sync.config import load_config, summarize

    monkeypatch.setenv("CS_WEB_TOKEN", "s3cret-web-token")
    path = tmp_path / "c.yaml"
    path.write_text(
        "connections:\n  acq:\n    platform: acquire\n    base_url: http://127.0.0.1:1\n"
        "    credentials: {api_key: '${CS_KEY:-k-123456}'}\n"
        "web:\n  auth_token: ${CS_WEB_TOKEN}\n"
    )
    config = load_config(path)
    assert config.web.auth_token is not None and config.web.auth_token.get_secret_value() == "s3cret-web-token"
    assert "s3cret-web-token" in config.secret_values()
    assert "s3cret-web-token" not in summarize(config) and "s3cret-web-token" not in repr(config)


def test_picking_a_candidate_resolves_with_its_value_and_the_person_page_says_why(world: World) -> None:
    cid = scenarios.conflict(world)
    row = world.store.operator.conflict(cid)
    older = next(i for i, c in enumerate(row.candidates) if c["value"] == "Older")
    c = client(world, token=None, loopback=True)
    page = c.get("/conflicts")
    r = c.post(
        f"/conflicts/{cid}/resolve",
        data={"csrf": csrf_of(page.text), "choice": f"candidate:{older}"},
        follow_redirects=True,
    )
    assert "last_name = Older" in r.text
    done = world.store.operator.conflict(cid)
    assert (done.decision, done.rule) == ("Older", "manual")
    person = c.get(f"/persons/{row.person_id}").text
    assert f"conflict #{cid} resolved by web" in person


def test_skip_gives_a_failed_write_up(world: World) -> None:
    scenarios.shared_phone(world)
    (failed,) = world.store.outbox.items([OutboxStatus.FAILED.value])
    c = client(world, token=None, loopback=True)
    page = c.get("/failures")
    r = c.post(f"/failures/{failed.id}/skip", data={"csrf": csrf_of(page.text)}, follow_redirects=True)
    assert f"write #{failed.id} skipped" in r.text and f"write-{failed.id}" not in r.text
    assert world.store.outbox.get(failed.id).status == OutboxStatus.SKIPPED.value  # type: ignore[union-attr]
    # Skipping twice (or retrying a skipped write) says why it cannot.
    again = c.post(f"/failures/{failed.id}/retry", data={"csrf": csrf_of(page.text)}, follow_redirects=True)
    assert "is skipped, not failed" in again.text
