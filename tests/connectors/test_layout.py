"""The layout rules of ``connectors/``: a client shares facts with its emulator only through
``connectors/<platform>/api.py``, never by importing the emulator side."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from connectors.registry import PLATFORMS

ROOT = Path(__file__).resolve().parents[2] / "connectors"
EMULATOR_SIDE = ("connectors.emulation", "connectors.loopback", "connectors.emulate")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_client_never_imports_its_emulator(platform: str) -> None:
    modules = imported_modules(ROOT / platform / "client.py")
    forbidden = {
        m
        for m in modules
        if m.startswith(EMULATOR_SIDE) or m in (f"connectors.{platform}.emulator", f"connectors.{platform}.state")
    }
    assert not forbidden, f"{platform}/client.py imports {sorted(forbidden)}"
    assert f"connectors.{platform}.api" in modules


@pytest.mark.parametrize("platform", PLATFORMS)
def test_the_emulator_side_reads_the_same_api_facts(platform: str) -> None:
    emulator_side = imported_modules(ROOT / platform / "emulator.py")
    state = ROOT / platform / "state.py"
    if state.exists():
        emulator_side |= imported_modules(state)
    assert f"connectors.{platform}.api" in emulator_side


def test_connectors_import_no_sync_internals_but_normalize() -> None:
    for path in ROOT.rglob("*.py"):
        bad = {m for m in imported_modules(path) if m.split(".")[0] == "sync" and m != "sync.normalize"}
        assert not bad, f"{path.relative_to(ROOT.parent)} imports {sorted(bad)}"


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_connector_is_its_declared_pull_kind_with_its_settings_models(platform: str) -> None:
    from connectors.pulls import PullKind
    from connectors.registry import connector_class, credentials_model, options_model

    cls = connector_class(platform)
    assert issubclass(cls, PullKind)
    assert cls.pull_mode is cls.capabilities.pull_mode
    assert cls.options_model is options_model(platform)
    assert cls.credentials_model is credentials_model(platform)
