"""Dolly's prompt format: the one contract between training (train/) and the chat app (space/).

Everything that writes or reads a Dolly prompt imports it from here, so a model trained by
`python -m train` and the published databricks/dolly-v2-* models are prompted identically.
The strings are byte-for-byte those of databrickslabs/dolly (training/consts.py).
"""
import threading
import weakref

INTRO_BLURB = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
INSTRUCTION_KEY = "### Instruction:"
INPUT_KEY = "Input:"
RESPONSE_KEY = "### Response:"
END_KEY = "### End"
# The response marker is a special token *with* its newline, as in dolly-v2's tokenizer (id 50279).
RESPONSE_KEY_NL = f"{RESPONSE_KEY}\n"

# Added to the tokenizer in this order, so Pythia's 50,277-token vocabulary gives them ids
# 50277, 50278, 50279 exactly as in databricks/dolly-v2-*.
SPECIAL_TOKENS = [END_KEY, INSTRUCTION_KEY, RESPONSE_KEY_NL]

DEFAULT_SEED = 42


def prompt_parts(instruction: str, context: str = "") -> list:
    """The prompt as a list of text pieces and the template's own markers (in a tuple, to tell them apart).

    Text next to text is joined before tokenizing, exactly as one string would be; only the markers
    the template put there may become Dolly's special tokens.
    """
    parts = [f"{INTRO_BLURB}\n\n", (INSTRUCTION_KEY,), f"\n{instruction}"]
    if context and context.strip():
        parts.append(f"\n\n{INPUT_KEY}\n{context}")
    parts += ["\n\n", (RESPONSE_KEY_NL,)]
    return parts


def completion_parts(response: str) -> list:
    """The completion (response and end marker) in prompt_parts' form. Public, with prompt_parts, for code
    that must count or tokenize records exactly as training does without going through a tokenizer call per
    record (explorer/signals.py batches them)."""
    return [f"{response}\n\n", (END_KEY,)]


def _text(parts) -> str:
    return "".join(part[0] if isinstance(part, tuple) else part for part in parts)


def format_prompt(instruction: str, context: str = "") -> str:
    """The prompt a model completes: everything up to and including the response marker.

    An empty (or whitespace-only) context leaves the `Input:` block out, as in the dataset's
    no-context categories.
    """
    return _text(prompt_parts(instruction, context))


def defuse_markers(text: str) -> str:
    """`text` with each copy of Dolly's markers in it made plain text for any tokenizer: the space after
    `###` becomes a no-break space (the same to a reader, never the special token)."""
    for key in (END_KEY, INSTRUCTION_KEY, RESPONSE_KEY):
        text = text.replace(key, key.replace("### ", "###\u00a0", 1))
    return text


def format_prompt_text(instruction: str, context: str = "") -> str:
    """format_prompt for a server that tokenizes the whole prompt itself (`--backend`), and so would read
    a marker the user typed as Dolly's special token: the user's text is defused first, and only the
    template's own markers stay markers. (With a tokenizer at hand, encode_prompt does this exactly.)"""
    return format_prompt(defuse_markers(instruction), defuse_markers(context))


def format_completion(response: str) -> str:
    """What the model learns to write after the prompt: the response, then the end marker."""
    return _text(completion_parts(response))


def format_example(instruction: str, response: str, context: str = "") -> str:
    """A whole training record as one text (prompt followed by completion)."""
    return format_prompt(instruction, context) + format_completion(response)


_plain_backends = weakref.WeakKeyDictionary()
_plain_lock = threading.Lock()


def _encode_plain(tokenizer, text: str) -> list[int]:
    """Ids of `text` with special tokens read as plain text.

    Not `tokenizer.encode(..., split_special_tokens=True)`: transformers implements that by flipping a
    flag on the one shared Rust tokenizer, so two requests encoding at once (the app serves several)
    can each see the other's setting, and a template marker of one prompt came out as plain text. A
    copy of the backend with the flag set for good is never flipped by anyone.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a slow (Python) tokenizer: no shared Rust state, but keep calls one at a time
        with _plain_lock:
            return tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)
    with _plain_lock:
        size, plain = _plain_backends.get(tokenizer, (None, None))
        if plain is None or size != len(tokenizer):  # new, or tokens were added since the copy was made
            from tokenizers import Tokenizer

            plain = Tokenizer.from_str(backend.to_str())
            plain.encode_special_tokens = True
            plain.no_truncation()
            plain.no_padding()
            _plain_backends[tokenizer] = (len(tokenizer), plain)
    return plain.encode(text, add_special_tokens=False).ids


def _encode(tokenizer, parts) -> list[int]:
    """Token ids of `parts` in which only the template's markers can be special tokens.

    User text is encoded with special tokens split (_encode_plain), so a message containing `### Response:` is
    plain text, never the marker: the prompt's structure is always exactly the template's. Special
    tokens split a text into independently tokenized pieces anyway, so for text without markers the
    ids are the same as tokenizing the joined string.
    """
    ids, text = [], ""
    for part in parts:
        marker_id = special_token_id(tokenizer, part[0]) if isinstance(part, tuple) else None
        if marker_id is None:  # plain text, or a marker this tokenizer only has as text (a base Pythia)
            text += part[0] if isinstance(part, tuple) else part
            continue
        if text:
            ids += _encode_plain(tokenizer, text)
            text = ""
        ids.append(marker_id)
    if text:
        ids += _encode_plain(tokenizer, text)
    return ids


def encode_prompt(tokenizer, instruction: str, context: str = "") -> list[int]:
    """The ids of format_prompt(instruction, context), with user text never read as special tokens."""
    return _encode(tokenizer, prompt_parts(instruction, context))


def encode_completion(tokenizer, response: str) -> list[int]:
    """The ids of format_completion(response), with the response never read as special tokens."""
    return _encode(tokenizer, completion_parts(response))


def encode_text(tokenizer, text: str) -> list[int]:
    """Ids of user text alone (no markers of its own, whatever it contains)."""
    return _encode_plain(tokenizer, text) if text else []


def add_special_tokens(tokenizer) -> int:
    """Add Dolly's three markers as special tokens and make pad = eos (Pythia has no pad token).

    Returns how many tokens were new, so the caller knows whether to resize embeddings.
    """
    added = tokenizer.add_special_tokens({"extra_special_tokens": SPECIAL_TOKENS}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None or tokenizer.pad_token != tokenizer.eos_token:
        tokenizer.pad_token = tokenizer.eos_token
    return added


def special_token_id(tokenizer, key: str):
    """The single token id of a marker, or None when this tokenizer does not have it as one token
    (a base Pythia, say), in which case callers fall back to text matching."""
    ids = tokenizer.encode(key, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


def stop_token_ids(tokenizer) -> list:
    """EOS and every Dolly marker that this tokenizer has as one token: the model is done when it
    writes `### End`, and a new `### Instruction:` would be the model talking to itself."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for key in SPECIAL_TOKENS:
        token = special_token_id(tokenizer, key)
        if token is not None and token in tokenizer.all_special_ids and token not in ids:
            ids.append(token)
    return ids


def extract_response(text: str) -> str:
    """The response inside a decoded generation: after the last response marker, before `### End`.

    Works on text with or without the prompt in front, and on a response cut off before its end
    marker (a max-tokens stop), which is returned whole.
    """
    start = text.rfind(RESPONSE_KEY)
    if start != -1:
        text = text[start + len(RESPONSE_KEY):]
    end = text.find(END_KEY)
    if end != -1:
        text = text[:end]
    return text.strip()
