"""The Chat tab: a conversation with the model behind an engine (space/engine.py), a Context box
beside the message, the generation settings, a status line while the model loads, and a panel for
the dataset's reference response when a record comes over from the Explorer ("Try in chat").

Built from a gr.Chatbot and plain events rather than gr.ChatInterface, because the tab must stay
usable after every error: a reply that cannot be written becomes a notice in the conversation
(and the user's text goes back into the box), never a raised error that leaves the input locked.
The `/chat` API is its own event over the same function of the engine; it does raise its errors,
since an API caller has no conversation to read them in.

Call `build_chat_tab(engine)` inside a `gr.Tab`; wire the Explorer's button with
`ChatTab.wire_try_in_chat`.
"""
import logging
import time
from dataclasses import dataclass
from functools import partial

import gradio as gr
from gradio.context import Context

from dolly.source import hub_id
from space import conversations as saved_chats
from space.chat_meters import prompt_meter, reply_stats
from space.chat import DEFAULTS, EMPTY_REPLY, MAX_NEW_TOKENS_CAP, ChatInputError, active_generations, content_text
from space.model import ModelError
from space.transcript_export import NOTICE, file_name, is_passage, passage_message, reply_message, to_json, to_markdown

log = logging.getLogger(__name__)

DATASET_CARD = "https://huggingface.co/datasets/databricks/databricks-dolly-15k"

# One per databricks-dolly-15k category, written for this app: (message, context).
EXAMPLES = [
    ("What is the difference between a llama and an alpaca?", ""),  # open_qa
    ("Why do people enjoy hiking in the mountains?", ""),  # general_qa
    ("Classify each of these as a fruit or a vegetable: carrot, apple, spinach, mango, leek.", ""),  # classification
    ("When was the bridge opened, and how long is it?",  # closed_qa
     "The Millbrook Bridge is a stone arch bridge over the River Alder. Construction began in 1887, and the "
     "bridge opened to traffic in 1891. It is 214 metres long and carries a single road and a footpath."),
    ("Give me five ideas for a rainy Sunday afternoon with children.", ""),  # brainstorming
    ("List the instruments mentioned in the passage, separated by commas.",  # information_extraction
     "The band started as a trio: Ana played the cello, Tom the drums, and Priya the accordion. In 2019 they "
     "added a trumpet player, and on their second album you can also hear a harmonium."),
    ("Summarize this in two sentences.",  # summarization
     "Community gardens turn empty city lots into shared plots where neighbours grow vegetables and flowers. "
     "Besides food, they offer shade, a place to meet, and lessons for schoolchildren about where food comes "
     "from. Cities that support them often see less litter and more people outdoors in the evenings."),
    ("Write a short poem about a lighthouse keeper's last night on duty.", ""),  # creative_writing
]

# One font, no bold or italics: the hint is read in the chat's own text style.
HINT = ("Ask Dolly something: an instruction or a question. For a question about a passage, paste the "
        "passage into the Context box. Or start with one of these examples:")

# Notices are assistant messages marked in their metadata: shown in the conversation as a quoted line,
# never part of a prompt. (Marked by `id`, not `title`: a title would fold the text into a collapsible box.)
COULD_NOT_ANSWER = "⚠️ Could not answer."
STOPPED = "Stopped."
NOTE = "Note:"
CUT_BY_RELOAD = "The page was closed or reloaded while this reply was being written, so it ends here."

# Where the conversations live in the browser (localStorage keys). Gradio encrypts the stored value with
# `secret`, which travels in the page's config: it hides nothing from the user whose browser it is, and a
# fixed one keeps the chats readable after the server restarts (a random one would lose them every time).
STORE_KEY, LIVE_KEY, STORE_SECRET = "open-dolly-chats", "open-dolly-chat-live", "open-dolly-chats-v1"

PLACEHOLDERS = {
    "loading": "The model is still loading (see above); you can type already.",
    "ready": "Ask Dolly something…",
    "failed": "No model to answer: it could not be loaded (see above). Sending explains why.",
}

SCROLL_TO_CONVERSATION = """() => { requestAnimationFrame(() =>
    document.getElementById('chat-conversation')?.scrollIntoView({block: 'start'})); }"""
# Opening the generation settings brings the whole panel into view (it opens below the message box).
SCROLL_TO_SETTINGS = """() => { requestAnimationFrame(() =>
    document.getElementById('chat-settings')?.scrollIntoView({block: 'nearest', behavior: 'instant'})); }"""
# Said only where there is a keyboard: a phone's Enter key makes a new line in the box, and it has no Shift+Enter.
KEYS_HINT = '<small id="chat-keys">Enter sends · Shift+Enter starts a new line</small>'

# Gradio draws the chat's examples as role="list" holding buttons: assistive technology (and axe-core)
# read that as a broken list. They are a group of buttons; drop the role wherever Gradio draws them.
# The folded passage under a question: Gradio draws its arrow as an unnamed button inside the title, which
# is itself the button (role=button) that folds and unfolds it; the arrow is decoration, so it leaves the
# accessibility tree and cannot take focus (disabled; CSS passes its clicks to the title).
# A reply waiting for a free --concurrency slot: Gradio's status tracker knows its place in the queue and
# the estimate ("queue: 2/3 | 1.0/20.0s") but draws it only where progress is shown. The reply's event
# shows it on the small print under the chat (#chat-stats), where this script reads it and says it in
# words in a live region of its own (#chat-queue), hiding Gradio's terse line.
QUEUE_WORDS = """
function dollyQueueLine() {
  const tracker = document.querySelector('#chat-stats [data-testid=status-tracker]');
  const text = tracker && !tracker.classList.contains('hide') ? tracker.textContent : '';
  const queued = /queue:\\s*(\\d+)\\s*\\/\\s*(\\d*)/.exec(text);
  let line = document.getElementById('chat-queue');
  if (!queued) { if (line) line.remove(); return; }
  const ahead = Number(queued[1]) - 1;
  const times = /([\\d.]+)\\s*\\/\\s*([\\d.]+)\\s*s/.exec(text);
  const waited = /\\|\\s*([\\d.]+)\\s*s/.exec(text);  // no estimate until a reply has been timed
  const when = times ? `, about ${Math.max(1, Math.round(Number(times[2]) - Number(times[1])))} s` :
               waited ? ` (waiting ${Math.round(Number(waited[1]))} s)` : '';
  const words = (ahead > 0 ? `${ahead} repl${ahead > 1 ? 'ies' : 'y'} ahead of yours` :
                 'Yours is next: every reply slot is busy') + when + '.';
  if (!line) {
    line = document.createElement('p');
    line.id = 'chat-queue';
    line.setAttribute('role', 'status');
    document.getElementById('chat-stats')?.before(line);
  }
  if (line.textContent !== words) line.textContent = words;
}
"""

HEAD = """<script>""" + QUEUE_WORDS + """
new MutationObserver(() => {
  dollyQueueLine();
  document.querySelectorAll('#chat-chatbot .examples[role=list]').forEach((e) => e.removeAttribute('role'));
  document.querySelectorAll('#chat-chatbot .thought-group .title button:not([aria-hidden])').forEach((e) => {
    e.setAttribute('aria-hidden', 'true'); e.disabled = true; });
}).observe(document.documentElement, {childList: true, subtree: true, characterData: true});
</script>"""

CSS = """
/* The Chat tab: the reference response reads as a card beside (or, on a phone, right under) the answer. */
#chat-reference-box { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: .75rem 1rem;
                      background: var(--background-fill-secondary); }
#chat-intro p, #chat-status p { margin: .15rem 0; }
/* ChatGPT's layout: the status and the folded intro share one line; the conversation takes the window's
   height; the message box keeps to the window's bottom edge while the page scrolls (sticky), so it is on the
   first screen on a phone too, and after "Try in chat". */
#chat-top { align-items: center; flex-wrap: nowrap; gap: .5rem; }
#chat-top > #chat-about { flex: none; width: auto; min-width: 0; }
#chat-about > button { padding: .25rem .5rem; }
#chat-about[open], #chat-about:has(> div:not([style*="display: none"])) { max-width: 40rem; }
/* Gradio's container hides its overflow, which makes it the box a sticky element sticks in (one that never
   scrolls); clip cuts the same overflow without being a scroll container. */
.gradio-container { overflow: clip !important; }
#chat-dock { position: sticky; bottom: 0; z-index: 20; background: var(--body-background-fill); gap: .25rem;
             padding: .25rem 0; }
#chat-input { flex-wrap: nowrap; align-items: flex-end; }
#chat-input > .form { min-width: 0; }
#chat-keys { color: #4b5563; }  /* 7.6:1; Gradio's subdued grey is 1.9:1 */
.dark #chat-keys { color: #d1d5db; }
@media (hover: none), (pointer: coarse) { #chat-keys { display: none; } }
/* The generation settings: a panel of labelled rows (Open WebUI's side panel), one control each, so no
   label runs into its number box and "1024" fits. */
#chat-settings-panel { max-width: 44rem; gap: .25rem; }
#chat-settings-panel input[type=number] { min-width: 7ch; }
@media (max-width: 640px) { #chat-top { flex-wrap: wrap; } }
#chat-chatbot .thought-group .title button { pointer-events: none; }
/* The queue in words (#chat-queue, HEAD's script) replaces Gradio's own line and timer on the small print. */
#chat-stats [data-testid=status-tracker] { visibility: hidden; }
#chat-queue { margin: .25rem 0; font-weight: 600; }
/* The list of chats: one per line, newest first, scrolling inside its panel; New chat stays beside it. */
#chat-list { max-height: 16rem; overflow-y: auto; }
#chat-list .wrap { flex-direction: column; align-items: stretch; }
#chat-bar { flex-wrap: nowrap; align-items: flex-start; }
#chat-bar > #chat-new { flex: none; }
#chat-status small { color: var(--body-text-color); }
/* Gradio's red stop button has white text at 3.8:1; WCAG AA asks 4.5:1. */
#chat-stop { background: #b91c1c; border-color: #b91c1c; color: #fff; }
/* The sliders' min and max labels: Gradio draws them at 1.9:1. */
#chat-settings .min_value, #chat-settings .max_value { color: #4b5563; }
.dark #chat-settings .min_value, .dark #chat-settings .max_value { color: #d1d5db; }
/* On a phone, three examples fit under the hint without scrolling; the rest are for wider screens. */
@media (max-width: 640px) { #chat-chatbot button.example:nth-of-type(n+4) { display: none; } }
"""


def notice(title: str, text: str) -> dict:
    return {"role": "assistant", "content": f"> **{title}** {text}", "metadata": {"id": NOTICE + title}}


def notice_title(message) -> str | None:
    """The title of a notice (COULD_NOT_ANSWER, STOPPED, NOTE), or None for a message of the conversation."""
    metadata = message.get("metadata") if isinstance(message, dict) else getattr(message, "metadata", None)
    marker = str((metadata or {}).get("id") or "")
    return marker[len(NOTICE):] if marker.startswith(NOTICE) else None


def is_notice(message) -> bool:
    return notice_title(message) is not None


def conversation(history) -> list:
    """The messages that are the conversation itself: the user's and the model's, without notices or
    the passages shown under questions."""
    return [message for message in history or [] if not is_notice(message) and not is_passage(message)]


def _role(message) -> str | None:
    return message.get("role") if isinstance(message, dict) else getattr(message, "role", None)


def _text(message) -> str:
    from space.chat import content_text

    content = message.get("content") if isinstance(message, dict) else getattr(message, "content", None)
    return content_text(content)


def last_user_turn(history) -> tuple[list, str | None]:
    """(the history before the last user message, that message's text), or (history, None)."""
    history = list(history or [])
    for i in range(len(history) - 1, -1, -1):
        if _role(history[i]) == "user":
            return history[:i], _text(history[i])
    return history, None


def edited_history(history, index, text) -> tuple[list, str | None]:
    """Edit & resend: (the history up to the edited user message, with `text` in its place, that text),
    or (history, None) when `index` is no user message or the text is empty (nothing to send)."""
    history = list(history or [])
    text = content_text(text).strip()
    if not isinstance(index, int) or not 0 <= index < len(history) or _role(history[index]) != "user" or not text:
        return history, None
    return history[:index] + [{"role": "user", "content": text}], text


def mark_stopped(history) -> list:
    """The history with a 'Stopped' notice after the reply that was cut short (once)."""
    history = list(history or [])
    if not history or notice_title(history[-1]) == STOPPED:
        return history
    return history + [notice(STOPPED, "You stopped this reply; it is shorter than the model would have written.")]


def intro(model_id: str | None) -> str:
    """The one line on what this is: Dolly 2.0, which model (None: not known yet), and where the cards are."""
    repo = hub_id(model_id) if model_id else None
    model = f"[{model_id}](https://huggingface.co/{repo})" if repo else f"`{model_id}`"
    chat_with = f"Chat with **{model}**, a" if model_id else "Chat with a"
    return (f"{chat_with} [Dolly 2.0](https://huggingface.co/databricks/dolly-v2-12b) model: "
            f"EleutherAI's Pythia instruction-tuned on the human-written [databricks-dolly-15k]({DATASET_CARD}) "
            "dataset. It answers one instruction at a time; earlier turns are passed along as context.")


def max_new_tokens_limit(window: int | None) -> int:
    """What the Max new tokens slider may reach: the server's cap, and at most half the model's window
    (space.chat.fit_to_window), so that a value the slider allows is never lowered with a notice."""
    return min(MAX_NEW_TOKENS_CAP, max(window // 2, 1)) if window else MAX_NEW_TOKENS_CAP


def status_line(engine) -> tuple[str, gr.Timer]:
    running = active_generations()
    line = engine.status() + (f" Generating {running} repl{'ies' if running > 1 else 'y'} now." if running else "")
    # Keep polling while a reply is being generated too, so "Generating…" never outlives its reply.
    return line, gr.Timer(active=engine.may_change or running > 0)


def try_in_chat(record):
    """(message, context, reference) from an Explorer record (a dict with instruction, context,
    response, category), or a clear error when no record is open."""
    if not record:
        raise gr.Error("Open a record in the Explorer first, then press Try in chat.")
    category = str(record.get("category") or "").replace("_", " ")
    response = str(record.get("response") or "").strip() or "_(this record has no response)_"
    reference = (f"### Reference response\n*Written by a person for databricks-dolly-15k"
                 f"{f' ({category})' if category else ''}. Compare it with the model's answer.*\n\n{response}")
    return str(record.get("instruction") or ""), str(record.get("context") or ""), reference


def setting(component):
    """A settings control whose value reaches space/chat.py unchecked, so that a bad value from an API
    caller gets the chat's own error naming the setting and its range (and max new tokens is capped)
    rather than Gradio's anonymous "Value -1 is less than minimum value 0", and a seed sent as "7"
    is simply 7. (Not a subclass: Gradio writes a .pyi stub beside the source of every component class.)"""
    component.preprocess = lambda payload: payload
    return component


SETTING_NAMES = ("do_sample", "temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty", "seed")


def make_chat_fn(engine):
    """The function behind the /chat API; its parameters are the API's, in order."""

    def chat(message: str, context: str = "", do_sample: bool = DEFAULTS["do_sample"],
             temperature: float = DEFAULTS["temperature"], top_p: float = DEFAULTS["top_p"],
             top_k: int = DEFAULTS["top_k"], max_new_tokens: int = DEFAULTS["max_new_tokens"],
             repetition_penalty: float = DEFAULTS["repetition_penalty"], seed: int = DEFAULTS["seed"]):
        """Ask the Dolly model. `context` is an optional passage (Dolly's `Input:`) for closed QA,
        summarization or extraction. Streams the reply; the last value is the whole reply."""
        settings = dict(zip(SETTING_NAMES, (do_sample, temperature, top_p, top_k, max_new_tokens,
                                            repetition_penalty, seed)))
        try:
            if not isinstance(message, str):
                raise ChatInputError(f"message must be text (a string), got {message!r}.")
            if context is not None and not isinstance(context, str):
                raise ChatInputError(f"context must be text (a string) or empty, got {context!r}.")
            generation = engine.chat(message, context or "", (), **settings)
        except (ModelError, ChatInputError) as error:
            raise gr.Error(str(error), title="Cannot answer", print_exception=False) from None
        for text in generation.notices:
            gr.Warning(text)
        try:
            yield from generation
        except (ModelError, ChatInputError) as error:
            raise gr.Error(str(error), title="Cannot answer", print_exception=False) from None
        finally:
            generation.cancel()

    return chat


def make_respond_fn(engine):
    """The chat box's reply: streams the history with the reply growing in it. Never raises: what
    goes wrong becomes a notice in the conversation, and when no reply was written at all the user's
    message goes back into the box (outputs: chatbot, message box, the browser's live copy, the small
    print under the chat with the reply's tokens and speed, once it is written).

    The passage the question used is shown folded under it, so that a later change of the Context box
    cannot make the transcript lie. As the reply grows it is written to the browser with each new piece
    (only this conversation: a few kB, beside the chat's own update), so a reload mid-reply brings it
    back as far as it got (space/conversations.py, merge_live)."""

    def respond(pending, history, context, conversation_id, reference, *settings):
        history = list(history or [])
        if not pending:
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        before = history[:-1]  # the last message is `pending`, already shown
        question = history[-1:] + ([passage_message(context)] if (context or "").strip() else [])
        used = dict(zip(SETTING_NAMES, settings))  # what this reply is written with (and its rating keeps)

        def live(shown_now):
            if conversation_id is None:
                return gr.skip()
            return saved_chats.live_record(conversation_id, shown_now, context, used, reference)

        def failed(reason, text=""):
            if text:  # part of a reply was written: keep it, say why it ends there
                return (before + question + [reply_message(text, used), notice(COULD_NOT_ANSWER, reason)],
                        gr.skip(), gr.skip(), gr.skip())
            return before + [notice(COULD_NOT_ANSWER, reason)], pending, gr.skip(), gr.skip()

        try:
            generation = engine.chat(pending, context or "", conversation(before), **used)
        except (ModelError, ChatInputError) as error:
            yield failed(str(error))
            return
        except Exception as error:  # a bug must still leave the chat usable, and be in the log
            log.exception("chat request failed")
            yield failed(f"Something went wrong: {type(error).__name__}: {error}")
            return
        shown = before + question + [notice(NOTE, text) for text in generation.notices]
        text, started, first, last = "", time.monotonic(), None, None
        try:
            yield shown, gr.skip(), live(shown), ""
            for text in generation:
                last = time.monotonic()
                first = first or last
                growing = shown + [{"role": "assistant", "content": text}]
                yield growing, gr.skip(), live(growing), gr.skip()
        except (ModelError, ChatInputError) as error:
            yield failed(str(error), text)
            return
        except Exception as error:
            log.exception("generation failed")
            yield failed(f"Generation failed: {type(error).__name__}: {error}", text)
            return
        finally:
            generation.cancel()  # Stop or a closed page: generation ends at its next token
        stats = (f"<small>This reply: {reply_stats(generation.completion_tokens, last - first, first - started)}</small>"
                 if first is not None else "")
        if not text:
            yield shown + [{"role": "assistant", "content": EMPTY_REPLY}], gr.skip(), gr.skip(), stats
        else:
            # Marked once written, not on each piece: a message with metadata is drawn anew at every update
            # (a 1,024-token reply streamed so slowly that the page fell seconds behind the server).
            written = shown + [reply_message(text, used)]
            yield written, gr.skip(), live(written), stats

    return respond


@dataclass
class ChatTab:
    engine: object
    chatbot: gr.Chatbot
    message: gr.Textbox
    context: gr.Textbox
    controls: list
    send: gr.Button
    stop: gr.Button
    restore: gr.Button
    reference_box: gr.Column
    reference: gr.Markdown
    status: gr.Markdown
    pending: gr.State  # the message being answered
    stopped: gr.State  # True once Stop was pressed for the reply being written
    busy: gr.State  # True from a send until its reply ended, however it ended
    saved: gr.State  # the id of the conversation Try in chat left (the Restore button opens it), or None
    chats: gr.BrowserState  # every conversation, in the browser (space/conversations.py)
    live: gr.BrowserState  # the conversation whose reply is being written, as it grows
    current: gr.State  # the id of the conversation shown, None until its first message is saved
    chat_list: gr.Radio
    chats_box: gr.Accordion
    title: gr.Textbox
    stats: gr.Markdown  # the last reply's tokens and speed, in small print under the chat
    meter: gr.Markdown  # the next prompt's share of the window, under the message box
    concurrency: int = 2

    @property
    def shown(self) -> list:
        """What showing a conversation sets (see _shown_values)."""
        return [self.chatbot, self.context, self.reference, self.reference_box] + self.controls

    @property
    def listed(self) -> list:
        """What shows the list (see _list_values)."""
        return [self.chat_list, self.chats_box, self.title]

    @property
    def save_args(self) -> tuple[list, list]:
        """(inputs, outputs) of _save: the conversation shown, written into the browser's list."""
        return ([self.chats, self.current, self.chatbot, self.context, self.reference] + self.controls,
                [self.chats, self.current] + self.listed)

    def save(self, dependency):
        """After `dependency`, however it ended: save the conversation shown (and measure the next prompt)."""
        return self.measure(dependency.then(_save, *self.save_args, queue=False, show_progress="hidden",
                                            api_visibility="private"))

    def measure(self, dependency):
        """After `dependency`: the meter under the message box, for the conversation as it is now."""
        return dependency.then(partial(_meter, self.engine), [self.message, self.context, self.chatbot, self.controls[4]],
                               self.meter, queue=False, show_progress="hidden", api_visibility="private")

    def answer(self, dependency):
        """After `dependency` (which put the user's message in the chat and in `pending`), save the
        conversation (a new one gets its id and its place in the list), write the reply, then give the
        Send button back and save again. The last steps run however the reply ended."""
        private = dict(api_visibility="private")
        saved = dependency.success(_save, *self.save_args, queue=False, show_progress="hidden", **private)
        respond = saved.success(
            make_respond_fn(self.engine),
            [self.pending, self.chatbot, self.context, self.current, self.reference] + self.controls,
            [self.chatbot, self.message, self.live, self.stats], concurrency_limit=self.concurrency, concurrency_id="dolly-chat",
            show_progress="minimal", show_progress_on=self.stats, **private)  # the queue: see QUEUE_WORDS
        finished = respond.then(self._finish, [self.chatbot, self.stopped],
                                [self.chatbot, self.stopped, self.busy, self.send, self.stop, self.live],
                                queue=False, show_progress="hidden", **private)
        self.save(finished)
        self.stop.click(None, cancels=[respond], queue=False, **private)
        return respond

    @staticmethod
    def _finish(history, stopped):
        return (mark_stopped(history) if stopped else gr.skip(), False, False,
                gr.Button(visible=True), gr.Button(visible=False), saved_chats.NO_LIVE)

    def wire_try_in_chat(self, button: gr.Button, selected: gr.State, tabs: gr.Tabs | None = None):
        """Try in chat: a new conversation (the earlier one stays in the list, and Restore opens it
        again) with the record's instruction sent at once, its context in the Context box, and the
        human reference response beside the answer (under it on a phone), scrolled into view."""
        private = dict(api_visibility="private")

        def start(record, history, current, busy):
            not_busy(busy)
            message, record_context, reference = try_in_chat(record)
            earlier = current if history else None
            return ([{"role": "user", "content": message}], message, record_context, reference,
                    gr.Column(visible=True), earlier if earlier else gr.skip(),
                    gr.Button(visible=True) if earlier else gr.skip(),
                    False, True, gr.Button(visible=False), gr.Button(visible=True), "", None)

        event = button.click(
            start, [selected, self.chatbot, self.current, self.busy],
            [self.chatbot, self.pending, self.context, self.reference, self.reference_box, self.saved, self.restore,
             self.stopped, self.busy, self.send, self.stop, self.message, self.current],
            queue=False, show_progress="hidden", **private)
        if tabs is not None:
            event = event.success(lambda: gr.Tabs(selected="chat"), outputs=tabs, queue=False, **private)
        event = event.success(None, js=SCROLL_TO_CONVERSATION, **private)
        respond = self.answer(event)
        # Again once the answer is written: the page may have shifted under the first scroll while
        # the tab switched and the answer grew.
        respond.then(None, js=SCROLL_TO_CONVERSATION, **private)
        return respond


def _meter(engine, message, context, history, max_new_tokens):
    """The meter's line (space/chat_meters.py); empty until a local model is ready (a --backend model's
    tokenizer is on another machine: its meter is not shown)."""
    loader = getattr(engine, "loader", None)
    if loader is None or engine.state != "ready":
        return ""
    lm = loader.get()
    line, warns = prompt_meter(lm.tokenizer, lm.window, message, context, conversation(history), max_new_tokens)
    return f"<small><strong>{line}</strong></small>" if warns else f"<small>{line}</small>"


def _settings_dict(values) -> dict:
    return dict(zip(SETTING_NAMES, values))


def _shown_values(conversation) -> list:
    """A conversation's history, Context, reference and settings for the components of ChatTab.shown;
    None: an empty chat (the settings stay as they are)."""
    if conversation is None:
        return [[], "", "", gr.Column(visible=False)] + [gr.skip()] * len(SETTING_NAMES)
    settings = conversation.get("settings") or {}
    return ([conversation["history"], conversation["context"], conversation["reference"],
             gr.Column(visible=bool(conversation["reference"]))]
            + [settings[name] if name in settings else gr.skip() for name in SETTING_NAMES])


def _list_values(store, current) -> list:
    """The list (newest first, the shown one selected), its heading with the count, the shown one's title."""
    conversation = saved_chats.find(store, current) if current else None
    count = len(store["conversations"])
    return [gr.Radio(choices=saved_chats.choices(store), value=current if conversation else None),
            gr.Accordion(label=f"Your chats ({count})"), conversation["title"] if conversation else ""]


def _save(store, current, history, context, reference, *settings):
    """Save the conversation shown. The title box is written only when the title changed (a new chat's
    first message, an edited first message): a save that lands while someone types a new title in it
    (the one after a reply, say) must not put the old title back under their Rename."""
    before = saved_chats.find(saved_chats.clean_store(store), current) if current else None
    title_before = before["title"] if before else None
    store, current = saved_chats.save(store, current, history, context, _settings_dict(settings), reference)
    listed = _list_values(store, current)
    if listed[2] == title_before:
        listed[2] = gr.skip()
    return [store, current] + listed


def _on_load(store, live):
    """The page opened (or was reloaded): the list from the browser, a reply cut by the reload put back
    and marked, and the conversation that was open shown again.
    With no conversation to show, the boxes are left as they are: the page drew them empty, and someone
    may have typed a Context already (on a busy server this answer lands a second or more after the page
    is usable; writing "" would wipe what they typed, and the send after it would save the chat without it)."""
    store = saved_chats.merge_live(store, live, notice(STOPPED, CUT_BY_RELOAD))
    current = store["active"]
    conversation = saved_chats.find(store, current)
    listed = _list_values(store, current)
    if conversation is None:
        return [store, saved_chats.NO_LIVE, current] + [gr.skip()] * len(_shown_values(None)) + listed[:2] + [gr.skip()]
    return [store, saved_chats.NO_LIVE, current] + _shown_values(conversation) + listed


def _open(store, conversation_id, busy):
    not_busy(busy)
    store, conversation = saved_chats.open_(store, conversation_id)
    current = conversation["id"] if conversation else None
    return [store, current] + _shown_values(conversation) + _list_values(store, current)


def _new_chat(store, busy):
    """New chat: an empty conversation; the one shown stays in the list."""
    not_busy(busy)
    store = saved_chats.clean_store(store)
    store["active"] = None
    return [store, None] + _shown_values(None) + _list_values(store, None)


def _rename(store, current, title):
    try:
        store = saved_chats.rename(store, current, title)
    except ValueError as error:
        raise gr.Error(str(error), title="Cannot rename", print_exception=False) from None
    return [store] + _list_values(store, current)


def _delete(store, current, busy):
    not_busy(busy)
    store, following = saved_chats.delete(store, current)
    return [store, following] + _shown_values(saved_chats.find(store, following)) + _list_values(store, following)


def _export(history, title, kind):
    """(file name, MIME type, text) of the conversation shown, for the browser to download: the file is
    made in the page, so nothing of the conversation is written on the server."""
    if not any(_role(m) == "user" for m in history or []):
        raise gr.Error("There is nothing to export yet: the conversation is empty.", title="Nothing to export",
                       print_exception=False)
    title = title or saved_chats.title_of(history)
    if kind == "md":
        return [file_name(title, "md"), "text/markdown", to_markdown(history, title)]
    return [file_name(title, "json"), "application/json", to_json(history)]


def _export_markdown(history, title):
    return _export(history, title, "md")


def _export_json(history, title):
    return _export(history, title, "json")


DOWNLOAD = """(name, type, text) => {
  const link = document.createElement('a');
  link.href = URL.createObjectURL(new Blob([text], {type: type + ';charset=utf-8'}));
  link.download = name;
  document.body.appendChild(link);
  link.click();
  setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
}"""


def not_busy(busy):
    """One reply at a time per conversation: a second would write into the same chat. Raising stops
    the event chain before anything changed (the text stays in the box); nothing is disabled."""
    if busy:
        raise gr.Error("A reply is still being written: wait for it, or press Stop, then send again.",
                       title="One moment", duration=4, print_exception=False)


def _submit(message, history, busy):
    """Enter or Send: the message goes into the chat at once, the box empties, Stop replaces Send."""
    not_busy(busy)
    if not (message or "").strip():
        return gr.skip(), gr.skip(), "", False, False, gr.skip(), gr.skip()
    return ("", list(history or []) + [{"role": "user", "content": message}], message, False, True,
            gr.Button(visible=False), gr.Button(visible=True))


def _retry(history, busy):
    not_busy(busy)
    before, message = last_user_turn(history)
    if message is None:
        return gr.skip(), "", False, False, gr.skip(), gr.skip()
    return (before + [{"role": "user", "content": message}], message, False, True,
            gr.Button(visible=False), gr.Button(visible=True))


def _edit(history, busy, evt: gr.EditData):
    """Edit & resend: the conversation up to the edited message, which is sent again as edited."""
    not_busy(busy)
    history, message = edited_history(history, evt.index, evt.value)
    if message is None:  # an empty edit sends nothing; the message shows as it was
        return history, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return history, message, False, True, gr.Button(visible=False), gr.Button(visible=True)


def _undo(history):
    before, message = last_user_turn(history)
    if message is None:
        return gr.skip(), gr.skip()
    return before, message


def _example(busy, evt: gr.SelectData):
    not_busy(busy)
    message, context = EXAMPLES[evt.index]
    return ([{"role": "user", "content": message}], message, context, False, True,
            gr.Button(visible=False), gr.Button(visible=True))


def _tick(engine, seen, max_new_tokens):
    """The status line, and, when the model's state changes, what depends on it: the Max new tokens
    bound (the model's window is known once it is loaded), the message box's placeholder and the intro
    (a backend's model is known once it answers).
    `seen`: (the state, the slider's bound) as of the last change; None at first, when the slider's
    bound is the server's cap."""
    line, timer = status_line(engine)
    state = engine.state
    seen_state, seen_limit = seen or (None, MAX_NEW_TOKENS_CAP)
    if state == seen_state:
        return line, timer, gr.skip(), gr.skip(), gr.skip(), gr.skip()
    limit = max_new_tokens_limit(engine.window if state == "ready" else None)
    try:
        value = min(int(max_new_tokens), limit)
    except (TypeError, ValueError):
        value = min(DEFAULTS["max_new_tokens"], limit)
    # Only what changed is sent: redrawing the slider wipes a value the user is typing into its box, and
    # only a value over the new bound is changed (the user may have moved it since this tick was sent).
    if value != max_new_tokens:
        slider = gr.Slider(maximum=limit, value=value)
    else:
        slider = gr.Slider(maximum=limit) if limit != seen_limit else gr.skip()
    return (line, timer, (state, limit), slider,
            gr.Textbox(placeholder=PLACEHOLDERS.get(state, PLACEHOLDERS["ready"])), intro(engine.named_model))


def build_chat_tab(engine, concurrency: int = 2) -> ChatTab:
    """The Chat tab's components, rendered into the current Blocks context."""
    private = dict(api_visibility="private")
    with gr.Row(equal_height=False, elem_id="chat-top"):  # one line: the status, and the intro folded beside it
        status = gr.Markdown(engine.status(), elem_id="chat-status")
        with gr.Accordion("About this chat", open=False, elem_id="chat-about"):
            intro_line = gr.Markdown(intro(engine.named_model), elem_id="chat-intro")
    timer = gr.Timer(1.0, active=True)  # polls the engine while its state may change (status_line)
    seen = gr.State(None)
    # The conversations, kept in this browser: a list newest first, and what can be done with the one shown.
    chats = gr.BrowserState(saved_chats.empty_store(), storage_key=STORE_KEY, secret=STORE_SECRET)
    live = gr.BrowserState(None, storage_key=LIVE_KEY, secret=STORE_SECRET)
    with gr.Row(equal_height=False, elem_id="chat-bar"):
        new_chat = gr.Button("New chat", size="sm", scale=0, min_width=110, elem_id="chat-new")
        with gr.Accordion("Your chats (0)", open=False, elem_id="chat-chats") as chats_box:
            chat_list = gr.Radio([], label="Your chats, newest first (kept in this browser only)",
                                 elem_id="chat-list")
            with gr.Row(equal_height=True):
                title = gr.Textbox(label="Title of this chat", max_lines=1, scale=3, min_width=200,
                                   elem_id="chat-title")
                rename = gr.Button("Rename", size="sm", scale=0, min_width=90, elem_id="chat-rename")
            with gr.Row():
                export_md = gr.Button("Export Markdown", size="sm", elem_id="chat-export-md")
                export_json = gr.Button("Export JSON (OpenAI messages)", size="sm", elem_id="chat-export-json")
                delete = gr.Button("Delete this chat", size="sm", variant="stop", elem_id="chat-delete")
            gr.Markdown(f"<small>The newest {saved_chats.MAX_CONVERSATIONS} chats are kept (at most about "
                        f"{saved_chats.MAX_STORE_CHARS / 1e6:g} million characters); past that the chat used "
                        "longest ago is dropped. Export a chat to keep it for good.</small>", elem_id="chat-list-note")
    with gr.Row(equal_height=False, elem_id="chat-conversation"):
        with gr.Column(scale=3, min_width=320):
            chatbot = gr.Chatbot(
                # The window's height less the lines above it and the message box (ChatGPT's layout).
                label="Conversation with Dolly", show_label=False, height="calc(100dvh - 25rem)", min_height=280,
                elem_id="chat-chatbot",
                buttons=["copy"], placeholder=HINT, editable="user",
                examples=[{"text": message, "display_text": message + (" (with a passage)" if context else "")}
                          for message, context in EXAMPLES],
            )
        with gr.Column(scale=2, min_width=320, visible=False, elem_id="chat-reference-box") as reference_box:
            reference = gr.Markdown(elem_id="chat-reference")
            hide = gr.Button("Hide reference", size="sm", elem_id="chat-hide-reference")
    # The dock: the small print (queue line, the reply's speed), the message box and the context meter under it
    # keep to the window's bottom edge while the page scrolls (sticky, CSS), so none of them is ever covered.
    with gr.Column(elem_id="chat-dock"):
        stats = gr.Markdown("", elem_id="chat-stats")  # not in the chat's column: the reference sits beside it
        with gr.Row(equal_height=False, elem_id="chat-input"):
            message = gr.Textbox(label="Message", placeholder=PLACEHOLDERS.get(engine.state, PLACEHOLDERS["ready"]),
                                 lines=1, max_lines=8, scale=1, min_width=160, elem_id="chat-message")  # 1: Enter sends
            with gr.Column(scale=0, min_width=90):
                send = gr.Button("Send", variant="primary", elem_id="chat-send")
                stop = gr.Button("Stop", variant="stop", visible=False, elem_id="chat-stop")
        with gr.Row(equal_height=False, elem_id="chat-below"):
            gr.HTML(KEYS_HINT, padding=False, elem_id="chat-keys-line")
            meter = gr.Markdown("", elem_id="chat-meter")
    with gr.Row(equal_height=False, elem_id="chat-context-row"):
        context = gr.Textbox(
            "", label="Context (optional)", lines=2, max_lines=8, scale=1, min_width=260, elem_id="chat-context",
            placeholder="A passage for the model to use (Dolly's Input): for closed QA, summarization or "
                        "extraction. Leave empty for open questions.",
        )
        restore = gr.Button("Restore earlier chat", size="sm", visible=False, scale=0, min_width=160,
                            elem_id="chat-restore")
    with gr.Accordion("Generation settings", open=False, elem_id="chat-settings") as settings_box:
        with gr.Column(elem_id="chat-settings-panel"):
            controls = [
                setting(gr.Checkbox(DEFAULTS["do_sample"], label="Sampling (off = greedy, always the same answer)")),
                setting(gr.Slider(0, 2, value=DEFAULTS["temperature"], step=0.05, label="Temperature")),
                setting(gr.Slider(0.05, 1, value=DEFAULTS["top_p"], step=0.01, label="Top-p")),
                setting(gr.Slider(0, 200, value=DEFAULTS["top_k"], step=1, label="Top-k (0 = off)")),
                setting(gr.Slider(1, MAX_NEW_TOKENS_CAP, value=DEFAULTS["max_new_tokens"], step=1,
                                  label="Max new tokens", info="Bounded by what this model's window allows.")),
                setting(gr.Slider(1, 2, value=DEFAULTS["repetition_penalty"], step=0.05, label="Repetition penalty")),
                setting(gr.Number(DEFAULTS["seed"], precision=0, label="Seed (-1 = random)")),
            ]
    settings_box.expand(None, js=SCROLL_TO_SETTINGS, api_visibility="private")
    pending, stopped, busy, saved = gr.State(""), gr.State(False), gr.State(False), gr.State(None)
    current = gr.State(None)
    tab = ChatTab(engine, chatbot, message, context, controls, send, stop, restore, reference_box, reference,
                  status, pending, stopped, busy, saved, chats, live, current, chat_list, chats_box, title, stats, meter,
                  concurrency)

    # (The meter too: it appears once the model is ready, and follows a reply as it grows.)
    tab.measure(timer.tick(lambda seen_state, tokens: _tick(engine, seen_state, tokens), [seen, controls[4]],
                           [status, timer, seen, controls[4], message, intro_line], queue=False, show_progress="hidden",
                           **private))
    quick = dict(queue=False, show_progress="hidden", **private)
    starts = [chatbot, pending, stopped, busy, send, stop]
    for trigger in (message.submit, send.click):
        tab.answer(trigger(_submit, [message, chatbot, busy], [message] + starts, **quick))
    tab.answer(chatbot.retry(_retry, [chatbot, busy], starts, **quick))
    tab.answer(chatbot.example_select(_example, [busy], starts[:2] + [context] + starts[2:], **quick))
    tab.answer(chatbot.edit(_edit, [chatbot, busy], starts, **quick))
    tab.save(chatbot.undo(_undo, [chatbot], [chatbot, message], queue=False, **private))
    # Clear starts a new chat: the one cleared stays in the list, with its Context and reference.
    tab.measure(chatbot.clear(_new_chat, [chats, busy], [chats, current] + tab.shown + tab.listed, **quick))
    stop.click(lambda history: (mark_stopped(history), True), [chatbot], [chatbot, stopped], queue=False, **private)
    hide.click(lambda: gr.Column(visible=False), outputs=reference_box, queue=False, **private)

    # The list: page load (and reload) restores; New chat, open, rename, delete, export.
    tab.measure(Context.root_block.load(_on_load, [chats, live], [chats, live, current] + tab.shown + tab.listed,
                                        **quick))
    tab.measure(new_chat.click(_new_chat, [chats, busy], [chats, current] + tab.shown + tab.listed, **quick))
    tab.measure(chat_list.input(_open, [chats, chat_list, busy], [chats, current] + tab.shown + tab.listed, **quick))
    for trigger in (rename.click, title.submit):
        trigger(_rename, [chats, current, title], [chats] + tab.listed, **quick)
    tab.measure(delete.click(_delete, [chats, current, busy], [chats, current] + tab.shown + tab.listed, **quick))
    # The meter follows the boxes, typed or set (the newest change wins), and the reply's room.
    for trigger in (message.change, context.change, controls[4].change):
        trigger(partial(_meter, engine), [message, context, chatbot, controls[4]], meter, trigger_mode="always_last",
                **quick)
    # The Context typed for a chat is kept with it even before the next send.
    context.blur(_save, *tab.save_args, **quick)
    # Restore earlier chat (after Try in chat): the list's conversation that was open before.
    restore.click(_open, [chats, saved, busy], [chats, current] + tab.shown + tab.listed, **quick).success(
        lambda: (None, gr.Button(visible=False)), None, [saved, restore], **quick)
    download = [gr.Textbox(visible="hidden", elem_id=f"chat-download-{part}") for part in ("name", "type", "text")]
    for button, export in ((export_md, _export_markdown), (export_json, _export_json)):
        button.click(export, [chatbot, title], download, **quick).success(None, download, None, js=DOWNLOAD, **private)

    # The /chat API: the same engine call, errors raised for the caller (see the module docstring).
    api_reply = gr.Textbox(visible=False)
    gr.Button(visible=False).click(
        make_chat_fn(engine), [message, context] + controls, api_reply, api_name="chat",
        concurrency_limit=concurrency, concurrency_id="dolly-chat")
    return tab
