"""Rating and correcting the model's answers: 👍/👎 on a reply of the Chat tab (an optional reason), and
"Write a better answer", which makes the corrected pair a record of the contributions (dolly/contributions.py,
in the curation store). The same for other front ends: `POST /v1/feedback` (space/openai_api.py) and the
Gradio API function "feedback".

What is kept with each rating: the model's id, the generation settings, the model's original reply, the
user's message and the Context that turn used (the passage shown folded under the question, not the
Context box as it is now), and who rated (the --auth user, else "anonymous").

    turn = rated_turn(history, index)                # Turn(prompt, context, original) of the reply at `index`
    suggest_category(turn.context)                    # closed_qa with a passage, open_qa without
    rating = send(store, key=..., turn=turn, rating="down", corrected="...", category="open_qa", ...)
    rating = from_body(store, body, model_id)         # a /v1/feedback or gradio_client caller's JSON

Every rating carries a key (a UUID the page makes when the rating panel opens): a double-click or a retried
request stores ONE rating (save_rating's rule).
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import gradio as gr

from dolly import contributions as contrib
from dolly.curation import ANONYMOUS
from space.chat import content_text
from space.transcript_export import is_notice, is_passage, reply_settings

# A passage means a category whose records have one; none means one without (dolly-15k's guidelines).
WITH_PASSAGE = ("closed_qa", "summarization", "information_extraction")
WITHOUT_PASSAGE = ("open_qa", "general_qa", "brainstorming", "creative_writing", "classification")
RATING_WORDS = {"up": "👍", "down": "👎"}
SETTING_NAMES = ("do_sample", "temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty", "seed")


class FeedbackError(ValueError):
    """Feedback that cannot be kept; `field` names what was wrong (the /v1 answer's `param`)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Turn:
    prompt: str  # the user's message
    context: str  # the passage that question used, "" when none
    original: str  # the model's reply as shown
    settings: dict | None = None  # the generation settings the reply was written with, when it says (Chat tab)


def suggest_category(context: str) -> str:
    return WITH_PASSAGE[0] if (context or "").strip() else WITHOUT_PASSAGE[0]


def category_choices(context: str) -> list[str]:
    """The eight categories, those that fit the turn's Context first (the suggestion at the top)."""
    fitting, others = (WITH_PASSAGE, WITHOUT_PASSAGE) if (context or "").strip() else (WITHOUT_PASSAGE, WITH_PASSAGE)
    return list(fitting) + list(others)


def _role(message) -> str | None:
    return message.get("role") if isinstance(message, dict) else getattr(message, "role", None)


def _text(message) -> str:
    return content_text(message.get("content") if isinstance(message, dict) else getattr(message, "content", None))


def rated_turn(history, index) -> Turn:
    """The turn whose reply is at `index` of the Chat tab's transcript (or whose passage or notice is: they
    share the reply's bubble): the user's message before it and the passage shown under that message.
    FeedbackError unless `index` is a reply of the model."""
    history = list(history or [])
    if isinstance(index, (list, tuple)):  # Gradio gives (row, column) for tuple-shaped chats
        index = index[0]
    if not isinstance(index, int) or not 0 <= index < len(history):
        raise FeedbackError("index", f"no message at {index!r} in this chat.")
    # Gradio draws a run of assistant messages (the passage, notices, the reply) as one bubble and gives the
    # index of its first: the reply is the run's first message that is neither passage nor notice.
    while 0 <= index < len(history) and _role(history[index]) == "assistant" and (
            is_notice(history[index]) or is_passage(history[index])):
        index += 1
    reply = history[index] if index < len(history) else None
    if _role(reply) != "assistant":
        raise FeedbackError("index", "only the model's replies can be rated (not your messages, notices or passages).")
    context = ""
    for message in reversed(history[:index]):
        if _role(message) == "user":
            return Turn(_text(message), context, _text(reply), reply_settings(reply))
        if is_passage(message):
            context = _text(message)
    raise FeedbackError("index", "this reply answers no message of yours.")


def rating_of(liked) -> str:
    """'up' or 'down' from a LikeData.liked (True/False) or the API's word."""
    if liked is True or liked in ("up", 1, "👍", "like"):
        return "up"
    if liked is False or liked in ("down", -1, "👎", "dislike"):
        return "down"
    raise FeedbackError("rating", f"'up' or 'down', got {liked!r:.20}.")


def send(store, *, key: str, turn: Turn, rating, model_id: str, settings: dict | None = None, reason: str = "",
         corrected: str = "", category: str = "", user: str = "", reply_id: str = "") -> contrib.Rating:
    """Keep one rating (and, with `corrected`, the record it makes). FeedbackError names a bad field; the
    same `key` again returns the first save."""
    rating = rating_of(rating)
    corrected = corrected or ""
    if corrected.strip() and corrected.strip() == turn.original.strip():
        raise FeedbackError("corrected", "the better answer is the model's reply unchanged: edit it, or send "
                                         "the rating without it.")
    if corrected.strip() and not category:
        raise FeedbackError("category", f"choose the category of the corrected record (suggested: "
                                        f"{suggest_category(turn.context)}).")
    try:
        return contrib.save_rating(store, key=key, reply_id=reply_id or key, rating=rating, model_id=model_id or "",
                                   prompt=turn.prompt, original=turn.original, reason=reason or "",
                                   settings=settings, context=turn.context, corrected=corrected, category=category,
                                   author=user or ANONYMOUS)
    except contrib.Invalid as error:
        first = error.problems[0]
        field = {"response": "corrected", "instruction": "prompt"}.get(first.field, first.field)
        raise FeedbackError(field, " ".join(p.message if p.field == first.field else str(p)
                                            for p in error.problems)) from None
    except contrib.ContributionError as error:
        field, _, message = str(error).partition(": ")
        raise FeedbackError(field if message else "feedback", message or str(error)) from None


# -- other front ends: /v1/feedback and the "feedback" API function -------------------------------------
FIELDS = ("messages", "prompt", "context", "reply", "rating", "reason", "corrected", "category", "model", "settings",
          "key", "user")


def _string(body: dict, name: str, required: bool = False) -> str:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise FeedbackError(name, "is required.")
        return ""
    if not isinstance(value, str):
        raise FeedbackError(name, f"must be a string, got {type(value).__name__}.")
    return value


def turn_of_body(body: dict) -> Turn:
    """The rated turn from a caller's JSON: `messages` (OpenAI chat messages; system messages are the
    Context, the last user message is the prompt) or `prompt` (+ `context`), and `reply`."""
    reply = _string(body, "reply", required=True)
    if body.get("messages") is not None:
        messages = body["messages"]
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise FeedbackError("messages", "a non-empty list of {role, content} objects, as sent to /v1/chat/completions.")
        users = [m for m in messages if m.get("role") == "user"]
        if not users:
            raise FeedbackError("messages", "holds no user message: the one the reply answers is the prompt.")
        context = "\n\n".join(content_text(m.get("content")).strip() for m in messages
                              if m.get("role") in ("system", "developer") and content_text(m.get("content")).strip())
        return Turn(content_text(users[-1].get("content")), context, reply)
    return Turn(_string(body, "prompt", required=True), _string(body, "context"), reply)


def from_body(store, body, model_id: str, user: str = "") -> contrib.Rating:
    """Keep the rating a caller sent as JSON (see FIELDS); FeedbackError names the bad field."""
    if not isinstance(body, dict):
        raise FeedbackError("body", "a JSON object with reply, rating and messages or prompt.")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise FeedbackError(unknown[0], f"is not a feedback field; the fields are {', '.join(FIELDS)}.")
    turn = turn_of_body(body)
    if "rating" not in body:
        raise FeedbackError("rating", "is required: 'up' or 'down'.")
    settings = body.get("settings") or {}
    if not isinstance(settings, dict):
        raise FeedbackError("settings", "the generation settings as an object (temperature, top_p, max_tokens, ...).")
    model = _string(body, "model") or model_id
    key = _string(body, "key") or str(uuid.uuid4())
    return send(store, key=key, turn=turn, rating=body["rating"], model_id=model, settings=settings,
                reason=_string(body, "reason"), corrected=_string(body, "corrected"),
                category=_string(body, "category"), user=user or _string(body, "user"))  # a login wins over a claimed name


def answer(rating: contrib.Rating) -> dict:
    """What a caller gets back: the rating's id and key, and the record a correction became."""
    return {"object": "feedback", "id": rating.id, "key": rating.key, "rating": "up" if rating.rating > 0 else "down",
            "contribution_id": rating.contribution_id, "created_at": rating.created_at}


# -- the Chat tab's panel ----------------------------------------------------------------------------
def _said(text: str) -> str:
    return f"<small>{text}</small>"


def build_feedback(tab, store) -> None:
    """Under the chat: the rating panel a 👍/👎 opens (reason, "Write a better answer"), and the API function
    "feedback". `tab`: space.tab.ChatTab."""
    private = dict(api_visibility="private")
    key, rated = gr.State(None), gr.State(None)  # the panel's rating key; (index, rating, Turn as dict)
    with gr.Column(visible=False, variant="panel", elem_id="chat-feedback") as panel:
        heading = gr.Markdown(elem_id="chat-feedback-heading")
        reason = gr.Textbox(label="Why? (optional)", max_lines=3, elem_id="chat-feedback-reason")
        with gr.Row():
            send_button = gr.Button("Send rating", size="sm", variant="primary", elem_id="chat-feedback-send")
            better = gr.Button("Write a better answer", size="sm", elem_id="chat-feedback-better")
            close = gr.Button("Close", size="sm", elem_id="chat-feedback-close")
        with gr.Column(visible=False, elem_id="chat-feedback-editor") as editor:
            corrected = gr.Textbox(label="A better answer (becomes a record of the contributions)", lines=4,
                                   max_lines=16, elem_id="chat-feedback-corrected")
            category = gr.Dropdown(list(contrib.CATEGORIES), label="Category", elem_id="chat-feedback-category")
            save_better = gr.Button("Save better answer", size="sm", variant="primary",
                                    elem_id="chat-feedback-save")
    said = gr.Markdown("", elem_id="chat-feedback-said")

    def opened(history, evt: gr.LikeData):
        if evt.liked is None or evt.liked == "":  # the 👍/👎 clicked again: taken back, nothing to send
            return (None, None, gr.Column(visible=False)) + (gr.skip(),) * 5 + ("",)
        try:
            turn = rated_turn(history, evt.index)
            rating = rating_of(evt.liked)
        except FeedbackError as error:
            return gr.skip(), gr.skip(), gr.Column(visible=False), gr.skip(), gr.skip(), gr.skip(), gr.skip(), \
                gr.skip(), _said(str(error))
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return (str(uuid.uuid4()), {"index": index, "rating": rating, **turn.__dict__}, gr.Column(visible=True),
                f"**{RATING_WORDS[rating]} on this reply.** Say why if you like, and send; or write a better answer.",
                "", gr.Column(visible=False), turn.original,
                gr.Dropdown(choices=category_choices(turn.context), value=suggest_category(turn.context)), "")

    # The panel opens under the chat: brought into view (above the sticky message box), else a click seems to do nothing.
    into_view = """() => requestAnimationFrame(() =>
        document.getElementById('chat-feedback')?.scrollIntoView({block: 'center'}))"""
    tab.chatbot.like(opened, [tab.chatbot],
                     [key, rated, panel, heading, reason, editor, corrected, category, said], queue=False,
                     **private).then(None, js=into_view, **private)
    better.click(lambda: gr.Column(visible=True), None, editor, queue=False, **private).then(
        None, js=into_view, **private)
    close.click(lambda: (gr.Column(visible=False), None), None, [panel, key], queue=False, **private)

    def sender(with_correction: bool):
        # Named, not *settings: Gradio passes gr.Request only to a parameter it can see in the signature.
        def submit(key_, rated_, reason_, corrected_, category_, current, do_sample, temperature, top_p, top_k,
                   max_new_tokens, repetition_penalty, seed, request: gr.Request):
            settings = (do_sample, temperature, top_p, top_k, max_new_tokens, repetition_penalty, seed)
            if not key_ or not rated_:
                return gr.skip(), gr.skip(), _said("Rate a reply with 👍 or 👎 first.")
            turn = Turn(rated_["prompt"], rated_["context"], rated_["original"])
            try:
                # The settings the reply was written with; the panel's now only for a reply that does not say.
                saved = send(store, key=key_, turn=turn, rating=rated_["rating"], model_id=tab.engine.model_id,
                             settings=rated_.get("settings") or dict(zip(SETTING_NAMES, settings)), reason=reason_,
                             corrected=corrected_ if with_correction else "", category=category_,
                             user=getattr(request, "username", None) or "",
                             reply_id=f"{current or 'chat'}:{rated_['index']}")
            except FeedbackError as error:
                return gr.skip(), gr.skip(), _said(f"Not saved: {error}")
            what = (f"Thanks: your better answer is record {saved.contribution_id} of the contributions."
                    if saved.contribution_id else "Thanks: your rating was saved.")
            return gr.Column(visible=False), None, _said(what)
        return submit

    inputs = [key, rated, reason, corrected, category, tab.current] + tab.controls
    send_button.click(sender(False), inputs, [panel, key, said], concurrency_limit=None, **private)
    save_better.click(sender(True), inputs, [panel, key, said], concurrency_limit=None, **private)

    # For gradio_client callers: the same as POST /v1/feedback, the JSON body as a string.
    def feedback(body: str, request: gr.Request) -> str:
        """Rate a reply: `body` is the JSON of POST /v1/feedback (reply, rating, messages or prompt, ...).
        Returns the saved rating as JSON; raises gr.Error naming the bad field."""
        try:
            parsed = json.loads(body) if isinstance(body, str) else body
        except ValueError as error:
            raise gr.Error(f"body: not JSON ({error}).") from None
        try:
            saved = from_body(store, parsed, tab.engine.model_id, getattr(request, "username", None) or "")
        except FeedbackError as error:
            raise gr.Error(str(error)) from None
        return json.dumps(answer(saved))

    api_body, api_answer = gr.Textbox(visible=False), gr.Textbox(visible=False)
    gr.Button(visible=False).click(feedback, [api_body], [api_answer], api_name="feedback", concurrency_limit=None)
