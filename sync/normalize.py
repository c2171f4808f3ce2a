"""Normalization of identity keys: email, phone (E.164) and channel identity values.

A value that does not normalize raises :class:`InvalidValue` with the reason; callers keep the
raw payload and report the reason (it is never dropped silently, never guessed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email

DEFAULT_REGION = "US"

# Already E.164: "+" then 8..15 digits, no leading zero in the country code. Values from
# GoHighLevel, DM Champ and our own writes are mostly in this form, so they skip the parser.
_E164 = re.compile(r"^\+[1-9]\d{7,14}$")
_PHONE_JUNK = re.compile(r"[\s().\-/]")


class InvalidValue(ValueError):
    """A value that cannot be normalized, with the reason. Carries the kind, not the value,
    in its message so it can be logged without leaking personal data needlessly."""

    def __init__(self, kind: str, value: str, reason: str) -> None:
        super().__init__(f"invalid {kind}: {reason}")
        self.kind = kind
        self.value = value
        self.reason = reason


@dataclass(frozen=True, slots=True)
class IdentityKey:
    """A normalized matching key: kind is ``email``, ``phone`` or ``identity:<type>``."""

    kind: str
    value: str


@lru_cache(maxsize=262_144)
def normalize_email(raw: str) -> str:
    """Trim, syntax-check (no DNS) and lower-case an email address."""
    value = raw.strip()
    if not value:
        raise InvalidValue("email", raw, "empty")
    try:
        # test_environment: the reserved ".test" domain is a valid address here (test accounts
        # use it); syntax and the other special-use names (.invalid, .local, ...) still fail.
        result = validate_email(value, check_deliverability=False, allow_smtputf8=True, test_environment=True)
    except EmailNotValidError as exc:
        raise InvalidValue("email", raw, str(exc)) from None
    return result.normalized.lower()


def normalize_phone(raw: str, default_region: str = DEFAULT_REGION) -> str:
    """Parse a phone number to E.164, using ``default_region`` for national numbers."""
    value = raw.strip()
    if _E164.match(value):
        return value
    return _parse_phone(value, default_region)


@lru_cache(maxsize=262_144)
def _parse_phone(value: str, default_region: str) -> str:
    compact = _PHONE_JUNK.sub("", value)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if _E164.match(compact):
        return compact
    if not compact:
        raise InvalidValue("phone", value, "empty")
    try:
        number = phonenumbers.parse(compact, None if compact.startswith("+") else default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidValue("phone", value, str(exc)) from None
    if not phonenumbers.is_possible_number(number):
        raise InvalidValue("phone", value, "not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


_IDENTITY_TYPE_ALIASES = {
    "email": "email",
    "sms": "phone",
    "whatsapp": "whatsapp",
    "externalid": "externalid",
    "ssoid": "ssoid",
}


def normalize_identity_type(kind: str) -> str:
    """Identity types are case-insensitive across platforms (Comm100 writes "Twitter" and
    "twitter"); the canonical type is lower-case."""
    kind = kind.strip().lower()
    if not kind:
        raise InvalidValue("identity", kind, "empty identity type")
    return _IDENTITY_TYPE_ALIASES.get(kind, kind)


def normalize_identity(kind: str, value: str, default_region: str = DEFAULT_REGION) -> IdentityKey:
    """Normalize a channel identity. Email and phone-like identities normalize as those kinds
    (so a Comm100 ``Email`` identity matches an email elsewhere); others are trimmed, with
    screen names lower-cased."""
    t = normalize_identity_type(kind)
    if t == "email":
        return IdentityKey("email", normalize_email(value))
    if t in ("phone", "whatsapp"):
        return IdentityKey("phone", normalize_phone(value, default_region))
    v = value.strip()
    if not v:
        raise InvalidValue("identity", value, f"empty {t} value")
    if t in ("twitter", "instagram", "telegram"):
        v = v.lstrip("@").lower()
    return IdentityKey(f"identity:{t}", v)
