"""A cache never answers for other weights: an API model's name says nothing about the weights behind it
(CI serves each new checkpoint under the same name), so its endpoint is asked at preflight which weights
it serves (system_fingerprint, the served snapshot, the model list's root and max_model_len), and a
cached value is served only if it does not record other weights; an API candidate's only if it records
the very weights served now, unless --mtbench-model-revision or --mtbench-trust-model-name vouches.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_mtbench.backends import ServedModel
from pytest_mtbench.testing.judge_server import FakeOpenAIServer

QUESTIONS = "81 or 82"  # writing: 2 questions, 4 answers, 4 judgments


def test_a_served_model_tells_other_weights_apart_by_what_names_them() -> None:
    vllm = ServedModel(
        served_model="ckpt", system_fingerprint="fp_b", root="/models/ckpt", max_model_len=4096
    )
    assert vllm.identifies_weights and vllm.stamp() == {
        "served_model": "ckpt",
        "system_fingerprint": "fp_b",
        "root": "/models/ckpt",
        "max_model_len": 4096,
    }
    same = {"text": "x", "served": vllm.stamp()}
    assert vllm.conflict(same) is None and vllm.vouches_for(same)
    other = {"text": "x", "served_model": "ckpt", "system_fingerprint": "fp_a"}  # a call's own metadata
    assert vllm.conflict(other) == "system_fingerprint fp_a -> fp_b" and not vllm.vouches_for(other)
    longer = {"text": "x", "served": {**vllm.stamp(), "max_model_len": 8192}}
    assert vllm.conflict(longer) == "max_model_len 8192 -> 4096"
    untold = {"text": "x"}  # written before anything was recorded: nothing contradicts, nothing vouches
    assert vllm.conflict(untold) is None and not vllm.vouches_for(untold)
    # On OpenAI the fingerprint tags the serving stack, not the weights: the dated snapshot names them.
    openai = ServedModel(served_model="gpt-4.1-2025-04-14", system_fingerprint="fp_new", official=True)
    old = {"text": "x", "served_model": "gpt-4.1-2025-04-14", "system_fingerprint": "fp_old"}
    assert openai.identifies_weights and openai.conflict(old) is None and openai.vouches_for(old)
    assert openai.conflict({"text": "x", "served_model": "gpt-4.1-2026-01-01"}) is not None
    unnamed = ServedModel(served_model="ckpt")  # an open server without a fingerprint
    assert not unnamed.identifies_weights and not unnamed.vouches_for({"text": "x", "served_model": "ckpt"})
    assert ServedModel.from_dict(openai.as_dict()) == openai and ServedModel.from_dict(vllm.as_dict()) == vllm


def _run(pytester: pytest.Pytester, shared_data: Path, server: FakeOpenAIServer, *args: str):
    report = pytester.path / "report.json"
    report.unlink(missing_ok=True)
    result = pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        "--mtbench-model=openai/ckpt",
        f"--mtbench-model-base-url={server.base_url}",
        "--mtbench-judge=openai/judge",
        f"--mtbench-judge-base-url={server.base_url}",
        f"--mtbench-data={shared_data}",
        f"--mtbench-cache={pytester.path / 'cache'}",
        f"--mtbench-report={report}",
        "-k",
        QUESTIONS,
        *args,
    )
    return result, json.loads(report.read_text()) if report.is_file() else None


def _calls(report: dict) -> tuple[int, int]:
    phases = report["run"]["phases"]
    return phases["generation"]["calls"], phases["judging"]["calls"]


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["in-process", "xdist"])
def test_a_new_checkpoint_under_the_same_name_is_answered_again(
    pytester: pytest.Pytester, shared_data: Path, workers: list[str]
) -> None:
    pytest.importorskip("openai")
    with FakeOpenAIServer(model_ids=("ckpt", "judge"), system_fingerprint="fp_a") as server:
        server.model_card = {"root": "/models/ckpt", "max_model_len": 4096}
        first, report = _run(pytester, shared_data, server, *workers)
        assert first.ret == 0 and _calls(report) == (4, 4)
        assert report["run"]["served"]["model"] == {
            "served_model": "ckpt",
            "system_fingerprint": "fp_a",
            "root": "/models/ckpt",
            "max_model_len": 4096,
        }
        same, report = _run(pytester, shared_data, server, *workers)
        assert same.ret == 0 and _calls(report) == (0, 0)  # the same weights: all from the cache

        server.system_fingerprint = "fp_b"  # the next checkpoint, served under the same name and path
        new, report = _run(pytester, shared_data, server, *workers)
        assert new.ret == 0
        new.stdout.fnmatch_lines(
            [
                # Turn 1's two cached answers are met and set aside; turn 2's keys hold turn 1's new
                # answers, so its old entries are never met.
                "*--mtbench-model=openai/ckpt: 2 cached answers are not reused and are asked again "
                "(2: the endpoint now serves other weights (system_fingerprint fp_a -> fp_b))*"
            ]
        )
        # Every answer again; the judge (same name, new fingerprint too) judges them afresh.
        assert _calls(report) == (4, 4)
        assert {t["answer_call"]["system_fingerprint"] for q in report["questions"] for t in q["turns"]} == {
            "fp_b"
        }
        again, report = _run(pytester, shared_data, server, *workers)
        assert again.ret == 0 and _calls(report) == (0, 0)


def test_an_endpoint_that_names_no_weights_is_answered_every_time_unless_a_revision_names_them(
    pytester: pytest.Pytester, shared_data: Path
) -> None:
    pytest.importorskip("openai")
    with FakeOpenAIServer(model_ids=("ckpt", "judge"), system_fingerprint=None) as server:
        first, report = _run(pytester, shared_data, server)
        assert first.ret == 0 and _calls(report) == (4, 4)
        second, report = _run(pytester, shared_data, server)
        assert second.ret == 0 and _calls(report) == (4, 0)  # same answers again: the judgments stand
        second.stdout.fnmatch_lines(
            [
                "*2 cached answers are not reused*does not say which weights it serves*"
                "--mtbench-model-revision*"
            ]
        )
        trusted, report = _run(pytester, shared_data, server, "--mtbench-trust-model-name")
        assert trusted.ret == 0 and _calls(report) == (0, 0)

        before = server.request_count + server.models_count
        named, report = _run(pytester, shared_data, server, "--mtbench-model-revision=step-1000")
        assert named.ret == 0 and _calls(report) == (4, 0)  # a new identity: answered once
        assert report["run"]["served"]["model"]["revision"] == "step-1000"
        asked = server.request_count + server.models_count
        named, report = _run(pytester, shared_data, server, "--mtbench-model-revision=step-1000")
        assert named.ret == 0 and _calls(report) == (0, 0)
        assert server.request_count + server.models_count == asked > before  # fully cached: no request
        later, report = _run(pytester, shared_data, server, "--mtbench-model-revision=step-2000")
        assert later.ret == 0 and _calls(report) == (4, 0)


def test_a_judge_that_serves_other_weights_judges_again_when_it_is_called(
    pytester: pytest.Pytester, shared_data: Path
) -> None:
    pytest.importorskip("openai")
    with (
        FakeOpenAIServer(model_ids=("ckpt",), system_fingerprint="fp_model") as model,
        FakeOpenAIServer(model_ids=("judge",), system_fingerprint="fp_judge_1") as judge,
    ):

        def run(*args: str):
            return _run(pytester, shared_data, model, f"--mtbench-judge-base-url={judge.base_url}", *args)

        first, report = run("-k", "81")
        assert first.ret == 0 and _calls(report) == (2, 2)
        assert report["run"]["served"]["judge"]["system_fingerprint"] == "fp_judge_1"
        judge.system_fingerprint = "fp_judge_2"
        # Fully cached: the judge is not asked (no key needed), so its judgments stand.
        cached, report = run("-k", "81")
        assert cached.ret == 0 and _calls(report) == (0, 0) and "judge" not in report["run"]["served"]
        # Question 82 needs the judge: asked, it serves other weights, so 81 is judged again too.
        more, report = run("-k", "81 or 82")
        assert more.ret == 0 and _calls(report) == (2, 4)
        more.stdout.fnmatch_lines(["*--mtbench-judge=openai/judge: 2 cached judgments are not reused*"])
