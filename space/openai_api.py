"""The app speaks the OpenAI API: `GET /v1/models` (and `/v1/models/{id}`), `POST /v1/completions`,
`POST /v1/chat/completions` (with `stream: true` as server-sent events), on the same server as the Gradio app.

So any OpenAI client, or another open Dolly started with `--backend`, can use this model. Everything
goes through the app's engine (space/engine.py): the same prompt folding as the Chat tab (chat
messages become one Dolly prompt; system messages are Dolly's `Input:`, the Chat tab's Context), the
same checks and caps as `/chat`, and the same `--concurrency` slots. Errors are OpenAI's error JSON.
What the Chat tab tells its user beside a reply (turns or Context left out to fit the window, max_tokens
lowered) a /v1 caller gets too: `prompt_trimmed` and `notices` in the answer (a stream's last chunk), and
the X-Dolly-Prompt-Trimmed header when something was cut.

Every request's work is bounded before it starts: at most MAX_MESSAGES messages, each text checked (size,
valid Unicode) and the body's nesting limited, and trimming that costs a window's worth of tokenizing
however long the conversation.

Auth: with DOLLY_API_KEY set, every /v1 request needs `Authorization: Bearer <key>`. An app started
with `--auth` and no key answers 401: the API must never be a way around the login.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from space.chat import ACCEPTS, EMPTY_REPLY, MAX_INPUT_CHARS, ChatInputError, content_text
from space.engine import Generation
from space.model import ModelError
from dolly.text import text_problem

# Settings a /v1 caller may send beside OpenAI's own (vLLM takes the same names).
EXTRA_SETTINGS = ("top_k", "repetition_penalty", "do_sample")
UNSUPPORTED = {
    "logprobs": "logprobs are not supported",
    "top_logprobs": "logprobs are not supported",
    "echo": "echo is not supported",
    "best_of": "best_of is not supported",
    "suffix": "suffix (insertion) is not supported",
    "tools": "tools are not supported: Dolly was not trained to call functions",
    "functions": "functions are not supported: Dolly was not trained to call functions",
    "logit_bias": "logit_bias is not supported",
}
ROLES = ("system", "developer", "user", "assistant")
# However long a conversation, only its newest turns fit a window of a few thousand tokens; more
# messages than this is a 400 before any work (trimming is linear and bounded by the budget anyway).
MAX_MESSAGES = 1_000
# No OpenAI request nests deeper than a handful of levels; a deeper body is refused before anything
# walks it (Python's own parser gives up near 1,000 levels with a RecursionError).
MAX_JSON_DEPTH = 32
# A request body larger than this is refused unread (413): far above any window's worth of text (a few
# thousand tokens), and it bounds what one request may make the server hold in memory and parse.
MAX_BODY_BYTES = 8 * 2**20
# The header that tells a caller its prompt was cut to fit the window (the body says it too).
TRIMMED_HEADER = "X-Dolly-Prompt-Trimmed"


class APIError(Exception):
    """An answer in OpenAI's error format: {"error": {"message", "type", "param", "code"}}."""

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
             413: "invalid_request_error",
             500: "server_error", 503: "service_unavailable"}

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def api_error(error: BaseException) -> APIError:
    """What an engine's exception means to a /v1 caller."""
    if isinstance(error, APIError):
        return error
    if isinstance(error, ChatInputError):
        # space/chat.py names its settings as /chat does; a /v1 caller sent max_tokens.
        message = str(error).replace("max_new_tokens", "max_tokens")
        first = message.split(" ", 1)[0]
        param = first if first in ("temperature", "top_p", "top_k", "max_tokens", "repetition_penalty", "seed",
                                   "prompt") else None
        return APIError(400, message, param)
    if isinstance(error, ModelError):  # loading, failed to load, or a backend that cannot answer
        return APIError(503, str(error), code="model_not_ready")
    return APIError(500, f"Generation failed: {type(error).__name__}: {error}")


# --- requests ---------------------------------------------------------------------------------------

def check_auth(request: Request, api_key: str | None, login_required: bool) -> None:
    if api_key:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # compare_digest: the time taken says nothing about how much of the key was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise APIError(401, "Invalid or missing API key: send the key this server was started with "
                                "(DOLLY_API_KEY) as `Authorization: Bearer <key>`.", code="invalid_api_key")
    elif login_required:
        raise APIError(401, "This app requires a login (--auth), so /v1 is closed until it has an API key of its "
                            "own: start the app with DOLLY_API_KEY set and send `Authorization: Bearer <key>`.",
                       code="invalid_api_key")


async def read_body(request: Request) -> dict:
    too_large = APIError(413, f"The request body is larger than {MAX_BODY_BYTES // 2**20} MB, the most this server "
                              "reads: send fewer or shorter messages (only the newest turns fit the window anyway).")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():  # counted as it arrives: a body without a length is bounded too
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    return await asyncio.to_thread(parse_body, b"".join(chunks))


def parse_body(raw: bytes) -> dict:
    """The JSON object of a request, every string in it valid text, nested no deeper than MAX_JSON_DEPTH."""
    try:
        body = json.loads(raw or b"null")
    except RecursionError:
        raise APIError(400, f"The request body is nested too deeply: JSON nested more than {MAX_JSON_DEPTH} "
                            "levels is not an OpenAI request.") from None
    except ValueError:
        raise APIError(400, "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.")
    check_json(body)
    return body


def check_json(body: dict) -> None:
    """400 naming the place of the first string that is not text (JSON's "\\ud800" escape decodes to a
    lone surrogate, which no tokenizer takes), or of nesting deeper than MAX_JSON_DEPTH. Walked with a
    stack, not recursion, so no body can exhaust Python's stack here."""
    stack = [(body, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            problem = text_problem(value)
            if problem:
                raise APIError(400, f"{path} is not valid text: {problem}. Send valid Unicode text.",
                               None if path.startswith("A key") else path)
        elif isinstance(value, (dict, list)):
            if depth >= MAX_JSON_DEPTH:
                raise APIError(400, f"The request body is nested too deeply at {path}: JSON nested more than "
                                    f"{MAX_JSON_DEPTH} levels is not an OpenAI request.", path.split("[")[0].split(".")[0])
            items = list(value.items() if isinstance(value, dict) else enumerate(value))
            for key, item in reversed(items):  # popped in the body's order: the first bad place is named
                if isinstance(value, dict):
                    stack.append((item, f"{path}.{key}" if path else key, depth + 1))
                    stack.append((key, f"A key in {path}" if path else "A key of the body", depth + 1))
                else:
                    stack.append((item, f"{path}[{key}]", depth + 1))


def boolean(body: dict, key: str, name: str | None = None):
    """A JSON true or false (None when left out). A string such as "false" is refused rather than read
    as true: `"stream": "false"` used to stream."""
    value = body.get(key)
    if value is None or isinstance(value, bool):
        return value
    name = name or key
    raise APIError(400, f"{name} must be {ACCEPTS['do_sample']} (a JSON boolean, without quotes); got {value!r}.", name)


def check_response_format(body: dict) -> None:
    form = body.get("response_format")
    if form is None or form == {"type": "text"}:
        return
    kind = form.get("type") if isinstance(form, dict) else None
    what = f"response_format type {kind!r}" if isinstance(kind, str) else f"response_format {form!r}"
    raise APIError(400, f"{what} is not supported: this server writes plain text, with no JSON mode or schema. "
                        'Leave response_format out or send {"type": "text"}.', "response_format")


def settings_of(body: dict, max_tokens_keys=("max_tokens",)) -> dict:
    """The generation settings of a request, in /chat's names, for space/chat.py to check."""
    for key, why in UNSUPPORTED.items():
        if body.get(key) not in (None, False, 0, [], {}):
            raise APIError(400, f"{why}; leave {key} out.", key)
    for key in ("presence_penalty", "frequency_penalty"):
        if body.get(key) not in (None, 0, 0.0):
            raise APIError(400, f"{key} is not supported: use repetition_penalty (1 means none, 1.1 a little).", key)
    if body.get("n") not in (None, 1):
        raise APIError(400, f"n must be 1 (one reply per request), got {body['n']!r}.", "n")
    check_response_format(body)
    boolean(body, "do_sample")  # /chat's checkbox also takes "yes"; JSON has booleans of its own
    max_tokens = next((body[k] for k in max_tokens_keys if body.get(k) is not None), None)
    settings = {"max_new_tokens": max_tokens}
    for key in ("temperature", "top_p", "seed") + EXTRA_SETTINGS:
        if body.get(key) is not None:
            settings[key] = body[key]
    return settings


def stop_of(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > 4:
        raise APIError(400, "stop must be a string or a list of at most 4 strings.", "stop")
    return [s for s in stop if s]


def chat_request(messages) -> tuple[str, str, list]:
    """(message, context, history) from OpenAI chat messages: the last message is the instruction,
    system messages are the Context (Dolly's `Input:`), and the turns before are the history that
    space/chat.py folds into the prompt exactly as it does for the Chat tab."""
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "messages must be a non-empty list of {role, content} objects.", "messages")
    if len(messages) > MAX_MESSAGES:
        raise APIError(400, f"messages holds {len(messages):,} messages; the limit is {MAX_MESSAGES:,}. Only the "
                            "newest turns fit the model's window anyway: send the newest ones.", "messages")
    context, history = [], []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            role = message.get("role") if isinstance(message, dict) else None
            raise APIError(400, f"messages[{i}] must have a role among {', '.join(ROLES)}, got {role!r}.", "messages")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise APIError(400, f"messages[{i}].content must be a string or a list of text parts.", "messages")
        if isinstance(content, list) and any(not isinstance(p, dict) or p.get("type") != "text" for p in content):
            raise APIError(400, f"messages[{i}].content may hold text parts only: Dolly reads text.", "messages")
        if len(content_text(content)) > MAX_INPUT_CHARS:
            raise APIError(400, f"messages[{i}].content is {len(content_text(content)):,} characters; the limit is "
                                f"{MAX_INPUT_CHARS:,}. Shorten it.", "messages")
        if message["role"] in ("system", "developer"):
            context.append(content_text(content).strip())
        elif i < len(messages) - 1:
            history.append({"role": message["role"], "content": content_text(content)})
    if messages[-1]["role"] != "user":
        raise APIError(400, "The last message must be the user's: it is what the model answers.", "messages")
    return content_text(messages[-1].get("content")), "\n\n".join(c for c in context if c), history


# --- running a generation from async code -----------------------------------------------------------

class Pump:
    """Runs a Generation in a thread and hands its values to async code. Leaving early (a client
    gone, an error) cancels the generation: the model stops at its next token, a backend stream closes."""

    def __init__(self, generation: Generation):
        self.generation = generation
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        threading.Thread(target=self._run, name="dolly-v1", daemon=True).start()

    def _put(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the server's loop is gone (shutdown): nobody is listening
            self.generation.cancel()

    def _run(self) -> None:
        try:
            for text in self.generation:
                self._put(("text", "" if text == EMPTY_REPLY else text))
            self._put(("end", None))
        except BaseException as error:  # handed to the request, never lost in a thread
            self._put(("error", error))

    async def next(self):
        """("text", reply so far) | ("end", None) | ("error", exception)."""
        return await self.queue.get()


def trimmed(generation: Generation) -> dict | None:
    """What was cut from the prompt to fit the model's window ({"turns_dropped", "context_tokens_dropped"}),
    or None when nothing was: the facts behind the notes the Chat tab shows its user."""
    cut = generation.trimmed or {}
    return dict(cut) if any(cut.values()) else None


def told(generation: Generation) -> dict:
    """The fields every /v1 answer adds to OpenAI's: what was cut from the prompt, and the notes the
    Chat tab would show (the Context or turns left out, max_tokens lowered to the cap)."""
    return {"prompt_trimmed": trimmed(generation), "notices": list(generation.notices)}


def headers_of(generation: Generation) -> dict:
    cut = trimmed(generation)
    return {TRIMMED_HEADER: "; ".join(f"{key}={value}" for key, value in cut.items())} if cut else {}


def _usage(generation: Generation, text: str) -> dict:
    prompt = generation.prompt_tokens or 0
    completion = generation.completion_tokens or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _delta(sent: str, text: str) -> str:
    """What `text` adds to what the client has. The reply only grows; should a held-back tail ever
    come out different, the client gets the new part after what the two share."""
    if text.startswith(sent):
        return text[len(sent):]
    common = 0
    while common < min(len(sent), len(text)) and sent[common] == text[common]:
        common += 1
    return text[common:] if len(text) > len(sent) else ""


async def _cancel_on_disconnect(request: Request, generation: Generation) -> None:
    """Until the answer starts (queued for a slot, or a whole non-streamed reply): a client that hangs
    up cancels its reply. Once streaming, Starlette notices by itself and closes the stream."""
    while not generation.cancelled.is_set():
        if await request.is_disconnected():
            generation.cancel()
            return
        await asyncio.sleep(0.5)


async def respond(request: Request, generation: Generation, stream: bool, include_usage: bool,
                  shape) -> StreamingResponse | JSONResponse:
    """Run `generation`, answering as OpenAI does. `shape` makes the objects of this endpoint."""
    pump = Pump(generation)
    watcher = asyncio.create_task(_cancel_on_disconnect(request, generation))
    try:
        kind, value = await pump.next()  # errors before the first token still get a proper HTTP status
        if kind == "error":
            raise api_error(value)
        if not stream:
            text = value or ""
            while kind == "text":
                text = value
                kind, value = await pump.next()
            if kind == "error":
                raise api_error(value)
            return JSONResponse({**shape.whole(text, generation.finish_reason or "stop", _usage(generation, text)),
                                 **told(generation)}, headers=headers_of(generation))
    except BaseException:
        generation.cancel()
        raise
    finally:
        watcher.cancel()

    first = (kind, value)

    async def events():
        sent, item = "", first
        try:
            yield _sse(shape.start())
            while True:
                kind, value = item
                if kind == "error":
                    yield _sse(api_error(value).body())
                    return
                if kind == "end":
                    break
                delta = _delta(sent, value)
                if delta:
                    sent += delta
                    yield _sse(shape.chunk(delta))
                item = await pump.next()
            yield _sse({**shape.chunk("", generation.finish_reason or "stop"), **told(generation)})
            if include_usage:
                yield _sse(shape.usage(_usage(generation, sent)))
            yield "data: [DONE]\n\n"
        finally:  # the client went away, or the stream is over: either way nothing more is generated
            generation.cancel()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers_of(generation)})


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


class _Shape:
    """The JSON objects of one endpoint; `object` names differ between completions and chat."""

    def __init__(self, kind: str, model: str):
        self.kind, self.model = kind, model
        self.id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _base(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def whole(self, text: str, finish: str, usage: dict) -> dict:
        if self.kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                      "finish_reason": finish}
            return {**self._base("chat.completion"), "choices": [choice], "usage": usage}
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return {**self._base("text_completion"), "choices": [choice], "usage": usage}

    def start(self) -> dict:
        if self.kind == "chat":
            return {**self._base("chat.completion.chunk"),
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                 "finish_reason": None}]}
        return self.chunk("")

    def chunk(self, delta: str, finish: str | None = None) -> dict:
        if self.kind == "chat":
            return {**self._base("chat.completion.chunk"),
                    "choices": [{"index": 0, "delta": {"content": delta} if delta or not finish else {},
                                 "logprobs": None, "finish_reason": finish}]}
        return {**self._base("text_completion"),
                "choices": [{"index": 0, "text": delta, "logprobs": None, "finish_reason": finish}]}

    def usage(self, usage: dict) -> dict:
        return {**self._base("chat.completion.chunk" if self.kind == "chat" else "text_completion"),
                "choices": [], "usage": usage}


# --- the routes -------------------------------------------------------------------------------------

def routes(engine, api_key: str | None, login_required: bool, store=None) -> list:
    """The /v1 routes for `engine` (LocalEngine or BackendEngine), to go first in the app's router; with
    the curation `store`, POST /v1/feedback too (space/feedback.py)."""
    router = APIRouter(prefix="/v1")

    def guarded(handler):
        async def endpoint(request: Request):
            try:
                check_auth(request, api_key, login_required)
                return await handler(request)
            except APIError as error:
                return error.response()
            except Exception as error:  # a /v1 caller always gets OpenAI's error JSON, and the app stays up
                return api_error(error).response()
        endpoint.__name__ = handler.__name__
        return endpoint

    async def check_model(body: dict) -> str:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise APIError(400, f"model is required: this server serves '{engine.model_id}' (GET /v1/models).", "model")
        await asyncio.to_thread(engine.ensure_ready)  # a backend not asked yet is asked now, so its model is known
        if model != engine.model_id:
            raise APIError(404, f"The model '{model}' does not exist here: this server serves '{engine.model_id}'.",
                           "model", "model_not_found")
        return model

    def stream_flags(body: dict) -> tuple[bool, bool]:
        stream = bool(boolean(body, "stream"))
        options = body.get("stream_options")
        if options is None:
            return stream, False
        if not isinstance(options, dict):
            raise APIError(400, f"stream_options must be an object such as {{\"include_usage\": true}}; got {options!r}.",
                           "stream_options")
        return stream, bool(boolean(options, "include_usage", "stream_options.include_usage"))

    async def model_entry() -> dict:
        try:
            await asyncio.to_thread(engine.ensure_ready)
        except ModelError:
            pass  # the model is named all the same; generating says why it cannot yet
        entry = {"id": engine.model_id, "object": "model", "created": 0, "owned_by": "open-dolly"}
        if engine.window:
            entry["max_model_len"] = engine.window  # as vLLM reports it; --backend reads it
        return entry

    async def models(request: Request):
        return JSONResponse({"object": "list", "data": [await model_entry()]})

    async def model(request: Request):
        """One model, as OpenAI's `GET /v1/models/{model}` answers (client.models.retrieve)."""
        entry = await model_entry()
        asked = request.path_params["model_id"]  # a Hub id keeps its slash: the route takes a path
        if asked != entry["id"]:
            raise APIError(404, f"The model '{asked}' does not exist here: this server serves '{entry['id']}'.",
                           "model", "model_not_found")
        return JSONResponse(entry)

    async def completions(request: Request):
        body = await read_body(request)
        model = await check_model(body)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise APIError(400, "prompt must be one string (token-id prompts and batches are not supported).", "prompt")
        stream, usage = stream_flags(body)
        generation = await asyncio.to_thread(
            lambda: engine.complete(prompt, stop=stop_of(body), **settings_of(body)))
        return await respond(request, generation, stream, usage, _Shape("text", model))

    async def chat_completions(request: Request):
        body = await read_body(request)
        model = await check_model(body)
        message, context, history = chat_request(body.get("messages"))
        stream, usage = stream_flags(body)
        settings = settings_of(body, ("max_completion_tokens", "max_tokens"))
        stop = stop_of(body)
        generation = await asyncio.to_thread(lambda: engine.chat(message, context, history, stop=stop, **settings))
        return await respond(request, generation, stream, usage, _Shape("chat", model))

    router.add_api_route("/models", guarded(models), methods=["GET"])
    router.add_api_route("/models/{model_id:path}", guarded(model), methods=["GET"])
    router.add_api_route("/completions", guarded(completions), methods=["POST"])
    router.add_api_route("/chat/completions", guarded(chat_completions), methods=["POST"])

    async def feedback(request: Request):
        """A rating (and perhaps a better answer) of a reply: the fields of space/feedback.py's FIELDS."""
        from space import feedback as rate

        try:
            saved = await asyncio.to_thread(rate.from_body, store, await read_body(request), engine.model_id)
        except rate.FeedbackError as error:
            raise APIError(400, str(error), error.field) from None
        return JSONResponse(rate.answer(saved))

    if store is not None:
        router.add_api_route("/feedback", guarded(feedback), methods=["POST"])
    return list(router.routes)
