"""The plain aligned text table every benchmark script prints."""

from __future__ import annotations


def table(rows: list[tuple[str, ...]]) -> str:
    """``rows[0]`` is the header; a dashed rule goes under it; trailing spaces are cut."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
