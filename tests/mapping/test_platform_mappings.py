"""Behaviour of the shipped mappings on concrete payloads of each platform."""

from __future__ import annotations

from importlib import resources

from connectors.registry import PLATFORMS
from sync.mapping import Issue, load_mapping
from sync.normalize import IdentityKey

ACQUIRE = {
    "id": 12,
    "archive": "no",
    "companyId": None,
    "dateCreated": "2020-09-09T10:01:36.000Z",
    "dateUpdated": None,
    "fields": {
        "name": "Ada Lovelace",
        "email": "Ada@Example.com",
        "phone": "+1 415 555 2671",
        "city": "London",
        "countryId": 44,
        "otherEmails": ["ada@analytical.org", "not-an-email"],
        "plan": "gold",
    },
    "tags": [{"id": 3, "name": "vip"}],
}


def test_shipped_mappings_are_package_data() -> None:
    files = resources.files("mappings")
    for platform in PLATFORMS:
        assert files.joinpath(f"{platform}.yaml").is_file()
        assert load_mapping(platform).platform == platform


def test_acquire_read_normalizes_and_reports_invalid_values() -> None:
    result = load_mapping("acquire").read(ACQUIRE)
    assert result.fields == {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "emails": ("ada@example.com", "ada@analytical.org"),
        "phones": ("+14155552671",),
        "address.city": "London",
        "tags": frozenset({"vip"}),
        "custom.plan": "gold",
    }
    assert [i.field for i in result.issues] == ["emails"]
    assert isinstance(result.issues[0], Issue) and result.issues[0].reason


def test_acquire_changes_send_only_changed_keys_under_fields() -> None:
    m = load_mapping("acquire")
    changes = m.changes({"last_name": "King", "emails": ("ada@example.com", "ada@analytical.org", "a@k.io")}, ACQUIRE)
    # The unchanged primary keeps its raw spelling; otherEmails (a merge's, inferred) is never
    # added to: a@k.io cannot be held there.
    assert changes == {"fields": {"name": "Ada King"}}
    # ... but an item no longer wanted leaves the list the platform has (the invalid value stays).
    assert m.changes({"emails": ("ada@example.com",)}, ACQUIRE) == {"fields": {"otherEmails": ["not-an-email"]}}
    assert "otherEmails" not in m.write({"emails": ("a@k.io", "b@k.io")})["fields"]
    assert m.changes(m.read(ACQUIRE).fields, ACQUIRE) == {}
    assert m.changes({"custom.plan": None}, ACQUIRE) == {"fields": {"plan": None}}


def test_acquire_tags_are_read_only_and_country_id_is_not_custom() -> None:
    m = load_mapping("acquire")
    assert "tags" in m.readable and "tags" not in m.writable
    assert m.write({"tags": frozenset({"new"})}, ACQUIRE) == ACQUIRE
    assert "custom.countryId" not in m.read(ACQUIRE).fields


def test_acquire_name_split_and_what_it_cannot_hold() -> None:
    m = load_mapping("acquire")
    assert m.write({"first_name": "Ada", "last_name": "King Lovelace"})["fields"]["name"] == "Ada King Lovelace"
    assert m.holds({"first_name": "Ada", "last_name": "King Lovelace"})
    assert not m.holds({"first_name": "Mary Ann", "last_name": "Smith"})
    assert not m.holds({"last_name": "Smith"})
    assert m.fit({"first_name": "Mary Ann", "last_name": "Smith"}) == {"first_name": "Mary", "last_name": "Ann Smith"}


def test_list_keeps_raw_formatting_of_unchanged_items() -> None:
    m = load_mapping("acquire")
    raw = {"fields": {"phone": "(415) 555-2671", "otherPhones": ["+44 7700 900123"]}}
    out = m.write({"phones": ("+14155552671", "+447700900123"), "address.city": "Leeds"}, raw)
    assert out["fields"] == {"phone": "(415) 555-2671", "otherPhones": ["+44 7700 900123"], "city": "Leeds"}
    # otherPhones (a merge's) is never added to: the swapped-out primary cannot go there.
    out = m.write({"phones": ("+447700900123", "+14155552671")}, raw)
    assert out["fields"] == {"phone": "+44 7700 900123", "otherPhones": []}


def test_default_region_reads_national_numbers() -> None:
    raw = {"fields": {"phone": "020 7946 0958"}}
    assert load_mapping("acquire", default_region="GB").read(raw).fields["phones"] == ("+442079460958",)
    us = load_mapping("acquire", default_region="US").read(raw)
    assert "phones" not in us.fields and us.issues[0].field == "phones"


def test_dmchamp_updates_only_updatable_keys() -> None:
    m = load_mapping("dmchamp")
    base = {
        "phoneNumber": "+14155552671",
        "firstName": "Ada",
        "instagramId": "@Ada",
        "is_bot_active": True,
        "do_not_disturb": False,
    }
    assert m.read(base).fields["identities"] == frozenset({"instagram:ada"})
    changes = m.changes(
        {
            "phones": ("+14155550000",),
            "first_name": "Bo",
            "do_not_disturb": True,
            "identities": frozenset({"instagram:bo"}),
        },
        base,
    )
    assert changes == {"firstName": "Bo", "do_not_disturb": True}
    created = m.write({"phones": ("+14155552671",), "emails": ("a@x.io",), "identities": frozenset({"externalid:A-1"})})
    assert created == {"phoneNumber": "+14155552671", "email": "a@x.io", "externalId": "A-1"}


def test_gohighlevel_tags_go_through_endpoints_and_custom_fields_by_id() -> None:
    m = load_mapping("gohighlevel", override={"fields": {"custom.*": {"ids": {"F1": "plan"}}}})
    base = {
        "id": "c1",
        "firstName": "Ada",
        "tags": ["a", "b"],
        "customFields": [{"id": "F1", "value": "gold"}, {"id": "F2", "value": "x"}],
    }
    assert m.read(base).fields == {
        "first_name": "Ada",
        "tags": frozenset({"a", "b"}),
        "custom.plan": "gold",
        # F2 names no key (neither the ids nor a key the connector gave it): not read, so a raw
        # id never becomes a field name elsewhere.
    }
    fields = {"tags": frozenset({"b", "c"}), "custom.plan": "silver", "custom.score": "7"}
    assert m.endpoint_fields == frozenset({"tags"})
    assert m.changes(fields, base) == {
        "customFields": [{"id": "F1", "field_value": "silver"}, {"key": "score", "field_value": "7"}]
    }
    assert m.tag_changes(fields, base) == (["c"], ["a"])
    created = m.write({"first_name": "Bo", "tags": frozenset({"vip"}), "custom.plan": "gold"})
    assert created == {"firstName": "Bo", "tags": ["vip"], "customFields": [{"id": "F1", "field_value": "gold"}]}


def test_gohighlevel_company_is_not_sent_on_update() -> None:
    m = load_mapping("gohighlevel")
    assert m.changes({"company": "Analytical Engines"}, {"id": "c1"}) == {}
    assert m.write({"company": "Analytical Engines"}) == {"companyName": "Analytical Engines"}


def test_comm100_identities_and_name_always_sent() -> None:
    m = load_mapping("comm100")
    base = {
        "id": "g1",
        "name": "Ada L.",
        "firstName": "Ada",
        "phone": "(415) 555-2671",
        "contactIdentities": [
            {"id": "1", "contactIdentityType": "Email", "value": "ADA@x.com"},
            {"id": "2", "contactIdentityType": "Twitter", "value": "@AdaL"},
            {"id": "3", "contactIdentityType": "SMS", "value": "+44 7700 900123"},
        ],
    }
    fields = m.read(base).fields
    assert fields == {
        "first_name": "Ada",
        "emails": ("ada@x.com",),
        "phones": ("+14155552671", "+447700900123"),
        "identities": frozenset({"twitter:adal"}),
    }
    changes = m.changes({"company": "Engines"}, base)
    assert changes == {"company": "Engines", "name": "Ada L."}
    changes = m.changes({"identities": frozenset({"twitter:adal", "externalid:A-1"})}, base)
    assert changes["contactIdentities"] == base["contactIdentities"] + [
        {"contactIdentityType": "externalID", "value": "A-1"}
    ]
    assert changes["name"] == "Ada L."
    # A new contact gets a name derived from first/last, or its first email when nameless.
    assert m.write({"first_name": "Bo", "last_name": "Li"})["name"] == "Bo Li"
    assert m.write({"emails": ("bo@x.io",)})["name"] == "bo@x.io"
    assert m.changes({"last_name": "Lovelace"}, base)["name"] == "Ada Lovelace"


def test_keys_of_a_field_dict() -> None:
    m = load_mapping("comm100")
    keys = m.keys(
        {
            "emails": ("a@x.io",),
            "phones": ("+14155552671",),
            "identities": frozenset({"facebook:12", "whatsapp:+447700900123"}),
        }
    )
    assert keys == [
        IdentityKey("email", "a@x.io"),
        IdentityKey("phone", "+14155552671"),
        IdentityKey("identity:facebook", "12"),
        IdentityKey("phone", "+447700900123"),
    ]
