"""Local fake market-data servers on 127.0.0.1 that speak each provider's documented format.

Each fake serves bars from a frame per symbol and can be told to misbehave: ``script``
queues one-shot responses (served first, in order), ``failing`` makes symbols fail on every
request (HTTP 503) until cleared. ``requests`` records what clients asked for.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pandas as pd

__all__ = ["Reply", "FakeServer"]


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON; str/bytes -> as is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain"
        return json.dumps(self.body).encode(), "application/json"


class FakeServer:
    """Base: subclasses implement ``route(path, query) -> Reply`` and ``symbol_of(path, query)``."""

    def __init__(self, bars: dict[str, pd.DataFrame] | None = None):
        self.bars = dict(bars or {})
        self.script: deque[Reply] = deque()
        self.failing: set[str] = set()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                parts = urlsplit(self.path)
                query = dict(parse_qsl(parts.query))
                reply = server._dispatch(parts.path, query)
                if reply.delay:
                    time.sleep(reply.delay)
                payload, content_type = reply.encoded()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _dispatch(self, path: str, query: dict[str, str]) -> Reply:
        with self._lock:
            self.requests.append((path, query))
            scripted = self.script.popleft() if self.script else None
        if scripted is not None:
            return scripted
        if self.symbol_of(path, query) in self.failing:
            return Reply(503, "<html>Will be right back</html>")
        return self.route(path, query)

    def symbol_of(self, path: str, query: dict[str, str]) -> str | None:
        raise NotImplementedError

    def route(self, path: str, query: dict[str, str]) -> Reply:
        raise NotImplementedError
