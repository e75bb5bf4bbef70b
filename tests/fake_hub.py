"""A fake Hugging Face Hub: a real HTTP server on 127.0.0.1 that answers the few endpoints
huggingface_hub's `whoami`, `create_repo`, `upload_folder`, `add_space_variable` and
`request_space_hardware` call (who am I, create repo, validate a README's metadata, pre-upload,
commit, Space variables and hardware), for model and Space repos alike, so the real client code
runs and only the unreachable Hub is replaced, at its HTTP boundary.

Every file is answered "regular" at pre-upload, so the commit carries the contents inline
(base64 in the NDJSON commit body) and no LFS/Xet storage is needed.
"""
import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    def __init__(self, token: str, refuse: bool = False, role: str = "write", user: str = "me"):
        self.token, self.refuse, self.role, self.user = token, refuse, role, user
        self.repos, self.files, self.requests, self.validated = {}, {}, [], []  # files: {repo_id: {path: bytes}}
        self.variables, self.hardware = {}, {}  # Spaces: {repo_id: {key: value}}, {repo_id: flavor}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _reply(self, status, payload):
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self):
                return self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))

            def _authorized(self):
                return not hub.refuse and self.headers.get("Authorization") == f"Bearer {hub.token}"

            def do_GET(self):
                hub.requests.append(("GET", self.path))
                if self.path.split("?")[0] == "/api/whoami-v2":
                    if not self._authorized():
                        return self._reply(401, {"error": "Invalid credentials in Authorization header"})
                    return self._reply(200, {"type": "user", "name": hub.user, "orgs": [],
                                             "auth": {"type": "access_token",
                                                      "accessToken": {"displayName": "test", "role": hub.role}}})
                self._reply(404, {"error": f"fake hub: no GET {self.path}"})

            def do_POST(self):
                body = self._body()
                hub.requests.append(("POST", self.path))
                if not self._authorized():
                    return self._reply(401, {"error": "Invalid credentials in Authorization header"})
                parts = self.path.split("?")[0].strip("/").split("/")
                repo_kinds = ("models", "spaces", "datasets")
                if parts[:2] == ["api", "validate-yaml"]:
                    # Uploading a README.md makes the client ask the Hub to validate its metadata.
                    hub.validated.append(json.loads(body)["content"])
                    return self._reply(200, {"errors": [], "warnings": []})
                if parts[:3] == ["api", "repos", "create"]:
                    data = json.loads(body)
                    repo_id = f"{data['organization']}/{data['name']}" if data.get("organization") else data["name"]
                    hub.repos[repo_id] = data
                    return self._reply(200, {"url": f"http://{self.headers['Host']}/{repo_id}", "name": repo_id})
                if parts[:2] == ["api", "spaces"] and len(parts) == 5 and parts[4] in ("variables", "hardware"):
                    repo_id, data = f"{parts[2]}/{parts[3]}", json.loads(body)
                    if repo_id not in hub.repos:
                        return self._reply(404, {"error": f"Repository not found: {repo_id}"})
                    if parts[4] == "variables":
                        hub.variables.setdefault(repo_id, {})[data["key"]] = data["value"]
                        return self._reply(200, {k: {"value": v, "updatedAt": "2026-01-01T00:00:00.000Z"}
                                                 for k, v in hub.variables[repo_id].items()})
                    hub.hardware[repo_id] = data["flavor"]
                    return self._reply(200, {"stage": "BUILDING", "hardware": {"current": None,
                                                                               "requested": data["flavor"]},
                                             "storage": None, "gcTimeout": None, "replicas": None})
                if parts[1:2] and parts[1] in repo_kinds and len(parts) >= 6 and parts[4] == "preupload":
                    files = json.loads(body)["files"]
                    return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                        "shouldIgnore": False} for f in files]})
                if parts[1:2] and parts[1] in repo_kinds and len(parts) >= 6 and parts[4] == "commit":
                    repo_id = f"{parts[2]}/{parts[3]}"
                    stored = hub.files.setdefault(repo_id, {})
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            stored[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    return self._reply(200, {"commitUrl": f"http://{self.headers['Host']}/{repo_id}/commit/1",
                                             "commitOid": "1" * 40, "pullRequestUrl": None})
                self._reply(404, {"error": f"fake hub: no POST {self.path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
