"""A local thinking model through the plugin: a tiny model with Qwen3's `enable_thinking` switch, trained
to write `<think>...</think>answer` (pytest_mtbench.testing.tiny_model.build_tiny_thinker).

Only the answer is judged and carried into turn 2, the reasoning is kept; budget forcing closes a thought
still going at the budget and still gets an answer; `enable_thinking=false` is another model identity.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from pytest_mtbench.testing import tiny_model  # noqa: E402
from pytest_mtbench.testing.tiny_model import (  # noqa: E402
    THINK_CLOSE,
    THINK_OPEN,
    THINKER_ANSWER,
    THINKER_REASONING,
)

pytestmark = pytest.mark.slow  # trains a tiny model once per run


@pytest.fixture(scope="session")
def thinker_dir(build_shared: Callable[[Callable[[Path], Path], str], Path]) -> Path:
    return build_shared(tiny_model.build_tiny_thinker, "thinker")


def _run(pytester: pytest.Pytester, shared_data: Path, model: Path, *args: str, cache: str = "cache"):
    report = pytester.path / "report.json"
    report.unlink(missing_ok=True)
    result = pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        f"--mtbench-model={model}",
        "--mtbench-judge=fake/judge-7",
        f"--mtbench-data={shared_data}",
        f"--mtbench-cache={pytester.path / cache}",
        f"--mtbench-report={report}",
        "-k",
        "81 or 121",
        *args,
    )
    return result, json.loads(report.read_text()) if report.is_file() else None


def _answer_prompts(cache: Path) -> list[list[dict[str, str]]]:
    """The conversations the model was asked to answer, as the cache stored them."""
    return [
        json.loads(path.read_text())["material"]["messages"] for path in (cache / "answer").rglob("*.json")
    ]


def test_only_the_answer_is_judged_and_turn_2_sees_no_reasoning(
    pytester: pytest.Pytester, shared_data: Path, thinker_dir: Path
) -> None:
    result, report = _run(pytester, shared_data, thinker_dir)
    assert result.ret == 0, result.stdout.str()
    turns = [t for q in report["questions"] for t in q["turns"]]
    assert len(turns) == 4
    assert all(t["answer"] == THINKER_ANSWER and t["reasoning"] == THINKER_REASONING for t in turns)
    assert all(t["answer_call"]["reasoning_tokens"] > 0 for t in turns)
    for turn in turns:
        prompt = turn["judgments"][0]["prompt"]["user"]
        assert THINKER_ANSWER in prompt and THINKER_REASONING not in prompt and THINK_OPEN not in prompt
    second = [m for m in _answer_prompts(pytester.path / "cache") if len(m) == 3]
    assert len(second) == 2 and all(m[1] == {"role": "assistant", "content": THINKER_ANSWER} for m in second)
    assert "spent reasoning" in result.stdout.str()


def test_enable_thinking_false_is_another_identity_and_another_prompt(
    pytester: pytest.Pytester, shared_data: Path, thinker_dir: Path
) -> None:
    from pytest_mtbench.backends import load_backend
    from pytest_mtbench.backends.base import BackendOptions

    _run(pytester, shared_data, thinker_dir)
    result, report = _run(
        pytester, shared_data, thinker_dir, "--mtbench-chat-template-kwargs=enable_thinking=false"
    )
    assert result.ret == 0, result.stdout.str()
    assert report["run"]["phases"]["generation"]["calls"] == 4  # the thinking run's answers are not reused
    turns = [t for q in report["questions"] for t in q["turns"]]
    assert all(t["answer"] == THINKER_ANSWER and t["reasoning"] is None for t in turns)

    plain = BackendOptions(device="cpu")
    off = BackendOptions(device="cpu", chat_template_kwargs=(("enable_thinking", False),))
    conversation = [{"role": "user", "content": "Name a colour."}]
    on_backend, off_backend = load_backend(str(thinker_dir), plain), load_backend(str(thinker_dir), off)
    try:
        assert off_backend.identity() == {
            **on_backend.identity(),
            "chat_template_kwargs": {"enable_thinking": False},
        }
        assert (
            off_backend.render(conversation)
            == on_backend.render(conversation) + f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n"
        )
    finally:
        on_backend.close()
        off_backend.close()


def test_budget_forcing_closes_a_thought_still_going_and_still_answers(
    pytester: pytest.Pytester, shared_data: Path, thinker_dir: Path
) -> None:
    # Six tokens are not enough for the thinker's thought: without a budget it is cut there, unfinished,
    # and not judged.
    result, report = _run(pytester, shared_data, thinker_dir, "--mtbench-max-new-tokens=6")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "unfinished_reasoning" in result.stdout.str() and "2 unfinished reasoning" in result.stdout.str()
    assert all(q["error"].startswith("turn 1: unfinished_reasoning") for q in report["questions"])

    # With a budget of six, the thought is closed for it there, and the answer gets its own 24 tokens.
    result, report = _run(
        pytester, shared_data, thinker_dir, "--mtbench-max-new-tokens=24", "--mtbench-thinking-budget=6"
    )
    assert result.ret == 0, result.stdout.str()
    turns = [t for q in report["questions"] for t in q["turns"]]
    assert len(turns) == 4 and all(t["answer"] == THINKER_ANSWER for t in turns)
    assert all(THINKER_REASONING.startswith(t["reasoning"]) and t["reasoning"] for t in turns)
    assert all(t["answer_call"]["reasoning_tokens"] == 6 for t in turns)
    assert report["run"]["phases"]["generation"]["calls"] == 4


def test_transformers_own_response_parsing_comes_first_where_the_tokenizer_declares_it(
    thinker_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_mtbench.backends import load_backend
    from pytest_mtbench.backends.base import BackendOptions

    backend = load_backend(str(thinker_dir), BackendOptions(device="cpu"))
    try:
        prompt = backend.render([{"role": "user", "content": "Name a colour."}])
        generated = backend._encode(f"{THINK_OPEN}\nmarkers say this\n{THINK_CLOSE}\n\nmarker answer")
        assert backend._reply(prompt, generated)[:2] == ("marker answer", "markers say this")
        seen = []

        def parse_response(ids, prefix):
            seen.append((list(ids), prefix))
            return {"role": "assistant", "content": " parsed answer", "thinking": "parsed thought "}

        monkeypatch.setattr(backend.tokenizer, "response_template", {"type": "object"}, raising=False)
        monkeypatch.setattr(backend.tokenizer, "parse_response", parse_response, raising=False)
        assert backend._reply(prompt, generated)[:2] == ("parsed answer", "parsed thought")
        assert seen == [(generated, prompt)]  # the reply's ids, and the prompt as the parser's prefix
    finally:
        backend.close()
