"""DM Champ's inferred behaviours: where its contact API page (seed 002) is silent or disagrees.

Each is a switch of the emulator (``DmChampEmulator(variants={...})``); the connector is right
under every variant, and ``connectors/dmchamp/probe.py`` measures which one an account runs.
"""

from __future__ import annotations

from connectors.probing import Behaviour

DUPLICATE_CREATE = "dmchamp.duplicate_create"
PHONE_LOOKUP = "dmchamp.phone_lookup"
DEFAULT_EMAIL = "dmchamp.default_email"

BEHAVIOURS: tuple[Behaviour, ...] = (
    Behaviour(
        name=DUPLICATE_CREATE,
        question="What does POST /contacts answer for a phone number that already has a contact?",
        variants=("409", "400", "200_existing"),
        emulator_default="409",
        source=(
            "002_a0692aed60cdcee2.txt (Create New Contact) and PLATFORMS.md: the docs say both "
            "'Contact already exists' (an error, status not given) and 'the existing contact is returned'"
        ),
    ),
    Behaviour(
        name=PHONE_LOOKUP,
        question="Does GET /contacts?phoneNumber= match 14155557181 and +14155557181 as one phone?",
        variants=("exact", "normalized"),
        emulator_default="exact",
        source="002_a0692aed60cdcee2.txt (Get Contact): 'must include valid country code', matching rule not given",
    ),
    Behaviour(
        name=DEFAULT_EMAIL,
        question="Does a create without an email store a placeholder email (the page shows an email default)?",
        variants=("none", "placeholder"),
        emulator_default="none",
        source=(
            "002_a0692aed60cdcee2.txt line 70: 'email ... Default: [email protected]' (the address is "
            "obfuscated in our copy; whether it is stored is not said)"
        ),
    ),
)
