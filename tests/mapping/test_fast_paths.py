"""The mapping's fast paths give exactly what the general code gives: compiled lens readers
against ``Lens.read``, and the per-domain email check against the full email_validator run."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.registry import PLATFORMS
from sync.canonical import is_empty
from sync.mapping import load_mapping
from sync.mapping.transforms import Issue, _plain_email
from sync.normalize import InvalidValue, normalize_email

from .strategies import RAW, canonical

MAPPINGS = {p: load_mapping(p) for p in PLATFORMS}
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Raw values of every JSON type, including the awkward ones (blank text, numbers, booleans,
# nested containers) a platform might put where a mapping expects text.
JUNK = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-5, 5),
        st.floats(allow_nan=False, allow_infinity=False, width=16),
        st.sampled_from(["", "  ", " x ", "Ada", "Ada  King", "a@B.com", "(415) 555-2671", "true", "no", "1"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "name", "id"]), inner, max_size=2)
    ),
    max_leaves=6,
)


def _general(mapping: Any, raw: dict[str, Any]) -> tuple[dict[str, Any], list[Issue]]:
    """What reading gives through each lens's general ``read``."""
    out: dict[str, Any] = {}
    issues: list[Issue] = []
    for lens in mapping.lenses:
        if lens.readable:
            values, found = lens.read(raw, mapping.default_region)
            out.update(values)
            issues.extend(found)
    return out, issues


@pytest.mark.parametrize("platform", PLATFORMS)
def test_compiled_readers_read_platform_payloads_as_read_does(platform: str) -> None:
    mapping = MAPPINGS[platform]

    @SETTINGS
    @given(RAW[platform])
    def check(raw: dict[str, Any]) -> None:
        result = mapping.read(raw)
        assert (result.fields, result.issues) == _general(mapping, raw)
        assert list(result.fields) == list(_general(mapping, raw)[0])  # same field order too

    check()


@pytest.mark.parametrize("platform", PLATFORMS)
def test_compiled_readers_agree_on_odd_values_at_every_path(platform: str) -> None:
    mapping = MAPPINGS[platform]
    paths = sorted({p for lens in mapping.lenses for p in lens.paths})

    @SETTINGS
    @given(st.lists(st.tuples(st.sampled_from(paths), JUNK), max_size=6))
    def check(puts: list[tuple[str, Any]]) -> None:
        raw: dict[str, Any] = {}
        for path, value in puts:
            head, _, tail = path.partition(".")
            if tail:
                node = raw.get(head)
                if not isinstance(node, dict):
                    node = raw[head] = {}
                node[tail] = value
            else:
                raw[head] = value
        result = mapping.read(raw)
        assert (result.fields, result.issues) == _general(mapping, raw)

    check()


LOCAL = st.from_regex(r"[A-Za-z0-9_+\-.!#]{1,70}", fullmatch=True)
LABEL = st.from_regex(r"[A-Za-z0-9\-]{1,66}", fullmatch=True)
TLD = st.one_of(
    st.sampled_from(["com", "ORG", "local", "localhost", "test", "invalid", "onion", "arpa", "example", "c0", "123"]),
    LABEL,
)
ADDRESS = st.tuples(LOCAL, st.lists(LABEL, min_size=0, max_size=3), TLD).map(
    lambda t: f"{t[0]}@{'.'.join([*t[1], t[2]])}"
)


def _full(text: str) -> str | None:
    try:
        return normalize_email(text)
    except InvalidValue:
        return None


@SETTINGS
@given(st.one_of(ADDRESS, st.text(max_size=30), ADDRESS.map(lambda a: a.replace("@", "@xn--", 1))))
def test_plain_email_check_agrees_with_email_validator(text: str) -> None:
    fast = _plain_email(text)
    # Either the fast path declines (the full check decides), or it gives the same address.
    assert fast is None or fast == _full(text)


@pytest.mark.parametrize(
    "text",
    [
        "Ada.Lovelace@Example.COM",
        "a+b_c-d@x-y.co.uk",
        "a..b@x.com",
        "a@b.local",
        "a@localhost",
        "a@x.c0",
        ".a@x.com",
        "a.@x.com",
        "a@-x.com",
        "a@x-.com",
        "a@ab--cd.com",
        "a@x..com",
        "x" * 65 + "@x.com",
    ],
)
def test_plain_email_examples(text: str) -> None:
    fast = _plain_email(text)
    assert fast is None or fast == _full(text)
    if _full(text) is None:
        assert fast is None


@pytest.mark.parametrize("platform", PLATFORMS)
def test_fresh_writers_write_as_write_does_onto_a_payload_without_the_lens(platform: str) -> None:
    mapping = MAPPINGS[platform]
    region = mapping.default_region

    @SETTINGS
    @given(canonical(mapping), RAW[platform])
    def check(values: dict[str, Any], other: dict[str, Any]) -> None:
        for lens in mapping.lenses:
            if not lens.writable:
                continue
            desired = {k: v for k, v in values.items() if lens.owns(k) and not is_empty(v)}
            if not desired:
                continue
            # Another record's payload without this lens's paths (what a create has written so far).
            base = copy.deepcopy(other)
            for path in lens.paths:
                head, _, tail = path.partition(".")
                if tail and isinstance(base.get(head), dict):
                    base[head].pop(tail, None)
                elif not tail:
                    base.pop(head, None)
            fast, slow = copy.deepcopy(base), copy.deepcopy(base)
            lens.fresh_writer(region)(dict(desired), fast)
            lens.write(dict(desired), slow, region, set(desired))
            assert fast == slow

    check()


@pytest.mark.parametrize("platform", PLATFORMS)
def test_create_reads_back_what_its_payload_reads(platform: str) -> None:
    mapping = MAPPINGS[platform]

    @SETTINGS
    @given(canonical(mapping))
    def check(values: dict[str, Any]) -> None:
        body, back = mapping.create(values)
        assert back == mapping.read(body).fields
        assert body == mapping.write(values, None)

    check()


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_lens_reads_nothing_where_none_of_its_paths_is(platform: str) -> None:
    # What a create's partial read-back rests on: readers of untouched paths add nothing.
    mapping = MAPPINGS[platform]

    @SETTINGS
    @given(RAW[platform])
    def check(raw: dict[str, Any]) -> None:
        for lens in mapping.lenses:
            if not lens.readable:
                continue
            other = copy.deepcopy(raw)
            for path in lens.paths:
                head, _, tail = path.partition(".")
                if tail and isinstance(other.get(head), dict):
                    other[head].pop(tail, None)
                elif not tail:
                    other.pop(head, None)
            if any(paths_overlap(path, lens.paths) for path in _leaf_paths(other)):
                continue  # the lens reads a node that still holds other keys (Acquire's custom fields)
            assert lens.read(other, mapping.default_region) == ({}, [])

    check()


def paths_overlap(path: str, lens_paths: tuple[str, ...]) -> bool:
    from sync.mapping.paths import is_prefix

    return any(is_prefix(path, p) or is_prefix(p, path) for p in lens_paths)


def _leaf_paths(raw: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.extend(_leaf_paths(value, path + "."))
        else:
            out.append(path)
    return out


JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=12,
)


@SETTINGS
@given(st.dictionaries(st.text(max_size=4), JSON, max_size=4))
def test_payload_copy_is_an_independent_deep_copy(raw: dict[str, Any]) -> None:
    from sync.mapping.transforms import deep_copy

    copied = deep_copy(raw)
    assert copied == copy.deepcopy(raw) and type(copied) is dict

    def containers(value: Any) -> list[int]:
        if isinstance(value, dict):
            return [id(value), *(i for v in value.values() for i in containers(v))]
        if isinstance(value, list):
            return [id(value), *(i for v in value for i in containers(v))]
        return []

    assert not set(containers(copied)) & set(containers(raw)) or not raw


US_DIGITS = st.from_regex(r"[0-9]{10,11}", fullmatch=True)
PHONE_TEXT = US_DIGITS.flatmap(
    lambda d: st.sampled_from(
        [
            d,
            f"({d[:3]}) {d[3:6]}-{d[6:]}",
            f"{d[:3]}.{d[3:6]}.{d[6:]}",
            f" {d[:3]}-{d[3:6]}-{d[6:]} ",
            f"{d[:3]}/{d[3:]}",
        ]
    )
)


@SETTINGS
@given(st.one_of(PHONE_TEXT, st.text(alphabet="0123456789 ()-.+/", max_size=16)), st.sampled_from(["US", "GB", "CA"]))
def test_us_national_phone_check_agrees_with_phonenumbers(text: str, region: str) -> None:
    from sync.mapping.transforms import _us_national
    from sync.normalize import normalize_phone

    fast = _us_national(text.strip(), region)
    if fast is not None:
        assert fast == normalize_phone(text.strip(), region)
