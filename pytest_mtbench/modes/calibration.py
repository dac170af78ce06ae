"""Calibration to the published GPT-4-0613 scale as a judging mode: published answers judged again.

The models are FastChat's published answer files (named by the file, as FastChat names them) and the
turns judged are those of the seeded sample calibration.py draws. Each sampled turn is rendered with the
single-answer prompt exactly as FastChat's run_judge_single did, so the current judge sees what GPT-4-0613
saw (and a judgment an earlier calibration cached is served again), and is read with the official rule;
with `scoring="constrained"` an unreadable judgment is scored from the judge's rating probabilities. Each
judged turn is a `CalibrationPair` of GPT-4-0613's published score and the current judge's.

The summary is the calibration itself (`calibration.Calibration`: the isotonic mapping and the agreement
figures) and no gate: how far a judge agrees with GPT-4-0613 is measured, never a failure of the build.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..judge import (
    JUDGE_MAX_TOKENS,
    JUDGE_TEMPERATURE,
    JudgeRequest,
    constrained_judgment,
    official_judgment,
    read_rating,
)
from ..prompts import JudgePrompt
from . import AnsweredQuestion, GroupJudging, JudgeClient, ModeSummary, RunContext
from .single import build_single_request, single_prompt_name

if TYPE_CHECKING:
    from ..calibration import PublishedSample

CONSTRAINED_MISSING = "--mtbench-offline: constrained rating not in the cache"


@dataclass(frozen=True)
class CalibrationPair:
    """One published turn judged again: GPT-4-0613's published score and the current judge's (None when
    it gave no rating, with why), and how the judgment was had. Plain builtins via to_dict."""

    category: str
    model: str  # the published answer file's name
    question_id: int
    turn: int
    published_score: float
    judge_score: float | None
    unscored_reason: str | None
    served_model: str | None
    cached: bool
    seconds: float

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.model, self.question_id, self.turn)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationPair:
        return cls(**data)


@dataclass(frozen=True)
class CalibrationMode:
    """Judge the sampled turns of the published answers; sum them up as the calibration file's content."""

    prompts: Mapping[str, JudgePrompt]
    references: Mapping[int, tuple[str, ...]]
    sample: PublishedSample
    judge: str  # the judge spec being calibrated
    judge_base_url: str | None = None  # as the calibration file records it (credentials removed)
    judge_max_tokens: int = JUDGE_MAX_TOKENS
    scoring: str = "official"
    name: str = "calibration"

    def published_scores(self) -> dict[tuple[str, int, int], float]:
        """GPT-4-0613's score of each sampled turn, by (model, question id, turn)."""
        return {item.key: item.published_score for item in self.sample.items}

    def requests(self, answered: Mapping[str, Sequence[AnsweredQuestion]]) -> list[tuple[str, JudgeRequest]]:
        """(model, request) for every sampled turn of these answers, in the sample's order."""
        given = {
            (model, item.question.question_id): item for model, items in answered.items() for item in items
        }
        out = []
        for sampled in self.sample.items:
            item = given.get((sampled.model, sampled.question_id))
            if item is None:
                continue
            q = item.question
            reference = self.references.get(q.question_id) if q.needs_reference else None
            prompt = self.prompts[single_prompt_name(q, sampled.turn)]
            request = build_single_request(q, item.answers, sampled.turn, prompt, reference)
            out.append((sampled.model, request))
        return out

    def unrated(self, request: JudgeRequest, text: str) -> bool:
        """Whether the official rule finds no rating in this judgment (constrained scoring probes it)."""
        prompt = self.prompts[request.prompt_name]
        return read_rating(text, prompt.scale, prompt.rating_pattern)[0] is None

    def judge_models(
        self, answered: Mapping[str, Sequence[AnsweredQuestion]], client: JudgeClient
    ) -> GroupJudging:
        """Every sampled turn of every published model's answers judged once; a question whose judgment
        could not be had (an offline cache miss) is an error of (model, question id), its pairs left out."""
        sampled = self.published_scores()
        categories = {
            item.question.question_id: item.question.category for v in answered.values() for item in v
        }
        planned = self.requests(answered)
        constrained = self.scoring == "constrained"
        replies = client.complete([r for _, r in planned], probe_if=self.unrated if constrained else None)
        result = GroupJudging()
        pairs: list[CalibrationPair] = []
        unscored = []
        for (model, request), reply in zip(planned, replies):
            qid = request.question_id
            if reply.missing is not None or reply.text is None:
                result.errors.setdefault((model, qid), reply.missing or "no judgment")
                continue
            prompt = self.prompts[request.prompt_name]
            judgment = official_judgment(
                request, reply.text, reply.call, prompt.scale, prompt.rating_pattern, reply.reasoning
            )
            pair = CalibrationPair(
                category=categories[qid],
                model=model,
                question_id=qid,
                turn=request.turn,
                published_score=sampled[(model, qid, request.turn)],
                judge_score=judgment.score,
                unscored_reason=judgment.unscored_reason,
                served_model=reply.call.served_model,
                cached=reply.call.cached,
                seconds=reply.call.seconds,
            )
            if judgment.score is None:
                unscored.append((len(pairs), model, request, judgment))
            pairs.append(pair)
        if unscored and constrained:
            probabilities = client.rating_probabilities(
                [request for _, _, request, _ in unscored], [j.text for _, _, _, j in unscored]
            )
            for (index, model, request, judgment), probs in zip(unscored, probabilities):
                if probs is None:
                    result.errors.setdefault((model, request.question_id), CONSTRAINED_MISSING)
                    continue
                score = constrained_judgment(judgment, probs).score
                pairs[index] = replace(pairs[index], judge_score=score, unscored_reason=None)
        result.pairs = [p for p in pairs if (p.model, p.question_id) not in result.errors]
        return result

    def summarize(self, pairs: Sequence[Any], context: RunContext) -> ModeSummary:
        """The calibration file's content for the pairs judged in this run (the mapping fitted on them,
        their agreement, the sample and what of it was judged); no gate. A judge that scored none of the
        sampled turns raises CalibrationError (there is nothing to calibrate by)."""
        from .. import __version__
        from ..calibration import Calibration

        sample = self.sample.identity()
        judged = {pair.key for pair in pairs}
        sample["judged"] = len(judged)
        sample["not_judged"] = [key for key in sample["items"] if tuple(key) not in judged]
        ordered = sorted(pairs, key=lambda p: (p.category, p.model, p.question_id, p.turn))
        calibration = Calibration.from_pairs(
            [pair.to_dict() for pair in ordered],
            judge=self.judge,
            sample=sample,
            judge_served=sorted({p.served_model for p in pairs if p.served_model}),
            judge_base_url=self.judge_base_url,
            judge_scoring=self.scoring,
            judge_call={"temperature": JUDGE_TEMPERATURE, "max_tokens": self.judge_max_tokens},
            plugin_version=__version__,
            created=datetime.fromtimestamp(time.time(), timezone.utc).isoformat(),
        )
        return ModeSummary(calibration=calibration)


def create(
    *,
    prompts: Mapping[str, JudgePrompt],
    references: Mapping[int, tuple[str, ...]],
    sample: PublishedSample | None = None,
    judge: str | None = None,
    judge_base_url: str | None = None,
    judge_max_tokens: int = JUDGE_MAX_TOKENS,
    scoring: str = "official",
    **_: Any,
) -> CalibrationMode:
    if sample is None or judge is None:
        from ..calibration import CalibrationError

        raise CalibrationError(
            "--mtbench-mode=calibration judges FastChat's published answers, not a candidate's: "
            "calibrate the judge with --mtbench-calibrate=DIR and no --mtbench-model"
        )
    return CalibrationMode(prompts, references, sample, judge, judge_base_url, judge_max_tokens, scoring)
