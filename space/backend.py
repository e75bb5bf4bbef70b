"""`--backend URL`: generate through an OpenAI-compatible server instead of a model in this process.

vLLM (`vllm serve databricks/dolly-v2-12b`), TGI, llama.cpp's server or another open Dolly all speak
`/v1/completions`; this app sends them Dolly's own prompt (folded exactly as the Chat tab folds a
conversation), streams the answer back and stops at `### End`. A serving engine batches the replies
of many app replicas on one GPU (continuous batching), which one process generating alone cannot.

The backend may be down, slow or answering errors: each becomes a message that says so, the app
keeps serving, and the next request tries again (a backend that comes back is used at once). While
it is not answering, the app also asks it again every RECHECK_S seconds, so the status line says it
is back without anyone having to send a message first.
"""
from __future__ import annotations

import json
import threading
from typing import Iterable

import httpx

from dolly.prompt import END_KEY, format_prompt_text
from dolly.settings import setting
from space.chat import ChatInputError, conversation_input, fit_to_window, history_turns, validate_settings, visible_reply
from space.engine import Generation, Limiter, check_texts
from space.model import ModelError

# Seconds to wait for the backend: to connect, and between two streamed tokens (a cold vLLM may take
# a while for the first token of a long prompt; a longer silence means it is stuck).
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = setting("DOLLY_BACKEND_TIMEOUT")
RECHECK_S = 10.0  # while the backend is not answering, how often to ask it again
RETRY_HINT = "The app keeps running; try again once the backend is back."


class BackendError(ModelError):
    """The backend cannot answer (down, slow, or answering errors); the message says which."""


def _error_message(response: httpx.Response) -> str:
    """The message inside an OpenAI-style error body, or the start of whatever else it sent."""
    try:
        body = json.loads(response.read() or b"{}")
    except (ValueError, httpx.HTTPError):
        return f"HTTP {response.status_code}"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str):
        return error
    if isinstance(body, dict) and body.get("detail"):  # FastAPI-style servers
        return str(body["detail"])
    return f"HTTP {response.status_code}"


class BackendEngine:
    """A backend server in place of a loaded model; to the Chat tab it looks like ModelLoader
    (`state`, `status()`), to the app like `LocalEngine` (`chat`, `complete`)."""

    kind = "backend"

    def __init__(self, url: str, key: str | None = None, model: str | None = None, concurrency: int = 2,
                 recheck_s: float | None = None):
        url = (url or "").strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"--backend must be an http(s) URL such as http://gpu-host:8000/v1, got {url!r}")
        self.url = url
        self.requested_model = (model or "").strip() or None
        self.model: str | None = self.requested_model
        self.window: int | None = None  # the backend model's context length, when it says (vLLM does)
        self.limiter = Limiter(concurrency)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(
            READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S), limits=httpx.Limits(max_connections=None))
        self._state, self._error, self._lock = "loading", None, threading.Lock()
        self.recheck_s = RECHECK_S if recheck_s is None else recheck_s
        self._rechecking = False  # a thread asks the backend again every recheck_s while it is failed
        self._closed = threading.Event()

    # --- what the backend serves -------------------------------------------------------------------

    def start(self) -> "BackendEngine":
        """Ask the backend what it serves, in the background: the page serves meanwhile."""
        threading.Thread(target=self.probe, name="probe backend", daemon=True).start()
        return self

    def probe(self) -> bool:
        """GET /models: which model to use (--backend-model, or the one the backend serves) and its
        window. True when the backend answered; else the status line says why."""
        try:
            response = self._client.get("/models", timeout=httpx.Timeout(min(READ_TIMEOUT_S, 30.0),
                                                                         connect=CONNECT_TIMEOUT_S))
            if response.status_code != 200:
                raise BackendError(self._http_error(response, "listing its models"))
            models = [m for m in response.json().get("data", []) if isinstance(m, dict) and m.get("id")]
        except (httpx.HTTPError, ValueError, AttributeError) as error:
            self._set("failed", self._transport_error(error) if isinstance(error, httpx.HTTPError)
                      else f"The backend at {self.url} did not answer GET /models with a model list. "
                           "Is --backend the server's /v1 address?")
            return False
        except BackendError as error:
            self._set("failed", str(error))
            return False
        ids = [m["id"] for m in models]
        if self.requested_model and self.requested_model not in ids:
            self._set("failed", f"The backend at {self.url} does not serve '{self.requested_model}' (it serves: "
                                f"{', '.join(ids) or 'nothing'}). Fix --backend-model.")
            return False
        if not ids and not self.requested_model:
            self._set("failed", f"The backend at {self.url} serves no model. Start it with one, or name it with --backend-model.")
            return False
        self.model = self.requested_model or ids[0]
        chosen = next((m for m in models if m["id"] == self.model), {})
        window = chosen.get("max_model_len")
        self.window = int(window) if isinstance(window, int) and window > 0 else None
        self._set("ready", None)
        return True

    def _set(self, state: str, error: str | None) -> None:
        with self._lock:
            self._state, self._error = state, error
            start = state == "failed" and not self._rechecking and not self._closed.is_set()
            self._rechecking = self._rechecking or start
        if start:
            threading.Thread(target=self._recheck, name="recheck backend", daemon=True).start()

    def _recheck(self) -> None:
        """Ask the backend again every recheck_s seconds until it answers (or the app closes)."""
        while not self._closed.wait(self.recheck_s):
            try:
                self.probe()
            except RuntimeError:  # httpx: the client was closed meanwhile, the app is shutting down
                break
            with self._lock:  # checked and cleared under the lock _set starts it under: never none while failed
                if self._state != "failed":
                    self._rechecking = False
                    return
        with self._lock:
            self._rechecking = False

    @property
    def may_change(self) -> bool:
        """Whether the state may change by itself (connecting, or asking again): the Chat tab keeps
        polling the status line while it may."""
        return self._state == "loading" or self._rechecking

    @property
    def state(self) -> str:
        return self._state

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def model_id(self) -> str:
        return self.model or "unknown"

    @property
    def named_model(self) -> str | None:
        """The model the Chat tab's intro names: None until the backend has answered GET /models."""
        return self.model if self._state == "ready" else None

    def status(self) -> str:
        """One line of Markdown for the Chat tab, naming the backend and its model."""
        if self._state == "ready":
            window = f", {self.window}-token window" if self.window else ""
            return f"**Backend ready:** {self.model} at {self.url}{window}. Replies are generated there."
        if self._state == "failed":
            return (f"**The backend is not answering.** {self._error} The app asks it again every "
                    f"{self.recheck_s:g} s, and with each new message.")
        return f"**Connecting to the backend** at {self.url}…"

    def ensure_ready(self) -> None:
        """Before each request: a backend that was down or unknown is asked again."""
        if self._state != "ready" and not self.probe():
            raise BackendError(f"{self._error} {RETRY_HINT}")

    # --- errors, worded for the person chatting ----------------------------------------------------

    def _transport_error(self, error: httpx.HTTPError) -> str:
        if isinstance(error, httpx.ConnectError):
            return f"Cannot connect to the backend at {self.url} ({error}). Is it running, and is --backend right?"
        if isinstance(error, httpx.TimeoutException):
            return (f"The backend at {self.url} did not answer within {READ_TIMEOUT_S:.0f} s: it is overloaded or "
                    "stuck (set DOLLY_BACKEND_TIMEOUT to wait longer).")
        return f"The connection to the backend at {self.url} failed: {type(error).__name__}: {error}".rstrip(": ")

    def _http_error(self, response: httpx.Response, doing: str) -> str:
        message = _error_message(response)
        if response.status_code == 401:
            return (f"The backend at {self.url} refused this app's key while {doing} ({message}). Set "
                    "DOLLY_BACKEND_KEY to the key it expects.")
        return f"The backend at {self.url} answered HTTP {response.status_code} while {doing}: {message}"

    # --- generating --------------------------------------------------------------------------------

    def _settings(self, settings: dict):
        checked = validate_settings(**settings)
        return fit_to_window(checked, self.window) if self.window else checked

    def chat(self, message: str, context: str = "", history=(), stop: Iterable[str] = (), **settings) -> Generation:
        """Dolly's prompt for a chat message, folded as the Chat tab folds it, completed by the backend.

        There is no tokenizer here, so the conversation is not trimmed to the window: a backend that
        finds the prompt too long says so, and that message reaches the chat. Markers the user typed are
        defused, since the backend's tokenizer reads the whole prompt.
        """
        self.ensure_ready()
        checked = self._settings(settings)
        message = (message or "").strip()
        if not message:
            raise ChatInputError("The message is empty: type an instruction or a question.")
        check_texts(message=message, Context=context or "")
        turns = history_turns(history)
        prompt = format_prompt_text(message, conversation_input(context or "", turns) if turns else (context or ""))
        return self._generation(prompt, checked, stop, list(checked.notices))

    def complete(self, prompt: str, stop: Iterable[str] = (), **settings) -> Generation:
        """A plain completion of `prompt`, passed through to the backend."""
        self.ensure_ready()
        checked = self._settings(settings)
        if not prompt:
            raise ChatInputError("prompt is empty: send the text to complete.")
        check_texts(prompt=prompt)
        return self._generation(prompt, checked, stop, list(checked.notices))

    def _request(self, prompt: str, settings, stop: Iterable[str]) -> dict:
        body = {
            "model": self.model, "prompt": prompt, "stream": True, "max_tokens": settings.max_new_tokens,
            # Dolly ends its reply with `### End`; a backend whose tokenizer lacks the marker writes it as text.
            "stop": [END_KEY] + [s for s in stop if s and s != END_KEY][:3],
            "temperature": settings.temperature if settings.sampling else 0.0,
            "top_p": settings.top_p if settings.sampling else 1.0,
            "stream_options": {"include_usage": True},
        }
        # Not in OpenAI's own API, but vLLM, llama.cpp's server and open Dolly take them; sent only when set.
        if settings.sampling and settings.top_k > 0:
            body["top_k"] = settings.top_k
        if settings.repetition_penalty != 1.0:
            body["repetition_penalty"] = settings.repetition_penalty
        if settings.sampling and settings.seed >= 0:
            body["seed"] = settings.seed
        return body

    def _generation(self, prompt: str, settings, stop, notices) -> Generation:
        body = self._request(prompt, settings, stop)

        def produce(generation: Generation):
            raw, finish, tokens = "", None, None
            try:
                with self._client.stream("POST", "/completions", json=body) as response:
                    # Stop (or a client gone) closes the stream to the backend at once, which ends the
                    # reply there too: every serving engine aborts a request whose client went away.
                    generation.on_cancel(response.close)
                    if response.status_code != 200:
                        self._fail_http(response)
                    for line in response.iter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            break
                        chunk = json.loads(data)
                        if chunk.get("error"):
                            raise BackendError(f"The backend stopped with an error mid-reply: "
                                               f"{chunk['error'].get('message', chunk['error'])}. {RETRY_HINT}")
                        if chunk.get("usage"):
                            tokens = chunk["usage"].get("completion_tokens", tokens)
                        for choice in chunk.get("choices") or []:
                            raw += choice.get("text") or ""
                            finish = choice.get("finish_reason") or finish
                        text, ended = visible_reply(raw)
                        if text:
                            yield text
                        if ended:
                            finish = "stop"
                            break
            except (httpx.HTTPError, json.JSONDecodeError) as error:
                if generation.cancelled.is_set():
                    return  # Stop closed the stream: not an error
                if isinstance(error, httpx.HTTPError):
                    message = self._transport_error(error)
                    if isinstance(error, (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)):
                        self._set("failed", message)  # the status line says so until a request gets through
                else:
                    message = f"The backend at {self.url} sent something that is not an OpenAI stream: {error}"
                cut = " The reply above is incomplete." if raw else ""
                raise BackendError(f"{message}{cut} {RETRY_HINT}") from None
            final, _ = visible_reply(raw, final=True)
            if final:
                yield final
            generation.finished(finish or "stop", tokens)

        return Generation(produce, self.limiter, settings=settings, notices=notices, stop=stop)

    def _fail_http(self, response: httpx.Response):
        message = self._http_error(response, "generating")
        if response.status_code == 400:  # a request the backend finds wrong (too long, bad setting)
            raise ChatInputError(message)
        if response.status_code == 404:
            self._set("failed", message)  # the model went away: look again on the next request
        raise BackendError(f"{message} {RETRY_HINT}")

    def close(self) -> None:
        self._closed.set()
        self._client.close()

