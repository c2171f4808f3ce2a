"""Comm100's inferred behaviours: what the v4 contact page (seed 004) leaves open.

Each is a switch of :class:`~connectors.comm100.emulator.Comm100Emulator` (``variants=``), a
question ``connectors/comm100/probe.py`` answers against a real site, and a reading the
connector must survive (docs/platform-behaviours.md says what it does under each).
"""

from __future__ import annotations

from connectors.probing import Behaviour

SEED = "seeds/004_f529f22edda23b03.txt"

LIST_PAGING = "comm100.list_paging"
LIST_SHAPE = "comm100.list_shape"
UNDOCUMENTED_FIELDS = "comm100.undocumented_fields"
PUT_SEMANTICS = "comm100.put_semantics"
PUT_IDENTITIES = "comm100.put_identities"
IDENTITY_VALUES = "comm100.identity_values"

BEHAVIOURS: tuple[Behaviour, ...] = (
    Behaviour(
        name=LIST_PAGING,
        question="Does GET /global/contacts honour pageIndex/pageSize/sortBy/sortOrder?",
        variants=("honoured", "ignored_oldest_first", "ignored_arbitrary"),
        emulator_default="honoured",
        source=f"{SEED} lines 27-36: the parameters listed are filters only; no paging or sorting "
        "parameter is documented (they come from a Comm100 design doc). Ignored: the server pages "
        "in its own order (oldest first, or no order at all) through nextPage links.",
    ),
    Behaviour(
        name=LIST_SHAPE,
        question="Is the list response an object {contacts, nextPage, previousPage, total} or a bare array?",
        variants=("object", "array"),
        emulator_default="object",
        source=f"{SEED} line 39 says 'An array of Contact'; the sample response on line 53 is an "
        "object {contacts, nextPage, previousPage, total}.",
    ),
    Behaviour(
        name=UNDOCUMENTED_FIELDS,
        question="Are phone, company, address... (read, but not listed for POST/PUT) stored when written?",
        variants=("stored", "ignored"),
        emulator_default="stored",
        source=f"{SEED} lines 84-92 and 113-121: POST/PUT list only name, firstName, lastName, "
        "createTime, lastUpdatedTime, mergeToContactId, contactIdentities; the contact read on "
        "line 53 also has phone, company, title, mailingAddress, city, ...",
    ),
    Behaviour(
        name=PUT_SEMANTICS,
        question="Does PUT merge the body into the contact, or replace the contact (absent keys cleared)?",
        variants=("merge", "replace"),
        emulator_default="merge",
        source=f"{SEED} lines 111-121: PUT requires name (like a full representation) and says nothing of absent keys.",
    ),
    Behaviour(
        name=PUT_IDENTITIES,
        question="Do contactIdentities in a PUT replace the contact's identities or extend them?",
        variants=("replace", "extend"),
        emulator_default="replace",
        source=f"{SEED} line 121: contactIdentities[] 'The list of contact identities'; nothing on "
        "identities left out.",
    ),
    Behaviour(
        name=IDENTITY_VALUES,
        question="May one identity value (an email) sit on two live contacts?",
        variants=("unique", "shared"),
        emulator_default="unique",
        source=f"{SEED}: not documented either way.",
    ),
)
