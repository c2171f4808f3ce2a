"""Dotted paths into raw payloads (``fields.name`` is ``raw["fields"]["name"]``)."""

from __future__ import annotations

from typing import Any

_MISSING = object()
# Segments per path: a mapping has a handful of paths, read millions of times in a backfill.
_SPLIT: dict[str, tuple[str, ...]] = {}


def split(path: str) -> tuple[str, ...]:
    """The segments of a dotted path."""
    segs = _SPLIT.get(path)
    if segs is None:
        segs = tuple(path.split("."))
        if len(_SPLIT) < 4096:  # bounded: paths come from mapping files
            _SPLIT[path] = segs
    return segs


def get(raw: dict[str, Any] | None, path: str, default: Any = None) -> Any:
    """The value at ``path``, or ``default`` when any segment is missing or not a dict."""
    segs = _SPLIT.get(path) or split(path)
    if len(segs) == 1:
        # The common case (a top-level key), without the loop.
        if isinstance(raw, dict):
            return raw[path] if path in raw else default
        return default
    node: Any = raw
    for seg in segs:
        if not isinstance(node, dict) or seg not in node:
            return default
        node = node[seg]
    return node


def has(raw: dict[str, Any] | None, path: str) -> bool:
    """True when every segment of ``path`` exists."""
    return get(raw, path, _MISSING) is not _MISSING


def put(raw: dict[str, Any], path: str, value: Any, *, force: bool = False) -> None:
    """Set ``path`` to ``value``, creating intermediate dicts. Setting an empty value on a key
    that does not exist is a no-op (unless ``force``), so clearing an absent field never
    invents a key."""
    if not force and _is_blank(value) and not has(raw, path):
        return
    segs = split(path)
    node = raw
    for seg in segs[:-1]:
        nxt = node.get(seg)
        if not isinstance(nxt, dict):
            nxt = {}
            node[seg] = nxt
        node = nxt
    node[segs[-1]] = value


def _is_blank(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, (list, tuple, dict)) and len(value) == 0)


def is_prefix(a: str, b: str) -> bool:
    """True when path ``a`` is ``b`` or an ancestor of ``b``."""
    sa, sb = split(a), split(b)
    return len(sa) <= len(sb) and sb[: len(sa)] == sa
