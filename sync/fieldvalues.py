"""Values typed by a person for a canonical field: parsed and validated in one place.

``contactsync conflicts --resolve ID --value TEXT`` and the web page's conflict override both go
through :func:`parse_field_value`, so a value the one refuses the other refuses too, and what
reaches the golden record is always the field's canonical JSON form (a string for a scalar, a
list of strings for emails / phones / tags / identities, a boolean for do_not_disturb) — never
a Python repr of whatever JSON was typed.

The text may be JSON (``"Ada"``, ``["a@x.com", "b@x.com"]``, ``true``, ``null``) or, for
convenience, plain text: a bare word for a text field, a comma-separated list for a list or set
field, ``true``/``false``/``yes``/``no`` for a yes/no field.
"""

from __future__ import annotations

import json
from typing import Any

from sync.canonical import FieldValue, coerce_value, field_kind, is_known_field, to_json_value
from sync.normalize import DEFAULT_REGION, InvalidValue, normalize_email, normalize_phone

MAX_TEXT = 2000

_KIND_WORDS = {
    "scalar": "a text value",
    "list": "a list of text values",
    "set": "a set of text values",
    "bool": "true or false",
}


class FieldValueError(ValueError):
    """A typed value that does not fit its field; the message says what was expected."""


def expected(field: str) -> str:
    """What a field holds, in words (for forms and messages)."""
    return _KIND_WORDS[field_kind(field)]


def _found(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "a string"


def parse_field_value(field: str, text: str, *, region: str = DEFAULT_REGION) -> Any:
    """Parse ``text`` typed for ``field`` and return its canonical JSON value (None: clear it).
    Raises :class:`FieldValueError` with a one-line reason."""
    if not is_known_field(field):
        raise FieldValueError(f"{field!r} is not a canonical field")
    try:
        value: Any = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        value = _plain(field, text)
    else:
        if field_kind(field) == "scalar" and isinstance(value, (bool, int, float)):
            value = text  # a postal code or a number typed bare is text
    return validate_field_value(field, value, region=region)


def _plain(field: str, text: str) -> Any:
    kind = field_kind(field)
    if kind in ("list", "set"):
        return [part.strip() for part in text.split(",") if part.strip()]
    if kind == "bool":
        word = text.strip().lower()
        if word in ("true", "yes", "on", "1"):
            return True
        if word in ("false", "no", "off", "0"):
            return False
        raise FieldValueError(f"{field} expects true or false, found {text!r}")
    return text


def validate_field_value(field: str, value: Any, *, region: str = DEFAULT_REGION) -> Any:
    """Check a JSON value against ``field``'s type and normalize it (emails lower-cased and
    syntax-checked, phones to E.164); returns the canonical JSON form."""
    kind = field_kind(field)
    if value is None:
        return None
    if kind == "bool":
        if not isinstance(value, bool):
            raise FieldValueError(f"{field} expects true or false, found {_found(value)}")
        return value
    if kind == "scalar":
        if isinstance(value, (int, float)) and not isinstance(value, bool) and field.startswith("custom."):
            value = str(value)
        if not isinstance(value, str):
            raise FieldValueError(f"{field} expects {expected(field)}, found {_found(value)}")
        value = value.strip()
        if "\x00" in value or len(value) > MAX_TEXT:
            raise FieldValueError(f"{field} expects text of at most {MAX_TEXT} characters without NUL")
        return value or None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FieldValueError(f"{field} expects {expected(field)}, found {_found(value)}")
    items = [v.strip() for v in value if v.strip()]
    try:
        if field == "emails":
            items = [normalize_email(v) for v in items]
        elif field == "phones":
            items = [normalize_phone(v, region) for v in items]
        elif field == "identities":
            for v in items:
                kind_, sep, rest = v.partition(":")
                if not sep or not kind_.strip() or not rest.strip():
                    raise FieldValueError(f"identities expects values like 'facebook:1234', found {v!r}")
    except InvalidValue as exc:
        raise FieldValueError(f"{field}: {exc}") from None
    ordered = list(dict.fromkeys(items))
    canonical: FieldValue = coerce_value(field, ordered)
    return to_json_value(canonical)


def show_value(value: Any) -> str:
    """A stored value for people: text as is, lists joined, nothing as an em dash."""
    if value is None or value == "" or value == []:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, str):
        return value
    return json.dumps(value)
