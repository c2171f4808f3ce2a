"""A test world: the four emulators, a config pointing at them, a store and an engine.

The emulators are reached in process (``httpx.ASGITransport``, real HTTP requests); the store is
the test's real SQLite file or PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from connectors.emulation import Emulator, FaultConfig
from connectors.fleet import CONNECTIONS, write_config
from connectors.registry import emulator_class
from sync.apply import Backoff
from sync.config import Config, load_config
from sync.cycle import CycleReport, CycleRunner
from sync.store import Store

# Rate windows shrunk a thousandfold: tests are about behaviour, not pacing.
RATE_SCALE = 1000.0


def make_emulators(
    *,
    faults: FaultConfig | None = None,
    variants: Mapping[str, str] | None = None,
    **per_platform: Mapping[str, Any],
) -> dict[str, Emulator]:
    """The four emulators; ``variants`` (behaviour name -> variant, ``"<platform>.<what>"``)
    go to the emulator of the platform each behaviour names."""
    out = {}
    for name, platform in CONNECTIONS.items():
        kwargs = dict(per_platform.get(name, {}))
        mine = {b: v for b, v in (variants or {}).items() if b.split(".", 1)[0] == platform}
        if mine:
            kwargs["variants"] = {**mine, **kwargs.get("variants", {})}
        out[name] = emulator_class(platform)(rate_scale=RATE_SCALE, faults=faults, **kwargs)
    return out


class World:
    """Emulators + config + store + engine, for end-to-end tests."""

    def __init__(
        self,
        db_url: str,
        tmp_path: Path,
        *,
        emulators: dict[str, Emulator] | None = None,
        conflicts: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        variants: Mapping[str, str] | None = None,
    ) -> None:
        self.emulators = emulators or make_emulators(variants=variants)
        urls = {n: e.base_url for n, e in self.emulators.items()}
        self.config_path = write_config(self.emulators, urls, db_url, tmp_path, conflicts=conflicts, extra=extra)
        self.config: Config = load_config(self.config_path)
        self.store = Store.open(db_url)
        self.engine = CycleRunner(
            self.config,
            self.store,
            transports={n: e.transport() for n, e in self.emulators.items()},
            backoff=Backoff(base_s=0.0),
            prefetch=True,  # as the daemon runs it (tests that build their own runner do not)
        )

    def close(self) -> None:
        self.store.close()

    def cycle(self, **kwargs: Any) -> CycleReport:
        report = self.engine.run("default", **kwargs)
        assert report.status in ("ok", "partial"), report.error
        return report

    def backfill(self) -> CycleReport:
        return self.cycle(kind="backfill", full=True)

    def converge(self, max_cycles: int = 6) -> list[CycleReport]:
        """Cycles until one makes no write call (asserting it happens)."""
        reports = []
        for _ in range(max_cycles):
            reports.append(self.cycle())
            if reports[-1].write_calls() == 0:
                return reports
        raise AssertionError(f"no convergence in {max_cycles} cycles: {[r.counts() for r in reports]}")

    # -- what the platforms hold ---------------------------------------------------------------

    def contacts(self, name: str) -> list[dict[str, Any]]:
        """Every live contact of a platform, read through its mapping (with ``_raw``)."""
        mapping = self.config.mapping(name)
        out = []
        for raw in self.emulators[name].records():
            fields = dict(mapping.read(raw).fields)
            fields["_raw"] = raw
            out.append(fields)
        return out

    def holding(self, name: str, *, email: str | None = None, phone: str | None = None) -> list[dict[str, Any]]:
        """The contacts of a platform holding this email or phone (normalized)."""
        return [
            c
            for c in self.contacts(name)
            if (email and email in (c.get("emails") or ())) or (phone and phone in (c.get("phones") or ()))
        ]

    def assert_one_each(self, humans: Iterable[tuple[str | None, str | None]]) -> None:
        """Every human (email, phone) is exactly one contact on every platform that can hold it."""
        problems = []
        for email, phone in humans:
            for name in CONNECTIONS:
                if name == "dmchamp" and not phone:
                    continue  # DM Champ needs a phone: excluded, never created
                found = self.holding(name, email=email, phone=phone)
                if len(found) != 1:
                    problems.append(f"{name}: {len(found)} contacts for {email or phone}")
        assert not problems, problems

    def write_requests(self) -> dict[str, int]:
        return {
            n: sum(
                1 for e in emu.request_log if e.method in ("POST", "PUT", "DELETE", "PATCH") and "search" not in e.path
            )
            for n, emu in self.emulators.items()
        }
