"""A conversation of the Chat tab as a file: Markdown to read, and JSON in the OpenAI messages shape
to send again (to this app's /v1/chat/completions or any OpenAI-style server).

The Chat tab's transcript holds three kinds of message besides the user's and the model's: notices
(a quoted line: "Stopped.", "Could not answer."), and the passage a question used, folded under it.
Both are assistant messages marked in their metadata `id`; this module names the marks, because the
export reads them (and space/tab.py writes them). A model's reply carries the generation settings it was
written with in its own mark, so a rating given later (space/feedback.py) stores those, not the ones the
settings panel holds by then.
"""
import json

from space.chat import content_text

NOTICE = "notice:"  # metadata id prefix of a notice; the rest is its title
PASSAGE = "passage:"  # metadata id of the passage a question used
PASSAGE_TITLE = "Passage this question used"
REPLY = "reply:"  # metadata id prefix of a model's reply; the rest is its generation settings as JSON


def _metadata_id(message) -> str:
    return str(((message.get("metadata") or {}) if isinstance(message, dict) else {}).get("id") or "")


def is_passage(message) -> bool:
    return _metadata_id(message) == PASSAGE


def is_notice(message) -> bool:
    return _metadata_id(message).startswith(NOTICE)


def reply_message(text: str, settings: dict) -> dict:
    """A model's reply, marked with the generation settings it was written with."""
    return {"role": "assistant", "content": text,
            "metadata": {"id": REPLY + json.dumps(settings, sort_keys=True, separators=(",", ":"))}}


def reply_settings(message) -> dict | None:
    """The generation settings a reply was written with (`reply_message`), or None when it does not say."""
    marker = _metadata_id(message)
    if not marker.startswith(REPLY):
        return None
    try:
        settings = json.loads(marker[len(REPLY):])
    except ValueError:
        return None
    return settings if isinstance(settings, dict) else None


def passage_message(context: str) -> dict:
    """The passage a question used, shown folded (Gradio folds a titled message whose status is done)."""
    return {"role": "assistant", "content": context.strip(),
            "metadata": {"id": PASSAGE, "title": PASSAGE_TITLE, "status": "done"}}


def _turns(history):
    """(kind, text) for each message: "user", "assistant", "passage" or "notice"."""
    for message in history or []:
        if not isinstance(message, dict):
            continue
        text = content_text(message.get("content"))
        if is_passage(message):
            yield "passage", text
        elif is_notice(message):
            yield "notice", text
        elif message.get("role") in ("user", "assistant"):
            yield message["role"], text


def openai_messages(history) -> list[dict]:
    """The conversation as OpenAI chat messages: [{"role", "content"}]. A passage goes where a /v1 caller
    sends it, as a system message (the app's /v1 reads system messages as the Context): one before the
    first question that used it, and again before a question that used a different one. Notices are no
    part of the conversation and are left out."""
    messages, passage_in_force, pending_passage = [], "", None
    items = list(_turns(history))
    for i, (kind, text) in enumerate(items):
        if kind == "user":
            # The passage a question used sits right after it in the transcript.
            following = items[i + 1] if i + 1 < len(items) else None
            pending_passage = following[1] if following and following[0] == "passage" else ""
            if pending_passage and pending_passage != passage_in_force:
                messages.append({"role": "system", "content": pending_passage})
                passage_in_force = pending_passage
            messages.append({"role": "user", "content": text})
        elif kind == "assistant":
            messages.append({"role": "assistant", "content": text})
    return messages


def to_json(history) -> str:
    return json.dumps(openai_messages(history), ensure_ascii=False, indent=2) + "\n"


def _quote(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.splitlines())


def to_markdown(history, title: str = "Chat with Dolly") -> str:
    """The conversation as Markdown: a heading per message, the passage a question used quoted under
    it, and notices (a stopped reply, an error) in italics where they were."""
    parts = [f"# {title.strip() or 'Chat with Dolly'}"]
    for kind, text in _turns(history):
        if kind == "user":
            parts.append(f"**You:**\n\n{text}")
        elif kind == "passage":
            parts.append(f"*Passage this question used:*\n\n{_quote(text)}")
        elif kind == "notice":
            parts.append("*" + " ".join(text.lstrip("> ").replace("**", "").split()) + "*")
        else:
            parts.append(f"**Dolly:**\n\n{text}")
    return "\n\n".join(parts) + "\n"


def file_name(title: str, extension: str) -> str:
    """A safe download name from a chat's title: letters, digits and dashes, at most 60 characters."""
    stem = "".join(ch if ch.isalnum() else "-" for ch in (title or "").lower())
    stem = "-".join(part for part in stem.split("-") if part)[:60].strip("-") or "chat"
    return f"dolly-{stem}.{extension}"
