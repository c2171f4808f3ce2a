"""The per-platform data of the contract suite.

Each platform has a module ``tests/contract/scenarios/<platform>.py`` exposing
``SCENARIO = Scenario(...)``. The suite (``tests/contract/test_contract.py``) never branches on a
platform's name: what differs between platforms is data here, and which cases run is decided
by the connector's declared :class:`~connectors.base.Capabilities`.

Conventions the suite relies on (the emulator framework's): ``emulator.contacts`` maps the
remote id (a string, as in ``RawRecord.remote_id``) to the stored raw record of every live
contact; ``emulator.external_edit(remote_id, changes)`` applies raw ``changes`` as a person on
the platform would and bumps the record's updated time.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from connectors.base import Connector, RawRecord
from connectors.emulation import Emulator

JSON = dict[str, Any]


def subset_of(expected: Any, actual: Any) -> bool:
    """True when every key/value of ``expected`` appears in ``actual`` (recursively for
    dicts; lists must be equal)."""
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(k in actual and subset_of(v, actual[k]) for k, v in expected.items())
    return expected == actual


async def default_probe(connector: Connector, record: RawRecord) -> Any:
    """One cheap read of an existing record (used to count requests)."""
    return await connector.get(record.remote_id)


@dataclass
class Scenario:
    """What the contract suite needs to know about one platform.

    * ``emulator_kwargs``: extra constructor arguments of the platform's emulator (beyond
      ``rate_scale``, ``faults``, ``clock``, ``rate_limit``, which the suite sets).
    * ``settings_options``: connector options for tests, e.g. a small page size so a pull of a
      few dozen contacts spans several pages.
    * ``expected``: capability attribute -> expected value (checked against the connector).
    * ``creates``: raw create payloads, at least three, with distinct emails/phones.
    * ``keys_of_create``: the lookup keys (``{"email": ..., "phone": ...}``, normalized) of a
      create payload.
    * ``update``: raw changes for ``Connector.update``; ``edit``: raw changes for
      ``Emulator.external_edit``.
    * ``applied``: does a stored record show these raw changes/this create payload?
    * ``tags_of``: the tag names of a stored record (only used when tags are writable).
    * ``lagged_edit``: for eventually consistent search, make an outside edit whose visibility
      in search is delayed by ``delay`` seconds (None: no such behaviour).
    * ``probe``: one cheap read of an existing record (request-count tests).
    """

    platform: str
    creates: list[JSON]
    update: JSON
    edit: JSON
    keys_of_create: Callable[[JSON], dict[str, str]]
    expected: dict[str, Any] = field(default_factory=dict)
    emulator_kwargs: dict[str, Any] = field(default_factory=dict)
    settings_options: dict[str, Any] = field(default_factory=dict)
    applied: Callable[[JSON, JSON], bool] = lambda record, changes: subset_of(changes, record)
    tags_of: Callable[[JSON], set[str]] | None = None
    lagged_edit: Callable[[Emulator, str, JSON, float], None] | None = None
    #: The emulator's behaviour variants in this run (tests/matrix.py); {}: its defaults.
    variants: dict[str, str] = field(default_factory=dict)
    #: The part of a write's raw changes the platform stores under ``variants`` (a variant may
    #: ignore undocumented keys): what ``applied`` checks after a write.
    stored: Callable[[JSON, dict[str, str]], JSON] = lambda changes, variants: changes
    probe: Callable[[Connector, RawRecord], Awaitable[Any]] = default_probe


def load_scenario(platform: str) -> Scenario:
    """The platform's SCENARIO (ImportError when its module does not exist yet)."""
    module = importlib.import_module(f"{__name__}.{platform}")
    return module.SCENARIO
