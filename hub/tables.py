"""The one text-table renderer of the ``optimhub`` command (list, info, plugins, doctor,
estimate, compare): aligned columns that fit the terminal.

Width: ``COLUMNS`` when set, else the terminal's own width when stdout is a terminal, else
no limit (output going into a pipe or a file keeps each row on one line, so ``grep`` sees
whole rows). A table wider than that is fitted in three moves, each only if the previous
one is not enough:

1. the widest columns wrap their cells at spaces, never below their longest word, so
   nothing is cut;
2. a ``detail`` column (a long free-text one, such as a summary) that would still not fit,
   or would be squeezed below 30 characters, leaves the table and is printed under its
   row, indented, wrapped to the full width;
3. the widest columns narrow further, breaking words after hyphens, and a word still
   longer than its column is cut with ``…``. Headers wrap at spaces like cells; when even
   their words cannot fit, lines overflow rather than lose a header.

It is a few dozen lines rather than ``rich``: ``import rich.console, rich.table`` costs
30-40 ms on a quiet 2-core machine, about half of the floor the listing commands are held
to (benchmarks/import_time.py); ``textwrap`` costs nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import textwrap
from collections.abc import Sequence

__all__ = ["ELLIPSIS", "render_table", "terminal_width"]

ELLIPSIS = "…"
_GAP = "  "
#: In move 3 a column is narrowed to this (or its header) before any goes below it.
_MIN_COLUMN = 8
#: A detail column narrower than this goes under its row (move 2).
_MIN_DETAIL = 30
_DETAIL_INDENT = "    "
_SPACES = re.compile(r"\s+")
_HYPHENS = re.compile(r"\s+|(?<=-)")


def terminal_width() -> int | None:
    """The width tables must fit: ``COLUMNS``, else the terminal's, else None (no limit)."""
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        if sys.stdout is not None and sys.stdout.isatty():
            return shutil.get_terminal_size().columns
    except (AttributeError, ValueError, OSError):
        pass
    return None


def render_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    indent: str = "",
    align: str | None = None,
    width: int | None = None,
    fit: bool = True,
    detail: int | None = None,
) -> str:
    """Headers, a dashed rule, then the rows; the last column unpadded, no trailing spaces.

    ``align`` has one character per column, ``<`` (left) or ``>`` (right; numbers).
    ``width`` defaults to :func:`terminal_width`; ``fit=False`` never narrows. ``detail``
    is the index of a column that may move under its row when the table is too wide.
    """
    count = len(headers)
    align = align or "<" * count
    if len(align) != count or any(len(row) != count for row in rows):
        raise ValueError("every row, and align, needs one entry per header")
    cells = [[str(cell) for cell in row] for row in rows]
    limit = (width if width is not None else terminal_width()) if fit else None
    if limit is None:
        return "\n".join(_render(list(headers), cells, align, indent, _natural(headers, cells)))
    available = limit - len(indent)
    widths = _fit(headers, cells, available, stop_at_words=True)
    natural = _natural(headers, cells)
    if detail is not None and (not _fits(widths, available)
                               or widths[detail] < min(_MIN_DETAIL, natural[detail])):
        kept = [i for i in range(count) if i != detail]
        narrow = _fit([headers[i] for i in kept], [[r[i] for i in kept] for r in cells],
                      available, stop_at_words=False)
        return "\n".join(_render(
            [headers[i] for i in kept], [[r[i] for i in kept] for r in cells],
            "".join(align[i] for i in kept), indent, narrow,
            details=[r[detail] for r in cells], width=available))
    if not _fits(widths, available):
        widths = _fit(headers, cells, available, stop_at_words=False)
    return "\n".join(_render(list(headers), cells, align, indent, widths))


def _natural(headers: Sequence[str], cells: list[list[str]]) -> list[int]:
    return [max(_longest_line(c) for c in [h, *(row[i] for row in cells)])
            for i, h in enumerate(headers)]


def _fits(widths: list[int], available: int) -> bool:
    return sum(widths) + len(_GAP) * (len(widths) - 1) <= available


def _longest_line(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def _longest_word(column: Sequence[str], breaks: re.Pattern[str]) -> int:
    return max((len(w) for cell in column for w in breaks.split(cell)), default=0)


def _fit(headers: Sequence[str], cells: list[list[str]], available: int, *,
         stop_at_words: bool) -> list[int]:
    """Narrow the widest column, one character at a time, until the row fits: down to
    each column's longest word, then (unless ``stop_at_words``) to its longest piece
    between hyphens, to ``_MIN_COLUMN``, and to the header's longest word."""
    widths = _natural(headers, cells)
    budget = available - len(_GAP) * (len(widths) - 1)
    columns = list(zip(*cells, strict=True)) if cells else [()] * len(headers)
    heads = [_longest_word([h], _SPACES) for h in headers]  # a header wraps at spaces too
    stages = [[max(h, _longest_word(c, _SPACES)) for h, c in zip(heads, columns, strict=True)]]
    if not stop_at_words:
        stages += [[max(h, _longest_word(c, _HYPHENS)) for h, c in zip(heads, columns,
                                                                       strict=True)],
                   [max(h, _MIN_COLUMN) for h in heads],
                   [max(h, 1) for h in heads]]
    for floors in stages:
        while sum(widths) > budget:
            candidates = [i for i, w in enumerate(widths) if w > floors[i]]
            if not candidates:
                break
            widest = max(candidates, key=lambda i: widths[i])
            widths[widest] -= 1
    return widths


def _render(headers: list[str], cells: list[list[str]], align: str, indent: str,
            widths: list[int], details: list[str] | None = None,
            width: int | None = None) -> list[str]:
    lines = []
    last = len(headers) - 1
    for number, row in enumerate([headers, ["-" * w for w in widths], *cells]):
        wrapped = [_wrap(cell, w) for cell, w in zip(row, widths, strict=True)]
        for depth in range(max(len(parts) for parts in wrapped)):
            out = []
            for i, (parts, w) in enumerate(zip(wrapped, widths, strict=True)):
                text = parts[depth] if depth < len(parts) else ""
                out.append(text.rjust(w) if align[i] == ">" else
                           text if i == last else text.ljust(w))
            lines.append((indent + _GAP.join(out)).rstrip())
        if details is not None and number >= 2 and details[number - 2]:
            room = max((width or 0) - len(_DETAIL_INDENT), _MIN_DETAIL)
            lines += [(indent + _DETAIL_INDENT + part).rstrip()
                      for part in _wrap(details[number - 2], room)]
    return lines


def _wrap(cell: str, width: int) -> list[str]:
    """The cell's lines at ``width``: wrapped at spaces and after hyphens; a word still
    too long is cut with ``…``."""
    lines: list[str] = []
    for paragraph in cell.splitlines() or [""]:
        if len(paragraph) <= width:
            lines.append(paragraph)
            continue
        for line in textwrap.wrap(paragraph, width, break_long_words=False) or [""]:
            lines.append(line if len(line) <= width else line[:width - 1] + ELLIPSIS)
    return lines
