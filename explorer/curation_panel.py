"""The row viewer's Curate section: Edit, Exclude (with a reason), Accept and Undo of the opened record.

Decisions go to the curation store (dolly.curation: SQLite by default, PostgreSQL for replicas), keyed
by the dataset's content and the row, so they survive restarts and meet the same data when it loads
again. Saves are optimistic: the panel remembers the version of the record it showed, and a save made
after someone else's is refused with who changed it and when, the newer text shown above, the editor's own
text kept in the form. explorer.tab places these components and wires them; the words come from the
plain functions here, tested without a browser.
"""
from __future__ import annotations

import html
import threading

import gradio as gr

from dolly.curation import ANONYMOUS, Change, CurationError, RecordState, Store, dataset_key, when
from dolly.data import REQUIRED_COLUMNS
from explorer.query import Index

CSS = """
#explorer-curate { border-top: 1px solid var(--border-color-primary); padding-top: .4rem; }
#explorer-curate-status p { margin: .2rem 0; }
#explorer-curate-message:has(p) { border-left: 3px solid #b91c1c; padding: .2rem .6rem; }
.dolly-history { font-size: .85rem; margin: .2rem 0 0 1rem; padding: 0; }
"""

_KEY_LOCK = threading.Lock()


def key_of(index: Index) -> str:
    """The loaded dataset's identity in the store, hashed once per loaded Index (a second for 15k rows)."""
    with _KEY_LOCK:
        key = getattr(index, "_curation_key", None)
        if key is None:
            key = index._curation_key = dataset_key(index.frame())
        return key


def author_of(request: gr.Request | None) -> str:
    """Who saves: the --auth user, else "anonymous"."""
    return str(getattr(request, "username", None) or "") or ANONYMOUS


def status_md(state: RecordState, counts: dict[str, int], history: list[Change]) -> str:
    """The opened record's decision in words, the dataset's counts, and the record's history (newest first)."""
    if state.status:
        line = f"**Row {state.row}: {html.escape(state.describe())}** — by {html.escape(state.author)}, {state.when()}."
    else:
        line = f"**Row {state.row}: not reviewed yet** — the original record."
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

    def view(self, index: Index, record: dict | None, message: str = "", state: RecordState | None = None,
             keep_form: bool = False) -> tuple[dict | None, list]:
        """(the record as curated, or None, and the values for `outputs()`) for the opened `record`."""
        on = record is not None and self.store is not None
        if not on:
            return None, [gr.update(value="Open a row to edit, exclude or accept it."),
                          *[gr.update(interactive=False)] * 5, gr.update(visible=False), message, None]
        key = key_of(index)
        row = int(record["row"])
        state = state or self.store.state(key, row)
        status = status_md(state, self.store.counts(key), self.store.history(key, row))
        return state.apply(record), [status, *[gr.update(interactive=True)] * 2,
                                     gr.update(interactive=state.version > 0), gr.update(value="", interactive=True),
                                     gr.update(interactive=True), gr.update() if keep_form else gr.update(visible=False),
                                     message, {"row": row, "version": state.version}]

    def open_form(self, index: Index, record: dict | None) -> list:
        """Values for [form, *fields, message]: the form filled with the record as it stands now."""
        if record is None or self.store is None:
            return [gr.update(visible=False)] + [gr.update()] * 4 + [""]
        current = self.store.state(key_of(index), int(record["row"])).apply(record)  # as it stands now
        return [gr.update(visible=True)] + [current.get(name, "") for name in ("instruction", "context", "response")] + \
               [gr.update(choices=index.categories, value=current.get("category"))] + [""]

    def decide(self, action: str, index: Index, record: dict | None, opened: dict | None, request: gr.Request,
               form: dict | None = None, reason: str = "") -> tuple[dict | None, list]:
        """Save `action` ("edit", "exclude", "accept", "undo") for the opened record; like `view`."""
        if record is None or self.store is None or not opened:
            return self.view(index, record, "Open a row first.")
        key, row, version = key_of(index), int(record["row"]), int(opened["version"])
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
            return self.view(index, record, f"⚠️ {err}", keep_form=action == "edit")
        return self.view(index, record, f"Saved: row {row} {state.describe()}.", state=state)
