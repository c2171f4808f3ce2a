"""A mapping reads runs of plain text keys in one loop (``FieldMapping._read_all``): the same
fields, values, order and issues as each lens's own reader, whatever the keys hold."""

from __future__ import annotations

import itertools
from typing import Any

from sync.config import Config
from sync.mapping.transforms import Issue

ODD: list[Any] = [None, "", "  ", " Ada ", "Ada", 7, 0, 1.5, True, False, [], ["x"], {}, {"a": 1}]


def _config() -> Config:
    return Config.model_validate(
        {
            "connections": {
                "acq": {"platform": "acquire", "base_url": "http://acq.test"},
                "ghl": {"platform": "gohighlevel", "base_url": "http://ghl.test", "options": {"location_id": "L1"}},
                "c100": {"platform": "comm100", "base_url": "http://c100.test", "options": {"site_id": 1}},
                "dm": {"platform": "dmchamp", "base_url": "http://dm.test"},
            }
        }
    )


def _one_by_one(mapping: Any, raw: Any) -> tuple[list[tuple[str, Any]], list[Issue]]:
    out: dict[str, Any] = {}
    issues: list[Issue] = []
    for read in mapping._readers:
        read(raw, out, issues)
    return list(out.items()), issues


def test_batched_reads_equal_the_lenses_own_readers() -> None:
    config = _config()
    for name in ("acq", "ghl", "c100", "dm"):
        mapping = config.mapping(name)
        keys = sorted({p.split(".")[0] for lens in mapping.lenses for p in lens.paths})
        payloads: list[Any] = [{}, {"email": "a@b.com"}]
        for shift in range(len(ODD)):
            payloads.append({k: ODD[(i + shift) % len(ODD)] for i, k in enumerate(keys)})
        for a, b in itertools.product(ODD, repeat=2):
            payloads.append({keys[0]: a, keys[-1]: b, "firstName": a, "lastName": b})
        for raw in payloads:
            result = mapping.read(raw)
            assert (list(result.fields.items()), result.issues) == _one_by_one(mapping, raw), (name, raw)
