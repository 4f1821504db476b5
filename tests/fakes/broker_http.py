"""A real HTTP server on 127.0.0.1 for broker fakes, with scripted faults.

A fake subclasses :class:`FakeBrokerServer` and implements ``handle``; tests script faults
(a 429, a 5xx, a slow answer after the request was processed) and events (the market moves
just before a request is answered) per method and path, and read ``requests`` to see exactly
what the client sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["FakeBrokerServer", "Request", "Reply"]


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def params(self) -> dict[str, str]:
        """Query string and form body together (Binance signs them as one)."""
        form = self.body.decode() if self.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded") else ""
        return dict(parse_qsl(self.query, keep_blank_values=True)) | dict(parse_qsl(form, keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON-serializable, or None for an empty body
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Fault:
    method: str
    path: str
    reply: Reply | None  # answer instead of processing
    delay_s: float = 0.0  # process, then wait this long before answering
    before: Callable[[], None] | None = None  # run, then process


class FakeBrokerServer:
    """Start with ``with Fake(...) as fake:``; ``fake.url`` is the base URL to configure."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._faults: deque[_Fault] = deque()
        self.lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None

    # --- scripting --------------------------------------------------------------------------
    def fail_next(self, method: str, path: str, reply: Reply, *, times: int = 1) -> None:
        """The next ``times`` matching requests get ``reply`` without being processed."""
        with self.lock:
            self._faults.extend(_Fault(method, path, reply) for _ in range(times))

    def slow_next(self, method: str, path: str, delay_s: float) -> None:
        """The next matching request is processed, then answered only after ``delay_s``
        (a client with a shorter timeout never sees the answer)."""
        with self.lock:
            self._faults.append(_Fault(method, path, None, delay_s))

    def before_next(self, method: str, path: str, event: Callable[[], None]) -> None:
        """Run ``event`` (a fill, a price move) just before the next matching request is
        processed: what happens at the broker between a client's two requests."""
        with self.lock:
            self._faults.append(_Fault(method, path, None, before=event))

    def sent(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path == path]

    # --- to implement -----------------------------------------------------------------------
    def handle(self, request: Request) -> Reply:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- server -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "start the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                request = Request(self.command, parts.path, parts.query,
                                  {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
                reply, delay = fake._dispatch(request)
                if delay:
                    time.sleep(delay)
                payload = b"" if reply.body is None else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    if payload:
                        self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (timeout tests)

            do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def _dispatch(self, request: Request) -> tuple[Reply, float]:
        with self.lock:
            self.requests.append(request)
            fault = next((f for f in self._faults if f.method == request.method and f.path == request.path), None)
            if fault is not None:
                self._faults.remove(fault)
                if fault.reply is not None:
                    return fault.reply, 0.0
                if fault.before is not None:
                    fault.before()
            return self.handle(request), (fault.delay_s if fault else 0.0)
