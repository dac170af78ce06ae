"""Thinking candidates and reasoning judges: one split of every reply, only answers judged and carried
into the next turn, replies that never finished thinking, and judges called as reasoning models.

API paths run against the loopback server (pytest_mtbench.testing.judge_server), the plugin in-process.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import requires
from pytest_mtbench.backends.base import BackendOptions, SamplingParams
from pytest_mtbench.reasoning import SplitReply, parse_markers, split_reply
from pytest_mtbench.testing.judge_server import FakeOpenAIServer, judge_like_reply

ANSWER = "Paris is the capital of France."
THOUGHT = "The user asks about France. Its capital is Paris, and I should say so plainly."


# ---- the split --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        ("Plain answer with a trailing space ", None, SplitReply("Plain answer with a trailing space ")),
        (f"<think>\n{THOUGHT}\n</think>\n\n{ANSWER}", None, SplitReply(ANSWER, THOUGHT)),
        # DeepSeek-R1: the opening marker is in the prompt, the reply holds only the closing one
        (f"{THOUGHT}\n</think>\n\n{ANSWER}", None, SplitReply(ANSWER, THOUGHT)),
        (f"<think>\n{THOUGHT}", None, SplitReply("", THOUGHT, finished=False)),
        (ANSWER, THOUGHT, SplitReply(ANSWER, THOUGHT)),
        ("", THOUGHT, SplitReply("", THOUGHT)),
        (f"<think>inline</think>{ANSWER}", THOUGHT, SplitReply(ANSWER, f"{THOUGHT}\n\ninline")),
        (
            "<|channel|>analysis<|message|>Weigh it.<|end|><|start|>assistant<|channel|>final<|message|>"
            f"{ANSWER}<|return|>",
            None,
            SplitReply(ANSWER, "Weigh it."),
        ),
        ("<|channel|>analysis<|message|>Still weighing", None, SplitReply("", "Still weighing", False)),
    ],
    ids=[
        "plain",
        "inline",
        "closing-only",
        "unfinished",
        "field",
        "field-only",
        "both",
        "harmony",
        "harmony-cut",
    ],
)
def test_one_split_reads_every_form(text: str, field: str | None, expected: SplitReply) -> None:
    assert split_reply(text, field) == expected


def test_other_markers_and_their_errors() -> None:
    markers = parse_markers("<reasoning>, </reasoning>")
    assert markers == ("<reasoning>", "</reasoning>")
    assert split_reply(f"<reasoning>{THOUGHT}</reasoning>{ANSWER}", markers=markers) == SplitReply(
        ANSWER, THOUGHT
    )
    assert split_reply(f"<think>{THOUGHT}</think>{ANSWER}", markers=markers).reasoning is None
    for bad in ("<think>", "<a>,<a>", ",</think>", "a,b,c"):
        with pytest.raises(ValueError, match="two different markers"):
            parse_markers(bad)


@requires("openai")
# ---- the OpenAI-compatible backend ---------------------------------------------------------------------
@pytest.mark.parametrize("placement", ["reasoning_content", "reasoning", "inline"])
def test_the_backend_keeps_what_each_server_form_returns(placement: str) -> None:
    from pytest_mtbench.backends.openai_api import OpenAIBackend

    with FakeOpenAIServer(reply=lambda body: ANSWER, reasoning=placement, reasoning_text=THOUGHT) as server:
        backend = OpenAIBackend("thinker", BackendOptions(base_url=server.base_url, max_retries=0))
        try:
            [completion] = backend.chat([[{"role": "user", "content": "Capital?"}]], SamplingParams(0.0, 64))
        finally:
            backend.close()
    split = split_reply(completion.text, completion.reasoning)
    assert split == SplitReply(ANSWER, THOUGHT)
    assert completion.reasoning_tokens == len(THOUGHT.split())  # the server's completion_tokens_details
    assert completion.n_tokens == len(THOUGHT.split()) + len(ANSWER.split())


@requires("openai")
def test_null_content_after_reasoning_is_one_call_and_a_result() -> None:
    from pytest_mtbench.backends.openai_api import OpenAIBackend

    with FakeOpenAIServer(
        reasoning="reasoning", reasoning_text=THOUGHT, faults=[("reasoning-length",)] * 10
    ) as server:
        backend = OpenAIBackend(
            "thinker", BackendOptions(base_url=server.base_url, max_retries=6), sleep=lambda seconds: None
        )
        try:
            [completion] = backend.chat([[{"role": "user", "content": "Capital?"}]], SamplingParams(0.0, 64))
        finally:
            backend.close()
        calls = server.request_count
    assert calls == 1  # not retried as an "empty reply"
    assert (completion.text, completion.reasoning, completion.finish_reason) == ("", THOUGHT, "length")


def test_the_official_call_and_identity_are_unchanged_and_the_reasoning_call_differs() -> None:
    from pytest_mtbench.backends.openai_api import call_parameters, static_identity

    params = SamplingParams(0.0, 2048)
    plain = BackendOptions(base_url="http://127.0.0.1:9/v1")
    assert call_parameters(plain, params) == {"temperature": 0.0, "max_tokens": 2048}
    assert static_identity("gpt-4.1-2025-04-14", plain) == {
        "backend": "openai",
        "model": "gpt-4.1-2025-04-14",
        "base_url": "http://127.0.0.1:9/v1",
    }
    reasoning = BackendOptions(base_url=plain.base_url, call_style="reasoning", reasoning_effort="low")
    assert call_parameters(reasoning, params) == {
        "max_completion_tokens": 2048 + 16384,
        "reasoning_effort": "low",
    }
    identity = static_identity("gpt-4.1-2025-04-14", reasoning)
    assert identity["call"] == "reasoning" and identity["reasoning_effort"] == "low"
    kwargs = BackendOptions(base_url=plain.base_url, chat_template_kwargs=(("enable_thinking", False),))
    assert call_parameters(kwargs, params)["extra_body"] == {
        "chat_template_kwargs": {"enable_thinking": False}
    }
    assert static_identity("m", kwargs)["chat_template_kwargs"] == {"enable_thinking": False}
    # auto, where no preflight runs: what the name suggests
    auto = BackendOptions(base_url=plain.base_url, call_style="auto")
    assert "call" not in static_identity("gpt-4.1-2025-04-14", auto)
    assert static_identity("o3-2025-04-16", auto)["call"] == "reasoning"


# ---- through the plugin --------------------------------------------------------------------------------
def _run(pytester: pytest.Pytester, shared_data: Path, *args: str) -> tuple[pytest.RunResult, dict]:
    report = pytester.path / "report.json"
    result = pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        f"--mtbench-data={shared_data}",
        f"--mtbench-cache={pytester.path / 'cache'}",
        f"--mtbench-report={report}",
        *args,
    )
    data = json.loads(report.read_text()) if report.is_file() else {}
    return result, data


@requires("openai")
def test_only_the_answer_is_judged_and_carried_into_turn_2(
    pytester: pytest.Pytester, shared_data: Path
) -> None:
    candidate = FakeOpenAIServer(
        reply=lambda body: ANSWER,
        reasoning="reasoning_content",
        reasoning_text=THOUGHT,
        model_ids=("thinker",),
    )
    judge = FakeOpenAIServer(scores=8, model_ids=("judge",))
    with candidate, judge:
        result, report = _run(
            pytester,
            shared_data,
            "--mtbench-model=openai/thinker",
            f"--mtbench-model-base-url={candidate.base_url}",
            "--mtbench-judge=openai/judge",
            f"--mtbench-judge-base-url={judge.base_url}",
            "--mtbench-judge-call=official",
            "-k",
            "81",
        )
        sent_to_candidate = list(candidate.requests)
        sent_to_judge = list(judge.requests)
    assert result.ret == 0, result.stdout.str()
    second = [b for b in sent_to_candidate if len(b["messages"]) > 1]
    assert len(second) == 1 and second[0]["messages"][1] == {"role": "assistant", "content": ANSWER}
    judge_prompts = [b["messages"][-1]["content"] for b in sent_to_judge if b.get("max_tokens") == 2048]
    assert len(judge_prompts) == 2
    assert all(ANSWER in p and "capital of France" in p and THOUGHT not in p for p in judge_prompts)
    [record] = report["questions"]
    assert [t["reasoning"] for t in record["turns"]] == [THOUGHT, THOUGHT]
    assert [t["answer"] for t in record["turns"]] == [ANSWER, ANSWER]
    assert [t["answer_call"]["reasoning_tokens"] for t in record["turns"]] == [len(THOUGHT.split())] * 2
    assert report["run"]["phases"]["generation"]["reasoning_tokens"] == 2 * len(THOUGHT.split())
    lengths = report["run"]["answer_tokens"]
    assert lengths["mean_tokens"] == len(THOUGHT.split()) + len(ANSWER.split())
    assert lengths["mean_answer_tokens"] == len(ANSWER.split())
    assert "answers: " in result.stdout.str() and "spent reasoning" in result.stdout.str()


@requires("openai")
@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_reply_that_never_finished_thinking_fails_its_question_after_one_call(
    pytester: pytest.Pytester, shared_data: Path, workers: str
) -> None:
    candidate = FakeOpenAIServer(
        reasoning="reasoning",
        reasoning_text=THOUGHT,
        faults=[("reasoning-length",)] * 20,
        model_ids=("thinker",),
    )
    with candidate:
        result, report = _run(
            pytester,
            shared_data,
            "--mtbench-model=openai/thinker",
            f"--mtbench-model-base-url={candidate.base_url}",
            "--mtbench-judge=fake/judge-7",
            "--mtbench-retries=6",
            "-k",
            "81",
            "-n",
            workers,
        )
        calls = [body for body in candidate.requests if body.get("max_tokens") != 1]  # not the preflight's
    assert len(calls) == 1
    assert result.ret == 1
    out = result.stdout.str()
    assert "unfinished_reasoning: the model was still thinking" in out
    assert "1 unfinished reasoning" in out
    [record] = report["questions"]
    assert record["error"].startswith("turn 1: unfinished_reasoning")
    [turn] = record["turns"]
    assert turn["reasoning"] == THOUGHT and turn["answer"] == "" and turn["judgments"] == []
    assert turn["answer_call"]["finish_reason"] == "unfinished_reasoning"
    assert report["categories"]["writing"]["n_unfinished_reasoning"] == 1


@requires("openai")
@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_reasoning_judge_is_settled_once_at_preflight(
    pytester: pytest.Pytester, shared_data: Path, workers: str
) -> None:
    judge = FakeOpenAIServer(scores=6, reasoning_model=True, model_ids=("o-judge",))
    with judge:
        result, report = _run(
            pytester,
            shared_data,
            "--mtbench-model=fake/echo",
            "--mtbench-judge=openai/o-judge",
            f"--mtbench-judge-base-url={judge.base_url}",
            "--mtbench-judge-reasoning-effort=low",
            "-k",
            "81",
            "-n",
            workers,
        )
        sent = list(judge.requests)
    assert result.ret == 0, result.stdout.str()
    assert "calling it as a reasoning model" in result.stdout.str()
    refused = [b for b in sent if "max_tokens" in b]
    assert len(refused) == 1  # the preflight's official probe, refused once
    judged = [b for b in sent if b.get("max_completion_tokens") == 2048 + 16384]
    assert len(judged) == 2 and all("temperature" not in b and b["reasoning_effort"] == "low" for b in judged)
    assert len(sent) == 4  # official probe, reasoning probe, two judgments
    assert report["run"]["judge_call"] == {
        "style": "reasoning",
        "max_completion_tokens": 2048 + 16384,
        "reasoning_effort": "low",
    }
    assert report["overall"] == 6


@requires("openai")
def test_an_explicit_official_call_to_a_reasoning_judge_is_one_line(
    pytester: pytest.Pytester, shared_data: Path
) -> None:
    judge = FakeOpenAIServer(reasoning_model=True, model_ids=("o-judge",), models_endpoint=False)
    with judge:
        result, _ = _run(
            pytester,
            shared_data,
            "--mtbench-model=fake/echo",
            "--mtbench-judge=openai/o-judge",
            f"--mtbench-judge-base-url={judge.base_url}",
            "--mtbench-judge-call=official",
            "-k",
            "81",
        )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "refuses the official call's parameters" in result.stderr.str()
    assert "--mtbench-judge-call" in result.stderr.str()


@requires("openai")
@pytest.mark.parametrize("placement", ["inline", "reasoning_content"])
def test_the_rating_is_read_from_the_final_text_never_the_reasoning(
    pytester: pytest.Pytester, shared_data: Path, placement: str
) -> None:
    judge = FakeOpenAIServer(
        reply=lambda body: judge_like_reply(8),
        reasoning=placement,
        reasoning_text="A first impression says [[3]], but on reflection the answer is better.",
        model_ids=("thinking-judge",),
    )
    with judge:
        result, report = _run(
            pytester,
            shared_data,
            "--mtbench-model=fake/echo",
            "--mtbench-judge=openai/thinking-judge",
            f"--mtbench-judge-base-url={judge.base_url}",
            "--mtbench-judge-call=official",
            "-k",
            "81",
        )
    assert result.ret == 0, result.stdout.str()
    judgments = [j for t in report["questions"][0]["turns"] for j in t["judgments"]]
    assert [j["score"] for j in judgments] == [8, 8]
    assert all("[[3]]" in j["reasoning"] and "[[3]]" not in j["text"] for j in judgments)


@requires("openai")
@pytest.mark.parametrize(("owned_by", "probes"), [("vllm", 0), ("system", 1)])
def test_auto_asks_only_endpoints_that_may_refuse_the_official_call(owned_by: str, probes: int) -> None:
    from pytest_mtbench.backends.openai_api import preflight

    with FakeOpenAIServer(model_ids=("judge",), owned_by=owned_by) as server:
        found = preflight("judge", BackendOptions(base_url=server.base_url, call_style="auto"), environ={})
        sent = list(server.requests)
    assert [b["max_tokens"] for b in sent] == [1] * probes  # one official call of one token, or none
    assert found.call_style == ("official" if probes else None)


@requires("openai")
def test_the_html_page_shows_the_reasoning_collapsed_and_escaped(
    pytester: pytest.Pytester, shared_data: Path
) -> None:
    from pytest_mtbench.records import RunReport
    from pytest_mtbench.reports import html

    thought = "<b>weigh</b> the <script>x</script> answer"
    candidate = FakeOpenAIServer(
        reply=lambda body: ANSWER, reasoning="reasoning", reasoning_text=thought, model_ids=("thinker",)
    )
    with candidate:
        result, _ = _run(
            pytester,
            shared_data,
            "--mtbench-model=openai/thinker",
            f"--mtbench-model-base-url={candidate.base_url}",
            "--mtbench-judge=fake/judge-7",
            "-k",
            "81",
        )
    assert result.ret == 0, result.stdout.str()
    page = html.render([RunReport.read(pytester.path / "report.json")])
    blocks = re.findall(
        r'<details class="reasoning"><summary>(.*?)</summary>\s*<pre class="reasoning">(.*?)</pre>',
        page,
        re.S,
    )
    tokens = len(thought.split())
    assert (
        blocks
        == [
            (
                f"reasoning ({tokens} tokens), not judged",
                "&lt;b&gt;weigh&lt;/b&gt; the &lt;script&gt;x&lt;/script&gt; answer",
            )
        ]
        * 2
    )
    assert "<script>x</script>" not in page
