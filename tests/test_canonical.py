"""The canonical contact and its flat field-dict view."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sync.canonical import (
    Address,
    Contact,
    Identity,
    fields_from_json,
    fields_to_json,
    is_known_field,
)

text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12)

contacts = st.builds(
    Contact,
    first_name=st.none() | text,
    last_name=st.none() | text,
    emails=st.lists(text, max_size=3, unique=True).map(tuple),
    phones=st.lists(text, max_size=3, unique=True).map(tuple),
    company=st.none() | text,
    address=st.builds(Address, city=st.none() | text, country=st.none() | text),
    tags=st.frozensets(text, max_size=4),
    do_not_disturb=st.none() | st.booleans(),
    custom_fields=st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), text, max_size=3),
    identities=st.frozensets(
        st.builds(Identity, type=st.sampled_from(["facebook", "externalid"]), value=text), max_size=2
    ),
)


@given(contacts)
def test_field_dict_round_trips(contact: Contact) -> None:
    fields = contact.to_fields()
    assert Contact.from_fields(fields).to_fields() == fields
    assert fields_from_json(fields_to_json(fields)) == fields


def test_empty_values_are_left_out() -> None:
    fields = Contact(first_name="Ada", tags=frozenset(), emails=()).to_fields()
    assert fields == {"first_name": "Ada"}


def test_known_fields() -> None:
    assert is_known_field("address.city")
    assert is_known_field("custom.plan")
    assert not is_known_field("custom.")
    assert not is_known_field("shoe_size")
