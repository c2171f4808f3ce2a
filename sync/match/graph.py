"""The identity graph: records ↔ persons, by shared normalized keys (pure, no I/O).

Input is columnar (parallel sequences, integer indices) because a backfill matches millions of
records: the hot path never builds a per-record object. Records are joined by

* strong keys (an email, an identity value): connected components, computed by SciPy in C,
  of the graph where each strong key links every record holding it to the first live one
  (keys are interned to integer tokens by hashing and sorting in NumPy, collisions checked);
* their current person (sticky: an email edited on one platform must propagate, not split
  the person it belongs to);
* merges: a record merged into another (Comm100 ``mergeToContactId``, or an Acquire contact
  that vanished while every key it held now sits on one live contact of the same connection —
  what a native merge that keeps the loser's details leaves) joins its survivor — it is
  folded, never treated as a delete. A vanished record only *some* of whose keys moved to a
  live contact of another person (a delete plus a key typed elsewhere looks the same) is a
  *suspected merge*: not carried out, the key is contested (it joins no existing persons)
  and the question is stored for review;
* weak keys (a phone), only where that does not bring two different guard keys (emails) into
  one person: otherwise the match is ambiguous, kept apart and reported for review. Clusters
  of components sharing weak keys are joined at once where their guard keys agree; only the
  others are decided key by key.

No step loops over records or keys in Python: per-record work is NumPy/SciPy or a C-level
``map`` over the input sequences (strings are hashed once).

Persons keep their ids: a component joined by a platform merge takes the person of the record
the platform says survived; any other component the smallest existing person id among its
records. The other persons in it are *folded* into that one, and a component with no person
gets a new temporary (negative) id that the store replaces with a real one.
"""

from __future__ import annotations

import itertools
import operator
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from sync.arrays import sorted_unique
from sync.match.policy import STRONG, WEAK, MatchPolicy

_NO_PERSON = np.iinfo(np.int64).max


@dataclass
class MatchInput:
    """Records and their keys, as parallel sequences.

    ``person_ids[i]`` is the record's current person (None: never matched); ``merged_into[i]``
    the remote id (same connection) it was merged into; ``deleted[i]`` an explicit or proven
    delete. ``key_records[j]`` is the index (into the record sequences) of the record holding
    key ``(key_kinds[j], key_values[j])``. ``record_ids`` are store ids: lower is older.
    """

    record_ids: Sequence[int]
    connections: Sequence[str]
    remote_ids: Sequence[str]
    person_ids: Sequence[int | None]
    merged_into: Sequence[str | None]
    deleted: Sequence[bool]
    key_records: Sequence[int]
    key_kinds: Sequence[str]
    key_values: Sequence[str]
    vanished_now: Sequence[bool] | None = None

    def __len__(self) -> int:
        return len(self.record_ids)


@dataclass(frozen=True)
class Review:
    """A matching question for a person: ``ambiguous_match`` (a weak key shared by records of
    persons holding different emails) or ``duplicate`` (two records of one connection)."""

    kind: str
    key: str
    records: tuple[int, ...]  # record indices
    detail: str = ""


@dataclass(frozen=True)
class Duplicate:
    """Several live records of one connection in one person; ``records[0]`` is the primary
    (the one already linked to the surviving person, then the oldest). ``via_merge`` is set when
    a platform merge joined the persons they came from this run."""

    person: int
    connection: str
    records: tuple[int, ...]
    via_merge: bool


@dataclass
class MatchResult:
    """Where every input record belongs now."""

    person_of: np.ndarray  # per record: person id; negative = new person (temporary id)
    new_persons: int
    folds: dict[int, int]  # folded person -> surviving person
    merged: dict[int, int]  # merged-away record index -> survivor record index
    merge_persons: frozenset[int]  # persons joined by a platform merge in this run
    duplicates: list[Duplicate] = field(default_factory=list)
    reviews: list[Review] = field(default_factory=list)
    # Persons joined this run by an inferred merge only (no platform signal such as
    # ``mergeToContactId``): reconcile never deletes for them unless deletes are propagated.
    inferred_merge_persons: frozenset[int] = frozenset()
    # Person -> (key kind, value) keys it holds under a suspected merge: contested, so they
    # are not carried to its other platforms until a human decides.
    withheld: dict[int, frozenset[tuple[str, str]]] = field(default_factory=dict)

    def persons(self) -> set[int]:
        """Every person (final ids, temporary ones included) touched by this match."""
        return set(np.unique(self.person_of).tolist())


def match_records(inp: MatchInput, policy: MatchPolicy | None = None) -> MatchResult:
    """Cluster the records of ``inp`` into persons (see the module docstring)."""
    policy = policy or MatchPolicy()
    n = len(inp.record_ids)
    if n == 0:
        return MatchResult(np.zeros(0, np.int64), 0, {}, {}, frozenset())

    person = _person_array(inp.person_ids, n)
    deleted_idx = np.flatnonzero(np.asarray(inp.deleted, dtype=bool)).tolist()
    merged_idx = list(itertools.compress(range(n), inp.merged_into))
    # A record's keys join others only while it is live: a deleted or merged-away record keeps
    # its person (sticky edge) but its keys no longer vouch for anyone.
    live = np.ones(n, dtype=bool)
    live[deleted_idx] = False
    live[merged_idx] = False

    k = len(inp.key_records)
    key_rec = np.asarray(inp.key_records, dtype=np.int64) if k else np.zeros(0, np.int64)
    kcode, kind_codes = _codes(inp.key_kinds, k)
    tok, token_key = _intern(kcode, inp.key_values)
    strength = {kind: policy.strength(kind) for kind in kind_codes}
    strong_codes = [c for kind, c in kind_codes.items() if strength[kind] == STRONG]
    weak_codes = [c for kind, c in kind_codes.items() if strength[kind] == WEAK]

    tombstones = deleted_idx
    if policy.infer_merges is not None:
        tombstones = [i for i in tombstones if inp.connections[i] in policy.infer_merges]
    inferable = tombstones
    if inp.vanished_now is not None:
        inferable = [i for i in inferable if inp.vanished_now[i]]
    merged, suspects = _resolve_merges(
        inp, tok, kcode, strong_codes, weak_codes, key_rec, live, person, inferable, tombstones, merged_idx
    )
    contested = sorted({t for _, _, tokens in suspects for t in tokens})
    key_live = live[key_rec]
    if contested:
        # A contested key joins no existing persons (each keeps its records by the sticky edge).
        key_live &= ~(np.isin(tok, contested) & (person[key_rec] >= 0))

    # Stored decisions on ambiguous matches: a linked key acts as a strong key, an apart key as
    # none; neither is left to the weak-key guard. A C-level map, only when there are any.
    linked_mask = np.zeros(k, dtype=bool)
    weak_live = key_live
    if policy.linked or policy.apart:
        pairs_iter = zip(inp.key_kinds, inp.key_values)
        linked_mask = np.fromiter(map(policy.linked.__contains__, pairs_iter), dtype=bool, count=k)
        apart_mask = np.fromiter(
            map(policy.apart.__contains__, zip(inp.key_kinds, inp.key_values)), dtype=bool, count=k
        )
        weak_live = key_live & ~linked_mask & ~apart_mask

    # Graph nodes: records [0, n), persons [n, ...). A strong key links each record holding it
    # to the first live record holding it (a star per key, no node per key: half the graph).
    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    strong_mask = (np.isin(kcode, strong_codes) | linked_mask) & key_live
    strong_rec = key_rec[strong_mask]
    strong_tok = tok[strong_mask]
    first = np.full(len(token_key), n, dtype=np.int64)
    np.minimum.at(first, strong_tok, strong_rec)
    hub = first[strong_tok]
    joined = strong_rec != hub
    src.append(strong_rec[joined])
    dst.append(hub[joined])
    has_person = person >= 0
    if has_person.any():
        person_codes, person_idx = np.unique(person[has_person], return_inverse=True)
        src.append(np.flatnonzero(has_person))
        dst.append(n + person_idx)
    else:
        person_codes = np.zeros(0, np.int64)
    if merged:
        src.append(np.fromiter(merged.keys(), dtype=np.int64, count=len(merged)))
        dst.append(np.fromiter(merged.values(), dtype=np.int64, count=len(merged)))
    a = np.concatenate(src)
    b = np.concatenate(dst)
    size = n + len(person_codes)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(size, size)).tocsr()
    _, labels = connected_components(graph, directed=False)
    comp = labels[:n].astype(np.int64)

    reviews: list[Review] = []
    comp = _weak_joins(inp, policy, comp, tok, token_key, kcode, kind_codes, weak_codes, key_rec, weak_live, reviews)

    # Persons: the person of the record a platform merge says survived leads its component;
    # elsewhere the smallest existing id survives.
    ncomp = int(comp.max()) + 1
    survivor = np.full(ncomp, _NO_PERSON, dtype=np.int64)
    np.minimum.at(survivor, comp[has_person], person[has_person])
    if merged:
        wins = np.asarray(sorted(set(merged.values()) - set(merged)), dtype=np.int64)
        wins = wins[person[wins] >= 0] if len(wins) else wins
        if len(wins):
            lead = np.full(ncomp, _NO_PERSON, dtype=np.int64)
            np.minimum.at(lead, comp[wins], person[wins])
            survivor = np.where(lead != _NO_PERSON, lead, survivor)
    person_of = survivor[comp]
    fresh = person_of == _NO_PERSON
    new_persons = 0
    if fresh.any():
        # Component labels grow with their first record (SciPy labels in node order, weak
        # joins keep the smallest label), so ranking them numbers new persons in input order.
        is_new = np.zeros(ncomp, dtype=bool)
        is_new[comp[fresh]] = True
        temp = -np.cumsum(is_new)
        person_of[fresh] = temp[comp[fresh]]
        new_persons = int(is_new.sum())

    moved = has_person & (person != person_of)
    folds = {int(p): int(s) for p, s in set(zip(person[moved].tolist(), person_of[moved].tolist()))}
    # Only a merge that joined two existing persons is carried to the other platforms.
    joining = [(i, j) for i, j in merged.items() if person[i] >= 0 and person[j] >= 0 and person[i] != person[j]]
    merge_persons = frozenset(int(person_of[i]) for i, _ in joining)
    signalled = {int(person_of[i]) for i, _ in joining if inp.merged_into[i]}
    inferred_merge_persons = merge_persons - signalled

    withheld: dict[int, set[tuple[str, str]]] = {}
    for v, s, tokens in suspects:
        keys = [(inp.key_kinds[int(token_key[t])], inp.key_values[int(token_key[t])]) for t in tokens]
        withheld.setdefault(int(person_of[s]), set()).update(keys)
        kind, value = keys[0]
        reviews.append(
            Review(
                "suspected_merge",
                f"{kind}:{value}",
                (v, s),
                f"{inp.connections[v]} {inp.remote_ids[v]} vanished while its {kind} {value} sits on "
                f"{inp.remote_ids[s]} of another person: not merged, the key joins neither",
            )
        )

    duplicates = _duplicates(inp, comp, person, person_of, live, merge_persons)
    for dup in duplicates:
        if not dup.via_merge:
            first_rec = dup.records[0]
            reviews.append(
                Review(
                    "duplicate",
                    f"{dup.connection}:{inp.remote_ids[first_rec]}",
                    dup.records,
                    f"{len(dup.records)} records of {dup.connection} belong to one person",
                )
            )
    return MatchResult(
        person_of,
        new_persons,
        folds,
        merged,
        merge_persons,
        duplicates,
        reviews,
        inferred_merge_persons,
        {p: frozenset(keys) for p, keys in withheld.items()},
    )


def _resolve_merges(
    inp: MatchInput,
    tok: np.ndarray,
    kcode: np.ndarray,
    strong_codes: list[int],
    weak_codes: list[int],
    key_rec: np.ndarray,
    live: np.ndarray,
    person: np.ndarray,
    vanished_idx: list[int],
    tombstone_idx: list[int],
    merged_idx: list[int],
) -> tuple[dict[int, int], list[tuple[int, int, tuple[int, ...]]]]:
    """Merged-away record index -> survivor record index, and the suspected merges.

    Explicit signals first (``merged_into``). Then deleted records with no signal
    (``tombstone_idx``, on connections whose merges leave none) whose strong key sits on a live
    record of the same connection:

    * newly vanished (``vanished_idx``) and *every* key it held (strong and weak) now on one live
      record: the platform merged it there (Acquire keeps the loser's details on the primary);
    * otherwise, where the two records belong to different existing persons, a suspected merge
      ``(record, holder, contested strong tokens)``: only a key moved, which a delete plus an
      edit explains as well. Old tombstones are checked too, so the key stays contested in later
      runs (the tombstone keeps its keys).

    A survivor that is not loaded leaves the record unmerged for now (it is still not a delete).
    """
    out: dict[int, int] = {}
    suspects: list[tuple[int, int, tuple[int, ...]]] = []
    if merged_idx:
        # Where each merge target lives: only records whose remote id is a target are indexed
        # (a membership test per record, in C), not every remote id of the input.
        targets = {inp.merged_into[i] for i in merged_idx}
        target_at: dict[tuple[str, str | None], int] = {}
        for j in itertools.compress(range(len(inp.remote_ids)), map(targets.__contains__, inp.remote_ids)):
            target_at[(inp.connections[j], inp.remote_ids[j])] = j
        for i in merged_idx:
            target = target_at.get((inp.connections[i], inp.merged_into[i]))
            if target is not None and target != i:
                out[i] = target
    tombs = [i for i in tombstone_idx if i not in out and not inp.merged_into[i]]
    if tombs and len(tok):
        conn_code, conn_names = _codes(inp.connections, len(live))
        width = len(conn_names)
        strong = np.isin(kcode, strong_codes)
        tomb_mask = np.zeros(len(live), dtype=bool)
        tomb_mask[tombs] = True
        lost = strong & tomb_mask[key_rec]
        hold = strong & live[key_rec]
        # (token, connection) pairs: a lost key held again on the same connection.
        lost_pair = tok[lost] * width + conn_code[key_rec[lost]]
        hold_pair = tok[hold] * width + conn_code[key_rec[hold]]
        shared = np.isin(lost_pair, hold_pair)
        if shared.any():
            holder_sel = np.isin(hold_pair, lost_pair[shared])
            holders: dict[int, list[int]] = {}
            for j, pair in zip(key_rec[hold][holder_sel].tolist(), hold_pair[holder_sel].tolist()):
                holders.setdefault(pair, []).append(j)
            cands: dict[int, dict[int, set[int]]] = {}  # tombstone -> holder -> shared tokens
            for v, t, pair in zip(
                key_rec[lost][shared].tolist(), tok[lost][shared].tolist(), lost_pair[shared].tolist()
            ):
                for j in holders[pair]:
                    cands.setdefault(v, {}).setdefault(j, set()).add(t)
            involved = sorted(set(cands) | {j for by in cands.values() for j in by})
            keyed = np.isin(kcode, strong_codes + weak_codes) & np.isin(key_rec, involved)
            tokens_of: dict[int, set[int]] = {}
            for r, t in zip(key_rec[keyed].tolist(), tok[keyed].tolist()):
                tokens_of.setdefault(r, set()).add(t)
            now = set(vanished_idx)
            for v in sorted(cands):
                by_holder = cands[v]
                if v in now:
                    held_all = [j for j in sorted(by_holder) if tokens_of.get(v, set()) <= tokens_of.get(j, set())]
                    if held_all:
                        out[v] = held_all[0]
                        continue
                for j in sorted(by_holder):
                    if person[v] >= 0 and person[j] >= 0 and person[v] != person[j]:
                        suspects.append((v, j, tuple(sorted(by_holder[j]))))
    # Follow chains (a -> b -> c) so every loser points at a live survivor when one is loaded.
    for i in list(out):
        seen = {i}
        j = out[i]
        while j in out and out[j] not in seen:
            seen.add(j)
            j = out[j]
        out[i] = j
    return out, suspects


def _weak_joins(
    inp: MatchInput,
    policy: MatchPolicy,
    comp: np.ndarray,
    tok: np.ndarray,
    token_key: np.ndarray,
    kcode: np.ndarray,
    kind_codes: dict[str, int],
    weak_codes: list[int],
    key_rec: np.ndarray,
    key_live: np.ndarray,
    reviews: list[Review],
    *,
    vectorized: bool = True,
) -> np.ndarray:
    """Join strong components that share a weak key, unless the join would put two different
    guard keys (emails) in one person: then keep them apart and add an ``ambiguous_match``.

    Components linked through shared weak keys form independent *clusters*. In a cluster whose
    guarded components all hold the same guard keys (nearly all of them) every join is allowed,
    whatever the order: the cluster becomes one component, its smallest label — computed for
    all such clusters at once. Only clusters with different guard keys are decided one weak key
    at a time, in input order (:func:`_weak_joins_in_order`); ``vectorized=False`` sends every
    cluster there (the reference the fast path is tested against)."""
    weak = np.isin(kcode, weak_codes) & key_live
    if not weak.any():
        return comp
    wt = tok[weak]
    wl = comp[key_rec[weak]]
    ncomp = int(comp.max()) + 1
    pairs = sorted_unique(wt * ncomp + wl)
    pt = pairs // ncomp
    pl = pairs % ncomp
    utok, start, count = _runs(pt)
    multi = np.flatnonzero(count > 1)
    if len(multi) == 0:
        return comp

    # Clusters: connected components of the graph label -- weak token (tokens held by 2+ labels).
    in_multi = np.repeat(count > 1, count)
    run_of_pair = np.repeat(np.arange(len(utok)), count)[in_multi]
    involved, label_idx = np.unique(pl[in_multi], return_inverse=True)
    ni, nm = len(involved), len(multi)
    multi_pos = np.full(len(utok), -1, dtype=np.int64)
    multi_pos[multi] = np.arange(nm)
    graph = coo_matrix(
        (np.ones(len(label_idx), dtype=np.int8), (label_idx, ni + multi_pos[run_of_pair])), shape=(ni + nm, ni + nm)
    ).tocsr()
    ncl, cl = connected_components(graph, directed=False)
    label_cl = cl[:ni]
    token_cl = cl[ni:]

    # Guard keys per involved label, as sorted unique (label index, guard token) pairs.
    guard_code = kind_codes.get(policy.guard_kind)
    g_label = np.zeros(0, np.int64)
    g_tok = np.zeros(0, np.int64)
    if guard_code is not None:
        gmask = (kcode == guard_code) & key_live
        gl = comp[key_rec[gmask]]
        is_involved = np.zeros(ncomp, dtype=bool)
        is_involved[involved] = True
        sel = is_involved[gl]
        if sel.any():
            ntok = int(tok.max()) + 1
            lp = sorted_unique(np.searchsorted(involved, gl[sel]) * ntok + tok[gmask][sel])
            g_label, g_tok = lp // ntok, lp % ntok
    mixed = np.zeros(ncl, dtype=bool)  # clusters holding different guard-key sets
    if not vectorized:
        mixed[:] = True
    elif len(g_label):
        # Every guarded label holds the same set iff each holds as many keys as its cluster.
        ntok = int(g_tok.max()) + 1
        per_label = np.bincount(g_label, minlength=ni)
        per_cluster = np.bincount(sorted_unique(label_cl[g_label] * ntok + g_tok) // ntok, minlength=ncl)
        short = (per_label > 0) & (per_label < per_cluster[label_cl])
        mixed[label_cl[short]] = True

    remap = np.arange(ncomp, dtype=np.int64)
    easy = ~mixed[label_cl]
    if easy.any():
        smallest = np.full(ncl, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(smallest, label_cl[easy], involved[easy])
        remap[involved[easy]] = smallest[label_cl[easy]]
    if mixed.any():
        guard: dict[int, frozenset[int]] = {}
        if len(g_label):
            in_mixed = mixed[label_cl[g_label]]
            acc: dict[int, set[int]] = {}
            for li, t in zip(g_label[in_mixed].tolist(), g_tok[in_mixed].tolist()):
                acc.setdefault(int(involved[li]), set()).add(t)
            guard = {label: frozenset(ts) for label, ts in acc.items()}
        hard = multi[mixed[token_cl]]
        # Input order (a token's first key), not hash order: the outcome must be reproducible.
        hard = hard[np.argsort(token_key[utok[hard]], kind="stable")]
        runs = [(int(utok[m]), pl[start[m] : start[m] + count[m]].tolist()) for m in hard.tolist()]
        for label, root in _weak_joins_in_order(
            inp, policy, runs, guard, tok, token_key, key_rec, weak, reviews
        ).items():
            remap[label] = root
    return cast(np.ndarray, remap[comp])  # numpy types fancy indexing by an untyped array as Any


def _weak_joins_in_order(
    inp: MatchInput,
    policy: MatchPolicy,
    runs: list[tuple[int, list[int]]],
    guard: dict[int, frozenset[int]],
    tok: np.ndarray,
    token_key: np.ndarray,
    key_rec: np.ndarray,
    weak: np.ndarray,
    reviews: list[Review],
) -> dict[int, int]:
    """Weak keys ``runs`` (token, labels holding it), one at a time: union-find over labels,
    refusing a join that would bring two different guard-key sets together. Returns the new
    root of every label that moved; ``guard`` (label -> guard tokens) is updated in place."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:
            parent[x], x = root, parent[x]
        return root

    def union(roots: list[int]) -> None:
        keep = min(roots)
        merged_guard: set[int] = set()
        for r in roots:
            merged_guard |= guard.get(r, frozenset())
            if r != keep:
                parent[r] = keep
        if merged_guard:
            guard[keep] = frozenset(merged_guard)

    wt = tok[weak]
    weak_order: np.ndarray | None = None
    for t, labels in runs:
        roots = sorted({find(label) for label in labels})
        if len(roots) < 2:
            continue
        guarded = [r for r in roots if guard.get(r)]
        distinct = {guard[r] for r in guarded}
        if len(distinct) <= 1:
            union(roots)
            continue
        bare = [r for r in roots if not guard.get(r)]
        if len(bare) > 1:
            union(bare)
        if weak_order is None:
            weak_order = np.argsort(wt, kind="stable")
        lo, hi = np.searchsorted(wt, t, sorter=weak_order), np.searchsorted(wt, t, side="right", sorter=weak_order)
        holders = tuple(sorted(set(key_rec[weak][weak_order[lo:hi]].tolist())))
        rep = int(token_key[t])
        reviews.append(
            Review(
                "ambiguous_match",
                f"{inp.key_kinds[rep]}:{inp.key_values[rep]}",
                holders,
                f"{inp.key_kinds[rep]} shared by {len(guarded)} persons with different {policy.guard_kind}s",
            )
        )
    return {label: find(label) for label in list(parent)}


def _person_array(person_ids: Sequence[int | None], n: int) -> np.ndarray:
    """Person ids as int64, -1 for none (None becomes NaN in a float array, in C)."""
    if isinstance(person_ids, np.ndarray):
        return person_ids.astype(np.int64)
    as_float = np.array(person_ids, dtype=np.float64)
    return np.nan_to_num(as_float, nan=-1.0).astype(np.int64)


def _codes(names: Sequence[str], n: int) -> tuple[np.ndarray, dict[str, int]]:
    """Small integer codes for repeated names (connections, key kinds), in order of first
    appearance, in one C-level pass (a defaultdict numbering each new name)."""
    numbering: defaultdict[str, int] = defaultdict(itertools.count().__next__)
    codes = np.fromiter(map(numbering.__getitem__, names), dtype=np.int64, count=n)
    return codes, dict(numbering)


def _runs(ordered: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values, start offsets and lengths of the runs of equal values in a sorted array."""
    if len(ordered) == 0:
        empty = np.zeros(0, np.int64)
        return ordered, empty, empty
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    start = np.flatnonzero(keep)
    count = np.diff(np.append(start, len(ordered)))
    return ordered[start], start, count


def _intern(kcode: np.ndarray, values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Dense token ids for (kind, value) keys, and one key index per token (its first key).

    Hashing then sorting in NumPy is several times faster than a dict over millions of
    strings. Keys are sorted by (value hash, kind) — two stable sorts, the first a radix sort
    of the small kind codes — so a token is an exact (kind, hash) pair, never a mix of the two.
    Equal keys always get one token; a hash collision between different values is detected by
    comparing every key with its token's first key, and then the exact (slower) dict interning
    is used instead.
    """
    k = len(kcode)
    if k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    hashes = np.fromiter(map(hash, values), dtype=np.int64, count=k)
    small = kcode.astype(np.uint8) if int(kcode.max()) < 256 else kcode
    by_kind = np.argsort(small, kind="stable")
    order = by_kind[np.argsort(hashes[by_kind], kind="stable")]
    sorted_hash = hashes[order]
    sorted_kind = kcode[order]
    starts = np.empty(k, dtype=bool)
    starts[0] = True
    np.logical_or(sorted_hash[1:] != sorted_hash[:-1], sorted_kind[1:] != sorted_kind[:-1], out=starts[1:])
    tok = np.empty(k, dtype=np.int64)
    tok[order] = np.cumsum(starts) - 1
    token_key = order[starts]  # stable sorts: the smallest key index of each token
    rep = token_key[tok]
    # Only keys that share a token with an earlier key need comparing with it (in key order:
    # neighbouring keys sit close in memory, far faster than comparing in hash order).
    shared = np.flatnonzero(rep != np.arange(k))
    if all(map(operator.eq, map(values.__getitem__, shared.tolist()), map(values.__getitem__, rep[shared].tolist()))):
        return tok, token_key
    interned: dict[tuple[int, str], int] = {}
    first = np.fromiter(
        map(interned.setdefault, zip(kcode.tolist(), values), itertools.count()), dtype=np.int64, count=k
    )
    token_key, tok = np.unique(first, return_inverse=True)
    return tok.astype(np.int64), token_key


def _duplicates(
    inp: MatchInput,
    comp: np.ndarray,
    person: np.ndarray,
    person_of: np.ndarray,
    live: np.ndarray,
    merge_persons: frozenset[int],
) -> list[Duplicate]:
    """Live records of one connection sharing a person; the primary first."""
    idx = np.flatnonzero(live)
    if len(idx) < 2:
        return []
    code, conn_codes = _codes(inp.connections, len(comp))
    group = comp[idx] * len(conn_codes) + code[idx]
    size = (int(comp.max()) + 1) * len(conn_codes)
    if size <= 4 * len(group) + 1024:
        # Counting beats sorting while (component, connection) pairs are not far more than records.
        in_dup = np.bincount(group, minlength=size)[group] > 1
    else:
        ordered = np.sort(group)
        in_dup = np.isin(group, ordered[1:][ordered[1:] == ordered[:-1]])
    if not in_dup.any():
        return []
    idx = idx[in_dup]
    group = group[in_dup]
    record_ids = np.asarray(inp.record_ids, dtype=np.int64)[idx]
    # Primary: already in the surviving person, then the oldest record.
    relinked = person[idx] != person_of[idx]
    order = np.lexsort((record_ids, relinked, group))
    g_sorted = group[order]
    _, start, count = _runs(g_sorted)
    out: list[Duplicate] = []
    ordered_idx = idx[order]
    for s, c in zip(start[count > 1].tolist(), count[count > 1].tolist()):
        members = tuple(ordered_idx[s : s + c].tolist())
        p = int(person_of[members[0]])
        out.append(Duplicate(p, inp.connections[members[0]], members, p in merge_persons))
    out.sort(key=lambda d: (d.person, d.connection))
    return out
