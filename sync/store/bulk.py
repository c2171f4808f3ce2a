"""Bulk paths of the store on PostgreSQL: COPY in, set-based updates out, fresh statistics.

psycopg adapts a Python list bound as an array parameter element by element in Python (a
million ids or JSON texts cost seconds on the client alone), and SQLAlchemy's executemany
goes row by row. The helpers here move many rows in one round trip instead:

* :func:`copy_rows` — rows into a table with ``COPY ... FROM STDIN`` (text format), written
  in chunks so the server parses the first rows while the rest are formatted;
* :func:`copy_numbers` — columns of integers and flags (NumPy arrays) into a table with a
  binary ``COPY`` built by NumPy in one pass (no Python object per value);
* :func:`temp_table` — a temporary table for a set-based ``UPDATE ... FROM`` (dropped after
  use, and at commit in any case);
* :func:`int_array`, :func:`text_array` — a list of integers or strings as one array literal
  (``CAST(:p AS bigint[])``), parsed by the server instead of adapted by psycopg;
* :func:`refresh_stats` — ``ANALYZE`` of the columns a query's plan depends on when the table
  changed much since its statistics were taken (a backfill flips every record's ``dirty``
  flag and person: with the statistics of before, PostgreSQL scans whole tables for what
  are index look-ups), on a connection of its own so no lock outlives the ``ANALYZE``.

Everything here runs in the caller's transaction (except :func:`refresh_stats`) and raises
driver errors wrapped as SQLAlchemy wraps them (``IntegrityError``, ``DataError``, ...).
SQLite never comes here: its own paths (executemany of plain tuples) are already bulk.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

# Rows of COPY text handed to psycopg at a time.
_CHUNK_ROWS = 2_000
# Characters with a meaning in COPY's text format, escaped in values.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_NULL = "\\N"
# Binary COPY: signature, flags, header extension length; and the trailer.
_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_BINARY_TRAILER = (-1).to_bytes(2, "big", signed=True)


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _raw(session: Session) -> Any:
    """The psycopg connection under the session's transaction."""
    raw = session.connection().connection.driver_connection
    assert raw is not None
    return raw


def _wrap(sql: str, error: Exception) -> Exception:
    import psycopg

    return DBAPIError.instance(sql, None, error, psycopg.Error)


def copy_field(value: Any) -> str:
    """A value as one field of COPY's text format: ``None`` is NULL, flags ``t``/``f``,
    datetimes in ISO 8601, dicts and lists as JSON, anything else its ``str``."""
    if value is None:
        return _NULL
    if isinstance(value, str):
        if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
            return value.translate(_ESCAPES)
        return value
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use UTC-aware datetimes")
        return value.isoformat()
    if isinstance(value, (dict, list)):
        return copy_field(json.dumps(value))
    return copy_field(str(value))


def json_field(blob: str) -> str:
    """JSON text as a COPY text field: ``json.dumps`` escapes control characters itself, so
    only backslashes need doubling."""
    return blob.replace("\\", "\\\\") if "\\" in blob else blob


def copy_lines(session: Session, table: str, columns: Sequence[str], lines: Iterable[str]) -> int:
    """``COPY table (columns) FROM STDIN`` of ready-made lines of COPY's text format (fields
    made with :func:`copy_field` or :func:`json_field`, tab-separated, each line ending in a
    newline): for the hot paths that format their rows faster than :func:`copy_rows` can.
    Returns the number of lines written."""
    import psycopg

    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    n = 0
    try:
        with _raw(session).cursor().copy(sql) as copy:
            batch: list[str] = []
            for line in lines:
                batch.append(line)
                if len(batch) >= _CHUNK_ROWS:
                    copy.write("".join(batch))
                    n += len(batch)
                    batch.clear()
            if batch:
                copy.write("".join(batch))
                n += len(batch)
    except psycopg.Error as e:
        raise _wrap(sql, e) from None
    return n


def copy_rows(session: Session, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """``COPY table (columns) FROM STDIN`` of ``rows`` (values as :func:`copy_field` writes
    them; a ``str`` is taken as the column's text form, e.g. JSON for a jsonb column).
    Returns the number of rows written."""
    field = copy_field
    return copy_lines(session, table, columns, ("\t".join([field(v) for v in row]) + "\n" for row in rows))


def copy_numbers(
    session: Session, table: str, columns: Mapping[str, npt.NDArray[np.int64] | npt.NDArray[np.bool_]]
) -> int:
    """A binary ``COPY`` of equally long NumPy columns into ``table``: int64 arrays (bigint
    columns) and bool arrays (boolean columns), no NULLs. The whole payload is one NumPy
    record array: no Python object per value. Returns the number of rows."""
    import psycopg

    names = list(columns)
    arrays = [np.asarray(columns[c]) for c in names]
    n = len(arrays[0]) if arrays else 0
    if any(len(a) != n for a in arrays):
        raise ValueError("columns of different lengths")
    fields: list[tuple[str, str]] = [("count", ">i2")]
    for i, a in enumerate(arrays):
        fields.append((f"len{i}", ">i4"))
        if a.dtype == np.bool_:
            fields.append((f"val{i}", "u1"))
        elif np.issubdtype(a.dtype, np.integer):
            fields.append((f"val{i}", ">i8"))
        else:
            raise TypeError(f"column {names[i]}: {a.dtype} is neither integer nor bool")
    rec = np.empty(n, dtype=np.dtype(fields))
    rec["count"] = len(arrays)
    for i, a in enumerate(arrays):
        rec[f"len{i}"] = 1 if a.dtype == np.bool_ else 8
        rec[f"val{i}"] = a
    sql = f"COPY {table} ({', '.join(names)}) FROM STDIN (FORMAT BINARY)"
    try:
        with _raw(session).cursor().copy(sql) as copy:
            copy.write(_BINARY_HEADER)
            if n:
                copy.write(rec.tobytes())
            copy.write(_BINARY_TRAILER)
    except psycopg.Error as e:
        raise _wrap(sql, e) from None
    return n


@contextmanager
def temp_table(session: Session, name: str, columns: str) -> Iterator[str]:
    """A temporary table ``name`` with ``columns`` (SQL column definitions) for the duration
    of the block, in the caller's transaction; dropped after it (and at commit regardless)."""
    session.execute(text(f"DROP TABLE IF EXISTS pg_temp.{name}"))
    session.execute(text(f"CREATE TEMP TABLE {name} ({columns}) ON COMMIT DROP"))
    try:
        yield name
    finally:
        if session.is_active:
            try:
                session.execute(text(f"DROP TABLE IF EXISTS pg_temp.{name}"))
            except DBAPIError:  # the transaction failed: the rollback removes the table
                pass


def int_array(values: Iterable[Any]) -> str:
    """An array literal of integers (``{1,2,3}``) for ``CAST(:param AS bigint[])``."""
    if isinstance(values, np.ndarray):
        values = values.tolist()
    return "{" + ",".join(map(str, (int(v) for v in values))) + "}"


def text_array(values: Iterable[str]) -> str:
    """An array literal of strings (``{"a","b"}``) for ``CAST(:param AS text[])``: every
    element quoted, backslashes and quotes escaped."""
    return "{" + ",".join(['"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values]) + "}"


# Statistics are refreshed once this share of a table's rows changed since they were taken
# (autovacuum's default is 10% plus 50 rows), and never for fewer than _MIN_CHANGES changes.
_STALE_SHARE = 0.2
_MIN_CHANGES = 10_000
# Rows sampled by these refreshes (default_statistics_target 100 samples 30,000): the plans
# served only need a column's null fraction and its few common values (a flag), which a
# small sample gives as well, and at a fraction of the page reads.
_STATS_TARGET = 10


# (database URL, table) -> (n_mod_since_analyze, last analyze time) right after this process's
# own ANALYZE of it: see refresh_stats.
_analyzed: dict[tuple[str, str], tuple[int, Any]] = {}


def refresh_stats(session: Session, table: str, columns: Sequence[str]) -> bool:
    """``ANALYZE table (columns)`` when the table changed much since it was last analyzed
    (``pg_stat_user_tables``), on a separate connection in autocommit: it sees committed rows
    only, takes its lock for its own duration, and skips the table if another ANALYZE or a
    VACUUM holds it (``SKIP_LOCKED``). Returns whether it analyzed. PostgreSQL only.

    A store cannot count on autovacuum having caught up (it may be off, and a backfill writes
    faster than it wakes up): with statistics from before a backfill the planner takes every
    record for dirty and scans the table where the partial index holds a handful of rows.

    An ANALYZE of some columns does not reset PostgreSQL's ``n_mod_since_analyze`` (only a
    whole-table one does), so the count it had right after this process's own ANALYZE is
    remembered and the changes are counted from there, as long as nobody analyzed the table
    since (its last-analyzed time is the one seen then). Without that, every run after a
    backfill analyzed four tables again until autovacuum's own ANALYZE came (never, with
    autovacuum off): a fifth of an incremental plan of a thousand changes."""
    # Statistics views keep, within a transaction, what they first showed of a table: dropped,
    # so an ANALYZE since (this process's, on another connection) is seen.
    session.execute(text("SELECT pg_stat_clear_snapshot()"))
    row = session.execute(
        text(
            "SELECT s.n_mod_since_analyze, c.reltuples, GREATEST(s.last_analyze, s.last_autoanalyze) "
            "FROM pg_stat_user_tables AS s "
            "JOIN pg_class AS c ON c.oid = s.relid WHERE s.relname = :t AND s.schemaname = current_schema()"
        ),
        {"t": table},
    ).first()
    if row is None:
        return False
    engine = session.get_bind().engine
    key = (engine.url.render_as_string(hide_password=True), table)
    changed, tuples = int(row[0] or 0), max(float(row[1] or 0), 0.0)
    mine = _analyzed.get(key)
    if mine is not None and mine[1] == row[2] and changed >= mine[0]:
        changed -= mine[0]  # counted since this process's own (partial) ANALYZE
    if changed < _MIN_CHANGES or changed < _STALE_SHARE * tuples:
        return False
    # Through the driver, on a pooled connection of its own in autocommit (ANALYZE is
    # housekeeping, not one of the store's statements).
    pooled = engine.raw_connection()
    try:
        raw = pooled.driver_connection
        assert raw is not None
        raw.autocommit = True
        try:
            raw.execute(f"SET default_statistics_target = {_STATS_TARGET}")
            raw.execute(f"ANALYZE (SKIP_LOCKED) {table} ({', '.join(columns)})")
            raw.execute("RESET default_statistics_target")
            after = raw.execute(
                "SELECT n_mod_since_analyze, GREATEST(last_analyze, last_autoanalyze) FROM pg_stat_user_tables "
                "WHERE relname = %s AND schemaname = current_schema()",
                (table,),
            ).fetchone()
            if after is not None:
                _analyzed[key] = (int(after[0] or 0), after[1])
        finally:
            raw.autocommit = False
    finally:
        pooled.close()
    return True


def analyze(session: Session, table: str, columns: Sequence[str]) -> None:
    """``ANALYZE table (columns)`` in the session's own transaction (it sees the transaction's
    own writes), at the refreshes' sampling target; :func:`refresh_stats` then counts the
    table's changes from here. For a table this transaction rewrote under its own lock."""
    session.execute(text(f"SET LOCAL default_statistics_target = {_STATS_TARGET}"))
    session.execute(text(f"ANALYZE {table} ({', '.join(columns)})"))
    session.execute(text("RESET default_statistics_target"))
    session.execute(text("SELECT pg_stat_clear_snapshot()"))
    # This transaction's own changes to the table are added to the count when it commits: the
    # ANALYZE has seen them already.
    after = session.execute(
        text(
            "SELECT n_mod_since_analyze + pg_stat_get_xact_tuples_inserted(relid) "
            "+ pg_stat_get_xact_tuples_updated(relid) + pg_stat_get_xact_tuples_deleted(relid), "
            "GREATEST(last_analyze, last_autoanalyze) FROM pg_stat_user_tables "
            "WHERE relname = :t AND schemaname = current_schema()"
        ),
        {"t": table},
    ).first()
    if after is not None:
        url = session.get_bind().engine.url.render_as_string(hide_password=True)
        _analyzed[(url, table)] = (int(after[0] or 0), after[1])


def empty_tables(url: str) -> None:
    """Empty every table of the store at ``url`` (benchmarks reusing a database), identities
    restarted. PostgreSQL only."""
    from sync.store.connect import make_engine
    from sync.store.models import Base

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


__all__ = [
    "analyze",
    "copy_field",
    "empty_tables",
    "copy_numbers",
    "copy_rows",
    "int_array",
    "is_postgres",
    "json_field",
    "refresh_stats",
    "temp_table",
    "text_array",
]
