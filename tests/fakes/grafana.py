"""A local stand-in for the few Grafana HTTP API calls ``lab grafana push`` makes.

Request and response bodies follow Grafana's HTTP API reference (data sources, folders,
dashboards); it keeps state in memory, checks the bearer token, and records every request.
It proves endpoints and payloads, not Grafana's own semantics (no real Grafana runs here).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeGrafana", "fake_grafana"]


@dataclass
class FakeGrafana:
    token: str
    url: str = ""
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> {"dashboard", "folderUid"}
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    _next_id: int = 1

    def writes(self) -> list[tuple[str, str]]:
        return [(method, path) for method, path, _ in self.requests if method != "GET"]

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # --- handlers: (status, body) ------------------------------------------------------

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        routes = [
            ("GET", r"/api/health", lambda: (200, {"database": "ok", "version": "11.6.0", "commit": "fake"})),
            ("GET", r"/api/datasources/uid/(?P<uid>[^/]+)", self._get_datasource),
            ("POST", r"/api/datasources", lambda: self._create_datasource(body)),
            ("PUT", r"/api/datasources/uid/(?P<uid>[^/]+)", lambda uid: self._update_datasource(uid, body)),
            ("GET", r"/api/folders/(?P<uid>[^/]+)", self._get_folder),
            ("POST", r"/api/folders", lambda: self._create_folder(body)),
            ("PUT", r"/api/folders/(?P<uid>[^/]+)", lambda uid: self._update_folder(uid, body)),
            ("GET", r"/api/dashboards/uid/(?P<uid>[^/]+)", self._get_dashboard),
            ("POST", r"/api/dashboards/db", lambda: self._save_dashboard(body)),
        ]
        for verb, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if verb == method and match:
                return handler(**match.groupdict())
        return 404, {"message": "Not found"}

    def _stored_datasource(self, uid: str) -> dict[str, Any]:
        ds = self.datasources[uid]
        public = {k: v for k, v in ds.items() if k != "secureJsonData"}
        return {"orgId": 1, "basicAuth": False, "withCredentials": False, "isDefault": False, "readOnly": False,
                **public, "secureJsonFields": {k: True for k in ds.get("secureJsonData", {})}}

    def _get_datasource(self, uid: str) -> tuple[int, Any]:
        if uid not in self.datasources:
            return 404, {"message": "Data source not found"}
        return 200, self._stored_datasource(uid)

    def _create_datasource(self, body: dict[str, Any]) -> tuple[int, Any]:
        if not body.get("name") or not body.get("type"):
            return 400, {"message": "bad request data"}
        if body.get("uid") in self.datasources or any(d["name"] == body["name"] for d in self.datasources.values()):
            return 409, {"message": "data source with the same name already exists"}
        uid = body.get("uid") or f"ds{self._next_id}"
        self.datasources[uid] = {**body, "uid": uid, "id": self.new_id(), "version": 1}
        stored = self._stored_datasource(uid)
        return 200, {"datasource": stored, "id": stored["id"], "message": "Datasource added", "name": body["name"]}

    def _update_datasource(self, uid: str, body: dict[str, Any]) -> tuple[int, Any]:
        if uid not in self.datasources:
            return 404, {"message": "Data source not found"}
        old = self.datasources[uid]
        secrets = body.get("secureJsonData") or old.get("secureJsonData", {})
        self.datasources[uid] = {**body, "uid": uid, "id": old["id"], "version": old["version"] + 1,
                                 "secureJsonData": secrets}
        stored = self._stored_datasource(uid)
        return 200, {"datasource": stored, "id": stored["id"], "message": "Datasource updated", "name": body["name"]}

    def _folder(self, uid: str) -> dict[str, Any]:
        folder = self.folders[uid]
        return {**folder, "url": f"/dashboards/f/{uid}/", "hasAcl": False, "canSave": True, "canEdit": True,
                "canAdmin": True, "createdBy": "admin", "updatedBy": "admin"}

    def _get_folder(self, uid: str) -> tuple[int, Any]:
        if uid not in self.folders:
            return 404, {"message": "folder not found", "status": "not-found"}
        return 200, self._folder(uid)

    def _create_folder(self, body: dict[str, Any]) -> tuple[int, Any]:
        uid = body.get("uid") or f"f{self._next_id}"
        if uid in self.folders:
            return 409, {"message": "a folder with the same uid already exists"}
        self.folders[uid] = {"id": self.new_id(), "uid": uid, "title": body["title"], "version": 1}
        return 200, self._folder(uid)

    def _update_folder(self, uid: str, body: dict[str, Any]) -> tuple[int, Any]:
        if uid not in self.folders:
            return 404, {"message": "folder not found", "status": "not-found"}
        folder = self.folders[uid]
        if not body.get("overwrite") and body.get("version") != folder["version"]:
            return 412, {"message": "the folder has been changed by someone else", "status": "version-mismatch"}
        folder.update(title=body.get("title", folder["title"]), version=folder["version"] + 1)
        return 200, self._folder(uid)

    def _get_dashboard(self, uid: str) -> tuple[int, Any]:
        if uid not in self.dashboards:
            return 404, {"message": "Dashboard not found"}
        saved = self.dashboards[uid]
        board = saved["dashboard"]
        return 200, {"dashboard": board, "meta": {"type": "db", "slug": _slug(board["title"]),
                                                  "url": f"/d/{uid}/{_slug(board['title'])}",
                                                  "version": board["version"], "folderUid": saved["folderUid"],
                                                  "folderTitle": self.folders[saved["folderUid"]]["title"]}}

    def _save_dashboard(self, body: dict[str, Any]) -> tuple[int, Any]:
        board = dict(body.get("dashboard") or {})
        if not board.get("title"):
            return 400, {"message": "Dashboard title cannot be empty", "status": "empty-name"}
        folder_uid = body.get("folderUid", "")
        if folder_uid and folder_uid not in self.folders:
            return 400, {"message": "folder not found", "status": "folder-not-found"}
        uid = board.get("uid") or f"d{self._next_id}"
        old = self.dashboards.get(uid)
        if old and not body.get("overwrite") and board.get("version") != old["dashboard"]["version"]:
            return 412, {"message": "The dashboard has been changed by someone else", "status": "version-mismatch"}
        board.update(uid=uid, id=old["dashboard"]["id"] if old else self.new_id(),
                     version=old["dashboard"]["version"] + 1 if old else 1)
        self.dashboards[uid] = {"dashboard": board, "folderUid": folder_uid}
        slug = _slug(board["title"])
        return 200, {"id": board["id"], "uid": uid, "url": f"/d/{uid}/{slug}", "status": "success",
                     "version": board["version"], "slug": slug}


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _handler(state: FakeGrafana) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _respond(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            path = self.path.split("?")[0]
            state.requests.append((self.command, path, body))
            if self.headers.get("Authorization") != f"Bearer {state.token}":
                self._respond(401, {"message": "invalid API key"})
                return
            self._respond(*state.handle(self.command, path, body))

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def fake_grafana(token: str = "glsa_test_token") -> Iterator[FakeGrafana]:
    """A fake Grafana on a free loopback port; ``.url`` is its base URL."""
    state = FakeGrafana(token=token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
