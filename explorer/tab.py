"""The Explorer screen: browse, search and filter a dolly-shaped dataset; the /explore and /export API.

UI only: every answer comes from explorer.query (an `Index` of the loaded data, which
explorer.loader loads in the background) and explorer.export; what the screen shows is worded
and marked up by explorer.view (table, record, summary, page box) and explorer.charts.
`build_explorer_tab` must be called inside `gr.Tabs()` within the app's `gr.Blocks`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from dolly.data import TEXT_FIELDS
from explorer import quality as quality_section
from dolly.curation import Store, curated
from explorer import curation_panel
from explorer.curation_panel import CURATED, ORIGINAL, CSS as CURATION_CSS, CitationFix, CurationPanel
from explorer.charts import count_axis, length_histogram
from explorer.export import FORMATS, ExportError, ExportStore, check_format
from explorer.history import GO_ID, PUSH, REPLACE, tag, untag
from explorer.links import build_query, parse_query
from explorer.loader import DatasetLoader, DatasetNotReady
from explorer.query import DEFAULT_SORT, PAGE_SIZE, SORTS, Index, QueryError, Selection
from explorer.signals import SIGNALS
from explorer.sources import LOADED, Source, Sources, opened_record, source_of
from explorer.view import export_note, plain_error, record_html, resolve_page, summary, table_html

CSS = """
/* The Explorer's table reads like the Hugging Face Dataset Viewer's: proportional font, compact rows
   (two lines per cell), columns sized to their content, categories never broken mid-word. */
.dolly-table-wrap { overflow-x: auto; border: 1px solid var(--border-color-primary); border-radius: 8px; }
.dolly-table { width: 100%; border-collapse: collapse; font-family: var(--font); font-size: .875rem;
               line-height: 1.35; table-layout: auto; }
.dolly-table th { position: sticky; top: 0; z-index: 1; text-align: left; font-weight: 600; padding: .45rem .6rem;
                  background: var(--background-fill-secondary); border-bottom: 1px solid var(--border-color-primary);
                  white-space: nowrap; }
.dolly-table td { padding: .3rem .6rem; vertical-align: top; }
#explorer-table .dolly-table, #explorer-table .dolly-table tr { border: 0; margin: 0; }
#explorer-table .dolly-table th, #explorer-table .dolly-table td { border: 0; border-bottom: 1px solid var(--border-color-primary); }
.dolly-table tr[data-row] { cursor: pointer; }
.dolly-table tr[data-row]:hover { background: var(--background-fill-secondary); }
.dolly-table tr.is-open { background: var(--color-accent-soft); box-shadow: inset 3px 0 0 var(--color-accent); }
.dolly-table .c-row, .dolly-table .c-len { width: 1%; white-space: nowrap; text-align: right;
                                           font-variant-numeric: tabular-nums; }
.dolly-table .c-cat { width: 1%; white-space: nowrap; }
.dolly-table .c-instruction, .dolly-table .c-context, .dolly-table .c-response { min-width: 9rem; }
.dolly-clamp { display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; overflow: hidden;
               overflow-wrap: anywhere; line-height: 1.45; max-height: 2.9em; }
.dolly-clamp mark { padding: 0; }  /* no padding: a mark on the hidden third line must not peek out */
.dolly-open { font: inherit; font-variant-numeric: tabular-nums; color: var(--link-text-color, #1d4ed8);
              background: none; border: 1px solid transparent; border-radius: 4px; padding: 0 .25rem;
              cursor: pointer; text-decoration: underline; }
.dolly-open:focus-visible, .dolly-try:focus-visible { outline: 2px solid var(--color-accent); outline-offset: 1px; }
.dolly-table mark, .dolly-record mark { background: #ffe066; color: #000; border-radius: 2px; padding: 0 1px; }
.dolly-none td { padding: 1.5rem; text-align: center; }
.dolly-detail td { background: var(--background-fill-primary); }
.dolly-try { margin-top: .6rem; font: inherit; font-weight: 600; padding: .45rem 1rem; border-radius: 6px;
             border: 1px solid var(--button-secondary-border-color, #9ca3af);
             background: var(--button-secondary-background-fill, #f3f4f6); color: var(--body-text-color); cursor: pointer; }
.dolly-record { display: flex; flex-direction: column; gap: .6rem; }
/* Skip buttons: out of sight until the keyboard reaches them. Focus always shows, 2 px in the accent
   colour, on every control (Gradio's checkboxes change colour by a shade only). */
#explorer-skip { position: absolute; z-index: 2; }
.dolly-filters-toggle { font: inherit; font-weight: 600; padding: .45rem .9rem; border-radius: 6px; cursor: pointer;
                        border: 1px solid var(--border-color-primary); background: var(--background-fill-secondary);
                        color: var(--body-text-color); }
.dolly-skip { position: absolute; left: -10000px; width: 1px; height: 1px; overflow: hidden; }
.dolly-skip:focus { position: static; width: auto; height: auto; margin: .2rem 0; padding: .3rem .7rem; font: inherit;
                    border: 2px solid var(--color-accent); border-radius: 6px; background: var(--background-fill-primary);
                    color: var(--body-text-color); }
.gradio-container :is(input, textarea, select, button, a, summary, [tabindex]):focus-visible {
  outline: 2px solid var(--color-accent) !important; outline-offset: 2px !important; }
.dolly-nav { display: flex; align-items: center; gap: .3rem; }
.dolly-nav h2 { flex: 1; margin: 0; font-size: .9rem; font-weight: 400; }
.dolly-nav button { font: inherit; min-width: 2rem; padding: .1rem .4rem; border-radius: 6px; cursor: pointer;
                    border: 1px solid var(--border-color-primary); background: var(--background-fill-secondary);
                    color: var(--body-text-color); }
.dolly-nav button:disabled { opacity: .45; cursor: default; }
.dolly-record h3 { margin: .2rem 0; font-size: .8rem; text-transform: uppercase; letter-spacing: .03em;
                   color: var(--body-text-color); }
.dolly-text { white-space: pre-wrap; overflow-wrap: anywhere; line-height: 1.5; padding: .5rem .75rem; border-radius: 6px;
              background: var(--background-fill-secondary); }
.dolly-text.empty { font-style: italic; }
.dolly-meta { font-size: .9rem; }
/* Wide screens: the opened record sits beside the table and follows the scroll (sticky). Phones:
   it opens right under its row, inside the table, and the side panel keeps only its buttons. */
@media (min-width: 901px) {
  #explorer-main { flex-wrap: nowrap; align-items: flex-start; }
  /* One width, open or not: opening a row never reflows the table under the pointer. */
  #explorer-side { flex: 0 0 24rem !important; min-width: 0 !important; }
  #explorer-filters-toggle { display: none; }
  #explorer-side { position: sticky; top: .5rem; align-self: flex-start; max-height: calc(100vh - 1rem);
                   overflow-y: auto; }
  .dolly-detail { display: none; }
  /* A long record scrolls inside its own box, its bar (↑ ↓ ×) pinned on top of it, so the bar and the
     Curate buttons under the box stay in view however long the record is (issue 15 §4). The box leaves
     room for the controls above the table and the buttons below it at 1440×900; reading to the record's
     end does not scroll the page on (overscroll contained), which would carry the buttons away. */
  #explorer-row { max-height: max(12rem, calc(100vh - 40rem)); overflow-y: auto !important;  /* Gradio's: visible */
                  overscroll-behavior: contain; }
  #explorer-row .dolly-nav { position: sticky; top: 0; z-index: 1; padding: .2rem 0;
                             background: var(--block-background-fill, var(--background-fill-primary)); }
}
@media (max-width: 900px) {
  /* Phones: the filters fold into one "Filters (n)" button, so the first rows show on the first screen;
     the pager keeps Next beside the page box; the record's own "Try in chat" replaces the wide bar. */
  #explorer-body:has(#explorer-filters-toggle [aria-expanded=false]) #explorer-filters { display: none; }
  #explorer-pager { flex-wrap: nowrap; }
  #explorer-pager > * { min-width: 0 !important; flex: 1 1 auto !important; }
  #explorer-pager > #explorer-page { flex: 0 0 4.5rem !important; }
  #explorer-pager button { white-space: nowrap; }
  #explorer-try-in-chat { display: none; }
  #explorer-main { flex-direction: column; }
  #explorer-main > * { width: 100%; }
  #explorer-row { display: none; }
  /* rows as cards: number and category on one line, then each text, two lines each */
  .dolly-table thead { display: none; }
  .dolly-table, .dolly-table tbody, .dolly-table tr, .dolly-table td { display: block; width: auto; }
  #explorer-table .dolly-table tr[data-row] { padding: .5rem .6rem; border-bottom: 1px solid var(--border-color-primary); }
  .dolly-table tr[data-row] td { border: 0; padding: .1rem 0; text-align: left; }
  .dolly-table tr[data-row] td.c-row, .dolly-table tr[data-row] td.c-len,
  .dolly-table tr[data-row] td.c-cat { display: inline-block; width: auto; margin-right: .6rem; font-weight: 600; }
  .dolly-table td.c-len::after { content: " chars"; font-weight: 400; }
  .dolly-table td[data-label]:has(.dolly-clamp:empty) { display: none; }
  .dolly-table td[data-label]::before { content: attr(data-label); display: block; font-size: .75rem;
                                        text-transform: uppercase; }
  .dolly-detail td { padding: .6rem; border-bottom: 2px solid var(--color-accent); }
}
#explorer-page-note:empty { display: none; }
#explorer-pager { align-items: center; }
#explorer-page input, #explorer-page textarea { text-align: center; }
/* Category chips small enough for Dolly's eight to fit one line on a laptop: more rows in view. */
#explorer-categories label { padding: .15rem .45rem; margin: 0; font-size: .875rem; }
#explorer-categories label input { margin-right: .3rem; }
#explorer-categories .wrap { gap: .3rem; }
/* The export's file name whole (Gradio cuts it with an ellipsis): it says how many rows it holds. */
#explorer-file .stem { white-space: normal; overflow: visible; text-overflow: clip; overflow-wrap: anywhere; }
#explorer-charts-empty { padding: 1rem; border: 1px dashed var(--border-color-primary); border-radius: 8px; }
/* Contrast (WCAG AA, 4.5:1): Gradio's default theme has hints and footer text at 1.9:1 on white, and
   white on its orange (primary buttons) or orange on white (the selected tab) at 2.8:1. A darker
   orange (#c2410c) is 5.2:1 against white. */
:root, .gradio-container { --color-accent: #c2410c; --button-primary-background-fill: #c2410c;
                           --button-primary-background-fill-hover: #9a3412; --button-primary-border-color: #c2410c;
                           --button-primary-text-color: #ffffff; }
.info-text { color: #4b5563 !important; opacity: 1 !important; }
.dark .info-text { color: #d1d5db !important; }
button[role="tab"].selected { color: #c2410c !important; }
footer, footer a, footer button, footer span, footer div { color: #4b5563 !important; opacity: 1 !important; }
.dark footer, .dark footer a, .dark footer button, .dark footer span, .dark footer div { color: #d1d5db !important; }
""" + quality_section.CSS + CURATION_CSS

# Opening a row: a click anywhere on it (or Enter on its number button) sends its dataset row number;
# the inline "Try in chat" (phones) presses the real button beside the table. After each re-render
# the opened row's button gets the focus back (keyboard users keep their place), and on phones the
# record under the row is scrolled into view when it does not fit.
TABLE_JS = """
// Gradio 6.31's dropdowns stay open when Tab moves the focus on: its blur handler closes the list,
// then its (asynchronous) keydown handler for that Tab opens it again. Escape closes it: send one
// once the focus has left (after those handlers ran), so the list never hides the next control.
if (!window.dollyDropdownsCloseOnLeave) {
  window.dollyDropdownsCloseOnLeave = true;
  document.addEventListener('focusout', (event) => {
    const input = event.target;
    if (!input.matches?.('input[role=combobox]')) return;
    setTimeout(() => {
      if (document.activeElement !== input) {
        input.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true}));
      }
    }, 0);
  }, true);
}
// The open record's bar (explorer.view.record_html): ↑/↓ open the row above/below on this page, ×
// closes it; Escape closes it and j/k move, when no text box has the focus. Opening goes through the
// row's own button, as a click on it would.
if (!window.dollyRecordNav) {
  window.dollyRecordNav = true;
  const openRow = () => document.querySelector('#explorer-table tr.is-open');
  const neighbour = (tr, step) => {
    let next = step < 0 ? tr?.previousElementSibling : tr?.nextElementSibling;
    while (next && !next.matches('tr[data-row]')) next = step < 0 ? next.previousElementSibling : next.nextElementSibling;
    return next;
  };
  const go = (action) => {
    const tr = openRow();
    if (!tr) return false;
    const target = action === 'close' ? tr : neighbour(tr, action === 'previous' ? -1 : 1);
    target?.querySelector('.dolly-open')?.click();
    return !!target;
  };
  const refresh = () => {
    // "Filters (n)" on phones: n = the categories ticked and the quality signals chosen.
    const chosen = document.querySelectorAll('#explorer-categories input:checked').length +
      document.querySelectorAll('#explorer-quality .token').length;
    document.querySelectorAll('.dolly-filters-toggle').forEach((b) => {
      const label = chosen ? `Filters (${chosen})` : 'Filters';
      if (b.textContent !== label) b.textContent = label;
    });
    const tr = openRow();
    document.querySelectorAll('.dolly-nav [data-nav=previous]').forEach((b) => { b.disabled = !neighbour(tr, -1); });
    document.querySelectorAll('.dolly-nav [data-nav=next]').forEach((b) => { b.disabled = !neighbour(tr, 1); });
  };
  let pending = false;
  new MutationObserver(() => {
    if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; refresh(); }); }
  }).observe(document.documentElement, {childList: true, subtree: true});
  document.addEventListener('click', (event) => {
    const button = event.target.closest?.('.dolly-nav [data-nav]');
    if (button) { event.stopPropagation(); go(button.dataset.nav); }
    const fold = event.target.closest?.('.dolly-filters-toggle');
    if (fold) fold.setAttribute('aria-expanded', String(fold.getAttribute('aria-expanded') !== 'true'));
    const skip = event.target.closest?.('[data-skip]');
    if (skip) { event.stopPropagation(); document.querySelector(skip.dataset.skip)?.focus(); }
  }, true);
  document.addEventListener('change', refresh);  // a box ticked: "Filters (n)" at once
  document.addEventListener('keydown', (event) => {
    if (event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey) return;
    if (event.target.closest?.('input, textarea, select, [contenteditable=true]')) return;
    const action = {Escape: 'close', j: 'next', k: 'previous'}[event.key];
    if (action && openRow() && go(action)) event.preventDefault();
  });
}
let lastOpened = null;
element.addEventListener('click', (event) => {
  if (event.target.closest('[data-action=try]')) {
    document.querySelector('#explorer-try-in-chat')?.click();
    return;
  }
  if (event.target.closest('.dolly-detail')) return;
  const tr = event.target.closest('tr[data-row]');
  if (!tr) return;
  const viaButton = !!event.target.closest('.dolly-open');
  if (!viaButton && String(window.getSelection ? window.getSelection() : '').length > 0) return;  // selecting text
  lastOpened = viaButton ? tr.dataset.row : null;
  trigger('click', {row: Number(tr.dataset.row)});
});
watch('value', () => {
  if (lastOpened !== null) {
    element.querySelector(`tr[data-row="${lastOpened}"] .dolly-open`)?.focus({preventScroll: true});
  }
  const detail = element.querySelector('.dolly-detail');
  if (detail && detail.offsetParent !== null) {
    const box = detail.getBoundingClientRect();
    if (box.bottom > window.innerHeight || box.top < 0) detail.scrollIntoView({block: 'nearest'});
  }
  const side = document.querySelector('#explorer-side');
  if (element.querySelector('tr.is-open') && side && side.offsetParent !== null && !detail?.offsetParent) {
    const box = side.getBoundingClientRect();
    if (box.top > window.innerHeight || box.bottom < 0) side.scrollIntoView({block: 'nearest'});
  }
});
"""


@dataclass
class ExplorerTab:
    """What app.py (and the Chat tab's wiring) needs from the Explorer."""

    tab: gr.Tab
    try_in_chat: gr.Button  # beside the table (and, on phones, pressed by the one under the row); app.py wires it
    selected: gr.State  # the opened record: {instruction, context, response, category, row, ...} or None
    dataset: DatasetLoader  # the data the tab shows, loading in the background or loaded
    exports: ExportStore  # the tab's exports; app.py closes it (removing them) when the app stops


def _category_choices(index: Index) -> list[tuple[str, str]]:
    return [(f"{c} ({index.counts[c]:,})", c) for c in index.categories]


LOADING_NOTE = "Search, filters, paging and export turn on once the data is there."
SOURCE_CHOICES = [("Loaded dataset", LOADED), ("Contributions", "contributions"), ("Both", "both")]
NO_CONTRIBUTIONS = ("No contributions yet: records written in the Contribute tab and answers corrected in the Chat "
                    "show here.")
TRY_OFF, TRY_ON = "Try in chat (open a row first)", "Try in chat"


def already_shown(link_query: str, field: str, value) -> bool:
    """Whether the view on screen (its tagged link query) already has `field` (of explorer.links.View) = `value`.
    Gradio's single-choice Dropdown (6.31) sends `input` whenever it loses the focus, a choice made or not;
    tabbing through Sort must not take the user back to page 1, close their record and add a history entry."""
    return getattr(parse_query(untag(link_query or "")[1]), field) == value


def no_file() -> dict:
    """The export's download, cleared (and hidden) when the selection changes."""
    return gr.update(value=None, visible=False)


# -- the screen ---------------------------------------------------------------------------------
def build_explorer_tab(demo: gr.Blocks, dataset: DatasetLoader, tabs: gr.Tabs | None = None,
                       store: Store | None = None) -> ExplorerTab:
    """The Explorer tab for the dataset `dataset` loads (started, or loaded already, by the caller).

    The tab is drawn at once; while the data loads it says so (its controls off) and a timer polls
    `dataset`, filling the view when the data is there. Also registers the public /explore and
    /export API endpoints, and, on page load, restores a view from the URL's query (switching
    `tabs` to the Explorer when the link is about it), once the data is there. With a curation `store`
    (dolly.curation), the row viewer edits, excludes and accepts records, and the export can be curated.
    """
    state = dataset.state  # what the page shows before its first poll: the data is often there already
    # Exports are written into Gradio's cache, which serves them from there: one stored copy each.
    exports = ExportStore(Path(gr.utils.get_upload_folder()) / "dolly-exports")
    ready = dataset.get() if state == "ready" else None
    sources = Sources(dataset, store)
    on = ready is not None  # controls start off while the data loads
    with gr.Tab("Explorer", id="explorer") as tab:
        selected = gr.State(None)
        current = gr.State(1)  # the page on screen (the page box may hold anything the user typed)
        query_state = gr.State("")  # the page's URL query, kept until the data is there to restore it
        filled = gr.State(False)  # whether this page shows the data (so a late poll leaves it alone)
        # The same, as the browser holds it. A State lives on the server and is updated when an event
        # ends there, while the inputs an event sends are the browser's values when it starts: a poll
        # sent while the fill's answer was on its way would read filled=True with the unfilled view's
        # inputs. A component's value travels with those inputs, so the two always agree.
        drawn = gr.Checkbox(False, visible=False, elem_id="explorer-drawn")
        # While loading: where it is. Once loaded: what the data lacked or was read from (dataset.note()).
        loading = gr.Markdown(_loading_md(dataset) if state == "loading" else dataset.note(),
                              visible=state == "loading" or bool(dataset.note()),
                              elem_id="explorer-loading")
        failed = gr.Markdown(_error_md(dataset.error) if state == "failed" else "", visible=state == "failed",
                             elem_id="explorer-error")
        timer = gr.Timer(1.0, active=state == "loading")  # polls `dataset` until it is ready or failed
        empty = ready is not None and ready.num_rows == 0  # no records: the note says so, no controls to show
        with gr.Column(visible=state != "failed" and not empty, elem_id="explorer-body") as body:
            gr.HTML("<button type='button' class='dolly-skip' data-skip='#explorer-table .dolly-open'>Skip to the "
                    "table</button>", elem_id="explorer-skip", padding=False)
            with gr.Row(equal_height=True, elem_id="explorer-controls"):
                search = gr.Textbox(label="Search", placeholder="Text in instruction, context or response; Enter",
                                    elem_id="explorer-search", max_lines=1, scale=4, min_width=220, interactive=on)
                regex = gr.Checkbox(label="Regex", value=False, elem_id="explorer-regex", scale=0, min_width=90,
                                    interactive=on)
                search_button = gr.Button("Search", variant="primary", elem_id="explorer-search-button", scale=0,
                                          min_width=96, interactive=on)
                sort = gr.Dropdown(list(SORTS), value=DEFAULT_SORT, label="Sort", elem_id="explorer-sort", scale=2,
                                   min_width=220, interactive=on)
            gr.HTML("<button type='button' class='dolly-filters-toggle' aria-expanded='false' "
                    "aria-controls='explorer-filters'>Filters</button>", elem_id="explorer-filters-toggle", padding=False)
            with gr.Row(equal_height=False, elem_id="explorer-filters"):
                # Which records: the loaded dataset, the contributions written in this app, or both. With the
                # filters, which fold on phones, so the first rows stay on the first screen there.
                source_choice = gr.Dropdown(SOURCE_CHOICES, value=LOADED, label="Records", elem_id="explorer-source",
                                            visible=store is not None, interactive=on, scale=0, min_width=200)
                categories = gr.CheckboxGroup(_category_choices(ready) if ready else [], label="Categories",
                                              info="None ticked = all", elem_id="explorer-categories", interactive=on,
                                              scale=1)
                quality = quality_section.build_filter(dataset, ready)
                quality_timer = quality_section.build_timer(dataset)
            with gr.Row(equal_height=True, elem_id="explorer-summary-row"):
                status = gr.Markdown(_first_summary(ready) if ready else "", elem_id="explorer-summary")
                # Curated (edits applied, excluded hidden) or as loaded; on the summary's line, so the
                # filters above keep the table on the first screen.
                shown_as = gr.Radio(curation_panel.shown_choices(sources.get().counts(store) if store and ready else {}),
                                    value=CURATED, label="Show the records", show_label=False, container=False,
                                    elem_id="explorer-shown", visible=store is not None, interactive=on, scale=0,
                                    min_width=540)
            with gr.Row(equal_height=False, elem_id="explorer-main"):
                with gr.Column(scale=2, min_width=0, elem_id="explorer-table-column"):
                    first_page = ready.page(ready.select(), 1) if ready else []
                    table = gr.HTML(table_html(first_page, message="The data is still loading."),
                                    elem_id="explorer-table", js_on_load=TABLE_JS)
                    with gr.Row(elem_id="explorer-pager", equal_height=False):
                        previous = gr.Button("← Previous", elem_id="explorer-previous", size="md", min_width=130,
                                             scale=0, interactive=on)
                        page_box = gr.Textbox("1", label="Page", show_label=False, elem_id="explorer-page", max_lines=1,
                                              min_width=80, scale=0, interactive=on, container=False)
                        following = gr.Button("Next →", elem_id="explorer-next", size="md", min_width=130, scale=0,
                                              interactive=on)
                    page_note = gr.Markdown("", elem_id="explorer-page-note")
                with gr.Column(scale=1, min_width=0, elem_id="explorer-side"):
                    row_view = gr.HTML(record_html(None), elem_id="explorer-row", padding=True)
                    try_in_chat = gr.Button(TRY_OFF, interactive=False, elem_id="explorer-try-in-chat")
                    panel = CurationPanel(store)
                    link = gr.Textbox(label="Link to this view", interactive=False, buttons=["copy"],
                                      elem_id="explorer-link")
            # The view's link query, tagged with how the address bar takes it (explorer.history).
            link_query = gr.Textbox(build_query(), visible="hidden", elem_id="explorer-link-query")
            history_query = gr.Textbox("", visible="hidden", elem_id="explorer-history-query")
            history_go = gr.Button("Restore the view of the address", visible="hidden", elem_id=GO_ID)
            with gr.Accordion("Export the selection", open=False, elem_id="explorer-export-panel"):
                export_info = gr.Markdown(export_note(ready.num_rows, DEFAULT_SORT) if ready else "",
                                          elem_id="explorer-export-note")
                with gr.Row(equal_height=True):
                    file_format = gr.Radio(list(FORMATS), value="jsonl", label="Format", elem_id="explorer-format",
                                           interactive=on)
                    as_curated = gr.Checkbox(store is not None, label="Curated: edits applied, excluded records left out "
                                             "(a curation column says edited/accepted)", visible=store is not None,
                                             elem_id="explorer-export-curated")
                    export_button = gr.Button("Export", elem_id="explorer-export", interactive=on)
                # Shown once there is a file: Gradio's empty File box is an unlabelled region to a screen
                # reader (axe: aria-prohibited-attr), and a dashed box saying nothing to everyone else.
                export_file = gr.File(label="Download", interactive=False, elem_id="explorer-file", visible=False)
            fix = CitationFix(store)
            with gr.Accordion("Charts of the selection", open=True):
                charts_empty = gr.Markdown("", visible=False, elem_id="explorer-charts-empty")
                with gr.Column(elem_id="explorer-charts") as chart_box:
                    with gr.Row():
                        chart_categories = gr.BarPlot(x="category", y="rows", title="Rows per category",
                                                      x_label_angle=-30, height=280, y_lim=[0, None])
                        chart_fields = [gr.BarPlot(x="characters", y="rows", title=f"{field} length (characters)",
                                                   x_label_angle=-40, height=280, y_lim=[0, None])
                                        for field in TEXT_FIELDS[:1]]
                    with gr.Row():
                        chart_fields += [gr.BarPlot(x="characters", y="rows", title=f"{field} length (characters)",
                                                    x_label_angle=-40, height=280, y_lim=[0, None])
                                         for field in TEXT_FIELDS[1:]]
                    quality_chart = quality_section.build_chart()
                    quality_section.build_legend()

        view_inputs = [categories, search, regex, sort, quality, shown_as, source_choice]
        other_controls = [search_button, previous, page_box, following, file_format, export_button]
        view_outputs = [table, status, page_box, current, page_note, link_query, export_info, previous, following]
        chart_outputs = [chart_box, charts_empty, chart_categories] + chart_fields
        private = dict(api_visibility="private")

        def select(source: Source, cats, text, use_regex, order, ticked=(), as_shown=CURATED, states=None):
            """The rows of this view: as curated, the excluded records are left out. `states`: the source's
            decisions when the caller has read them already."""
            return curation_panel.visible_rows(source.index.select(cats, text, use_regex, order, ticked),
                                               source.states(store) if states is None else states, as_shown)

        def show(cats, text, use_regex, order, ticked, as_shown, name, page_number=1, opened=None, note=""):
            """Values for `view_outputs`: one page of one view; a bad query becomes the summary line."""
            source = _source(sources, name)
            index = source.index
            try:
                states = source.states(store)  # read once: the rows shown and their text as curated
                selection = select(source, cats, text, use_regex, order, ticked, as_shown, states)
                number = min(max(1, int(page_number)), selection.pages)
                records = curation_panel.as_curated(index.page(selection, number), states, as_shown)
            except QueryError as err:
                return (table_html([], message="Fix the search to see rows." if not ticked or index.signals is not None
                                   else "The rows show once the quality signals are ready."), f"⚠️ {err}", "1", 1, "",
                        tag(build_query(cats, text, use_regex, order, quality=ticked, original=as_shown == ORIGINAL,
                                        source=source.name), PUSH),
                        export_note(0, order), gr.update(interactive=False), gr.update(interactive=False))
            row = opened["row"] if opened else None
            opened = opened if opened and any(r["row"] == row for r in records) else None
            empty = NO_CONTRIBUTIONS if index.num_rows == 0 and source.name != LOADED else ""
            return (table_html(records, text, use_regex, order, opened, message=empty, signals=index.signals),
                    f"**{NO_CONTRIBUTIONS}**" if empty else summary(selection.total, number, selection.pages, index.num_rows),
                    str(number), number, note,
                    tag(build_query(cats, text, use_regex, order, number, row, quality=ticked,
                                    original=as_shown == ORIGINAL, source=source.name), PUSH),
                    export_note(selection.total, order),
                    # Previous off on the first page, Next on the last: a press that cannot move is no step.
                    gr.update(interactive=number > 1), gr.update(interactive=number < selection.pages))

        def quality_view(cats, text, use_regex, order, ticked, as_shown, name):
            """Values for `quality_outputs`: the Quality filter's counts in this selection and the signals chart."""
            if dataset.state != "ready":
                return [gr.update(), gr.update()]
            source = _source(sources, name)
            index = source.index
            try:
                base = select(source, cats, text, use_regex, order, (), as_shown)
                selection = select(source, cats, text, use_regex, order, ticked, as_shown)
            except QueryError:
                return [quality_section.filter_update(index, None, source), gr.update()]
            frame = quality_section.chart_frame(index, selection)
            return [quality_section.filter_update(index, base, source),
                    quality_section.chart_html(frame, index.categories) if frame is not None else gr.update()]

        def charts(cats, text, use_regex, order, ticked, as_shown, name):
            """Values for `chart_outputs`: the charts of this selection, or an empty state saying why none."""
            if dataset.state != "ready":
                return [gr.update()] * len(chart_outputs)  # the poll draws them once the data is there
            source = _source(sources, name)
            index = source.index
            try:
                selection = select(source, cats, text, use_regex, order, ticked, as_shown)
            except QueryError:
                return _no_charts(chart_fields, "No charts: the search above is not valid. Fix it to see the selection.")
            if selection.total == 0:
                return _no_charts(chart_fields, "No charts: no rows match. Tick other categories or change the search.")
            # Plain frames: returning gr.BarPlot(..., sort=...) here stops later updates from
            # showing (Gradio 6.31). Bars sort by label, which length_histogram makes sortable.
            # A y_lim per frame: counts under 10 get an axis to 10, so its ticks are whole numbers (count_axis).
            frames = [index.category_counts(selection)] + [length_histogram(index.lengths[f][selection.rows])
                                                           for f in TEXT_FIELDS]
            return [gr.update(visible=True), gr.update(value="", visible=False)] + \
                   [gr.update(value=frame, y_lim=count_axis(frame["rows"])) for frame in frames]

        def open_row(cats, text, use_regex, order, ticked, as_shown, name, page_number, opened, evt: gr.EventData):
            """Open the clicked row (or close it when it is the open one)."""
            index = _source(sources, name).index
            row = getattr(evt, "_data", None) or {}
            row = row.get("row") if isinstance(row, dict) else None
            if row is None or (opened and opened["row"] == row):
                record = None
            else:
                record = opened_record(_source(sources, name), int(row))
            values = show(cats, text, use_regex, order, ticked, as_shown, name, page_number, record)
            return (values[0], record_html(record, text, use_regex, index.signals), record,
                    gr.update(interactive=record is not None, value=TRY_ON if record else TRY_OFF), values[5])

        closed_row = [record_html(None), None, gr.update(interactive=False, value=TRY_OFF)]
        row_outputs = [row_view, selected, try_in_chat]

        def first(cats, text, use_regex, order, ticked, as_shown, name):
            """A new selection: its first page, no row open, and no download of the previous selection."""
            return (*show(cats, text, use_regex, order, ticked, as_shown, name, 1), *closed_row, no_file())

        quality_outputs = [quality, quality_chart]
        first_outputs = view_outputs + row_outputs + [export_file]
        # always_last: a change made while the view is being drawn is drawn next, from the controls as they are
        # then. Gradio's default for these events ("once") drops it, leaving boxes ticked that the table ignores.
        for trigger in (categories.input, search.submit, search_button.click, regex.input, quality.input,
                        shown_as.input):
            trigger(first, view_inputs, first_outputs, trigger_mode="always_last", **private) \
                .then(charts, view_inputs, chart_outputs, show_progress="hidden", **private) \
                .then(quality_view, view_inputs, quality_outputs, show_progress="hidden", **private)

        def resort(shown, cats, text, use_regex, order, ticked, as_shown, name):
            """Another order: its first page (the charts and counts do not depend on the order). The order on
            screen again is no step: the Dropdown also sends `input` when it merely loses the focus."""
            if already_shown(shown, "sort", order):
                return gr.skip()  # one skip leaves every output as it is
            return first(cats, text, use_regex, order, ticked, as_shown, name)

        sort.input(resort, [link_query] + view_inputs, first_outputs, trigger_mode="always_last", **private)

        def step(delta):
            def go(cats, text, use_regex, order, ticked, as_shown, name, page_number, opened):
                return show(cats, text, use_regex, order, ticked, as_shown, name, int(page_number or 1) + delta, opened)
            return go

        def typed_page(cats, text, use_regex, order, ticked, as_shown, name, typed, page_number, opened):
            try:
                pages = select(_source(sources, name), cats, text, use_regex, order, ticked, as_shown).pages
            except QueryError:
                pages = 1  # show() reports the error
            number, note = resolve_page(typed, pages, page_number)
            return show(cats, text, use_regex, order, ticked, as_shown, name, number, opened, note)

        def quality_tick(cats, text, use_regex, order, ticked, as_shown, name, page_number, opened, shown):
            """While the signals compute: the filter says how far along. The tick that finds them there
            redraws the view with them (counts, badges, the opened record's signals, a quality filter
            from a link) and stops the timer."""
            keep = [gr.update()] * (len(view_outputs) + 1)
            if dataset.state == "failed":
                return keep + [gr.update(interactive=False), gr.update(), gr.Timer(active=False)]
            if dataset.state != "ready" or not shown:
                # not shown: the page is not filled from its link yet (the loading poll does that first)
                return keep + [gr.update(), gr.update(), gr.Timer(active=True)]
            source = _source(sources, name)
            if source.quality.state == "failed":
                return keep + [gr.update(info=quality_section.info(source), interactive=False), gr.update(),
                               gr.Timer(active=False)]
            if source.quality.state != "ready":
                return keep + [gr.update(info=quality_section.info(source)), gr.update(), gr.Timer(active=True)]
            index = source.index
            record = opened if opened and 0 <= int(opened.get("row", -1)) < index.num_rows else None
            values = list(show(cats, text, use_regex, order, ticked, as_shown, name, page_number or 1, record))
            values[5] = tag(untag(values[5])[1], REPLACE)  # the same view redrawn: no new history entry
            if not ticked:  # the same rows, now with their badges; what the page box holds stays as typed
                values = values[:1] + [gr.update()] * (len(values) - 1)
            return values + [record_html(record, text, use_regex, index.signals)] + \
                quality_view(cats, text, use_regex, order, ticked, as_shown, name) + [gr.Timer(active=False)]

        quality_timer.tick(quality_tick, view_inputs + [current, selected, drawn],
                           view_outputs + [row_view] + quality_outputs + [quality_timer], queue=False,
                           show_progress="hidden", **private)

        previous.click(step(-1), view_inputs + [current, selected], view_outputs, **private)
        following.click(step(+1), view_inputs + [current, selected], view_outputs, **private)
        page_box.submit(typed_page, view_inputs + [page_box, current, selected], view_outputs, **private)
        table.click(open_row, view_inputs + [current, selected], [table] + row_outputs + [link_query], **private)

        # The address bar follows the view, so copying it (or the box) shares exactly this view.
        # explorer.history's script pushes or replaces the browser's entry as the tag says.
        link_query.change(None, link_query, link, api_visibility="private",
                          js="(value) => window.dollyAddress ? window.dollyAddress.explorer(value) : ''")

        def export_view(cats, text, use_regex, order, ticked, as_shown, name, fmt, curate, progress=gr.Progress()):
            source = _source(sources, name)
            try:
                rows = select(source, cats, text, use_regex, order, ticked, as_shown).rows
            except QueryError as err:
                raise gr.Error(str(err), print_exception=False) from None
            return gr.update(value=_export(source, exports, fmt, progress, cats, text, use_regex, order, ticked,
                                           store=store if curate else None, rows=rows), visible=True)

        export_button.click(export_view, view_inputs + [file_format, as_curated], export_file, **private)

        # -- curation: the opened record's decisions (explorer.curation_panel) --------------------
        curate_outputs = [row_view] + panel.outputs()

        def curate_view(record, text, use_regex, shown=None, message=""):
            """The row viewer for `record` as curated, and the Curate section's values; `shown`: what the
            section shows now (the same record again keeps a reason being typed)."""
            if dataset.state != "ready":
                return [gr.update()] * len(curate_outputs)
            source = _source(sources, source_of(record))
            again = bool(record and shown and shown.get("row") == record["row"]
                         and (shown.get("key"), shown.get("stored")) == source.locate(record["row"]))
            # The same record drawn again (a poll, its signals arriving): an open Edit form and a reason
            # being typed stay as they are.
            shown_record, values = panel.view(source, record, message, keep_form=again, keep_reason=again)
            return [record_html(shown_record, text, use_regex, source.index.signals)] + values

        def decide(action):
            def save(record, opened, text, use_regex, instruction, context, response, category, reason,
                     request: gr.Request):
                source = _source(sources, source_of(record))
                form = {"instruction": instruction, "context": context, "response": response, "category": category}
                shown_record, values = panel.decide(action, source, record, opened, request, form=form, reason=reason)
                return [record_html(shown_record, text, use_regex, source.index.signals)] + values
            return save

        if store is not None:
            # One at a time, in the order asked (one queue group): a redraw of the opened row asked before a
            # decision must not finish after it, or it puts back what the decision changed (seen: Undo, then
            # the row's redraw from its opening showed it edited again).
            one_by_one = dict(concurrency_id="explorer-curation", concurrency_limit=1)
            selected.change(curate_view, [selected, search, regex, panel.version], curate_outputs,
                            show_progress="hidden", **one_by_one, **private)
            decision_inputs = [selected, panel.version, search, regex, *panel.fields.values(), panel.reason]
            redraw = step(0)  # the same page again: a decision may hide a record or change its text

            def counts_info(name):
                return gr.update(choices=curation_panel.shown_choices(_source(sources, name).counts(store)))

            for button, action in ((panel.save, "edit"), (panel.accept, "accept"), (panel.undo, "undo"),
                                   (panel.exclude, "exclude")):
                button.click(decide(action), decision_inputs, curate_outputs, **one_by_one, **private) \
                    .then(redraw, view_inputs + [current, selected], view_outputs, show_progress="hidden", **private) \
                    .then(counts_info, source_choice, shown_as, show_progress="hidden", **private) \
                    .then(no_file, None, export_file, show_progress="hidden", **private)  # its file is stale now

            def preview_fix(cats, text, use_regex, order, ticked, as_shown, name):
                source = _source(sources, name)
                try:
                    selection = select(source, cats, text, use_regex, order, ticked, as_shown)
                except QueryError as err:
                    raise gr.Error(str(err), print_exception=False) from None
                return fix.show_preview(source, selection)

            fix.preview.click(preview_fix, view_inputs, fix.outputs(), **private)
            fix.apply.click(fix.save, fix.pending, fix.outputs(), **private) \
                .then(redraw, view_inputs + [current, selected], view_outputs, show_progress="hidden", **private) \
                .then(curate_view, [selected, search, regex], curate_outputs, show_progress="hidden", **one_by_one,
                      **private) \
                .then(counts_info, source_choice, shown_as, show_progress="hidden", **private) \
                .then(no_file, None, export_file, show_progress="hidden", **private)
            panel.edit.click(lambda record: panel.open_form(_source(sources, source_of(record)), record), selected,
                             [panel.form, *panel.fields.values(), panel.message], **private)
            panel.cancel.click(lambda: gr.update(visible=False), None, panel.form, **private)

        def restore(query: str, mode: str = REPLACE) -> list:
            """Values for `fill_outputs`: the view a URL query asks for (the data is loaded), controls on."""
            view = parse_query(query)
            # A link to the contributions opened where there are none to show (no store): the loaded dataset.
            source = _source(sources, view.source if view.source in sources.names else LOADED)
            index = source.index
            view.categories = [c for c in view.categories if c in index.counts]
            as_shown = ORIGINAL if view.original else CURATED
            try:
                base = select(source, view.categories, view.search, view.regex, view.sort, (), as_shown)
            except QueryError:
                base = None
            updates = [gr.update(choices=_category_choices(index), value=view.categories, interactive=True),
                       gr.update(value=view.search, interactive=True), gr.update(value=view.regex, interactive=True),
                       gr.update(value=view.sort, interactive=True),
                       quality_section.filter_update(index, base, source, view.quality),
                       gr.update(value=as_shown, interactive=True,
                                 choices=curation_panel.shown_choices(source.counts(store))),
                       gr.update(value=source.name, interactive=True)] + \
                [gr.update(interactive=True)] * len(other_controls)
            record = opened_record(source, view.row) if view.row is not None and view.row < index.num_rows else None
            # A link to a page past the end (the data changed since) opens the last page: show() clamps.
            values = list(show(view.categories, view.search, view.regex, view.sort, view.quality, as_shown, source.name,
                               view.page, record))
            values[2] = gr.update(value=values[2], interactive=True)
            # Filled from the address: it replaces the history entry, never adds one (a new source is a step).
            values[5] = tag(build_query(view.categories, view.search, view.regex, view.sort, values[3],
                                        view.row if record is not None else None, quality=view.quality,
                                        original=view.original, source=source.name), mode)
            outputs = updates + values + [record_html(record, view.search, view.regex, index.signals), record,
                                          gr.update(interactive=record is not None, value=TRY_ON if record else TRY_OFF)]
            if tabs is not None:
                outputs.append(gr.Tabs(selected="explorer") if view.explorer else gr.update())
            return outputs

        # page_box, previous and following are both controls and view outputs: listed once, as outputs.
        both = {id(c) for c in other_controls} & {id(c) for c in view_outputs}
        fill_controls = [c for c in other_controls if id(c) not in both]
        fill_outputs = view_inputs + fill_controls + view_outputs + row_outputs + ([tabs] if tabs is not None else [])
        screen_outputs = [loading, failed, body, timer, filled, drawn]

        def fill(query: str, mode: str = REPLACE) -> list:
            values = restore(query, mode)
            for i in reversed([i for i, c in enumerate(other_controls) if id(c) in both]):
                del values[len(view_inputs) + i]
            return values

        def back_or_forward(query) -> list:
            """Back/Forward reached an Explorer address: its view, restored as a page load would (and `stepped`)."""
            query = query[0] if isinstance(query, list) and query else query  # the script's one value
            if dataset.state != "ready":
                return [gr.update()] * len(fill_outputs) + [False]  # the loading poll restores it from the address
            return fill(str(query or "")) + [True]

        def signals_poll(name) -> dict:
            """The quality timer on while the shown records' signals compute (another source's may be)."""
            if dataset.state != "ready":
                return gr.update()  # the loading poll fills the page first; this timer waits meanwhile
            return gr.Timer(active=_source(sources, name if name in sources.names else LOADED).quality.state == "loading")

        def switch_source(shown, name, text, use_regex, order, ticked, as_shown) -> list:
            """Other records: the same search, sort, signals and Show over them, from their first page;
            a step in the browser's history, and a link of its own (`source=`). The records on screen
            again are no step (the Dropdown also sends `input` when it merely loses the focus)."""
            if already_shown(shown, "source", name):
                return [gr.skip()] * len(fill_outputs) + [False]
            return fill(build_query((), text, use_regex, order, quality=ticked, original=as_shown == ORIGINAL,
                                    source=name), PUSH) + [True]

        def if_stepped(handler):
            """`handler`, run only when the event before it changed the view (`stepped`)."""
            def run(went, *args):
                return handler(*args) if went else gr.skip()  # one skip leaves every output as it is
            return run

        stepped = gr.State(False)  # whether the Back/Forward or source switch just handled changed the view
        for event, handler, inputs in ((history_go.click, back_or_forward, history_query),
                                       (source_choice.input, switch_source,
                                        [link_query, source_choice, search, regex, sort, quality, shown_as])):
            event(handler, inputs, fill_outputs + [stepped], trigger_mode="always_last", **private,
                  **(dict(js="() => [window.location.search]") if handler is back_or_forward else {})) \
                .then(if_stepped(no_file), stepped, export_file, show_progress="hidden", **private) \
                .then(if_stepped(charts), [stepped] + view_inputs, chart_outputs,
                      show_progress="hidden", **private) \
                .then(if_stepped(quality_view), [stepped] + view_inputs, quality_outputs,
                      show_progress="hidden", **private) \
                .then(if_stepped(signals_poll), [stepped, source_choice], quality_timer, show_progress="hidden",
                      **private)

        def screen(query: str, shown: bool, with_charts: bool) -> list:
            """Everything the page shows for the loader's state now; `shown`: the page has the data already."""
            now = dataset.state
            keep = [gr.update()] * len(fill_outputs)
            keep_charts = [gr.update()] * len(chart_outputs) if with_charts else []
            about_explorer = tabs is not None and parse_query(query).explorer
            if about_explorer and now != "ready":
                keep[-1] = gr.Tabs(selected="explorer")  # the link is about the Explorer: open it, loading or failed
            if now == "loading":
                return keep + keep_charts + [gr.update(value=_loading_md(dataset), visible=True), gr.update(),
                                             gr.update(), gr.Timer(active=True), False, False]
            if now == "failed":
                return keep + keep_charts + [gr.update(visible=False), gr.update(value=_error_md(dataset.error), visible=True),
                                             gr.update(visible=False), gr.Timer(active=False), False, False]
            # `body` is left as drawn (visible): setting visible=True again would also show the hidden
            # link_query box inside it (Gradio 6.31 passes a layout's visibility down to its children).
            note = dataset.note()
            done = [gr.update(value=note, visible=bool(note)), gr.update(),
                    gr.update(visible=False) if dataset.get().num_rows == 0 else gr.update(), gr.Timer(active=False), True, True]
            if shown:
                return keep + keep_charts + done
            values = fill(query)
            if with_charts:
                choice_update, text, use_regex, order, ticked, as_shown, name = values[:7]
                values += charts(choice_update["value"], text["value"], use_regex["value"], order["value"],
                                 ticked["value"], as_shown["value"], name["value"])
            return values + done

        def on_load(request: gr.Request):
            query = str(request.query_params) if request is not None else ""
            # Signals already there: the page is drawn with them, so the quality poll has nothing to do.
            polling = signals_poll(parse_query(query).source)
            return [query] + screen(query, False, with_charts=False) + [polling]

        # On page load the view follows the URL; charts come after the table, as they take longer.
        demo.load(on_load, None, [query_state] + fill_outputs + screen_outputs + [quality_timer], **private) \
            .then(charts, view_inputs, chart_outputs, show_progress="hidden", **private) \
            .then(quality_view, view_inputs, quality_outputs, show_progress="hidden", **private)
        # While the data loads, each tick updates the loading line; the tick that finds it ready fills
        # the whole view (charts too) from the URL query stashed at page load, then stops the timer.
        timer.tick(lambda query, shown: screen(query, shown, with_charts=True), [query_state, filled],
                   fill_outputs + chart_outputs + screen_outputs, queue=False, show_progress="hidden", **private)
        _register_api(dataset, sources, exports)

    return ExplorerTab(tab, try_in_chat, selected, dataset, exports)


def _no_charts(chart_fields, why: str) -> list:
    """Chart outputs for a selection with nothing to chart: the plots hidden, the reason shown."""
    return [gr.update(visible=False), gr.update(value=why, visible=True), gr.update()] + [gr.update()] * len(chart_fields)


def _loading_md(dataset: DatasetLoader) -> str:
    return f"{dataset.status()}\n\n{LOADING_NOTE}"


def _source(sources: Sources, name: str = LOADED) -> Source:
    """The records `name` names (explorer.sources), or a readable gr.Error while the data loads, when it
    did not load, or for a source this app has not (says which)."""
    try:
        return sources.get(name)
    except (DatasetNotReady, QueryError) as err:
        raise gr.Error(str(err), print_exception=False) from None


def _export(source: Source, exports: ExportStore, file_format: str, progress, categories, search: str,
            regex: bool = False, sort: str = DEFAULT_SORT, quality=(), store: Store | None = None,
            rows=None) -> str:
    """The selection as a file in `file_format`, with a progress bar; bad input is a readable gr.Error.
    `rows`: the selection's rows when the caller chose them (the Explorer's view), else selected here.
    With a curation `store`: as curated (edits applied, excluded records left out, a curation column)."""
    index = source.index
    try:
        check_format(file_format)
        if rows is None:
            rows = index.select(categories, search, regex, sort, quality).rows
        table = index.table(Selection((), "", False, sort, rows))
        if store is not None:
            table = curated(table, source.states(store), rows=rows, column=True)
        return exports.export(table, file_format,
                              lambda done, total: progress((done, max(total, 1)), desc="Exporting", unit="rows"))
    except (QueryError, ExportError) as err:
        raise gr.Error(str(err), print_exception=False) from None


def _first_summary(index: Index) -> str:
    return summary(index.num_rows, 1, max(1, -(-index.num_rows // PAGE_SIZE)), index.num_rows)


def _error_md(error: str | None) -> str:
    """The failed load in plain words; the exact error (exception names and all) folded away below."""
    plain, detail = plain_error(error or "")
    text = f"### Could not load the dataset\n\n{_md_escape(plain)}"
    if detail:
        text += f"\n\n<details><summary>Technical details</summary>\n\n{_md_escape(detail)}\n\n</details>"
    return text


def _md_escape(text: str) -> str:
    """`text` shown as written, not read as Markdown; only its `code` spans (the commands a message
    tells people to run) stay code."""
    pieces = re.split(r"(`[^`\n]+`)", text)
    return "".join(piece if i % 2 else re.sub(r"([\\`*_{}\[\]<>()#+\-!|])", r"\\\1", piece)
                   for i, piece in enumerate(pieces))


# -- the API ------------------------------------------------------------------------------------
def _register_api(dataset: DatasetLoader, sources: Sources, exports: ExportStore) -> None:
    """/explore and /export: stable positional signatures for gradio_client (see README).

    Both run with preprocess=False: they get each value exactly as the client sent it and check
    it themselves (explorer.query, explorer.export), so a bad value gets a message that names the
    input, and nothing is silently converted (Gradio's Number would round page 1.5 to 2, and
    answer page "abc" with a message-less error).
    """

    def explore(categories: list[str], search: str, page: int, quality: list[str] | None = None,
                source: str = LOADED):
        """Rows of one page (PAGE_SIZE rows, from page 1) matching the categories (empty = all) and the
        case-insensitive literal search, and, when `quality` names signals, flagged by any of them; `source`:
        the records, "loaded", "contributions" or "both" (explorer.sources). Both optional: calls with the
        first three values alone are unchanged. Returns (rows, total matching rows)."""
        data = _source(sources, source).index
        try:
            selection = data.select(categories, search, quality=quality)
            rows = data.page(selection, page)
        except QueryError as err:
            raise gr.Error(str(err), print_exception=False) from None
        return rows, selection.total

    explore.optional_inputs = 2  # `quality`, `source`: app.check_arity lets a call leave them out (calls from before)

    def export(categories: list[str], search: str, file_format: str, source: str = LOADED, progress=gr.Progress()):
        """Every row matching the categories (empty = all) and the search, as a jsonl, csv or parquet file;
        `source` (optional) as for explore."""
        return _export(_source(sources, source), exports, file_format, progress, categories, search)

    export.optional_inputs = 1

    # Components the API speaks through; never shown. Custom values are allowed so that an unknown
    # category or format reaches our functions and gets our message, not a generic one.
    with gr.Column(visible=False):
        choices = dataset.get().categories if dataset.state == "ready" else []
        api_categories = gr.Dropdown(choices, multiselect=True, allow_custom_value=True, label="categories")
        api_search = gr.Textbox(label="search")
        api_page = gr.Number(1, precision=0, label="page")
        # Optional (a trailing input whose function parameter has a default; app.check_arity pads a call
        # that leaves it out): quality signals, rows flagged by any of them.
        api_quality = gr.Dropdown(list(SIGNALS), multiselect=True, allow_custom_value=True, label="quality")
        api_source = gr.Dropdown(list(sources.names), value=LOADED, allow_custom_value=True, label="source")
        api_format = gr.Dropdown(list(FORMATS), value="jsonl", allow_custom_value=True, label="file_format")
        api_rows = gr.JSON(label="rows")
        api_total = gr.Number(label="total", precision=0)
        api_file = gr.File(label="file")
        trigger = gr.Button(visible=False)
    trigger.click(explore, [api_categories, api_search, api_page, api_quality, api_source], [api_rows, api_total],
                  api_name="explore", preprocess=False)
    trigger.click(export, [api_categories, api_search, api_format, api_source], api_file, api_name="export", queue=False,
                  preprocess=False)
