"""The engine without pytest: cache keys hold exactly what changes the output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import strip_timing
from pytest_mtbench import questions as questions_module
from pytest_mtbench.backends import BackendOptions
from pytest_mtbench.cache import ResultCache
from pytest_mtbench.modes.single import SingleAnswerMode
from pytest_mtbench.prompts import load_judge_prompts
from pytest_mtbench.questions import load_questions, load_references
from pytest_mtbench.runner import BenchmarkRunner, LazyBackend, RunSettings


@pytest.fixture
def make_runner(shared_data: Path, tmp_path: Path):
    questions = load_questions(shared_data / "question.jsonl")
    references = load_references(shared_data / "reference_answer" / "gpt-4.jsonl")
    official = load_judge_prompts(shared_data / "judge_prompts.jsonl", official=True)

    def _make(
        model: str = "fake/echo", judge: str = "fake/judge-7", prompts=None, repeats: int = 1, **settings
    ) -> BenchmarkRunner:
        return BenchmarkRunner(
            model=LazyBackend(model, BackendOptions()),
            judge=LazyBackend(judge, BackendOptions()),
            mode=SingleAnswerMode(prompts or official, references, repeats=repeats),
            cache=ResultCache(tmp_path / "cache"),
            settings=RunSettings(**settings),
        )

    _make.official = official

    return questions, _make


def _calls(runner: BenchmarkRunner) -> tuple[int, int]:
    return runner.generation.calls, runner.judging.calls


def test_identical_rerun_hits_everything_and_never_builds_a_backend(make_runner) -> None:
    questions, make = make_runner
    first = make()
    records = first.run(questions[:20])
    assert _calls(first) == (40, 40)
    second = make()
    again = second.run(questions[:20])

    def content(recs: dict) -> dict:
        return {q: strip_timing(r.to_dict()) for q, r in recs.items()}

    assert content(again) == content(records)
    turns = [t for r in again.values() for t in r.turns]
    assert len(turns) == 40 and all(t.answer_call.cached and t.judgments[0].call.cached for t in turns)
    assert _calls(second) == (0, 0) and (second.generation.cached, second.judging.cached) == (40, 40)
    assert not second.model.loaded and not second.judge.loaded


def test_changed_temperature_misses_only_that_category(make_runner, monkeypatch: pytest.MonkeyPatch) -> None:
    questions, make = make_runner
    subset = [q for q in questions if q.category in ("writing", "coding")]
    make().run(subset)
    monkeypatch.setitem(questions_module.CATEGORY_TEMPERATURE, "writing", 0.9)
    again = make()
    again.run(subset)
    assert again.generation.calls == 20  # writing's 10 questions x 2 turns
    assert again.generation.cached == 20  # coding unchanged
    assert again.judging.calls == 0  # fake/echo writes the same text, so the judge prompts are identical


def test_changed_sampling_and_model_miss(make_runner) -> None:
    questions, make = make_runner
    make().run(questions[:5])
    other_tokens = make(max_new_tokens=512)
    other_tokens.run(questions[:5])
    assert other_tokens.generation.calls == 10
    other_seed = make(seed=1)
    other_seed.run(questions[:5])
    assert other_seed.generation.calls == 10


def test_changed_judge_prompt_or_judge_misses_judgments_only(make_runner, tmp_path: Path) -> None:
    questions, make = make_runner
    make().run(questions[:5])
    path = tmp_path / "p.jsonl"
    path.write_text(
        json.dumps(
            {"name": "single-v1", "system_prompt": "Grade.", "prompt_template": "{{ question }} {{ answer }}"}
        )
        + "\n"
    )
    official = make.official
    changed = make(prompts={**official, **load_judge_prompts(path, official=False)})
    changed.run(questions[:5])
    assert changed.generation.calls == 0
    assert changed.judging.calls == 5  # only the turn-1 prompt (single-v1) changed
    other_judge = make(judge="fake/judge-8")
    records = other_judge.run(questions[:5])
    assert other_judge.judging.calls == 10 and other_judge.generation.calls == 0
    assert {t.score for r in records.values() for t in r.turns} == {8}


def test_offline_miss_fails_only_that_question(make_runner) -> None:
    questions, make = make_runner
    make().run(questions[:3])
    offline = make(offline=True)
    records = offline.run(questions[:4])
    assert [records[q.question_id].error is not None for q in questions[:4]] == [False, False, False, True]
    assert "--mtbench-offline: answer not in the cache (key " in records[questions[3].question_id].error
    assert _calls(offline) == (0, 0)


def test_judge_repeats_are_distinct_calls_and_the_first_keeps_the_old_key(make_runner) -> None:
    questions, make = make_runner
    once = make()
    once.run(questions[:3])
    assert once.judging.calls == 6
    thrice = make(repeats=3)
    records = thrice.run(questions[:3])
    assert thrice.judging.cached == 6  # repeat 0 is the judgment every earlier run stored
    assert thrice.judging.calls == 12  # repeats 1 and 2 are calls of their own
    turn = records[questions[0].question_id].turns[0]
    assert [j.repeat for j in turn.judgments] == [0, 1, 2] and turn.score == 7


def test_judge_without_rating_leaves_the_turn_unscored_with_the_reason(make_runner) -> None:
    questions, make = make_runner
    records = make(judge="fake/silent").run(questions[:1])
    turns = records[questions[0].question_id].turns
    assert [t.score for t in turns] == [None, None]
    assert {j.unscored_reason for t in turns for j in t.judgments} == {"the judge's text has no [[rating]]"}
