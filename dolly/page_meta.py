"""A pasted link that says what it is: the page's <title>, description, Open Graph/Twitter tags and
preview image, rendered by the server.

Gradio's index.html has no <title> (its JavaScript sets one later, which link previews never run),
two sets of og:/twitter: tags (the first says "Gradio", its og:url is literally "{url}") and no way to
set them. This ASGI middleware rewrites the HTML of `GET /`: every og:/twitter: tag Gradio wrote goes,
and one set of our own goes in, naming the view a deep link opens (explorer/links.py's parameters,
read by the `view` function app.py passes: "closed_qa · river — open Dolly Explorer", or the record's
instruction for `row=N` once the dataset is loaded). Every value is HTML-escaped.

It also serves PREVIEW_PATH, a PNG card (the app's name and the dataset's records per category) made
once, when first asked for after the dataset loaded (a name-only card until then, not kept).

Under --auth nothing about the data is told without a login: the tags are the generic ones for every
request (the login page is served at / too) and the image is not served here (the request goes on to
dolly.login_required, which refuses it). Crawlers that unfurl links do not log in, so an app behind a
login gets a title-and-description card, without picture.

The data comes from the launched Blocks' `page_data` (app.py sets it to the Explorer's DatasetLoader):
only its `state`, and once that is "ready", `get()` with `.counts`, `.num_rows` and `.record(row)`,
so a request never waits for a load in progress.
"""
from __future__ import annotations

import html
import io
import re
from pathlib import Path
from typing import Callable

APP_NAME = "open Dolly"
EXPLORER_NAME = "open Dolly Explorer"
DESCRIPTION = ("Chat with Dolly, an open instruction-following model, and browse, search and filter "
               "databricks-dolly-15k, the human-written instructions it was trained on.")
FAVICON = Path(__file__).with_name("favicon.svg")
PREVIEW_PATH = "/preview.png"
PREVIEW_SIZE = (1200, 630)  # what Open Graph and Twitter's large card show without cropping
TITLE_CHARS, DESCRIPTION_CHARS = 90, 240

# Gradio's own sharing tags, wherever they are in its <head> (attributes may span lines).
_GRADIO_TAGS = re.compile(r'\s*<meta\s+(?:property|name)="(?:og|twitter):[^"]*"[^>]*>', re.IGNORECASE)
_OLD_TITLE = re.compile(r"\s*<title>.*?</title>|\s*<meta\s+name=\"description\"[^>]*>", re.IGNORECASE | re.DOTALL)
_CHARSET = re.compile(r"<meta\s+charset=[^>]*>", re.IGNORECASE)


def _short(text, limit: int) -> str:
    """`text` on one line, cut at a word to at most `limit` characters (with "…" when cut)."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0] if " " in text[: limit - 1] else text[: limit - 1]
    return cut.rstrip(" ,;:.") + "…"


def describe(view: dict | None, index=None) -> tuple[str, str]:
    """(title, description) of the page a link opens, as plain text (not yet escaped).

    `view`: the link's Explorer view as a dict (explorer.links.View's fields: explorer, categories,
    search, row), None for no view; `index`: the loaded dataset (counts, num_rows, record(row)), or None
    while it loads, or under --auth."""
    if not view or not view.get("explorer"):
        return APP_NAME, DESCRIPTION
    categories, search, row = list(view.get("categories") or []), view.get("search") or "", view.get("row")
    source = view.get("source") or "loaded"
    if source != "loaded":
        index = None  # the link shows the contributions (or both): not records of the loaded dataset by row
        categories = [source if source != "both" else "dataset and contributions"] + categories
    record = None
    if row is not None and index is not None and 0 <= row < index.num_rows:
        try:
            record = index.record(row)
        except Exception:  # a row the data cannot give is a plain link, not a failed page
            record = None
    if record is not None:
        instruction = str(record.get("instruction") or "")
        title = f"{_short(instruction, TITLE_CHARS) or f'Record {row}'} — {EXPLORER_NAME}"
        category = str(record.get("category") or "")
        response = str(record.get("response") or "")
        lead = f"Record {row}" + (f" ({category})" if category else "") + ": "
        return title, _short(lead + instruction + (f" — {response}" if response else ""), DESCRIPTION_CHARS)
    parts = [", ".join(categories)] if categories else []
    if search:
        parts.append(_short(search, 60))
    if row is not None:
        parts.append(f"record {row}")
    title = (" · ".join(parts) + " — " if parts else "") + EXPLORER_NAME
    what = "Records" + (f" in {', '.join(categories)}" if categories else "")
    what += f" matching “{_short(search, 60)}”" if search else ""
    if index is not None and not parts:
        what = f"{index.num_rows:,} records in {len(index.counts)} categories"
    description = f"{what} in the {EXPLORER_NAME}: browse, search, filter and export instruction data."
    return title, _short(description, DESCRIPTION_CHARS)


def head_tags(title: str, description: str, url: str, image: str | None, icon: str) -> str:
    """The <head> lines: title, description, one set of Open Graph and Twitter tags, the icon."""
    e = lambda text: html.escape(str(text), quote=True)  # noqa: E731
    lines = [f"<title>{e(title)}</title>",
             f'<meta name="description" content="{e(description)}" />',
             f'<link rel="icon" type="image/svg+xml" href="{e(icon)}" />',
             '<meta property="og:type" content="website" />',
             f'<meta property="og:site_name" content="{e(APP_NAME)}" />',
             f'<meta property="og:title" content="{e(title)}" />',
             f'<meta property="og:description" content="{e(description)}" />',
             f'<meta property="og:url" content="{e(url)}" />',
             f'<meta name="twitter:card" content="{"summary_large_image" if image else "summary"}" />',
             f'<meta name="twitter:title" content="{e(title)}" />',
             f'<meta name="twitter:description" content="{e(description)}" />']
    if image:
        lines[8:8] = [f'<meta property="og:image" content="{e(image)}" />',
                      '<meta property="og:image:type" content="image/png" />',
                      f'<meta property="og:image:width" content="{PREVIEW_SIZE[0]}" />',
                      f'<meta property="og:image:height" content="{PREVIEW_SIZE[1]}" />',
                      f'<meta property="og:image:alt" content="{e(APP_NAME)}: records per category" />']
        lines.append(f'<meta name="twitter:image" content="{e(image)}" />')
    return "\n\t\t".join(lines)


def rewrite(page: str, tags: str) -> str:
    """Gradio's index.html with its sharing tags (and any title or description) replaced by `tags`."""
    page = _OLD_TITLE.sub("", _GRADIO_TAGS.sub("", page))
    match = _CHARSET.search(page) or re.search(r"<head[^>]*>", page, re.IGNORECASE)
    if match is None:
        return page
    return page[: match.end()] + "\n\t\t" + tags + page[match.end():]


def preview_png(index=None) -> bytes:
    """The link card: the app's name, and with `index` its records per category as bars."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = PREVIEW_SIZE
    ink, muted, accent, background = "#0f172a", "#475569", "#0f766e", "#f8fafc"
    image = Image.new("RGB", PREVIEW_SIZE, background)
    draw = ImageDraw.Draw(image)
    font = lambda size: ImageFont.load_default(size=size)  # noqa: E731  (Pillow's own scalable font)
    draw.rectangle((0, 0, width, 18), fill=accent)
    draw.text((60, 50), APP_NAME, font=font(72), fill=ink)
    if index is None or not index.counts:
        draw.text((60, 150), "Chat with Dolly, explore databricks-dolly-15k", font=font(40), fill=muted)
    else:
        draw.text((60, 140), f"Explorer: {index.num_rows:,} records by category", font=font(32), fill=muted)
        counts = sorted(index.counts.items(), key=lambda item: -item[1])[:8]
        top, step, left, right = 210, min(50, 390 // len(counts)), 380, width - 160
        biggest = max(count for _, count in counts) or 1
        for i, (name, count) in enumerate(counts):
            y = top + i * step
            draw.text((left - 20, y + step * 0.4), _short(name, 24), font=font(26), fill=ink, anchor="rm")
            end = left + max(2, int((right - left) * count / biggest))
            draw.rectangle((left, y + 6, end, y + step - 6), fill=accent)
            draw.text((end + 12, y + step * 0.4), f"{count:,}", font=font(24), fill=muted, anchor="lm")
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


class PageMeta:
    """ASGI middleware: the page's sharing tags and PREVIEW_PATH (see the module's text).

    `view(query, known_categories)` -> the query's Explorer view as a dict (app.py passes
    explorer.links.parse_query's, as a dict); `auth`: whether the app requires a login."""

    def __init__(self, app, view: Callable[[str, object], dict] | None = None, auth: bool = False):
        self.app, self.view, self.auth = app, view, auth
        self._png: bytes | None = None  # made once, from the loaded dataset
        self._plain: bytes | None = None  # the name-only card, while there is no dataset (or none loads)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        if scope["path"] == PREVIEW_PATH and not self.auth:
            return await self._send_preview(scope, send)
        if scope["path"] != "/" or scope.get("method") != "GET":
            return await self.app(scope, receive, send)
        start: dict | None = None
        chunks: list[bytes] = []

        async def send_rewritten(message):
            nonlocal start
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                if (message.get("status") == 200 and headers.get(b"content-type", b"").startswith(b"text/html")
                        and b"content-encoding" not in headers):
                    start = message  # held until the whole page is here
                    return
            elif message["type"] == "http.response.body" and start is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = b"".join(chunks)
                try:
                    body = rewrite(body.decode("utf-8"), self._tags(scope)).encode("utf-8")
                except Exception:  # the page as Gradio wrote it, rather than no page
                    pass
                headers = [(k, v) for k, v in start.get("headers") or [] if k != b"content-length"]
                await send({**start, "headers": headers + [(b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, send_rewritten)

    def _index(self, scope):
        """The loaded dataset's index, or None (still loading, failed, not given): never waits."""
        app = scope.get("app")
        blocks = app.get_blocks() if app is not None and hasattr(app, "get_blocks") else None
        data = getattr(blocks, "page_data", None)
        if data is None or getattr(data, "state", None) != "ready":
            return None
        try:
            return data.get()
        except Exception:
            return None

    def _root(self, scope) -> str:
        from gradio import route_utils
        from starlette.requests import Request

        return route_utils.get_root_url(Request(scope), route_path="/", root_path=scope.get("root_path") or None)

    def _tags(self, scope) -> str:
        root = self._root(scope)
        query = scope.get("query_string", b"").decode("latin-1")
        if self.auth:  # the same words for everyone, logged in or not: see the module's text
            title, description = describe(None)
        else:
            index = self._index(scope)
            view = self.view(query, index.counts if index is not None else None) if self.view and query else None
            title, description = describe(view, index)
        url = root + "/" + (f"?{query}" if query else "")
        return head_tags(title, description, url, None if self.auth else root + PREVIEW_PATH, "favicon.ico")

    async def _send_preview(self, scope, send):
        import anyio

        index = self._index(scope)
        if index is not None:
            png = self._png = self._png or await anyio.to_thread.run_sync(preview_png, index)
        else:
            png = self._plain = self._plain or await anyio.to_thread.run_sync(preview_png, None)
        headers = [(b"content-type", b"image/png"), (b"content-length", str(len(png)).encode()),
                   (b"cache-control", b"public, max-age=3600" if index is not None else b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else png})
