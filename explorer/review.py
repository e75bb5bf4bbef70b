"""Reviewing contributions (issue 17 §2/§3): accept a record, or reject it with a reason, so the leaderboard's
"accepted" counts are real. Plain functions for the words and the decision; `build_review_section` draws
the Contribute tab's section and wires it. Who may review is dolly.contributions.review's rule (one place):
anyone the app lets in, never a named writer on their own record."""
from __future__ import annotations

import gradio as gr

from dolly import contributions as contrib
from dolly.curation import ANONYMOUS
from explorer.contribute import _quote


def who_may_review_md(auth: bool) -> str:
    return ("Any signed-in user may review; you cannot review your own records." if auth else
            "**Anyone with this page may review** (the app runs without `--auth`; reviews are saved as anonymous). "
            "Run with `--auth` to keep reviewing to signed-in people.")


def next_for(store, reviewer: str):
    """The oldest record nobody reviewed yet that `reviewer` may review (not their own, when named), or None."""
    for found in contrib.to_review(store, limit=200):
        if reviewer == ANONYMOUS or found.author != reviewer:
            return found
    return None


def item_md(found) -> str:
    if found is None:
        return "Nothing to review right now: every record with a response has a decision."
    context = f"\n\n*Context:* {_quote(found.context, 2000)}" if found.context.strip() else ""
    return (f"**Contribution #{found.id}** ({found.category}, by {_quote(found.author, 60)}, {found.source})\n\n"
            f"*Instruction:* {_quote(found.instruction, 2000)}{context}\n\n*Response:* {_quote(found.response, 4000)}")


def decide(store, contribution_id, decision: str, reason: str, reviewer: str) -> tuple[str, bool]:
    """(what happened in words, whether it was saved). A rejection needs a reason (it is shown to the writer's
    reviewers later and kept in the review log)."""
    if contribution_id is None:
        return "Press *Show the next record to review* first.", False
    reason = str(reason or "").strip()
    if decision == "rejected" and not reason:
        return "Reason: say why the record is rejected (e.g. “copied from a website”), then press Reject.", False
    try:
        done = contrib.review(store, int(contribution_id), decision, reviewer=reviewer, reason=reason)
    except contrib.ContributionError as err:
        return str(err), False
    return f"Contribution #{done.id} {decision}" + (f" ({_quote(reason, 200)})." if reason else "."), True


def build_review_section(store, *, auth: bool, author_of, leaderboard, leaderboard_md):
    """The "Review contributions" accordion (inside the Contribute tab). `author_of(request)` names the reviewer;
    `leaderboard` is the tab's leaderboard Markdown, redrawn after each decision with `leaderboard_md`."""
    with gr.Accordion("Review contributions", open=False, elem_id="contribute-review-section"):
        gr.Markdown(who_may_review_md(auth), elem_id="contribute-review-who")
        current = gr.State(None)
        show = gr.Button("Show the next record to review", elem_id="contribute-review-next")
        item = gr.Markdown(elem_id="contribute-review-item")
        reason = gr.Textbox(label="Reason (needed to reject)", max_lines=2, elem_id="contribute-review-reason")
        with gr.Row():
            accept = gr.Button("Accept", variant="primary", elem_id="contribute-review-accept")
            reject = gr.Button("Reject", elem_id="contribute-review-reject")
        message = gr.Markdown(elem_id="contribute-review-message")
    private = dict(api_visibility="private")

    def show_next(request: gr.Request):
        found = next_for(store, author_of(request))
        return found.id if found else None, item_md(found), ""

    show.click(show_next, None, [current, item, reason], **private)

    def decision(kind):
        def go(contribution_id, why, request: gr.Request):
            said, saved = decide(store, contribution_id, kind, why, author_of(request))
            if not saved:
                return said, gr.skip(), gr.skip(), gr.skip(), gr.skip()
            found = next_for(store, author_of(request))
            return said, found.id if found else None, item_md(found), "", leaderboard_md(contrib.leaderboard(store))
        return go

    for button, kind in ((accept, "accepted"), (reject, "rejected")):
        button.click(decision(kind), [current, reason], [message, current, item, reason, leaderboard], **private)
