"""FieldMapping: a platform's raw payload <-> canonical field dict, as a set of lenses.

Field dict semantics for writes: a key present in ``fields`` is set (``None`` or an empty value
clears it on the platform); a key absent from ``fields`` is left as the platform has it. So a
Plan's "only the changed fields" can be passed as-is, and ``write(read(raw).fields, raw) == raw``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sync.canonical import FieldDict, is_empty, members
from sync.mapping import paths
from sync.mapping.transforms import Issue, Lens, Reader, ScalarLens, deep_copy, value_equal
from sync.normalize import IdentityKey, InvalidValue, normalize_identity


class MappingError(ValueError):
    """A mapping that cannot be loaded or cannot round-trip; the message names the field."""


@dataclass
class ReadResult:
    """Canonical fields read from one raw record, and the values that did not normalize."""

    fields: FieldDict
    issues: list[Issue] = field(default_factory=list)


@dataclass(frozen=True)
class Derived:
    """A raw key computed from canonical fields when it is required but not itself mapped
    (Comm100 ``name``: required on create and update). Set on create, when empty, or when one
    of its sources changes; ``fallback`` lists canonical list fields whose first item is used
    when the sources are empty, then ``default``."""

    path: str
    sources: tuple[str, ...]
    fallback: tuple[str, ...] = ()
    default: str = "Unknown"


class FieldMapping:
    """The lens between one platform's raw payloads and canonical field dicts."""

    def __init__(
        self,
        platform: str,
        lenses: list[Lens],
        *,
        default_region: str,
        updatable_keys: frozenset[str] | None = None,
        always_send: tuple[str, ...] = (),
        endpoint_fields: frozenset[str] = frozenset(),
        derived: tuple[Derived, ...] = (),
        source: str = "",
    ) -> None:
        self.platform = platform
        self.lenses = lenses
        self.default_region = default_region
        self.updatable_keys = updatable_keys
        self.always_send = always_send
        self.endpoint_fields = frozenset(endpoint_fields)
        self.derived = derived
        self.source = source
        self.readable: frozenset[str] = frozenset(f for l in lenses if l.readable for f in l.fields)
        self.writable: frozenset[str] = frozenset(f for l in lenses if l.writable for f in l.fields)
        self._reading = [l for l in lenses if l.readable]
        self._writing = [l for l in lenses if l.writable]
        # Each reading lens compiled once for the region (see Lens.reader), called per record.
        self._readers = [l.reader(default_region) for l in self._reading]
        # The same readers with each run of plain text lenses at top-level keys folded into one
        # loop (a platform maps a dozen such keys, most absent from a given payload): what
        # ``read`` calls per record.
        self._read_all = _batched(self._reading, self._readers)
        # Per writing lens, the top-level raw keys it reads: a lens none of whose keys is in
        # a payload reads nothing from it (a create's payload is built from empty).
        self._tops = [frozenset(paths.split(p)[0] for p in l.paths) for l in self._writing]
        # Per writing lens: whether none of its own paths is in a payload (then it reads nothing
        # there and writes as onto an empty one), and its write onto such a payload, compiled.
        self._absent = [_absent_test(l.paths) for l in self._writing]
        self._fresh = [l.fresh_writer(default_region) for l in self._writing]
        # Per writing lens, the reading lenses whose paths overlap its own (one path a prefix of
        # the other): on a new payload, the only ones that can read what it wrote. A create's
        # read-back runs just those (a lens reads nothing where none of its paths exists).
        self._overlap = [
            frozenset(j for j, r in enumerate(self._reading) if _overlaps(w.paths, r.paths)) for w in self._writing
        ]
        self._derived_overlap = frozenset(
            j for j, r in enumerate(self._reading) if _overlaps(tuple(d.path for d in derived), r.paths)
        )
        self._backs: dict[tuple[int, ...], tuple[Any, ...]] = {}
        # (field, value) -> ``fit({field: value})`` (see ``fit``), bounded.
        self._fits: dict[tuple[str, Any], FieldDict] = {}
        self._create_steps: dict[tuple[str, ...], tuple[tuple[int, tuple[str, ...]], ...]] = {}
        # Canonical name -> indexes of the writing lenses owning it (filled on first use).
        self._owners: dict[str, tuple[int, ...]] = {}
        # Whether a derived key is also read: if not, the read ``_derive`` does is the read-back.
        read_tops = {paths.split(p)[0] for l in self._reading for p in l.paths}
        self._derived_read = any(paths.split(r.path)[0] in read_tops for r in derived)

    def __repr__(self) -> str:
        return f"FieldMapping({self.platform!r}, fields={sorted(self.readable | self.writable)})"

    # -- reading ---------------------------------------------------------------------------

    def read(self, raw: dict[str, Any]) -> ReadResult:
        """Canonical, normalized values of the readable fields (empty ones left out); values
        that do not normalize are reported in ``issues`` and left out of ``fields``."""
        out: FieldDict = {}
        issues: list[Issue] = []
        for read in self._read_all:
            read(raw, out, issues)
        return ReadResult(out, issues)

    # -- writing ---------------------------------------------------------------------------

    def _lens_of(self, name: str, lenses: Iterable[Lens]) -> Lens | None:
        return next((l for l in lenses if l.owns(name)), None)

    def _owners_of(self, name: str) -> tuple[int, ...]:
        found = self._owners.get(name)
        if found is None:
            found = tuple(i for i, l in enumerate(self._writing) if l.owns(name))
            if len(self._owners) < 4096:  # custom field names are open-ended: bounded
                self._owners[name] = found
        return found

    def write(self, fields: Mapping[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
        """The full payload: a copy of ``base`` with the writable fields present in ``fields``
        set. An unchanged value keeps its raw formatting."""
        return self._write(fields, base)[0]

    def create(self, fields: Mapping[str, Any]) -> tuple[dict[str, Any], FieldDict]:
        """The payload of a new record with ``fields`` (``write(fields, None)``) and what the
        platform reads back of it (``read(payload).fields``), in one pass where possible."""
        written: list[int] = []
        out = self._create(fields, written)
        if self.derived:
            back = self._derive(out, set(), created=True, written=written)
            if back is not None:
                return out, back
        return out, self._read_back(out, written)

    def _create(self, fields: Mapping[str, Any], written: list[int]) -> dict[str, Any]:
        """``_write(fields, None)``'s payload, by a plan per set of field names: which writing
        lenses get which fields (a backfill's creates share a handful of shapes)."""
        key = tuple(fields)
        steps = self._create_steps.get(key)
        if steps is None:
            groups: dict[int, list[str]] = {}
            for k in key:
                for i in self._owners.get(k) or self._owners_of(k):
                    groups.setdefault(i, []).append(k)
            steps = tuple((i, tuple(groups[i])) for i in sorted(groups))
            if len(self._create_steps) < 1024:
                self._create_steps[key] = steps
        out: dict[str, Any] = {}
        region = self.default_region
        for i, names in steps:
            if not out or self._tops[i].isdisjoint(out) or self._absent[i](out):
                desired = {k: v for k in names if not is_empty(v := fields[k])}
                if desired:
                    self._fresh[i](desired, out)
                    written.append(i)
                continue
            # Something of this lens is in the payload already (another lens wrote into its
            # paths): the general rule, as in ``_write``.
            lens = self._writing[i]
            current, _ = lens.read(out, region)
            merged = dict(current)
            for k in names:
                value = fields[k]
                if is_empty(value):
                    merged.pop(k, None)
                else:
                    merged[k] = value
            changed = {k for k in set(current) | set(merged) if not value_equal(current.get(k), merged.get(k))}
            if changed:
                lens.write(merged, out, region, changed)
                written.append(i)
        return out

    def _read_back(self, out: dict[str, Any], written: list[int]) -> FieldDict:
        """``read(out).fields`` for a payload built from empty by the writing lenses
        ``written`` (and the derived keys): only the readers that can find anything there."""
        key = tuple(written)
        readers = self._backs.get(key)
        if readers is None:
            found = set(self._derived_overlap)
            for i in written:
                found |= self._overlap[i]
            js = sorted(found)
            readers = tuple(_batched([self._reading[j] for j in js], [self._readers[j] for j in js]))
            if len(self._backs) < 1024:
                self._backs[key] = readers
        fields: FieldDict = {}
        issues: list[Issue] = []
        for read in readers:
            read(out, fields, issues)
        return fields

    def _write(
        self, fields: Mapping[str, Any], base: dict[str, Any] | None, written: list[int] | None = None
    ) -> tuple[dict[str, Any], FieldDict | None]:
        """``written`` (a create, from an empty payload) collects the writing lenses that wrote."""
        out = deep_copy(base)
        touched: set[str] = set()
        # The fields per writing lens, in the order of ``fields`` (one pass, not one per lens).
        groups: dict[int, dict[str, Any]] = {}
        for k, v in fields.items():
            for i in self._owners.get(k) or self._owners_of(k):
                groups.setdefault(i, {})[k] = v
        for i in sorted(groups):
            lens, mine = self._writing[i], groups[i]
            if not out or self._tops[i].isdisjoint(out) or self._absent[i](out):
                # Nothing of this lens in the payload yet (it would read nothing): every
                # non-empty value is a change.
                desired = {k: v for k, v in mine.items() if not is_empty(v)}
                if desired:
                    self._fresh[i](desired, out)
                    touched.update(desired)
                    if written is not None:
                        written.append(i)
                continue
            current, _ = lens.read(out, self.default_region)
            desired = dict(current)
            for key, value in mine.items():
                if is_empty(value):
                    desired.pop(key, None)
                else:
                    desired[key] = value
            changed = {k for k in set(current) | set(desired) if not value_equal(current.get(k), desired.get(k))}
            if changed:
                lens.write(desired, out, self.default_region, changed)
                touched |= changed
                if written is not None:
                    written.append(i)
        return out, self._derive(out, touched, created=not base, written=written)

    def _derive(
        self, out: dict[str, Any], touched: set[str], created: bool, written: list[int] | None = None
    ) -> FieldDict | None:
        """Set the derived keys; returns what ``out`` reads as afterwards when that is known
        without reading it again (no derived key is read), else None."""
        if not self.derived:
            return None
        current = self.read(out).fields if written is None else self._read_back(out, written)
        for rule in self.derived:
            present = paths.get(out, rule.path)
            if not (created or is_empty(present) or touched & set(rule.sources)):
                continue
            parts = [current.get(s) for s in rule.sources]
            text = " ".join(str(p) for p in parts if isinstance(p, str) and p)
            if not text:
                text = next((str(v[0]) for f in rule.fallback if (v := current.get(f))), rule.default)  # type: ignore[index]
            if text != present:
                paths.put(out, rule.path, text)
        return None if self._derived_read else current

    def changes(self, fields: Mapping[str, Any], base: dict[str, Any]) -> dict[str, Any]:
        """Only the raw keys an update must send to bring ``base`` to ``fields``: nested dicts
        (Acquire ``fields``) carry only their changed keys; keys the platform cannot update and
        endpoint fields (GoHighLevel tags) are left out; keys the platform needs on every update
        (Comm100 ``name``) are added. ``{}`` when nothing changes."""
        new = self.write(fields, base)
        diff = _diff(base or {}, new, "", self._diff_hook)
        for name in self.endpoint_fields:
            lens = self._lens_of(name, self._writing)
            for path in lens.paths if lens else ():
                _drop(diff, path)
        if self.updatable_keys is not None:
            diff = {k: v for k, v in diff.items() if k in self.updatable_keys}
        if diff:
            for key in self.always_send:
                if key not in diff and paths.has(new, key):
                    diff[key] = paths.get(new, key)
        return diff

    def _diff_hook(self, path: str, base: Any, new: Any) -> Any:
        for lens in self._writing:
            if path in lens.paths:
                return lens.diff(path, base, new)
        return new

    def tag_changes(self, fields: Mapping[str, Any], base: dict[str, Any]) -> tuple[list[str], list[str]]:
        """For an endpoint ``tags`` field: (tags to add, tags to remove), sorted."""
        if "tags" not in fields:
            return [], []
        have = set(members(self.read(base or {}).fields.get("tags")))
        want = set(fields.get("tags") or ())
        return sorted(want - have), sorted(have - want)

    # -- domain ----------------------------------------------------------------------------

    def holds(self, fields: Mapping[str, Any]) -> bool:
        """Whether every mapped value in ``fields`` can be held by this platform unchanged."""
        return all(l.holds(dict(fields), self.default_region) for l in self.lenses)

    def fit(self, fields: Mapping[str, Any]) -> FieldDict:
        """What this platform reads back after ``fields`` are written to a new record: the
        part of ``fields`` it can hold (writable and readable fields only). Snapshots of this
        connection should store this, so a lossy platform (one email slot) is no change."""
        if len(fields) == 1:
            # One field (reconcile asks how a platform would hold one value, again and again
            # for the same values): remembered, as the answer depends on nothing else.
            ((name, value),) = fields.items()
            try:
                hit = self._fits.get((name, value))
            except TypeError:  # an unhashable value: not remembered
                return self._fit(fields)
            if hit is None:
                hit = self._fit(fields)
                if len(self._fits) >= 4096:
                    self._fits.clear()
                self._fits[(name, value)] = hit
            return dict(hit)
        return self._fit(fields)

    def _fit(self, fields: Mapping[str, Any]) -> FieldDict:
        _, back = self.create(fields)  # writing ignores the fields no writing lens owns
        return {k: v for k, v in back.items() if self._owners.get(k) or self._owners_of(k)}

    def keys(self, fields: Mapping[str, Any]) -> list[IdentityKey]:
        """The matching keys of a field dict: emails, phones and identities (invalid ones skipped)."""
        out: list[IdentityKey] = []
        for email in fields.get("emails") or ():
            out.append(IdentityKey("email", email))
        for phone in fields.get("phones") or ():
            out.append(IdentityKey("phone", phone))
        for token in sorted(fields.get("identities") or ()):
            kind, _, value = token.partition(":")
            try:
                key = normalize_identity(kind, value, self.default_region)
            except InvalidValue:
                continue
            if key not in out:
                out.append(key)
        return out


def _batched(lenses: list[Lens], readers: list[Reader]) -> list[Reader]:
    """``readers`` (one per lens of ``lenses``, in order) with each run of two or more plain
    text lenses (:class:`ScalarLens` not of kind ``bool``, at a one-segment path) replaced by
    one reader doing what theirs do, in the same order: a stripped, non-blank string is the
    value; a key absent or None reads nothing; anything else goes to the lens's own reader."""
    out: list[Reader] = []
    run: list[tuple[str, str, Reader]] = []

    def flush() -> None:
        if len(run) == 1:
            out.append(run[0][2])
        elif run:
            out.append(_text_keys(tuple(run)))
        run.clear()

    for lens, reader in zip(lenses, readers):
        if type(lens) is ScalarLens and lens.kind != "bool" and len(paths.split(lens.paths[0])) == 1:
            run.append((paths.split(lens.paths[0])[0], lens.fields[0], reader))
            continue
        flush()
        out.append(reader)
    flush()
    return out


def _text_keys(items: tuple[tuple[str, str, Reader], ...]) -> Reader:
    def run(raw: dict[str, Any], out: FieldDict, issues: list[Issue]) -> None:
        if type(raw) is not dict:
            for _, _, single in items:
                single(raw, out, issues)
            return
        get = raw.get
        for key, field_, single in items:
            value = get(key)
            if value is None:
                continue
            if type(value) is str:
                text = value.strip()
                if text:
                    out[field_] = text
                continue
            single(raw, out, issues)

    return run


def _overlaps(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Whether a path of ``a`` and one of ``b`` are the same or one is inside the other."""
    return any(paths.is_prefix(x, y) or paths.is_prefix(y, x) for x in a for y in b)


def _absent_test(lens_paths: tuple[str, ...]) -> Any:
    """A test ``payload -> bool``: none of ``lens_paths`` exists in the payload."""
    split = [paths.split(p) for p in lens_paths]
    if all(len(segs) == 1 for segs in split):
        keys = tuple(segs[0] for segs in split)
        return lambda raw: not any(k in raw for k in keys)
    if all(len(segs) == 2 for segs in split):
        pairs = tuple((segs[0], segs[1]) for segs in split)  # Acquire: fields.<key>
        return lambda raw: not any(isinstance(n := raw.get(a), dict) and b in n for a, b in pairs)
    return lambda raw: not any(paths.has(raw, p) for p in lens_paths)


def _diff(base: Any, new: Any, prefix: str, hook: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in new.items():
        path = f"{prefix}{key}"
        old = base.get(key) if isinstance(base, dict) else None
        if isinstance(base, dict) and key in base and old == value:
            continue
        if key not in (base or {}) and value is None:
            continue
        if isinstance(value, dict) and isinstance(old, dict):
            sub = _diff(old, value, path + ".", hook)
            if sub:
                out[key] = sub
        else:
            out[key] = hook(path, old, value)
    return out


def _drop(diff: dict[str, Any], path: str) -> None:
    segs = paths.split(path)
    node: Any = diff
    for seg in segs[:-1]:
        node = node.get(seg) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(segs[-1], None)
