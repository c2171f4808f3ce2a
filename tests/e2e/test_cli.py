"""The commands over a synced world: status, conflicts (list and resolve by hand), plan, and the
demo tour end to end."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from sync.cli import app

from .test_sync import ADA, edit_ada_on_two_sides, seed_overlap
from .world import World

runner = CliRunner()


def test_status_shows_connections_exclusions_and_runs(world: World) -> None:
    seed_overlap(world)
    world.backfill()
    result = runner.invoke(app, ["status", "-c", str(world.config_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data["connections"]) == {"acquire", "dmchamp", "ghl", "comm100"}
    assert data["connections"]["dmchamp"]["excluded_records"][0]["reason"]
    assert data["last_runs"][0]["kind"] == "backfill"
    text = runner.invoke(app, ["status", "-c", str(world.config_path)])
    assert text.exit_code == 0 and "excluded dmchamp" in text.output


def test_a_person_resolves_a_conflict_and_the_choice_travels(world: World) -> None:
    edit_ada_on_two_sides(world)
    world.converge()
    listed = runner.invoke(app, ["conflicts", "-c", str(world.config_path), "--all"])
    assert listed.exit_code == 0 and "last_name" in listed.output
    (conflict,) = [r for r in world.store.status.conflicts() if r.field == "last_name"]
    bad = runner.invoke(
        app, ["conflicts", "-c", str(world.config_path), "--resolve", str(conflict.id), "--use", "nowhere"]
    )
    assert bad.exit_code == 2
    ok = runner.invoke(app, ["conflicts", "-c", str(world.config_path), "--resolve", str(conflict.id), "--use", "ghl"])
    assert ok.exit_code == 0, ok.output
    world.converge()
    for name in ("acquire", "ghl", "comm100"):
        (ada,) = world.holding(name, email=ADA[0])
        assert ada["last_name"] == "Older", name


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    from rich.console import Console

    from sync.commands.demo import run_demo

    console = Console(record=True, width=120)
    assert run_demo(workdir=tmp_path / "demo", console=console) == 0
    out = console.export_text()
    assert "conflicts decided" in out and "every platform agrees" in out


def test_plan_prints_the_writes_and_makes_none(db_url: str, tmp_path: Path) -> None:
    import yaml

    from connectors.loopback import LoopbackEmulators, emulator_config
    from connectors.registry import emulator_class

    from .world import CONNECTIONS

    factories = {
        n: (lambda url, p=p: emulator_class(p)(base_url=url, rate_scale=1000.0)) for n, p in CONNECTIONS.items()
    }
    with LoopbackEmulators(factories) as served:
        served.emulators["ghl"].seed(
            [{"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com", "phone": "+14155552671"}]
        )
        cfg = emulator_config(served.emulators, served.urls, db_url, secrets_dir=tmp_path / "secrets")
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(cfg))
        result = runner.invoke(app, ["plan", "-c", str(path)])
        assert result.exit_code == 0, result.output
        assert "acquire" in result.output and "create" in result.output
        writes = [
            e
            for emu in served.emulators.values()
            for e in emu.request_log
            if e.method in ("PUT", "DELETE") or (e.method == "POST" and not e.path.endswith("/search"))
        ]
        assert writes == []
        as_json = runner.invoke(app, ["plan", "-c", str(path), "--json"])
        assert as_json.exit_code == 0 and json.loads(as_json.output)["summary"]["acquire"]["create"] == 1


def test_probe_refuses_without_yes_and_names_a_bad_connection(world: World) -> None:
    result = runner.invoke(app, ["probe", "-c", str(world.config_path)])
    assert result.exit_code == 2 and "--yes" in result.output
    result = runner.invoke(app, ["probe", "-c", str(world.config_path), "--connection", "nosuch", "--yes"])
    assert result.exit_code == 2 and "nosuch" in result.output
    # Nothing was created anywhere.
    assert not any(e.method == "POST" for emu in world.emulators.values() for e in emu.request_log)
