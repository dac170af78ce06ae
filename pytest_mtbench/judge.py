"""Single-answer grading as published with MT-Bench: prompt choice, prompt rendering, rating parsing.

Pure functions and plain dataclasses; nothing here calls a model. Pairwise judging will live beside
`build_single_request` as its own mode.
"""

from __future__ import annotations

import ast
import re
from dataclasses import asdict, dataclass
from typing import Any

from .prompts import JudgePrompt, PromptError
from .questions import Question

# FastChat common.py: the rating is the first "[[x]]", else the first "[x]".
RATING_PATTERN = re.compile(r"\[\[(\d+\.?\d*)\]\]")
RATING_PATTERN_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")

# Call parameters of the official judge.
JUDGE_TEMPERATURE = 0.0
JUDGE_MAX_TOKENS = 2048

# How a turn's score was obtained.
SCORED_BY_OFFICIAL = "official"
SCORED_BY_CONSTRAINED = "constrained"


def parse_rating(judgment: str) -> float | int | None:
    """The official rating rule; None means the turn is unscored (never -1 or 0)."""
    match = RATING_PATTERN.search(judgment) or RATING_PATTERN_BACKUP.search(judgment)
    if match is None:
        return None
    return ast.literal_eval(match.group(1))


def single_prompt_name(question: Question, turn: int) -> str:
    """`single-v1` / `single-math-v1` (reference-guided), with `-multi-turn` for the second turn."""
    base = "single-math-v1" if question.needs_reference else "single-v1"
    return base if turn == 1 else f"{base}-multi-turn"


@dataclass(frozen=True)
class JudgeRequest:
    """One judge call: everything that determines the judgment (and its cache key)."""

    question_id: int
    turn: int
    prompt_name: str
    system: str
    user: str

    def messages(self) -> list[dict[str, str]]:
        # FastChat's to_openai_api_messages drops an empty system message.
        head = [{"role": "system", "content": self.system}] if self.system else []
        return [*head, {"role": "user", "content": self.user}]


def build_single_request(
    question: Question,
    answers: tuple[str, ...] | list[str],
    turn: int,
    prompt: JudgePrompt,
    reference: tuple[str, ...] | None,
) -> JudgeRequest:
    """Render the judge prompt for `turn` (1 or 2) exactly as FastChat's run_judge_single does."""
    variables: dict[str, Any] = {}
    if reference is not None:
        variables["ref_answer_1"] = reference[0]
        if turn == 2:
            variables["ref_answer_2"] = reference[1] if len(reference) > 1 else ""
    if turn == 1:
        variables.update(question=question.turns[0], answer=answers[0])
    else:
        variables.update(
            question_1=question.turns[0],
            question_2=question.turns[1],
            answer_1=answers[0],
            answer_2=answers[1],
        )
    try:
        system, user = prompt.render(**variables)
    except PromptError as exc:
        raise PromptError(f"question {question.question_id} turn {turn}: {exc}") from exc
    return JudgeRequest(question.question_id, turn, prompt.name, system, user)


@dataclass
class TurnVerdict:
    """The judge's verdict on one turn; `score` is None when unscored."""

    turn: int
    prompt_name: str
    judgment: str
    score: float | int | None
    scored_by: str | None  # SCORED_BY_OFFICIAL, SCORED_BY_CONSTRAINED or None (unscored)
    rating_probabilities: dict[str, float] | None = None  # constrained fallback only
    expected_rating: float | None = None  # constrained fallback only

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def official_verdict(request: JudgeRequest, judgment: str) -> TurnVerdict:
    """Apply the official rating rule to a judgment."""
    score = parse_rating(judgment)
    return TurnVerdict(
        turn=request.turn,
        prompt_name=request.prompt_name,
        judgment=judgment,
        score=score,
        scored_by=SCORED_BY_OFFICIAL if score is not None else None,
    )


def constrained_verdict(verdict: TurnVerdict, probabilities: dict[int, float]) -> TurnVerdict:
    """Fill an unscored verdict from the judge's probabilities over ratings 1..10 (G-Eval style)."""
    best = max(probabilities, key=lambda k: probabilities[k])
    expected = sum(k * p for k, p in probabilities.items())
    return TurnVerdict(
        turn=verdict.turn,
        prompt_name=verdict.prompt_name,
        judgment=verdict.judgment,
        score=best,
        scored_by=SCORED_BY_CONSTRAINED,
        rating_probabilities={str(k): float(p) for k, p in sorted(probabilities.items())},
        expected_rating=float(expected),
    )
