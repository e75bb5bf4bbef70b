"""The chat logic, free of any screen: check the settings, fold a conversation into one Dolly
prompt that fits the model's window, and stream a reply token by token until `### End`.

Dolly was trained on single instructions, so earlier turns of a chat go into the prompt's
`Input:` block as a transcript after the user's own Context; the newest message is the
instruction. When the window is full the oldest turns go first, and the caller is told.
"""
import queue
import random
import threading
from dataclasses import dataclass, field, replace

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper
from transformers.generation.stopping_criteria import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from space import zerogpu
from dolly.numbers import exact_number, whole_number
from dolly.settings import setting
from dolly.text import text_problem
from dolly.prompt import (END_KEY, INSTRUCTION_KEY, RESPONSE_KEY, encode_prompt, encode_text, format_prompt,
                          stop_token_ids)

# Server-side bounds: whatever a browser or API caller sends, one request costs at most this.
MAX_NEW_TOKENS_CAP = setting("DOLLY_MAX_NEW_TOKENS")  # ranges and defaults: dolly/settings.py
MAX_PROMPT_TOKENS = setting("DOLLY_MAX_PROMPT_TOKENS")
MAX_INPUT_CHARS = 50_000  # per text field, checked before tokenizing so a huge paste costs nothing

# The seed's pipeline (databricks/dolly-v2 instruct_pipeline): sampling, top_p 0.92, top_k 0, 256 tokens.
DEFAULTS = dict(do_sample=True, temperature=1.0, top_p=0.92, top_k=0, max_new_tokens=256,
                repetition_penalty=1.0, seed=-1)
HISTORY_HEADER = "Earlier in this conversation:"
EMPTY_REPLY = "(The model ended its reply without writing anything. Try again, or change the settings.)"
# Text the user must never see: Dolly's markers (the model may write them as plain text when its
# tokenizer does not have them as special tokens).
MARKERS = (END_KEY, INSTRUCTION_KEY, RESPONSE_KEY)


class ChatInputError(ValueError):
    """A request the chat cannot run as sent; the message says what to change."""


@dataclass(frozen=True)
class Settings:
    do_sample: bool
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    repetition_penalty: float
    seed: int
    notices: tuple = ()

    @property
    def sampling(self) -> bool:
        return self.do_sample and self.temperature > 0


# What each setting accepts, named in every error about it (API callers cannot see the sliders).
ACCEPTS = {
    "do_sample": "true or false",
    "temperature": "a number, 0 or more (0 = greedy)",
    "top_p": "a number above 0 and at most 1",
    "top_k": "a whole number, 0 or more (0 = off)",
    "max_new_tokens": f"a whole number, 1 or more (more than {MAX_NEW_TOKENS_CAP} is lowered to {MAX_NEW_TOKENS_CAP})",
    "repetition_penalty": "a number above 0 (1 = none)",
    "seed": "a whole number: -1 (random) or 0 to 2**63-1",
}


def _number(name, value, cast):
    """`value` as a float or an exact int. None or "" mean the default; a string holding an exact
    number is that number ("7" is 7; "7.5" is no whole number); anything else is an error naming
    `name` and what it accepts. Ints are kept exact (a 19-digit seed must not round)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return cast(DEFAULTS[name])
    try:
        return whole_number(value) if cast is int else float(exact_number(value))
    except ValueError as error:
        finite = "finite, " if "finite" in str(error) else ""
        raise ChatInputError(f"{name} must be {finite}{ACCEPTS[name]}; got {value!r}.") from None


def _flag(name, value) -> bool:
    """True/False, also as the strings and 0/1 that forms and JSON send; anything else is an error
    (a typo must not silently mean greedy)."""
    if value is None:
        return bool(DEFAULTS[name])
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    raise ChatInputError(f"{name} must be {ACCEPTS[name]}; got {value!r}.")


def validate_settings(do_sample=True, temperature=1.0, top_p=0.92, top_k=0, max_new_tokens=256,
                      repetition_penalty=1.0, seed=-1) -> Settings:
    """Check and normalise generation settings. Out-of-range values are errors, except max new
    tokens above the server's cap, which is lowered to the cap (and said so)."""
    notices = []
    do_sample = _flag("do_sample", do_sample)
    temperature = _number("temperature", temperature, float)
    top_p = _number("top_p", top_p, float)
    top_k = _number("top_k", top_k, int)
    max_new_tokens = _number("max_new_tokens", max_new_tokens, int)
    repetition_penalty = _number("repetition_penalty", repetition_penalty, float)
    seed = _number("seed", seed, int)
    if temperature < 0:
        raise ChatInputError(f"temperature must be 0 or more (0 means greedy), got {temperature}.")
    if not 0 < top_p <= 1:
        raise ChatInputError(f"top_p must be in (0, 1], got {top_p}. Use 1 to turn nucleus sampling off.")
    if top_k < 0:
        raise ChatInputError(f"top_k must be 0 or more (0 turns it off), got {top_k}.")
    if max_new_tokens < 1:
        raise ChatInputError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")
    if max_new_tokens > MAX_NEW_TOKENS_CAP:
        notices.append(f"Max new tokens lowered from {max_new_tokens} to this server's cap of {MAX_NEW_TOKENS_CAP}.")
        max_new_tokens = MAX_NEW_TOKENS_CAP
    if repetition_penalty <= 0:
        raise ChatInputError(f"repetition_penalty must be above 0 (1 means none), got {repetition_penalty}.")
    if seed < -1 or seed >= 2**63:
        raise ChatInputError(f"seed must be -1 (random) or a whole number from 0 to 2**63-1, got {seed}.")
    return Settings(do_sample, temperature, top_p, top_k, max_new_tokens, repetition_penalty, seed,
                    tuple(notices))


# --- prompt building -------------------------------------------------------------------------------

def content_text(content) -> str:
    """The text of a chat message's content: a string, or Gradio 6's list of content blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("content") or "") if content.get("type", "text") == "text" else ""
    if isinstance(content, (list, tuple)):
        return "".join(content_text(block) for block in content)
    return str(content)


def history_turns(history) -> list[tuple[str, str]]:
    """(user, assistant) pairs from Gradio's message dicts, oldest first; notices and empty replies
    are left out because they are not part of the conversation."""
    turns, user = [], None
    for message in history or []:
        role = message.get("role") if isinstance(message, dict) else getattr(message, "role", None)
        content = message.get("content") if isinstance(message, dict) else getattr(message, "content", None)
        text = content_text(content).strip()
        if role == "user":
            if user is not None:
                turns.append((user, ""))
            user = text
        elif role == "assistant" and user is not None:
            turns.append((user, "" if text == EMPTY_REPLY else text))
            user = None
    if user is not None:
        turns.append((user, ""))
    return turns


def _turn_text(user: str, reply: str) -> str:
    """One earlier turn as the transcript writes it."""
    return f"User: {user}\nAssistant: {reply}" if reply else f"User: {user}"


def _input_head(context: str) -> str:
    """The `Input:` block before the first kept turn: the user's Context, then the transcript's header."""
    return "\n\n".join(part for part in (context.strip() if context else "", HISTORY_HEADER) if part)


def conversation_input(context: str, turns) -> str:
    """The `Input:` block: the user's Context, then a transcript of the kept earlier turns."""
    if not turns:
        return context.strip() if context and context.strip() else ""
    return _input_head(context) + "".join("\n" + _turn_text(user, reply) for user, reply in turns)


@dataclass
class Prompt:
    text: str
    input_ids: list
    notices: list = field(default_factory=list)
    # What was cut to fit the window (the notices say it in words; /v1 hands these to its callers).
    turns_dropped: int = 0
    context_tokens_dropped: int = 0


def prompt_budget(window: int, max_new_tokens: int) -> int:
    """How many prompt tokens fit beside a reply of `max_new_tokens` in the model's window."""
    return min(window - max_new_tokens, MAX_PROMPT_TOKENS)


def check_unicode(name: str, text: str) -> None:
    """A ChatInputError when `text` holds a lone surrogate (JSON's "\\ud800" decodes to one): it is no
    character, no tokenizer takes it, and it cannot be written as UTF-8."""
    problem = text_problem(text)
    if problem:
        raise ChatInputError(f"The {name} is not valid text: {problem}. Send the text as valid Unicode (UTF-8).")


def build_prompt(tokenizer, message: str, context: str = "", history=(), *, window: int = 2048,
                 max_new_tokens: int = 256) -> Prompt:
    """One Dolly prompt for `message` that fits `window` with room for the reply.

    Earlier turns are dropped oldest first; a Context too long on its own is cut from its start
    (keeping its end, nearest the question); a message too long on its own is a ChatInputError.
    """
    message = (message or "").strip()
    context = context or ""
    if not message:
        raise ChatInputError("The message is empty: type an instruction or a question.")
    for name, text in (("message", message), ("Context", context)):
        if len(text) > MAX_INPUT_CHARS:
            raise ChatInputError(f"The {name} is {len(text):,} characters; the limit is {MAX_INPUT_CHARS:,}. Shorten it.")
        check_unicode(name, text)
    turns = history_turns(history)
    for user, reply in turns:
        for text in (user, reply):
            check_unicode("conversation's earlier message", text)
    budget = prompt_budget(window, max_new_tokens)

    # User text (message, context, earlier turns) is encoded as plain text: it can never forge a marker.
    bare = encode_prompt(tokenizer, message)
    if len(bare) > budget:
        raise ChatInputError(
            f"The message is too long for this model: it makes a {len(bare)}-token prompt, and with room for "
            f"{max_new_tokens} new tokens the {window}-token window leaves {max(budget, 0)}. Shorten the message, "
            "put long text in the Context box, or lower Max new tokens."
        )
    notices, context_dropped = [], 0
    ids = encode_prompt(tokenizer, message, context)
    if len(ids) > budget:  # the Context alone overflows: keep its end, say so
        context_ids = encode_text(tokenizer, context)
        keep = max(len(context_ids) - (len(ids) - budget) - 8, 0)
        while True:
            trimmed = tokenizer.decode(context_ids[len(context_ids) - keep:]) if keep else ""
            ids = encode_prompt(tokenizer, message, trimmed)
            if len(ids) <= budget or keep == 0:
                break
            keep = max(keep - 16, 0)
        context_dropped = len(context_ids) - keep
        notices.append(f"The Context was too long for the model's {window}-token window: its first "
                       f"{context_dropped:,} of {len(context_ids):,} tokens were left out.")
        context = trimmed
    kept, kept_ids = _newest_turns_that_fit(tokenizer, message, context, turns, budget)
    if kept:
        context, ids = conversation_input(context, turns[len(turns) - kept:]), kept_ids
    dropped = len(turns) - kept
    if dropped:
        notices.append(f"The conversation no longer fits the model's {window}-token window: the "
                       f"{dropped} oldest turn{'s were' if dropped > 1 else ' was'} left out of the prompt.")
    return Prompt(format_prompt(message, context), ids, notices, dropped, context_dropped)


def _newest_turns_that_fit(tokenizer, message: str, context: str, turns, budget: int) -> tuple[int, list]:
    """(how many of the newest `turns` fit in the prompt beside `message` and `context`, that prompt's ids).

    Linear, and bounded by the budget rather than by the conversation: each turn is tokenized once,
    newest first, only until the running count passes the budget; the count is then checked with one
    tokenization of the prompt it picked (a token may span the seam between two turns), and moved by
    a step or a bisection when that disagrees. Never a tokenization of every prefix, which made a
    4,000-turn /v1 request cost minutes of CPU.
    """
    if not turns:
        return 0, []

    def ids_with(n):
        return encode_prompt(tokenizer, message, conversation_input(context, turns[len(turns) - n:]))

    total, estimate = len(encode_prompt(tokenizer, message, _input_head(context))), 0
    for user, reply in reversed(turns):
        total += len(encode_text(tokenizer, "\n" + _turn_text(user, reply)))
        if total > budget:
            break
        estimate += 1
    if estimate == 0:
        return 0, []
    ids = ids_with(estimate)
    if len(ids) <= budget:  # rarely, seams merge tokens and one more turn fits
        while estimate < len(turns):
            more = ids_with(estimate + 1)
            if len(more) > budget:
                break
            estimate, ids = estimate + 1, more
        return estimate, ids
    low, high, best = 1, estimate - 1, (0, [])  # the estimate was short: the most that fits is below it
    while low <= high:
        middle = (low + high) // 2
        candidate = ids_with(middle)
        if len(candidate) <= budget:
            best, low = (middle, candidate), middle + 1
        else:
            high = middle - 1
    return best


# --- generation ------------------------------------------------------------------------------------

class _TokenQueue(BaseStreamer):
    """Hands each new token id from generate()'s thread to the reader. Unlike TextIteratorStreamer,
    which holds text back until a word is complete, it passes every token on at once, and the
    decoding is done by the reader, off the generating thread."""

    def __init__(self):
        self.queue = queue.Queue()
        self._prompt_seen = False
        self.tokens = None  # the reply's length, from an engine that hands text (below)

    def put(self, value):
        if not self._prompt_seen:  # generate() first hands over the prompt itself
            self._prompt_seen = True
            return
        self.queue.put(value.reshape(-1).tolist())

    def put_text(self, text: str, tokens: int) -> None:
        """From an engine that streams text, not token ids (llama.cpp's stream names only some of its ids): the
        reply's next text, decoded as ours would be (special tokens left out), and its length so far in tokens."""
        self.tokens = tokens
        self.queue.put(text)

    def end(self):
        self.queue.put(None)


class _StopWhenSet(StoppingCriteria):
    """Ends generate() at the next token once the event is set (Stop, a closed stream)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _SeededSampler(LogitsProcessor):
    """Sampling with this request's own random generator, so a seed reproduces a reply even while
    other users generate (generate()'s own sampling draws from torch's one global generator). It
    leaves a single allowed token, which generate() then picks greedily."""

    def __init__(self, settings: Settings, seed: int):
        self.warpers = LogitsProcessorList([TemperatureLogitsWarper(settings.temperature)])
        if settings.top_k > 0:
            self.warpers.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1:
            self.warpers.append(TopPLogitsWarper(settings.top_p))
        self.seed = seed
        self.generator = None

    def __call__(self, input_ids, scores):
        if self.generator is None:
            self.generator = torch.Generator(device=scores.device).manual_seed(self.seed)
        probs = torch.softmax(self.warpers(input_ids, scores).float(), dim=-1)
        chosen = torch.multinomial(probs, 1, generator=self.generator)
        return torch.full_like(scores, float("-inf")).scatter_(1, chosen, 0.0)


_active_lock = threading.Lock()
_active: set = set()


def generation_threads() -> set:
    """The generate() threads running now, one per reply being written (tests follow one through Stop).
    A thread counts once started: it is registered just before (see active_generations), and a thread
    that has not started yet cannot be joined."""
    with _active_lock:
        return {thread for thread in _active if thread.is_alive()}


def active_generations() -> int:
    """How many replies are being generated now, those starting included (the status line shows it)."""
    with _active_lock:
        return len(_active)


def visible_reply(raw: str, final: bool = False) -> tuple[str, bool]:
    """(what the user may see of `raw`, whether a marker showed the reply is over). While streaming,
    a tail that could be the start of a marker ('###') is held back until it is known not to be."""
    cut = min((i for i in (raw.find(marker) for marker in MARKERS) if i != -1), default=-1)
    if cut != -1:
        return raw[:cut].strip(), True
    text = raw.rstrip("\ufffd")  # half of a multi-byte character: wait for the rest
    for marker in MARKERS:
        for k in range(len(marker) - 1, 0, -1):
            if (not final or k >= 3) and text.endswith(marker[:k]) and marker[:k].strip():
                return text[:-k].strip(), False
    return text.strip(), False


def stream_reply(lm, input_ids, settings: Settings, stop: threading.Event | None = None, min_new_tokens: int = 0,
                 usage: dict | None = None, on_end=None):
    """Generate a reply to `input_ids` and yield its visible text each time it grows.

    generate() runs in its own thread; closing this generator (Stop, a client gone) sets `stop`,
    and that thread ends at its next token. The last value yielded is the whole reply.
    `min_new_tokens` is for benchmarks, which must time a full-length reply. `usage`, when given, gets
    `completion_tokens` and `finish_reason` ("length" when max_new_tokens ran out, else "stop") for /v1.
    `on_end()`, when given, is called once generate() has ended, which after a close is one step later:
    a --concurrency slot must cover that step too, and closing must not wait for it (Gradio closes
    generators on its event loop).
    """
    if not zerogpu.runs_here():  # a ZeroGPU Space: the GPU exists only inside spaces.GPU (space/zerogpu.py)
        try:
            yield from zerogpu.stream(stream_reply, lm, input_ids, settings, stop, min_new_tokens, usage)
        finally:
            if on_end:
                on_end()  # closing ZeroGPU's stream has ended the worker's generation
        return
    stop = stop or threading.Event()
    tokenizer, streamer, failure = lm.tokenizer, _TokenQueue(), []
    try:
        _start_generate(lm, input_ids, settings, min_new_tokens, stop, streamer, failure, on_end)
    except BaseException:
        if on_end:
            on_end()  # nothing runs
        raise
    generated, raw, shown = [], "", None
    try:
        while True:
            ids = streamer.queue.get()
            if ids is None:
                break
            if isinstance(ids, str):  # text from the engine (put_text)
                raw += ids
            else:
                generated.extend(ids)
                raw = tokenizer.decode(generated, skip_special_tokens=True)
            text, ended = visible_reply(raw)
            if ended:
                stop.set()
            if text and text != shown:
                shown = text
                yield text
            if ended:
                break
        if failure:
            error = failure[0]
            if isinstance(error, torch.OutOfMemoryError):
                raise ChatInputError("Out of memory while generating: lower Max new tokens or shorten the Context.")
            raise RuntimeError(f"Generation failed: {type(error).__name__}: {error}") from error
        final, _ = visible_reply(raw, final=True)
        final = final or EMPTY_REPLY
        tokens = len(generated) if streamer.tokens is None else streamer.tokens
        if usage is not None:
            usage.update(completion_tokens=tokens, finish_reason="length" if tokens >= settings.max_new_tokens else "stop")
        if final != shown:
            yield final
    finally:
        stop.set()  # Stop pressed, client gone, or done: generate() ends at its next token


def _start_generate(lm, input_ids, settings: Settings, min_new_tokens: int, stop: threading.Event,
                    streamer: _TokenQueue, failure: list, on_end) -> None:
    """Start generate() in its own thread: its tokens go to `streamer`, an error to `failure`, and
    `on_end()` is called when it has ended."""
    model, tokenizer = lm.model, lm.tokenizer
    processors, extra = LogitsProcessorList(), {}
    seed = settings.seed if settings.seed >= 0 else random.SystemRandom().randrange(2**63)
    if getattr(model, "samples_itself", False):  # llama.cpp (space/engine_llamacpp.py): its samplers, our settings
        extra = dict(sampling=settings, seed=seed)
    elif settings.sampling:
        processors.append(_SeededSampler(settings, seed))
    config = GenerationConfig(
        max_new_tokens=settings.max_new_tokens, min_new_tokens=min_new_tokens or None, do_sample=False, repetition_penalty=settings.repetition_penalty,
        eos_token_id=stop_token_ids(tokenizer), pad_token_id=tokenizer.pad_token_id,
    )
    inputs = torch.tensor([list(input_ids)], device=model.device)

    def run():
        try:
            with torch.inference_mode():
                model.generate(inputs, attention_mask=torch.ones_like(inputs), generation_config=config,
                               logits_processor=processors, stopping_criteria=StoppingCriteriaList([_StopWhenSet(stop)]),
                               streamer=streamer, **extra)
        except BaseException as error:  # reported to the reader, never lost in a thread
            failure.append(error)
            streamer.end()
        finally:
            with _active_lock:  # no longer counted before its slot is free: never one over --concurrency
                _active.discard(thread)
            if on_end:
                on_end()

    thread = threading.Thread(target=run, name="dolly-generate", daemon=True)
    with _active_lock:
        _active.add(thread)
    try:
        thread.start()
    except BaseException:
        with _active_lock:
            _active.discard(thread)
        raise


def fit_to_window(settings: Settings, window: int) -> Settings:
    """A reply may use at most half of the model's window, so a prompt always has room too."""
    limit = max(window // 2, 1)
    if settings.max_new_tokens <= limit:
        return settings
    note = f"Max new tokens lowered from {settings.max_new_tokens} to {limit}: half of this model's {window}-token window."
    return replace(settings, max_new_tokens=limit, notices=settings.notices + (note,))


def reply(lm, message, history=(), context="", **settings):
    """The whole reply at once (for scripts and tests): (text, notices)."""
    checked = fit_to_window(validate_settings(**settings), lm.window)
    prompt = build_prompt(lm.tokenizer, message, context, history, window=lm.window,
                          max_new_tokens=checked.max_new_tokens)
    text = EMPTY_REPLY
    for text in stream_reply(lm, prompt.input_ids, checked):
        pass
    return text, list(checked.notices) + prompt.notices
