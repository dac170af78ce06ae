"""Single-answer grading as published with MT-Bench: each turn rated 1-10 on its own.

The prompt is `single-v1` (reference-guided `single-math-v1` for math, reasoning and coding), with
`-multi-turn` for the second turn, rendered exactly as FastChat's run_judge_single does; the official
rule reads the rating. With `scoring="constrained"` (local judges only), a judgment the rule cannot read
is scored from the judge's own probabilities over 1..10 instead of being left unscored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..judge import JudgeRequest, constrained_judgment, official_judgment, read_rating, render_request
from ..prompts import JudgePrompt
from ..questions import Question
from . import AnsweredQuestion, GroupJudging, JudgeClient, JudgingOutcome, ModeSummary, RunContext

SCORING_MODES = ("official", "constrained")


def single_prompt_name(question: Question, turn: int) -> str:
    """`single-v1` / `single-math-v1` (reference-guided), with `-multi-turn` for the second turn."""
    base = "single-math-v1" if question.needs_reference else "single-v1"
    return base if turn == 1 else f"{base}-multi-turn"


def build_single_request(
    question: Question,
    answers: Sequence[str],
    turn: int,
    prompt: JudgePrompt,
    reference: Sequence[str] | None,
    repeat: int = 0,
) -> JudgeRequest:
    """Render the judge prompt for `turn` (1 or 2) exactly as FastChat's run_judge_single does."""
    if turn == 1:
        variables: dict[str, Any] = {"question": question.turns[0], "answer": answers[0]}
    else:
        variables = {
            "question_1": question.turns[0],
            "question_2": question.turns[1],
            "answer_1": answers[0],
            "answer_2": answers[1],
        }
    return render_request(question, turn, prompt, variables, reference, repeat)


@dataclass(frozen=True)
class SingleAnswerMode:
    """Rate every turn of every answered question, `repeats` times each."""

    prompts: Mapping[str, JudgePrompt]
    references: Mapping[int, tuple[str, ...]]
    scoring: str = "official"
    repeats: int = 1
    name: str = "single"

    def requests(self, answered: Sequence[AnsweredQuestion]) -> list[JudgeRequest]:
        """Every judge call this mode makes for these questions, in a stable order."""
        requests = []
        for item in answered:
            q = item.question
            reference = self.references.get(q.question_id) if q.needs_reference else None
            for turn in range(1, len(q.turns) + 1):
                prompt = self.prompts[single_prompt_name(q, turn)]
                for repeat in range(self.repeats):
                    requests.append(build_single_request(q, item.answers, turn, prompt, reference, repeat))
        return requests

    def unrated(self, request: JudgeRequest, text: str) -> bool:
        """Whether the prompt's rating rule finds no rating in this judgment (constrained scoring then
        asks for the judge's rating probabilities)."""
        prompt = self.prompts[request.prompt_name]
        return read_rating(text, prompt.scale, prompt.rating_pattern)[0] is None

    def judge_models(
        self, answered: Mapping[str, Sequence[AnsweredQuestion]], client: JudgeClient
    ) -> GroupJudging:
        """Every model's answers rated, model by model (each model's turns go to the judge at once)."""
        result = GroupJudging()
        for spec, items in answered.items():
            outcome = self.judge(items, client)
            for (qid, turn), judgments in outcome.judgments.items():
                result.judgments[(spec, qid, turn)] = judgments
            for qid, why in outcome.errors.items():
                result.errors[(spec, qid)] = why
        return result

    def summarize(self, pairs: Sequence[Any], context: RunContext) -> ModeSummary:
        """Nothing beyond the score table: its category thresholds are the report's own gates."""
        return ModeSummary()

    def judge(self, answered: Sequence[AnsweredQuestion], client: JudgeClient) -> JudgingOutcome:
        """One model's answers rated (what a BenchmarkRunner asks for its model)."""
        outcome = JudgingOutcome()
        requests = self.requests(answered)
        unscored = []
        replies = client.complete(requests, probe_if=self.unrated if self.scoring == "constrained" else None)
        for request, reply in zip(requests, replies):
            if reply.missing is not None or reply.text is None:
                outcome.errors.setdefault(request.question_id, reply.missing or "no judgment")
                continue
            prompt = self.prompts[request.prompt_name]
            judgment = official_judgment(
                request, reply.text, reply.call, prompt.scale, prompt.rating_pattern, reply.reasoning
            )
            outcome.judgments.setdefault((request.question_id, request.turn), []).append(judgment)
            if judgment.score is None:
                unscored.append((request, judgment))
        unscored = [(r, j) for r, j in unscored if r.question_id not in outcome.errors]
        if unscored and self.scoring == "constrained":
            probabilities = client.rating_probabilities(
                [r for r, _ in unscored], [j.text for _, j in unscored]
            )
            for (request, judgment), probs in zip(unscored, probabilities):
                if probs is None:
                    outcome.errors.setdefault(
                        request.question_id,
                        "--mtbench-offline: constrained rating not in the cache; run once without "
                        "--mtbench-offline to fill it",
                    )
                    continue
                turn = outcome.judgments[(request.question_id, request.turn)]
                turn[turn.index(judgment)] = constrained_judgment(judgment, probs)
        return outcome


def create(
    *,
    prompts: Mapping[str, JudgePrompt],
    references: Mapping[int, tuple[str, ...]],
    scoring: str = "official",
    repeats: int = 1,
    **_: Any,
) -> SingleAnswerMode:
    return SingleAnswerMode(prompts, references, scoring, repeats)
