"""Normalization of matching keys: email, phone (E.164), identity values."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.normalize import InvalidValue, normalize_email, normalize_identity, normalize_phone


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" Ada.Lovelace@Example.COM ", "ada.lovelace@example.com"),
        ("BOB@x.io", "bob@x.io"),
    ],
)
def test_email_is_trimmed_and_lower_cased(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "not-an-email", "a@", "@b.com", "a b@c.com"])
def test_bad_email_raises_with_reason(raw: str) -> None:
    with pytest.raises(InvalidValue) as info:
        normalize_email(raw)
    assert info.value.kind == "email"
    assert info.value.reason


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+14155552671", "US", "+14155552671"),
        ("(415) 555-2671", "US", "+14155552671"),
        ("415.555.2671", "US", "+14155552671"),
        ("+1 415 555 2671", "GB", "+14155552671"),
        ("0044 20 7946 0958", "US", "+442079460958"),
        ("020 7946 0958", "GB", "+442079460958"),
    ],
)
def test_phone_normalizes_to_e164(raw: str, region: str, expected: str) -> None:
    assert normalize_phone(raw, region) == expected


@pytest.mark.parametrize("raw", ["", "abc", "12", "+1 23"])
def test_bad_phone_raises_with_reason(raw: str) -> None:
    with pytest.raises(InvalidValue) as info:
        normalize_phone(raw, "US")
    assert info.value.kind == "phone"
    assert info.value.reason


@given(st.integers(min_value=2_000_000_000, max_value=9_999_999_999))
def test_e164_fast_path_agrees_with_parser(national: int) -> None:
    formatted = f"({str(national)[:3]}) {str(national)[3:6]}-{str(national)[6:]}"
    try:
        slow = normalize_phone(formatted, "US")
    except InvalidValue:
        return
    assert normalize_phone(slow, "US") == slow


def test_identity_values_normalize_by_type() -> None:
    assert normalize_identity("Email", " X@Y.com ").kind == "email"
    assert normalize_identity("SMS", "(415) 555-2671").value == "+14155552671"
    twitter = normalize_identity("Twitter", "@Comm100Corp")
    assert (twitter.kind, twitter.value) == ("identity:twitter", "comm100corp")
    ext = normalize_identity("externalID", " A-17 ")
    assert (ext.kind, ext.value) == ("identity:externalid", "A-17")
    with pytest.raises(InvalidValue):
        normalize_identity("facebook", "   ")
