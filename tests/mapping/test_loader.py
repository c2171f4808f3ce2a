"""Loading mappings: user files replace the shipped one, overrides extend it, and mappings that
cannot round-trip are rejected at load time with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.mapping import MappingError, load_mapping


def test_override_extends_and_removes_entries() -> None:
    m = load_mapping("gohighlevel", override={"fields": {"website": None, "emails": {"direction": "in"}}})
    assert "website" not in m.readable | m.writable
    assert "emails" in m.readable and "emails" not in m.writable
    assert m.write({"emails": ("a@x.io",)}, {"id": "1"}) == {"id": "1"}


def test_user_file_replaces_the_shipped_mapping(tmp_path: Path) -> None:
    path = tmp_path / "ghl.yaml"
    path.write_text(
        "platform: gohighlevel\nfields:\n  first_name: {path: firstName}\n  company: {path: companyName, direction: in}\n"
    )
    m = load_mapping("gohighlevel", path=path)
    assert m.readable == frozenset({"first_name", "company"})
    assert m.writable == frozenset({"first_name"})
    assert m.read({"firstName": " Ada ", "email": "a@x.io"}).fields == {"first_name": "Ada"}


def _bad(tmp_path: Path, body: str, platform: str = "gohighlevel") -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(MappingError) as info:
        load_mapping(platform, path=path)
    return str(info.value)


def test_two_fields_written_to_one_raw_key_are_rejected(tmp_path: Path) -> None:
    msg = _bad(tmp_path, "fields:\n  first_name: {path: name}\n  last_name: {path: name}\n")
    assert "'last_name'" in msg and "'first_name'" in msg and "name" in msg


def test_a_key_inside_another_written_key_is_rejected(tmp_path: Path) -> None:
    msg = _bad(tmp_path, "fields:\n  company: {path: address}\n  address.city: {path: address.city}\n")
    assert "'address.city'" in msg


def test_a_transform_without_inverse_must_be_read_only(tmp_path: Path) -> None:
    msg = _bad(tmp_path, "fields:\n  tags: {path: tags, transform: tags_set, style: objects}\n", "acquire")
    assert "'tags'" in msg and "no inverse" in msg
    m = load_mapping("acquire", override={"fields": {"tags": {"direction": "in"}}})
    assert "tags" not in m.writable


def test_a_mapping_that_cannot_round_trip_is_rejected(tmp_path: Path) -> None:
    # Emails read through a phone normalizer: no email survives the trip.
    msg = _bad(tmp_path, "fields:\n  emails: {path: email, transform: phone}\n")
    assert "'emails'" in msg and "cannot hold" in msg


def test_a_transform_for_the_wrong_kind_of_field_is_rejected(tmp_path: Path) -> None:
    assert "'first_name'" in _bad(tmp_path, "fields:\n  first_name: {path: firstName, transform: bool}\n")
    assert "'phones'" in _bad(tmp_path, "fields:\n  phones: {path: phone}\n")


def test_unknown_field_transform_or_direction_named(tmp_path: Path) -> None:
    assert "'nickname'" in _bad(tmp_path, "fields:\n  nickname: {path: nick}\n")
    assert "soundex" in _bad(tmp_path, "fields:\n  first_name: {path: firstName, transform: soundex}\n")
    assert "sideways" in _bad(tmp_path, "fields:\n  first_name: {path: firstName, direction: sideways}\n")


def test_overlapping_identity_partitions_are_rejected() -> None:
    with pytest.raises(MappingError, match="'phones'"):
        load_mapping("comm100", override={"fields": {"phones": {"types": ["Email"]}}})


def test_bad_yaml_and_wrong_platform(tmp_path: Path) -> None:
    assert "not valid YAML" in _bad(tmp_path, "fields: [unclosed\n")
    assert "expected 'gohighlevel'" in _bad(tmp_path, "platform: acquire\nfields:\n  first_name: {path: x}\n")
    with pytest.raises(MappingError, match="no shipped mapping"):
        load_mapping("myspace")
