"""``contactsync probe`` against the emulators: under each variant of every inferred behaviour
(the variant matrix, tests/matrix.py), each platform's probe reports the variant the emulator
runs, for every behaviour the platform declares; it leaves no throwaway contact behind and
changes no other contact. Then the command end to end: findings recorded in the store, shown by
``status``, handed to the connector as ``ConnectionSettings.behaviours``, refused without
``--yes``; a platform without a probe module is skipped, saying so."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import pytest
from matrix import platform_behaviours, single_variants, strictest
from rich.console import Console

from connectors.registry import connector_class, emulator_class
from sync.commands.common import CommandError
from sync.commands.probe import probe_connection, probe_module, run_probe
from sync.commands.status import show

from helpers import run


def _cases() -> list[Any]:
    out = []
    for platform in platform_behaviours():
        out.append(pytest.param(platform, {}, id=f"{platform}:defaults"))
        out.append(pytest.param(platform, strictest(platform), id=f"{platform}:strictest"))
    for case_id, variants in single_variants():
        out.append(pytest.param(next(iter(variants)).split(".", 1)[0], variants, id=case_id))
    return out


@pytest.mark.parametrize(("platform", "variants"), _cases())
def test_the_probe_reports_the_variant_the_emulator_runs(platform: str, variants: dict[str, str]) -> None:
    module = probe_module(platform)
    if module is None:
        pytest.skip(f"no probe module for {platform} yet")
    emulator = emulator_class(platform)(rate_scale=1000.0, variants=variants)
    emulator.seed(6, rng_seed=3)
    before = copy.deepcopy(emulator.records())
    connector = connector_class(platform)(emulator.connection_settings(), emulator.transport())

    async def go() -> None:
        try:
            findings = await module.probe(connector, marker="contactsync-probe-test1234")
        finally:
            await connector.aclose()
        measured = {f.behaviour: f.variant for f in findings}
        assert measured == emulator.variants, [f"{f.behaviour}={f.variant}: {f.evidence}" for f in findings]
        assert all(f.evidence for f in findings)

    run(go())
    after = emulator.records()
    if connector_class(platform).capabilities.can_delete:
        # Nothing left behind, nothing else changed.
        assert after == before
    else:
        # A platform whose API cannot delete (DM Champ) keeps the throwaway contact (its findings
        # name it for a person to remove); every other contact is as it was.
        left = [r for r in after if r not in before]
        assert left and all("contactsync probe" in str(r) or "contactsync-probe" in str(r) for r in left), left
        assert [r for r in after if r in before] == before


def test_the_command_records_findings_status_shows_them_and_cycles_use_them(db_url: str, tmp_path: Path) -> None:
    from tests.e2e.world import World

    world = World(db_url, tmp_path, variants={"comm100.put_semantics": "replace", "acquire.paging_base": "zero"})
    try:
        transports = {n: e.transport() for n, e in world.emulators.items()}
        with pytest.raises(CommandError) as refused:
            run_probe(world.config, yes=False, transports=transports)
        assert refused.value.exit_code == 2
        out = io.StringIO()
        results = run_probe(world.config, yes=True, transports=transports, console=Console(file=out, width=200))
        text = out.getvalue()
        for name, platform in (("ghl", "gohighlevel"), ("dmchamp", "dmchamp")):
            if probe_module(platform) is None:
                assert results[name] is None and f"skipped, no probe for {platform} yet" in text
        measured = world.store.behaviours.measured("comm100")
        assert measured["comm100.put_semantics"] == "replace"
        assert world.store.behaviours.measured("acquire")["acquire.paging_base"] == "zero"
        # The connector of the next cycle is given them.
        connector = world.engine.connector("comm100")
        assert connector.settings.behaviours["comm100.put_semantics"] == "replace"  # type: ignore[attr-defined]
        run(connector.aclose())
        status = io.StringIO()
        data = show(world.config, as_json=True, console=Console(file=status, width=200))
        rows = {m["behaviour"]: m["variant"] for m in data["connections"]["comm100"]["measured"]}
        assert rows["comm100.put_semantics"] == "replace"
        assert all(m["at"] for m in data["connections"]["comm100"]["measured"])
        # One connection only.
        assert set(run_probe(world.config, connections=["acquire"], yes=True, transports=transports)) == {"acquire"}
        # The throwaway contacts are gone.
        for name in ("comm100", "acquire"):
            assert not [r for r in world.emulators[name].records() if "contactsync-probe" in str(r)]
        assert run(probe_connection(world.config, "comm100", transport=transports["comm100"])) is not None
    finally:
        world.close()
