"""`preflight` of the openai backend against the loopback server: one line the user can act on, and
no generation call when the model list answers the question.

Every server binds 127.0.0.1 only and stops itself; waits between retries go to a recorder.
"""

from __future__ import annotations

import functools
import json
import logging
import socket
import threading
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openai")

from pytest_mtbench import backends  # noqa: E402
from pytest_mtbench.backends import BackendError, BackendOptions, openai_api  # noqa: E402
from pytest_mtbench.backends.base import SamplingParams  # noqa: E402
from pytest_mtbench.backends.openai_api import (  # noqa: E402
    RETIRED,
    OpenAIBackend,
    preflight,
    retired_message,
)
from pytest_mtbench.testing import judge_server  # noqa: E402
from pytest_mtbench.testing.judge_server import FakeOpenAIServer  # noqa: E402

KEY = "sk-preflight-7a6b5c4d3e2f"
AFTER_SHUTDOWNS = date(2026, 12, 1)
BEFORE_SHUTDOWNS = date(2025, 1, 1)


@pytest.fixture
def make_server(make_server: Callable[..., FakeOpenAIServer]) -> Callable[..., FakeOpenAIServer]:
    """conftest's loopback servers, serving two judges and refusing any other model by default."""
    return functools.partial(
        make_server, max_requests=50, model_ids=("judge-a", "judge-b"), reject_unknown_models=True
    )


class Waits(list):
    """Stands in for time.sleep between the preflight's attempts."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def run(
    name: str,
    server: FakeOpenAIServer | None = None,
    *,
    environ: dict[str, str] | None = None,
    waits: Waits | None = None,
    today: date = AFTER_SHUTDOWNS,
    **options: Any,
) -> None:
    if server is not None:
        options.setdefault("base_url", server.base_url)
    options.setdefault("timeout", 5.0)
    preflight(
        name,
        BackendOptions(**options),
        environ={} if environ is None else environ,
        today=today,
        sleep=waits if waits is not None else Waits(),
    )


def methods(server: FakeOpenAIServer) -> list[str]:
    return [f"{method} {path}" for method, path in server.http_requests]


# -- a healthy endpoint -----------------------------------------------------------------------------------


def test_served_model_costs_one_list_request_and_no_generation(make_server) -> None:
    server = make_server()
    assert run("judge-b", server, environ={"OPENAI_API_KEY": KEY}) is None
    assert methods(server) == ["GET /v1/models"]
    assert server.request_count == 0  # no chat request at all
    assert server.request_headers[0]["authorization"] == f"Bearer {KEY}"


def test_ollama_style_latest_tag_counts_as_served(make_server) -> None:
    server = make_server(model_ids=("llama3:latest",))
    run("llama3", server)
    assert methods(server) == ["GET /v1/models"]


def test_through_the_registry_and_a_no_op_for_other_backends(make_server, tmp_path: Path) -> None:
    server = make_server()
    backends.preflight("openai/judge-a", BackendOptions(base_url=server.base_url))
    backends.preflight("fake/echo", BackendOptions())
    backends.preflight(f"hf/{tmp_path / 'not-even-there'}", BackendOptions())  # no capability, no check
    assert methods(server) == ["GET /v1/models"]


# -- the model is not there -------------------------------------------------------------------------------


def test_model_missing_from_the_list_and_refused_names_what_is_served(make_server) -> None:
    server = make_server(model_ids=("judge-a", "judge-b", "gpt-4o-mini"))
    with pytest.raises(BackendError) as info:
        run("gpt-4o-mini-x", server)
    assert str(info.value) == (
        f"model gpt-4o-mini-x is not served at {server.base_url} "
        "(it serves: gpt-4o-mini, judge-a, judge-b); did you mean gpt-4o-mini?"
    )
    # Not on OpenAI itself, so one one-token call confirmed it (some servers accept unlisted names).
    assert methods(server) == ["GET /v1/models", "POST /v1/chat/completions"]
    assert server.requests[0]["max_tokens"] == 1


def test_long_model_lists_are_cut_short(make_server) -> None:
    server = make_server(model_ids=tuple(f"m{i:02d}" for i in range(20)))
    with pytest.raises(BackendError, match=r"\(it serves: m00, m01, m02, m03, m04, m05 and 14 more\)$"):
        run("judge", server)


def test_unlisted_model_the_server_accepts_passes(make_server) -> None:
    # llama.cpp's server lists its one model under a file name but answers to any name.
    server = make_server(model_ids=("/models/tiny.gguf",), reject_unknown_models=False)
    run("tiny", server)
    assert methods(server) == ["GET /v1/models", "POST /v1/chat/completions"]


def test_server_without_a_model_list_gets_one_token_chat(make_server) -> None:
    server = make_server(models_endpoint=False)
    run("judge-a", server)
    assert methods(server) == ["GET /v1/models", "POST /v1/chat/completions"]
    assert server.requests == [
        {
            "model": "judge-a",
            "messages": [{"role": "user", "content": "Reply with OK."}],
            "n": 1,
            "temperature": 0.0,
            "max_tokens": 1,
        }
    ]


def test_server_without_a_model_list_and_unknown_model(make_server) -> None:
    server = make_server(models_endpoint=False)
    with pytest.raises(BackendError) as info:
        run("gpt-9", server)
    assert str(info.value) == (
        f"model gpt-9 is not served at {server.base_url} "
        "(HTTP 404: The model `gpt-9` does not exist or you do not have access to it.)"
    )


# -- retired OpenAI models --------------------------------------------------------------------------------


def test_retired_openai_judge_is_named_without_any_request(monkeypatch) -> None:
    import openai

    def no_client(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("preflight built a client for a model the table says is retired")

    monkeypatch.setattr(openai, "OpenAI", no_client)
    with pytest.raises(BackendError) as info:
        run("gpt-4", environ={"OPENAI_API_KEY": KEY})  # the official endpoint (the default)
    message = str(info.value)
    assert message.startswith(
        "model gpt-4 was retired by OpenAI on 2026-10-23 (it pointed at gpt-4-0613) and "
        "https://api.openai.com/v1 no longer serves it: pick a model OpenAI still serves, or point the "
        "base URL option at an endpoint that still serves gpt-4-0613 (an Azure OpenAI deployment, a proxy, "
        "an archive); gpt-4-0613 is the official MT-Bench judge"
    )
    assert "\n" not in message
    with pytest.raises(
        BackendError, match=r"^model gpt-4-0125-preview was retired by OpenAI on 2026-03-26 and"
    ):
        run("gpt-4-0125-preview", environ={})  # named before the key is even looked at


def test_retired_model_absent_from_the_official_list(make_server, monkeypatch) -> None:
    # Before the table's date the list decides; the loopback server stands in for api.openai.com.
    server = make_server(model_ids=("gpt-4o", "gpt-4.1"))
    monkeypatch.setattr(openai_api, "OFFICIAL_HOSTS", frozenset({"127.0.0.1"}))
    with pytest.raises(BackendError) as info:
        run("gpt-3.5-turbo", server, environ={"OPENAI_API_KEY": KEY}, today=BEFORE_SHUTDOWNS)
    assert str(info.value) == retired_message("gpt-3.5-turbo", server.base_url)
    assert "retired by OpenAI on 2026-10-23 (it pointed at gpt-3.5-turbo-0125)" in str(info.value)
    assert methods(server) == ["GET /v1/models"]  # OpenAI's own list is the answer: no chat call


def test_the_official_list_is_the_answer_for_unknown_names(make_server, monkeypatch) -> None:
    server = make_server(model_ids=("gpt-4o", "gpt-4.1"))
    monkeypatch.setattr(openai_api, "OFFICIAL_HOSTS", frozenset({"127.0.0.1"}))
    with pytest.raises(BackendError, match=r"is not served at .* \(it serves: gpt-4.1, gpt-4o\)"):
        run("gpt-4.2", server, environ={"OPENAI_API_KEY": KEY})
    assert methods(server) == ["GET /v1/models"]


def test_retired_models_served_elsewhere_are_fine(make_server) -> None:
    # An archive or proxy still serving gpt-4-0613: the table only speaks for api.openai.com.
    server = make_server(model_ids=("gpt-4-0613",))
    run("gpt-4-0613", server)
    assert methods(server) == ["GET /v1/models"]


def test_retired_table_is_well_formed() -> None:
    assert RETIRED["gpt-4"] == ("gpt-4-0613", "2026-10-23")
    assert RETIRED["gpt-3.5-turbo"][1] == "2026-10-23"
    assert RETIRED["gpt-4-0125-preview"] == ("gpt-4-0125-preview", "2026-03-26")
    for snapshot, shutdown in RETIRED.values():
        date.fromisoformat(shutdown)
        assert snapshot in RETIRED  # every alias points at a snapshot the table knows too


# -- keys -------------------------------------------------------------------------------------------------


def test_refused_key_is_named_by_its_variable_and_never_shown(make_server, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    server = make_server(unauthorized=True)
    with pytest.raises(BackendError) as info:
        run("judge-a", server, environ={"JUDGE_KEY": KEY}, api_key_env="JUDGE_KEY")
    assert str(info.value) == (
        f"{server.base_url} refused the API key in $JUDGE_KEY (HTTP 401): Incorrect API key provided: ***"
    )
    assert KEY not in caplog.text
    assert methods(server) == ["GET /v1/models"]
    assert server.request_count == 0


def test_refused_without_a_key_says_which_variable_to_set(make_server) -> None:
    server = make_server(unauthorized=True, models_endpoint=False)
    with pytest.raises(BackendError) as info:
        run("judge-a", server)
    # /v1/models answered 401 before anything else: the key problem is the answer, no chat was tried.
    assert str(info.value) == (
        f"{server.base_url} needs an API key (HTTP 401: Incorrect API key provided: EMPTY): "
        "set $OPENAI_API_KEY"
    )
    assert methods(server) == ["GET /v1/models"]


def test_refused_url_credentials_are_named(make_server) -> None:
    server = make_server(unauthorized=True)
    url = server.base_url.replace("http://", "http://bob:hunter2-long@")
    with pytest.raises(BackendError) as info:
        run("judge-a", base_url=url)
    assert str(info.value).startswith(f"{server.base_url} refused the credentials in the base URL (HTTP 401)")
    assert "hunter2-long" not in str(info.value)


def test_official_endpoint_without_a_key_fails_before_any_request() -> None:
    with pytest.raises(BackendError, match="the OpenAI endpoint needs an API key: set OPENAI_API_KEY"):
        run("gpt-4.1", environ={})


# -- reachability -----------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_is_retried_once_then_explained() -> None:
    base = f"http://127.0.0.1:{_closed_port()}/v1"
    waits = Waits()
    with pytest.raises(BackendError) as info:
        run("judge-a", base_url=base, waits=waits)
    assert str(info.value) == (
        f"cannot reach {base} (connection refused): check the base URL option and that the server is running"
    )
    assert waits == [openai_api.PREFLIGHT_RETRY_WAIT]


def test_unknown_host_is_explained() -> None:
    with pytest.raises(
        BackendError, match=r"^cannot reach http://no-such-host\.invalid/v1 \(host name not found\)"
    ):
        run("judge-a", base_url="http://no-such-host.invalid/v1")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "http://u:pw-secret@127.0.0.1:99999/v1",
            "the base URL http://127.0.0.1:99999/v1 is not valid (Port",
        ),
        ("localhost:8000/v1", "cannot reach localhost:8000/v1 (Request URL has an unsupported protocol"),
        ("ftp://127.0.0.1/v1", "cannot reach ftp://127.0.0.1/v1 (Request URL has an unsupported protocol"),
    ],
)
def test_malformed_base_urls_are_one_line(url: str, expected: str) -> None:
    with pytest.raises(BackendError) as info:
        run("judge-a", base_url=url)
    assert str(info.value).startswith(expected)
    assert "pw-secret" not in str(info.value)


def test_a_hanging_server_is_a_timeout_not_a_hang(make_server) -> None:
    server = make_server(models_endpoint=False, faults=[("hang", 30.0)])
    waits = Waits()
    with pytest.raises(BackendError) as info:
        run("judge-a", server, timeout=0.3, waits=waits)
    assert str(info.value).startswith(f"cannot reach {server.base_url} (no answer within 0.3s)")
    assert waits == []  # a timeout is not retried: it would only double the wait


def test_preflight_timeout_is_capped(make_server, monkeypatch) -> None:
    seen: list[float] = []
    real = openai_api._build_client

    def spy(openai: Any, credentials: Any, timeout: float) -> Any:
        seen.append(timeout)
        return real(openai, credentials, timeout)

    monkeypatch.setattr(openai_api, "_build_client", spy)
    run("judge-a", make_server(), timeout=600.0)
    assert seen == [openai_api.PREFLIGHT_TIMEOUT]


def test_transient_server_trouble_is_left_to_the_run(make_server, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="pytest_mtbench")
    server = make_server(models_endpoint=False, faults=[("503",)])
    run("judge-a", server)
    assert "answered a one-token chat request with HTTP 503" in caplog.text


def test_quota_exhausted_is_a_preflight_failure(make_server) -> None:
    quota = ("429", None, None, "You exceeded your current quota.", "insufficient_quota")
    server = make_server(models_endpoint=False, faults=[quota])
    with pytest.raises(BackendError) as info:
        run("judge-a", server)
    assert str(info.value) == (
        f"{server.base_url} refused the request: the account has no quota left "
        "(HTTP 429: You exceeded your current quota.)"
    )
    server.set_faults([("429", 1.0)])  # an ordinary rate limit is the run's business
    run("judge-a", server)


# -- the standalone server's new switches -----------------------------------------------------------------


def _standalone(tmp_path: Path, name: str, *flags: str) -> tuple[str, threading.Thread]:
    """Run `judge_server.main` with these flags in a thread (lifetime 1.5 s); return its base URL."""
    port_file = tmp_path / f"{name}.port"
    argv = ["--port-file", str(port_file), "--lifetime", "1.5", *flags]
    thread = threading.Thread(target=judge_server.main, args=(argv,), daemon=True)
    thread.start()
    for _ in range(250):
        if port_file.exists():
            break
        threading.Event().wait(0.02)
    return f"http://127.0.0.1:{int(port_file.read_text())}/v1", thread


def test_standalone_server_switches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    replies, replies_thread = _standalone(
        tmp_path,
        "replies",
        *("--model-id", "judge-x", "--model-id", "judge-y", "--served-model", "judge-x-0613"),
        *("--system-fingerprint", "fp_cli", "--finish-reason", "length"),
    )
    no_list, no_list_thread = _standalone(
        tmp_path, "no-list", "--no-models-endpoint", "--reject-unknown-models"
    )
    refusing, refusing_thread = _standalone(tmp_path, "refusing", "--unauthorized")

    run("judge-y", base_url=replies)
    backend = OpenAIBackend("judge-y", BackendOptions(base_url=replies, max_retries=0), environ={})
    try:
        [completion] = backend.chat([[{"role": "user", "content": "hi"}]], SamplingParams(0.0, 8))
    finally:
        backend.close()
    assert (completion.served_model, completion.system_fingerprint) == ("judge-x-0613", "fp_cli")
    assert (completion.finish_reason, completion.truncated) == ("length", True)
    assert json.loads(json.dumps(completion.as_value()))["truncated"] is True
    with pytest.raises(BackendError, match=r"^model other is not served at .* \(HTTP 404: The model `other`"):
        run("other", base_url=no_list)
    with pytest.raises(BackendError, match=r"needs an API key \(HTTP 401"):
        run("judge-x", base_url=refusing)

    for thread in (replies_thread, no_list_thread, refusing_thread):
        thread.join(timeout=30)  # each stops itself when its lifetime ends
    out = capsys.readouterr().out
    # chat requests only: the preflight's GET /v1/models is not one, a refused (401) chat is not admitted
    assert out.count("stopped after 1 requests") == 2 and out.count("stopped after 0 requests") == 1
