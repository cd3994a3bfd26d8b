"""The command's one table renderer: aligned, fitted to the width, nothing lost silently."""

from __future__ import annotations

import pytest

from optimhub.tables import ELLIPSIS, render_table, terminal_width

HEADERS = ["name", "backend", "summary"]
ROWS = [
    ["adamw_torch", "torch", "PyTorch AdamW: decoupled weight decay, the usual default"],
    ["galore_adamw_8bit_layerwise", "galore-torch",
     "GaLore low-rank projection of the gradients with 8-bit Adam state, stepped per layer"],
]


def test_without_a_limit_rows_stay_on_one_line_and_align():
    text = render_table(HEADERS, ROWS, width=None, fit=False)
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("name") and set(lines[1]) <= {"-", " "}
    starts = {line.index(row[1], len(row[0])) for line, row in zip(lines[2:], ROWS,
                                                                     strict=True)}
    assert len(starts) == 1  # the backend column starts at the same place in every row
    assert all(line == line.rstrip() for line in lines)


@pytest.mark.parametrize("width", [100, 72, 60])
def test_every_line_fits_the_width_and_no_word_is_lost(width):
    text = render_table(HEADERS, ROWS, width=width)
    assert max(len(line) for line in text.splitlines()) <= width
    words = " ".join(text.split())
    for row in ROWS:
        for word in " ".join(row).split():
            assert word in words, (word, width)


def test_the_widest_column_gives_way_first():
    text = render_table(HEADERS, ROWS, width=80)
    first_row = text.splitlines()[2]
    assert "adamw_torch" in first_row and "torch" in first_row  # short columns intact


def test_hyphens_break_before_anything_is_cut():
    text = render_table(HEADERS, ROWS, width=48)
    assert max(len(line) for line in text.splitlines()) <= 48
    assert ELLIPSIS not in text and "galore-\n" not in text and "galore-" in text


def test_too_narrow_for_the_longest_words_cuts_them_visibly_and_still_fits():
    text = render_table(HEADERS, ROWS, width=40)
    assert max(len(line) for line in text.splitlines()) <= 40
    assert ELLIPSIS in text


def test_a_detail_column_moves_under_its_row_when_squeezed():
    text = render_table(HEADERS, ROWS, width=60, detail=2)
    lines = text.splitlines()
    assert lines[0].split() == ["name", "backend"]
    assert lines[2].split() == ["adamw_torch", "torch"]
    assert lines[3].startswith("    PyTorch AdamW:")
    assert max(len(line) for line in lines) <= 60
    wide = render_table(HEADERS, ROWS, width=200, detail=2)
    assert wide == render_table(HEADERS, ROWS, width=None, fit=False)


def test_a_word_longer_than_its_column_is_cut_visibly():
    text = render_table(["key", "value"], [["a", "x" * 200]], width=40)
    assert ELLIPSIS in text
    assert max(len(line) for line in text.splitlines()) <= 40


def test_right_aligned_numbers_and_indent():
    text = render_table(["name", "ms"], [["a", "1.5"], ["bbb", "12.25"]], align="<>",
                        indent="  ", width=None, fit=False)
    lines = text.splitlines()
    assert lines[2] == "  a       1.5" and lines[3] == "  bbb   12.25"


def test_columns_env_sets_the_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "57")
    assert terminal_width() == 57
    text = render_table(HEADERS, ROWS)
    assert max(len(line) for line in text.splitlines()) <= 57


def test_a_row_of_the_wrong_length_is_a_bug_not_a_crooked_table():
    with pytest.raises(ValueError, match="one entry per header"):
        render_table(["a", "b"], [["only one"]])
