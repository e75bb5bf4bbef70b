"""The Chat tab's conversation list, kept in the user's own browser (localStorage, through Gradio's
gr.BrowserState): nothing of one user's chats is stored on the server.

A store is plain JSON:
    {"version": 1, "active": id or None,
     "conversations": [{"id", "title", "renamed", "created", "updated",
                        "history", "context", "settings", "reference"}, ...]}
and a *live* record ({"id", "conversation"}) holds the conversation whose reply is being written, saved
as the reply grows: a reload mid-reply finds it there and brings it back, cut where it was.

Whatever the browser sends back is checked (`clean_store`): localStorage is the user's to edit, and an
older or damaged value must open as an empty list, never as an error.
"""
import json
import time
import uuid

VERSION = 1
# localStorage holds about 5 MB per site (Chrome counts UTF-16 characters; Gradio stores the JSON
# AES-encrypted in base64, a third larger). The list keeps the newest 50 conversations and at most
# ~1.5 million characters of JSON; past either, the conversations used longest ago are dropped.
MAX_CONVERSATIONS = 50
MAX_STORE_CHARS = 1_500_000
TITLE_CHARS = 60
NEW_TITLE = "New chat"


def empty_store() -> dict:
    return {"version": VERSION, "active": None, "conversations": []}


def _text(content) -> str:
    from space.chat import content_text

    return content_text(content)


def _is_conversation(value) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("id"), str) and value["id"]
            and isinstance(value.get("history", []), list))


def clean_store(value) -> dict:
    """A valid store from whatever the browser holds (None, an older shape, a hand-edited value)."""
    if not isinstance(value, dict) or not isinstance(value.get("conversations"), list):
        return empty_store()
    conversations, seen = [], set()
    for item in value["conversations"]:
        if not _is_conversation(item) or item["id"] in seen:
            continue
        seen.add(item["id"])
        conversations.append(clean_conversation(item))
    active = value.get("active")
    return {"version": VERSION, "active": active if active in seen else None, "conversations": conversations}


def clean_conversation(item: dict) -> dict:
    history = [m for m in item.get("history") or [] if isinstance(m, dict) and m.get("role") in ("user", "assistant")]
    settings = item.get("settings") if isinstance(item.get("settings"), dict) else {}
    now = time.time()
    return {
        "id": item["id"],
        "title": str(item.get("title") or title_of(history)),
        "renamed": bool(item.get("renamed")),
        "created": _number(item.get("created"), now),
        "updated": _number(item.get("updated"), now),
        "history": history,
        "context": str(item.get("context") or ""),
        "settings": settings,
        "reference": str(item.get("reference") or ""),
    }


def _number(value, default: float) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def title_of(history) -> str:
    """A conversation's title: its first message, on one line, cut at a word near TITLE_CHARS."""
    for message in history or []:
        if isinstance(message, dict) and message.get("role") == "user":
            text = " ".join(_text(message.get("content")).split())
            if text:
                if len(text) <= TITLE_CHARS:
                    return text
                cut = text[:TITLE_CHARS].rsplit(" ", 1)[0] or text[:TITLE_CHARS]
                return cut.rstrip(" ,.;:") + "…"
    return NEW_TITLE


def find(store: dict, conversation_id) -> dict | None:
    return next((c for c in store["conversations"] if c["id"] == conversation_id), None)


def ordered(store: dict) -> list[dict]:
    """Newest first: the conversation written to last is at the top (as HuggingChat and ChatGPT order)."""
    return sorted(store["conversations"], key=lambda c: c["updated"], reverse=True)


def choices(store: dict) -> list[tuple[str, str]]:
    """(title, id) for the list, newest first."""
    return [(c["title"], c["id"]) for c in ordered(store)]


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def save(store, conversation_id, history, context="", settings=None, reference="", now=None) -> tuple[dict, str | None]:
    """The store with this conversation written into it, made the active one, then the cap applied:
    (store, its id). A conversation with no message yet is not saved (a new chat that was never used
    leaves nothing in the list); its id is None until its first message."""
    store = clean_store(store)
    now = time.time() if now is None else now
    history = [m for m in history or [] if isinstance(m, dict)]
    existing = find(store, conversation_id) if conversation_id else None
    if existing is None and not any(m.get("role") == "user" for m in history):
        return store, conversation_id if conversation_id else None
    if existing is None:
        existing = {"id": conversation_id or new_id(), "renamed": False, "created": now}
        store["conversations"].append(existing)
    existing.update(history=history, context=context or "", settings=dict(settings or {}),
                    reference=reference or "", updated=now)
    if not existing.get("renamed"):
        existing["title"] = title_of(history)
    store["active"] = existing["id"]
    return enforce_cap(store, keep=existing["id"]), existing["id"]


def store_chars(store: dict) -> int:
    return len(json.dumps(store, ensure_ascii=False))


def enforce_cap(store: dict, keep=None) -> dict:
    """At most MAX_CONVERSATIONS conversations and MAX_STORE_CHARS characters: the ones used longest ago
    go first; `keep` (the one open) is never dropped, however long it is."""
    newest = ordered(store)
    kept = newest[:MAX_CONVERSATIONS]
    if keep and all(c["id"] != keep for c in kept):
        kept = [c for c in newest if c["id"] == keep] + kept[:MAX_CONVERSATIONS - 1]
    store = dict(store, conversations=kept)
    while len(store["conversations"]) > 1 and store_chars(store) > MAX_STORE_CHARS:
        oldest = next(c for c in reversed(ordered(store)) if c["id"] != keep)
        store["conversations"] = [c for c in store["conversations"] if c is not oldest]
    if store.get("active") and not find(store, store["active"]):
        store["active"] = None
    return store


def rename(store, conversation_id, title) -> dict:
    """The store with that conversation renamed; an empty title is an error saying so."""
    store = clean_store(store)
    conversation = find(store, conversation_id)
    if conversation is None:
        raise ValueError("There is no saved chat to rename yet: send a message first.")
    title = " ".join(str(title or "").split())[:200]
    if not title:
        raise ValueError("A chat's title cannot be empty: type a title, then press Rename.")
    conversation.update(title=title, renamed=True)
    return store


def delete(store, conversation_id) -> tuple[dict, str | None]:
    """(the store without that conversation, the id to show next: the newest left, or None)."""
    store = clean_store(store)
    store["conversations"] = [c for c in store["conversations"] if c["id"] != conversation_id]
    following = ordered(store)
    store["active"] = following[0]["id"] if following else None
    return store, store["active"]


def open_(store, conversation_id) -> tuple[dict, dict | None]:
    """(the store with that conversation made the active one, the conversation), or (store, None)."""
    store = clean_store(store)
    conversation = find(store, conversation_id)
    if conversation is not None:
        store["active"] = conversation_id
    return store, conversation


# No reply being written. Not None: Gradio's BrowserState writes nothing for a falsy value, so None would
# leave the last reply's copy in localStorage, and the next reload would mark it cut.
NO_LIVE = {"id": None}


def live_record(conversation_id, history, context, settings, reference) -> dict:
    """What is saved while a reply is being written (the newest state of the reply)."""
    return {"id": conversation_id, "history": list(history or []), "context": context or "",
            "settings": dict(settings or {}), "reference": reference or ""}


def merge_live(store, live, cut_note: dict) -> dict:
    """The store after a reload: a reply that was being written when the page went (`live` still set)
    is put back into its conversation, with `cut_note` after it to say it was cut there."""
    store = clean_store(store)
    if not isinstance(live, dict) or not isinstance(live.get("id"), str) or not isinstance(live.get("history"), list):
        return store
    history = [m for m in live["history"] if isinstance(m, dict)] + [cut_note]
    existing = find(store, live["id"])
    reference = live.get("reference") if live.get("reference") is not None else (existing or {}).get("reference", "")
    store, _ = save(store, live["id"], history, str(live.get("context") or ""),
                    live.get("settings") if isinstance(live.get("settings"), dict) else {}, str(reference or ""))
    return store
