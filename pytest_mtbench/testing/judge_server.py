"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests and benchmarks (stdlib only).

It answers `POST /v1/chat/completions` with a judge-like reply ("... Rating: [[N]]") and `GET /v1/models`,
can add latency and inject faults (429 with retry-after, 5xx, hangs, malformed bodies, dropped
connections, empty replies, cut-off replies), counts what it receives, refuses everything beyond
`max_requests` with 503, and shuts itself down after `lifetime` seconds so a forgotten server never
outlives its test run.

Replies carry what real endpoints report: `model` (`served_model`, default the requested name),
`system_fingerprint` (default "fp_test"), `usage` (prompt_tokens = words of the prompt, completion_tokens
= words of the reply) and `finish_reason` (`finish_reason`, default "stop"). Switches for preflight tests:
`model_ids` (the served list), `models_endpoint=False` (404 on /v1/models, like servers without a list),
`reject_unknown_models=True` (404 "model not found" for a chat naming a model not in `model_ids`) and
`unauthorized=True` (401 to every request, echoing the presented token, as some proxies do).

Switches for reasoning ("thinking") models: `reasoning` says where a reply's reasoning goes: None (none,
the default), "reasoning_content" (a message field, as older vLLM and the DeepSeek API), "reasoning" (a
message field, as newer vLLM and OpenRouter) or "inline" (content becomes "<think>\\n" + reasoning +
"\\n</think>\\n\\n" + reply). `reasoning_text` is that text (or a function of the request body). With
reasoning, `usage` counts it in completion_tokens and, unless `reasoning_tokens_reported=False` (as vLLM),
reports it as `completion_tokens_details.reasoning_tokens`. `reasoning_model=True` imitates OpenAI's
reasoning models (o-series, GPT-5): a chat request carrying `max_tokens` is answered 400
"unsupported_parameter", one with a `temperature` other than 1 400 "unsupported_value" (both still counted
in `request_count` and `requests`); use `max_completion_tokens` and leave temperature out.

Use it as a context manager::

    with FakeOpenAIServer(scores=8, latency=0.2) as server:
        options = BackendOptions(base_url=server.base_url)

or standalone, so it survives a killed pytest subprocess::

    python -m pytest_mtbench.testing.judge_server --port-file port.txt --score 7 --lifetime 60

A fault plan is consumed one entry per chat request; each entry is `None` (answer normally) or a tuple:

* `("429", retry_after_s)`, `("503",)`, any status code as a string, optionally with a retry-after in
  seconds (`None` for no header), a dict of extra headers and an error message, e.g.
  `("429", None, {"retry-after-ms": "250"})` or `("401", None, None, "Incorrect API key provided")`;
  a fifth item sets the error's `code`, e.g. `("429", None, None, "No quota", "insufficient_quota")`
* `("hang", seconds)`: wait that long (or until the server stops), then answer normally
* `("malformed",)` / `("malformed", "json")`: a 200 whose body is not JSON;
  `("malformed", "no-choices")`: valid JSON without `choices`
* `("drop",)`: close the connection without answering
* `("redirect", url)`: a 307 to `url` (e.g. another server's chat URL)
* `("length",)`: answer normally but with `finish_reason: "length"` (cut off at max_tokens)
* `("null-content",)`: a 200 whose message content is null; `("empty-content",)`: content "";
  `("empty-content", " \n")`: content of only whitespace (any text given)
* `("reasoning-length",)`: a 200 whose content is null, the reasoning text in the reasoning field
  ("reasoning_content" unless `reasoning` is "reasoning") and `finish_reason: "length"`, as vLLM returns
  when the token budget ran out while the model was still thinking

Besides the chat counters, `http_requests` lists (method, path) of every request received and
`request_headers` its headers (names lower-cased), so a test can assert that no chat request was made.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Fault = tuple[Any, ...] | None
ScoreSource = float | int | Callable[[dict[str, Any]], float]

DEFAULT_LIFETIME = 600.0
DEFAULT_REASONING_TEXT = "The user wants a rating. I weigh accuracy and depth before I answer."
REASONING_PLACEMENTS = ("reasoning_content", "reasoning", "inline")  # besides None: no reasoning


def pair_like_reply(body: dict[str, Any]) -> str:
    """A pairwise judge's verdict, fixed by the prompt's text: A, B or a tie ([[C]]), roughly 2:2:1."""
    digest = hashlib.sha256(str(body["messages"][-1].get("content", "")).encode("utf-8")).digest()
    verdict = "ABABC"[digest[0] % 5]
    return f"Both answers address the question; one is more complete.\n\n[[{verdict}]]"


def judge_like_reply(score: float) -> str:
    """The text a judge following the MT-Bench single-answer prompt writes for `score`."""
    shown = int(score) if float(score).is_integer() else score
    return (
        "Judgment: the assistant answers the question directly, stays accurate and gives enough detail "
        f"to be useful, with room for more depth.\n\nRating: [[{shown}]]"
    )


class FakeOpenAIServer:
    """A threaded OpenAI-compatible server bound to 127.0.0.1 on a free port.

    Counters (`request_count`, `requests`, `max_in_flight`, `rejected_count`, `authorizations`,
    `http_requests`, `request_headers`, `models_count`) are updated under a lock and may be read from any
    thread. `request_count` counts chat requests admitted (faults and 503 rejections included, not the
    401s of `unauthorized`); `http_requests` counts every request.
    """

    def __init__(
        self,
        *,
        reply: Callable[[dict[str, Any]], str] | None = None,
        scores: ScoreSource = 7,
        latency: float = 0.0,
        faults: Iterable[Fault] | None = None,
        max_requests: int = 10_000,
        lifetime: float = DEFAULT_LIFETIME,
        model_ids: tuple[str, ...] = ("fake-judge",),
        on_request: Callable[[int], None] | None = None,
        served_model: str | None = None,
        system_fingerprint: str | None = "fp_test",
        finish_reason: str = "stop",
        models_endpoint: bool = True,
        reject_unknown_models: bool = False,
        unauthorized: bool = False,
        reasoning: str | None = None,
        reasoning_text: str | Callable[[dict[str, Any]], str] = DEFAULT_REASONING_TEXT,
        reasoning_tokens_reported: bool = True,
        reasoning_model: bool = False,
        owned_by: str | None = None,
    ) -> None:
        if reasoning is not None and reasoning not in REASONING_PLACEMENTS:
            raise ValueError(f"reasoning must be None or one of {REASONING_PLACEMENTS}, not {reasoning!r}")
        self._reply = reply or self._default_reply
        self._scores = scores
        self.latency = latency
        self._faults: Iterator[Fault] = iter(faults) if faults is not None else iter(())
        self.max_requests = max_requests
        self.lifetime = lifetime
        self.model_ids = model_ids
        self._on_request = on_request
        self.served_model = served_model  # the `model` of replies; None -> the requested name
        self.system_fingerprint = system_fingerprint
        self.finish_reason = finish_reason
        self.models_endpoint = models_endpoint
        self.reject_unknown_models = reject_unknown_models
        self.unauthorized = unauthorized
        self.reasoning = reasoning  # where a reply's reasoning goes; None -> no reasoning
        self._reasoning_text = reasoning_text
        self.reasoning_tokens_reported = reasoning_tokens_reported  # False -> no completion_tokens_details
        self.reasoning_model = reasoning_model  # reject max_tokens and temperature != 1, as OpenAI's o-series
        # The model list's `owned_by`: vLLM's own word by default; OpenAI's ("system") for a reasoning model.
        self.owned_by = owned_by if owned_by is not None else ("system" if reasoning_model else "vllm")
        # More fields of every model list entry, e.g. vLLM's {"root": path, "max_model_len": n}.
        self.model_card: dict[str, Any] = {}

        self._lock = threading.Lock()
        self.request_count = 0  # chat requests received, faults and rejections included
        self.rejected_count = 0  # requests refused with 503 because max_requests was reached
        self.requests: list[dict[str, Any]] = []  # JSON bodies of the chat requests, in arrival order
        self.authorizations: list[str | None] = []  # Authorization header of each chat request
        self.in_flight = 0
        self.max_in_flight = 0
        self.http_requests: list[tuple[str, str]] = []  # (method, path) of every request, in arrival order
        self.request_headers: list[dict[str, str]] = []  # headers of each of those (names lower-cased)
        self.models_count = 0  # GET /v1/models requests

        self.stopped = threading.Event()  # set when the server has shut down (lifetime or stop())
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._connections: set[socket.socket] = set()

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        """Bind, start serving in a daemon thread and arm the lifetime timer."""
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        httpd.daemon_threads = True  # a hung handler never keeps the interpreter alive
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai-server", daemon=True
        )  # a short poll interval keeps stop() quick
        self._thread.start()
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open keep-alive connections and wake hung handlers (idempotent)."""
        with self._lock:
            if self.stopped.is_set() or self._httpd is None:
                self.stopped.set()
                return
            self.stopped.set()
            connections = list(self._connections)
        if self._timer is not None:
            self._timer.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()
        for conn in connections:
            # idle keep-alive handlers block in recv(); shutting the socket down lets them exit
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, e.g. `http://127.0.0.1:PORT/v1`."""
        return f"http://127.0.0.1:{self.port}/v1"

    def set_faults(self, faults: Iterable[Fault]) -> None:
        """Replace the fault plan (consumed one entry per later chat request)."""
        with self._lock:
            self._faults = iter(faults)

    # -- request handling (called from handler threads) --------------------------------------------------

    def _default_reply(self, body: dict[str, Any]) -> str:
        if any('"[[A]]"' in str(m.get("content", "")) for m in body.get("messages", [])):
            return pair_like_reply(body)  # a pairwise prompt asks for [[A]], [[B]] or [[C]]
        score = self._scores(body) if callable(self._scores) else self._scores
        return judge_like_reply(score)

    def _admit(self, body: dict[str, Any], authorization: str | None) -> tuple[int, Fault, bool]:
        """Count a chat request; return (its number, its fault, whether it is over the bound)."""
        with self._lock:
            self.request_count += 1
            number = self.request_count
            if number > self.max_requests:
                self.rejected_count += 1
                return number, None, True
            self.requests.append(body)
            self.authorizations.append(authorization)
            fault = next(self._faults, None)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return number, fault, False

    def _log_http(self, method: str, path: str, headers: Any) -> None:
        with self._lock:
            self.http_requests.append((method, path))
            self.request_headers.append({k.lower(): v for k, v in headers.items()})
            if method == "GET" and path.rstrip("/") in ("/v1/models", "/models"):
                self.models_count += 1

    def _release(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _reasoning_for(self, body: dict[str, Any]) -> str:
        text = self._reasoning_text
        return text(body) if callable(text) else text

    def _unsupported_parameter(self, body: dict[str, Any]) -> tuple[str, str, str] | None:
        """With `reasoning_model`, what OpenAI's reasoning models refuse in `body`: (message, param, code)."""
        if not self.reasoning_model:
            return None
        if "max_tokens" in body:
            message = (
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead."
            )
            return message, "max_tokens", "unsupported_parameter"
        temperature = body.get("temperature")
        if temperature is not None and temperature != 1:
            shown = float(temperature) if isinstance(temperature, int | float) else temperature
            message = (
                f"Unsupported value: 'temperature' does not support {shown} with this model. "
                "Only the default (1) value is supported."
            )
            return message, "temperature", "unsupported_value"
        return None

    def _completion_body(self, body: dict[str, Any], number: int, fault: Fault = None) -> dict[str, Any]:
        kind = str(fault[0]) if fault else ""
        content: str | None = self._reply(body)
        if kind in ("null-content", "reasoning-length"):
            content = None
        elif kind == "empty-content":
            content = str(fault[1]) if len(fault) > 1 else ""  # type: ignore[arg-type]
        finish_reason = "length" if kind in ("length", "reasoning-length") else self.finish_reason
        prompt_words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        completion_tokens = len((content or "").split())
        message: dict[str, Any] = {"role": "assistant", "content": content}
        reasoning_tokens: int | None = None
        if self.reasoning is not None or kind == "reasoning-length":
            thought = self._reasoning_for(body)
            reasoning_tokens = len(thought.split())
            completion_tokens += reasoning_tokens
            if self.reasoning == "inline" and kind != "reasoning-length":
                if content is not None:
                    message["content"] = f"<think>\n{thought}\n</think>\n\n{content}"
            else:  # cut off while thinking, a server's reasoning parser puts it all in a field
                message["reasoning" if self.reasoning == "reasoning" else "reasoning_content"] = thought
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_words,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_words + completion_tokens,
        }
        if reasoning_tokens is not None and self.reasoning_tokens_reported:
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
        return {
            "id": f"chatcmpl-fake-{number}",
            "object": "chat.completion",
            "created": 0,  # fixed, so responses are reproducible
            "model": self.served_model or body.get("model", "fake-judge"),
            "system_fingerprint": self.system_fingerprint,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": usage,
        }


def _error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> bytes:
    if status == 429:
        kind = "rate_limit_error"
    else:
        kind = "server_error" if status >= 500 else "invalid_request_error"
    error = {"message": message, "type": kind}
    if param is not None:  # only parameter errors name one, placed before `code` as OpenAI does
        error["param"] = param
    error["code"] = code or str(status)
    return json.dumps({"error": error}).encode()


def _make_handler(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like real API servers
        disable_nagle_algorithm = True  # small responses must not wait for delayed ACKs

        def setup(self) -> None:
            super().setup()
            with server._lock:
                server._connections.add(self.connection)

        def finish(self) -> None:
            with server._lock:
                server._connections.discard(self.connection)
            with contextlib.suppress(OSError):
                super().finish()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # tests and benchmarks read the counters instead

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
            all_headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
            all_headers.update(headers or {})
            lines += [f"{k}: {v}" for k, v in all_headers.items()]
            # headers and body in one write: one segment on the wire, no Nagle/delayed-ACK stall
            payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
            # An admitted chat request stops counting as in flight before its answer leaves, so a client
            # that sends its next call on receiving it never finds this one still counted.
            self._release_admitted()
            try:
                self.wfile.write(payload)
            except OSError:
                self.close_connection = True  # the client gave up (e.g. timed out on a hang)

        def _read_body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _refuse_unauthorized(self) -> bool:
            """With `unauthorized`, answer 401 (echoing the presented token, as careless proxies do)."""
            if not server.unauthorized:
                return False
            token = (self.headers.get("Authorization") or "").partition(" ")[2]
            message = f"Incorrect API key provided: {token}" if token else "Missing bearer authentication"
            self._send(401, _error_body(401, message, "invalid_api_key"))
            return True

        def do_GET(self) -> None:  # noqa: N802
            server._log_http("GET", self.path, self.headers)
            if self._refuse_unauthorized():
                return
            if self.path.rstrip("/") in ("/v1/models", "/models") and server.models_endpoint:
                data = [
                    {"id": m, "object": "model", "owned_by": server.owned_by, **server.model_card}
                    for m in server.model_ids
                ]
                self._send(200, json.dumps({"object": "list", "data": data}).encode())
            else:
                self._send(404, _error_body(404, f"no route GET {self.path}"))

        def do_POST(self) -> None:  # noqa: N802
            raw = self._read_body()
            server._log_http("POST", self.path, self.headers)
            if self._refuse_unauthorized():
                return
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                self._send(404, _error_body(404, f"no route POST {self.path}"))
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, _error_body(400, "request body is not JSON"))
                return
            number, fault, rejected = server._admit(body, self.headers.get("Authorization"))
            self._admitted = not rejected  # counted in flight until its answer leaves
            if server._on_request is not None:
                server._on_request(number)
            if rejected:
                self._send(503, _error_body(503, f"request bound reached ({server.max_requests})"))
                return
            try:
                model = body.get("model")
                if server.reject_unknown_models and model not in server.model_ids:
                    message = f"The model `{model}` does not exist or you do not have access to it."
                    self._send(404, _error_body(404, message, "model_not_found"))
                    return
                unsupported = server._unsupported_parameter(body)
                if unsupported is not None:
                    message, param, code = unsupported
                    self._send(400, _error_body(400, message, code, param))
                    return
                self._answer(body, number, fault)
            finally:
                self._release_admitted()  # a dropped connection or a hang cut short sends nothing

        def _release_admitted(self) -> None:
            if getattr(self, "_admitted", False):
                self._admitted = False
                server._release()

        def _answer(self, body: dict[str, Any], number: int, fault: Fault) -> None:
            if server.latency:
                server.stopped.wait(server.latency)
            kind = str(fault[0]) if fault else ""
            if kind == "hang":
                server.stopped.wait(float(fault[1]) if len(fault) > 1 else 3600.0)  # type: ignore[index]
            elif kind == "drop":
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            elif kind == "redirect":
                self._send(307, b"", {"Location": str(fault[1])})  # type: ignore[index]
                return
            elif kind == "malformed":
                variant = fault[1] if len(fault) > 1 else "json"  # type: ignore[arg-type]
                if variant == "no-choices":
                    self._send(200, json.dumps({"id": f"chatcmpl-fake-{number}", "object": "x"}).encode())
                else:
                    self._send(200, b"<html>502 upstream hiccup</html>")
                return
            elif kind.isdigit():
                status = int(kind)
                headers: dict[str, str] = {}
                retry_after = fault[1] if len(fault) > 1 else None  # type: ignore[arg-type]
                if retry_after is not None:
                    headers["retry-after"] = f"{float(retry_after):g}"
                if len(fault) > 2 and fault[2]:  # type: ignore[arg-type]
                    headers.update(fault[2])  # type: ignore[index]
                message = fault[3] if len(fault) > 3 else f"injected fault {status}"  # type: ignore[arg-type]
                code = fault[4] if len(fault) > 4 else None  # type: ignore[arg-type]
                self._send(status, _error_body(status, message, code), headers)
                return
            self._send(200, json.dumps(server._completion_body(body, number, fault)).encode())

    return Handler


def main(argv: list[str] | None = None) -> int:
    """Run the server standalone until its lifetime ends (or SIGTERM/Ctrl-C)."""
    parser = argparse.ArgumentParser(prog="python -m pytest_mtbench.testing.judge_server")
    parser.add_argument("--port-file", required=True, help="file the chosen port is written to")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument("--score", type=float, default=7, help="rating the fake judge gives")
    parser.add_argument("--max-requests", type=int, default=10_000, help="answer 503 beyond this many")
    parser.add_argument("--lifetime", type=float, default=DEFAULT_LIFETIME, help="seconds before it stops")
    parser.add_argument(
        "--model-id", action="append", default=None, help="a model /v1/models lists (repeatable)"
    )
    parser.add_argument("--served-model", default=None, help="`model` of every reply (default: as asked)")
    parser.add_argument("--system-fingerprint", default="fp_test", help="`system_fingerprint` of replies")
    parser.add_argument("--finish-reason", default="stop", help="`finish_reason` of every reply")
    parser.add_argument("--no-models-endpoint", action="store_true", help="answer 404 on /v1/models")
    parser.add_argument(
        "--reject-unknown-models", action="store_true", help="404 for a chat naming an unlisted model"
    )
    parser.add_argument("--unauthorized", action="store_true", help="answer 401 to every request")
    parser.add_argument(
        "--reasoning", choices=REASONING_PLACEMENTS, default=None, help="where replies carry reasoning"
    )
    parser.add_argument("--reasoning-text", default=DEFAULT_REASONING_TEXT, help="the reasoning of replies")
    parser.add_argument(
        "--no-reasoning-tokens",
        action="store_true",
        help="leave completion_tokens_details out of usage (as vLLM)",
    )
    parser.add_argument(
        "--reasoning-model",
        action="store_true",
        help="400 for max_tokens or a temperature other than 1 (as OpenAI reasoning models)",
    )
    args = parser.parse_args(argv)

    def log(number: int) -> None:
        print(f"request {number}", flush=True)

    server = FakeOpenAIServer(
        scores=args.score,
        latency=args.latency,
        max_requests=args.max_requests,
        lifetime=args.lifetime,
        on_request=log,
        model_ids=tuple(args.model_id) if args.model_id else ("fake-judge",),
        served_model=args.served_model,
        system_fingerprint=args.system_fingerprint,
        finish_reason=args.finish_reason,
        models_endpoint=not args.no_models_endpoint,
        reject_unknown_models=args.reject_unknown_models,
        unauthorized=args.unauthorized,
        reasoning=args.reasoning,
        reasoning_text=args.reasoning_text,
        reasoning_tokens_reported=not args.no_reasoning_tokens,
        reasoning_model=args.reasoning_model,
    )
    with server:
        tmp = f"{args.port_file}.tmp"
        with open(tmp, "w") as fh:
            fh.write(str(server.port))
        os.replace(tmp, args.port_file)  # readers never see a half-written port
        print(f"listening on {server.base_url} for {args.lifetime:g}s", flush=True)
        try:
            while not server.stopped.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    print(f"stopped after {server.request_count} requests", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
