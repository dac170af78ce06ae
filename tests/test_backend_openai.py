"""The `openai/<model>` backend against a real loopback HTTP server (pytest_mtbench.testing.judge_server).

Every server binds 127.0.0.1 only, is bounded in requests and stops itself after a short lifetime.
Backoff waits go to an injected recorder, so no test sleeps for a backoff and none asserts on wall time.
"""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openai")

from pytest_mtbench.backends import load_backend  # noqa: E402
from pytest_mtbench.backends.base import BackendError, BackendOptions, Completion, SamplingParams  # noqa: E402
from pytest_mtbench.backends.openai_api import (  # noqa: E402
    BACKOFF_CAP,
    RETRY_AFTER_CAP,
    OpenAIBackend,
    _parse_completion,
    _RetryableError,
    backoff_delay,
    normalise_base_url,
    parse_retry_after,
)
from pytest_mtbench.testing.judge_server import FakeOpenAIServer, judge_like_reply  # noqa: E402

SECRET = "sk-test-9f8e7d6c5b4a39281706"
JUDGE_PARAMS = SamplingParams(temperature=0.0, max_new_tokens=2048)
SYSTEM = "You are a helpful assistant."


def convo(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


class SleepRecorder:
    """Stands in for time.sleep: records each backoff wait instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, seconds: float) -> None:
        with self._lock:
            self.waits.append(seconds)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def make_backend(sleeps: SleepRecorder) -> Iterator[Callable[..., OpenAIBackend]]:
    backends: list[OpenAIBackend] = []

    def factory(
        server: FakeOpenAIServer | None = None,
        environ: dict[str, str] | None = None,
        jitter: Callable[[], float] = lambda: 1.0,
        **options: Any,
    ) -> OpenAIBackend:
        if server is not None:
            options.setdefault("base_url", server.base_url)
        options.setdefault("timeout", 5.0)
        backend = OpenAIBackend(
            "gpt-4", BackendOptions(**options), sleep=sleeps, jitter=jitter, environ=environ or {}
        )
        backends.append(backend)
        return backend

    yield factory
    for backend in backends:
        backend.close()


# -- the request on the wire -----------------------------------------------------------------------------


def test_request_body_is_exactly_what_fastchat_sends(make_server, make_backend) -> None:
    server = make_server(scores=9)
    backend = make_backend(server)
    messages = convo("Rate this answer.")
    [completion] = backend.chat([messages], SamplingParams(temperature=0.0, max_new_tokens=2048, seed=5))
    assert server.requests == [
        {"model": "gpt-4", "messages": messages, "n": 1, "temperature": 0.0, "max_tokens": 2048}
    ]
    # A sampled call also carries the run's seed, so vLLM and SGLang sample the same answer again.
    backend.chat([messages], SamplingParams(temperature=0.7, max_new_tokens=1024, seed=5))
    assert server.requests[1] == {
        "model": "gpt-4",
        "messages": messages,
        "n": 1,
        "temperature": 0.7,
        "max_tokens": 1024,
        "seed": 5,
    }
    assert completion.text == judge_like_reply(9)
    assert completion.text.endswith("Rating: [[9]]")
    assert completion.n_tokens == len(judge_like_reply(9).split())
    assert completion.finish_reason == "stop" and completion.truncated is False
    assert completion.prompt_tokens == len(f"{SYSTEM} Rate this answer.".split())  # the server counts words
    assert completion.served_model == "gpt-4"
    assert completion.system_fingerprint == "fp_test"
    assert completion.extra == {}


def test_registry_builds_the_backend_and_identity_has_no_credentials(make_server, monkeypatch) -> None:
    server = make_server()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    url = server.base_url.replace("http://", "http://user:pw@") + "/"
    backend = load_backend("openai/gpt-4o-mini", BackendOptions(base_url=url))
    try:
        assert backend.spec == "openai/gpt-4o-mini"
        expected = {"backend": "openai", "model": "gpt-4o-mini", "base_url": server.base_url}
        assert backend.identity() == expected
        assert json.loads(json.dumps(backend.identity())) == backend.identity()  # plain data only
    finally:
        backend.close()


def test_custom_endpoint_without_key_sends_a_placeholder(make_server, make_backend) -> None:
    server = make_server()
    backend = make_backend(environ={"OPENAI_BASE_URL": server.base_url})
    assert backend.identity()["base_url"] == server.base_url
    assert backend.chat([convo("hi")], JUDGE_PARAMS)[0].text == judge_like_reply(7)
    assert server.authorizations == ["Bearer EMPTY"]


# -- concurrency ------------------------------------------------------------------------------------------


def test_results_keep_input_order_when_replies_finish_out_of_order(make_server, make_backend) -> None:
    def reply(body: dict[str, Any]) -> str:
        index = int(body["messages"][-1]["content"].split()[-1])
        threading.Event().wait(0.002 * (24 - index))  # later inputs answer sooner
        return f"echo {index}"

    server = make_server(reply=reply)
    backend = make_backend(server, concurrency=8)
    completions = backend.chat([convo(f"question {i}") for i in range(24)], JUDGE_PARAMS)
    assert [c.text for c in completions] == [f"echo {i}" for i in range(24)]
    assert server.request_count == 24


def test_calls_really_run_concurrently_up_to_the_limit(make_server, make_backend) -> None:
    # a barrier of 4 only opens if 4 requests are in the server at once (fails after 10 s otherwise)
    barrier = threading.Barrier(4, timeout=10)

    def reply(body: dict[str, Any]) -> str:
        barrier.wait()
        return "ok"

    server = make_server(reply=reply)
    backend = make_backend(server, concurrency=4, timeout=20.0)
    completions = backend.chat([convo(f"q{i}") for i in range(12)], JUDGE_PARAMS)
    assert [c.text for c in completions] == ["ok"] * 12
    assert server.max_in_flight == 4  # reached the limit, never exceeded it
    assert server.request_count == 12


def test_default_options_run_32_calls_at_once(make_server, make_backend) -> None:
    barrier = threading.Barrier(32, timeout=10)
    server = make_server(reply=lambda body: str(barrier.wait()))
    backend = make_backend(server, timeout=20.0)
    assert backend.options.concurrency == BackendOptions().concurrency == 32
    backend.chat([convo(f"q{i}") for i in range(64)], JUDGE_PARAMS)
    assert server.max_in_flight == 32


# -- retries ----------------------------------------------------------------------------------------------


def test_429_with_retry_after_waits_what_the_server_asks(make_server, make_backend, sleeps) -> None:
    server = make_server(faults=[("429", 2.5), ("429", None, {"retry-after-ms": "1500"}), ("429", 3600)])
    backend = make_backend(server)
    [completion] = backend.chat([convo("q")], JUDGE_PARAMS)
    assert completion.text == judge_like_reply(7)
    assert server.request_count == 4
    assert sleeps.waits == [2.5, 1.5, RETRY_AFTER_CAP]


def test_5xx_recover_with_exponential_backoff(make_server, make_backend, sleeps) -> None:
    server = make_server(faults=[("500",), ("502",), ("503",), ("504",)])
    backend = make_backend(server, max_retries=6)  # jitter pinned to 1.0: the full backoff
    [completion] = backend.chat([convo("q")], JUDGE_PARAMS)
    assert completion.text == judge_like_reply(7)
    assert server.request_count == 5
    assert sleeps.waits == [0.5, 1.0, 2.0, 4.0]


def test_backoff_is_full_jitter_and_capped() -> None:
    assert backoff_delay(1, None, lambda: 0.5) == 0.25
    assert backoff_delay(3, None, lambda: 0.0) == 0.0
    assert backoff_delay(30, None, lambda: 1.0) == BACKOFF_CAP
    assert backoff_delay(1, 7.0, lambda: 0.0) == 7.0
    assert backoff_delay(1, -3.0, lambda: 0.0) == 0.0
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_hang_past_the_timeout_is_retried(make_server, make_backend, sleeps) -> None:
    server = make_server(faults=[("hang", 5.0)])
    backend = make_backend(server, timeout=0.3)
    [completion] = backend.chat([convo("q")], JUDGE_PARAMS)
    assert completion.text == judge_like_reply(7)
    assert server.request_count == 2
    assert sleeps.waits == [0.5]


@pytest.mark.parametrize("fault", [("malformed",), ("malformed", "no-choices"), ("drop",)])
def test_malformed_or_dropped_replies_are_retried(make_server, make_backend, sleeps, fault) -> None:
    server = make_server(faults=[fault, fault])
    backend = make_backend(server)
    [completion] = backend.chat([convo("q")], JUDGE_PARAMS)
    assert completion.text == judge_like_reply(7)
    assert server.request_count == 3
    assert len(sleeps.waits) == 2


@pytest.mark.parametrize(
    ("fault", "shown"),
    [
        (("null-content",), "content null"),
        (("empty-content",), "content empty"),
        (("empty-content", " \n\t"), "content only whitespace"),
    ],
)
def test_a_reply_without_text_is_retried_like_a_malformed_one(
    make_server, make_backend, sleeps, fault, shown
) -> None:
    server = make_server(faults=[fault, fault])
    backend = make_backend(server)
    [completion] = backend.chat([convo("q")], JUDGE_PARAMS)
    assert completion.text == judge_like_reply(7)
    assert server.request_count == 3
    assert len(sleeps.waits) == 2
    server.set_faults([fault] * 10)
    stored: list[Completion] = []
    with pytest.raises(BackendError) as info:
        backend.chat([convo("q")], JUDGE_PARAMS, on_result=lambda i, c: stored.append(c))
    assert f"empty reply ({shown}, finish_reason 'stop')" in str(info.value)
    assert "7 attempts" in str(info.value)
    assert stored == []  # nothing reached the caller, so nothing empty can be cached


def test_an_empty_reply_cut_off_at_the_limit_says_so(make_server, make_backend) -> None:
    server = make_server(faults=[("empty-content",)] * 3, finish_reason="length")
    backend = make_backend(server, max_retries=2)
    with pytest.raises(BackendError, match=r"finish_reason 'length'\): the token limit was spent"):
        backend.chat([convo("q")], JUDGE_PARAMS)


def test_call_metadata_comes_from_the_response(make_server, make_backend) -> None:
    server = make_server(
        served_model="gpt-4-0613", system_fingerprint="fp_abc123", faults=[None, ("length",)]
    )
    backend = make_backend(server, concurrency=1)
    first, second = backend.chat([convo("one two"), convo("three")], JUDGE_PARAMS)
    assert (first.finish_reason, first.truncated) == ("stop", False)
    assert (second.finish_reason, second.truncated) == ("length", True)
    assert first.prompt_tokens == len(f"{SYSTEM} one two".split())
    assert second.prompt_tokens == len(f"{SYSTEM} three".split())
    assert {c.served_model for c in (first, second)} == {"gpt-4-0613"}  # asked for gpt-4, served 0613
    assert {c.system_fingerprint for c in (first, second)} == {"fp_abc123"}
    assert Completion.from_value(json.loads(json.dumps(second.as_value()))) == second


def test_exhausted_retries_name_endpoint_model_and_attempts(make_server, make_backend, sleeps) -> None:
    server = make_server(faults=[("500",)] * 10)
    backend = make_backend(server, max_retries=2)
    with pytest.raises(BackendError) as info:
        backend.chat([convo("q")], JUDGE_PARAMS)
    message = str(info.value)
    assert "openai/gpt-4" in message
    assert server.base_url in message
    assert "3 attempts" in message
    assert "HTTP 500" in message and "injected fault 500" in message
    assert server.request_count == 3
    assert len(sleeps.waits) == 2


@pytest.mark.parametrize("status", ["400", "401", "404"])
def test_client_errors_are_not_retried(make_server, make_backend, sleeps, status) -> None:
    server = make_server(faults=[(status, None, None, "model does not exist")])
    backend = make_backend(server)
    with pytest.raises(BackendError, match=rf"HTTP {status}: model does not exist.*not retried"):
        backend.chat([convo("q")], JUDGE_PARAMS)
    assert server.request_count == 1
    assert sleeps.waits == []


def test_one_failed_call_fails_the_batch_and_cancels_the_rest(make_server, make_backend) -> None:
    server = make_server(latency=0.02, faults=[("401",)])
    backend = make_backend(server, concurrency=2)
    with pytest.raises(BackendError, match=r"conversation \d+ of 40: .*HTTP 401"):
        backend.chat([convo(f"q{i}") for i in range(40)], JUDGE_PARAMS)
    assert server.request_count <= 6  # the queued calls never reached the server


def test_unreachable_endpoint_is_retried_then_named(make_server, make_backend, sleeps) -> None:
    server = make_server()
    server.stop()  # nothing listens on that port any more
    backend = make_backend(server, max_retries=3)
    with pytest.raises(BackendError) as info:
        backend.chat([convo("q")], JUDGE_PARAMS)
    assert f"openai/gpt-4 at {server.base_url} failed after 4 attempts" in str(info.value)
    assert "connection error" in str(info.value)
    assert sleeps.waits == [0.5, 1.0, 2.0]


def test_server_request_bound_answers_503(make_server, make_backend) -> None:
    server = make_server(max_requests=2)
    backend = make_backend(server, max_retries=1)
    backend.chat([convo("a"), convo("b")], JUDGE_PARAMS)
    with pytest.raises(BackendError, match="2 attempts.*HTTP 503"):
        backend.chat([convo("c")], JUDGE_PARAMS)
    assert server.request_count == 4
    assert server.rejected_count == 2


# -- secrets ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3], ids=["single", "batch"])
def test_api_key_is_sent_but_never_shown(make_server, make_backend, caplog, batch) -> None:
    caplog.set_level("DEBUG")
    server = make_server(
        faults=[
            ("500", None, None, f"upstream rejected key {SECRET}"),
            ("401", None, None, f"Incorrect API key provided: {SECRET}"),
        ]
    )
    backend = make_backend(server, environ={"JUDGE_KEY": SECRET}, api_key_env="JUDGE_KEY")
    with pytest.raises(BackendError) as info:
        backend.chat([convo(f"q{i}") for i in range(batch)], JUDGE_PARAMS)
    assert set(server.authorizations) == {f"Bearer {SECRET}"}  # the key did reach the server
    shown = [str(info.value), repr(info.value), repr(backend), json.dumps(backend.identity()), caplog.text]
    for text in shown:
        assert SECRET not in text
    assert "Incorrect API key provided: ***" in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None  # openai's error is not chained


SENTINEL_KEY = "sk-sentinel-key-4c1d2e"
SENTINEL_PASSWORD = "sentinelpw"
HTTP_LOGGERS = ("openai", "httpx", "httpcore", "httpx2", "httpcore2", "pytest_mtbench")


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_url_credentials_and_key_both_reach_the_server_and_no_log_shows_them(
    make_server, make_backend, caplog
) -> None:
    for name in HTTP_LOGGERS:  # every level of the HTTP stack, including the client's request-URL lines
        caplog.set_level(logging.DEBUG, logger=name)
    token = _basic("user", SENTINEL_PASSWORD).split()[1]
    server = make_server(
        faults=[("500", None, None, f"upstream said: {SENTINEL_KEY} / user:{SENTINEL_PASSWORD} / {token}")]
    )
    url = server.base_url.replace("http://", f"http://user:{SENTINEL_PASSWORD}@")
    backend = make_backend(base_url=url, environ={"OPENAI_API_KEY": SENTINEL_KEY})
    [completion] = backend.chat([convo("q")], JUDGE_PARAMS)
    assert completion.text == judge_like_reply(7)
    # Both credentials went out on every attempt: the key as the bearer token, the URL's as Basic.
    for headers in server.request_headers:
        assert headers["authorization"] == f"Bearer {SENTINEL_KEY}"
        assert headers["proxy-authorization"] == _basic("user", SENTINEL_PASSWORD)
    assert len(server.request_headers) == 2
    assert any("HTTP Request: POST http://127.0.0.1" in r.getMessage() for r in caplog.records)  # logged
    for record in caplog.records:
        text = record.getMessage()
        assert SENTINEL_KEY not in text and SENTINEL_PASSWORD not in text and token not in text
    assert "upstream said: *** / user:*** / ***" in caplog.text  # our retry line, redacted
    assert backend.identity()["base_url"] == server.base_url
    shown = repr(backend) + repr(vars(backend)) + json.dumps(backend.identity())
    assert SENTINEL_KEY not in shown and SENTINEL_PASSWORD not in shown


def test_server_errors_echoing_url_credentials_are_redacted(make_server, make_backend) -> None:
    server = make_server(faults=[("400", None, None, f"bad url http://user:{SENTINEL_PASSWORD}@host")])
    url = server.base_url.replace("http://", f"http://user:{SENTINEL_PASSWORD}@")
    backend = make_backend(base_url=url, environ={})
    with pytest.raises(BackendError) as info:
        backend.chat([convo("q")], JUDGE_PARAMS)
    assert "bad url http://user:***@host" in str(info.value)
    assert SENTINEL_PASSWORD not in str(info.value)


def test_a_key_at_the_cut_of_a_long_server_message_is_still_hidden(make_server, make_backend) -> None:
    # The key straddles the 200-character cut: redacting after cutting would leak its first half.
    message = "x" * 170 + f" {SENTINEL_KEY} " + "y" * 100  # "HTTP 401: " + 170 + 1: the key at 181..203
    server = make_server(faults=[("401", None, None, message)])
    backend = make_backend(server, environ={"OPENAI_API_KEY": SENTINEL_KEY})
    with pytest.raises(BackendError) as info:
        backend.chat([convo("q")], JUDGE_PARAMS)
    assert "sk-sentinel" not in str(info.value)
    assert "x *** yyy" in str(info.value)


def test_url_credentials_without_a_key_are_the_authorization(make_server, make_backend) -> None:
    server = make_server()
    url = server.base_url.replace("http://", "http://alice:p%40ss%2Fword@")  # percent-encoded userinfo
    backend = make_backend(base_url=url, environ={})
    backend.chat([convo("q")], JUDGE_PARAMS)
    [headers] = server.request_headers
    assert headers["authorization"] == _basic("alice", "p@ss/word")  # decoded, as the URL means it
    assert "proxy-authorization" not in headers
    assert backend._redact("echo p@ss/word and p%40ss%2Fword") == "echo *** and ***"


def test_url_credentials_never_follow_a_redirect_to_another_host(make_server, make_backend) -> None:
    elsewhere = make_server()
    server = make_server(faults=[("redirect", f"{elsewhere.base_url}/chat/completions")])
    url = server.base_url.replace("http://", f"http://user:{SENTINEL_PASSWORD}@")
    backend = make_backend(base_url=url, environ={"OPENAI_API_KEY": SENTINEL_KEY})
    [completion] = backend.chat([convo("q")], JUDGE_PARAMS)
    assert completion.text == judge_like_reply(7)  # the other server answered
    assert server.request_headers[0]["proxy-authorization"] == _basic("user", SENTINEL_PASSWORD)
    [moved] = elsewhere.request_headers
    assert "proxy-authorization" not in moved and "authorization" not in moved


def test_redaction_also_hides_bearer_tokens_and_stripped_keys(make_backend) -> None:
    backend = make_backend(environ={"OPENAI_API_KEY": f"  {SECRET}\n"})
    assert backend._redact(f"key {SECRET}!") == "key ***!"
    assert backend._redact("Illegal header value b'Bearer abc.def'") == "Illegal header value b'Bearer ***'"


def test_missing_key_for_the_official_endpoint_is_a_clear_error(make_backend) -> None:
    with pytest.raises(BackendError) as info:
        make_backend(environ={})
    message = str(info.value)
    assert "OPENAI_API_KEY" in message
    assert "--mtbench-judge-base-url" in message


def test_empty_key_counts_as_missing(make_backend) -> None:
    with pytest.raises(BackendError, match="MY_KEY"):
        make_backend(environ={"MY_KEY": ""}, api_key_env="MY_KEY")


def test_official_endpoint_with_key_builds_without_network(make_backend) -> None:
    backend = make_backend(environ={"OPENAI_API_KEY": SECRET})
    assert backend.identity() == {
        "backend": "openai",
        "model": "gpt-4",
        "base_url": "https://api.openai.com/v1",
    }
    assert SECRET not in repr(backend) + repr(vars(backend))


# -- pure helpers -----------------------------------------------------------------------------------------


def test_normalise_base_url() -> None:
    assert normalise_base_url("HTTPS://u:p@Example.com:8443/v1/?x=1") == "https://example.com:8443/v1"
    assert normalise_base_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"


def test_parse_completion_refuses_null_content_and_handles_missing_usage() -> None:
    # A reply without text is a failed attempt (retried), never an empty answer.
    body = json.dumps({"choices": [{"message": {"role": "assistant", "content": None}}]})
    with pytest.raises(_RetryableError, match=r"empty reply \(content null, finish_reason None\)"):
        _parse_completion(body)
    # Missing usage, model and fingerprint: the text stands, the metadata is unknown (None), not made up.
    body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "Rating: [[6]]"}}]})
    assert _parse_completion(body) == Completion(text="Rating: [[6]]", n_tokens=0)
    assert _parse_completion(body).prompt_tokens is None


def test_parse_completion_reads_the_call_metadata() -> None:
    body = json.dumps(
        {
            "model": "gpt-4-0613",
            "system_fingerprint": "fp_44709d6fcb",
            "choices": [{"message": {"content": "Rating: [[3"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 812, "completion_tokens": 5, "total_tokens": 817},
        }
    )
    assert _parse_completion(body) == Completion(
        text="Rating: [[3",
        n_tokens=5,
        finish_reason="length",
        truncated=True,
        prompt_tokens=812,
        served_model="gpt-4-0613",
        system_fingerprint="fp_44709d6fcb",
    )
    # counts that are not counts are unknown, not zero or True
    odd = json.dumps({"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": True}})
    assert _parse_completion(odd).prompt_tokens is None


# -- the server itself ------------------------------------------------------------------------------------


def test_server_lists_models(make_server) -> None:
    server = make_server(model_ids=("judge-a", "judge-b"))
    with urllib.request.urlopen(f"{server.base_url}/models", timeout=5) as response:
        data = json.loads(response.read())
    assert [m["id"] for m in data["data"]] == ["judge-a", "judge-b"]


def test_standalone_server_serves_then_stops_itself(tmp_path: Path, make_backend) -> None:
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest_mtbench.testing.judge_server",
            "--port-file",
            str(port_file),
            "--score",
            "4",
            "--max-requests",
            "2",
            "--lifetime",
            "3",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(200):
            if port_file.exists() or proc.poll() is not None:
                break
            threading.Event().wait(0.05)
        port = int(port_file.read_text())
        backend = make_backend(base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
        completions = backend.chat([convo("a"), convo("b")], JUDGE_PARAMS)
        assert [c.text for c in completions] == [judge_like_reply(4)] * 2
        with pytest.raises(BackendError, match="HTTP 503"):
            backend.chat([convo("c")], JUDGE_PARAMS)
        backend.close()
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0  # its lifetime ran out: it stopped on its own
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # reaps the process and closes the pipe
    # The two concurrent calls are logged by two handler threads, in either order.
    assert sorted(line for line in out.splitlines() if line.startswith("request ")) == [
        "request 1",
        "request 2",
        "request 3",
    ]
    assert "stopped after 3 requests" in out


def test_on_result_reports_each_call_as_it_finishes_in_the_callers_thread(make_server, make_backend) -> None:
    # The first conversation is slow: the others must be reported before it, each with its own index.
    def reply(body: dict[str, Any]) -> str:
        text = body["messages"][-1]["content"]
        if text == "q0":
            time.sleep(0.3)
        return f"answer to {text}"

    server = make_server(reply=reply)
    backend = make_backend(server, concurrency=4, timeout=20.0)
    seen: list[tuple[int, str, str]] = []
    results = backend.chat(
        [convo(f"q{i}") for i in range(4)],
        JUDGE_PARAMS,
        on_result=lambda index, c: seen.append((index, c.text, threading.current_thread().name)),
    )
    assert [c.text for c in results] == [f"answer to q{i}" for i in range(4)]
    assert sorted((i, t) for i, t, _ in seen) == [(i, f"answer to q{i}") for i in range(4)]
    assert seen[-1][0] == 0  # the slow one came last, the others were stored before it finished
    assert {name for _, _, name in seen} == {threading.current_thread().name}
