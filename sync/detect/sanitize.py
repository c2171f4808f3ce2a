"""What a pulled payload must be before it is staged: clean and bounded (docs/decisions.md,
"Hostile payloads").

* Control characters (C0 except tab, newline and carriage return; DEL) are stripped from every
  string, keys included, and a lone surrogate (not encodable as UTF-8) becomes U+FFFD: a NUL
  is refused by PostgreSQL and would otherwise be copied to every other platform.
* NaN and Infinity are refused (JSON has no such numbers; PostgreSQL's JSONB refuses them).
* A payload over :data:`MAX_PAYLOAD_BYTES` (its canonical JSON in UTF-8) is refused, as is a
  canonical value longer than :data:`MAX_FIELD_CHARS` (:data:`MAX_CUSTOM_FIELD_CHARS` for custom
  fields) or a list of more than :data:`MAX_ITEMS` values.

A refusal is a :class:`BadPayload` whose message is the reason the record is quarantined with.
The serialisation done for the checks is the one the payload hash is taken of, so a clean
payload costs one ``json.dumps`` and one regular-expression scan, as its hash did before.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

#: The largest payload staged: its canonical JSON, in UTF-8 bytes.
MAX_PAYLOAD_BYTES = 100_000
#: The longest canonical text value (a name, an email, a phone, a tag, an address line...).
MAX_FIELD_CHARS = 1_000
#: The longest custom field value.
MAX_CUSTOM_FIELD_CHARS = 10_000
#: The most values of one list or set field (emails, phones, tags, identities).
MAX_ITEMS = 1_000

_STRIP = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# In the canonical JSON (ensure_ascii=False) control characters are escaped (\u00XX, \b, \f) and
# DEL and lone surrogates appear as themselves. A hit may be a false alarm (a literal backslash
# before "b"): it only costs the walk that finds nothing to clean.
_SUSPECT = re.compile(r"\\u00[01][0-9a-fA-F]|\\u007[fF]|\\[bf]|[\x7f\ud800-\udfff]")


class BadPayload(ValueError):
    """A payload that cannot be staged as it is; the message says why."""


def canonical_json(payload: Any) -> str:
    """The canonical JSON the payload hash is taken of (sync.store.payload_hash)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def clean_text(value: str) -> str:
    """``value`` without control characters, lone surrogates replaced."""
    value = _STRIP.sub("", value)
    return _SURROGATE.sub("\ufffd", value)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def sanitize(payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The payload cleaned of control characters, and its SHA-256 hash (hex), or BadPayload
    for NaN/Infinity or a payload over :data:`MAX_PAYLOAD_BYTES`."""
    try:
        text = canonical_json(payload)
    except ValueError as exc:
        raise BadPayload(f"a number is NaN or Infinity ({exc})") from None
    except RecursionError:
        raise BadPayload("the payload nests too deep") from None
    except TypeError as exc:
        raise BadPayload(f"a value is not JSON: {exc}") from None
    if _SUSPECT.search(text):
        cleaned = _clean(payload)
        if cleaned != payload:
            payload = cleaned
            text = canonical_json(payload)
    data = text.encode("utf-8")
    if len(data) > MAX_PAYLOAD_BYTES:
        raise BadPayload(f"payload of {len(data):,} bytes is over the {MAX_PAYLOAD_BYTES:,}-byte maximum")
    return payload, hashlib.sha256(data).hexdigest()


def check_fields(fields: Mapping[str, Any]) -> None:
    """BadPayload when a canonical value is over its documented maximum."""
    for name, value in fields.items():
        limit = MAX_CUSTOM_FIELD_CHARS if name.startswith("custom.") else MAX_FIELD_CHARS
        if isinstance(value, str):
            if len(value) > limit:
                raise BadPayload(f"{name} of {len(value):,} characters is over the {limit:,}-character maximum")
        elif isinstance(value, (tuple, list, frozenset, set)):
            if len(value) > MAX_ITEMS:
                raise BadPayload(f"{name} has {len(value):,} values, over the maximum of {MAX_ITEMS:,}")
            for item in value:
                if isinstance(item, str) and len(item) > limit:
                    raise BadPayload(
                        f"a value of {name} of {len(item):,} characters is over the {limit:,}-character maximum"
                    )


def quarantine_text(value: Any, limit: int = 20_000) -> str:
    """A payload (or any value) as text safe to keep in the quarantine table: JSON where it can
    be, ASCII-escaped (no NUL, no surrogate), cut at ``limit`` characters."""
    try:
        text = json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError, RecursionError):
        try:
            text = ascii(value)
        except RecursionError:
            text = f"<{type(value).__name__} nested too deep to print>"
    if len(text) > limit:
        text = text[:limit] + f"... [{len(text) - limit:,} more characters cut]"
    return text


def reason_text(reason: str, limit: int = 2_000) -> str:
    """A quarantine reason without control characters, at most ``limit`` characters."""
    reason = clean_text(reason)
    return reason if len(reason) <= limit else reason[:limit] + "..."
