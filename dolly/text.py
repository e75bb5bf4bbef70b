"""What counts as text at every door of the app (chat, /v1, the Explorer's search, contributions).

JSON can carry "\\ud800", which decodes to a lone UTF-16 surrogate: half of a character pair and no
character at all. No tokenizer takes it, UTF-8 (a file, SQLite, PostgreSQL) cannot hold it, and
Arrow refuses it, so each door refuses it first, with the place named, through this one rule.
"""
from __future__ import annotations


def text_problem(text: str) -> str | None:
    """Why `text` is not valid text, in words that name the place ("character 7 is a lone surrogate
    ('\\ud800'), half of a UTF-16 character pair"), or None when it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return (f"character {error.start + 1:,} is a lone surrogate ({text[error.start]!r}), half of a UTF-16 "
                "character pair")
    return None
