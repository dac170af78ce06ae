"""A calibration run (`--mtbench-calibrate=DIR`): the published sample, its judge client and the mode.

No pytest here. `build_calibration_run` reads the official inputs and the published files, draws the
sample (calibration.py) and builds the judge and its `CachedJudge` exactly as a benchmark run does; the
judging itself is the calibration mode's (modes/calibration.py), given the sampled published answers of
a group of categories: cache first, concurrent, each judgment stored as soon as it exists, so a killed
calibration resumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
from .backends import ServedModel
from .cache import ResultCache
from .calibration import Calibration, CalibrationError, PublishedSample, load_published_sample
from .modes import RunContext, load_mode
from .modes.calibration import CalibrationMode, CalibrationPair
from .questions import Question
from .runner import CachedJudge, Completer, LazyBackend, PhaseStats, ProgressCallback

if TYPE_CHECKING:
    from .settings import Settings


@dataclass
class CategoryCalibration:
    """One category's sampled turns judged again, or why they could not be."""

    pairs: list[CalibrationPair] = field(default_factory=list)
    error: str | None = None


@dataclass
class CalibrationRun:
    """Everything one process needs to calibrate the judge, built once from the settings."""

    settings: Settings
    questions: dict[int, Question]
    sample: PublishedSample
    judge: LazyBackend
    client: CachedJudge
    mode: CalibrationMode

    def categories(self) -> list[str]:
        """The sample's categories, in order."""
        return list(dict.fromkeys(item.category for item in self.sample.items))

    def run_group(self, categories: Sequence[str]) -> dict[str, CategoryCalibration]:
        """Judge the sampled turns of these categories (every judge call of the group at once); a
        category with a turn that could not be judged (an offline cache miss) fails whole. A judge that
        fails for good raises BackendError."""
        judging = self.mode.judge_models(self.sample.answered(self.questions, categories), self.client)
        results = {category: CategoryCalibration() for category in categories}
        for (_, qid), why in judging.errors.items():
            result = results[self.questions[qid].category]
            result.error = result.error or f"judging failed: {why}"
        for pair in judging.pairs:
            results[pair.category].pairs.append(pair)
        for result in results.values():
            if result.error is not None:
                result.pairs = []
        return results

    def failed_group(
        self, categories: Sequence[str], why: str, since: float | None = None
    ) -> dict[str, CategoryCalibration]:
        """The results of a group whose judge failed for good: each category fails with `why`."""
        return {category: CategoryCalibration(error=why) for category in categories}

    def needs_calls(self, categories: Sequence[str]) -> bool:
        """Whether judging these categories would call the judge: a dry run that reads the cache and
        writes nothing."""
        cache = self.client.completer.cache
        dry = Completer(ResultCache(cache.root, read=cache.read_enabled, write=False), offline=True)
        stats = PhaseStats()
        client = CachedJudge(self.judge, dry, self.client.settings, stats)
        self.mode.judge_models(self.sample.answered(self.questions, categories), client)
        return stats.missing > 0

    def summarize(self, pairs: Sequence[CalibrationPair]) -> Calibration:
        """The calibration file's content for every pair judged in the run (the mode's summary)."""
        context = RunContext((), None, {}, self.settings.confidence)
        return self.mode.summarize(pairs, context).calibration

    def settle_calls(self, styles: dict[str, str]) -> None:
        """Apply the call style the preflight settled for the judge (a calibration has no candidate)."""
        if "judge" in styles:
            self.judge.settle(styles["judge"])

    def know_served(self, served: dict[str, dict[str, Any]]) -> None:
        """Tell the judge what its endpoint serves, as the controller's preflight learnt it."""
        if "judge" in served:
            told = served["judge"]
            self.judge.know_served(ServedModel.from_dict(told["served"]), vouched=told["vouched"])

    def close(self) -> None:
        self.judge.close()


def build_calibration_run(
    settings: Settings,
    *,
    workers: int = 1,
    will_call: bool = True,
    progress: ProgressCallback | None = None,
) -> CalibrationRun:
    """Inputs, sample, judge and mode for `--mtbench-calibrate`; a problem is a one-line SetupError."""
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
    completer = Completer(result_cache(settings), settings.offline, progress)
    client = CachedJudge(judge, completer, engine_settings(settings), PhaseStats())
    mode = load_mode(
        "calibration",
        prompts=prompts,
        references=references,
        sample=sample,
        judge=settings.judge,
        judge_base_url=public_url(settings.judge_base_url),
        judge_max_tokens=settings.judge_max_tokens,
        scoring=settings.judge_scoring,
    )
    assert isinstance(mode, CalibrationMode)
    return CalibrationRun(settings, {q.question_id: q for q in questions}, sample, judge, client, mode)
