"""Uploads refused outright: no screen or API endpoint of the app takes a file.

Gradio serves POST /gradio_api/upload (and /gradio_api/process_recording, for microphone and camera
recordings) for every app and keeps what it is sent in its cache (for a day, by default), whether or
not the app has an upload control, and without a login when the app has no --auth. This ASGI
middleware answers those routes 403, with a message saying why, and Gradio never
sees the request: nothing is stored. Gradio's /gradio_api/component_server also takes files, as
multipart forms read whole into memory (up to 1,000 files of max_file_size each); no component of this
app has a server function that takes one, so a multipart body there is refused the same way (its JSON
calls pass). The body is read and dropped first (up to DRAIN_BYTES), as most
clients (urllib, requests) only read an answer once they have sent their whole request.
"""
from __future__ import annotations

import json

UPLOAD_PATHS = ("/gradio_api/upload", "/gradio_api/process_recording")
MULTIPART_PATHS = ("/gradio_api/component_server",)  # refused only when the body is a multipart form
DRAIN_BYTES = 16 * 1024 * 1024  # beyond this the answer goes at once and the connection closes
MESSAGE = ("This app takes no uploads: no control or API endpoint of open Dolly accepts a file, so "
           "Gradio's upload routes are closed. Send text to /v1 or the Gradio API endpoints instead.")


class RefuseUploads:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not _is_upload(scope):
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


def _is_upload(scope) -> bool:
    path = scope["path"].rstrip("/")
    if path in UPLOAD_PATHS:
        return True
    content_type = dict(scope.get("headers") or []).get(b"content-type", b"")
    return path in MULTIPART_PATHS and content_type.lower().startswith(b"multipart/form-data")
