"""Uploads refused outright: no screen or API endpoint of the app takes a file.

Gradio serves POST /gradio_api/upload (and /gradio_api/process_recording, for microphone and camera
recordings) for every app and keeps what it is sent in its cache (for a day, by default), whether or
not the app has an upload control, and without a login when the app has no --auth. This ASGI
middleware answers those routes 403, with a message saying why, and Gradio never
sees the request: nothing is stored. The body is read and dropped first (up to DRAIN_BYTES), as most
clients (urllib, requests) only read an answer once they have sent their whole request.
"""
from __future__ import annotations

import json

UPLOAD_PATHS = ("/gradio_api/upload", "/gradio_api/process_recording")
DRAIN_BYTES = 16 * 1024 * 1024  # beyond this the answer goes at once and the connection closes
MESSAGE = ("This app takes no uploads: no control or API endpoint of open Dolly accepts a file, so "
           "Gradio's upload routes are closed. Send text to /v1 or the Gradio API endpoints instead.")


class RefuseUploads:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].rstrip("/") not in UPLOAD_PATHS:
            return await self.app(scope, receive, send)
        drained = 0
        while drained <= DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = json.dumps({"detail": MESSAGE}).encode()
        # "connection: close": the connection is not reused after an answer to a request not read whole.
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
