"""The Contribute tab (issue 17 §2): write a record in one of the eight categories, answer someone else's
question, see the leaderboard. Components and wiring only; the words and the saving are plain functions
in explorer/contribute.py and dolly/contributions.py.

The unsaved draft lives in the browser (gr.BrowserState: localStorage, under a fixed key so it survives a
reload and an app restart), with its idempotency key: a double-click on Save or a retried request stores
one record."""
from __future__ import annotations

import hashlib

import gradio as gr

from dolly import contributions as contrib
from explorer import contribute as logic
from explorer.curation_panel import author_of
from explorer.review import build_review_section


def build_contribute_tab(demo, loader, store, *, auth: bool = False):
    """The tab, after the Explorer; `loader` is the Explorer's DatasetLoader (guidelines' examples and the
    warnings compare with its data), `store` the curation store the contributions go to."""
    secret = hashlib.sha256(f"open-dolly draft {store.location}".encode()).hexdigest()[:16]
    # render_children: Gradio draws a tab's components only when it is first opened, and BrowserState reads
    # the browser's storage when drawn; without it the page-load event would not see the stored draft.
    with gr.Tab("Contribute", id="contribute", render_children=True) as tab:
        draft = gr.BrowserState(None, storage_key="open-dolly-contribute-draft", secret=secret)
        gr.Markdown("Write records the way dolly-15k was written: pick a category, follow its guideline, and save. "
                    + ("You save as the signed-in user." if auth else
                       "**Contributions are anonymous** here (the app runs without `--auth`)."),
                    elem_id="contribute-notice")
        key = gr.State("")
        with gr.Row():
            with gr.Column(scale=3):
                category = gr.Dropdown(list(contrib.CATEGORIES), value=None, label="Category",
                                       elem_id="contribute-category")
                instruction = gr.Textbox(label="Instruction", lines=3, elem_id="contribute-instruction")
                context = gr.Textbox(label="Context (the reference passage, where the category has one)", lines=4,
                                     elem_id="contribute-context")
                response = gr.Textbox(label="Response", lines=5, elem_id="contribute-response")
                with gr.Row():
                    license = gr.Dropdown(list(contrib.LICENSES), value=contrib.DEFAULT_LICENSE, label="License",
                                          elem_id="contribute-license")
                    reason = gr.Textbox(label="Reason to keep it (when warned)", elem_id="contribute-reason")
                feedback = gr.Markdown(elem_id="contribute-feedback")
                with gr.Row():
                    save = gr.Button("Save", variant="primary", elem_id="contribute-save")
                    ask = gr.Button("Save as a question for others", elem_id="contribute-ask")
                message = gr.Markdown(elem_id="contribute-message")
            with gr.Column(scale=2):
                guideline = gr.Markdown(logic.guideline_md("", None), elem_id="contribute-guideline")
        with gr.Accordion("Answer someone else's question", open=False, elem_id="contribute-answer-section"):
            question_id = gr.State(None)
            answer_key = gr.State("")
            show = gr.Button("Show a question", elem_id="contribute-show-question")
            question = gr.Markdown(elem_id="contribute-question")
            answer = gr.Textbox(label="Your answer", lines=4, elem_id="contribute-answer")
            answer_save = gr.Button("Save answer", elem_id="contribute-answer-save")
            answer_message = gr.Markdown(elem_id="contribute-answer-message")
        gr.Markdown("### Leaderboard")
        leaderboard = gr.Markdown(elem_id="contribute-leaderboard")
        refresh = gr.Button("Refresh leaderboard", size="sm", elem_id="contribute-refresh")
        build_review_section(store, auth=auth, author_of=author_of, leaderboard=leaderboard,
                             leaderboard_md=logic.leaderboard_md)

    fields = [category, instruction, context, response, license, reason]
    private = dict(api_visibility="private")  # the page's own events: not part of the app's API

    def frame():
        reference = logic.reference_of(loader)
        return reference.frame if reference is not None else None

    def as_draft(key_, *values):
        return {"key": key_, **dict(zip(("category", "instruction", "context", "response", "license", "reason"), values))}

    restored = [key, *fields, feedback, guideline, draft]

    def restore(stored) -> list:
        """The stored draft into the form; without one, a new key and the form left as it is (never write an
        empty draft over one the browser may still hand over)."""
        if not (isinstance(stored, dict) and stored.get("key")):
            return [logic.new_draft()["key"]] + [gr.skip()] * (len(restored) - 1)
        values = [stored.get(n) or ("" if n != "license" else contrib.DEFAULT_LICENSE)
                  for n in ("category", "instruction", "context", "response", "license", "reason")]
        values[0] = values[0] if values[0] in contrib.CATEGORIES else None
        said, _ = logic.feedback_md(stored, logic.reference_of(loader))
        return [stored["key"], *values, said, logic.guideline_md(values[0] or "", frame()), gr.skip()]

    def on_load(stored):
        return restore(stored) + [logic.leaderboard_md(contrib.leaderboard(store))]

    def on_select(stored, key_, *values):
        # The page-load event can run before the browser handed over its storage; opening the tab restores
        # the draft then, unless the form has text already (never overwrite what is being typed).
        if key_ and any(str(v or "").strip() for v in values[1:4]):
            return [gr.skip()] * len(restored)
        return restore(stored) if isinstance(stored, dict) and stored.get("key") else [gr.skip()] * len(restored)

    demo.load(on_load, inputs=[draft], outputs=restored + [leaderboard], **private)
    tab.select(on_select, inputs=[draft, key, *fields], outputs=restored, show_progress="hidden", **private)

    def edited(key_, *values):
        current = as_draft(key_ or logic.new_draft()["key"], *values)
        said, _ = logic.feedback_md(current, logic.reference_of(loader))
        # The key is only ever set here when there is none: an edit answered after a save (sent with the saved
        # draft's key) must not put that key back, or the next record would be "saved" as the previous one.
        return (gr.skip() if key_ else current["key"]), current, said

    # .change, not .input: a pasted or filled text can fire input before the component holds the new value.
    # It also fires when a save resets the form or a reload restores it: the stored draft follows either way.
    # One listener for the whole form, not one a field: "always_last" then holds for the form, so the last
    # answer is always for the newest values. With a listener a field, the Instruction's change could be
    # answered after the Response's, and the form kept a stale ⛔ "response" and stored the draft without its
    # response (seen in a CI run of test_contribution_loop_browser).
    gr.on([component.change for component in fields], edited, [key, *fields], [key, draft, feedback],
          trigger_mode="always_last", show_progress="hidden", **private)
    category.change(lambda c: logic.guideline_md(c or "", frame()), [category], [guideline], show_progress="hidden",
                    **private)

    def saver(question_mode: bool):
        def save_(key_, category_, instruction_, context_, response_, license_, reason_, request: gr.Request):
            current = as_draft(key_, category_, instruction_, context_, response_, license_, reason_)
            said, saved = logic.save_draft(store, current, author_of(request), logic.reference_of(loader),
                                           question=question_mode)
            if saved is None:
                return [said, key_, *[gr.skip()] * len(fields), gr.skip(), current, gr.skip()]
            fresh = logic.new_draft(current["category"]) | {"license": current["license"]}
            return [said, fresh["key"], fresh["category"] or None, "", "", "", fresh["license"], "", "", fresh,
                    logic.leaderboard_md(contrib.leaderboard(store))]
        return save_

    outputs = [message, key, *fields, feedback, draft, leaderboard]
    save.click(saver(False), [key, *fields], outputs, concurrency_limit=None, **private)
    ask.click(saver(True), [key, *fields], outputs, concurrency_limit=None, **private)

    def show_question(request: gr.Request):
        found = contrib.open_questions(store, exclude_author=author_of(request), limit=1)
        first = found[0] if found else None
        return first.id if first else None, logic.question_md(first), logic.new_draft()["key"], ""

    show.click(show_question, None, [question_id, question, answer_key, answer_message], **private)

    def answer_(question_id_, text, key_, license_, reason_, request: gr.Request):
        said, saved = logic.save_answer_md(store, question_id_, text, key_ or logic.new_draft()["key"],
                                           author_of(request), logic.reference_of(loader), reason_, license_)
        if saved is None:
            return said, gr.skip(), gr.skip(), gr.skip()
        return said, "", logic.new_draft()["key"], logic.leaderboard_md(contrib.leaderboard(store))

    answer_save.click(answer_, [question_id, answer, answer_key, license, reason],
                      [answer_message, answer, answer_key, leaderboard], concurrency_limit=None, **private)
    refresh.click(lambda: logic.leaderboard_md(contrib.leaderboard(store)), None, [leaderboard], **private)
