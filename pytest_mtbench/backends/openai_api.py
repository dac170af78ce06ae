"""OpenAI-compatible chat endpoints (the OpenAI API, vLLM, llama.cpp server, ...) as candidates or judges.

`openai/<model>` sends exactly what FastChat sends to its judge (model, messages, n=1, temperature,
max_tokens), plus the run's seed on sampled calls; a reasoning model (OpenAI's o-series, GPT-5) is called
with `max_completion_tokens` and no temperature instead (see `call_parameters`). It runs the calls of a
batch concurrently on one shared client, and does its own retries (429, 5xx, timeouts, connection
errors, malformed bodies) with full-jitter exponential backoff that honours `retry-after` /
`retry-after-ms`. A reply whose content is null, empty or only whitespace is a failed attempt like a
malformed body: retried, then a BackendError; it never becomes an empty answer. A reply whose thinking
came back (`reasoning_content` / `reasoning`) without an answer is a result, not a failed attempt: the
model spent its budget thinking (the runner marks it unfinished). The `openai` package is imported only
when a backend is built (or a preflight runs).

Credentials. The API key is read from the environment when the client is built and never stored, shown
or logged; it always goes out as `Authorization: Bearer <key>`, the header every OpenAI-compatible server
checks. Credentials in the base URL (`https://user:pass@host/v1`) belong to an authenticating gateway in
front of the server. They are taken out of the URL before the HTTP client sees it (its INFO log line
prints every request URL) and sent as HTTP Basic credentials: in `Authorization` when no key is set (what
curl, browsers and httpx do with such a URL), else in `Proxy-Authorization`, because one `Authorization`
header cannot carry both and RFC 9110 gives `Proxy-Authorization` to an intermediary on the way (nginx,
Caddy or Traefik in front of vLLM can check it). They are sent only to the base URL's own origin, never
after a redirect to another host. Error messages are redacted of the key, the URL password and the Basic
token, whatever the server echoes.

`preflight(name, options)` checks before a run that the endpoint can be reached, accepts the key and
serves the model, with one line the user can act on; it knows which OpenAI models have been retired.
"""

from __future__ import annotations

import base64
import contextlib
import difflib
import json
import logging
import os
import queue
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import date
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit
from weakref import WeakSet

from .base import (
    FINISH_CALL_FAILED,
    FINISH_LENGTH,
    BackendError,
    BackendOptions,
    Capabilities,
    Completion,
    Message,
    PreflightResult,
    ResultCallback,
    SamplingParams,
    ServedModel,
)

log = logging.getLogger(__name__)

# Independent HTTP calls: any batching gives the same replies, so a whole run's calls may go at once.
CAPABILITIES = Capabilities(
    batch_scope="all", rating_probes=False, preflight=True, local=False, isolated_failures=True
)

OFFICIAL_BASE_URL = "https://api.openai.com/v1"
OFFICIAL_HOSTS = frozenset({"api.openai.com"})
# OpenAI models shut down on the official API (from OpenAI's deprecations page):
# name -> (the snapshot it was, its shutdown date). gpt-4-0613 is the official MT-Bench judge.
RETIRED: dict[str, tuple[str, str]] = {
    "gpt-4": ("gpt-4-0613", "2026-10-23"),
    "gpt-4-0613": ("gpt-4-0613", "2026-10-23"),
    "gpt-4-turbo": ("gpt-4-turbo-2024-04-09", "2026-10-23"),
    "gpt-4-turbo-2024-04-09": ("gpt-4-turbo-2024-04-09", "2026-10-23"),
    "gpt-3.5-turbo": ("gpt-3.5-turbo-0125", "2026-10-23"),
    "gpt-3.5-turbo-0125": ("gpt-3.5-turbo-0125", "2026-10-23"),
    "gpt-4-0314": ("gpt-4-0314", "2026-03-26"),
    "gpt-4-1106-preview": ("gpt-4-1106-preview", "2026-03-26"),
    "gpt-4-0125-preview": ("gpt-4-0125-preview", "2026-03-26"),
    "gpt-4-turbo-preview": ("gpt-4-0125-preview", "2026-03-26"),
    # Scheduled: refused from this date on (the preflight warns before it).
    "gpt-4.1": ("gpt-4.1-2025-04-14", "2027-01-14"),
    "gpt-4.1-2025-04-14": ("gpt-4.1-2025-04-14", "2027-01-14"),
}
OFFICIAL_JUDGE_SNAPSHOT = "gpt-4-0613"
# Call styles (BackendOptions.call_style): FastChat's call, OpenAI's reasoning-model call, or settled by
# the preflight.
CALL_OFFICIAL = "official"
CALL_REASONING = "reasoning"
CALL_AUTO = "auto"
CALL_STYLES = (CALL_AUTO, CALL_OFFICIAL, CALL_REASONING)
# Names OpenAI gives its reasoning models, which refuse `max_tokens` and `temperature`: what `auto`
# assumes where no preflight runs (offline, a fully cached run).
_REASONING_NAMES = re.compile(r"(?i)^(o\d|gpt-5)(?!.*-chat)")
# Where OpenAI-compatible endpoints put a reply's thinking: vLLM before 0.10, SGLang and DeepSeek's API
# use `reasoning_content`; newer vLLM and OpenRouter use `reasoning`.
REASONING_FIELDS = ("reasoning_content", "reasoning")
# The reasoning-model call's default room for reasoning, on top of the answer's or verdict's tokens.
REASONING_BUDGET = 16384
# What open-source servers write as `owned_by` in their model list: they all take the official call, so
# `auto` does not ask them (vLLM, SGLang, llama.cpp's server, Ollama).
OPEN_SERVERS = frozenset({"vllm", "sglang", "llamacpp", "library"})
# Error codes with which OpenAI refuses a parameter a model does not take.
_UNSUPPORTED_CODES = frozenset({"unsupported_parameter", "unsupported_value"})
PREFLIGHT_TIMEOUT = 15.0  # seconds; a preflight never waits longer than this per request
PREFLIGHT_RETRY_WAIT = 0.5  # seconds before the one retry of a refused/dropped connection
PREFLIGHT_REASONING_TOKENS = 64  # the reasoning call's probe: room to think a little and say OK
NO_MODEL_LIST = frozenset({400, 404, 405, 501})  # /models answers that mean "this server has no list"
MODELS_SHOWN = 6  # model names quoted when the requested one is not served
PLACEHOLDER_API_KEY = "EMPTY"  # what FastChat/vLLM use when a local server needs no key
BACKOFF_BASE = 0.5  # seconds; first retry waits up to this
BACKOFF_CAP = 20.0  # seconds; no computed backoff waits longer
RETRY_AFTER_CAP = 60.0  # seconds; a server asking for longer is not believed
RETRYABLE_STATUS = frozenset({408, 409, 429})  # plus every 5xx
_BEARER = re.compile(r"(?i)\b(bearer)\s+[^\s'\"]+")
MAX_SERVER_MESSAGE = 200  # characters of a server error message kept in our errors
ABORT_GRACE = 0.5  # seconds an interrupted batch waits for its cut calls' threads to return


class _Secret(str):
    """A string that never shows itself in a repr (e.g. pytest --showlocals, vars(backend))."""

    def __repr__(self) -> str:
        return "'***'"


class _RetryableError(Exception):
    """One failed attempt that may succeed if repeated; `retry_after` is the server's hint in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.timed_out = False  # no answer within the call timeout (a slow server, or a hung one)


class _Aborted(Exception):
    """Another call of the same batch failed for good, so this one stops retrying."""


class _Refused(BackendError):
    """The endpoint refused one request with a status that retrying does not change (4xx)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# Refusals that every call of the batch would get too: the key, the model or the route is wrong.
ENDPOINT_GONE = frozenset({401, 403, 404})
# With isolated failures, this many calls in a row failing for good mean the endpoint is failing, not the
# calls: the batch stops there instead of spending every call's retries.
FAILURE_STREAK = 5


def normalise_base_url(url: str) -> str:
    """`https://user:pw@Host:8000/v1/` -> `https://host:8000/v1`: no credentials, query or trailing slash."""
    parts = urlsplit(url.strip())
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), "", ""))


def backoff_delay(attempt: int, retry_after: float | None, jitter: Callable[[], float]) -> float:
    """Seconds to wait before retry number `attempt` (1-based).

    A server hint (`retry-after`) wins, capped at RETRY_AFTER_CAP; otherwise "full jitter":
    uniform in [0, min(BACKOFF_CAP, BACKOFF_BASE * 2**(attempt-1))].
    """
    if retry_after is not None:
        return min(max(retry_after, 0.0), RETRY_AFTER_CAP)
    return jitter() * min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (delta seconds or an HTTP date); None if absent/bad."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return float(millis) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError, IndexError):
        return None


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every secret and any bearer token replaced by `***`."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return _BEARER.sub(lambda m: f"{m.group(1)} ***", text)  # a key quoted in another form (a header repr)


def _shorten(text: str) -> str:
    """One line of at most MAX_SERVER_MESSAGE characters."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_SERVER_MESSAGE else text[: MAX_SERVER_MESSAGE - 3] + "..."


@dataclass(frozen=True)
class _Credentials:
    """How to authenticate to one endpoint; every secret field is a `_Secret` (never shown in a repr)."""

    client_url: str  # the base URL handed to the HTTP client: no userinfo, so no log line shows it
    api_key: str  # the key, or PLACEHOLDER_API_KEY when none is set
    has_key: bool
    basic: str | None  # "Basic <token>" from the URL's user:pass, if any
    basic_header: str  # where `basic` goes: "Authorization" without a key, else "Proxy-Authorization"
    secrets: tuple[str, ...]  # everything redacted from messages


def _split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """`https://u:p%40ss@host:8/v1/` -> ("https://host:8/v1", "u", "p@ss"): the URL without credentials."""
    parts = urlsplit(url.strip())
    if "@" not in parts.netloc:
        return url.strip().rstrip("/"), None, None
    netloc = parts.netloc.rpartition("@")[2]
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)).rstrip("/")
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return bare, user, password


def _credentials(options: BackendOptions, env: Mapping[str, str]) -> _Credentials:
    """Resolve the key and the URL's credentials; BackendError when the endpoint needs a missing key."""
    client_url, user, password = _split_userinfo(raw_base_url(options, env))
    api_key = env.get(options.api_key_env, "").strip() or None  # a stray newline breaks the header
    has_key = api_key is not None
    if api_key is None:
        problem = missing_key(options, env)
        if problem:
            raise BackendError(problem)
        api_key = PLACEHOLDER_API_KEY  # local servers (vLLM, llama.cpp) ignore the key
    secrets: list[str] = [api_key] if has_key else []
    basic = None
    if user or password:
        token = base64.b64encode(f"{user or ''}:{password or ''}".encode()).decode("ascii")
        basic = f"Basic {token}"
        secrets.append(token)
        if user and not password:
            secrets.append(user)  # `https://TOKEN@host`: the user part is the secret
        if password:
            secrets.append(password)
            raw_password = urlsplit(raw_base_url(options, env).strip()).password
            if raw_password and raw_password != password:
                secrets.append(raw_password)  # the percent-encoded form a server may echo
    # Short strings are not redacted: replacing "pw" everywhere would garble every message.
    kept = tuple(_Secret(s) for s in sorted(set(secrets), key=len, reverse=True) if len(s) >= 4)
    return _Credentials(
        client_url=client_url,
        api_key=_Secret(api_key),
        has_key=has_key,
        basic=_Secret(basic) if basic else None,
        basic_header="Proxy-Authorization" if has_key else "Authorization",
        secrets=kept,
    )


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


class _OpenSockets:
    """The sockets of one HTTP client, so that calls in flight can be cut at once.

    Closing a socket (what closing the HTTP client does) does not wake a thread blocked reading it;
    shutting it down does, and the read fails at once. Sockets are learnt from the transport's `trace`
    extension as each connection is made; one made after a cut is shut down as soon as it exists.
    """

    # Direct, through a proxy or SOCKS, plain or TLS: each way a connection comes into being.
    _CONNECTED = (".connect_tcp.complete", ".connect_unix_socket.complete", ".start_tls.complete")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: WeakSet[socket.socket] = WeakSet()
        self._batch = threading.local()  # the abort event of the batch the current thread serves

    def serve(self, abort: threading.Event | None) -> None:
        """Mark the calling thread as working for the batch with this abort event."""
        self._batch.abort = abort

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """The `trace` extension: keeps each new connection's socket."""
        if not event.endswith(self._CONNECTED) or info.get("return_value") is None:
            return
        sock = info["return_value"].get_extra_info("socket")
        if sock is None:
            return
        with self._lock:
            self._sockets.add(sock)
        abort = getattr(self._batch, "abort", None)
        if abort is not None and abort.is_set():  # connected just after the cut: cut this one too
            _shut(sock)

    def cut(self) -> None:
        """Make every blocked read or write on these sockets fail now (the pool then drops them)."""
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed or detached (wrapped by TLS)
        sock.shutdown(socket.SHUT_RDWR)


def _build_client(
    openai: Any, credentials: _Credentials, timeout: float, sockets: _OpenSockets | None = None
) -> Any:
    """An `openai.OpenAI` client for these credentials; it never retries (callers do) and never sees
    the URL's userinfo. With `sockets`, every connection it opens is recorded there (see _OpenSockets)."""
    kwargs: dict[str, Any] = {
        "base_url": credentials.client_url,
        "api_key": str(credentials.api_key),
        "max_retries": 0,  # we retry ourselves: jitter, retry-after caps, malformed bodies
        "timeout": timeout,
    }
    hooks: list[Callable[[Any], None]] = []
    if credentials.basic is not None:
        origin = _origin(credentials.client_url)
        header, value = credentials.basic_header, str(credentials.basic)

        def add_url_credentials(request: Any) -> None:
            # Called for every hop, redirects included: the URL's credentials go to its own origin only.
            if _origin(str(request.url)) == origin:
                request.headers[header] = value
            else:
                request.headers.pop(header, None)

        hooks.append(add_url_credentials)
    if sockets is not None:
        trace = sockets.trace

        def record_connections(request: Any) -> None:
            request.extensions["trace"] = trace

        hooks.append(record_connections)
    if hooks:
        kwargs["http_client"] = openai.DefaultHttpxClient(timeout=timeout, event_hooks={"request": hooks})
    return openai.OpenAI(**kwargs)


QUEUE_POLL = 0.25  # seconds between checks for an interrupt while waiting for a batch's calls


class _SharedPool:
    """The threads that make API calls, one pool per process for every backend of the same concurrency.

    --mtbench-concurrency bounds the calls in flight of a whole process (an xdist worker), however many
    backends call at once: the models of a multi-model run generating side by side, and the judge. Each
    backend takes the pool once and gives it back in close(); the last one out shuts it down.
    """

    _lock = threading.Lock()
    _pools: dict[int, tuple[ThreadPoolExecutor, int]] = {}

    @classmethod
    def take(cls, size: int) -> ThreadPoolExecutor:
        with cls._lock:
            pool, users = cls._pools.get(size) or (
                ThreadPoolExecutor(max_workers=size, thread_name_prefix="mtbench-openai"),
                0,
            )
            cls._pools[size] = (pool, users + 1)
            return pool

    @classmethod
    def give_back(cls, size: int) -> ThreadPoolExecutor | None:
        """Release one use; the pool when that was the last (for the caller to shut down), else None."""
        with cls._lock:
            pool, users = cls._pools[size]
            if users > 1:
                cls._pools[size] = (pool, users - 1)
                return None
            del cls._pools[size]
            return pool


class OpenAIBackend:
    """A model behind an OpenAI-compatible `/chat/completions` endpoint.

    `sleep` (called with seconds) and `jitter` (returns a float in [0, 1)) are injectable so tests can
    record backoff waits instead of spending them; by default waits are interruptible by batch failure.
    """

    def __init__(
        self,
        name: str,
        options: BackendOptions,
        *,
        sleep: Callable[[float], None] | None = None,
        jitter: Callable[[], float] = random.random,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        import openai  # lazy: importing this module must stay cheap and work without the extra

        env = os.environ if environ is None else environ
        self.spec = f"openai/{name}"
        self.name = name
        self.options = replace(options, call_style=settled_style(name, options))
        self.base_url = normalise_base_url(raw_base_url(options, env))
        self._sleep = sleep
        self._jitter = jitter
        self._openai = openai
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._sockets = _OpenSockets()
        self._batches: set[threading.Event] = set()  # the abort event of each batch under way

        credentials = _credentials(options, env)
        # only the redaction list keeps the secrets; they are never printed (see _redact / __repr__)
        self._secrets = credentials.secrets
        self._client = _build_client(openai, credentials, options.timeout, self._sockets)
        self._completions = self._client.chat.completions.with_raw_response
        del credentials

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.name!r}, base_url={self.base_url!r})"

    def identity(self) -> dict[str, Any]:
        """What determines the outputs: backend, model name and the endpoint (without credentials), and
        the call's settings that change replies (see api_identity)."""
        return api_identity(self.name, self.options, self.base_url)

    # -- one call ---------------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return _redact(text, self._secrets)

    def _describe(self, exc: BaseException) -> str:
        """A short, key-free description of an attempt's failure."""
        openai = self._openai
        if isinstance(exc, openai.APIStatusError):
            message = _server_message(exc.body) or exc.message
            text = f"HTTP {exc.status_code}: {message}"
        elif isinstance(exc, openai.APITimeoutError):
            text = f"timed out after {self.options.timeout:g}s"
        elif isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__
            text = f"connection error ({type(cause).__name__ if cause else 'unknown'}: {cause or exc})"
        else:
            text = str(exc) or type(exc).__name__
        return _shorten(self._redact(text))  # redacted first: a cut could split a secret

    def _attempt(self, messages: list[Message], params: SamplingParams) -> Completion:
        """One HTTP request; raises _RetryableError or BackendError, or returns the completion."""
        openai = self._openai
        failure: Exception
        try:
            raw = self._completions.create(
                model=self.name,
                messages=messages,  # type: ignore[arg-type]
                n=1,
                **call_parameters(self.options, params),
            )
            body = raw.http_response.text
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status in RETRYABLE_STATUS or status >= 500:
                failure = _RetryableError(self._describe(exc), parse_retry_after(exc.response.headers))
            else:
                hint = ""
                if status == 400 and _refuses_parameters(exc) and self.options.call_style != CALL_REASONING:
                    hint = (
                        ": it is a reasoning model; call it as one with --mtbench-model-call=reasoning "
                        "(or --mtbench-judge-call=reasoning for a judge)"
                    )
                failure = _Refused(
                    f"{self.spec} at {self.base_url} refused the request ({self._describe(exc)}); "
                    f"not retried{hint}",
                    status,
                )
        except openai.APIConnectionError as exc:  # includes APITimeoutError
            failure = _RetryableError(self._describe(exc))
            failure.timed_out = isinstance(exc, openai.APITimeoutError)
        else:
            return _parse_completion(body)
        # raised outside the except blocks: the openai error (which may quote the key) is not chained
        raise failure

    def _complete(
        self, messages: list[Message], params: SamplingParams, abort: threading.Event
    ) -> Completion:
        """One conversation with retries; BackendError when it fails for good."""
        attempts = self.options.max_retries + 1
        last = ""
        timed_out = False
        self._sockets.serve(abort)
        for attempt in range(1, attempts + 1):
            if abort.is_set():
                raise _Aborted
            try:
                return self._attempt(messages, params)
            except _RetryableError as exc:
                if abort.is_set():  # the batch was cut: this failure is ours, not the server's
                    raise _Aborted from None
                last = self._redact(str(exc))
                timed_out = exc.timed_out
                if attempt == attempts:
                    break
                delay = backoff_delay(attempt, exc.retry_after, self._jitter)
                log.debug(
                    "%s attempt %d/%d failed (%s); retry in %.2fs", self.spec, attempt, attempts, last, delay
                )
                if self._sleep is not None:
                    self._sleep(delay)
                elif abort.wait(delay):
                    raise _Aborted from None
        hint = (
            ": a slow server needs a longer --mtbench-timeout (or more --mtbench-retries)"
            if timed_out
            else ": --mtbench-retries allows more attempts, if the endpoint recovers"
        )
        raise BackendError(
            f"{self.spec} at {self.base_url} failed after {attempts} attempt{'s' if attempts != 1 else ''}; "
            f"last error: {last}{hint}"
        )

    # -- batches ----------------------------------------------------------------------------------------

    @property
    def _pool_size(self) -> int:
        """The shared pool this backend takes threads from (and gives back to): one per concurrency."""
        return max(1, self.options.concurrency)

    def _pool(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = _SharedPool.take(self._pool_size)
            return self._executor

    def chat(
        self,
        conversations: list[list[Message]],
        params: SamplingParams,
        on_result: ResultCallback | None = None,
        isolate_failures: bool = False,
    ) -> list[Completion]:
        """Complete every conversation concurrently (options.concurrency calls at a time), in input order.

        `on_result(index, completion)` is called in this thread as each call finishes, so the caller can
        store it at once. If any call fails for good, the calls not yet started are cancelled, running
        ones stop retrying, and BackendError names the failing conversation. If this thread is interrupted
        (Ctrl-C, SIGTERM made KeyboardInterrupt), the calls in flight are cut at once, every result that
        has arrived is still given to `on_result`, and the interruption propagates.

        With `isolate_failures`, a call that fails for good is a FINISH_CALL_FAILED completion carrying
        the reason (its question fails, the others go on), unless the endpoint is gone: a 401/403/404
        refusal, or FAILURE_STREAK calls in a row failing for good, fail the batch as above.
        """
        if not conversations:
            return []
        abort = threading.Event()
        with self._executor_lock:
            self._batches.add(abort)
        try:
            return self._chat(conversations, params, on_result, abort, isolate_failures)
        finally:
            with self._executor_lock:
                self._batches.discard(abort)

    def _chat(
        self,
        conversations: list[list[Message]],
        params: SamplingParams,
        on_result: ResultCallback | None,
        abort: threading.Event,
        isolate_failures: bool = False,
    ) -> list[Completion]:
        streak = _FailureStreak(isolate_failures)
        if len(conversations) == 1 or self.options.concurrency <= 1:
            results = []
            for index, conversation in enumerate(conversations):
                try:
                    results.append(self._complete(conversation, params, abort))
                except BackendError as error:
                    if not streak.isolates(error):
                        stopped = streak.why_stopped(error)
                        if stopped == str(error):
                            raise
                        raise BackendError(stopped) from None
                    results.append(streak.failed(error))
                else:
                    streak.succeeded()
                if on_result is not None:
                    on_result(index, results[-1])
            return results
        pool = self._pool()
        # Each finished call announces itself on a queue: waiting costs the same for any batch size
        # (concurrent.futures.wait re-registers on every pending future each time: quadratic).
        finished: queue.SimpleQueue[Future[Completion]] = queue.SimpleQueue()
        futures: list[Future[Completion]] = []
        for conversation in conversations:
            future = pool.submit(self._complete, conversation, params, abort)
            future.add_done_callback(finished.put)
            futures.append(future)
        index_of = {future: index for index, future in enumerate(futures)}
        remaining = len(futures)
        failed: Future[Completion] | None = None
        delivered: set[int] = set()
        substitutes: dict[int, Completion] = {}  # calls that failed for good, isolated
        try:
            while remaining and failed is None:
                try:
                    future = finished.get(timeout=QUEUE_POLL)  # a timeout keeps Ctrl-C prompt
                except queue.Empty:
                    if abort.is_set():  # interrupted from another thread (see interrupt())
                        raise _Aborted from None
                    continue
                remaining -= 1
                if future.cancelled():
                    continue
                error = future.exception()
                if error is not None:
                    if not isinstance(error, BackendError) or not streak.isolates(error):
                        failed = future
                        continue
                    index = index_of[future]
                    substitutes[index] = streak.failed(error)
                    if on_result is not None:
                        on_result(index, substitutes[index])
                        delivered.add(index)
                    continue
                streak.succeeded()
                if on_result is not None:
                    on_result(index_of[future], future.result())
                    delivered.add(index_of[future])
        except BaseException:  # Ctrl-C / worker shutdown: leave nothing running in the background
            self._cut(abort, futures)
            if on_result is not None:
                with contextlib.suppress(Exception):  # e.g. the store itself failed: report that one
                    self._deliver_arrived(futures, delivered, on_result)
            raise
        if failed is None:
            return [substitutes[i] if i in substitutes else f.result() for i, f in enumerate(futures)]
        abort.set()
        for future in futures:
            future.cancel()  # a no-op for the calls already running or done
        index = index_of[failed]
        error = failed.exception()
        if isinstance(error, BackendError):
            stopped = streak.why_stopped(error)
            raise BackendError(f"conversation {index + 1} of {len(conversations)}: {stopped}") from None
        raise BackendError(
            f"{self.spec} at {self.base_url}: conversation {index + 1} of {len(conversations)} crashed "
            f"({type(error).__name__}: {self._redact(str(error))[:MAX_SERVER_MESSAGE]})"
        ) from None

    def _cut(self, abort: threading.Event, futures: list[Future[Completion]]) -> None:
        """Stop a batch now: nothing new starts, calls in flight fail at once (their sockets are shut
        down), and their threads are given ABORT_GRACE seconds to return."""
        abort.set()
        for future in futures:
            future.cancel()
        self._sockets.cut()
        wait([f for f in futures if not f.done()], timeout=ABORT_GRACE)

    @staticmethod
    def _deliver_arrived(
        futures: list[Future[Completion]], delivered: set[int], on_result: ResultCallback
    ) -> None:
        """Hand over, in input order, every result that arrived but was not yet handed over."""
        for index, future in enumerate(futures):
            if index in delivered or not future.done() or future.cancelled():
                continue
            if future.exception() is None:
                on_result(index, future.result())

    def interrupt(self) -> None:
        """Stop every batch under way in any thread: nothing new starts, calls in flight are cut, and
        each interrupted `chat` raises in its own thread after handing over what had arrived. For a
        caller whose batches run in threads it started, when the main thread is interrupted."""
        with self._executor_lock:
            batches = list(self._batches)
        for abort in batches:
            abort.set()
        self._sockets.cut()

    def close(self) -> None:
        """Give back the call threads and close the HTTP connections (idempotent). Calls still in flight
        are cut first, so this never waits for a slow or hung endpoint."""
        self.interrupt()
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            last = _SharedPool.give_back(self._pool_size)
            if last is not None:
                last.shutdown(wait=True, cancel_futures=True)
        self._client.close()


class _FailureStreak:
    """Which calls that failed for good fail only their conversation (with isolated failures), and when
    the endpoint itself is failing: a refusal every call would get, or FAILURE_STREAK failures in a row."""

    def __init__(self, isolate: bool) -> None:
        self.isolate = isolate
        self.count = 0

    def isolates(self, error: BackendError) -> bool:
        if not self.isolate or (isinstance(error, _Refused) and error.status in ENDPOINT_GONE):
            return False
        return self.count + 1 < FAILURE_STREAK

    def failed(self, error: BackendError) -> Completion:
        """The completion standing for a call that failed for good (one that `isolates`)."""
        self.count += 1
        return Completion(text="", finish_reason=FINISH_CALL_FAILED, extra={"missing": str(error)})

    def succeeded(self) -> None:
        self.count = 0

    def why_stopped(self, error: BackendError) -> str:
        gone = isinstance(error, _Refused) and error.status in ENDPOINT_GONE
        if self.isolate and self.count + 1 >= FAILURE_STREAK and not gone:
            return f"stopped calling after {FAILURE_STREAK} calls in a row failed for good; the last: {error}"
        return str(error)


def _server_message(body: object) -> str | None:
    """The `error.message` of an OpenAI-style error body, or a short text body."""
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
    if isinstance(body, str) and body.strip():
        return body.strip()
    return None


def call_parameters(options: BackendOptions, params: SamplingParams) -> dict[str, Any]:
    """The sampling part of a chat request in the backend's call style.

    The official call (FastChat's) sends `temperature` and `max_tokens` (and `seed` when it samples);
    the reasoning-model call
    (OpenAI's o-series and GPT-5, which refuse both) sends `max_completion_tokens`, no temperature, and
    `reasoning_effort` when one is set. A thinking budget is added to the token limit, since reasoning
    tokens count against it. Chat template arguments go to servers that take them (vLLM, SGLang).
    """
    limit = params.max_new_tokens + thinking_budget(options)
    if options.call_style == CALL_REASONING:
        sent: dict[str, Any] = {"max_completion_tokens": limit}
        if options.reasoning_effort:
            sent["reasoning_effort"] = options.reasoning_effort
    else:
        sent = {"temperature": params.temperature, "max_tokens": limit}
        if not params.greedy:
            # A sampled call carries the run's seed (part of its cache key), so vLLM and SGLang sample
            # the same answer again; greedy calls, the judge's among them, are sent as FastChat sends them.
            sent["seed"] = params.seed
    if options.chat_template_kwargs:
        sent["extra_body"] = {"chat_template_kwargs": dict(options.chat_template_kwargs)}
    return sent


def _reasoning_field(message: Mapping[str, Any]) -> str | None:
    """The thinking an endpoint returned beside the answer (vLLM, SGLang, DeepSeek, OpenRouter)."""
    for name in REASONING_FIELDS:
        value = message.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _parse_completion(body: str) -> Completion:
    """A chat.completion JSON body -> Completion with the call's metadata.

    Anything unexpected, and a reply without text (content null, empty or whitespace), is a retryable
    failed attempt: an empty answer must never be stored or judged as if the model had written it. A
    reply whose thinking came back without an answer is not a failed attempt but a result (the model
    spent its budget thinking): it is returned as it is, and the runner marks it unfinished.
    """
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        message = choice["message"]
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise TypeError("message content is not a string")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        snippet = " ".join(body[:80].split())
        raise _RetryableError(f"malformed response ({type(exc).__name__}): {snippet!r}") from None
    finish_reason = choice.get("finish_reason")
    finish_reason = finish_reason if isinstance(finish_reason, str) else None
    reasoning = _reasoning_field(message)
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("completion_tokens_details")
    reasoning_tokens = _count(details.get("reasoning_tokens")) if isinstance(details, dict) else None
    if (content is None or not content.strip()) and reasoning is None:
        shown = "null" if content is None else ("empty" if not content else "only whitespace")
        hint = ""
        if finish_reason == FINISH_LENGTH:
            hint = ": the token limit was spent before any text (raise the max-tokens option)"
        raise _RetryableError(f"empty reply (content {shown}, finish_reason {finish_reason!r}){hint}")
    return Completion(
        text=content or "",
        n_tokens=_count(usage.get("completion_tokens")) or 0,
        finish_reason=finish_reason,
        truncated=finish_reason == FINISH_LENGTH,
        prompt_tokens=_count(usage.get("prompt_tokens")),
        served_model=_str_or_none(data.get("model")),
        system_fingerprint=_str_or_none(data.get("system_fingerprint")),
        reasoning=reasoning,
        reasoning_tokens=reasoning_tokens if reasoning_tokens or reasoning is not None else None,
    )


def _count(value: object) -> int | None:
    # bool is an int subclass; a server sending `true` as a count is not giving a count
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def raw_base_url(options: BackendOptions, environ: Mapping[str, str] | None = None) -> str:
    """The endpoint a backend with these options talks to: the option, else OPENAI_BASE_URL, else OpenAI."""
    env = os.environ if environ is None else environ
    return options.base_url or env.get("OPENAI_BASE_URL") or OFFICIAL_BASE_URL


def missing_key(options: BackendOptions, environ: Mapping[str, str] | None = None) -> str | None:
    """Why a call would be refused for want of a key (None when there is a key or no key is needed)."""
    env = os.environ if environ is None else environ
    if env.get(options.api_key_env, "").strip():
        return None
    if urlsplit(normalise_base_url(raw_base_url(options, env))).hostname != "api.openai.com":
        return None
    return (
        f"the OpenAI endpoint needs an API key: set {options.api_key_env} in the environment, "
        "or use --mtbench-judge-base-url / a local judge"
    )


def static_identity(name: str, options: BackendOptions) -> dict[str, Any]:
    """The identity of `openai/<name>` without a client (cached and offline runs need no key)."""
    return api_identity(name, options, normalise_base_url(raw_base_url(options)))


def settled_style(name: str, options: BackendOptions) -> str:
    """The call style a backend uses: `auto` before the preflight has settled it is what the model's
    name suggests (a reasoning model of OpenAI's, else the official call)."""
    if options.call_style != CALL_AUTO:
        return options.call_style
    return CALL_REASONING if _REASONING_NAMES.match(name) else CALL_OFFICIAL


def api_identity(name: str, options: BackendOptions, base_url: str) -> dict[str, Any]:
    """Backend, model name and endpoint; then only what was set of the rest that changes replies (the
    call style, chat template arguments, a thinking budget), so a plain run's identity, and with it every
    cache key it wrote, is as it always was."""
    identity: dict[str, Any] = {"backend": "openai", "model": name, "base_url": base_url}
    style = settled_style(name, options)
    if style != CALL_OFFICIAL:
        identity["call"] = style
        if options.reasoning_effort:
            identity["reasoning_effort"] = options.reasoning_effort
    if options.chat_template_kwargs:
        identity["chat_template_kwargs"] = dict(options.chat_template_kwargs)
    budget = thinking_budget(replace(options, call_style=style))
    if budget:
        identity["thinking_budget"] = budget
    return identity


def thinking_budget(options: BackendOptions) -> int:
    """Tokens a call may spend reasoning on top of its answer's: the option when set, else
    REASONING_BUDGET for the reasoning-model call (whose reasoning counts against its limit, so the
    answer's 1024 or the verdict's 2048 alone can leave no room for the answer) and 0 otherwise."""
    if options.thinking_budget is not None:
        return options.thinking_budget
    return REASONING_BUDGET if options.call_style == CALL_REASONING else 0


# -- preflight --------------------------------------------------------------------------------------------


def retired_message(name: str, base_url: str) -> str | None:
    """The one-line explanation for a model OpenAI has shut down (None if `name` is not in RETIRED)."""
    if name not in RETIRED:
        return None
    snapshot, shutdown = RETIRED[name]
    was = f" (it pointed at {snapshot})" if snapshot != name else ""
    note = ""
    if snapshot == OFFICIAL_JUDGE_SNAPSHOT:
        note = (
            f"; {snapshot} is the official MT-Bench judge, so scores from another judge are not directly "
            "comparable with published ones"
        )
    return (
        f"model {name} was retired by OpenAI on {shutdown}{was} and {base_url} no longer serves it: "
        f"pick a model OpenAI still serves, or point the base URL option at an endpoint that still serves "
        f"{snapshot} (an Azure OpenAI deployment, a proxy, an archive){note}"
    )


def _is_official(base_url: str) -> bool:
    return (urlsplit(base_url).hostname or "") in OFFICIAL_HOSTS


def preflight(
    name: str,
    options: BackendOptions,
    *,
    environ: Mapping[str, str] | None = None,
    today: date | None = None,
    sleep: Callable[[float], None] = time.sleep,
    identify: bool = False,
) -> PreflightResult:
    """Check before a run that the endpoint answers, accepts the key and serves `name`, and settle the
    call style.

    Returns what it learnt when all is well: the call style, and lines to show (a scheduled shutdown).
    Otherwise BackendError with one line the user can act on (the caller prefixes the flag, e.g.
    "--mtbench-judge=openai/x: "). A model OpenAI has retired is named as such without a request.
    Otherwise one `GET {base}/models` (timeout min(options.timeout, 15 s); one retry when the connection
    is refused or dropped): the model listed -> done, no generation call (but see `auto` below). The
    model not listed -> on OpenAI itself, the list is the answer; elsewhere one chat call with
    max_tokens=1 confirms (servers such as Ollama or llama.cpp accept names they do not list). A server
    without a model list (404/405 on /models) gets that one-token chat call instead. A 5xx or a rate
    limit is not a configuration problem: it is logged and left to the run's own retries.

    With `call_style="auto"` the one-token chat call is made in the official style (temperature 0,
    max_tokens) also for a listed model, unless the list says an open-source server serves it (vLLM,
    SGLang, llama.cpp, Ollama: OPEN_SERVERS), which always takes the official call. A refusal of those
    parameters as OpenAI words it (`unsupported_parameter` / `unsupported_value`) settles on the
    reasoning-model call, which is then tried once.

    With `identify`, the one-token chat call is always made (its reply's `system_fingerprint` and
    `model` name the weights) and the result's `served` holds what the endpoint told, with the model
    list entry's `root` and `max_model_len` (vLLM's).
    """
    env = os.environ if environ is None else environ
    try:
        base = normalise_base_url(raw_base_url(options, env))
    except ValueError as exc:  # e.g. a port out of range
        shown = _split_userinfo(raw_base_url(options, env))[0]
        raise BackendError(f"the base URL {shown} is not valid ({exc}): check the base URL option") from None
    official = _is_official(base)
    notes: list[str] = []
    if official and name in RETIRED:
        shutdown = date.fromisoformat(RETIRED[name][1])
        if (today or date.today()) >= shutdown:
            raise BackendError(retired_message(name, base))
        notes.append(
            f"{name} is scheduled by OpenAI to shut down on {RETIRED[name][1]}; a judge chosen after that "
            'scores on its own scale (see the README\'s "The judge after GPT-4")'
        )
    credentials = _credentials(options, env)
    import openai  # lazy: importing this module must stay cheap and work without the extra

    check = _Preflight(openai, name, base, options, credentials, sleep, identify)
    try:
        check.run(official)
    finally:
        check.client.close()
    served = None
    if identify:
        told = {**check.listed, **check.replied}
        served = ServedModel(
            served_model=_str_or_none(told.get("model")),
            system_fingerprint=_str_or_none(told.get("system_fingerprint")),
            root=_str_or_none(told.get("root")),
            max_model_len=_count(told.get("max_model_len")),
            official=official,
        )
    return PreflightResult(None if check.style == CALL_AUTO else check.style, tuple(notes), served)


class _Preflight:
    """The requests of one preflight and how their failures read."""

    def __init__(
        self,
        openai: Any,
        name: str,
        base: str,
        options: BackendOptions,
        credentials: _Credentials,
        sleep: Callable[[float], None],
        identify: bool = False,
    ) -> None:
        self.openai = openai
        self.name = name
        self.base = base
        self.options = options
        self.timeout = min(options.timeout, PREFLIGHT_TIMEOUT)
        self.has_key = credentials.has_key
        self.url_credentials = credentials.basic is not None
        self.secrets = credentials.secrets
        self.sleep = sleep
        self.client = _build_client(openai, credentials, self.timeout)
        self.style = options.call_style  # settled by the first chat call when "auto"
        self.identify = identify  # always make the chat call: its reply names the weights
        self.listed: dict[str, Any] = {}  # the model list's entry for the model (root, max_model_len)
        self.replied: dict[str, Any] = {}  # the chat call's reply (model, system_fingerprint)

    def run(self, official: bool) -> None:
        openai = self.openai
        try:
            raw = self._send(self.client.models.with_raw_response.list)
        except openai.APIStatusError as exc:
            if exc.status_code in NO_MODEL_LIST:
                self._probe_chat(served=None)
                return
            self._refused(exc, "GET /models")
            return
        served = _model_list(raw.http_response.text)
        if served is None:  # a 200 that is not a model list (e.g. a proxy's page): ask the model itself
            self._probe_chat(served=None)
            return
        ids = [entry["id"] for entry in served]
        if self.name in ids or f"{self.name}:latest" in ids:  # Ollama serves `x` as `x:latest`
            entry = served[ids.index(self.name) if self.name in ids else ids.index(f"{self.name}:latest")]
            if isinstance(entry.get("shutdown_date"), str):
                log.warning("%s at %s shuts down on %s", self.name, self.base, entry["shutdown_date"])
            self.listed = {k: entry[k] for k in ("root", "max_model_len") if k in entry}
            if self.identify or (self.style == CALL_AUTO and entry.get("owned_by") not in OPEN_SERVERS):
                self._probe_chat(served=ids)
            return
        if official:
            raise BackendError(retired_message(self.name, self.base) or self._not_served(ids))
        self._probe_chat(served=ids)

    def _send(self, request: Callable[[], Any]) -> Any:
        """One request, retried once if the connection was refused or dropped; unreachable -> BackendError."""
        openai = self.openai
        for attempt in (1, 2):
            try:
                return request()
            except openai.APITimeoutError:
                raise self._unreachable(f"no answer within {self.timeout:g}s") from None
            except openai.APIConnectionError as exc:
                if attempt == 2:
                    raise self._unreachable(self._connection_reason(exc)) from None
            self.sleep(PREFLIGHT_RETRY_WAIT)
        raise AssertionError("unreachable")  # pragma: no cover

    def _probe_chat(self, served: list[str] | None) -> None:
        """One chat call of one token: does the server generate with this model name, and with which
        call style? (`auto` tries the official call first, then the reasoning call once.)"""
        openai = self.openai
        style = CALL_REASONING if self.style == CALL_REASONING else CALL_OFFICIAL
        # A reasoning model may spend a few tokens thinking before its first word; it is not read.
        probe = SamplingParams(0.0, 1 if style == CALL_OFFICIAL else PREFLIGHT_REASONING_TOKENS)
        sent = call_parameters(replace(self.options, call_style=style, thinking_budget=0), probe)
        sent.pop("extra_body", None)
        try:
            raw = self._send(
                lambda: self.client.chat.completions.with_raw_response.create(
                    model=self.name,
                    messages=[{"role": "user", "content": "Reply with OK."}],
                    n=1,
                    **sent,
                )
            )
        except openai.APIStatusError as exc:
            message = self._server_text(exc)
            if exc.status_code == 400 and _refuses_parameters(exc):
                if self.style == CALL_AUTO and style == CALL_OFFICIAL:
                    log.info(  # the plugin says so in its own line
                        "%s at %s refuses the official call's parameters (%s): using the reasoning-model "
                        "call (max_completion_tokens, no temperature)",
                        self.name,
                        self.base,
                        message,
                    )
                    self.style = CALL_REASONING
                    self._probe_chat(served)
                    return
                hint = (
                    "it is a reasoning model: set the call option to reasoning or auto "
                    "(--mtbench-judge-call / --mtbench-model-call)"
                    if style == CALL_OFFICIAL
                    else "check --mtbench-judge-reasoning-effort"
                )
                raise BackendError(
                    f"{self.base} refuses the {style} call's parameters for {self.name} "
                    f"(HTTP 400: {message}): {hint}"
                ) from None
            if exc.status_code == 404 and served is None and not _says_model_unknown(exc):
                # Neither a model list nor a chat endpoint here, and no word about the model: a wrong path.
                path = urlsplit(self.base).path.rstrip("/") or "/"
                hint = " (OpenAI-compatible servers answer under /v1)" if not path.endswith("/v1") else ""
                raise BackendError(
                    f"nothing answers chat requests at {self.base}/chat/completions (HTTP 404: {message}): "
                    f"check the path of the base URL{hint}"
                ) from None
            if exc.status_code == 404 or (exc.status_code in (400, 422) and _says_model_unknown(exc)):
                if served is not None:
                    raise BackendError(self._not_served(served)) from None
                raise BackendError(
                    f"model {self.name} is not served at {self.base} (HTTP {exc.status_code}: {message})"
                ) from None
            self._refused(exc, "a one-token chat request")
            return
        if self.style == CALL_AUTO:
            self.style = style
        try:
            reply = json.loads(raw.http_response.text)
        except ValueError:
            reply = None
        if isinstance(reply, dict):
            self.replied = {k: reply[k] for k in ("model", "system_fingerprint") if k in reply}

    def _refused(self, exc: Any, what: str) -> None:
        """An error status other than "no such model": raise for what the user must fix, else log it."""
        status = exc.status_code
        message = self._server_text(exc)
        if status in (401, 403):
            if self.has_key:
                whose = f"the API key in ${self.options.api_key_env}"
                if self.url_credentials:
                    whose += " or the credentials in the base URL"
                raise BackendError(f"{self.base} refused {whose} (HTTP {status}): {message}") from None
            if self.url_credentials:
                raise BackendError(
                    f"{self.base} refused the credentials in the base URL (HTTP {status}): {message}"
                ) from None
            raise BackendError(
                f"{self.base} needs an API key (HTTP {status}: {message}): set ${self.options.api_key_env}"
            ) from None
        if status == 429 and _error_code(exc) == "insufficient_quota":
            raise BackendError(
                f"{self.base} refused the request: the account has no quota left (HTTP 429: {message})"
            ) from None
        if status == 429 or status >= 500:
            # Transient trouble, not a wrong setting: the run's own retries deal with it.
            log.warning("preflight: %s answered %s with HTTP %d (%s)", self.base, what, status, message)
            return
        raise BackendError(f"{self.base} answered {what} with HTTP {status}: {message}") from None

    def _not_served(self, served: list[str]) -> str:
        shown = sorted(served)
        listing = "it serves: " + ", ".join(shown[:MODELS_SHOWN]) if shown else "it lists no models"
        if len(shown) > MODELS_SHOWN:
            listing += f" and {len(shown) - MODELS_SHOWN} more"
        close = difflib.get_close_matches(self.name, shown, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"model {self.name} is not served at {self.base} ({listing}){hint}"

    def _unreachable(self, reason: str) -> BackendError:
        return BackendError(
            f"cannot reach {self.base} ({reason}): check the base URL option and that the server is running"
        )

    def _connection_reason(self, exc: BaseException) -> str:
        """What went wrong under an APIConnectionError, in a few words."""
        seen: set[int] = set()
        cause: BaseException | None = exc
        innermost = exc
        while cause is not None and id(cause) not in seen:
            seen.add(id(cause))
            if isinstance(cause, ConnectionRefusedError):
                return "connection refused"
            if isinstance(cause, socket.gaierror):
                return "host name not found"
            if isinstance(cause, ssl.SSLError):
                return self._short(f"TLS error: {cause}")
            innermost = cause
            cause = cause.__cause__ or cause.__context__
        text = str(innermost) or type(innermost).__name__
        if "refused" in text.lower():
            return "connection refused"
        return self._short(text)

    def _server_text(self, exc: Any) -> str:
        return self._short(_server_message(exc.body) or exc.message)

    def _short(self, text: str) -> str:
        return _shorten(_redact(str(text), self.secrets))  # redacted first: a cut could split a secret


def _model_list(body: str) -> list[dict[str, Any]] | None:
    """The entries of an OpenAI-style model list (each with a string `id`), or None if it is not one."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return None
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)]


def _error_code(exc: Any) -> str | None:
    body = exc.body
    error = body.get("error", body) if isinstance(body, Mapping) else None
    code = error.get("code") if isinstance(error, Mapping) else None
    return code if isinstance(code, str) else None


_UNKNOWN_MODEL = re.compile(r"(?i)model.*(not found|does not exist|not exist|unknown|not served|no such)")


def _refuses_parameters(exc: Any) -> bool:
    """Does a 400 refuse the call's parameters (a reasoning model given max_tokens or a temperature)?"""
    if _error_code(exc) in _UNSUPPORTED_CODES:
        return True
    text = _server_message(exc.body) or exc.message or ""
    return bool(re.search(r"(?i)(max_tokens|temperature).*(not supported|unsupported)", text))


def _says_model_unknown(exc: Any) -> bool:
    """Does a 400/422 say the model does not exist (servers differ: vLLM, LiteLLM, TGI, ...)?"""
    if _error_code(exc) in ("model_not_found", "invalid_model"):
        return True
    return bool(_UNKNOWN_MODEL.search(_server_message(exc.body) or exc.message or ""))


def create(name: str, options: BackendOptions) -> OpenAIBackend:
    """Build the `openai/<name>` backend (ImportError propagates so the registry can print the hint)."""
    return OpenAIBackend(name, options)
