"""Local models batch across categories, yet a question's answer never depends on its batch.

Batches now span categories (so the batch size is reached), and each sampled row draws from its own
generator: the answers and judgments are the same in-process and under -n 2 (whose workers see other
batches), and the same for two batch sizes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import strip_timing
from pytest_mtbench.backends.base import BackendOptions
from pytest_mtbench.cache import ResultCache
from pytest_mtbench.questions import load_questions
from pytest_mtbench.runner import BenchmarkRunner, LazyBackend, RunSettings

pytest.importorskip("torch")

FIRST_OF_EACH = ("81", "91", "101", "111", "121", "131", "141", "151")


def _answers(model: Path, shared_data: Path, batch_size: int) -> tuple[dict[int, list[str]], list[set[str]]]:
    """Both turns of the first two questions of each category, and the categories of each model call."""
    questions = [q for q in load_questions(shared_data / "question.jsonl") if q.question_id % 10 in (1, 2)]
    backend = LazyBackend(f"hf/{model}", BackendOptions(batch_size=batch_size))
    category_of = {q.turns[0]: q.category for q in questions}
    calls: list[set[str]] = []
    chat = backend.backend.chat

    def recording_chat(conversations: list[Any], params: Any, on_result: Any = None) -> Any:
        calls.append({category_of[c[0]["content"]] for c in conversations})
        return chat(conversations, params, on_result)

    backend.backend.chat = recording_chat  # type: ignore[method-assign]
    runner = BenchmarkRunner(backend, backend, None, ResultCache(None), RunSettings(max_new_tokens=10))  # type: ignore[arg-type]
    turns = runner.generate_answers(questions, {})
    return {qid: [t.answer for t in ts] for qid, ts in turns.items()}, calls


def test_greedy_and_sampled_answers_do_not_depend_on_the_batch_size(
    chat_dir: Path, shared_data: Path
) -> None:
    small, small_calls = _answers(chat_dir, shared_data, batch_size=3)
    large, large_calls = _answers(chat_dir, shared_data, batch_size=16)
    assert small == large
    assert len(small) == 16 and all(len(turns) == 2 for turns in small.values())
    # Not a vacuous pass: the answers differ between questions, and requests span categories (the greedy
    # group holds reasoning, math, coding and extraction; the backend cuts it into batches of 3 or 16).
    assert len({turns[0] for turns in small.values()}) > 8
    assert max(len(c) for c in large_calls) >= 4
    assert small_calls == large_calls


def test_in_process_and_xdist_agree_with_batches_across_categories(
    run_pytest, chat_dir: Path, shared_data: Path, tmp_path: Path
) -> None:
    """A tiny local candidate and a tiny local judge (constrained scoring, varied probe ratings)."""
    reports = []
    for workers in ("0", "2"):
        path = tmp_path / f"r{workers}.json"
        proc = run_pytest(
            tmp_path,
            f"--mtbench-model={chat_dir}",
            f"--mtbench-judge=hf/{chat_dir}",
            "--mtbench-judge-scoring=constrained",
            "--mtbench-judge-max-tokens=6",
            "--mtbench-max-new-tokens=8",
            f"--mtbench-data={shared_data}",
            f"--mtbench-cache={tmp_path / f'c{workers}'}",
            "-k",
            " or ".join(FIRST_OF_EACH),
            f"--mtbench-report={path}",
            "-n",
            workers,
        )
        assert proc.returncode in (0, 1), proc.stdout[-2000:]
        reports.append(json.loads(path.read_text()))
    first, second = (strip_timing(r) for r in reports)
    # -n 2 gives each worker one torch thread, which changes float summation order: rating probabilities
    # agree to ~1e-7, everything else (answers, judgment texts, scores) exactly.
    for q1, q2 in zip(first["questions"], second["questions"], strict=True):
        for t1, t2 in zip(q1["turns"], q2["turns"], strict=True):
            for j1, j2 in zip(t1.pop("judgments"), t2.pop("judgments"), strict=True):
                p1, p2 = j1.pop("rating_probabilities"), j2.pop("rating_probabilities")
                assert p1.keys() == p2.keys() and all(abs(p1[k] - p2[k]) < 1e-5 for k in p1)
                j1.pop("expected_rating"), j2.pop("expected_rating")
                assert j1 == j2
    assert first["questions"] == second["questions"]
    answers = [t["answer"] for q in first["questions"] for t in q["turns"]]
    scores = [t["score"] for q in first["questions"] for t in q["turns"]]
    assert scores == [t["score"] for q in second["questions"] for t in q["turns"]]
    assert len(answers) == 16 and len(set(answers)) > 8
    assert all(s is not None for s in scores)
