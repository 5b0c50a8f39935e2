"""The HTTP server: NeMo's `PUT /generate`, OpenAI's `POST /v1/completions` and vLLM's tokenizer
endpoints (docs/server.md), on the standard library's ThreadingHTTPServer.

Requests are read and validated on their own threads; one lock (api.Serving) lets one request at a
time use the model. Every answer is JSON: a bad request gets its 4xx and reason, a failure inside
the model a 500 with its message, and the server goes on serving either way.
"""

from __future__ import annotations

import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Optional
from urllib.parse import urlsplit

from . import nemo_api, openai_api, tokenizer_api
from .api import ApiError, ServerLimits, Serving, parse_body
from .generator import Generator
from .sampling import SamplingParams

Endpoint = Callable[[Serving, Dict[str, Any]], Dict[str, Any]]
ROUTES: Dict[str, Dict[str, Endpoint]] = {
    "/generate": {"PUT": nemo_api.generate},
    "/v1/completions": {"POST": openai_api.completions},
    "/tokenizer_info": {"GET": tokenizer_api.info},
    "/tokenize": {"POST": tokenizer_api.tokenize},
    "/detokenize": {"POST": tokenizer_api.detokenize},
}
log = logging.getLogger(__name__)


class Handler(BaseHTTPRequestHandler):
    server: "FLMServer"
    timeout = 60  # seconds a client may stall mid-request before its thread lets go

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _dispatch(self) -> None:
        try:
            endpoint = self._endpoint()
            body = self._body() if self.command != "GET" else {}
            self._send(200, endpoint(self.server.serving, body))
        except ApiError as err:
            self._send(err.status, err.body())
        except Exception as err:  # noqa: BLE001 - a failed generation must not take the server down
            log.exception("%s %s failed", self.command, self.path)
            self._send(500, ApiError(500, f"the model failed: {err!r}", "server_error").body())

    def _endpoint(self) -> Endpoint:
        path = urlsplit(self.path).path
        methods = ROUTES.get(path)
        if methods is None:
            raise ApiError(404, f"no endpoint {path}: the endpoints are {', '.join(ROUTES)}", "not_found_error")
        if self.command not in methods:
            allowed = ", ".join(methods)
            raise ApiError(405, f"{path} takes {allowed}, not {self.command}", "method_not_allowed")
        return methods[self.command]

    def _body(self) -> Dict[str, Any]:
        length = self.headers.get("Content-Length", "0")
        if not (length.isascii() and length.isdigit()):
            raise ApiError(400, f"bad Content-Length {length[:40]!r}")
        limit = self.server.serving.limits.max_body_bytes
        if len(length) > 18 or int(length) > limit:  # 18 digits: below Python's int-parsing limits
            raise ApiError(413, f"the body has {length[:40]} bytes, over the limit of {limit}")
        raw = self.rfile.read(int(length))
        if len(raw) != int(length):
            raise ApiError(400, f"the body ended after {len(raw)} of its {length} bytes")
        return parse_body(raw)

    def _send(self, status: int, answer: Dict[str, Any]) -> None:
        try:
            # a lone surrogate a client sent (and an error message quotes) has no UTF-8 form: replaced
            data = json.dumps(answer, ensure_ascii=False, allow_nan=False).encode("utf-8", "replace")
        except ValueError as err:  # a NaN or infinite log-probability has no JSON form
            status, data = 500, json.dumps(ApiError(500, str(err), "server_error").body()).encode("utf-8")
        self.send_response(status)
        if status == 405:
            self.send_header("Allow", ", ".join(ROUTES[urlsplit(self.path).path]))
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s " + format, self.address_string(), *args)


class FLMServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, serving: Serving, host: str, port: int):
        super().__init__((host, port), Handler)
        self.serving = serving


def make_server(
    generator: Generator,
    params: SamplingParams,
    host: str = "127.0.0.1",
    port: int = 5555,
    limits: Optional[ServerLimits] = None,
) -> FLMServer:
    """A bound server, not yet serving (port 0: a free port, see .server_address)."""
    params.check()
    return FLMServer(Serving(generator, params, limits or ServerLimits()), host, port)


def serve(server: FLMServer) -> None:
    """Serve until interrupted."""
    host, port = server.server_address[:2]
    print(f"serving FLM on http://{host}:{port} (docs/server.md)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
