"""The page in a real browser: Debian's Chromium driven by Playwright (sync API, headless)
against the page served by uvicorn on a loopback port, over the test's store and the World's
emulators. Each test saves screenshots under test-artifacts/screenshots/ (git-ignored)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from sync.cycle import CycleReport
from sync.store.models import OutboxStatus
from tests.e2e.world import World

from . import scenarios
from .conftest import TOKEN, Served, with_token

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium; .ci/run installs it)"
)
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"

if CHROMIUM is not None:
    from playwright.sync_api import Browser, Page, expect, sync_playwright


class BrowserWorld(World):
    """A World whose cycles run in a thread of their own: Playwright's sync API keeps an event
    loop running in the test's thread, where the engine's ``asyncio.run`` cannot start one."""

    def cycle(self, **kwargs: Any) -> CycleReport:
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(World.cycle, self, **kwargs).result()


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    w = BrowserWorld(db_url, tmp_path, extra={"deletes": {"policy": "propagate"}})
    yield w
    w.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.set_default_timeout(15_000)
    yield p
    context.close()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_resolve_a_conflict_and_see_the_value_on_every_emulator(world: World, served: Served, page: Page) -> None:
    cid = scenarios.conflict(world)
    page.goto(f"{served.url}/conflicts")
    card = page.locator(f"#conflict-{cid}")
    expect(card).to_contain_text("Newer")
    expect(card).to_contain_text("Older")  # every competing value, with its source
    shot(page, "conflicts")
    card.locator("input[type=radio][value=typed]").check()
    card.locator("input[name=value]").fill('{"a": [1,2]}')  # refused: not a text value
    card.get_by_role("button", name="Use this value").click()
    expect(page.get_by_role("alert")).to_contain_text("expects a text value, found a mapping")
    card = page.locator(f"#conflict-{cid}")
    card.locator("input[type=radio][value=typed]").check()
    card.locator("input[name=value]").fill("Byron")
    card.get_by_role("button", name="Use this value").click()
    expect(page.get_by_role("status")).to_contain_text(f"conflict #{cid} resolved: last_name = Byron")
    shot(page, "conflicts-resolved")
    world.converge()
    seen = 0
    for name in ("acquire", "ghl", "comm100", "dmchamp"):
        for contact in world.holding(name, email=scenarios.ADA, phone="+14155552671"):
            if "last_name" in world.config.mapping(name).readable:
                assert contact["last_name"] == "Byron", name
                seen += 1
    assert seen >= 3


def test_retry_a_failed_write(world: World, served: Served, page: Page) -> None:
    scenarios.shared_phone(world)
    (failed,) = world.store.outbox.items([OutboxStatus.FAILED.value])
    page.goto(f"{served.url}/failures")
    row = page.locator(f"#write-{failed.id}")
    expect(row).to_contain_text("already person")  # the platform's message
    expect(page.get_by_role("heading", name="Excluded records")).to_be_visible()
    shot(page, "failures")
    # The cause goes away on the platform (Ann's number changes), then the operator retries.
    (ann,) = world.holding("ghl", email=scenarios.ANN[0])
    world.emulators["ghl"].external_edit(str(ann["_raw"]["id"]), {"phone": "+14155550002"})
    row.get_by_role("button", name="Retry now").click()
    expect(page.get_by_role("status")).to_contain_text(f"write #{failed.id} queued")
    assert world.store.outbox.get(failed.id).status == OutboxStatus.PENDING.value  # type: ignore[union-attr]
    world.converge()
    assert len(world.holding("ghl", email=scenarios.BOB[0])) == 1
    page.goto(f"{served.url}/failures")
    expect(page.locator(f"#write-{failed.id}")).to_have_count(0)


def test_approve_held_deletes(world: World, served: Served, page: Page) -> None:
    held = scenarios.held_deletes(world)
    before = len(world.contacts("ghl"))
    page.goto(f"{served.url}/review")
    section = page.locator("#held-acquire")
    expect(section).to_contain_text(f"{held} deletes held")
    shot(page, "review-held-deletes")
    section.get_by_role("button", name="Approve deletes").click()
    expect(page.get_by_role("status")).to_contain_text(f"acquire: {held} records marked deleted")
    assert world.store.held.counts() == {}
    world.cycle()
    assert len(world.contacts("ghl")) == before - held  # deletes.policy: propagate


def test_link_an_ambiguous_match(world: World, served: Served, page: Page) -> None:
    scenarios.shared_phone(world)
    (review,) = [r for r in world.store.status.reviews() if r.kind == "ambiguous_match"]
    ann = world.store.operator.search("email", scenarios.ANN[0])[0].person_id
    bob = world.store.operator.search("email", scenarios.BOB[0])[0].person_id
    assert ann != bob
    page.goto(f"{served.url}/review")
    card = page.locator(f"#review-{review.id}")
    expect(card).to_contain_text("phone:+14155550001")
    expect(card).to_contain_text("ann@example.com")  # who the records belong to now
    expect(card).to_contain_text("bob@example.com")
    shot(page, "review")
    card.get_by_role("button", name="Link: one person").click()
    expect(page.get_by_role("status")).to_contain_text("linked")
    assert world.store.operator.decisions()[0] == frozenset({("phone", "+14155550001")})
    world.cycle()
    (a,) = world.store.operator.search("email", scenarios.ANN[0])
    (b,) = world.store.operator.search("email", scenarios.BOB[0])
    assert a.person_id == b.person_id  # matching followed the stored decision
    page.goto(f"{served.url}/persons/{a.person_id}")
    expect(page.locator("#records")).to_contain_text("acquire")
    expect(page.locator("#records")).to_contain_text("ghl")
    shot(page, "person-linked")


def test_find_a_person_by_email_after_signing_in(world: World, page: Page) -> None:
    scenarios.seed_overlap(world)
    world.backfill()
    world.converge()
    served = Served(world, with_token(world.config))
    try:
        page.goto(f"{served.url}/")
        expect(page).to_have_url(f"{served.url}/login?next=%2F")
        shot(page, "login")
        page.get_by_label("Token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#profile-default")).to_contain_text("acquire")
        expect(page.locator("#profile-default svg rect").first).to_be_attached()
        shot(page, "overview")
        page.get_by_role("link", name="Failures").click()
        expect(page.locator("#excluded")).to_contain_text("dmchamp")  # Alan has no phone: excluded there, with why
        shot(page, "failures-excluded")
        page.get_by_role("link", name="Persons").click()
        page.get_by_label("search").fill("ADA@example.com")
        page.get_by_role("button", name="Search").click()
        hits = page.locator("#hits")
        expect(hits).to_contain_text("Lovelace")
        shot(page, "persons-search")
        hits.get_by_role("link").first.click()
        expect(page.locator("#golden")).to_contain_text("Lovelace")
        for name in ("acquire", "ghl", "comm100"):
            expect(page.locator("#records")).to_contain_text(name)
        expect(page.locator("#writes")).to_be_visible()
        shot(page, "person")
        assert TOKEN not in page.content()
    finally:
        served.stop()
