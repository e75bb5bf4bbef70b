"""Dolly's prompt format: the one contract between training (train/) and the chat app (space/).

Everything that writes or reads a Dolly prompt imports it from here, so a model trained by
`python -m train` and the published databricks/dolly-v2-* models are prompted identically.
The strings are byte-for-byte those of databrickslabs/dolly (training/consts.py).
"""

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


def format_prompt(instruction: str, context: str = "") -> str:
    """The prompt a model completes: everything up to and including the response marker.

    An empty (or whitespace-only) context leaves the `Input:` block out, as in the dataset's
    no-context categories.
    """
    parts = [INTRO_BLURB, f"{INSTRUCTION_KEY}\n{instruction}"]
    if context and context.strip():
        parts.append(f"{INPUT_KEY}\n{context}")
    parts.append(RESPONSE_KEY_NL)
    return "\n\n".join(parts)


def format_completion(response: str) -> str:
    """What the model learns to write after the prompt: the response, then the end marker."""
    return f"{response}\n\n{END_KEY}"


def format_example(instruction: str, response: str, context: str = "") -> str:
    """A whole training record as one text (prompt followed by completion)."""
    return format_prompt(instruction, context) + format_completion(response)


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
