"""The lens laws, property-tested on every shipped mapping:

* PutGet: ``read(write(c, raw)).fields == c`` on the fields ``c`` sets (``None`` reads back as
  absent), for canonical ``c`` the platform can hold, written onto a new record or onto any raw
  record of the platform's shape;
* GetPut: ``write(read(raw).fields, raw) == raw`` for raw records in the platform's shape,
  non-normalized phone formats, email case and invalid values included.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from connectors.registry import PLATFORMS
from sync.canonical import is_empty
from sync.mapping import load_mapping

from .strategies import RAW, canonical

MAPPINGS = {p: load_mapping(p) for p in PLATFORMS}
LAW_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _expected(c: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in c.items() if not is_empty(v)}


@pytest.mark.parametrize("platform", PLATFORMS)
def test_put_get_on_new_record(platform: str) -> None:
    mapping = MAPPINGS[platform]

    @LAW_SETTINGS
    @given(canonical(mapping))
    def law(c: dict[str, Any]) -> None:
        back = mapping.read(mapping.write(c)).fields
        assert {k: back.get(k) for k in _expected(c)} == _expected(c)
        for k, v in c.items():
            if is_empty(v):
                assert k not in back

    law()


@pytest.mark.parametrize("platform", PLATFORMS)
def test_put_get_onto_existing_record(platform: str) -> None:
    mapping = MAPPINGS[platform]

    @LAW_SETTINGS
    @given(st.data())
    def law(data: st.DataObject) -> None:
        raw = data.draw(RAW[platform])
        c = data.draw(canonical(mapping))
        # The record after the write (what c leaves alone plus what c sets) must be holdable:
        # clearing Acquire's first name while keeping the last name is not.
        merged = {**mapping.read(raw).fields, **c}
        assume(mapping.holds({k: v for k, v in merged.items() if not is_empty(v)}))
        written = mapping.write(c, raw)
        back = mapping.read(written).fields
        assert {k: back.get(k) for k in _expected(c)} == _expected(c)
        for k, v in c.items():
            if is_empty(v):
                assert k not in back
        # Fields c does not mention are left as the platform had them.
        before = mapping.read(raw).fields
        for k, v in before.items():
            if not any(l.owns(k) and l.writable for l in mapping.lenses) or k not in c:
                if not k.startswith("custom.") and k not in c:
                    assert back.get(k) == v

    law()


@pytest.mark.parametrize("platform", PLATFORMS)
def test_get_put(platform: str) -> None:
    mapping = MAPPINGS[platform]

    @LAW_SETTINGS
    @given(RAW[platform])
    def law(raw: dict[str, Any]) -> None:
        assert mapping.write(mapping.read(raw).fields, raw) == raw
        assert mapping.changes(mapping.read(raw).fields, raw) == {}

    law()


@pytest.mark.parametrize("platform", PLATFORMS)
def test_changes_bring_base_to_fields(platform: str) -> None:
    """Applying ``changes`` to the base (as the platform would) gives what ``write`` gives, on
    the keys an update may carry."""
    mapping = MAPPINGS[platform]

    @LAW_SETTINGS
    @given(st.data())
    def law(data: st.DataObject) -> None:
        raw = data.draw(RAW[platform])
        c = data.draw(canonical(mapping))
        diff = mapping.changes(c, raw)
        applied = _apply(raw, diff)
        full = mapping.write(c, raw)
        for key in diff:
            assert mapping.updatable_keys is None or key in mapping.updatable_keys or key in mapping.always_send
        back = mapping.read(applied).fields
        wanted = mapping.read(full).fields
        for name in _expected(c):
            lens = next(l for l in mapping.lenses if l.owns(name))
            if set(lens.paths) & _blocked(mapping):
                continue  # not updatable on this platform (DM Champ phone, GoHighLevel tags)
            assert back.get(name) == wanted.get(name)

    law()


def _blocked(mapping: Any) -> set[str]:
    out = set()
    for lens in mapping.lenses:
        for path in lens.paths:
            top = path.split(".")[0]
            if mapping.updatable_keys is not None and top not in mapping.updatable_keys:
                out.add(path)
            if any(lens.owns(f) for f in mapping.endpoint_fields):
                out.add(path)
    return out


def _apply(base: dict[str, Any], diff: dict[str, Any]) -> dict[str, Any]:
    """An update as the platforms apply it: nested dicts merge key by key; GoHighLevel
    customFields merge entry by entry (by id or key); other values replace."""
    out = dict(base)
    for key, value in diff.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _apply(out[key], value)
        elif key == "customFields" and isinstance(out.get(key), list):
            merged = list(out[key])
            for entry in value:
                ident = entry.get("id") or entry.get("key")
                idx = next((i for i, e in enumerate(merged) if (e.get("id") or e.get("key")) == ident), None)
                if idx is None:
                    merged.append(entry)
                else:
                    merged[idx] = entry
            out[key] = merged
        else:
            out[key] = value
    return out
