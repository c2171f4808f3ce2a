"""``contactsync emulate``: serve platform emulators on loopback sockets for demos and benches.

Each emulator is printed with its base URL, the credentials it accepts and the connector
options it needs, one line per platform::

    gohighlevel http://127.0.0.1:8702 credentials={"token": "..."} options={"location_id": "..."}

``--all`` serves every registered platform on consecutive ports, in registry order. The process
stops cleanly (exit 0) on SIGINT or SIGTERM. Exit codes: 0 stopped cleanly, 1 could not
listen, 2 bad usage (no/unknown platform, unreadable seed file).

A seed file is JSON: a list of platform-neutral persons (the keys of
:func:`connectors.emulation.fake_person`) loaded into every emulator, or an object mapping a
platform name to such a list.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from connectors.emulation import Emulator, FaultConfig, Served
from connectors.emulation import serve as serve_emulators
from connectors.registry import PLATFORMS, emulator_class


def _err(message: str) -> None:
    print(f"emulate: {message}", file=sys.stderr, flush=True)


def _load_seed_file(path: Path) -> dict[str, list[dict[str, Any]]] | list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, list) and all(isinstance(p, dict) for p in data):
        return data
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        unknown = set(data) - set(PLATFORMS)
        if unknown:
            raise ValueError(f"unknown platforms in seed file: {sorted(unknown)}")
        return data
    raise ValueError("a seed file is a list of persons or an object {platform: [persons]}")


def build_emulators(
    platforms: list[str],
    *,
    host: str,
    port: int,
    seed_contacts: int = 0,
    seed: dict[str, list[dict[str, Any]]] | list[dict[str, Any]] | None = None,
    rate_scale: float = 1.0,
    fault_rate: float = 0.0,
    fault_seed: int = 0,
    variants: dict[str, str] | None = None,
) -> list[Emulator]:
    """The emulators ``serve`` runs, seeded, with base URLs on consecutive ports.
    ``variants`` (behaviour name ``<platform>.<what>`` -> variant) go to the emulator of the
    platform they name; ValueError for a platform not served or a behaviour it does not have."""
    emulators = []
    chosen = dict(variants or {})
    stray = sorted(b for b in chosen if b.split(".", 1)[0] not in platforms)
    if stray:
        raise ValueError(f"--variant for a platform not served: {', '.join(stray)}")
    for i, platform in enumerate(platforms):
        mine = {b: v for b, v in chosen.items() if b.split(".", 1)[0] == platform}
        emulator = emulator_class(platform)(
            base_url=f"http://{host}:{port + i}",
            rate_scale=rate_scale,
            faults=FaultConfig(rate=fault_rate, seed=fault_seed),
            **({"variants": mine} if mine else {}),
        )
        if seed_contacts:
            emulator.seed(seed_contacts, rng_seed=fault_seed)
        people = seed.get(platform, []) if isinstance(seed, dict) else (seed or [])
        if people:
            emulator.seed(people)
        emulators.append(emulator)
    return emulators


def describe(served: Served) -> str:
    """One line: platform, base URL, accepted credentials and connector options."""
    settings = served.emulator.connection_settings(base_url=served.url)
    options = {k: v for k, v in settings.options.items() if not k.startswith("backoff_")}
    return (
        f"{served.emulator.platform} {served.url} credentials={json.dumps(served.emulator.credentials)} "
        f"options={json.dumps(options)}"
    )


def serve(
    platform: str | None,
    all_platforms: bool,
    host: str,
    port: int,
    seed_contacts: int,
    seed_file: Path | None,
    rate_scale: float,
    fault_rate: float,
    fault_seed: int,
    variants: list[str] | None = None,
) -> int:
    """Serve one platform (or all) until SIGINT/SIGTERM; returns the exit code. ``variants``:
    ``behaviour=variant`` strings (``comm100.put_semantics=replace``)."""
    if all_platforms == (platform is not None):
        _err("give exactly one of --platform NAME or --all")
        return 2
    platforms = list(PLATFORMS) if all_platforms else [str(platform)]
    if platforms[0] not in PLATFORMS:
        _err(f"unknown platform {platform!r}; known: {', '.join(PLATFORMS)}")
        return 2
    if rate_scale <= 0 or not 0.0 <= fault_rate <= 1.0:
        _err("--rate-scale must be > 0 and --fault-rate within [0, 1]")
        return 2
    chosen: dict[str, str] = {}
    for item in variants or []:
        name, eq, value = item.partition("=")
        if not eq or not name.strip() or not value.strip():
            _err(f"--variant {item!r}: expected BEHAVIOUR=VARIANT, e.g. comm100.put_semantics=replace")
            return 2
        chosen[name.strip()] = value.strip()
    seed = None
    if seed_file is not None:
        try:
            seed = _load_seed_file(seed_file)
        except (OSError, ValueError) as exc:
            _err(f"cannot load seed file {seed_file}: {exc}")
            return 2
    try:
        emulators = build_emulators(
            platforms,
            host=host,
            port=port,
            seed_contacts=seed_contacts,
            seed=seed,
            rate_scale=rate_scale,
            fault_rate=fault_rate,
            fault_seed=fault_seed,
            variants=chosen,
        )
    except ImportError as exc:
        _err(f"an emulator is not available: {exc}")
        return 2
    except (ValueError, TypeError) as exc:
        # an unknown behaviour or variant (check_variants), or an emulator without variants
        _err(f"bad --variant: {exc}")
        return 2

    def ready(served: list[Served]) -> None:
        for s in served:
            print(describe(s), flush=True)
        print(f"serving {len(served)} emulator(s); stop with Ctrl-C or SIGTERM", flush=True)

    try:
        serve_emulators(emulators, host=host, port=port, on_ready=ready)
    except OSError as exc:
        _err(str(exc))
        return 1
    print("stopped", flush=True)
    return 0
