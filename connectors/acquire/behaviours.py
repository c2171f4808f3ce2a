"""Acquire's inferred behaviours: what the CRM contact pages (seeds 000, 001) leave open.

Each is a switch of :class:`~connectors.acquire.emulator.AcquireEmulator` (``variants=``), a
question ``connectors/acquire/probe.py`` answers against a real account, and a reading the
connector must survive (docs/platform-behaviours.md says what it does under each).
"""

from __future__ import annotations

from connectors.probing import Behaviour

SEEDS = "seeds/000_30c99bf19673d54e.txt, seeds/001_c62324db490ecb94.txt"

MERGE_RESULT = "acquire.merge_result"
CUSTOM_ATTRIBUTES = "acquire.custom_attributes"
PAGING_BASE = "acquire.paging_base"
MAX_LIMIT = "acquire.max_limit"
SEARCH = "acquire.search"

BEHAVIOURS: tuple[Behaviour, ...] = (
    Behaviour(
        name=MERGE_RESULT,
        question="After POST /crm/contact/merge, where are the loser's differing email/phone?",
        variants=("other_fields", "fill_empty", "dropped"),
        emulator_default="other_fields",
        source="seeds/000_30c99bf19673d54e.txt line 90 ('Merge contact'); PLATFORMS.md: 'differing "
        "details are kept on the primary (both emails)' without saying in which field. "
        "other_fields: fields.otherEmails/otherPhones (the emulator's invention); fill_empty: only "
        "the primary's empty email/phone take the loser's; dropped: nothing of the loser is kept.",
    ),
    Behaviour(
        name=CUSTOM_ATTRIBUTES,
        question="Is a fields key the account does not define yet (a new custom attribute) stored?",
        variants=("stored", "ignored"),
        emulator_default="stored",
        source="seeds/001_c62324db490ecb94.txt line 31: fields hold 'name, email, phone, & custom "
        "attributes'; seeds/000 lines 206-210: custom attributes have their own endpoints, so a "
        "contact write may well ignore an undefined one. Tags (line 28) have no documented write.",
    ),
    Behaviour(
        name=PAGING_BASE,
        question="Is the list's first page page=0 or page=1?",
        variants=("one", "zero"),
        emulator_default="one",
        source="PLATFORMS.md: 'page' inferred from the example body {'page':0,'limit':0,...}; the "
        "seeds document neither. one: page 1 is the first (page 0 too); zero: page 0 is the first "
        "and page 1 the second.",
    ),
    Behaviour(
        name=MAX_LIMIT,
        question="What is the largest limit, and is a larger one refused or clamped?",
        variants=("100_refused", "50_clamped", "500_refused"),
        emulator_default="100_refused",
        source="PLATFORMS.md: 'limit' is listed, no maximum documented.",
    ),
    Behaviour(
        name=SEARCH,
        question="What does the list's search parameter match?",
        variants=("substring", "exact", "none"),
        emulator_default="substring",
        source="PLATFORMS.md: 'search' appears in the example body only. substring: name, emails, "
        "phones contain it; exact: equals an email/phone as stored; none: ignored (everything listed).",
    ),
)
