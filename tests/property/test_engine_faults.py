"""Convergence under faults, as a hypothesis state machine over the real engine (issue 14).

The World of tests/e2e (the four emulators over real HTTP in process, a config, a real store
and a CycleRunner) is driven by random steps:

* outside edits (last name, city; a fresh value each time), creates on a readable platform
  (Acquire, GoHighLevel, Comm100; DM Champ is lookup-only) and deletes (Acquire, Comm100), each
  a little later on every platform's clock;
* faults on a platform, set by a rule or drawn with a cycle: writes answered 503 or 422, writes
  refused (platform down: deferred to a later run), writes applied with the response lost, a
  crash mid-push (its due rows left in flight and a fresh CycleRunner on the same store, as
  after a kill -9; the writes either never sent or landed without their answer) -- a write
  fault lasts until it has met a write -- and a partial or empty listing on the pull (one
  cycle);
* a cycle;
* a manual resolution of a recorded conflict (``conflicts.resolve``, the CLI's path), with a
  new value;
* the held deletes approved or rejected (the delete breaker holds most deletes of a small
  account: a held delete is not a loss).

At the end of every example the faults are cleared, the engine restarted, the held deletes
approved, and clean cycles run until one makes no write call (at most 8). Then:

* the final cycle is quiet (zero write calls) and nothing is left pending or in flight;
* no duplicate: each person is exactly one contact on every platform that should hold it, and
  each platform holds exactly that many contacts;
* no unintended delete: ``deletes: ignore``, so a person deleted on one platform is on every
  other (and not re-created where it was deleted); nobody else is missing anywhere;
* no permanent disagreement: every platform holds the same value of each checked field;
* no lost edit: that value is the model's (the last outside edit, or a later manual
  resolution), unless a conflict row recorded after that edit, with it among its candidates,
  says why another value won (``newest`` compares record times: a later edit of another field
  on the other platform makes that record newer).

Findings of this machine are kept as plain tests at the end of this file, each with the
steps that found it and what was fixed: an unseen outside edit overwritten (search lag, a
short listing), a GoHighLevel contact deleted outside never seen, a failed create dropped
after a delete at its origin. The machine no longer keeps clear of any of them.

Long runs (SQLite, 500 examples per seed, CONTACTSYNC_HYPOTHESIS_SHRINK=0, three processes at
nice 10 on a shared 2-core machine, 2026-12-06): on commit 3cc6b0b seeds 25-32, 45, 47, 49 ran
6,371 examples with no counterexample (10-12 min per seed); seed 51 found one after 349 (two
hidden edits, test_two_edits_seen_late_...), fixed in the next commit. Earlier commits' runs
(seeds 1, 2, 21, 22, 41, 103 and the previous machine file's seed 103) found the findings whose
tests follow; their examples are not counted here. Seed 72 (commit ddfdd6b) found one after 59:
a delete held after a short Acquire listing and approved, the contact listed again later and
marked clean as an echo, its person never planned again (Acquire kept an old last name); kept
as tests/faults/test_deletes.py::test_a_delete_approved_after_a_short_listing_..., fixed in
ee646bf. After the fix (one process at a time, nice 10): seeds 72, 74-76 at 300 examples and
77-79 at 700 ran 3,819 examples with no counterexample. After the merge of that fix with the
planner, Comm100-read and real-time branches (1ba49b4): seeds 81, 82, 1,643 examples; on the
code of 8ba521e (conflicts a side cannot take left for review; prompt prefetched scans vouch):
seeds 83-85, 3,092 examples — none with a counterexample.

CI runs a small derandomized budget (15 examples). A long randomized run, outside CI (one
process per seed; CONTACTSYNC_HYPOTHESIS_SHRINK=0 reports the first counterexample as found,
CONTACTSYNC_HYPOTHESIS_PROGRESS=FILE appends one line per finished example)::

    CONTACTSYNC_HYPOTHESIS_PROFILE=long CONTACTSYNC_HYPOTHESIS_EXAMPLES=1000 \\
        python -m pytest -q -s tests/property/test_engine_faults.py -p no:cacheprovider \\
        -k converges --hypothesis-seed=1
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import e2e.world as world_module
import httpx
import pytest
from e2e.world import World  # tests/ is on sys.path (rootdir-relative packages)
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)
from rich.console import Console
from sqlalchemy import text

from sync.apply import Backoff
from sync.commands import conflicts as conflicts_cmd
from sync.config import load_config
from sync.cycle import CycleRunner
from sync.store.models import Base, OutboxStatus

READABLE = ("acquire", "ghl", "comm100")
PLATFORMS = ("acquire", "ghl", "comm100", "dmchamp")
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Byron", "King"]
CITIES = ["London", "Paris", "Boston", "Austin", "Berlin"]
FIELDS = ("last_name", "city")
#: which checked fields each platform holds
HOLDS = {"acquire": FIELDS, "ghl": FIELDS, "comm100": FIELDS, "dmchamp": ("last_name",)}
MAX_PEOPLE = 6
CONVERGE_CYCLES = 8
#: Platforms an outside delete is made on. GoHighLevel's pull (a search by dateUpdated) never
#: sees a delete: the engine learns of it when an update finds the contact gone.
DELETABLE = READABLE
WRITE_FAULTS = ("503", "422", "down", "lose", "crash", "crash_landed")
SCAN_FAULTS = ("partial", "empty")

#: Listing requests of each platform's pull (not its lookups, which share the paths).
LISTINGS = {
    "acquire": ("GET", "/crm/objects/contact", lambda r: "search" not in r.url.params),
    "ghl": ("POST", "/contacts/search", lambda r: True),
    "comm100": (
        "GET",
        "/global/contacts",
        lambda r: "contactIdentityValue" not in r.url.params and r.url.params.get("sortBy") != "createTime",
    ),
}


def is_write(request: httpx.Request) -> bool:
    return request.method in ("POST", "PUT", "PATCH", "DELETE") and "search" not in request.url.path


class Faulty(httpx.AsyncBaseTransport):
    """In front of one emulator: ``mode`` (None or one of WRITE_FAULTS / SCAN_FAULTS) picks what
    goes wrong while it is set."""

    def __init__(self, name: str, inner: httpx.AsyncBaseTransport) -> None:
        self.name = name
        self.inner = inner
        self.mode: str | None = None
        self.writes = 0

    def _is_listing(self, request: httpx.Request) -> bool:
        if self.name not in LISTINGS:
            return False
        method, path, when = LISTINGS[self.name]
        return request.method == method and request.url.path.rstrip("/").endswith(path) and when(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        mode = self.mode
        write = is_write(request)
        if write:
            self.writes += 1
        if write and mode in ("503", "422"):
            body = {"statusCode": int(mode), "message": ["refused by the test"], "error": "test"}
            return httpx.Response(int(mode), json=body, request=request)
        if write and mode in ("down", "crash"):
            raise httpx.ConnectError("platform down (test)", request=request)
        response = await self.inner.handle_async_request(request)
        if write and mode in ("lose", "crash_landed"):
            await response.aread()
            raise httpx.ReadError("response lost (test)", request=request)
        if mode in SCAN_FAULTS and self._is_listing(request) and response.status_code == 200:
            await response.aread()
            body = json.loads(response.content)
            _truncate(self.name, body, mode)
            headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-length"]
            return httpx.Response(200, headers=headers, content=json.dumps(body).encode(), request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def _truncate(name: str, body: Any, mode: str) -> None:
    """A listing that lies: half its items (or none) with a count that agrees."""

    def cut(items: list[Any]) -> list[Any]:
        return [] if mode == "empty" else items[: len(items) // 2]

    if name == "acquire":
        data = body["data"]
        data["list"] = cut(data.get("list") or [])
        data.setdefault("counts", {})["filteredCount"] = len(data["list"])
    else:
        body["contacts"] = cut(body.get("contacts") or [])
        body["total"] = len(body["contacts"])
        if name == "comm100":
            body["nextPage"] = None


# -- per-example stores ------------------------------------------------------------------------

#: How often each fault met a write, over a whole run (printed at its end; see with ``-s``).
EVENTS: Counter[str] = Counter()
_STORE: dict[str, Any] = {}  # set by the test function: how to make a fresh store


def fresh_store(workdir: Path) -> str:
    if _STORE["kind"] == "postgresql":
        engine = _STORE["engine"]
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        return str(_STORE["url"])
    path = workdir / "store.db"
    shutil.copyfile(_STORE["template"], path)
    return f"sqlite:///{path}"


_CONFIGS: dict[str, Any] = {}


def _cached_load_config(path: Path) -> Any:
    """``load_config`` once per distinct config (its text and its secret files): parsing and
    checking the mappings costs about a tenth of an example, and every example writes the same."""
    secrets = sorted((path.parent / "secrets").glob("*")) if (path.parent / "secrets").is_dir() else []
    key = path.read_text() + "".join(f"\n{p.name}={p.read_text()}" for p in secrets)
    if key not in _CONFIGS:
        _CONFIGS[key] = load_config(path)
    return _CONFIGS[key]


# -- the machine --------------------------------------------------------------------------------


class Person:
    def __init__(self, index: int, first: str, last: str, city: str) -> None:
        self.index = index
        self.email = f"p{index}@hyp.example"
        self.phone = f"+1415555{index:04d}"
        self.first = first
        self.values: dict[str, str] = {"last_name": last, "city": city}
        self.edit_mark: dict[str, int] = {"last_name": 0, "city": 0}  # max conflict id at the last edit
        self.unseen: dict[str, set[str]] = {"last_name": set(), "city": set()}  # platforms edited since a pull
        self.deleted_on: str | None = None  # deleted there by an outside hand (deletes: ignore)
        self.created_on = "acquire"
        # Has a pull of ``created_on`` seen it: "yes", "maybe" (only a partial listing ran), "no".
        self.pulled = "yes"
        # Fields whose last edit was made where the contact was then deleted, before a pull saw
        # it: that edit went with the contact; any value will do, as long as all agree.
        self.loose: set[str] = set()
        self.vanished = "no"  # deleted where it was made before any pull: "yes", "maybe", "no"
        # Deleted (``deleted_on``) where the engine never knew its contact: a create whose answer
        # was lost, deleted before any pull or lookup found it. Nothing can tell the engine it
        # ever landed, so it may be created there again (then checked like any other).
        self.deleted_unknown = False


class EngineFaults(RuleBasedStateMachine):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        # One directory per test, emptied for each example: the same store path and config
        # text every time, so the config is parsed once (see _cached_load_config).
        self.workdir = Path(_STORE["tmp"]) / "example"
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        self.world = World(fresh_store(self.workdir), self.workdir)
        self.people: list[Person] = []
        self.faults: dict[str, str] = {}
        self.log: list[str] = []
        self.serial = 0
        self.engine = self._runner()

    # -- plumbing

    def _runner(self) -> CycleRunner:
        """A fresh CycleRunner on the world's store (as after a restart), faults in front."""
        self.transports = {n: Faulty(n, e.transport()) for n, e in self.world.emulators.items()}
        engine = CycleRunner(
            self.world.config,
            self.world.store,
            transports=self.transports,
            settings={n: {"max_retries": 0} for n in self.world.emulators},
            backoff=Backoff(base_s=0.0),
            prefetch=True,  # as the daemon runs it: listings read before the turn
        )
        self.world.engine = engine
        return engine

    def _tick(self, seconds: float = 5.0) -> None:
        for emu in self.world.emulators.values():
            emu.clock.advance(seconds)

    def _run(self) -> Any:
        report = self.engine.run("default")
        assert report.status in ("ok", "partial"), report.error
        return report

    def _max_conflict_id(self) -> int:
        rows = self.world.store.status.conflicts(limit=1)
        return rows[0].id if rows else 0

    def _find(self, name: str, person: Person) -> list[dict[str, Any]]:
        if name == "dmchamp":
            return self.world.holding(name, phone=person.phone)
        return self.world.holding(name, email=person.email)

    def _fresh(self, base: str) -> str:
        """A value never used before: an edit that writes back an older value (A to B to A
        between two pulls) is no change to a state-based sync, and not what this test asks."""
        self.serial += 1
        n, suffix = self.serial, ""
        while n:
            n, r = divmod(n - 1, 26)
            suffix = chr(ord("a") + r) + suffix
        return base + suffix

    def _add(self, platform: str, first: str, last: str, city: str) -> Person:
        person = Person(len(self.people), first, last, city)
        self.world.emulators[platform].seed(
            [{"first_name": first, "last_name": last, "email": person.email, "phone": person.phone, "city": city}]
        )
        self.people.append(person)
        return person

    # -- steps

    @initialize(
        people=st.lists(
            st.tuples(st.sampled_from(FIRST), st.sampled_from(LAST), st.sampled_from(CITIES)), min_size=1, max_size=3
        )
    )
    def start(self, people: list[tuple[str, str, str]]) -> None:
        for first, last, city in people:
            self._add("acquire", first, last, city)
        report = self.engine.run("default", kind="backfill", full=True)
        assert report.status == "ok", report.error
        # No converging here: the backfill wrote everywhere; the next cycle (a step, or the
        # checks at the end) reads those writes back, faults and all.
        self.log.append(f"start {people}")

    @precondition(lambda self: len(self.people) < MAX_PEOPLE)
    @rule(
        platform=st.sampled_from(READABLE),
        first=st.sampled_from(FIRST),
        last=st.sampled_from(LAST),
        city=st.sampled_from(CITIES),
    )
    def outside_create(self, platform: str, first: str, last: str, city: str) -> None:
        self._tick()
        person = self._add(platform, first, last, city)
        person.created_on, person.pulled = platform, "no"
        for f in FIELDS:
            person.unseen[f].add(platform)
        self.log.append(f"create p{person.index} on {platform}")

    @rule(data=st.data(), platform=st.sampled_from(READABLE), field=st.sampled_from(FIELDS))
    def outside_edit(self, data: st.DataObject, platform: str, field: str) -> None:
        person = data.draw(st.sampled_from(self.people), label="person")
        found = self._find(platform, person)
        if len(found) != 1:  # not there yet (its create is pending): nothing to edit
            return
        value = self._fresh(data.draw(st.sampled_from(LAST if field == "last_name" else CITIES), label="value"))
        current = found[0]
        rid = str(current["_raw"]["id"])
        first = current.get("first_name") or person.first
        if field == "last_name":
            changes: dict[str, Any] = {
                "acquire": {"fields": {"name": f"{first} {value}"}},
                "ghl": {"lastName": value},
                "comm100": {"lastName": value, "name": f"{first} {value}"},
            }[platform]
        else:
            changes = {"acquire": {"fields": {"city": value}}, "ghl": {"city": value}, "comm100": {"city": value}}[
                platform
            ]
        self._tick()
        self.world.emulators[platform].external_edit(rid, changes)
        person.values[field] = value
        person.edit_mark[field] = self._max_conflict_id()
        person.unseen[field].add(platform)
        person.loose.discard(field)
        self.log.append(f"edit p{person.index}.{field}={value} on {platform}")

    @rule(
        data=st.data(),
        edits=st.lists(st.tuples(st.sampled_from(READABLE), st.sampled_from(FIELDS)), min_size=2, max_size=3),
    )
    def outside_edits(self, data: st.DataObject, edits: list[tuple[str, str]]) -> None:
        """A few edits at once (agents at work between two cycles): most cycles then have writes
        for the faults to meet."""
        for platform, field in edits:
            self.outside_edit(data, platform, field)

    @precondition(lambda self: any(p.deleted_on is None for p in self.people))
    @rule(data=st.data(), platform=st.sampled_from(DELETABLE))
    def outside_delete(self, data: st.DataObject, platform: str) -> None:
        person = data.draw(st.sampled_from([p for p in self.people if p.deleted_on is None]), label="person")
        found = self._find(platform, person)
        if len(found) != 1:
            return
        rid = str(found[0]["_raw"]["id"])
        person.deleted_unknown = self.world.store.outbox.owner(platform, rid) is None
        self._tick()
        emu: Any = self.world.emulators[platform]
        if platform == "acquire":
            emu.state.delete(int(rid))
        elif platform == "comm100":
            emu.state.delete(rid)
        else:  # GoHighLevel's own delete handler, without the request
            contact = emu.contacts.pop(rid)
            emu._emails.drop(rid)
            emu._phones.drop(rid)
            emu.deleted[rid] = contact
            emu._index(rid, None)
        person.deleted_on = platform
        EVENTS[f"outside delete on {platform}"] += 1
        person.loose |= {f for f in FIELDS if platform in person.unseen[f]}
        if platform == person.created_on and person.pulled != "yes":
            person.vanished = "yes" if person.pulled == "no" else "maybe"
        self.log.append(f"delete p{person.index} on {platform}")

    @rule(approve=st.booleans())
    def review_held_deletes(self, approve: bool) -> None:
        held = self.world.store.held
        done = held.approve() if approve else held.reject()
        if any(done.values()):
            EVENTS[f"held deletes {'approved' if approve else 'rejected'}"] += 1
            self.log.append(f"held deletes {'approved' if approve else 'rejected'}: {done}")

    @rule(platform=st.sampled_from(PLATFORMS), mode=st.sampled_from(WRITE_FAULTS))
    def write_fault(self, platform: str, mode: str) -> None:
        """Writes to ``platform`` go wrong from the next cycle until a cycle has met one."""
        self.faults[platform] = mode
        self.log.append(f"fault {platform}: {mode}")

    @rule(platform=st.sampled_from(READABLE), mode=st.sampled_from(SCAN_FAULTS))
    def scan_fault(self, platform: str, mode: str) -> None:
        self.faults[platform] = mode
        self.log.append(f"fault {platform}: {mode}")

    @rule(more=st.dictionaries(st.sampled_from(PLATFORMS), st.sampled_from(WRITE_FAULTS + SCAN_FAULTS), max_size=2))
    def cycle(self, more: dict[str, str] | None = None) -> None:
        """A cycle, with the faults set before it and ``more`` (drawn with it: most cycles of an
        example meet some fault)."""
        for name, mode in (more or {}).items():
            if name == "dmchamp" and mode in SCAN_FAULTS:
                continue  # lookup only: no listing to tamper with
            self.faults.setdefault(name, mode)
        for name, t in self.transports.items():
            t.mode = self.faults.get(name)
            t.writes = 0
        self._tick(1.0)
        self._run()
        for name, mode in self.faults.items():
            if mode in WRITE_FAULTS:  # --hypothesis-show-statistics: how often a fault met a write
                label = f"{mode} met {'a write' if self.transports[name].writes else 'no write'}"
                if currently_in_test_context():  # not when a test calls the rules by hand
                    event(label)
                EVENTS[label] += 1
        met = {n for n in self.faults if self.transports[n].writes}
        crashed = [n for n, m in self.faults.items() if m in ("crash", "crash_landed") and n in met]
        # A write fault that met no write waits for the next cycle (a scan fault lasts one).
        keep = {n: m for n, m in self.faults.items() if m in WRITE_FAULTS and n not in met}
        for person in self.people:
            fault = self.faults.get(person.created_on)
            if fault not in SCAN_FAULTS:
                person.pulled = "yes"
            elif fault == "partial" and person.pulled == "no":
                person.pulled = "maybe"
            for f in FIELDS:
                # Seen by this cycle's pull unless that platform's listing was tampered with.
                person.unseen[f] = {p for p in person.unseen[f] if self.faults.get(p) in SCAN_FAULTS}
        self.log.append(f"cycle {dict(self.faults)}")
        self.faults = keep
        for t in self.transports.values():
            t.mode = None
        if crashed:
            # kill -9 between the claim and the call: the platform's due rows are left in flight
            # (the writes never sent, or sent and landed without their answer); a new process.
            for name in crashed:
                rows = self.world.store.outbox.due(name)
                self.world.store.outbox.mark_in_flight([i.id for i in rows])
            self.engine = self._runner()
            EVENTS["restart after a crash"] += 1

    @rule(data=st.data())
    def resolve_conflict(self, data: st.DataObject) -> None:
        rows = [
            r
            for r in self.world.store.status.conflicts(limit=1000)
            if r.resolved_at is None and r.field in ("last_name", "address.city")
        ]
        if not rows:
            return
        row = data.draw(st.sampled_from(rows), label="conflict")
        field = "last_name" if row.field == "last_name" else "city"
        (view,) = self.world.store.persons.load_person_views([row.person_id])
        emails = set(view.golden.get("emails") or ())
        owners = [p for p in self.people if p.email in emails]
        if len(owners) != 1 or owners[0].unseen[field]:
            return  # an edit not pulled yet: which one is newer is not a question for this test
        person = owners[0]
        value = self._fresh(data.draw(st.sampled_from(LAST if field == "last_name" else CITIES), label="value"))
        # The CLI's path (`contactsync conflicts --resolve ID --value JSON`), on its own store.
        conflicts_cmd.resolve(self.world.config, row.id, value=json.dumps(value), console=Console(quiet=True))
        person.values[field] = value
        person.edit_mark[field] = self._max_conflict_id()
        person.loose.discard(field)
        EVENTS["manual resolution"] += 1
        self.log.append(f"resolve #{row.id} p{person.index}.{field}={value}")

    # -- the end state

    def teardown(self) -> None:
        outcome = "failed"
        try:
            if self.people:
                self._check()
            outcome = "ok"
        finally:
            EVENTS["examples"] += 1
            progress = os.environ.get("CONTACTSYNC_HYPOTHESIS_PROGRESS")
            if progress:
                with open(progress, "a") as fh:
                    fh.write(f"{outcome} {len(self.log)} steps\n")
            self.world.close()
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _check(self) -> None:
        self.faults.clear()
        self.engine = self._runner()
        reports = []
        for i in range(CONVERGE_CYCLES):
            self._tick(1.0)
            reports.append(self._run())
            if i == 0:
                # A held delete is not a loss: a human approves it (deletes: ignore keeps the
                # person everywhere else), and the cycles after carry on.
                approved = self.world.store.held.approve()
                if any(approved.values()):
                    self.log.append(f"teardown: held deletes approved {approved}")
                    continue
            if reports[-1].write_calls() == 0:
                break
        history = "\n  ".join(self.log)
        assert reports[-1].write_calls() == 0, (
            f"no quiet cycle in {CONVERGE_CYCLES}: the last {_brief(reports[-1])}\nsteps:\n  {history}"
        )
        pending = self.world.store.outbox.items(
            [OutboxStatus.PENDING.value, OutboxStatus.IN_FLIGHT.value], connection=None
        )
        conflicts = self.world.store.status.conflicts(limit=10_000)
        problems: list[str] = []
        expected_count = dict.fromkeys(PLATFORMS, 0)
        for person in self.people:
            if person.vanished != "no":
                # Made and deleted on one platform before a pull saw it: nowhere ("yes"), or,
                # when only a partial listing may have seen it, nowhere or as if seen.
                if not any(self._find(name, person) for name in PLATFORMS):
                    continue
                if person.vanished == "yes":
                    problems.append(f"p{person.index} never seen before its delete, yet on some platform")
                    continue
            seen: dict[str, set[Any]] = {f: set() for f in FIELDS}
            for name in PLATFORMS:
                found = self._find(name, person)
                if name == person.deleted_on:
                    if found and not person.deleted_unknown:  # deletes: ignore: never re-created there
                        problems.append(f"{name}: p{person.index} re-created after its delete there")
                    if not (found and person.deleted_unknown):
                        continue
                expected_count[name] += 1
                if len(found) != 1:
                    problems.append(f"{name}: {len(found)} contacts for p{person.index}")
                    continue
                contact = found[0]
                for field in HOLDS[name]:
                    got = contact.get("last_name" if field == "last_name" else "address.city")
                    seen[field].add(got)
                    want = person.values[field]
                    if got == want or field in person.loose:
                        continue
                    # The last edit lost, which only a conflict recorded after it, with that edit
                    # among its candidates, may explain (e.g. newest by record time: a later
                    # edit of another field on the other platform made that record newer).
                    excused = [
                        c
                        for c in conflicts
                        if c.id > person.edit_mark[field]
                        and c.field == ("last_name" if field == "last_name" else "address.city")
                        and person.email in self._golden_emails(c.person_id)
                        # the engine saw the last edit and recorded why another value won
                        and any(cand.get("value") == want for cand in c.candidates)
                    ]
                    if excused and os.environ.get("CONTACTSYNC_HYPOTHESIS_DUMP"):
                        with open(os.environ["CONTACTSYNC_HYPOTHESIS_DUMP"], "a") as fh:
                            fh.write(
                                f"{name} p{person.index}.{field}={got!r} want {want!r} {excused}\n  "
                                + "\n  ".join(self.log)
                                + "\n"
                            )
                    EVENTS["a last edit lost, a conflict row recorded" if excused else "a last edit lost"] += 1
                    if not excused:
                        problems.append(f"{name}: p{person.index}.{field} = {got!r}, expected {want!r}")
            for field, values in seen.items():
                if len(values) > 1:  # permanent disagreement, conflict row or not
                    problems.append(f"p{person.index}.{field} differs between platforms: {sorted(map(str, values))}")
        for name, want_n in expected_count.items():
            n = len(self.world.contacts(name))
            if n != want_n:  # a duplicate without the person's keys, or a contact from nowhere
                problems.append(f"{name}: {n} contacts in all, expected {want_n}")
        if pending:
            problems.append(f"left pending/in flight after converging: {[(i.connection, i.op) for i in pending]}")
        assert not problems, "\n".join(problems) + f"\nsteps:\n  {history}"

    def _golden_emails(self, person_id: int) -> str:
        views = self.world.store.persons.load_person_views([person_id])
        return " ".join(views[0].golden.get("emails") or ()) if views else ""


def _brief(report: Any) -> str:
    """What a cycle planned, sent and failed (the full counts are pages long)."""
    counts = report.counts()
    push = {n: (p.get("calls"), p.get("errors")) for n, p in counts.get("push", {}).items() if p.get("calls")}
    return f"cycle: status {report.status}, plan {counts.get('plan')}, push {push}"


# -- the test -----------------------------------------------------------------------------------

PROFILE = os.environ.get("CONTACTSYNC_HYPOTHESIS_PROFILE", "ci")
#: ``CONTACTSYNC_HYPOTHESIS_SHRINK=0``: report the first counterexample as found (diagnosis)
_PHASES = (
    (Phase.explicit, Phase.reuse, Phase.generate)
    if os.environ.get("CONTACTSYNC_HYPOTHESIS_SHRINK") == "0"
    else tuple(Phase)
)
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
if PROFILE == "long":
    SETTINGS = settings(
        derandomize=False,
        max_examples=int(os.environ.get("CONTACTSYNC_HYPOTHESIS_EXAMPLES", "1000")),
        stateful_step_count=12,
        deadline=None,
        suppress_health_check=_HEALTH,
        database=None,
        phases=_PHASES,
    )
else:
    SETTINGS = settings(
        derandomize=True,
        max_examples=int(os.environ.get("CONTACTSYNC_HYPOTHESIS_EXAMPLES", "15")),
        stateful_step_count=12,
        deadline=None,
        suppress_health_check=_HEALTH,
        database=None,
        phases=_PHASES,
    )


@pytest.fixture
def store_factory(
    request: pytest.FixtureRequest, store_kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    if store_kind == "postgresql":
        _STORE.update(kind="postgresql", engine=request.getfixturevalue("_pg_engine"))
        _STORE["url"] = os.environ["CONTACTSYNC_TEST_DATABASE_URL"]
    else:
        _STORE.update(kind="sqlite", template=request.getfixturevalue("_sqlite_template"))
    _STORE["tmp"] = tmp_path
    monkeypatch.setattr(world_module, "load_config", _cached_load_config)
    _CONFIGS.clear()
    yield
    _STORE.clear()


def test_engine_converges_under_faults(store_factory: None) -> None:
    EVENTS.clear()
    run_state_machine_as_test(EngineFaults, settings=SETTINGS)
    print(f"\nfaults met: {dict(sorted(EVENTS.items()))}")


def test_ghl_outside_delete_then_edit_elsewhere(store_factory: None) -> None:
    """Found by the machine (minimized): Ada and Grace synced everywhere; an agent deletes Ada's
    GoHighLevel contact; a cycle; Ada's last name is edited on Acquire. Expected (deletes:
    ignore): Ada stays on Acquire, Comm100 and DM Champ with the new name, is not re-created on
    GoHighLevel, and the cycles go quiet. It was: every cycle sent PUT /contacts/<Ada's id> to
    GoHighLevel, got 400 "Contact not found", and ended ``partial`` -- for ever. Fixed: the read
    by id before the update (or a "not found" answer, confirmed by one) is evidence of the
    delete; the record is marked deleted and the delete policy decides."""
    machine = EngineFaults()
    try:
        machine.start([("Ada", "Lovelace", "London"), ("Grace", "Hopper", "Paris")])
        ada = machine.people[0]
        machine.outside_delete(_Draws(ada), "ghl")
        machine.cycle()
        machine.outside_edit(_Draws(ada, "Knuth"), "acquire", "last_name")
        machine.cycle()
        machine._check()
    finally:
        machine.world.close()


class _Draws:
    """Stands in for ``st.data()`` when a rule is called by hand: hands out the given values."""

    def __init__(self, *values: Any) -> None:
        self.values = list(values)

    def draw(self, strategy: Any, label: str | None = None) -> Any:
        return self.values.pop(0)


def _alan_with_two_more_on_comm100(machine: EngineFaults) -> Any:
    """Start ``machine`` with Alan synced everywhere and two more people made on Comm100 (so a
    short listing there still lists someone); returns Alan."""
    machine.start([("Alan", "Byron", "Austin")])
    machine.outside_create("comm100", "Donald", "Lovelace", "Berlin")
    machine.outside_create("comm100", "Edsger", "Byron", "Boston")
    return machine.people[0]


@pytest.mark.parametrize("hidden_by", ["search lag", "empty listing"])
def test_hidden_edit_overwritten_by_a_write_planned_without_it(store_factory: None, hidden_by: str) -> None:
    """Found by the machine (minimized): Ada synced everywhere; an agent sets her last name on
    Comm100 ("Byron"), then another on GoHighLevel ("King", 5 s later); the next cycle's pull
    does not see the GoHighLevel edit (its search shows it 30 s late -- the emulator's own
    ``next_search_delay``, GoHighLevel's documented lag -- or the listing comes back empty).
    Expected: "King" everywhere in the end (the newest edit), or a conflict row. It was: the
    cycle PUT "Byron" over "King" on GoHighLevel; every platform ended "Byron", no conflict
    row, the next cycles quiet: the newest edit lost for good. Fixed: where the pull cannot
    vouch for a contact, the update reads it by id first and, finding "King" where it was
    planned against "Lovelace", sends nothing: the read is staged and the person planned again
    (staging then never takes the search's older copy over that read)."""
    machine = EngineFaults()
    try:
        machine.start([("Ada", "Lovelace", "London")])
        ada = machine.people[0]
        machine.outside_edit(_Draws(ada, "Byron"), "comm100", "last_name")
        if hidden_by == "search lag":
            machine.world.emulators["ghl"].next_search_delay = 30.0  # type: ignore[attr-defined]
        machine.outside_edit(_Draws(ada, "King"), "ghl", "last_name")
        if hidden_by == "empty listing":
            machine.faults["ghl"] = "empty"
        machine.cycle()
        machine._check()
    finally:
        machine.world.close()


def test_failed_create_dropped_after_a_delete_at_the_origin(store_factory: None) -> None:
    """Found by the machine's long run (seed 102), minimized (fixed: reconcile planned creates
    only for a person deleted nowhere; under ``ignore``/``tag`` a person deleted on one platform
    is still created where it has never been): Ada and Alan synced everywhere;
    Grace is created on Comm100 by an agent; the next cycle creates her on Acquire and
    GoHighLevel, but DM Champ answers the create 503 (the same with the platform down, or a
    crash); an agent then deletes Grace on Comm100; the delete is held (1 of 3) and approved.
    Expected (deletes: ignore: the person stays on the other platforms): Grace on Acquire,
    GoHighLevel and DM Champ. Actual: DM Champ's failed create is superseded ("the person was
    planned again") and never planned again; DM Champ never gets Grace, the cycles are quiet.
    (With Grace made on Acquire instead, DM Champ does get her.) Seed 101 found the same with
    the delete on a platform the engine had created her on (Comm100) and GoHighLevel's create
    deferred (platform down): GoHighLevel never gets her."""
    machine = EngineFaults()
    try:
        machine.start([("Ada", "Lovelace", "London"), ("Alan", "Turing", "Paris")])
        machine.outside_create("comm100", "Grace", "Hopper", "Boston")
        grace = machine.people[-1]
        machine.faults["dmchamp"] = "503"
        machine.cycle()
        machine.outside_delete(_Draws(grace), "comm100")
        if grace.deleted_on != "comm100":  # not an AssertionError: that is the expected failure
            raise RuntimeError("the delete was not made")
        machine._check()
    finally:
        machine.world.close()


@pytest.mark.parametrize("delete_on_acquire", [False, True])
def test_manual_resolution_not_lost_to_a_landed_write_read_back(store_factory: None, delete_on_acquire: bool) -> None:
    """Found by the machine's long run (seed 103), minimized: Ada synced everywhere; an agent
    sets her city on GoHighLevel ("Paris"), another later on Acquire ("Boston"); the cycle
    records the conflict (newest: "Boston") and writes "Boston" to Comm100, which lands but whose
    answer is lost (the row stays pending); a human resolves the conflict ("Paris" again, a
    fresh value); (the run found it with Ada then deleted on Acquire: the delete is held, then
    approved). Expected: the resolution everywhere Ada is. It was: the next pull read Comm100's
    "Boston" -- our own landed write -- as an edit made there (changed against its snapshot),
    which beat the resolution; every platform ended "Boston". Fixed: a pending update that was
    sent, whose values the pull reads back, is settled as landed (row done, snapshot moved)
    before reconcile (``store.outbox.confirm_landed``)."""
    machine = EngineFaults()
    try:
        machine.start([("Ada", "Lovelace", "London"), ("Alan", "Turing", "Paris")])
        ada = machine.people[0]
        machine.outside_edit(_Draws(ada, "Paris"), "ghl", "city")
        machine.outside_edit(_Draws(ada, "Boston"), "acquire", "city")
        machine.cycle({"comm100": "lose"})
        (row,) = [r for r in machine.world.store.status.conflicts(limit=10) if r.field == "address.city"]
        machine.resolve_conflict(_Draws(row, "Paris"))
        if delete_on_acquire:
            machine.outside_delete(_Draws(ada), "acquire")
        machine._check()
    finally:
        machine.world.close()


@pytest.mark.parametrize("listing", ["partial", "empty"])
def test_outside_edit_hidden_by_a_short_listing_not_lost_behind_an_update_of_another_field(
    store_factory: None, listing: str
) -> None:
    """Found by the machine's long run (seeds 1 and 2, minimized): Alan synced everywhere (with
    two more people made on Comm100); an agent sets his last name on GoHighLevel and, a little
    later, his city on Acquire; the next cycle's Acquire listing comes back short (half of it,
    or empty, with a count that agrees), so the city edit is not seen, while the last name is
    written to Acquire (read first: the last name there is still what it was planned against).
    Expected: the city reaches every platform once Acquire lists it again. It was: Acquire's
    answer to our PUT held the new city, the record was stored with it and the snapshot kept
    the old city, so the record passed for confirmed and every later scan found it unchanged:
    the edit never left Acquire. Fixed: a write whose returned (or just read) contact differs
    from the snapshot in fields it did not write leaves the record dirty for the next plan."""
    machine = EngineFaults()
    try:
        alan = _alan_with_two_more_on_comm100(machine)
        machine.outside_edit(_Draws(alan, "King"), "ghl", "last_name")
        machine.outside_edit(_Draws(alan, "London"), "acquire", "city")
        machine.cycle({"acquire": listing})
        machine._check()
    finally:
        machine.world.close()


@pytest.mark.parametrize("listing", ["partial", "empty"])
def test_comm100_edit_hidden_by_a_short_incremental_listing_is_read_before_an_update(
    store_factory: None, listing: str
) -> None:
    """Comm100's incremental listing vouches for the contacts it did not list (no read before
    an update; the staged contact stands for it in the full-representation PUT) only when it
    went back past its cursor with a total equal to the records the store holds. Alan synced
    everywhere, with two more people on Comm100; an agent sets his city on Comm100, another his
    last name on Acquire; Comm100's listing then comes back short (half, or empty, with a total
    that agrees with it). Expected: the total gives it away, the update reads Alan's contact
    first, and the city edit is neither overwritten there nor lost: it reaches every platform."""
    machine = EngineFaults()
    try:
        alan = _alan_with_two_more_on_comm100(machine)
        machine.cycle({})
        machine.outside_edit(_Draws(alan, "London"), "comm100", "city")
        machine.outside_edit(_Draws(alan, "King"), "acquire", "last_name")
        machine.cycle({"comm100": listing})
        machine._check()
    finally:
        machine.world.close()


@pytest.mark.parametrize("hidden_on", ["acquire", "ghl"])
def test_an_edit_seen_late_competes_with_the_newer_one_decided_meanwhile(store_factory: None, hidden_on: str) -> None:
    """Found by the machine's long run (seeds 21 and 22, minimized): Ada synced everywhere; an
    agent edits her field on ``hidden_on``, another agent later edits it on Comm100; the cycle's
    listing of ``hidden_on`` hides the first edit (empty on Acquire, half on GoHighLevel), so
    the plan carries Comm100's value there; the read before the write finds the hidden edit and
    sends nothing. Expected: the newer edit (Comm100's) everywhere, or a conflict row. It was:
    the next plan saw the hidden edit as the only change (Comm100's had been taken into the
    golden record and its snapshot) and it won everywhere -- the newer edit lost, no conflict
    row. Fixed: a lone change on a side that never confirmed the golden value competes with
    that value (held by the other sides, timed by the earliest of them) under the policy."""
    machine = EngineFaults()
    try:
        machine.start([("Grace", "Hopper", "London"), ("Ada", "Liskov", "Berlin")])
        ada = machine.people[1]
        field = "last_name" if hidden_on == "acquire" else "city"
        machine.outside_edit(_Draws(ada, "King" if field == "last_name" else "Austin"), hidden_on, field)
        machine.outside_edit(_Draws(ada, "Hopper" if field == "last_name" else "Paris"), "comm100", field)
        machine.cycle({hidden_on: "empty" if hidden_on == "acquire" else "partial"})
        machine._check()
    finally:
        machine.world.close()


def test_two_edits_seen_late_compete_with_the_newer_one_decided_meanwhile(store_factory: None) -> None:
    """Found by the machine's long run (seed 51, on the fix above): the same with two hidden
    edits (GoHighLevel's listing empty, Acquire's short) and the newest edit on Comm100: the two
    late edits used to compete only with each other and Comm100's newer value was lost."""
    machine = EngineFaults()
    try:
        machine.start([("Alan", "Lovelace", "Austin")])
        machine.outside_create("ghl", "Alan", "Knuth", "London")
        alan = machine.people[0]
        machine.outside_edit(_Draws(alan, "Boston"), "ghl", "city")
        machine.outside_edit(_Draws(alan, "Boston"), "acquire", "city")
        machine.outside_edit(_Draws(alan, "Berlin"), "comm100", "city")
        machine.cycle({"ghl": "empty", "acquire": "partial"})
        machine._check()
    finally:
        machine.world.close()


def test_a_contact_deleted_before_the_engine_knew_it_may_be_created_again(store_factory: None) -> None:
    """Found by the machine's long run (seed 41): Ada is made on Acquire; the cycle creates her
    on GoHighLevel, the answer is lost; an agent edits and then deletes that contact on
    GoHighLevel before any pull or lookup has found it. The engine cannot know it ever landed
    (search finds nothing, its id never came back), so the create is sent again: one contact
    there, agreeing with the others (the model allows this; a delete of a contact the engine
    knew is never undone)."""
    machine = EngineFaults()
    try:
        machine.start([("Ada", "Knuth", "Austin"), ("Donald", "Hopper", "Boston")])
        machine.outside_create("acquire", "Grace", "Hopper", "London")
        grace = machine.people[-1]
        machine.cycle({"ghl": "lose"})
        machine.outside_edit(_Draws(grace, "Boston"), "ghl", "city")
        machine.outside_delete(_Draws(grace), "ghl")
        assert grace.deleted_unknown
        machine._check()
    finally:
        machine.world.close()
