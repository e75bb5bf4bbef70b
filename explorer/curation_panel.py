"""The row viewer's Curate section: Edit, Exclude (with a reason), Accept and Undo of the opened record.

Decisions go to the curation store (dolly.curation: SQLite by default, PostgreSQL for replicas), keyed
by the dataset's content and the row, so they survive restarts and meet the same data when it loads
again. Saves are optimistic: the panel remembers the version of the record it showed, and a save made
after someone else's is refused with who changed it and when, the newer text shown above, the editor's own
text kept in the form. explorer.tab places these components and wires them; the words come from the
plain functions here, tested without a browser.
"""
from __future__ import annotations

import dataclasses
import html
from typing import TYPE_CHECKING

import gradio as gr
import numpy as np

from dolly.curation import ANONYMOUS, Change, CurationError, RecordState, Store, when
from dolly.data import REQUIRED_COLUMNS
from explorer.query import Selection
from explorer.signals import CITATION_FIELDS, remove_citations

if TYPE_CHECKING:
    from explorer.sources import Source

CSS = """
/* The "Show" choice beside the summary line on wide screens (its two options on one line); under it on phones. */
#explorer-summary-row { align-items: center; }
@media (min-width: 901px) {
  #explorer-summary-row { flex-wrap: nowrap; }
  #explorer-summary-row > #explorer-summary { flex: 1 1 auto !important; min-width: 0; }
  #explorer-shown { flex: 0 0 auto !important; width: auto !important; }
  #explorer-shown .wrap { flex-wrap: nowrap; }
}
/* Off until a record opens, yet readable (4.5:1): Gradio's disabled grey on its button grey is 3.3:1, and a
   check that lands while the record's decisions load would read it mid-change. */
#explorer-curate button:disabled { color: #4b5563 !important; border-style: dashed; cursor: not-allowed; }
.dark #explorer-curate button:disabled { color: #d1d5db !important; }
#explorer-curate { border-top: 1px solid var(--border-color-primary); padding-top: .4rem; }
#explorer-curate-status p { margin: .2rem 0; }
#explorer-curate-message:has(p) { border-left: 3px solid #b91c1c; padding: .2rem .6rem; }
.dolly-history { font-size: .85rem; margin: .2rem 0 0 1rem; padding: 0; }
"""

def author_of(request: gr.Request | None) -> str:
    """Who saves: the --auth user, else "anonymous"."""
    return str(getattr(request, "username", None) or "") or ANONYMOUS


def status_md(state: RecordState, counts: dict[str, int], history: list[Change], row: int | None = None) -> str:
    """The opened record's decision in words, the dataset's counts, and the record's history (newest first).
    `row`: the record's row as the Explorer shows it, when that is not its row in the store."""
    row = state.row if row is None else row
    if state.status:
        line = f"**Row {row}: {html.escape(state.describe())}** — by {html.escape(state.author)}, {state.when()}."
    else:
        line = f"**Row {row}: not reviewed yet** — the original record."
    tally = " · ".join(f"{counts.get(name, 0):,} {name}" for name in ("edited", "excluded", "accepted"))
    text = f"{line}\n\nIn this dataset: {tally}."
    if history:
        items = "".join(f"<li>{when(c.at)}: {html.escape(c.author)} — {c.action}"
                        f"{(' → ' + html.escape(c.after.describe())) if c.action != 'accept' else ''}</li>"
                        for c in reversed(history))
        text += (f"\n\n<details><summary>History ({len(history)} change{'s' if len(history) != 1 else ''})</summary>"
                 f"<ul class='dolly-history'>{items}</ul></details>")
    return text


def edited_fields(record: dict, form: dict) -> dict:
    """The form's fields that differ from the original record: an unchanged field is not an edit."""
    return {name: form[name] for name in REQUIRED_COLUMNS if name in form and form[name] != record.get(name, "")}


CURATED, ORIGINAL = "curated", "original"  # the two ways the Explorer shows the records (its "Show" choice)
PREVIEW_RECORDS = 3  # records whose change the citation fix's preview shows in full


def visible_rows(selection: Selection, states: dict[int, RecordState], shown: str) -> Selection:
    """`selection` as the Explorer shows it: curated, without the excluded records; original, all of them."""
    if shown == ORIGINAL or not states:
        return selection
    excluded = np.fromiter((row for row, state in states.items() if state.status == "excluded"), np.int64)
    if not len(excluded):
        return selection
    return dataclasses.replace(selection, rows=selection.rows[~np.isin(selection.rows, excluded)])


def as_curated(records: list[dict], states: dict[int, RecordState], shown: str) -> list[dict]:
    """The records of a page with their edits applied (curated), or as they are (original)."""
    if shown == ORIGINAL:
        return records
    return [states[r["row"]].apply(r) if r["row"] in states else r for r in records]


def shown_choices(counts: dict[str, int]) -> list[tuple[str, str]]:
    """The "Show" choice (curated: edits applied, excluded hidden; or original), curated with the dataset's counts."""
    tally = " · ".join(f"{counts.get(name, 0):,} {name}" for name in ("edited", "excluded", "accepted"))
    return [(f"curated ({tally})", CURATED), ("original", ORIGINAL)]


def citation_fixes(records: list[dict], states: dict[int, RecordState]) -> tuple[dict, list[tuple[dict, dict]]]:
    """The citation-marker fix for `records` (a selection, as loaded) as curated now:
    ({row: (version, fields changed)} for the store's edit_many, [(before, after) records] that change)."""
    edits, changes = {}, []
    for record in records:
        state = states.get(record["row"], RecordState(record["row"]))
        if state.status == "excluded":
            continue
        before = state.apply(record)
        fixed = {name: remove_citations(before[name]) for name in CITATION_FIELDS if before.get(name)}
        fixed = {name: text for name, text in fixed.items() if text != before[name]}
        if fixed:
            edits[record["row"]] = (state.version, {**state.fields, **fixed})
            changes.append((before, {**before, **fixed}))
    return edits, changes


def fix_preview_md(changes: list[tuple[dict, dict]]) -> str:
    """How many records the fix changes, and the first few, before and after."""
    if not changes:
        return "No record of the selection has citation markers: nothing to change."
    parts = [f"**{len(changes):,} record{'s' if len(changes) != 1 else ''}** of the selection would change. "
             f"The first {min(len(changes), PREVIEW_RECORDS)}:"]
    for before, after in changes[:PREVIEW_RECORDS]:
        for name in CITATION_FIELDS:
            if before.get(name) != after.get(name):
                parts.append(f"- Row {before['row']}, {name}: <del>{html.escape(before[name][:300])}</del><br>"
                             f"<ins>{html.escape(after[name][:300])}</ins>")
    return "\n".join(parts)


class CurationPanel:
    """The section's components (built inside the row viewer's column) and its event wiring."""

    def __init__(self, store: Store | None):
        self.store = store
        with gr.Column(elem_id="explorer-curate", visible=store is not None) as self.box:
            self.status = gr.Markdown("Open a row to edit, exclude or accept it.", elem_id="explorer-curate-status")
            with gr.Row():
                # Narrow minimums: three buttons fit the side panel's width (Gradio's default is 160 px each).
                self.edit = gr.Button("Edit", size="sm", min_width=60, interactive=False, elem_id="explorer-curate-edit")
                self.accept = gr.Button("Accept", size="sm", min_width=60, interactive=False,
                                        elem_id="explorer-curate-accept")
                self.undo = gr.Button("Undo", size="sm", min_width=60, interactive=False, elem_id="explorer-curate-undo")
            with gr.Row(equal_height=True):
                self.reason = gr.Textbox(label="Reason to exclude", placeholder="e.g. duplicate of row 7", max_lines=1,
                                         scale=3, min_width=120, interactive=False, elem_id="explorer-curate-reason")
                self.exclude = gr.Button("Exclude", size="sm", scale=1, min_width=80, interactive=False,
                                         elem_id="explorer-curate-exclude")
            with gr.Column(visible=False, elem_id="explorer-edit-form") as self.form:
                self.fields = {name: gr.Textbox(label=name.capitalize(), lines=2, max_lines=12,
                                                elem_id=f"explorer-edit-{name}")
                               for name in ("instruction", "context", "response")}
                self.fields["category"] = gr.Dropdown([], label="Category", allow_custom_value=False,
                                                      elem_id="explorer-edit-category")
                with gr.Row():
                    self.save = gr.Button("Save", variant="primary", size="sm", min_width=60, elem_id="explorer-edit-save")
                    self.cancel = gr.Button("Cancel", size="sm", min_width=60, elem_id="explorer-edit-cancel")
            self.message = gr.Markdown("", elem_id="explorer-curate-message")
            self.version = gr.State(None)  # {"row", "version"} of the record as this panel showed it

    def outputs(self) -> list:
        """What `view` returns values for (after the row viewer's own HTML, which the caller adds)."""
        return [self.status, self.edit, self.accept, self.undo, self.reason, self.exclude, self.form, self.message,
                self.version]

    def view(self, source: "Source", record: dict | None, message: str = "", state: RecordState | None = None,
             keep_form: bool = False, keep_reason: bool = False) -> tuple[dict | None, list]:
        """(the record as curated, or None, and the values for `outputs()`) for the opened `record` of
        `source` (explorer.sources). `keep_reason`: the same record drawn again (its signals arrived),
        so a reason being typed stays."""
        on = record is not None and self.store is not None
        if not on:
            return None, [gr.update(value="Open a row to edit, exclude or accept it."),
                          *[gr.update(interactive=False)] * 5, gr.update(visible=False), message, None]
        row = int(record["row"])
        key, stored = source.locate(row)
        state = state or self.store.state(key, stored)
        status = status_md(state, source.counts(self.store), self.store.history(key, stored), row=row)
        reason = gr.update(interactive=True) if keep_reason else gr.update(value="", interactive=True)
        return state.apply(record), [status, *[gr.update(interactive=True)] * 2,
                                     gr.update(interactive=state.version > 0), reason,
                                     gr.update(interactive=True), gr.update() if keep_form else gr.update(visible=False),
                                     message, {"row": row, "version": state.version, "key": key, "stored": stored}]

    def open_form(self, source: "Source", record: dict | None) -> list:
        """Values for [form, *fields, message]: the form filled with the record as it stands now."""
        if record is None or self.store is None:
            return [gr.update(visible=False)] + [gr.update()] * 4 + [""]
        current = self.store.state(*source.locate(int(record["row"]))).apply(record)  # as it stands now
        return [gr.update(visible=True)] + [current.get(name, "") for name in ("instruction", "context", "response")] + \
               [gr.update(choices=source.index.categories, value=current.get("category"))] + [""]

    def decide(self, action: str, source: "Source", record: dict | None, opened: dict | None, request: gr.Request,
               form: dict | None = None, reason: str = "") -> tuple[dict | None, list]:
        """Save `action` ("edit", "exclude", "accept", "undo") for the opened record; like `view`. The
        record is found in the store where it was when it opened (`opened`), however its row moved since."""
        if record is None or self.store is None or not opened:
            return self.view(source, record, "Open a row first.")
        key, row, version = opened["key"], int(opened["stored"]), int(opened["version"])
        author = author_of(request)
        try:
            if action == "edit":
                form = form or {}
                changes = edited_fields(record, form)
                if form and not str(form.get("instruction", "")).strip():
                    raise CurationError("The instruction cannot be empty: write one, or Exclude the record instead.")
                if form and not str(form.get("response", "")).strip():
                    raise CurationError("The response cannot be empty: write one, or Exclude the record instead.")
                state = self.store.edit(key, row, version, changes, author=author)
            elif action == "exclude":
                if not str(reason or "").strip():
                    raise CurationError("Say why the record is excluded (e.g. “duplicate of row 7”), then press Exclude.")
                state = self.store.exclude(key, row, version, reason.strip(), author=author)
            elif action == "accept":
                state = self.store.accept(key, row, version, author=author)
            else:
                state = self.store.undo(key, row, version, author=author)
        except CurationError as err:
            # A conflict (or a refusal): the newer state is shown above; the form keeps what was typed.
            return self.view(source, record, f"⚠️ {err}", keep_form=action == "edit")
        return self.view(source, record, f"Saved: row {record['row']} {state.describe()}.", state=state)


class CitationFix:
    """"Fix the selection": remove citation markers from every record of the selection, previewed first
    (how many records change, the first few before and after), then applied as one all-or-nothing save."""

    def __init__(self, store: Store | None):
        self.store = store
        with gr.Accordion("Fix the selection", open=False, visible=store is not None, elem_id="explorer-fix-panel"):
            gr.Markdown("Remove citation markers (`[12]`, `[citation needed]`, `[a]`) from the context and response "
                        "of every record in the selection, as the dolly-15k card recommends. Nothing changes until "
                        "you apply the preview; each record's change is kept in its history, and Undo reverts it.")
            with gr.Row():
                self.preview = gr.Button("Preview: remove citation markers", elem_id="explorer-fix-preview")
                self.apply = gr.Button("Apply to the records shown", variant="primary", interactive=False,
                                       elem_id="explorer-fix-apply")
            self.result = gr.Markdown("", elem_id="explorer-fix-result")
            self.pending = gr.State(None)  # {"edits": [(key, {store row: (version, fields)}), ...]} of the last preview

    def outputs(self) -> list:
        return [self.result, self.apply, self.pending]

    def show_preview(self, source: "Source", selection: Selection) -> list:
        """Values for `outputs()`: the preview of the fix over `selection`, Apply on when something changes."""
        edits, changes = citation_fixes(source.index.records(selection.rows), source.states(self.store))
        label = f"Apply to {len(edits):,} record{'s' if len(edits) != 1 else ''}"
        by_key: dict[str, dict] = {}
        for row, edit in edits.items():
            key, stored = source.locate(row)
            by_key.setdefault(key, {})[stored] = edit
        return [fix_preview_md(changes), gr.update(interactive=bool(edits), value=label if edits else "Apply"),
                {"edits": list(by_key.items())} if edits else None]

    def save(self, pending: dict | None, request: gr.Request) -> list:
        """Values for `outputs()`: the previewed fix saved (all records, or none when one changed since)."""
        if not pending:
            return ["Preview the fix first.", gr.update(interactive=False), None]
        try:
            # All or nothing within each dataset (a selection of "both" spans two: the loaded one first).
            saved = [state for key, edits in pending["edits"]
                     for state in self.store.edit_many(key, edits, author=author_of(request))]
        except CurationError as err:
            return [f"⚠️ {err}", gr.update(interactive=False, value="Apply"), None]
        return [f"Removed citation markers from {len(saved):,} record{'s' if len(saved) != 1 else ''}. "
                "Each one's history has the change; Undo in the row viewer reverts one.",
                gr.update(interactive=False, value="Apply"), None]
