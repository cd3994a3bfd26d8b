"""The one tokenizer behind optimhub's small text grammars (``optim_args``, route sets).

Both grammars share their lexical layer: whitespace separates, single or double quotes
enclose a text taken literally, one-character delimiters stand alone, and everything else
runs together as a bare word. They differ only in which delimiters (and multi-character
operators such as a route's ``->``) they know, and in the error an unterminated quote
raises (each grammar names its own context and fix), so those are parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["QUOTES", "Token", "span", "tokenize"]

#: The quote characters of every grammar: a quoted text is taken literally.
QUOTES = "'\""


@dataclass(frozen=True)
class Token:
    """One lexical token: a delimiter or operator (its own text as ``kind``), a bare
    ``"word"`` or a ``"quoted"`` text (without its quotes); ``start``/``end`` index the
    source, so messages can quote the user's own text."""

    kind: str
    text: str
    start: int
    end: int


def tokenize(
    text: str,
    *,
    delimiters: str,
    operators: Sequence[str] = (),
    unterminated: Callable[[str, str], Exception],
) -> list[Token]:
    """Cut ``text`` into tokens in one left-to-right pass; quotes are matched here.

    ``unterminated(quote_char, rest_of_text)`` builds the error for a quote that is
    never closed.
    """
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        operator = next((op for op in operators if text.startswith(op, i)), None)
        if char.isspace():
            i += 1
        elif operator is not None:
            tokens.append(Token(operator, operator, i, i + len(operator)))
            i += len(operator)
        elif char in delimiters:
            tokens.append(Token(char, char, i, i + 1))
            i += 1
        elif char in QUOTES:
            close = text.find(char, i + 1)
            if close < 0:
                raise unterminated(char, text[i:])
            tokens.append(Token("quoted", text[i + 1 : close], i, close + 1))
            i = close + 1
        else:
            j = i
            while j < n and not (
                text[j].isspace() or text[j] in delimiters or text[j] in QUOTES
                or any(text.startswith(op, j) for op in operators)
            ):
                j += 1
            tokens.append(Token("word", text[i:j], i, j))
            i = j
    return tokens


def span(text: str, tokens: Sequence[Token]) -> str:
    """The original text covered by a run of tokens."""
    return text[tokens[0].start : tokens[-1].end] if tokens else ""
