"""Rate limiting of failed logins, per client, in front of Gradio's own `--auth` login.

Gradio checks a password as often as it is asked, so without a limit a script can try thousands a
second. This ASGI middleware watches the answers to POST /login: after `max_failures` wrong passwords
from one client within `window` seconds, that client's next tries are answered 429 (with Retry-After)
until the window has passed, without reaching the password check. Other clients are not affected, and
a right password is never slowed down before the limit is reached.
"""
from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque

MAX_FAILURES = 10
WINDOW_S = 60.0


class LoginRateLimit:
    def __init__(self, app, max_failures: int = MAX_FAILURES, window: float = WINDOW_S):
        self.app, self.max_failures, self.window = app, max_failures, window
        self._failures: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque:
        failures = self._failures[client]
        while failures and now - failures[0] > self.window:
            failures.popleft()
        return failures

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].rstrip("/").endswith("/login"):
            return await self.app(scope, receive, send)
        client = (scope.get("client") or ("unknown", 0))[0]
        now = time.monotonic()
        with self._lock:
            failures = self._recent(client, now)
            wait = self.window - (now - failures[0]) if len(failures) >= self.max_failures else 0
        if wait > 0:
            body = json.dumps({"detail": f"Too many failed logins from this address: try again in {wait:.0f} s."}).encode()
            await send({"type": "http.response.start", "status": 429,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", str(int(wait) + 1).encode())]})
            await send({"type": "http.response.body", "body": body})
            return

        async def watch(message):
            # Gradio answers a wrong password with 400 (and a right one with 200 and a cookie).
            if message["type"] == "http.response.start" and message["status"] in (400, 401):
                with self._lock:
                    self._recent(client, time.monotonic()).append(time.monotonic())
            await send(message)

        await self.app(scope, receive, watch)
