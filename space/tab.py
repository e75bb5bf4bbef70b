"""The Chat tab: Gradio 6's ChatInterface around space/chat.py, a Context box, the generation
settings, a status line while the model loads, and a panel for the dataset's reference response
when a record comes over from the Explorer ("Try in chat").

Call `build_chat_tab(loader)` inside a `gr.Tab`; it returns the components app.py wires.
"""
from dataclasses import dataclass

import gradio as gr

from space.chat import DEFAULTS, MAX_NEW_TOKENS_CAP, ChatInputError, active_generations
from space.model import ModelError, ModelLoader

# One per databricks-dolly-15k category, written for this app: [message, context].
EXAMPLES = [
    ["What is the difference between a llama and an alpaca?", ""],  # open_qa
    ["Why do people enjoy hiking in the mountains?", ""],  # general_qa
    ["Classify each of these as a fruit or a vegetable: carrot, apple, spinach, mango, leek.", ""],  # classification
    ["When was the bridge opened, and how long is it?",  # closed_qa
     "The Millbrook Bridge is a stone arch bridge over the River Alder. Construction began in 1887, and the "
     "bridge opened to traffic in 1891. It is 214 metres long and carries a single road and a footpath."],
    ["Give me five ideas for a rainy Sunday afternoon with children.", ""],  # brainstorming
    ["List the instruments mentioned in the passage, separated by commas.",  # information_extraction
     "The band started as a trio: Ana played the cello, Tom the drums, and Priya the accordion. In 2019 they "
     "added a trumpet player, and on their second album you can also hear a harmonium."],
    ["Summarize this in two sentences.",  # summarization
     "Community gardens turn empty city lots into shared plots where neighbours grow vegetables and flowers. "
     "Besides food, they offer shade, a place to meet, and lessons for schoolchildren about where food comes "
     "from. Cities that support them often see less litter and more people outdoors in the evenings."],
    ["Write a short poem about a lighthouse keeper's last night on duty.", ""],  # creative_writing
]


def setting(*args, **kwargs) -> gr.Slider:
    """A slider whose value reaches space/chat.py unchecked, so that an out-of-range value from an
    API caller gets the chat's own error naming the setting (and max new tokens is capped) rather
    than Gradio's anonymous "Value -1 is less than minimum value 0". (Not a gr.Slider subclass:
    Gradio writes a .pyi stub beside the source of every component class.)"""
    slider = gr.Slider(*args, **kwargs)
    slider.preprocess = lambda payload: payload
    return slider


@dataclass
class ChatTab:
    chat: gr.ChatInterface
    message: gr.Textbox
    context: gr.Textbox
    reference_box: gr.Column
    reference: gr.Markdown
    status: gr.Markdown

    @property
    def try_in_chat_outputs(self):
        """What `try_in_chat(record)` fills, in its order."""
        return [self.message, self.context, self.reference_box, self.reference]


def try_in_chat(record):
    """Values for `ChatTab.try_in_chat_outputs` from an Explorer record (a dict with instruction,
    context, response, category), or a clear error when no record is open."""
    if not record:
        raise gr.Error("Open a record in the Explorer first, then press Try in chat.")
    category = str(record.get("category") or "").replace("_", " ")
    response = str(record.get("response") or "").strip() or "_(this record has no response)_"
    reference = (f"### Reference response\n*Written by a person for databricks-dolly-15k"
                 f"{f' ({category})' if category else ''}. Compare it with the model's answer.*\n\n{response}")
    return (str(record.get("instruction") or ""), str(record.get("context") or ""),
            gr.Column(visible=True), reference)


def make_chat_fn(engine):
    """The function behind the chat box and the /chat API; its name is the endpoint's name.
    `engine`: space.engine.LocalEngine or space.backend.BackendEngine, the same one /v1 uses."""

    def chat(message: str, history: list, context: str = "", do_sample: bool = DEFAULTS["do_sample"],
             temperature: float = DEFAULTS["temperature"], top_p: float = DEFAULTS["top_p"],
             top_k: int = DEFAULTS["top_k"], max_new_tokens: int = DEFAULTS["max_new_tokens"],
             repetition_penalty: float = DEFAULTS["repetition_penalty"], seed: int = DEFAULTS["seed"]):
        """Ask the Dolly model. `context` is an optional passage (Dolly's `Input:`) for closed QA,
        summarization or extraction. Streams the reply; the last value is the whole reply."""
        try:
            generation = engine.chat(message if isinstance(message, str) else str(message or ""), context or "",
                                     history, do_sample=do_sample, temperature=temperature, top_p=top_p,
                                     top_k=top_k, max_new_tokens=max_new_tokens,
                                     repetition_penalty=repetition_penalty, seed=seed)
        except (ModelError, ChatInputError) as error:
            raise gr.Error(str(error), title="Cannot answer", print_exception=False) from None
        for notice in generation.notices:
            gr.Warning(notice)
        try:
            yield from generation
        except (ModelError, ChatInputError) as error:  # out of memory; a backend gone mid-reply
            raise gr.Error(str(error), title="Reply interrupted", print_exception=False) from None

    return chat


def _status(loader: ModelLoader):
    running = active_generations()
    line = loader.status() + (f" Generating {running} repl{'ies' if running > 1 else 'y'} now." if running else "")
    # Keep polling while a reply is being generated too, so "Generating…" never outlives its reply.
    return line, gr.Timer(active=loader.state == "loading" or running > 0)


def build_chat_tab(loader: ModelLoader, concurrency: int = 2) -> ChatTab:
    """The Chat tab's components, rendered into the current Blocks context."""
    status = gr.Markdown(loader.status(), elem_id="chat-status")
    timer = gr.Timer(1.0, active=True)  # polls the loader until the model is ready or failed
    timer.tick(lambda: _status(loader), outputs=[status, timer], queue=False, api_visibility="private",
               show_progress="hidden")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            context = gr.Textbox(
                "", label="Context (optional)", lines=2, max_lines=12, elem_id="chat-context",
                placeholder="A passage for the model to use: for closed QA, summarization or extraction "
                            "(Dolly's Input). Leave empty for open questions.",
            )
            controls = [
                gr.Checkbox(DEFAULTS["do_sample"], label="Sampling (off = greedy, always the same answer)", render=False),
                setting(0, 2, value=DEFAULTS["temperature"], step=0.05, label="Temperature", render=False),
                setting(0.05, 1, value=DEFAULTS["top_p"], step=0.01, label="Top-p", render=False),
                setting(0, 200, value=DEFAULTS["top_k"], step=1, label="Top-k (0 = off)", render=False),
                setting(1, MAX_NEW_TOKENS_CAP, value=DEFAULTS["max_new_tokens"], step=1, label="Max new tokens",
                          render=False),
                setting(1, 2, value=DEFAULTS["repetition_penalty"], step=0.05, label="Repetition penalty",
                          render=False),
                gr.Number(DEFAULTS["seed"], precision=0, label="Seed (-1 = random)", render=False),
            ]
            chat = gr.ChatInterface(
                make_chat_fn(loader),
                chatbot=gr.Chatbot(label="Dolly", height=460, elem_id="chat-chatbot", buttons=["copy"]),
                textbox=gr.Textbox(placeholder="Ask Dolly something…", submit_btn=True, stop_btn=True,
                                   label="Message", show_label=False, elem_id="chat-message", scale=7),
                additional_inputs=[context] + controls,
                additional_inputs_accordion=gr.Accordion("Generation settings", open=False, render=False),
                examples=[example + [None] * len(controls) for example in EXAMPLES],  # settings stay as they are
                examples_label="Examples (one per dolly-15k category)",
                api_name="chat",
                concurrency_limit=concurrency,
                fill_height=False,
            )
        with gr.Column(scale=2, visible=False, elem_id="chat-reference-box") as reference_box:
            reference = gr.Markdown(elem_id="chat-reference")
            hide = gr.Button("Hide reference", size="sm")
            hide.click(lambda: gr.Column(visible=False), outputs=reference_box, queue=False,
                       api_visibility="private")
    _share_concurrency(chat, concurrency)
    return ChatTab(chat, chat.textbox, context, reference_box, reference, status)


def _share_concurrency(chat: gr.ChatInterface, limit: int):
    """ChatInterface gives its chat box, its /chat API and its retry/example events each their own
    queue slot; put them in one group so --concurrency bounds all generation together."""
    from gradio.context import Context

    blocks = Context.root_block or chat
    for fn in blocks.fns.values():
        if fn.name in ("_submit_fn", "chat") and fn.concurrency_limit == limit:
            fn.concurrency_id = "dolly-chat"
