"""Rating rule, prompt choice and request building as in FastChat's llm_judge."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_mtbench.judge import constrained_judgment, official_judgment, parse_rating, read_rating
from pytest_mtbench.modes.single import build_single_request, single_prompt_name
from pytest_mtbench.prompts import load_judge_prompts
from pytest_mtbench.questions import Question, load_questions, load_references
from pytest_mtbench.records import CallInfo


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
    judgment = official_judgment(_request(), text, CallInfo())
    assert judgment.score is None and judgment.scored_by is None and judgment.text == text
    assert judgment.unscored_reason == "the judge's text has no [[rating]]"


@pytest.mark.parametrize(
    ("text", "expected"), [("Rating: [[08]]", 8), ("[[01]]", 1), ("[[010]]", 10), ("[[07.5]]", 7.5)]
)
def test_leading_zeros_are_read_not_a_crash(text: str, expected: float) -> None:
    assert parse_rating(text) == expected


@pytest.mark.parametrize(
    ("text", "shown"), [("Rating: [[100]]", "100"), ("[[0]]", "0"), ("[[10.5]]", "10.5")]
)
def test_rating_outside_the_scale_is_unscored_with_the_reason(text: str, shown: str) -> None:
    score, reason = read_rating(text)
    assert score is None and reason == f"rating {shown} is outside the prompt's scale 1-10"


def test_truncated_judgment_without_rating_says_so() -> None:
    judgment = official_judgment(_request(), "The answer is good because", CallInfo(truncated=True))
    assert judgment.score is None and "cut off at its token limit" in judgment.unscored_reason


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
    base = official_judgment(_request(), "no rating here", CallInfo())
    probs = {k: 0.0 for k in range(1, 11)}
    probs.update({6: 0.25, 7: 0.75})
    judgment = constrained_judgment(base, probs)
    assert judgment.score == 7 and judgment.scored_by == "constrained"
    assert judgment.expected_rating == pytest.approx(6.75)
    assert judgment.text == "no rating here" and judgment.unscored_reason is None
