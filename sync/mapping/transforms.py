"""The lenses a mapping is built from: each one reads some canonical fields out of raw payload
paths and writes them back (DESIGN.md, "Mappings are lenses").

A lens is called by :class:`sync.mapping.lens.FieldMapping` only when the canonical value it
covers actually changes ("smart write"), so the raw formatting of an unchanged value (a phone
written ``+1 415 555 2671``, an email with capitals) survives a write untouched. That is how both
round-trip laws hold even though reading normalizes.

Each lens also says which canonical values it can hold (:meth:`Lens.holds`): Acquire's single
``name`` cannot hold a first name with a space in it when split on the first space, a single
``email`` slot holds one address. Values outside that domain are what ``FieldMapping.fit`` trims.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from sync.canonical import CUSTOM_PREFIX, FieldDict, FieldValue, is_empty, members
from sync.mapping import paths
from sync.normalize import InvalidValue, normalize_email, normalize_identity, normalize_identity_type, normalize_phone


@dataclass(frozen=True)
class Issue:
    """A raw value that did not normalize: kept in the raw payload, reported here."""

    field: str
    reason: str


# A compiled read: (raw payload, fields out, issues out) -> None. See Lens.reader.
Reader = Callable[[dict[str, Any], FieldDict, list[Issue]], None]


def _getter(path: str) -> Callable[[Any], Any]:
    """``paths.get(raw, path)`` as a closure specialised to the path's depth (no split, no
    loop for the one- and two-segment paths mappings use)."""
    segs = paths.split(path)
    if len(segs) == 1:
        (key,) = segs

        def get1(raw: Any) -> Any:
            return raw.get(key) if type(raw) is dict else paths.get(raw, path)

        return get1
    if len(segs) == 2:
        a, b = segs

        def get2(raw: Any) -> Any:
            node = raw.get(a) if type(raw) is dict else None
            return node.get(b) if type(node) is dict else paths.get(raw, path)

        return get2
    return lambda raw: paths.get(raw, path)


def _putter(path: str) -> Callable[[dict[str, Any], Any], None]:
    """``paths.put(raw, path, value)`` for a non-blank ``value``, specialised to a top-level key."""
    segs = paths.split(path)
    if len(segs) == 1:
        (key,) = segs

        def put1(raw: dict[str, Any], value: Any) -> None:
            if paths._is_blank(value):
                paths.put(raw, path, value)  # the general rule (a blank on a new key is a no-op)
            else:
                raw[key] = value

        return put1
    return lambda raw, value: paths.put(raw, path, value)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(value: Any) -> str | None:
    """A raw scalar as stripped text; None for blanks and non-scalars."""
    if _blank(value) or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip()
    return text or None


def _clean(value: Any) -> TypeGuard[str]:
    """A canonical string: non-empty and already stripped."""
    return isinstance(value, str) and bool(value) and value == value.strip()


# (kind, text, region) -> normalized item. A planning run normalizes each value more than once
# (pulled, then read back from the payload rendered for a create); bounded, cleared when full.
_NORMALIZED: dict[tuple[str, str, str], str] = {}
_NORMALIZED_MAX = 200_000


def normalize_item(kind: str, value: Any, region: str) -> str:
    """Normalize one list item of kind ``email``, ``phone`` or ``string``; raises InvalidValue."""
    if type(value) is str:
        key = (kind, value, region)
        hit = _NORMALIZED.get(key)
        if hit is None:
            hit = _normalize_item(kind, value, region)  # raises: nothing cached
            if len(_NORMALIZED) >= _NORMALIZED_MAX:
                _NORMALIZED.clear()
            _NORMALIZED[key] = hit
        return hit
    return _normalize_item(kind, value, region)


# The local part of an address that email_validator accepts as it is (a subset of its ASCII
# dot-atom rule: no quoting, no characters that need care), and a cap well inside its length
# limits. Such an address normalizes to itself with its domain normalized, lower-cased.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9_+\-]+(?:\.[A-Za-z0-9_+\-]+)*\Z")
_PLAIN_DOMAIN = re.compile(r"[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+\Z")
_PLAIN_MAX = 200
# Domain -> its normalized form, or None when it does not validate. A domain's verdict does not
# depend on the local part, and a handful of domains carry most addresses.
_DOMAINS: dict[str, str | None] = {}
_DOMAINS_MAX = 100_000


def _plain_email(text: str) -> str | None:
    """``normalize_email(text)`` for a plain ASCII address, validating only its domain (once per
    domain): email_validator costs ~50 µs an address, and a backfill reads millions that miss
    every cache. None when the address is not plain (the caller validates it in full)."""
    local, at, domain = text.rpartition("@")
    if not at or len(text) > _PLAIN_MAX or not _PLAIN_LOCAL.match(local) or not _PLAIN_DOMAIN.match(domain):
        return None
    if "xn--" in domain.lower():
        return None  # punycode: its Unicode form may be longer; leave it to the full check
    try:
        norm = _DOMAINS[domain]
    except KeyError:
        try:
            norm = normalize_email("a@" + domain).partition("@")[2]
        except InvalidValue:
            norm = None
        if len(_DOMAINS) >= _DOMAINS_MAX:
            _DOMAINS.clear()
        _DOMAINS[domain] = norm
    if norm is None:
        return None  # the full validation raises with its own reason
    return (local + "@" + norm).lower()


# A US number written nationally, once punctuation is removed (normalize_phone's compaction):
# ten digits, the first 2-9. phonenumbers parses that to +1 and the digits (the US numbering
# plan accepts every ten-digit number as possible), at ~30 µs where this is ~1 µs.
_PHONE_PUNCT = re.compile(r"[\s().\-/]")
_US_NATIONAL = re.compile(r"[2-9]\d{9}\Z")


def _us_national(text: str, region: str) -> str | None:
    """``normalize_phone(text, "US")`` for a nationally written US number, else None."""
    if region != "US":
        return None
    compact = _PHONE_PUNCT.sub("", text)
    return "+1" + compact if _US_NATIONAL.match(compact) else None


def _normalize_item(kind: str, value: Any, region: str) -> str:
    text = _text(value)
    if text is None:
        raise InvalidValue(kind, str(value), "empty or not a string")
    if kind == "email":
        return _plain_email(text) or normalize_email(text)
    if kind == "phone":
        return _us_national(text, region) or normalize_phone(text, region)
    return text


class Lens:
    """Base of all lenses. ``fields`` are canonical names (``custom.*`` for the custom family),
    ``paths`` the raw dotted paths the lens reads and writes."""

    transform: str = ""
    invertible: bool = True  # False: read-only (no way to write the value back)

    def __init__(self, fields: tuple[str, ...], paths_: tuple[str, ...], direction: str) -> None:
        self.fields = fields
        self.paths = paths_
        self.direction = direction

    @property
    def readable(self) -> bool:
        return self.direction in ("both", "in")

    @property
    def writable(self) -> bool:
        return self.direction in ("both", "out")

    def owns(self, name: str) -> bool:
        """True when the canonical field ``name`` is covered by this lens."""
        return name in self.fields

    def read(self, raw: dict[str, Any], region: str) -> tuple[FieldDict, list[Issue]]:
        raise NotImplementedError

    def reader(self, region: str) -> Reader:
        """``read`` compiled for one region: ``reader(raw, out, issues)`` adds the values to
        ``out`` and the issues to ``issues``. Lenses on hot paths return a closure that does
        the common cases without the general code (same results); others wrap ``read``."""
        read = self.read

        def run(raw: dict[str, Any], out: FieldDict, issues: list[Issue]) -> None:
            values, found = read(raw, region)
            if values:
                out.update(values)
            if found:
                issues.extend(found)

        return run

    def fresh_writer(self, region: str) -> Callable[[FieldDict, dict[str, Any]], None]:
        """``write(desired, raw, region, set(desired))`` for a payload holding none of this
        lens's paths and ``desired`` holding only non-empty values (a create), compiled;
        lenses on hot paths specialise it."""
        write = self.write

        def run(desired: FieldDict, raw: dict[str, Any]) -> None:
            write(desired, raw, region, set(desired))

        return run

    def write(self, desired: FieldDict, raw: dict[str, Any], region: str, changed: set[str]) -> None:
        """Set the raw paths so that reading gives ``desired`` (absent keys: empty).
        ``changed`` names the owned fields whose value differs from what ``raw`` holds."""
        raise NotImplementedError

    def holds(self, values: FieldDict, region: str) -> bool:
        """Whether the platform can hold these canonical values (owned, non-empty ones)."""
        raise NotImplementedError

    def diff(self, path: str, base: Any, new: Any) -> Any:
        """What an update sends for ``path`` when it changed from ``base`` to ``new``."""
        return new


class ScalarLens(Lens):
    """One canonical scalar (``identity``) or boolean (``bool``) at one raw path."""

    def __init__(self, field: str, path: str, direction: str, kind: str, clear: Any) -> None:
        super().__init__((field,), (path,), direction)
        self.transform = kind
        self.kind = kind
        self.clear = clear

    def read(self, raw: dict[str, Any], region: str) -> tuple[FieldDict, list[Issue]]:
        (field,), (path,) = self.fields, self.paths
        value = paths.get(raw, path)
        if _blank(value):
            return {}, []
        if self.kind == "bool":
            parsed = _parse_bool(value)
            if parsed is None:
                return {}, [Issue(field, "not a boolean")]
            return {field: parsed}, []
        text = _text(value)
        if text is None:
            return {}, [Issue(field, f"expected text, found {type(value).__name__}")]
        return {field: text}, []

    def reader(self, region: str) -> Reader:
        (field,), (path,) = self.fields, self.paths
        get, read, boolean = _getter(path), self.read, self.kind == "bool"

        def run(raw: dict[str, Any], out: FieldDict, issues: list[Issue]) -> None:
            value = get(raw)
            if value is None:
                return
            kind = type(value)
            if kind is str and not boolean:
                text = value.strip()
                if text:
                    out[field] = text
                return
            if kind is bool and boolean:
                out[field] = value
                return
            values, found = read(raw, region)
            if values:
                out.update(values)
            if found:
                issues.extend(found)

        return run

    def write(self, desired: FieldDict, raw: dict[str, Any], region: str, changed: set[str]) -> None:
        (field,), (path,) = self.fields, self.paths
        value = desired.get(field)
        paths.put(raw, path, self.clear if is_empty(value) else value)

    def fresh_writer(self, region: str) -> Callable[[FieldDict, dict[str, Any]], None]:
        (field,), (path,) = self.fields, self.paths
        put = _putter(path)

        def run(desired: FieldDict, raw: dict[str, Any]) -> None:
            put(raw, desired[field])  # non-empty (fresh_writer's contract): put always sets

        return run

    def holds(self, values: FieldDict, region: str) -> bool:
        value = values.get(self.fields[0])
        if is_empty(value):
            return True
        return isinstance(value, bool) if self.kind == "bool" else _clean(value)


def _parse_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "yes", "1", "on"):
            return True
        if low in ("false", "no", "0", "off"):
            return False
    return None


class NameLens(Lens):
    """A single full-name key read into first/last name (``name_split``) and joined back
    (``name_join``). ``split="first"``: the first word is the first name; ``"last"``: the last
    word is the last name. A lone word is always the first name."""

    transform = "name_split"

    def __init__(self, first: str | None, last: str | None, path: str, direction: str, split: str, clear: Any) -> None:
        super().__init__(tuple(f for f in (first, last) if f), (path,), direction)
        self.first, self.last, self.split, self.clear = first, last, split, clear

    def _parts(self, text: str) -> tuple[str | None, str | None]:
        words = text.split()
        if len(words) == 1:
            return words[0], None
        if self.split == "first":
            return words[0], " ".join(words[1:])
        return " ".join(words[:-1]), words[-1]

    def read(self, raw: dict[str, Any], region: str) -> tuple[FieldDict, list[Issue]]:
        text = _text(paths.get(raw, self.paths[0]))
        if text is None:
            return {}, []
        first, last = self._parts(text)
        out: FieldDict = {}
        if self.first and first:
            out[self.first] = first
        if self.last and last:
            out[self.last] = last
        return out, []

    def reader(self, region: str) -> Reader:
        get, parts, first_f, last_f = _getter(self.paths[0]), self._parts, self.first, self.last

        def run(raw: dict[str, Any], out: FieldDict, issues: list[Issue]) -> None:
            text = _text(get(raw))
            if text is None:
                return
            first, last = parts(text)
            if first_f and first:
                out[first_f] = first
            if last_f and last:
                out[last_f] = last

        return run

    def write(self, desired: FieldDict, raw: dict[str, Any], region: str, changed: set[str]) -> None:
        current = _text(paths.get(raw, self.paths[0]))
        first, last = self._parts(current) if current else (None, None)
        # A lens over only one of the two parts keeps the other part as it is on the platform.
        if self.first:
            first = desired.get(self.first)  # type: ignore[assignment]
        if self.last:
            last = desired.get(self.last)  # type: ignore[assignment]
        joined = " ".join(p for p in (first, last) if p)
        paths.put(raw, self.paths[0], joined or self.clear)

    def fresh_writer(self, region: str) -> Callable[[FieldDict, dict[str, Any]], None]:
        # No name yet: the parts this lens covers, joined (a part it does not cover is absent).
        first_f, last_f, clear, path = self.first, self.last, self.clear, self.paths[0]

        def run(desired: FieldDict, raw: dict[str, Any]) -> None:
            first = desired.get(first_f) if first_f else None
            last = desired.get(last_f) if last_f else None
            joined = " ".join(p for p in (first, last) if p)  # type: ignore[misc]
            paths.put(raw, path, joined or clear)

        return run

    def holds(self, values: FieldDict, region: str) -> bool:
        first = values.get(self.first) if self.first else None
        last = values.get(self.last) if self.last else None
        for part in (first, last):
            if part is not None and not (_clean(part) and " ".join(part.split()) == part):
                return False
        first_words = first.split() if isinstance(first, str) else []
        last_words = last.split() if isinstance(last, str) else []
        if last_words and not first_words:
            return False  # a lone word reads back as the first name
        if self.split == "first":
            return len(first_words) <= 1
        return len(last_words) <= 1 and (bool(last_words) or len(first_words) <= 1)


class ListLens(Lens):
    """An ordered list of emails / phones / strings held in a scalar primary slot and/or a
    list of the rest (``list_first_rest``: Acquire ``email`` + ``otherEmails``; ``email`` /
    ``phone``: one scalar slot; ``list``: one list slot). Items are normalized on read."""

    def __init__(
        self,
        field: str,
        first: str | None,
        rest: str | None,
        item: str,
        direction: str,
        transform: str,
        clear: Any,
        *,
        write_rest: bool = True,
    ) -> None:
        super().__init__((field,), tuple(p for p in (first, rest) if p), direction)
        self.first, self.rest, self.item, self.transform, self.clear = first, rest, item, transform, clear
        # False: the rest list is read, never written (Acquire's otherEmails/otherPhones: a
        # merge may put them there, but they are no documented field to write).
        self.write_rest = write_rest

    def _raw_items(self, raw: dict[str, Any]) -> list[tuple[str, Any]]:
        items: list[tuple[str, Any]] = []
        if self.first:
            value = paths.get(raw, self.first)
            if not _blank(value):
                items.append(("first", value))
        if self.rest:
            values = paths.get(raw, self.rest)
            if isinstance(values, list):
                items.extend(("rest", v) for v in values if not _blank(v))
            elif not _blank(values):
                items.append(("rest", values))
        return items

    def read(self, raw: dict[str, Any], region: str) -> tuple[FieldDict, list[Issue]]:
        field = self.fields[0]
        out: list[str] = []
        issues: list[Issue] = []
        for _, value in self._raw_items(raw):
            try:
                norm = normalize_item(self.item, value, region)
            except InvalidValue as exc:
                issues.append(Issue(field, exc.reason))
                continue
            if norm not in out:
                out.append(norm)
        return ({field: tuple(out)} if out else {}), issues

    def reader(self, region: str) -> Reader:
        field, item = self.fields[0], self.item
        first = _getter(self.first) if self.first else None
        rest = _getter(self.rest) if self.rest else None

        def run(raw: dict[str, Any], out: FieldDict, issues: list[Issue]) -> None:
            values: list[Any] = []
            if first is not None:
                value = first(raw)
                # (``_blank``, inlined)
                if value is not None and not (isinstance(value, str) and not value.strip()):
                    values.append(value)
            if rest is not None:
                more = rest(raw)
                if more is None:
                    pass
                elif isinstance(more, list):
                    values.extend(v for v in more if not _blank(v))
                elif not _blank(more):
                    values.append(more)
            if not values:
                return
            found: list[str] = []
            for value in values:
                try:
                    norm = normalize_item(item, value, region)
                except InvalidValue as exc:
                    issues.append(Issue(field, exc.reason))
                    continue
                if norm not in found:
                    found.append(norm)
            if found:
                out[field] = tuple(found)

        return run

    def write(self, desired: FieldDict, raw: dict[str, Any], region: str, changed: set[str]) -> None:
        want = list(members(desired.get(self.fields[0])))
        formats: dict[str, Any] = {}
        invalid: list[Any] = []
        for _, value in self._raw_items(raw):
            try:
                formats.setdefault(normalize_item(self.item, value, region), value)
            except InvalidValue:
                invalid.append(value)  # never dropped: kept in the list slot when there is one
        values = [formats.get(n, n) for n in want]
        if self.first and self.rest and not self.write_rest:
            paths.put(raw, self.first, values[0] if values else self.clear)
            # The rest list is never introduced nor added to; items the platform put there
            # (a merge) that are no longer wanted are taken out of the list it has.
            held = paths.get(raw, self.rest)
            if isinstance(held, list) and held:
                wanted = set(want[1:])
                # (an invalid item is never dropped)
                kept = [v for v in held if _normal_or_none(self.item, v, region) in wanted | {None}]
                if kept != held:
                    paths.put(raw, self.rest, kept, force=True)
        elif self.first and self.rest:
            paths.put(raw, self.first, values[0] if values else self.clear)
            # The rest list is always set when the field changes (even to []): an update built
            # on a stale base must not leave items the platform added meanwhile (a merge).
            paths.put(raw, self.rest, values[1:] + invalid, force=bool(values))
        elif self.first:
            paths.put(raw, self.first, values[0] if values else self.clear)
        elif self.rest:
            paths.put(raw, self.rest, values + invalid)

    def fresh_writer(self, region: str) -> Callable[[FieldDict, dict[str, Any]], None]:
        # Nothing at the lens's paths: no raw formats to keep, no invalid items to carry over.
        field = self.fields[0]
        first = _putter(self.first) if self.first else None
        rest = self.rest
        write_rest = self.write_rest

        def run(desired: FieldDict, raw: dict[str, Any]) -> None:
            values = list(desired[field])  # type: ignore[arg-type]
            if first is not None:
                first(raw, values[0])
                if rest and write_rest:
                    paths.put(raw, rest, values[1:], force=True)
            else:
                paths.put(raw, rest, values)  # type: ignore[arg-type]

        return run

    def holds(self, values: FieldDict, region: str) -> bool:
        value = values.get(self.fields[0])
        if is_empty(value):
            return True
        if not isinstance(value, tuple) or len(set(value)) != len(value):
            return False
        if (not self.rest or not self.write_rest) and len(value) > 1:
            return False
        return all(_is_normal(self.item, v, region) for v in value)


def _normal_or_none(kind: str, value: object, region: str) -> str | None:
    try:
        return normalize_item(kind, value, region)
    except InvalidValue:
        return None


def _is_normal(kind: str, value: object, region: str) -> bool:
    try:
        return normalize_item(kind, value, region) == value
    except InvalidValue:
        return False


class TagsLens(Lens):
    """Tags: a list of strings (``style: strings``) or of objects with a name (``style:
    objects``, Acquire ``[{id, name}]``: read-only, there is no way to write one back)."""

    transform = "tags_set"

    def __init__(self, field: str, path: str, direction: str, style: str, key: str) -> None:
        super().__init__((field,), (path,), direction)
        self.style, self.key = style, key
        self.invertible = style == "strings"

    def _names(self, raw: dict[str, Any]) -> list[Any]:
        values = paths.get(raw, self.paths[0])
        if not isinstance(values, list):
            return []
        if self.style == "objects":
            return [v.get(self.key) if isinstance(v, dict) else None for v in values]
        return list(values)

    def read(self, raw: dict[str, Any], region: str) -> tuple[FieldDict, list[Issue]]:
        tags = frozenset(t for t in (_text(v) for v in self._names(raw)) if t)
        return ({self.fields[0]: tags} if tags else {}), []

    def reader(self, region: str) -> Reader:
        get, read = _getter(self.paths[0]), self.read

        def run(raw: dict[str, Any], out: FieldDict, issues: list[Issue]) -> None:
            values = get(raw)
            if not values or not isinstance(values, list):
                return  # nothing, or not a list: no tags (as read gives)
            found, _ = read(raw, region)
            if found:
                out.update(found)

        return run

    def write(self, desired: FieldDict, raw: dict[str, Any], region: str, changed: set[str]) -> None:
        want = set(members(desired.get(self.fields[0])))
        kept: list[Any] = []
        seen: set[str] = set()
        for value in self._names(raw):
            text = _text(value)
            if text in want and text not in seen:
                kept.append(value)
                seen.add(text)
        kept.extend(sorted(want - seen))
        paths.put(raw, self.paths[0], kept)

    def holds(self, values: FieldDict, region: str) -> bool:
        value = values.get(self.fields[0])
        return is_empty(value) or (isinstance(value, frozenset) and all(_clean(v) for v in value))


class CustomLens(Lens):
    """Custom fields ``custom.<key>``: keys of a dict (``style: keys``, Acquire's ``fields``
    minus its built-in keys) or a list of entries (``style: id_value``, GoHighLevel: read as
    ``[{id, value}]``, written as ``[{id|key, field_value}]``; ``ids`` maps platform field ids
    to keys, else an entry's own ``key`` names it (the GoHighLevel connector gives each item
    read back the key of its id, from the location's custom fields). An entry whose id names
    no key is not read: a raw id used as a key would be written as a field of that name on
    every other platform (issue 15))."""

    transform = "custom_fields"

    def __init__(
        self, path: str, direction: str, style: str, exclude: frozenset[str], ids: Mapping[str, str], clear: Any
    ) -> None:
        super().__init__(("custom.*",), (path,), direction)
        self.style, self.exclude, self.clear = style, exclude, clear
        self.ids = dict(ids)
        self.keys_to_ids = {v: k for k, v in self.ids.items()}

    def owns(self, name: str) -> bool:
        return name.startswith(CUSTOM_PREFIX)

    def _entry_key(self, entry: dict[str, Any]) -> str | None:
        ident = entry.get("id")
        if ident and str(ident) in self.ids:
            return self.ids[str(ident)]
        key = entry.get("key")
        return str(key) if key else None

    @staticmethod
    def _entry_value(entry: dict[str, Any]) -> Any:
        return entry["value"] if "value" in entry else entry.get("field_value")

    def read(self, raw: dict[str, Any], region: str) -> tuple[FieldDict, list[Issue]]:
        out: FieldDict = {}
        issues: list[Issue] = []
        node = paths.get(raw, self.paths[0])
        pairs: list[tuple[str, Any]] = []
        if self.style == "keys" and isinstance(node, dict):
            pairs = [(str(k), v) for k, v in node.items() if k not in self.exclude]
        elif self.style == "id_value" and isinstance(node, list):
            pairs = [(k, self._entry_value(e)) for e in node if isinstance(e, dict) and (k := self._entry_key(e))]
        for key, value in pairs:
            if _blank(value) or value == []:
                continue
            text = _text(value)
            if text is None:
                issues.append(Issue(CUSTOM_PREFIX + key, f"unsupported value type {type(value).__name__}"))
            else:
                out[CUSTOM_PREFIX + key] = text
        return out, issues

    def write(self, desired: FieldDict, raw: dict[str, Any], region: str, changed: set[str]) -> None:
        current, _ = self.read(raw, region)
        keys = {n[len(CUSTOM_PREFIX) :] for n in set(current) | set(desired) if current.get(n) != desired.get(n)}
        if not keys:
            return
        path = self.paths[0]
        if self.style == "keys":
            node = paths.get(raw, path)
            node = dict(node) if isinstance(node, dict) else {}
            for key in sorted(keys):
                value = desired.get(CUSTOM_PREFIX + key)
                node[key] = self.clear if is_empty(value) else value
            paths.put(raw, path, node)
            return
        entries = [e for e in (paths.get(raw, path) or []) if True]
        entries = list(entries) if isinstance(entries, list) else []
        for key in sorted(keys):
            value = desired.get(CUSTOM_PREFIX + key)
            field_value = "" if is_empty(value) else value  # GoHighLevel clears with an empty value
            index = next((i for i, e in enumerate(entries) if isinstance(e, dict) and self._entry_key(e) == key), None)
            if index is not None and entries[index].get("id"):
                entries[index] = {"id": entries[index]["id"], "field_value": field_value}
            elif index is not None:
                entries[index] = {"key": key, "field_value": field_value}
            elif not is_empty(value):
                ident = self.keys_to_ids.get(key)
                entries.append({"id": ident, "field_value": value} if ident else {"key": key, "field_value": value})
        paths.put(raw, path, entries)

    def holds(self, values: FieldDict, region: str) -> bool:
        for name, value in values.items():
            if not self.owns(name) or is_empty(value):
                continue
            key = name[len(CUSTOM_PREFIX) :]
            if not key or key in self.exclude or not _clean(value):
                return False
            if self.style == "id_value" and key in self.ids:
                return False  # an id used as a key would read back as its mapped key
        return True

    def diff(self, path: str, base: Any, new: Any) -> Any:
        if self.style != "id_value" or not isinstance(new, list):
            return new
        # GoHighLevel updates custom fields entry by entry: send only the entries that changed.
        old = base if isinstance(base, list) else []
        return [e for e in new if e not in old]


class ContactIdentitiesLens(Lens):
    """Comm100 ``contactIdentities``: one list partitioned by identity type into emails
    (``Email``), phones (``SMS``, after the scalar ``phone``) and the other identities
    (``"*"``, as ``"<type>:<value>"`` tokens). Unchanged partitions are left as they are; a
    changed one is rewritten in place, reusing the existing entries (and their ids)."""

    transform = "contact_identities"
    ITEM = {"emails": "email", "phones": "phone"}

    def __init__(
        self,
        path: str,
        parts: dict[str, tuple[str, ...] | None],
        primary: dict[str, str],
        direction: str,
        type_key: str,
        value_key: str,
        type_names: Mapping[str, str],
        clear: Any,
    ) -> None:
        super().__init__(tuple(parts), (path, *primary.values()), direction)
        self.list_path = path
        self.vendor_types = {f: t for f, t in parts.items() if t}  # vendor spellings for new entries
        self.parts = {f: (frozenset(normalize_identity_type(x) for x in t) if t else None) for f, t in parts.items()}
        self.primary, self.type_key, self.value_key, self.clear = primary, type_key, value_key, clear
        self.type_names = {normalize_identity_type(k): v for k, v in type_names.items()}
        self.explicit = frozenset().union(*(t for t in self.parts.values() if t))
        # Entry type as spelled -> its field (normalizing a type per entry per read adds up).
        self._fields_by_type: dict[str, str | None] = {}

    def _field_of(self, entry: Any) -> str | None:
        if not isinstance(entry, dict):
            return None
        spelled = str(entry.get(self.type_key) or "")
        try:
            return self._fields_by_type[spelled]
        except KeyError:
            pass
        field = self._field_of_type(spelled)
        if len(self._fields_by_type) < 4096:  # a handful of spellings in practice: bounded
            self._fields_by_type[spelled] = field
        return field

    def _field_of_type(self, spelled: str) -> str | None:
        """The canonical field an entry of type ``spelled`` belongs to (None: none of ours)."""
        try:
            kind = normalize_identity_type(spelled)
        except InvalidValue:
            return None
        for field, types in self.parts.items():
            if types is not None and kind in types:
                return field
        if kind in self.explicit:
            return None
        return next((f for f, t in self.parts.items() if t is None), None)

    def fresh_writer(self, region: str) -> Callable[[FieldDict, dict[str, Any]], None]:
        # No entries and no primary values yet: nothing to keep or reuse, every changed
        # partition is its wanted values as new entries, in partition order.
        parts, primary, item, clear = tuple(self.parts), self.primary, self.ITEM, self.clear
        list_path, new_entry = self.list_path, self._new_entry

        def run(desired: FieldDict, raw: dict[str, Any]) -> None:
            result: list[Any] = []
            for field in parts:
                if field not in desired:
                    continue
                value = desired[field]
                if field in item:
                    want = list(members(value))
                    if field in primary:
                        paths.put(raw, primary[field], want[0] if want else clear)
                        want = want[1:]
                else:
                    want = sorted(set(members(value)))
                result.extend(new_entry(field, n) for n in want)
            paths.put(raw, list_path, result)

        return run

    def _norm(self, field: str, entry_type: str | None, value: Any, region: str) -> str:
        if field in self.ITEM:
            return normalize_item(self.ITEM[field], value, region)
        kind = normalize_identity_type(entry_type or "")
        text = _text(value)
        if text is None:
            raise InvalidValue("identity", str(value), "empty value")
        return f"{kind}:{normalize_identity(kind, text, region).value}"

    def _entries(self, raw: dict[str, Any]) -> list[Any]:
        entries = paths.get(raw, self.list_path)
        return list(entries) if isinstance(entries, list) else []

    def read(self, raw: dict[str, Any], region: str) -> tuple[FieldDict, list[Issue]]:
        found: dict[str, list[str]] = {f: [] for f in self.parts}
        issues: list[Issue] = []

        def add(field: str, entry_type: str | None, value: Any) -> None:
            try:
                norm = self._norm(field, entry_type, value, region)
            except InvalidValue as exc:
                issues.append(Issue(field, exc.reason))
                return
            if norm not in found[field]:
                found[field].append(norm)

        for field, path in self.primary.items():
            value = paths.get(raw, path)
            if not _blank(value):
                add(field, None, value)
        for entry in self._entries(raw):
            owner = self._field_of(entry)
            if owner is not None and not _blank(entry.get(self.value_key)):
                add(owner, entry.get(self.type_key), entry.get(self.value_key))
        out: FieldDict = {}
        for field, values in found.items():
            if values:
                out[field] = frozenset(values) if field not in self.ITEM else tuple(values)
        return out, issues

    def write(self, desired: FieldDict, raw: dict[str, Any], region: str, changed: set[str]) -> None:
        entries = self._entries(raw)
        queues: dict[str, list[Any]] = {}
        for field in self.parts:
            if field not in changed:
                continue
            existing: dict[str, Any] = {}
            for entry in entries:
                if self._field_of(entry) == field:
                    try:
                        existing.setdefault(
                            self._norm(field, entry.get(self.type_key), entry.get(self.value_key), region), entry
                        )
                    except InvalidValue:
                        pass
            value = desired.get(field)
            if field in self.ITEM:
                want = list(members(value))
                if field in self.primary:
                    current = paths.get(raw, self.primary[field])
                    keep = not _blank(current) and want and _same(self.ITEM[field], current, want[0], region)
                    paths.put(raw, self.primary[field], current if keep else (want[0] if want else self.clear))
                    want = want[1:]
            else:
                kept = [t for t in (self._token(e, region) for e in entries if self._field_of(e) == field) if t]
                tokens = set(members(value))
                want = [t for t in dict.fromkeys(kept) if t in tokens] + sorted(tokens - set(kept))
            queues[field] = [existing.get(n) or self._new_entry(field, n) for n in want]
        if not queues:
            return
        result: list[Any] = []
        for entry in entries:
            owner = self._field_of(entry)
            if owner is None or owner not in queues:
                result.append(entry)
            elif not self._valid(owner, entry, region):
                result.append(entry)  # an entry that does not normalize is kept, never dropped
            elif queues[owner]:
                result.append(queues[owner].pop(0))
        for field in self.parts:
            result.extend(queues.get(field, []))
        paths.put(raw, self.list_path, result)

    def _token(self, entry: Any, region: str) -> str | None:
        field = self._field_of(entry)
        if field is None or field in self.ITEM:
            return None
        try:
            return self._norm(field, entry.get(self.type_key), entry.get(self.value_key), region)
        except InvalidValue:
            return None

    def _valid(self, field: str, entry: Any, region: str) -> bool:
        try:
            self._norm(field, entry.get(self.type_key), entry.get(self.value_key), region)
            return True
        except InvalidValue:
            return False

    def _new_entry(self, field: str, norm: str) -> dict[str, Any]:
        if field in self.ITEM:
            vendor = self.vendor_types[field][0]
            return {self.type_key: vendor, self.value_key: norm}
        kind, _, value = norm.partition(":")
        return {self.type_key: self.type_names.get(kind, kind), self.value_key: value}

    def holds(self, values: FieldDict, region: str) -> bool:
        for field in self.parts:
            value = values.get(field)
            if is_empty(value):
                continue
            if field in self.ITEM:
                if not isinstance(value, tuple) or len(set(value)) != len(value):
                    return False
                if not all(_is_normal(self.ITEM[field], v, region) for v in value):
                    return False
                continue
            if not isinstance(value, frozenset):
                return False
            for token in value:
                kind, sep, text = token.partition(":")
                if not sep or not text:
                    return False
                entry = {self.type_key: self.type_names.get(kind, kind), self.value_key: text}
                if self._field_of(entry) != field or self._token(entry, region) != token:
                    return False
        return True


def _same(kind: str, raw_value: Any, norm: str, region: str) -> bool:
    try:
        return normalize_item(kind, raw_value, region) == norm
    except InvalidValue:
        return False


class IdentityFieldsLens(Lens):
    """Identities kept in one raw key per type (DM Champ ``instagramId``, ``externalId``):
    the platform holds at most one value of each mapped type."""

    transform = "identity_fields"

    def __init__(self, field: str, by_type: dict[str, str], direction: str, clear: Any) -> None:
        super().__init__((field,), tuple(by_type.values()), direction)
        self.by_type = {normalize_identity_type(k): v for k, v in by_type.items()}
        self.clear = clear

    def _token(self, kind: str, value: Any, region: str) -> str:
        text = _text(value)
        if text is None:
            raise InvalidValue("identity", str(value), "empty value")
        return f"{kind}:{normalize_identity(kind, text, region).value}"

    def read(self, raw: dict[str, Any], region: str) -> tuple[FieldDict, list[Issue]]:
        tokens: set[str] = set()
        issues: list[Issue] = []
        for kind, path in self.by_type.items():
            value = paths.get(raw, path)
            if _blank(value):
                continue
            try:
                tokens.add(self._token(kind, value, region))
            except InvalidValue as exc:
                issues.append(Issue(self.fields[0], exc.reason))
        return ({self.fields[0]: frozenset(tokens)} if tokens else {}), issues

    def write(self, desired: FieldDict, raw: dict[str, Any], region: str, changed: set[str]) -> None:
        tokens = desired.get(self.fields[0]) or frozenset()
        for kind, path in self.by_type.items():
            mine = [t for t in tokens if t.partition(":")[0] == kind]  # type: ignore[union-attr]
            current = paths.get(raw, path)
            if mine:
                try:
                    if self._token(kind, current, region) == mine[0]:
                        continue
                except InvalidValue:
                    pass
                paths.put(raw, path, mine[0].partition(":")[2])
            else:
                paths.put(raw, path, self.clear)

    def holds(self, values: FieldDict, region: str) -> bool:
        tokens = values.get(self.fields[0])
        if is_empty(tokens):
            return True
        if not isinstance(tokens, frozenset):
            return False
        kinds: list[str] = []
        for token in tokens:
            kind, _, text = token.partition(":")
            if kind not in self.by_type:
                return False
            try:
                if self._token(kind, text, region) != token:
                    return False
            except InvalidValue:
                return False
            kinds.append(kind)
        return len(kinds) == len(set(kinds))


_ATOMS = frozenset({str, int, float, bool, type(None)})


def deep_copy(raw: dict[str, Any] | None) -> dict[str, Any]:
    """An independent copy of a raw payload (writes never mutate the caller's base). JSON's
    dicts and lists are copied directly (``copy.deepcopy``'s memo and dispatch cost several
    times more, on every update a backfill renders); anything else goes to ``copy.deepcopy``."""
    return _copy_json(raw) if raw else {}


def _copy_json(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {k: (v if type(v) in _ATOMS else _copy_json(v)) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _ATOMS else _copy_json(v) for v in value]
    if kind in _ATOMS:
        return value
    return copy.deepcopy(value)


def value_equal(a: FieldValue, b: FieldValue) -> bool:
    """Canonical equality where every empty value is the same."""
    if is_empty(a) and is_empty(b):
        return True
    return a == b
