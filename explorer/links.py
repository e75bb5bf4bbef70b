"""Deep links: the Explorer's view as a URL query, and back.

    ?tab=explorer&category=closed_qa&category=summarization&q=river&regex=1&sort=...&quality=citations,empty&p=2&row=17

`source=contributions` (or `both`) shows the records written in the app instead of (or after) the loaded
dataset (explorer.sources). `shown=original` shows the records as loaded, without the curation store's decisions (the default is
the dataset as curated: edits applied, excluded records hidden).

`category` and `quality` (quality signals, explorer.signals) may repeat or be comma-separated. Unknown or malformed values are dropped rather than
raised: a shared link from an older dataset should still open, showing what it can.

The page number is `p`, not `page`: Gradio owns `?page=` (its multipage routing answers an unknown
page with HTTP 500), so links written before that was known carry `page=N`. `LegacyPageLinks`
redirects those to the same query with `p=N` before Gradio sees them, so links already shared keep
working; `legacy_page_redirect` holds the rule.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

from explorer.query import DEFAULT_SORT, SORTS
from explorer.signals import SIGNALS
from explorer.sources import LOADED, NAMES

PAGE_KEY = "p"
LEGACY_PAGE_KEY = "page"  # Gradio's; only ever read by legacy_page_redirect
EXPLORER_KEYS = ("category", "q", "regex", "sort", "quality", PAGE_KEY, "row", "shown", "source")


@dataclass
class View:
    categories: list[str] = field(default_factory=list)
    search: str = ""
    regex: bool = False
    sort: str = DEFAULT_SORT
    page: int = 1
    row: int | None = None
    quality: list[str] = field(default_factory=list)  # quality signals ticked
    original: bool = False  # the records as loaded, not as curated
    source: str = LOADED  # which records (explorer.sources): loaded, contributions or both
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
        elif key == "quality":
            for name in value.split(","):
                name = name.strip()
                if name in SIGNALS and name not in view.quality:
                    view.quality.append(name)
        elif key == "q":
            view.search = value
        elif key == "regex":
            view.regex = value.lower() in ("1", "true", "yes", "on")
        elif key == "sort" and value in SORTS:
            view.sort = value
        elif key == PAGE_KEY and value.isdigit() and int(value) >= 1:
            view.page = int(value)
        elif key == "row" and value.isdigit():
            view.row = int(value)
        elif key == "shown":
            view.original = value == "original"
        elif key == "source" and value in NAMES:
            view.source = value
        elif key == "tab":
            view.explorer = view.explorer or value == "explorer"
    view.explorer = view.explorer or any(key in EXPLORER_KEYS for key, _ in pairs)
    return view


def build_query(categories=(), search: str = "", regex: bool = False, sort: str = DEFAULT_SORT,
                page: int = 1, row: int | None = None, quality=(), original: bool = False, source: str = LOADED) -> str:
    """The query string ("?tab=explorer&...") that `parse_query` turns back into this view."""
    params = [("tab", "explorer")]
    if source and source != LOADED:
        params.append(("source", source))
    params += [("category", c) for c in categories or ()]
    if search:
        params.append(("q", search))
    if regex and search:
        params.append(("regex", "1"))
    if sort and sort != DEFAULT_SORT:
        params.append(("sort", sort))
    if quality:
        params.append(("quality", ",".join(quality)))
    if original:
        params.append(("shown", "original"))
    if page and int(page) > 1:
        params.append((PAGE_KEY, str(int(page))))
    if row is not None:
        params.append(("row", str(int(row))))
    return "?" + urlencode(params)


def legacy_page_redirect(method: str, path: str, query: str) -> str | None:
    """Where a request for the app's page that carries Gradio's `page=` should go instead, or None.

    The answer is a relative URL ("?tab=explorer&p=2"): the same page, the same parameters in the
    same order, `page` renamed `p` (an explicit `p` wins). Only page loads are redirected (GET or
    HEAD of a path ending in "/"); Gradio's API and config routes are left alone.
    """
    if method not in ("GET", "HEAD") or not path.endswith("/") or "/gradio_api/" in path or path.endswith("/config/"):
        return None
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(key == LEGACY_PAGE_KEY for key, _ in pairs):
        return None
    has_p = any(key == PAGE_KEY for key, _ in pairs)
    renamed = [(PAGE_KEY, value) for key, value in pairs if key == LEGACY_PAGE_KEY][:1]
    kept = []
    for key, value in pairs:
        if key != LEGACY_PAGE_KEY:
            kept.append((key, value))
        elif renamed and not has_p:
            kept.append(renamed.pop())
    return "?" + urlencode(kept)


class LegacyPageLinks:
    """ASGI middleware: answers a page load carrying `?page=N` with a redirect to `?p=N` (see above)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            query = scope.get("query_string", b"").decode("latin-1")
            target = legacy_page_redirect(scope.get("method", ""), scope.get("path", ""), query) if query else None
            if target is not None:
                from starlette.responses import RedirectResponse

                await RedirectResponse(target, status_code=307)(scope, receive, send)
                return
        await self.app(scope, receive, send)
