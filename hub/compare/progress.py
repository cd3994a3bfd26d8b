"""A progress bar per run: tqdm when it is installed (it comes with transformers),
otherwise a small text bar. Never a new dependency; always on stderr, so ``--json``
output on stdout stays clean."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["make_progress"]

_WIDTH = 30


def make_progress(stream: TextIO | None = None, *, use_tqdm: bool | None = None
                  ) -> Callable[[str, int], Any]:
    """``progress(label, total)``: a context manager whose object has ``update(text)``,
    called after every step with a short status (shown after the bar)."""
    out = stream if stream is not None else sys.stderr
    if use_tqdm is None:
        use_tqdm = importlib.util.find_spec("tqdm") is not None
    return _tqdm_bar(out) if use_tqdm else _text_bar(out)


def _tqdm_bar(out: TextIO) -> Callable[[str, int], Any]:
    from tqdm import tqdm

    @contextmanager
    def progress(label: str, total: int) -> Iterator[Any]:
        with tqdm(total=total, desc=label, unit="step", file=out, leave=True,
                  dynamic_ncols=True, mininterval=0.25) as bar:
            yield _TqdmUpdater(bar)

    return progress


class _TqdmUpdater:
    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self.every = max(1, (bar.total or 1) // 100)
        self.count = 0

    def update(self, text: str) -> None:
        self.count += 1
        if self.count % self.every == 0:
            self.bar.set_postfix_str(text, refresh=False)
        self.bar.update(1)


def _text_bar(out: TextIO) -> Callable[[str, int], Any]:
    @contextmanager
    def progress(label: str, total: int) -> Iterator[Any]:
        bar = _TextBar(out, label, total)
        try:
            yield bar
        finally:
            bar.close()

    return progress


class _TextBar:
    """``label [#####.....] 120/300 text``: redrawn in place on a terminal; in a log (not
    a terminal), one line at the start and one at the end."""

    def __init__(self, out: TextIO, label: str, total: int) -> None:
        self.out, self.label, self.total = out, label, max(1, total)
        self.count, self.text = 0, ""
        self.live = bool(getattr(out, "isatty", lambda: False)())
        self.every = max(1, self.total // 50)
        if not self.live:
            print(f"{self.label}: training {self.total} steps...", file=out, flush=True)

    def update(self, text: str) -> None:
        self.count += 1
        self.text = text
        if self.live and (self.count % self.every == 0 or self.count == self.total):
            self.out.write("\r" + self._line())
            self.out.flush()

    def _line(self) -> str:
        done = int(_WIDTH * self.count / self.total)
        return (f"{self.label} [{'#' * done}{'.' * (_WIDTH - done)}] "
                f"{self.count}/{self.total} {self.text}").rstrip()

    def close(self) -> None:
        if self.live:
            self.out.write("\r" + self._line() + "\n")
        else:
            print(f"{self.label}: {self.count}/{self.total} steps; {self.text}".rstrip("; "),
                  file=self.out, flush=True)
