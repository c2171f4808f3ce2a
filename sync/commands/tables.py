"""Tables that fit the terminal: headers are never cut; long cells wrap; when the columns still
do not fit, the least important ones are left out (and the caption says which; ``--json`` has
them all)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

#: The width tables fit when the output is not a terminal (a file, a pipe, a test).
DEFAULT_WIDTH = 80


@dataclass(frozen=True)
class Column:
    """A column: ``wrap`` lets its cells fold onto several lines (text); ``keep`` columns are
    never left out; among the others, the lowest ``rank`` goes first."""

    header: str
    wrap: bool = False
    keep: bool = False
    rank: int = 0
    justify: str = "left"
    min_wrap: int = 12  # narrowest a wrapping column may get


def _cell_width(value: str) -> int:
    return max((len(line) for line in value.splitlines()), default=0)


def _blank(rows: Sequence[Sequence[str]], i: int) -> bool:
    return all(r[i].strip() in ("", "0", "-") for r in rows)


def fit_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    width: int | None = None,
    console: Console | None = None,
    title: str | None = None,
    hint: str | None = "--json has them",
) -> Table:
    """A rich Table of ``rows`` no wider than ``width`` (default: the console's width, at most
    :data:`DEFAULT_WIDTH` off a terminal)."""
    if width is None:
        width = console.width if console is not None else DEFAULT_WIDTH
    kept = list(range(len(columns)))

    def needed(idx: list[int]) -> int:
        total = 1  # the left border
        for i in idx:
            col = columns[i]
            cells = [_cell_width(r[i]) for r in rows] or [0]
            body = min(max(cells), col.min_wrap) if col.wrap else max(cells)
            total += max(len(col.header), body) + 3  # padding on both sides and a border
        return total

    dropped: list[str] = []
    empty: list[str] = []
    while needed(kept) > width:
        droppable = [i for i in kept if not columns[i].keep]
        if not droppable:
            break
        # Columns with nothing to say (every cell 0 or empty) go first, then by rank.
        victim = min(droppable, key=lambda i: (not _blank(rows, i), columns[i].rank, -i))
        kept.remove(victim)
        (empty if _blank(rows, victim) else dropped).append(columns[victim].header)
    notes = []
    if empty:
        notes.append(f"not shown, all zero: {', '.join(empty)}")
    if dropped:
        notes.append(f"left out to fit {width} columns: {', '.join(dropped)}" + (f" ({hint})" if hint else ""))
    caption = "; ".join(notes) or None
    table = Table(title=title, caption=caption, width=None, expand=False)
    for i in kept:
        col = columns[i]
        table.add_column(
            col.header,
            justify=col.justify,  # type: ignore[arg-type]
            no_wrap=not col.wrap,
            overflow="fold" if col.wrap else "ellipsis",
            min_width=len(col.header),
        )
    for row in rows:
        table.add_row(*(row[i] for i in kept))
    return table


def ago(when: datetime | str | None, now: datetime | None = None) -> str:
    """``when`` as an age in words ("3 min ago"); "never" for None."""
    if when is None:
        return "never"
    if isinstance(when, str):
        text = when
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return text
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 90:
        text = f"{seconds:.0f} s"
    elif seconds < 5400:
        text = f"{seconds / 60:.0f} min"
    elif seconds < 48 * 3600:
        text = f"{seconds / 3600:.0f} h"
    else:
        text = f"{seconds / 86400:.0f} days"
    return f"in {text}" if future else f"{text} ago"


def _as_time(value: Any) -> datetime | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 1e9:
        return datetime.fromtimestamp(value / 1000 if value > 1e11 else value, UTC)
    if isinstance(value, str) and len(value) >= 10 and value[:4].isdigit() and value[4] == "-":
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def describe_cursor(cursor: dict[str, Any] | None, checkpoint: dict[str, Any] | None = None) -> str:
    """A pull position in words: "changes since 2026-12-06 02:40 UTC (5 min ago)", "a scan
    stopped at page 4 (resumes there)", "last full scan completed ... ", or "not pulled yet"."""
    parts: list[str] = []
    cursor = cursor or {}
    if cursor.get("next_page") is not None:
        parts.append(f"a scan stopped at page {cursor['next_page']} (resumes there)")
    done = _as_time(cursor.get("completed_at"))
    if done is not None:
        parts.append(f"last full scan completed {done:%Y-%m-%d %H:%M} UTC ({ago(done)})")
    for key, value in cursor.items():
        if key in ("next_page", "completed_at"):
            continue
        at = _as_time(value)
        if at is not None:
            parts.append(f"changes since {at:%Y-%m-%d %H:%M:%S} UTC ({ago(at)})")
        elif value is not None:
            parts.append(f"{key.replace('_', ' ')} {value}")
    if checkpoint:
        kind = "full pull" if checkpoint.get("full") else "pull"
        started = _as_time(checkpoint.get("started_at"))
        parts.append(
            f"a {kind} started {ago(started) if started else 'earlier'} has not finished "
            "(running now, or interrupted: the next one resumes)"
        )
    if not parts:
        return "everything on the next pull" if not cursor else "at the start"
    return "; ".join(parts)
