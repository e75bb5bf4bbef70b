"""What the Chat tab measures for its user, in small print: a reply's length and speed once it is
written (as Open WebUI shows), and how much of the model's window the next prompt takes, with a
warning before sending when something would be left out.

The prompt is counted by space/chat.py's own build_prompt, the function that builds the prompt sent:
one rule for counting and trimming, so the meter can never disagree with what happens.
"""
from space.chat import ChatInputError, build_prompt, fit_to_window, prompt_budget, validate_settings

# Past this share of the prompt's budget the meter says the window is nearly full.
NEARLY_FULL = 0.9


def reply_stats(tokens: int | None, seconds: float, first_token_seconds: float | None = None) -> str:
    """'42 tokens · 12.3 tokens/s · 3.4 s' for a reply of `tokens` written in `seconds` (from the first
    piece of text to the last: the rate of writing, not of waiting in the queue or reading the prompt).
    `tokens` None (a remote backend that does not say): the time alone."""
    parts = []
    if tokens is not None:
        parts.append(f"{tokens:,} token{'s' if tokens != 1 else ''}")
        if tokens > 1 and seconds > 0:
            # The first piece arrives at the start of the span, so the span covers the other tokens.
            parts.append(f"{(tokens - 1) / seconds:,.1f} tokens/s")
    parts.append(f"{seconds:,.1f} s")
    if first_token_seconds is not None:
        parts.append(f"first words after {first_token_seconds:,.1f} s")
    return " · ".join(parts)


def prompt_meter(tokenizer, window: int, message: str, context: str, history, max_new_tokens) -> tuple[str, bool]:
    """(a line saying how many of the window's tokens the next prompt takes, whether it warns).

    The prompt is built exactly as sending would build it (`message` empty: as if one word were typed).
    It warns when sending now would leave something out (the Context's start, the oldest turns) or
    fail (a message too long), and when the prompt is nearly at its budget."""
    try:
        settings = fit_to_window(validate_settings(max_new_tokens=max_new_tokens), window)
    except ChatInputError as error:
        return f"⚠️ {error}", True
    budget = prompt_budget(window, settings.max_new_tokens)
    try:
        prompt = build_prompt(tokenizer, (message or "").strip() or "…", context or "", history, window=window,
                              max_new_tokens=settings.max_new_tokens)
    except ChatInputError as error:
        return f"⚠️ Sending this would fail: {error}", True
    used = len(prompt.input_ids)
    line = (f"Prompt: {used:,} of {budget:,} tokens ({window:,}-token window, "
            f"{settings.max_new_tokens:,} kept for the reply)")
    if prompt.notices:
        future = " ".join(prompt.notices).replace(" were left out", " would be left out").replace(
            " was left out", " would be left out")
        return f"⚠️ {line}. If sent now: {future}", True
    if used > NEARLY_FULL * budget:
        return f"⚠️ {line}: nearly full; the next turns will push the oldest out.", True
    return line, False
