"""Fixtures of the contract suite: one parametrization over every registered platform.

A platform whose package cannot be imported, or that has no scenario module, FAILS the
suite (never a skip: a broken import would otherwise pass silently as "skipped"). ``harness`` builds an emulator (in-process, reached through
``httpx.ASGITransport``) and connectors for it, and closes them after the test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from connectors.base import Connector, RateLimit
from connectors.emulation import Clock, Emulator, FaultConfig
from connectors.registry import PLATFORMS, connector_class, emulator_class

from .scenarios import Scenario, load_scenario
from helpers import run

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def _variant_params() -> list[Any]:
    """Each platform with its emulator's defaults, then (the variant matrix, tests/matrix.py)
    with each non-default variant of its inferred behaviours alone, and with all of them on
    their strictest reading at once."""
    from matrix import platform_behaviours, single_variants, strictest

    out = [pytest.param((p, {}), id=p) for p in PLATFORMS]
    known = platform_behaviours()
    for case_id, variants in single_variants():
        platform = next(iter(variants)).split(".", 1)[0]
        out.append(pytest.param((platform, variants), id=case_id))
    for platform in known:
        out.append(pytest.param((platform, strictest(platform)), id=f"{platform}:strictest"))
    return out


@pytest.fixture(params=_variant_params())
def scenario(request: pytest.FixtureRequest) -> Scenario:
    platform, variants = request.param
    try:
        connector_class(platform)
        emulator_class(platform)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"connectors.{platform} cannot be imported: {exc!r}")
    try:
        loaded = load_scenario(platform)
    except ImportError as exc:
        pytest.fail(f"no contract scenario for {platform}: {exc!r}")
    if variants:
        loaded = dataclasses.replace(
            loaded,
            emulator_kwargs={**loaded.emulator_kwargs, "variants": variants},
            variants=dict(variants),
        )
    return loaded


class Harness:
    """Builds emulators and connectors for one platform; closes connectors at teardown."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self._connectors: list[Connector] = []

    def emulator(
        self,
        *,
        rate_scale: float = 1000.0,
        faults: FaultConfig | None = None,
        frozen: bool = True,
        rate_limit: RateLimit | bool | None = True,
    ) -> Emulator:
        """An emulator with a frozen clock (at 2026-01-01) unless ``frozen=False``, its
        documented limits scaled by ``rate_scale``."""
        cls = emulator_class(self.scenario.platform)
        return cls(
            rate_scale=rate_scale,
            faults=faults,
            clock=Clock(EPOCH) if frozen else Clock(),
            rate_limit=rate_limit,
            **self.scenario.emulator_kwargs,
        )

    def connector(self, emulator: Emulator, **overrides: Any) -> Connector:
        """A connector for ``emulator`` with the scenario's test options."""
        options = {**self.scenario.settings_options, **overrides.pop("options", {})}
        settings = emulator.connection_settings(options=options, **overrides)
        connector = connector_class(self.scenario.platform)(settings, emulator.transport())
        self._connectors.append(connector)
        return connector

    def bad_connector(self, emulator: Emulator) -> Connector:
        """A connector whose every credential is wrong (but present)."""
        wrong = {k: SecretStr(f"wrong-{v[::-1]}") for k, v in emulator.credentials.items()}
        return self.connector(emulator, credentials=wrong)

    async def aclose(self) -> None:
        for c in self._connectors:
            await c.aclose()


@pytest.fixture
def harness(scenario: Scenario) -> Iterator[Harness]:
    h = Harness(scenario)
    yield h
    run(h.aclose())
