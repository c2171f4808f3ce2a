"""Phone normalization throughput: plain ``phonenumbers`` parse + format vs ``normalize_phone``.

Normalizes N phones (default 1,000,000) drawn from a pool of distinct numbers with a skewed
distribution (real contact data repeats: the same number on several platforms, re-read every
cycle), half already E.164, half in national or spaced formats. Each repeat starts with a cold
cache. Prints the figures, then one JSON object as the last line:
``{"phones": N, "plain_per_s": X, "ours_per_s": Y, "speedup": Y/X}`` (medians of the repeats).

    .venv/bin/python bench/normalize.py [--phones N] [--repeats R] [--distinct D]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import phonenumbers  # noqa: E402

from sync.normalize import _parse_phone, normalize_phone  # noqa: E402

REGION = "US"


def _formats(area: int, exchange: int, line: int) -> list[str]:
    return [
        f"+1{area}{exchange}{line:04d}",
        f"({area}) {exchange}-{line:04d}",
        f"{area}-{exchange}-{line:04d}",
        f"+1 {area} {exchange} {line:04d}",
        f"{area}.{exchange}.{line:04d}",
    ]


def make_phones(n: int, distinct: int, seed: int = 7) -> list[str]:
    """``n`` phone strings from ``distinct`` numbers: half E.164, half other formats."""
    rng = random.Random(seed)
    pool: list[str] = []
    for _ in range(distinct):
        area, exchange, line = rng.randint(201, 989), rng.randint(200, 999), rng.randint(0, 9999)
        if rng.random() < 0.1:
            national = f"{rng.randint(7000, 7999)} {rng.randint(100000, 999999)}"
            pool.append(rng.choice([f"+44{national.replace(' ', '')}", f"+44 {national}"]))
            continue
        formats = _formats(area, exchange, line)
        pool.append(formats[0] if rng.random() < 0.5 else rng.choice(formats[1:]))
    # Skewed reuse: a few numbers appear very often, most a handful of times.
    weights = [1.0 / (i + 1) ** 0.6 for i in range(distinct)]
    return rng.choices(pool, weights=weights, k=n)


def plain(phones: list[str]) -> float:
    start = time.perf_counter()
    for raw in phones:
        number = phonenumbers.parse(raw, REGION)
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return time.perf_counter() - start


def ours(phones: list[str]) -> float:
    _parse_phone.cache_clear()  # every repeat starts cold
    start = time.perf_counter()
    for raw in phones:
        normalize_phone(raw, REGION)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phones", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--distinct", type=int, default=100_000)
    args = parser.parse_args()
    phones = make_phones(args.phones, args.distinct)
    # Both must agree before speed means anything.
    sample = phones[:2000]
    for raw in sample:
        expected = phonenumbers.format_number(phonenumbers.parse(raw, REGION), phonenumbers.PhoneNumberFormat.E164)
        assert normalize_phone(raw, REGION) == expected, raw
    plain_times = [plain(phones) for _ in range(args.repeats)]
    ours_times = [ours(phones) for _ in range(args.repeats)]
    plain_per_s = args.phones / statistics.median(plain_times)
    ours_per_s = args.phones / statistics.median(ours_times)
    print(f"phones: {args.phones:,} ({args.distinct:,} distinct), repeats: {args.repeats}")
    print(f"plain phonenumbers parse+format: {plain_per_s:,.0f} phones/s")
    print(f"normalize_phone (fast path + cache): {ours_per_s:,.0f} phones/s")
    print(f"speedup: {ours_per_s / plain_per_s:.1f}x")
    print(
        json.dumps(
            {
                "phones": args.phones,
                "plain_per_s": round(plain_per_s),
                "ours_per_s": round(ours_per_s),
                "speedup": round(ours_per_s / plain_per_s, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
