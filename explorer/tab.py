"""The Explorer screen: browse, search and filter a dolly-shaped dataset; the /explore and /export API.

UI only: every answer comes from explorer.query (an `Index` of the loaded data, which
explorer.loader loads in the background) and explorer.export.
`build_explorer_tab` must be called inside `gr.Tabs()` within the app's `gr.Blocks`.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from dolly.data import REQUIRED_COLUMNS, TEXT_FIELDS
from explorer.export import FORMATS, ExportError, ExportStore, check_format
from explorer.links import build_query, parse_query
from explorer.loader import DatasetLoader, DatasetNotReady
from explorer.query import DEFAULT_SORT, PAGE_SIZE, SORTS, Index, QueryError, check_page

TABLE_HEADERS = ["row", "category", "instruction", "context", "response"]
CELL_CHARS = 140  # the table shows the start of each text; the row view shows all of it
CSS = """
.dolly-record { display: flex; flex-direction: column; gap: .6rem; }
.dolly-record h4 { margin: .2rem 0; font-size: .85rem; text-transform: uppercase; opacity: .7; }
.dolly-text { white-space: pre-wrap; overflow-wrap: anywhere; line-height: 1.5; max-height: 28rem;
              overflow-y: auto; padding: .5rem .75rem; border-radius: 6px;
              background: var(--background-fill-secondary); }
.dolly-text.empty { opacity: .5; font-style: italic; }
.dolly-record mark { background: #ffe066; color: #000; border-radius: 2px; padding: 0 1px; }
.dolly-meta { font-size: .85rem; opacity: .8; }
"""


@dataclass
class ExplorerTab:
    """What app.py (and the Chat tab's wiring) needs from the Explorer."""

    tab: gr.Tab
    try_in_chat: gr.Button  # in the row view; app.py wires it to the Chat tab
    selected: gr.State  # the opened record: {instruction, context, response, category, row, ...} or None
    dataset: DatasetLoader  # the data the tab shows, loading in the background or loaded


# -- formatting (plain functions, tested without a browser) -------------------------------------
def highlight(text: str, search: str, regex: bool) -> str:
    """`text` as HTML with every match of `search` in <mark>; everything else escaped."""
    if not text:
        return ""
    pattern = None
    if search:
        try:
            pattern = re.compile(search if regex else re.escape(search), re.IGNORECASE | re.MULTILINE)
        except re.error:
            pattern = None  # an RE2-only pattern: show the text unmarked rather than fail
    if pattern is None:
        return html.escape(text)
    out, last = [], 0
    for match in pattern.finditer(text):
        if match.end() == match.start():
            continue
        out.append(html.escape(text[last:match.start()]))
        out.append(f"<mark>{html.escape(match.group())}</mark>")
        last = match.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


def record_html(record: dict | None, search: str = "", regex: bool = False) -> str:
    if not record:
        return "<div class='dolly-meta'>Click a row in the table to read the whole record here.</div>"
    parts = [f"<div class='dolly-record'><div class='dolly-meta'>Row {int(record['row'])} · "
             f"category <b>{html.escape(str(record['category']))}</b></div>"]
    for field in TEXT_FIELDS:
        text = str(record.get(field) or "")
        body = highlight(text, search, regex) if text else "(empty)"
        parts.append(f"<h4>{field}</h4><div class='dolly-text{'' if text else ' empty'}'>{body}</div>")
    for key, value in record.items():
        if key not in REQUIRED_COLUMNS and key != "row":
            parts.append(f"<h4>{html.escape(str(key))}</h4><div class='dolly-text'>{html.escape(str(value))}</div>")
    return "".join(parts) + "</div>"


def _cell(text) -> str:
    text = " ".join(str(text or "").split())  # one line per cell
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"


def page_frame(records: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([[r["row"], r["category"]] + [_cell(r[f]) for f in TEXT_FIELDS] for r in records],
                        columns=TABLE_HEADERS)


def summary(total: int, page: int, pages: int, all_rows: int) -> str:
    if all_rows == 0:
        return "**The dataset is empty.** Load another one with `python app.py --data path/to/file.jsonl`."
    if total == 0:
        return "**No matching rows.** Tick other categories or change the search."
    first = (page - 1) * PAGE_SIZE + 1
    return (f"**{total:,}** matching rows of {all_rows:,} · showing {first:,}–{min(first + PAGE_SIZE - 1, total):,}"
            f" · page {page:,} of {pages:,}")


def _category_choices(index: Index) -> list[tuple[str, str]]:
    return [(f"{c} ({index.counts[c]:,})", c) for c in index.categories]


# -- the screen ---------------------------------------------------------------------------------
def build_explorer_tab(demo: gr.Blocks, dataset: DatasetLoader, tabs: gr.Tabs | None = None) -> ExplorerTab:
    """The Explorer tab for the dataset `dataset` loads (started, or loaded already, by the caller).

    The tab is drawn at once; while the data loads it says so and a timer polls `dataset`, filling
    the view when the data is there. Also registers the public /explore and /export API endpoints,
    and, on page load, restores a view from the URL's query (switching `tabs` to the Explorer when
    the link is about it), once the data is there.
    """
    state = dataset.state  # what the page shows before its first poll: the data is often there already
    # Exports are written into Gradio's cache, which serves them from there: one stored copy each.
    exports = ExportStore(Path(gr.utils.get_upload_folder()) / "dolly-exports")
    ready = dataset.get() if state == "ready" else None
    with gr.Tab("Explorer", id="explorer") as tab:
        selected = gr.State(None)
        query_state = gr.State("")  # the page's URL query, kept until the data is there to restore it
        filled = gr.State(False)  # whether this page shows the data (so a late poll leaves it alone)
        loading = gr.Markdown(dataset.status() if state == "loading" else "", visible=state == "loading",
                              elem_id="explorer-loading")
        failed = gr.Markdown(_error_md(dataset.error) if state == "failed" else "", visible=state == "failed",
                             elem_id="explorer-error")
        timer = gr.Timer(1.0, active=state == "loading")  # polls `dataset` until it is ready or failed
        with gr.Row(equal_height=False, visible=state != "failed") as body:
            with gr.Column(scale=1, min_width=280):
                categories = gr.CheckboxGroup(_category_choices(ready) if ready else [], label="Categories",
                                              info="None ticked = all", elem_id="explorer-categories")
                search = gr.Textbox(label="Search", placeholder="Text in instruction, context or response; Enter",
                                    elem_id="explorer-search", max_lines=1)
                with gr.Row():
                    regex = gr.Checkbox(label="Regex", value=False, elem_id="explorer-regex", min_width=80)
                    search_button = gr.Button("Search", variant="primary", elem_id="explorer-search-button", min_width=80)
                sort = gr.Dropdown(list(SORTS), value=DEFAULT_SORT, label="Sort", elem_id="explorer-sort")
                with gr.Accordion("Export the selection", open=False):
                    file_format = gr.Radio(list(FORMATS), value="jsonl", label="Format", elem_id="explorer-format")
                    export_button = gr.Button("Export", elem_id="explorer-export")
                    export_file = gr.File(label="Download", interactive=False, elem_id="explorer-file")
            with gr.Column(scale=3):
                status = gr.Markdown(_first_summary(ready) if ready else "", elem_id="explorer-summary")
                first_page = ready.page(ready.select(), 1) if ready else []
                table = gr.Dataframe(page_frame(first_page), headers=TABLE_HEADERS, interactive=False, wrap=True,
                                     max_height=620, elem_id="explorer-table",
                                     column_widths=["7%", "12%", "27%", "27%", "27%"])
                with gr.Row():
                    previous = gr.Button("← Previous", size="sm", elem_id="explorer-previous")
                    page = gr.Number(value=1, precision=0, minimum=1, label="Page", show_label=False,
                                     elem_id="explorer-page", min_width=80)
                    following = gr.Button("Next →", size="sm", elem_id="explorer-next")
                with gr.Group():
                    row_view = gr.HTML(record_html(None), elem_id="explorer-row", padding=True)
                    with gr.Row():
                        try_in_chat = gr.Button("Try in chat", interactive=False, elem_id="explorer-try-in-chat")
                        link = gr.Textbox(label="Link to this view", interactive=False, buttons=["copy"],
                                          elem_id="explorer-link", scale=3)
                link_query = gr.Textbox(build_query(), visible="hidden", elem_id="explorer-link-query")
                with gr.Accordion("Charts of the selection", open=True):
                    with gr.Row():
                        chart_categories = gr.BarPlot(x="category", y="rows", title="Rows per category",
                                                      x_label_angle=-30, height=260, y_lim=[0, None])
                        chart_fields = [gr.BarPlot(x="characters", y="rows", title=f"{field} length (characters)",
                                                   x_label_angle=-45, height=260, y_lim=[0, None])
                                        for field in TEXT_FIELDS[:1]]
                    with gr.Row():
                        chart_fields += [gr.BarPlot(x="characters", y="rows", title=f"{field} length (characters)",
                                                    x_label_angle=-45, height=260, y_lim=[0, None])
                                         for field in TEXT_FIELDS[1:]]

        view_inputs = [categories, search, regex, sort]

        def show(cats, text, use_regex, order, page_number=1):
            """Table, summary and page box for one view; a bad query becomes the summary line."""
            index = _loaded(dataset)
            try:
                selection = index.select(cats, text, use_regex, order)
                number = check_page(page_number, selection.pages)
                records = index.page(selection, number)
            except QueryError as err:
                return page_frame([]), f"⚠️ {err}", gr.update(), build_query(cats, text, use_regex, order)
            return (page_frame(records), summary(selection.total, number, selection.pages, index.num_rows),
                    number, build_query(cats, text, use_regex, order, number))

        def charts(cats, text, use_regex, order):
            if dataset.state != "ready":
                return [gr.update()] * (1 + len(TEXT_FIELDS))  # the poll draws them once the data is there
            index = dataset.get()
            try:
                selection = index.select(cats, text, use_regex, order)
            except QueryError:
                return [gr.update()] * (1 + len(TEXT_FIELDS))
            # Plain frames: returning gr.BarPlot(..., sort=...) here stops later updates from
            # showing (Gradio 6.31). Bars sort by label, which length_histogram makes sortable.
            return [index.category_counts(selection)] + [index.length_histogram(selection, f) for f in TEXT_FIELDS]

        def open_row(cats, text, use_regex, order, page_number, evt: gr.SelectData):
            row = evt.row_value[0] if evt.row_value else None
            if row is None or row == "":
                return gr.update(), None, gr.update(interactive=False), gr.update()
            record = _loaded(dataset).record(int(row))
            return (record_html(record, text, use_regex), record, gr.update(interactive=True),
                    build_query(cats, text, use_regex, order, page_number, record["row"]))

        closed_row = [record_html(None), None, gr.update(interactive=False)]
        view_outputs = [table, status, page, link_query]
        chart_outputs = [chart_categories] + chart_fields
        private = dict(api_visibility="private")

        def first(cats, text, use_regex, order):
            return (*show(cats, text, use_regex, order, 1), *closed_row)

        for trigger in (categories.input, search.submit, search_button.click, regex.input, sort.input):
            trigger(first, view_inputs, view_outputs + [row_view, selected, try_in_chat], **private) \
                .then(charts, view_inputs, chart_outputs, show_progress="hidden", **private)

        def step(delta):
            def go(cats, text, use_regex, order, page_number):
                try:
                    pages = _loaded(dataset).select(cats, text, use_regex, order).pages
                except QueryError:
                    pages = 1  # show() reports the error
                target = min(max(1, int(page_number or 1) + delta), pages)
                return show(cats, text, use_regex, order, target)
            return go

        previous.click(step(-1), view_inputs + [page], view_outputs, **private)
        following.click(step(+1), view_inputs + [page], view_outputs, **private)
        page.submit(step(0), view_inputs + [page], view_outputs, **private)
        table.select(open_row, view_inputs + [page], [row_view, selected, try_in_chat, link_query], **private)

        # The address bar follows the view, so copying it (or the box) shares exactly this view.
        link_query.change(None, link_query, link, api_visibility="private", js="""(query) => {
            const url = window.location.origin + window.location.pathname + query;
            window.history.replaceState(null, "", url);
            return url;
        }""")

        def export_view(cats, text, use_regex, order, fmt, progress=gr.Progress()):
            return _export(_loaded(dataset), exports, fmt, progress, cats, text, use_regex, order)

        export_button.click(export_view, view_inputs + [file_format], export_file, **private)

        def restore(query: str) -> list:
            """Values for `fill_outputs`: the view a URL query asks for (the data is loaded)."""
            index = dataset.get()
            view = parse_query(query, index.counts)
            updates = [gr.update(choices=_category_choices(index), value=view.categories), view.search, view.regex, view.sort]
            try:  # a link to a page past the end (the data changed since) opens the last page
                view.page = min(view.page, index.select(view.categories, view.search, view.regex, view.sort).pages)
            except QueryError:
                pass  # show() puts the message in the summary
            table_value, status_value, page_value, link_value = show(view.categories, view.search, view.regex, view.sort, view.page)
            record = None
            if view.row is not None and view.row < index.num_rows:
                record = index.record(view.row)
                link_value = build_query(view.categories, view.search, view.regex, view.sort,
                                         page_value if isinstance(page_value, int) else 1, view.row)
            outputs = updates + [table_value, status_value, page_value, link_value,
                                 record_html(record, view.search, view.regex), record, gr.update(interactive=record is not None)]
            if tabs is not None:
                outputs.append(gr.Tabs(selected="explorer") if view.explorer else gr.update())
            return outputs

        fill_outputs = view_inputs + view_outputs + [row_view, selected, try_in_chat] + ([tabs] if tabs is not None else [])
        screen_outputs = [loading, failed, body, timer, filled]

        def screen(query: str, shown: bool, with_charts: bool) -> list:
            """Everything the page shows for the loader's state now; `shown`: the page has the data already."""
            now = dataset.state
            keep = [gr.update()] * len(fill_outputs)
            keep_charts = [gr.update()] * len(chart_outputs) if with_charts else []
            if now == "loading":
                if tabs is not None and parse_query(query).explorer:
                    keep[-1] = gr.Tabs(selected="explorer")  # the link is about the Explorer: open it, loading
                return keep + keep_charts + [gr.update(value=dataset.status(), visible=True), gr.update(),
                                             gr.update(), gr.Timer(active=True), False]
            if now == "failed":
                return keep + keep_charts + [gr.update(visible=False), gr.update(value=_error_md(dataset.error), visible=True),
                                             gr.update(visible=False), gr.Timer(active=False), False]
            # `body` is left as drawn (visible): setting visible=True again would also show the hidden
            # link_query box inside it (Gradio 6.31 passes a layout's visibility down to its children).
            done = [gr.update(visible=False), gr.update(), gr.update(), gr.Timer(active=False), True]
            if shown:
                return keep + keep_charts + done
            values = restore(query)
            if with_charts:
                choice_update, text, use_regex, order = values[:4]
                values += charts(choice_update["value"], text, use_regex, order)
            return values + done

        def on_load(request: gr.Request):
            query = str(request.query_params) if request is not None else ""
            return [query] + screen(query, False, with_charts=False)

        # On page load the view follows the URL; charts come after the table, as they take longer.
        demo.load(on_load, None, [query_state] + fill_outputs + screen_outputs, **private) \
            .then(charts, view_inputs, chart_outputs, show_progress="hidden", **private)
        # While the data loads, each tick updates the loading line; the tick that finds it ready fills
        # the whole view (charts too) from the URL query stashed at page load, then stops the timer.
        timer.tick(lambda query, shown: screen(query, shown, with_charts=True), [query_state, filled],
                   fill_outputs + chart_outputs + screen_outputs, queue=False, show_progress="hidden", **private)
        _register_api(dataset, exports)

    return ExplorerTab(tab, try_in_chat, selected, dataset)


def _loaded(dataset: DatasetLoader) -> Index:
    """The loaded data, or a readable gr.Error while it loads or when it did not load (says which)."""
    try:
        return dataset.get()
    except DatasetNotReady as err:
        raise gr.Error(str(err), print_exception=False) from None


def _export(index: Index, exports: ExportStore, file_format: str, progress, categories, search: str,
            regex: bool = False, sort: str = DEFAULT_SORT) -> str:
    """The selection as a file in `file_format`, with a progress bar; bad input is a readable gr.Error."""
    try:
        check_format(file_format)
        selection = index.select(categories, search, regex, sort)
        return exports.export(index.table(selection), file_format,
                              lambda done, total: progress((done, max(total, 1)), desc="Exporting", unit="rows"))
    except (QueryError, ExportError) as err:
        raise gr.Error(str(err), print_exception=False) from None


def _first_summary(index: Index) -> str:
    return summary(index.num_rows, 1, max(1, -(-index.num_rows // PAGE_SIZE)), index.num_rows)


def _error_md(error: str | None) -> str:
    return f"### Could not load the dataset\n\n{_md_escape(error or '')}"


def _md_escape(text: str) -> str:
    return re.sub(r"([\\`*_{}\[\]<>()#+\-!|])", r"\\\1", text)


# -- the API ------------------------------------------------------------------------------------
def _register_api(dataset: DatasetLoader, exports: ExportStore) -> None:
    """/explore and /export: stable positional signatures for gradio_client (see README).

    Both run with preprocess=False: they get each value exactly as the client sent it and check
    it themselves (explorer.query, explorer.export), so a bad value gets a message that names the
    input, and nothing is silently converted (Gradio's Number would round page 1.5 to 2, and
    answer page "abc" with a message-less error).
    """

    def explore(categories: list[str], search: str, page: int):
        """Rows of one page (PAGE_SIZE rows, from page 1) matching the categories (empty = all) and the
        case-insensitive literal search; returns (rows, total matching rows)."""
        data = _loaded(dataset)
        try:
            selection = data.select(categories, search)
            rows = data.page(selection, page)
        except QueryError as err:
            raise gr.Error(str(err), print_exception=False) from None
        return rows, selection.total

    def export(categories: list[str], search: str, file_format: str, progress=gr.Progress()):
        """Every row matching the categories (empty = all) and the search, as a jsonl, csv or parquet file."""
        return _export(_loaded(dataset), exports, file_format, progress, categories, search)

    # Components the API speaks through; never shown. Custom values are allowed so that an unknown
    # category or format reaches our functions and gets our message, not a generic one.
    with gr.Column(visible=False):
        choices = dataset.get().categories if dataset.state == "ready" else []
        api_categories = gr.Dropdown(choices, multiselect=True, allow_custom_value=True, label="categories")
        api_search = gr.Textbox(label="search")
        api_page = gr.Number(1, precision=0, label="page")
        api_format = gr.Dropdown(list(FORMATS), value="jsonl", allow_custom_value=True, label="file_format")
        api_rows = gr.JSON(label="rows")
        api_total = gr.Number(label="total", precision=0)
        api_file = gr.File(label="file")
        trigger = gr.Button(visible=False)
    trigger.click(explore, [api_categories, api_search, api_page], [api_rows, api_total], api_name="explore",
                  preprocess=False)
    trigger.click(export, [api_categories, api_search, api_format], api_file, api_name="export", queue=False,
                  preprocess=False)
