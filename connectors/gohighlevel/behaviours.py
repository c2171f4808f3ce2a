"""GoHighLevel's inferred behaviours: where the seed page (003), the official OpenAPI spec and the
official SDK disagree or are silent.

Each is a switch of the emulator (``GoHighLevelEmulator(variants={...})``); the connector is
right under every variant, and ``connectors/gohighlevel/probe.py`` measures which one a location
runs.
"""

from __future__ import annotations

from connectors.probing import Behaviour

SEARCH_COUNT = "gohighlevel.search_count"
VERSION = "gohighlevel.version"
DUPLICATE_CREATE = "gohighlevel.duplicate_create"
DATE_FILTER = "gohighlevel.date_filter"

BEHAVIOURS: tuple[Behaviour, ...] = (
    Behaviour(
        name=SEARCH_COUNT,
        question="Does POST /contacts/search report its number of matches as `total` or as `count`?",
        variants=("total", "count"),
        emulator_default="total",
        source=(
            "reference/gohighlevel/apps/contacts.json ContactsSearchSuccessfulResponseDto has `count`; "
            "GoHighLevel's search doc and earlier captures show `total` (inferred)"
        ),
    ),
    Behaviour(
        name=VERSION,
        question="Which `Version` header values does the server take: the spec's 2021-07-28, the SDK's v3, or both?",
        variants=("both", "2021-07-28", "v3"),
        emulator_default="both",
        source=(
            "003_cc2180b50cbb807f.txt line 17-20 (Version, allowed 2021-04-15); contacts.json (2021-07-28); "
            "PyPI gohighlevel-api-client 3.x HighLevel.API_VERSION = 'v3'"
        ),
    ),
    Behaviour(
        name=DUPLICATE_CREATE,
        question="What does POST /contacts/ answer when the location refuses a duplicate email/phone?",
        variants=("400_meta", "400_plain", "allowed"),
        emulator_default="400_meta",
        source=(
            "contacts.json lists only 201/400/401/422 for POST /contacts/; the 400 body with "
            "`meta.contactId` is inferred; 'Allow Duplicate Contact' is a location setting"
        ),
    ),
    Behaviour(
        name=DATE_FILTER,
        question="Is the value of a `dateUpdated` range filter in /contacts/search an ISO string or epoch ms?",
        variants=("iso", "epoch_ms"),
        emulator_default="iso",
        source=(
            "GoHighLevel search doc: range with gte/lte, value format not given; results carry ISO "
            "`dateUpdated` while `searchAfter` carries epoch ms (inferred either way)"
        ),
    ),
)
