"""Deep links: the Explorer's view as a URL query, and back.

    ?tab=explorer&category=closed_qa&category=summarization&q=river&regex=1&sort=...&page=2&row=17

`category` may repeat or be comma-separated. Unknown or malformed values are dropped rather than
raised: a shared link from an older dataset should still open, showing what it can.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

from explorer.query import DEFAULT_SORT, SORTS

EXPLORER_KEYS = ("category", "q", "regex", "sort", "page", "row")


@dataclass
class View:
    categories: list[str] = field(default_factory=list)
    search: str = ""
    regex: bool = False
    sort: str = DEFAULT_SORT
    page: int = 1
    row: int | None = None
    explorer: bool = False  # whether the link is about the Explorer at all (then open its tab)


def parse_query(query, known_categories=None) -> View:
    """A View from a query string ("a=1&b=2", leading "?" allowed) or a mapping/multi-dict of params."""
    if isinstance(query, str):
        pairs = parse_qsl(query.lstrip("?"), keep_blank_values=True)
    elif hasattr(query, "multi_items"):  # starlette's QueryParams keeps repeated keys this way
        pairs = list(query.multi_items())
    else:
        pairs = [(k, v) for k, values in dict(query or {}).items() for v in (values if isinstance(values, list) else [values])]
    view = View()
    for key, value in pairs:
        value = str(value).strip() if key != "q" else str(value)
        if key == "category":
            for name in value.split(","):
                name = name.strip()
                if name and name not in view.categories and (known_categories is None or name in known_categories):
                    view.categories.append(name)
        elif key == "q":
            view.search = value
        elif key == "regex":
            view.regex = value.lower() in ("1", "true", "yes", "on")
        elif key == "sort" and value in SORTS:
            view.sort = value
        elif key == "page" and value.isdigit() and int(value) >= 1:
            view.page = int(value)
        elif key == "row" and value.isdigit():
            view.row = int(value)
        elif key == "tab":
            view.explorer = view.explorer or value == "explorer"
    view.explorer = view.explorer or any(key in EXPLORER_KEYS for key, _ in pairs)
    return view


def build_query(categories=(), search: str = "", regex: bool = False, sort: str = DEFAULT_SORT,
                page: int = 1, row: int | None = None) -> str:
    """The query string ("?tab=explorer&...") that `parse_query` turns back into this view."""
    params = [("tab", "explorer")]
    params += [("category", c) for c in categories or ()]
    if search:
        params.append(("q", search))
    if regex and search:
        params.append(("regex", "1"))
    if sort and sort != DEFAULT_SORT:
        params.append(("sort", sort))
    if page and int(page) > 1:
        params.append(("page", str(int(page))))
    if row is not None:
        params.append(("row", str(int(row))))
    return "?" + urlencode(params)
