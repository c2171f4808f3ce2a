"""Field mappings (lenses) between each platform's raw payloads and canonical field dicts.

Public API::

    load_mapping(platform, override=None, path=None, *, default_region="US") -> FieldMapping
    FieldMapping  (.platform .readable .writable .endpoint_fields .read .write .changes .keys
                   .fit .holds .tag_changes)
    ReadResult(fields, issues), Issue(field, reason), MappingError
"""

from __future__ import annotations

from sync.mapping.lens import FieldMapping, MappingError, ReadResult
from sync.mapping.loader import load_mapping, merge_override, shipped_mapping_text
from sync.mapping.transforms import Issue

__all__ = [
    "FieldMapping",
    "Issue",
    "MappingError",
    "ReadResult",
    "load_mapping",
    "merge_override",
    "shipped_mapping_text",
]
