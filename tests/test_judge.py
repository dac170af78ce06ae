"""Rating rule, prompt choice and request building as in FastChat's llm_judge."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_mtbench.judge import (
    build_single_request,
    constrained_verdict,
    official_verdict,
    parse_rating,
    single_prompt_name,
)
from pytest_mtbench.prompts import load_judge_prompts
from pytest_mtbench.questions import Question, load_questions, load_references


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Rating: [[7]]", 7),
        ("Rating: [[7.5]]", 7.5),
        ("no double brackets, but [7] here", 7),
        ("first [3] then [[8]]: the double-bracket rule wins", 8),
        ("[[2]] and later [[9]]: the first match wins", 2),
        ("[4] and [6]: the first single match wins", 4),
        ("Rating: [[10]]", 10),
    ],
)
def test_parse_rating(text: str, expected: float) -> None:
    assert parse_rating(text) == expected


@pytest.mark.parametrize("text", ["", "Rating: seven", "Rating: [[x]]", "[[ 7 ]]"])
def test_no_rating_is_unscored(text: str) -> None:
    assert parse_rating(text) is None
    verdict = official_verdict(_request(), text)
    assert verdict.score is None and verdict.scored_by is None and verdict.judgment == text


def _request():
    q = Question(1, "writing", ("q1", "q2"))
    from pytest_mtbench.judge import JudgeRequest

    return JudgeRequest(q.question_id, 1, "single-v1", "sys", "user")


def test_prompt_choice_follows_fastchat() -> None:
    for category in ("math", "reasoning", "coding"):
        q = Question(1, category, ("a", "b"))
        assert (single_prompt_name(q, 1), single_prompt_name(q, 2)) == (
            "single-math-v1",
            "single-math-v1-multi-turn",
        )
    for category in ("writing", "roleplay", "extraction", "stem", "humanities"):
        q = Question(1, category, ("a", "b"))
        assert (single_prompt_name(q, 1), single_prompt_name(q, 2)) == ("single-v1", "single-v1-multi-turn")


def test_requests_match_fastchat_format_calls(shared_data: Path) -> None:
    import json

    raw = {
        json.loads(line)["name"]: json.loads(line) for line in (shared_data / "judge_prompts.jsonl").open()
    }
    prompts = load_judge_prompts(shared_data / "judge_prompts.jsonl", official=True)
    questions = {q.question_id: q for q in load_questions(shared_data / "question.jsonl")}
    refs = load_references(shared_data / "reference_answer" / "gpt-4.jsonl")
    answers = ("first {answer}", "second {{answer}}")
    q = questions[111]  # math: reference-guided
    one = build_single_request(q, answers, 1, prompts["single-math-v1"], refs[111])
    assert one.user == raw["single-math-v1"]["prompt_template"].format(
        question=q.turns[0], answer=answers[0], ref_answer_1=refs[111][0]
    )
    two = build_single_request(q, answers, 2, prompts["single-math-v1-multi-turn"], refs[111])
    assert two.user == raw["single-math-v1-multi-turn"]["prompt_template"].format(
        question_1=q.turns[0],
        question_2=q.turns[1],
        answer_1=answers[0],
        answer_2=answers[1],
        ref_answer_1=refs[111][0],
        ref_answer_2=refs[111][1],
    )
    assert two.messages() == [
        {"role": "system", "content": raw["single-math-v1-multi-turn"]["system_prompt"]},
        {"role": "user", "content": two.user},
    ]


def test_constrained_verdict_records_argmax_and_expectation() -> None:
    base = official_verdict(_request(), "no rating here")
    probs = {k: 0.0 for k in range(1, 11)}
    probs.update({6: 0.25, 7: 0.75})
    verdict = constrained_verdict(base, probs)
    assert verdict.score == 7 and verdict.scored_by == "constrained"
    assert verdict.expected_rating == pytest.approx(6.75)
    assert verdict.judgment == "no rating here"
