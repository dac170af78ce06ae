"""Re-judging the published sample with the current judge, through the run's one judging path.

No pytest here. `build_calibration_judging` reads the official inputs and the published files, draws the
sample (calibration.py) and builds the judge exactly as a benchmark run does; `CalibrationJudging.judge`
sends the sampled prompts through `CachedJudge` (cache first, concurrent, each judgment stored as soon as
it exists, so a killed calibration resumes) and returns one plain pair per turn.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .assembly import SetupError, _check_can_call, check_local_spec, load_inputs, public_url
from .backends import BackendOptions
from .cache import ResultCache, content_key
from .calibration import (
    Calibration,
    CalibrationError,
    CalibrationItem,
    PublishedSample,
    load_published_sample,
)
from .data import default_cache_dir
from .judge import JUDGE_TEMPERATURE, constrained_judgment, official_judgment
from .prompts import JudgePrompt
from .runner import (
    JUDGMENT_KIND,
    CachedJudge,
    Completer,
    LazyBackend,
    PhaseStats,
    ProgressCallback,
    RunSettings,
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
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    judge = LazyBackend(
        settings.judge,
        BackendOptions(
            base_url=settings.judge_base_url,
            concurrency=settings.concurrency,
            timeout=settings.timeout,
            max_retries=settings.retries,
            batch_size=settings.batch_size,
            num_threads=threads,
            cache_dir=str(default_cache_dir()),
            trust_remote_code=settings.trust_remote_code,
            allow_pickle=settings.allow_pickle,
        ),
    )
    if settings.judge_scoring == "constrained" and not judge.capabilities.rating_probes:
        raise SetupError(
            f"--mtbench-judge-scoring=constrained needs a judge that can report its rating probabilities "
            f"(a local hf/ model); {settings.judge} cannot: use --mtbench-judge-scoring=official"
        )
    if will_call:
        _check_can_call("--mtbench-judge", judge)
    cache_root = Path(settings.cache).expanduser() if settings.cache else default_cache_dir() / "results"
    cache = ResultCache(
        None if settings.no_cache else cache_root, read=not settings.no_cache, write=not settings.offline
    )
    run_settings = RunSettings(
        seed=settings.seed, judge_max_tokens=settings.judge_max_tokens, offline=settings.offline
    )
    stats = PhaseStats()
    client = CachedJudge(judge, Completer(cache, settings.offline, progress), run_settings, stats)
    return CalibrationJudging(settings, sample, prompts, judge, client, stats)
