"""Smaller defects found against real servers and real files: each message says what is true."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_mtbench.backends import BackendError, BackendOptions
from pytest_mtbench.reports.terminal import column_names, short
from pytest_mtbench.testing.judge_server import FakeOpenAIServer


@pytest.mark.parametrize("path", ["/v2", "/api/v1beta"])
def test_a_wrong_url_path_is_named_as_such_not_as_a_model_not_served(path: str) -> None:
    pytest.importorskip("openai")
    from pytest_mtbench.backends.openai_api import preflight

    with FakeOpenAIServer(model_ids=("judge",)) as server:
        base = server.base_url.removesuffix("/v1") + path
        with pytest.raises(BackendError) as caught:
            preflight("judge", BackendOptions(base_url=base), environ={})
    message = str(caught.value)
    assert "not served" not in message
    assert f"nothing answers chat requests at {base}/chat/completions (HTTP 404" in message
    assert "check the path of the base URL (OpenAI-compatible servers answer under /v1)" in message


def test_a_model_a_server_does_not_know_is_still_not_served() -> None:
    pytest.importorskip("openai")
    from pytest_mtbench.backends.openai_api import preflight

    server = FakeOpenAIServer(model_ids=("judge",), models_endpoint=False, reject_unknown_models=True)
    with server, pytest.raises(BackendError, match=r"model other is not served at .*HTTP 404"):
        preflight("other", BackendOptions(base_url=server.base_url), environ={})


def test_column_headers_keep_whole_words_and_drop_file_suffixes() -> None:
    assert short("replay/answers/vicuna-13b-v1.3.jsonl") == "vicuna-13b-v1.3"
    assert short("hf/models/qwen3-0.6b.gguf") == "qwen3-0.6b"
    assert short("hf/meta-llama/Meta-Llama-3.1-8B-Instruct-Q4_K_M") == "Meta-Llama-3.1-8B…"
    assert short("hf/" + "x" * 40) == "x" * 23 + "…"  # no word boundary: cut, and marked as cut
    assert short("openai/gpt-4") == "gpt-4"
    assert column_names(["replay/a/model.jsonl", "replay/b/model.jsonl", "fake/echo"]) == [
        "model#1",
        "model#2",
        "echo",
    ]


def test_a_threshold_on_a_category_that_did_not_run_says_so(
    pytester: pytest.Pytester, shared_data: Path
) -> None:
    result = pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        "--mtbench-model=fake/echo",
        "--mtbench-judge=fake/judge-7",
        f"--mtbench-data={shared_data}",
        "--mtbench-no-cache",
        "--mtbench-threshold=coding=8",
        "--mtbench-threshold=writing=5",
        "-k",
        "writing and 81",
    )
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*--mtbench-threshold coding=8 was not checked: no coding question ran*"])
    assert "writing=5 was not checked" not in result.stdout.str()


def test_a_missing_tokenizer_gives_the_whole_reason_on_one_line(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from pytest_mtbench.backends import SamplingParams, load_backend
    from pytest_mtbench.testing.tiny_model import build_tiny_chat_model

    model = build_tiny_chat_model(tmp_path / "model")
    (model / "tokenizer.json").unlink()  # the config still names a fast tokenizer class
    with pytest.raises(BackendError) as caught:
        backend = load_backend(f"hf/{model}", BackendOptions(device="cpu"))
        backend.chat([[{"role": "user", "content": "hi"}]], SamplingParams(0.0, 4))
    message = str(caught.value)
    assert message.startswith(f"cannot load the tokenizer of hf/{model}: ") and "\n" not in message
    assert "from one of: (1)" in message and "(3)" in message  # not cut off where the list begins
