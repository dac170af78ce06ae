"""What every judging mode shares: the judge call, its parameters and the rating rule (pure, no model).

The modes themselves (which prompts to render, how to read a verdict) live in `modes/`, one file each.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .prompts import JudgePrompt, PromptError
from .records import SCORED_BY_CONSTRAINED, SCORED_BY_OFFICIAL, CallInfo, Judgment, PromptSent, Score

# FastChat common.py: the rating is the first "[[x]]", else the first "[x]".
RATING_PATTERN = re.compile(r"\[\[(\d+\.?\d*)\]\]")
RATING_PATTERN_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")
OFFICIAL_SCALE = (1, 10)

# Call parameters of the official judge.
JUDGE_TEMPERATURE = 0.0
JUDGE_MAX_TOKENS = 2048

__all__ = ["SCORED_BY_CONSTRAINED", "SCORED_BY_OFFICIAL"]


def _number(text: str) -> Score:
    # FastChat uses ast.literal_eval, which raises on "08"; int()/float() read it as 8.
    return float(text) if "." in text else int(text)


def read_rating(
    judgment: str, scale: tuple[float, float] = OFFICIAL_SCALE, pattern: str | None = None
) -> tuple[Score | None, str | None]:
    """The rating rule, plus a scale check: (score, None), or (None, why it is unscored).

    `pattern` None is the official rule; a prompt set may declare its own (a regex whose one group is the
    rating). A rating outside the prompt's scale (e.g. `[[100]]` on 1-10) is unscored: a documented
    deviation from FastChat, which would count it.
    """
    if pattern is None:
        match = RATING_PATTERN.search(judgment) or RATING_PATTERN_BACKUP.search(judgment)
        missing = "the judge's text has no [[rating]]"
    else:
        match = re.search(pattern, judgment)
        missing = f"the judge's text has no rating matching {pattern!r}"
    if match is None:
        return None, missing
    try:
        score = _number(match.group(1).strip())
    except ValueError:
        return None, f"the rating {match.group(1)!r} is not a number"
    low, high = scale
    if not low <= score <= high:
        return None, f"rating {match.group(1)} is outside the prompt's scale {low:g}-{high:g}"
    return score, None


def parse_rating(judgment: str) -> Score | None:
    """The official rating rule; None means the turn is unscored (never -1 or 0)."""
    return read_rating(judgment)[0]


@dataclass(frozen=True)
class JudgeRequest:
    """One judge call: everything that determines the judgment (and its cache key)."""

    question_id: int
    turn: int
    prompt_name: str
    system: str
    user: str
    repeat: int = 0  # with --mtbench-judge-repeats: each repeat is its own call and cache entry
    category: str = ""  # for batching only (never part of the cache key)

    def messages(self) -> list[dict[str, str]]:
        # FastChat's to_openai_api_messages drops an empty system message.
        head = [{"role": "system", "content": self.system}] if self.system else []
        return [*head, {"role": "user", "content": self.user}]

    def sent(self) -> PromptSent:
        return PromptSent(self.prompt_name, self.system, self.user)


def render_request(
    question: Any,
    turn: int,
    prompt: JudgePrompt,
    variables: dict[str, Any],
    reference: Sequence[str] | None,
    repeat: int = 0,
) -> JudgeRequest:
    """Render a judge prompt for `turn` with the mode's `variables` plus the reference answers FastChat
    passes to reference-guided prompts (ref_answer_1; on turn 2 also ref_answer_2, empty if missing)."""
    if reference is not None:
        variables = {**variables, "ref_answer_1": reference[0]}
        if turn == 2:
            variables["ref_answer_2"] = reference[1] if len(reference) > 1 else ""
    try:
        system, user = prompt.render(**variables)
    except PromptError as exc:
        raise PromptError(f"question {question.question_id} turn {turn}: {exc}") from exc
    return JudgeRequest(question.question_id, turn, prompt.name, system, user, repeat, question.category)


def official_judgment(
    request: JudgeRequest,
    text: str,
    call: CallInfo,
    scale: tuple[float, float] = OFFICIAL_SCALE,
    pattern: str | None = None,
    reasoning: str | None = None,
) -> Judgment:
    """Apply the prompt's rating rule (the official one unless its prompt set declares another) to the
    judge's final text; a thinking judge's `reasoning` is kept but never read for the rating."""
    score, reason = read_rating(text, scale, pattern)
    if score is None and reasoning is not None and not text.strip() and call.truncated:
        reason = (
            "the judge was still reasoning when it reached its token limit, before its verdict "
            "(raise --mtbench-judge-thinking-budget)"
        )
    elif score is None and call.truncated:
        reason = f"{reason}; the judgment was cut off at its token limit"
    return Judgment(
        prompt=request.sent(),
        text=text,
        score=score,
        scored_by=SCORED_BY_OFFICIAL if score is not None else None,
        call=call,
        repeat=request.repeat,
        unscored_reason=reason,
        reasoning=reasoning,
    )


def constrained_judgment(judgment: Judgment, probabilities: dict[int, float]) -> Judgment:
    """Fill an unscored judgment from the judge's probabilities over ratings 1..10 (G-Eval style)."""
    best = max(probabilities, key=lambda k: probabilities[k])
    expected = sum(k * p for k, p in probabilities.items())
    return Judgment(
        prompt=judgment.prompt,
        text=judgment.text,
        score=best,
        scored_by=SCORED_BY_CONSTRAINED,
        call=judgment.call,
        repeat=judgment.repeat,
        rating_probabilities={str(k): float(p) for k, p in sorted(probabilities.items())},
        expected_rating=float(expected),
        reasoning=judgment.reasoning,
    )
