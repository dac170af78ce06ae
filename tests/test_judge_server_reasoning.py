"""The loopback judge server imitating reasoning models: where the reasoning goes, how usage counts it,
the "reasoning-length" fault and OpenAI reasoning models' refusals of `max_tokens` and `temperature`.

Every server binds 127.0.0.1 only and stops itself after a short lifetime; requests go over real HTTP.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from pytest_mtbench.testing import judge_server
from pytest_mtbench.testing.judge_server import DEFAULT_REASONING_TEXT, FakeOpenAIServer, judge_like_reply

LIFETIME = 30.0
THOUGHT = "First I check the facts, then I weigh the depth."  # ten words
REPLY = judge_like_reply(7)


def chat(server: FakeOpenAIServer, **fields: Any) -> tuple[int, dict[str, Any]]:
    """POST a chat request with `fields` added to a one-message body; return (status, decoded JSON body)."""
    body = {"model": "fake-judge", "messages": [{"role": "user", "content": "Rate this answer please"}]}
    body.update(fields)
    request = urllib.request.Request(
        f"{server.base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def test_default_reply_body_has_no_reasoning() -> None:
    with FakeOpenAIServer(lifetime=LIFETIME) as server:
        status, reply = chat(server, max_tokens=64, temperature=0.0)
    assert status == 200
    words = len(REPLY.split())
    assert reply == {
        "id": "chatcmpl-fake-1",
        "object": "chat.completion",
        "created": 0,
        "model": "fake-judge",
        "system_fingerprint": "fp_test",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": words, "total_tokens": 4 + words},
    }


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_in_a_message_field(field: str) -> None:
    with FakeOpenAIServer(reasoning=field, reasoning_text=THOUGHT, lifetime=LIFETIME) as server:
        status, reply = chat(server)
    assert status == 200
    message = reply["choices"][0]["message"]
    assert message == {"role": "assistant", "content": REPLY, field: THOUGHT}
    words = len(REPLY.split())
    assert reply["usage"] == {
        "prompt_tokens": 4,
        "completion_tokens": words + 10,
        "total_tokens": 4 + words + 10,
        "completion_tokens_details": {"reasoning_tokens": 10},
    }
    assert reply["choices"][0]["finish_reason"] == "stop"


def test_inline_reasoning_wraps_the_content_in_think_tags() -> None:
    with FakeOpenAIServer(reasoning="inline", reasoning_text=THOUGHT, lifetime=LIFETIME) as server:
        _, reply = chat(server)
    message = reply["choices"][0]["message"]
    assert message == {"role": "assistant", "content": f"<think>\n{THOUGHT}\n</think>\n\n{REPLY}"}
    # the tags are not tokens of the reply: words of the reply plus words of the reasoning
    assert reply["usage"]["completion_tokens"] == len(REPLY.split()) + 10
    assert reply["usage"]["completion_tokens_details"] == {"reasoning_tokens": 10}


def test_reasoning_tokens_not_reported_still_counted() -> None:
    server = FakeOpenAIServer(
        reasoning="reasoning_content", reasoning_tokens_reported=False, lifetime=LIFETIME
    )
    with server:
        _, reply = chat(server)
    assert reply["choices"][0]["message"]["reasoning_content"] == DEFAULT_REASONING_TEXT
    assert "completion_tokens_details" not in reply["usage"]
    assert reply["usage"]["completion_tokens"] == len(REPLY.split()) + len(DEFAULT_REASONING_TEXT.split())


def test_reasoning_text_from_the_request() -> None:
    def thought(body: dict[str, Any]) -> str:
        return f"Thinking about {body['messages'][-1]['content'].split()[-1]} only."

    with FakeOpenAIServer(reasoning="reasoning", reasoning_text=thought, lifetime=LIFETIME) as server:
        _, reply = chat(server)
    assert reply["choices"][0]["message"]["reasoning"] == "Thinking about please only."
    assert reply["usage"]["completion_tokens_details"] == {"reasoning_tokens": 4}


@pytest.mark.parametrize(
    ("placement", "field"),
    [(None, "reasoning_content"), ("inline", "reasoning_content"), ("reasoning", "reasoning")],
)
def test_reasoning_length_fault(placement: str | None, field: str) -> None:
    server = FakeOpenAIServer(
        reasoning=placement, reasoning_text=THOUGHT, faults=[("reasoning-length",)], lifetime=LIFETIME
    )
    with server:
        _, cut = chat(server)
        _, after = chat(server)
    choice = cut["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"] == {"role": "assistant", "content": None, field: THOUGHT}
    assert cut["usage"] == {
        "prompt_tokens": 4,
        "completion_tokens": 10,
        "total_tokens": 14,
        "completion_tokens_details": {"reasoning_tokens": 10},
    }
    assert after["choices"][0]["finish_reason"] == "stop"  # the fault is consumed by one request
    assert REPLY in after["choices"][0]["message"]["content"]


def test_reasoning_length_fault_without_reported_details() -> None:
    server = FakeOpenAIServer(
        reasoning_text=THOUGHT,
        reasoning_tokens_reported=False,
        faults=[("reasoning-length",)],
        lifetime=LIFETIME,
    )
    with server:
        _, cut = chat(server)
    assert cut["usage"] == {"prompt_tokens": 4, "completion_tokens": 10, "total_tokens": 14}


def test_reasoning_model_refuses_max_tokens_and_temperature() -> None:
    with FakeOpenAIServer(reasoning_model=True, lifetime=LIFETIME) as server:
        max_tokens_status, max_tokens_reply = chat(server, max_tokens=64, temperature=0.0)
        temperature_status, temperature_reply = chat(server, max_completion_tokens=64, temperature=0.0)
        warm_status, warm_reply = chat(server, temperature=0.7)
        ok_status, ok_reply = chat(server, max_completion_tokens=64)
        default_status, _ = chat(server, max_completion_tokens=64, temperature=1)
        assert server.request_count == 5
        assert [sorted(body) for body in server.requests[:2]] == [
            ["max_tokens", "messages", "model", "temperature"],
            ["max_completion_tokens", "messages", "model", "temperature"],
        ]
    assert max_tokens_status == 400
    assert max_tokens_reply == {
        "error": {
            "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "type": "invalid_request_error",
            "param": "max_tokens",
            "code": "unsupported_parameter",
        }
    }
    assert temperature_status == 400
    assert temperature_reply == {
        "error": {
            "message": "Unsupported value: 'temperature' does not support 0.0 with this model. "
            "Only the default (1) value is supported.",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "unsupported_value",
        }
    }
    assert warm_status == 400
    assert "does not support 0.7 with" in warm_reply["error"]["message"]
    assert (ok_status, default_status) == (200, 200)
    assert ok_reply["choices"][0]["message"] == {"role": "assistant", "content": REPLY}


def test_openai_client_reads_reasoning_and_refusals() -> None:
    openai = pytest.importorskip("openai")
    server = FakeOpenAIServer(
        reasoning="reasoning_content", reasoning_text=THOUGHT, reasoning_model=True, lifetime=LIFETIME
    )
    with server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=5)
        messages = [{"role": "user", "content": "Rate this answer please"}]
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="fake-judge", messages=messages, max_tokens=64)
        completion = client.chat.completions.create(
            model="fake-judge", messages=messages, max_completion_tokens=64
        )
    assert refused.value.code == "unsupported_parameter"
    assert refused.value.param == "max_tokens"
    message = completion.choices[0].message
    assert message.content == REPLY
    assert (message.model_extra or {})["reasoning_content"] == THOUGHT
    assert completion.usage is not None and completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 10


def test_unknown_reasoning_placement_is_refused() -> None:
    with pytest.raises(ValueError, match="reasoning must be None or one of"):
        FakeOpenAIServer(reasoning="thinking")


def test_cli_flags_reach_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    class ShortLivedServer(FakeOpenAIServer):
        def __init__(self, **options: Any) -> None:
            seen.update(options)
            super().__init__(**{**options, "lifetime": 0.01})  # main returns as soon as it stops

    monkeypatch.setattr(judge_server, "FakeOpenAIServer", ShortLivedServer)
    argv = ["--port-file", str(tmp_path / "port.txt"), "--lifetime", "5"]
    assert judge_server.main(argv) == 0
    assert (seen["reasoning"], seen["reasoning_text"]) == (None, DEFAULT_REASONING_TEXT)
    assert (seen["reasoning_tokens_reported"], seen["reasoning_model"]) == (True, False)

    seen.clear()
    argv += ["--reasoning", "inline", "--reasoning-text", THOUGHT]
    argv += ["--no-reasoning-tokens", "--reasoning-model"]
    assert judge_server.main(argv) == 0
    assert (seen["reasoning"], seen["reasoning_text"]) == ("inline", THOUGHT)
    assert (seen["reasoning_tokens_reported"], seen["reasoning_model"]) == (False, True)
