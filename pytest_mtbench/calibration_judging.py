"""Re-judging the published sample with the current judge, through the run's one judging path.

No pytest here. `build_calibration_judging` reads the official inputs and the published files, draws the
sample (calibration.py) and builds the judge exactly as a benchmark run does; `CalibrationJudging.judge`
sends the sampled prompts through `CachedJudge` (cache first, concurrent, each judgment stored as soon as
it exists, so a killed calibration resumes) and returns one plain pair per turn.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import __version__
from .assembly import (
    SetupError,
    backend_options,
    build_judge,
    check_can_call,
    check_local_spec,
    engine_settings,
    load_inputs,
    public_url,
    result_cache,
)
from .cache import content_key
from .calibration import (
    Calibration,
    CalibrationError,
    CalibrationItem,
    PublishedSample,
    load_published_sample,
)
from .judge import JUDGE_TEMPERATURE, constrained_judgment, official_judgment
from .prompts import JudgePrompt
from .runner import (
    JUDGMENT_KIND,
    CachedJudge,
    Completer,
    LazyBackend,
    PhaseStats,
    ProgressCallback,
)

if TYPE_CHECKING:
    from .settings import Settings


@dataclass
class CalibrationJudging:
    """The sample and the judge of one calibration, in one process."""

    settings: Settings
    sample: PublishedSample
    prompts: dict[str, JudgePrompt]
    judge: LazyBackend
    client: CachedJudge
    stats: PhaseStats = field(default_factory=PhaseStats)

    def categories(self) -> list[str]:
        """The sample's categories, in order."""
        return list(dict.fromkeys(item.category for item in self.sample.items))

    def items_of(self, categories: Sequence[str]) -> list[CalibrationItem]:
        wanted = set(categories)
        return [item for item in self.sample.items if item.category in wanted]

    def needs_calls(self, items: Sequence[CalibrationItem]) -> bool:
        """Whether judging these items would call the judge (a cache lookup, nothing written)."""
        cache = self.client.completer.cache
        return any(
            cache.get(JUDGMENT_KIND, content_key(JUDGMENT_KIND, self.client.judgment_material(item.request)))
            is None
            for item in items
        )

    def judge_items(self, items: Sequence[CalibrationItem]) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """One pair per item ({category, model, question_id, turn, published_score, judge_score, ...};
        judge_score None when the judge gave no rating), and the categories whose judging failed, with why
        (an offline cache miss). A judge that fails for good raises BackendError."""
        replies = self.client.complete([item.request for item in items])
        pairs: list[dict[str, Any]] = []
        errors: dict[str, str] = {}
        unscored = []
        for item, reply in zip(items, replies):
            if reply.missing is not None or reply.text is None:
                errors.setdefault(item.category, reply.missing or "no judgment")
                continue
            prompt = self.prompts[item.request.prompt_name]
            judgment = official_judgment(
                item.request, reply.text, reply.call, prompt.scale, prompt.rating_pattern
            )
            if judgment.score is None:
                unscored.append((len(pairs), item, judgment))
            pairs.append(_pair(item, judgment.score, judgment.unscored_reason, reply.call))
        if unscored and self.settings.judge_scoring == "constrained":
            probabilities = self.client.rating_probabilities(
                [item.request for _, item, _ in unscored], [j.text for _, _, j in unscored]
            )
            for (index, item, judgment), probs in zip(unscored, probabilities):
                if probs is None:
                    errors.setdefault(item.category, "--mtbench-offline: constrained rating not in the cache")
                    continue
                pairs[index]["judge_score"] = constrained_judgment(judgment, probs).score
                pairs[index]["unscored_reason"] = None
        failed = set(errors)
        return [p for p in pairs if p["category"] not in failed], errors

    def calibration(self, pairs: Sequence[dict[str, Any]]) -> Calibration:
        """The calibration file's content for the pairs judged in this run (fit and agreement)."""
        settings = self.settings
        sample = self.sample.identity()
        judged = {(p["model"], p["question_id"], p["turn"]) for p in pairs}
        sample["judged"] = len(judged)
        sample["not_judged"] = [key for key in sample["items"] if tuple(key) not in judged]
        served = sorted({p["served_model"] for p in pairs if p.get("served_model")})
        return Calibration.from_pairs(
            sorted(pairs, key=lambda p: (p["category"], p["model"], p["question_id"], p["turn"])),
            judge=settings.judge,
            sample=sample,
            judge_served=served,
            judge_base_url=public_url(settings.judge_base_url),
            judge_scoring=settings.judge_scoring,
            judge_call={"temperature": JUDGE_TEMPERATURE, "max_tokens": settings.judge_max_tokens},
            plugin_version=__version__,
            created=datetime.fromtimestamp(time.time(), timezone.utc).isoformat(),
        )

    def close(self) -> None:
        self.judge.close()


def _pair(item: CalibrationItem, score: Any, reason: str | None, call: Any) -> dict[str, Any]:
    return {
        "category": item.category,
        "model": item.model,
        "question_id": item.question_id,
        "turn": item.turn,
        "published_score": item.published_score,
        "judge_score": score,
        "unscored_reason": reason,
        "served_model": call.served_model,
        "cached": call.cached,
        "seconds": call.seconds,
    }


def build_calibration_judging(
    settings: Settings,
    *,
    workers: int = 1,
    will_call: bool = True,
    progress: ProgressCallback | None = None,
) -> CalibrationJudging:
    """Inputs, sample and judge for `--mtbench-calibrate`; a problem is a one-line SetupError."""
    assert settings.calibrate is not None
    questions, references, _, prompts = load_inputs(settings)
    try:
        sample = load_published_sample(
            settings.calibrate, questions, prompts, references, settings.calibrate_turns, settings.seed
        )
    except CalibrationError as exc:
        raise SetupError(str(exc)) from None
    check_local_spec("--mtbench-judge", settings.judge)
    judge = build_judge(settings, backend_options(settings, workers))
    if will_call:
        check_can_call("--mtbench-judge", judge)
    cache = result_cache(settings)
    run_settings = engine_settings(settings)
    stats = PhaseStats()
    client = CachedJudge(judge, Completer(cache, settings.offline, progress), run_settings, stats)
    return CalibrationJudging(settings, sample, prompts, judge, client, stats)
