"""Loading mappings: the shipped YAML of a platform (package ``mappings``), a user file that
replaces it, and inline overrides that extend it; validated and round-trip-checked at load.

Mapping document::

    platform: acquire
    update:
      keys: [..]            # raw top-level keys an update may carry (omit: any mapped key)
      always_send: [name]   # raw keys sent with every non-empty update
      endpoint_fields: [tags]  # canonical fields changed through separate calls, not updates
    clear: null             # the raw value that clears a field (default null)
    derived: {name: {from: [first_name, last_name], fallback: [emails, phones]}}
    fields:
      <canonical field>: {path: <dotted path> | [paths], transform: <name>, direction: both|in|out, ...}

Overrides merge per entry (``fields: {emails: {direction: in}}`` changes one key of the entry;
``fields: {website: null}`` removes the entry); other top-level keys are replaced.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sync.canonical import CUSTOM_PREFIX, FIELD_NAMES, field_kind, is_empty, is_known_field
from sync.mapping.lens import Derived, FieldMapping, MappingError
from sync.mapping.paths import is_prefix
from sync.mapping.transforms import (
    ContactIdentitiesLens,
    CustomLens,
    IdentityFieldsLens,
    Lens,
    ListLens,
    NameLens,
    ScalarLens,
    TagsLens,
    value_equal,
)
from sync.normalize import DEFAULT_REGION

TRANSFORMS = (
    "identity",
    "bool",
    "name_split",
    "name_join",
    "email",
    "phone",
    "list",
    "list_first_rest",
    "tags_set",
    "custom_fields",
    "contact_identities",
    "identity_fields",
)
DIRECTIONS = ("both", "in", "out")


def shipped_mapping_text(platform: str) -> str:
    """The YAML text of the shipped default mapping of ``platform`` (installed package data)."""
    try:
        return resources.files("mappings").joinpath(f"{platform}.yaml").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MappingError(f"no shipped mapping for platform {platform!r}") from None


def load_mapping(
    platform: str,
    override: dict[str, Any] | None = None,
    path: Path | str | None = None,
    *,
    default_region: str = DEFAULT_REGION,
) -> FieldMapping:
    """Load the mapping of ``platform``: the shipped default, or the user file at ``path``
    instead, extended by ``override``. Raises MappingError (naming the field) on anything
    invalid, including a mapping that cannot round-trip."""
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise MappingError(f"mapping file {path}: cannot read ({exc.strerror})") from None
        source = str(path)
    else:
        text = shipped_mapping_text(platform)
        source = f"mappings/{platform}.yaml"
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise MappingError(f"{source}: not valid YAML ({exc})") from None
    if not isinstance(doc, dict):
        raise MappingError(f"{source}: expected a mapping document, found {type(doc).__name__}")
    if override:
        doc = merge_override(doc, override)
        source += " + overrides"
    if doc.get("platform", platform) != platform:
        raise MappingError(f"{source}: platform is {doc.get('platform')!r}, expected {platform!r}")
    mapping = build_mapping(platform, doc, default_region=default_region, source=source)
    check_round_trip(mapping)
    return mapping


def merge_override(doc: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with ``override`` applied (per-entry merge under ``fields``; null removes)."""
    out = copy.deepcopy(doc)
    for key, value in override.items():
        if key != "fields":
            out[key] = copy.deepcopy(value)
            continue
        if not isinstance(value, dict):
            raise MappingError(
                f"overrides: fields must be a mapping of field name to entry, found {type(value).__name__}"
            )
        fields = out.setdefault("fields", {}) or {}
        out["fields"] = fields
        for name, entry in value.items():
            if entry is None:
                fields.pop(name, None)
            elif isinstance(entry, dict) and isinstance(fields.get(name), dict):
                fields[name] = {**fields[name], **entry}
            else:
                fields[name] = copy.deepcopy(entry)
    return out


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise MappingError(f"{where}: expected a string or a list of strings, found {value!r}")


def build_mapping(platform: str, doc: dict[str, Any], *, default_region: str, source: str = "") -> FieldMapping:
    """Build (and structurally validate) a FieldMapping from a parsed mapping document."""
    unknown = set(doc) - {"platform", "description", "update", "clear", "derived", "fields"}
    if unknown:
        raise MappingError(f"{source}: unknown key(s) {sorted(unknown)}")
    fields = doc.get("fields") or {}
    if not isinstance(fields, dict) or not fields:
        raise MappingError(f"{source}: 'fields' must map canonical field names to entries")
    clear = doc.get("clear")
    entries: dict[str, dict[str, Any]] = {}
    for name, entry in fields.items():
        where = f"{source}: field {name!r}"
        if not (name == "custom.*" or is_known_field(name)):
            raise MappingError(f"{where}: unknown canonical field (known: {', '.join(FIELD_NAMES)}, custom.*)")
        if not isinstance(entry, dict) or "path" not in entry:
            raise MappingError(f"{where}: expected an entry with at least 'path'")
        transform = entry.get("transform", "identity")
        if transform not in TRANSFORMS:
            raise MappingError(f"{where}: unknown transform {transform!r} (known: {', '.join(TRANSFORMS)})")
        direction = entry.get("direction", "both")
        if direction not in DIRECTIONS:
            raise MappingError(f"{where}: direction must be one of {DIRECTIONS}, found {direction!r}")
        entries[name] = {**entry, "transform": transform, "direction": direction}
    lenses = _lenses(entries, clear, source)
    _check_collisions(lenses, source)
    update = doc.get("update") or {}
    keys = update.get("keys")
    endpoint = frozenset(_str_list(update.get("endpoint_fields"), f"{source}: update.endpoint_fields"))
    for name in endpoint:
        if not any(l.owns(name) for l in lenses):
            raise MappingError(f"{source}: update.endpoint_fields names {name!r}, which is not mapped")
    derived = []
    for key, rule in (doc.get("derived") or {}).items():
        if not isinstance(rule, dict):
            raise MappingError(f"{source}: derived.{key}: expected a mapping")
        derived.append(
            Derived(
                path=key,
                sources=_str_list(rule.get("from"), f"{source}: derived.{key}.from"),
                fallback=_str_list(rule.get("fallback"), f"{source}: derived.{key}.fallback"),
                default=str(rule.get("default", "Unknown")),
            )
        )
    return FieldMapping(
        platform,
        lenses,
        default_region=default_region,
        updatable_keys=None if keys is None else frozenset(_str_list(keys, f"{source}: update.keys")),
        always_send=_str_list(update.get("always_send"), f"{source}: update.always_send"),
        endpoint_fields=endpoint,
        derived=tuple(derived),
        source=source,
    )


def _lenses(entries: dict[str, dict[str, Any]], clear: Any, source: str) -> list[Lens]:
    lenses: list[Lens] = []
    names: dict[str, list[str]] = {}  # name_split path -> fields
    idents: dict[str, list[str]] = {}  # contact_identities list path -> fields
    for name, entry in entries.items():
        where = f"{source}: field {name!r}"
        t, direction = entry["transform"], entry["direction"]
        path = _str_list(entry["path"], f"{where}: path")
        kind = "custom" if name == "custom.*" else field_kind(name)
        if name == "custom.*" or name.startswith(CUSTOM_PREFIX) and t == "custom_fields":
            if t != "custom_fields" or name != "custom.*":
                raise MappingError(
                    f"{where}: the custom field family is mapped as 'custom.*' with transform custom_fields"
                )
        expect = {
            "identity": ("scalar",),
            "bool": ("bool",),
            "name_split": ("scalar",),
            "name_join": ("scalar",),
            "email": ("list",),
            "phone": ("list",),
            "list": ("list",),
            "list_first_rest": ("list",),
            "tags_set": ("set",),
            "custom_fields": ("custom",),
            "contact_identities": ("list", "set"),
            "identity_fields": ("set",),
        }[t]
        if kind not in expect and not (t == "identity" and kind == "scalar"):
            raise MappingError(f"{where}: transform {t} cannot hold a {kind} field")
        if t in ("identity", "bool"):
            lenses.append(ScalarLens(name, _one(path, where), direction, "bool" if t == "bool" else "string", clear))
        elif t in ("name_split", "name_join"):
            names.setdefault(_one(path, where), []).append(name)
        elif t in ("email", "phone"):
            item = entry.get("item", t)
            lenses.append(ListLens(name, _one(path, where), None, _item(item, where), direction, t, clear))
        elif t == "list":
            lenses.append(
                ListLens(name, None, _one(path, where), _item(entry.get("item", "string"), where), direction, t, clear)
            )
        elif t == "list_first_rest":
            if len(path) != 2:
                raise MappingError(f"{where}: list_first_rest needs path [primary, rest]")
            lenses.append(
                ListLens(
                    name,
                    path[0],
                    path[1],
                    _item(entry.get("item", "string"), where),
                    direction,
                    t,
                    clear,
                    write_rest=bool(entry.get("write_rest", True)),
                )
            )
        elif t == "tags_set":
            style = entry.get("style", "strings")
            if style not in ("strings", "objects"):
                raise MappingError(f"{where}: style must be strings or objects")
            lenses.append(TagsLens(name, _one(path, where), direction, style, str(entry.get("key", "name"))))
        elif t == "custom_fields":
            style = entry.get("style", "keys")
            if style not in ("keys", "id_value"):
                raise MappingError(f"{where}: style must be keys or id_value")
            ids = entry.get("ids") or {}
            if not isinstance(ids, dict):
                raise MappingError(f"{where}: ids must map platform field ids to keys")
            exclude = frozenset(_str_list(entry.get("exclude"), f"{where}: exclude"))
            lenses.append(
                CustomLens(
                    _one(path, where), direction, style, exclude, {str(k): str(v) for k, v in ids.items()}, clear
                )
            )
        elif t == "contact_identities":
            idents.setdefault(path[-1] if len(path) > 1 else path[0], []).append(name)
        elif t == "identity_fields":
            by_type = entry.get("types")
            if not isinstance(by_type, dict) or not by_type:
                raise MappingError(f"{where}: identity_fields needs types: {{<identity type>: <raw path>}}")
            lenses.append(IdentityFieldsLens(name, {str(k): str(v) for k, v in by_type.items()}, direction, clear))
    for name_path, group in names.items():
        lenses.append(_name_lens(name_path, group, entries, clear, source))
    for list_path, group in idents.items():
        lenses.append(_identities_lens(list_path, group, entries, clear, source))
    _exclude_siblings(lenses)
    return lenses


def _one(path: tuple[str, ...], where: str) -> str:
    if len(path) != 1:
        raise MappingError(f"{where}: expected one raw path, found {list(path)}")
    return path[0]


def _item(item: Any, where: str) -> str:
    if item not in ("email", "phone", "string"):
        raise MappingError(f"{where}: item must be email, phone or string, found {item!r}")
    return str(item)


def _same_direction(group: list[str], entries: dict[str, dict[str, Any]], source: str) -> str:
    directions: set[str] = {entries[n]["direction"] for n in group}
    if len(directions) > 1:
        raise MappingError(f"{source}: fields {group} share a raw path but not a direction")
    return directions.pop()


def _name_lens(path: str, group: list[str], entries: dict[str, dict[str, Any]], clear: Any, source: str) -> Lens:
    first = last = None
    for name in group:
        part = entries[name].get("part") or {"first_name": "first", "last_name": "last"}.get(name)
        if part == "first" and first is None:
            first = name
        elif part == "last" and last is None:
            last = name
        else:
            raise MappingError(
                f"{source}: field {name!r}: name_split on {path!r} needs one first and one last part (set part: first|last)"
            )
    split = {entries[n].get("split", "first") for n in group}
    if len(split) > 1 or not split <= {"first", "last"}:
        raise MappingError(f"{source}: field {group[0]!r}: split must be first or last, the same for both parts")
    return NameLens(first, last, path, _same_direction(group, entries, source), split.pop(), clear)


def _identities_lens(path: str, group: list[str], entries: dict[str, dict[str, Any]], clear: Any, source: str) -> Lens:
    parts: dict[str, tuple[str, ...] | None] = {}
    primary: dict[str, str] = {}
    seen: set[str] = set()
    rest = 0
    type_key, value_key = "contactIdentityType", "value"
    type_names: dict[str, Any] = {}
    for name in group:
        entry = entries[name]
        where = f"{source}: field {name!r}"
        types = entry.get("types", "*")
        if types == "*":
            if name != "identities":
                raise MappingError(f"{where}: only identities can take every other identity type ('*')")
            parts[name] = None
            rest += 1
        else:
            listed = _str_list(types, f"{where}: types")
            lowered = {t.lower() for t in listed}
            if lowered & seen:
                raise MappingError(f"{where}: identity types {sorted(lowered & seen)} already belong to another field")
            seen |= lowered
            parts[name] = listed
        if name == "identities" and types != "*":
            raise MappingError(f"{where}: identities on contact_identities takes types: '*'")
        paths_ = _str_list(entry["path"], f"{where}: path")
        if len(paths_) == 2:
            primary[name] = paths_[0]
        type_key = entry.get("type_key", type_key)
        value_key = entry.get("value_key", value_key)
        type_names = {**type_names, **(entry.get("type_names") or {})}
    return ContactIdentitiesLens(
        path, parts, primary, _same_direction(group, entries, source), type_key, value_key, type_names, clear
    )


def _exclude_siblings(lenses: list[Lens]) -> None:
    """A ``keys`` custom lens on a container never reads keys other lenses map inside it."""
    for lens in lenses:
        if isinstance(lens, CustomLens) and lens.style == "keys":
            inside = {
                p[len(lens.paths[0]) + 1 :].split(".")[0]
                for other in lenses
                if other is not lens
                for p in other.paths
                if p.startswith(lens.paths[0] + ".")
            }
            lens.exclude = lens.exclude | frozenset(inside)


def _check_collisions(lenses: list[Lens], source: str) -> None:
    """Two lenses writing one raw key (or one inside the other) cannot both round-trip."""
    writers = [l for l in lenses if l.writable]
    for i, a in enumerate(writers):
        if not a.invertible:
            raise MappingError(
                f"{source}: field {a.fields[0]!r}: transform {a.transform} has no inverse (read-only); use direction: in"
            )
        for b in writers[i + 1 :]:
            for pa in a.paths:
                for pb in b.paths:
                    nested_custom = (isinstance(a, CustomLens) and a.style == "keys" and pa != pb) or (
                        isinstance(b, CustomLens) and b.style == "keys" and pa != pb
                    )
                    if (is_prefix(pa, pb) or is_prefix(pb, pa)) and not nested_custom:
                        raise MappingError(
                            f"{source}: field {b.fields[0]!r} writes raw key {pb!r}, which field {a.fields[0]!r} also writes ({pa!r})"
                        )


# -- the round-trip check run at load time --------------------------------------------------

_SAMPLES: dict[str, list[Any]] = {
    "scalar": ["Ada", "Zoë", "O'Brien-Smith", "Ada King"],
    "emails": [("ada@example.com",), ("ada@example.com", "lovelace@example.org")],
    "phones": [("+14155552671",), ("+14155552671", "+442079460958")],
    "tags": [frozenset({"vip"}), frozenset({"vip", "lead"})],
    "identities": [
        frozenset({"facebook:1001"}),
        frozenset({"instagram:ada"}),
        frozenset({"externalid:A-1"}),
        frozenset({"twitter:ada", "facebook:1001"}),
    ],
    "bool": [True, False],
    "custom": [{"custom.plan": "gold"}, {"custom.plan": "gold", "custom.score": "7"}],
}


def _samples_for(name: str) -> list[dict[str, Any]]:
    if name == "custom.*" or name.startswith(CUSTOM_PREFIX):
        return [dict(s) for s in _SAMPLES["custom"]]
    kind = field_kind(name)
    key = "scalar" if kind == "scalar" else ("bool" if kind == "bool" else name)
    return [{name: v} for v in _SAMPLES[key]]


def check_round_trip(mapping: FieldMapping) -> None:
    """Run both lens laws on sample values of every readable-and-writable field:
    ``read(write(c, raw)).fields == c`` and ``write(read(raw).fields, raw) == raw``."""
    for lens in mapping.lenses:
        if not (lens.readable and lens.writable):
            continue
        held = 0
        for name in lens.fields:
            for sample in _samples_for(name):
                if not lens.holds(sample, mapping.default_region):
                    continue
                held += 1
                for base in (None, mapping.write(sample, None)):
                    _law_read_write(mapping, name, sample, base)
                _law_clear(mapping, name, sample)
        if held == 0:
            raise MappingError(
                f"{mapping.source}: field {lens.fields[0]!r}: transform {lens.transform} cannot hold any value of the field"
            )


def _law_read_write(mapping: FieldMapping, name: str, sample: dict[str, Any], base: dict[str, Any] | None) -> None:
    raw = mapping.write(sample, base)
    back = mapping.read(raw).fields
    for key, value in sample.items():
        if not value_equal(back.get(key), value):
            raise MappingError(
                f"{mapping.source}: field {name!r} does not round-trip: wrote {value!r}, read back {back.get(key)!r}"
            )
    again = mapping.write(back, raw)
    if again != raw:
        raise MappingError(
            f"{mapping.source}: field {name!r} does not round-trip: writing what was read changes the payload"
        )


def _law_clear(mapping: FieldMapping, name: str, sample: dict[str, Any]) -> None:
    raw = mapping.write(sample, None)
    cleared = mapping.read(mapping.write(dict.fromkeys(sample), raw)).fields
    left = [k for k in sample if not is_empty(cleared.get(k))]
    if left:
        raise MappingError(f"{mapping.source}: field {name!r} cannot be cleared: still reads {cleared.get(left[0])!r}")
