"""OpenAI-compatible chat endpoints (the OpenAI API, vLLM, llama.cpp server, ...) as candidates or judges.

`openai/<model>` sends exactly what FastChat sends to its judge (model, messages, n=1, temperature,
max_tokens), runs the calls of a batch concurrently on one shared client, and does its own retries
(429, 5xx, timeouts, connection errors, malformed bodies) with full-jitter exponential backoff that
honours `retry-after` / `retry-after-ms`. The `openai` package is imported only when a backend is built.
The API key is read from the environment when the client is built and never stored, shown or logged.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .base import BackendError, BackendOptions, Completion, Message, ResultCallback, SamplingParams

log = logging.getLogger(__name__)

OFFICIAL_BASE_URL = "https://api.openai.com/v1"
PLACEHOLDER_API_KEY = "EMPTY"  # what FastChat/vLLM use when a local server needs no key
BACKOFF_BASE = 0.5  # seconds; first retry waits up to this
BACKOFF_CAP = 20.0  # seconds; no computed backoff waits longer
RETRY_AFTER_CAP = 60.0  # seconds; a server asking for longer is not believed
RETRYABLE_STATUS = frozenset({408, 409, 429})  # plus every 5xx
_BEARER = re.compile(r"(?i)\bbearer\s+[^\s'\"]+")
MAX_SERVER_MESSAGE = 200  # characters of a server error message kept in our errors


class _Secret(str):
    """A string that never shows itself in a repr (e.g. pytest --showlocals, vars(backend))."""

    def __repr__(self) -> str:
        return "'***'"


class _RetryableError(Exception):
    """One failed attempt that may succeed if repeated; `retry_after` is the server's hint in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Aborted(Exception):
    """Another call of the same batch failed for good, so this one stops retrying."""


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
        self.options = options
        raw_url = raw_base_url(options, env)
        self.base_url = normalise_base_url(raw_url)
        self._sleep = sleep
        self._jitter = jitter
        self._openai = openai
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

        api_key = env.get(options.api_key_env, "").strip() or None  # a stray newline breaks the header
        if api_key is None:
            problem = missing_key(options, env)
            if problem:
                raise BackendError(problem)
            api_key = PLACEHOLDER_API_KEY  # local servers (vLLM, llama.cpp) ignore the key
        # only the redaction list keeps the key; it is never printed (see _redact / __repr__)
        self._secrets = tuple(_Secret(s) for s in (api_key,) if s != PLACEHOLDER_API_KEY and len(s) >= 4)
        self._client = openai.OpenAI(
            base_url=raw_url.rstrip("/"),
            api_key=api_key,
            max_retries=0,  # we retry ourselves: jitter, retry-after caps, malformed bodies
            timeout=options.timeout,
        )
        self._completions = self._client.chat.completions.with_raw_response
        del api_key

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.name!r}, base_url={self.base_url!r})"

    def identity(self) -> dict[str, Any]:
        """What determines the outputs: backend, model name and the endpoint (without credentials)."""
        return {"backend": "openai", "model": self.name, "base_url": self.base_url}

    # -- one call ---------------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _BEARER.sub("Bearer ***", text)  # a key quoted in some other form (e.g. a header repr)

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
        text = " ".join(text.split())
        if len(text) > MAX_SERVER_MESSAGE:
            text = text[: MAX_SERVER_MESSAGE - 3] + "..."
        return self._redact(text)

    def _attempt(self, messages: list[Message], params: SamplingParams) -> Completion:
        """One HTTP request; raises _RetryableError or BackendError, or returns the completion."""
        openai = self._openai
        failure: Exception
        try:
            raw = self._completions.create(
                model=self.name,
                messages=messages,  # type: ignore[arg-type]
                n=1,
                temperature=params.temperature,
                max_tokens=params.max_new_tokens,
            )
            body = raw.http_response.text
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status in RETRYABLE_STATUS or status >= 500:
                failure = _RetryableError(self._describe(exc), parse_retry_after(exc.response.headers))
            else:
                failure = BackendError(
                    f"{self.spec} at {self.base_url} refused the request ({self._describe(exc)}); not retried"
                )
        except openai.APIConnectionError as exc:  # includes APITimeoutError
            failure = _RetryableError(self._describe(exc))
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
        for attempt in range(1, attempts + 1):
            if abort.is_set():
                raise _Aborted
            try:
                return self._attempt(messages, params)
            except _RetryableError as exc:
                last = self._redact(str(exc))
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
        raise BackendError(
            f"{self.spec} at {self.base_url} failed after {attempts} attempt{'s' if attempts != 1 else ''}; "
            f"last error: {last}"
        )

    # -- batches ----------------------------------------------------------------------------------------

    def _pool(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=max(1, self.options.concurrency), thread_name_prefix="mtbench-openai"
                )
            return self._executor

    def chat(
        self,
        conversations: list[list[Message]],
        params: SamplingParams,
        on_result: ResultCallback | None = None,
    ) -> list[Completion]:
        """Complete every conversation concurrently (options.concurrency calls at a time), in input order.

        `on_result(index, completion)` is called in this thread as each call finishes, so the caller can
        store it at once. If any call fails for good, the calls not yet started are cancelled, running
        ones stop retrying, and BackendError names the failing conversation.
        """
        if not conversations:
            return []
        abort = threading.Event()
        if len(conversations) == 1 or self.options.concurrency <= 1:
            results = []
            for index, conversation in enumerate(conversations):
                results.append(self._complete(conversation, params, abort))
                if on_result is not None:
                    on_result(index, results[-1])
            return results
        pool = self._pool()
        futures: list[Future[Completion]] = [
            pool.submit(self._complete, c, params, abort) for c in conversations
        ]
        index_of = {future: index for index, future in enumerate(futures)}
        pending: set[Future[Completion]] = set(futures)
        failed: Future[Completion] | None = None
        try:
            while pending and failed is None:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=index_of.__getitem__):
                    if future.exception() is not None:
                        failed = failed or future
                    elif on_result is not None:
                        on_result(index_of[future], future.result())
        except BaseException:  # Ctrl-C / worker shutdown: leave nothing running in the background
            abort.set()
            for future in futures:
                future.cancel()
            raise
        if failed is None:
            return [f.result() for f in futures]
        abort.set()
        for future in pending:
            future.cancel()
        index = index_of[failed]
        error = failed.exception()
        if isinstance(error, BackendError):
            raise BackendError(f"conversation {index + 1} of {len(conversations)}: {error}") from None
        raise BackendError(
            f"{self.spec} at {self.base_url}: conversation {index + 1} of {len(conversations)} crashed "
            f"({type(error).__name__}: {self._redact(str(error))[:MAX_SERVER_MESSAGE]})"
        ) from None

    def close(self) -> None:
        """Stop the worker threads and close the HTTP connections (idempotent)."""
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        self._client.close()


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


def _parse_completion(body: str) -> Completion:
    """A chat.completion JSON body -> Completion; anything unexpected is a retryable malformed reply."""
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        content = choice["message"].get("content")
        if content is not None and not isinstance(content, str):
            raise TypeError("message content is not a string")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        snippet = " ".join(body[:80].split())
        raise _RetryableError(f"malformed response ({type(exc).__name__}): {snippet!r}") from None
    usage = data.get("usage") if isinstance(data, dict) else None
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    extra = {"finish_reason": choice.get("finish_reason")} if isinstance(choice, dict) else {}
    return Completion(text=content or "", n_tokens=tokens if isinstance(tokens, int) else 0, extra=extra)


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
    return {"backend": "openai", "model": name, "base_url": normalise_base_url(raw_base_url(options))}


def create(name: str, options: BackendOptions) -> OpenAIBackend:
    """Build the `openai/<name>` backend (ImportError propagates so the registry can print the hint)."""
    return OpenAIBackend(name, options)
