"""Under --auth, nothing about the app without a login: every route but the login page's own.

Gradio checks the login on most of its routes, but not all: FastAPI's /openapi.json (the list of
every route) and a few others answer anyone. This ASGI middleware, in front of all of them, lets a
request through only when it carries Gradio's login cookie (checked exactly as Gradio checks it), or
when it is one of what the login page itself needs before there is a login (OPEN below). /v1 goes
to its own check: its API key (DOLLY_API_KEY), or refused when the app has none.
"""
from __future__ import annotations

import json
from http.cookies import SimpleCookie

# What the login page needs before anyone has logged in, checked in a real browser
# (tests/test_app_server.py walks every route):
OPEN_EXACT = {
    ("GET", "/"),  # Gradio answers the login page here until there is a login (HEAD is read as GET)
    ("POST", "/login"), ("POST", "/login/"),  # the login form (rate-limited by dolly.login_limit)
    ("GET", "/logout"),  # only clears the login cookie
    ("GET", "/favicon.ico"), ("GET", "/theme.css"), ("GET", "/gradio_api/theme.css"),
    ("GET", "/manifest.json"), ("GET", "/pwa_icon"), ("GET", "/robots.txt"),
    # launch() asks the server itself for this, without a cookie, to start the queue; it returns a bool
    ("GET", "/gradio_api/startup-events"),
}
OPEN_PREFIXES = (
    ("GET", "/assets/"),  # the page's scripts and styles (Gradio's built front end, the same for every app)
    ("GET", "/static/"),  # Gradio's own static files (fonts, images)
    ("GET", "/pwa_icon/"),
)
OWN_CHECK_PREFIX = "/v1/"  # the OpenAI API checks its key itself (space/openai_api.py)
MESSAGE = "Not logged in: this app was started with --auth. Log in at / first."


def is_open(method: str, path: str) -> bool:
    """Whether a request may reach the app without a login."""
    method = "GET" if method == "HEAD" else method
    return ((method, path) in OPEN_EXACT or any(method == m and path.startswith(p) for m, p in OPEN_PREFIXES)
            or path.startswith(OWN_CHECK_PREFIX) or path == OWN_CHECK_PREFIX.rstrip("/"))


def logged_in(gradio_app, headers) -> bool:
    """Whether the request's cookies hold a login Gradio gave (its get_current_user, read the same way)."""
    cookies = SimpleCookie()
    for name, value in headers:
        if name == b"cookie":
            try:
                cookies.load(value.decode("latin-1"))
            except Exception:  # a malformed cookie header is no login
                return False
    cookie_id = getattr(gradio_app, "cookie_id", None)
    for name in (f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}"):
        if name in cookies and gradio_app.tokens.get(cookies[name].value) is not None:
            return True
    return False


class RequireLogin:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or is_open(scope.get("method", "GET"), scope["path"]):
            return await self.app(scope, receive, send)
        gradio_app = scope.get("app")  # Starlette puts the application (Gradio's App) in the scope
        if gradio_app is not None and logged_in(gradio_app, scope.get("headers") or []):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"detail": MESSAGE}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
