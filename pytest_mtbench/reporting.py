"""Report building: a run's question records (and pair results) and its settings in, one `RunReport` out.

What the report holds beyond the records is computed here: the summaries per category and overall with
their intervals, every model's summaries, the threshold gates, the judge's noise, the comparison with a
`--mtbench-baseline` report and its regression gates, and the scores on the GPT-4-0613 scale. No pytest
and no backends: what only the built run knows (the data read, what the judge endpoint serves, the
pairwise summary, the one live call of a judge-drift check) is handed in by `BenchmarkRun.report`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from . import __version__
from .baseline import (
    ALLOW_HINT,
    GateOptions,
    check_compatible,
    compare_runs,
    drift_sample,
    judge_drift,
    mark_judge_changed,
    regression_gates,
)
from .judge import JUDGE_TEMPERATURE
from .questions import CATEGORY_TEMPERATURE, DEFAULT_TEMPERATURE
from .records import (
    BaselineSummary,
    CallInfo,
    CategorySummary,
    DataInfo,
    GateResult,
    JudgeCall,
    JudgeNoise,
    ModelSummary,
    PairwiseSummary,
    PromptSent,
    QuestionRecord,
    RunInfo,
    RunReport,
    Sampling,
    finite_or_none,
)
from .stats import aggregate, answer_lengths, evaluate_gates, phase_totals, question_scores, served_judges

if TYPE_CHECKING:
    from .calibration import Calibration
    from .modes.pairwise import PairResult
    from .settings import Settings

Rejudge = Callable[[Sequence[PromptSent]], list[float | None]]
"""Judge prompts again live (no cache): a score per prompt, None when unscored."""


@dataclass(frozen=True)
class RunFacts:
    """What the report says about the run's set-up that only the built run knows."""

    data: DataInfo  # the question, reference and judge prompt files read
    judge_call: JudgeCall
    served: dict[str, Any]  # what the endpoints said they serve ("model", "judge")


def public_url(url: str | None) -> str | None:
    """A base URL as it may appear in a report: credentials in it are dropped."""
    from .backends.openai_api import normalise_base_url

    return normalise_base_url(url) if url else None


def sampling(settings: Settings) -> Sampling:
    """The answer sampling parameters, as the report records them."""
    return Sampling(
        temperature_by_category=dict(CATEGORY_TEMPERATURE),
        default_temperature=DEFAULT_TEMPERATURE,
        max_new_tokens=settings.max_new_tokens,
        seed=settings.seed,
    )


def judge_call(settings: Settings, identity: Mapping[str, Any]) -> JudgeCall:
    """The judge call's parameters as the report records them, from the judge backend's identity: the
    official call's as they always were; the reasoning-model call's style, token limit and effort (a
    thinking budget adds to the limit in either style)."""
    verdict = settings.judge_max_tokens
    budget = int(identity.get("thinking_budget") or 0)
    if identity.get("call") == "reasoning":
        return JudgeCall(
            style="reasoning",
            max_completion_tokens=verdict + budget,
            reasoning_effort=identity.get("reasoning_effort") or None,
        )
    return JudgeCall(
        temperature=JUDGE_TEMPERATURE, max_tokens=verdict + budget, thinking_budget=budget or None
    )


def gate_options(settings: Settings) -> GateOptions:
    """How the baseline comparison decides, from the settings."""
    return GateOptions(
        margins=settings.margins,
        default_margin=settings.margin,
        confidence=settings.confidence,
        strict=settings.strict,
    )


def run_info(
    settings: Settings,
    facts: RunFacts,
    records: Iterable[QuestionRecord],
    started: float,
    finished: float,
    workers: int,
    pair_calls: Sequence[CallInfo] = (),
) -> RunInfo:
    """What ran, for the report (base URLs without credentials)."""
    records = list(records)
    return RunInfo(
        plugin_version=__version__,
        model=settings.model,
        judge=settings.judge,
        judge_scoring=settings.judge_scoring,
        model_base_url=public_url(settings.model_base_url),
        judge_base_url=public_url(settings.judge_base_url),
        judge_served=sorted(
            set(served_judges(records)) | {c.served_model for c in pair_calls if c.served_model}
        ),
        judge_repeats=settings.judge_repeats,
        data=facts.data,
        sampling=sampling(settings),
        judge_call=facts.judge_call,
        started=datetime.fromtimestamp(started, timezone.utc).isoformat(),
        finished=datetime.fromtimestamp(finished, timezone.utc).isoformat(),
        wall_seconds=finished - started,
        workers=workers,
        phases=phase_totals(records, pair_calls),
        answer_tokens=answer_lengths(r for r in records if r.model == settings.model),
        served=facts.served,
    )


def build_report(
    settings: Settings,
    facts: RunFacts,
    records: Iterable[QuestionRecord],
    *,
    started: float,
    finished: float,
    workers: int,
    pairs: Sequence[PairResult] = (),
    pairwise: PairwiseSummary | None = None,
    pairwise_gates: Sequence[GateResult] = (),
    baseline: RunReport | None = None,
    calibration: Calibration | None = None,
    rejudge: Rejudge | None = None,
) -> RunReport:
    """The whole run as one typed report: summaries, gates and every question's record (every model's;
    the table, thresholds and baseline are the first model's). In pairwise mode `pairwise` is the pair
    summary and `pairwise_gates` its win-rate gates; `rejudge` is needed for a judge-drift check."""
    order = {spec: i for i, spec in enumerate(settings.models)}
    ordered = sorted(records, key=lambda r: (order.get(r.model, len(order)), r.question_id))
    primary = [r for r in ordered if r.model == settings.model]
    single = pairwise is None
    thresholds = settings.thresholds if single else {}
    categories, overall = aggregate(primary, thresholds)
    add_intervals([*categories.values(), overall], primary, settings.confidence)
    pair_calls = [game.call for pair in pairs for game in (pair.g1, pair.g2)]
    report = RunReport(
        run=run_info(settings, facts, ordered, started, finished, workers, pair_calls),
        categories=categories,
        overall_detail=overall,
        gates=evaluate_gates(categories, overall, thresholds),
        questions=ordered,
        judge_noise=judge_noise(primary) if settings.judge_repeats > 1 else None,
    )
    if single and len(settings.models) > 1:
        report.models = model_summaries(settings.models, ordered, settings.confidence)
    if pairwise is not None:
        report.pairwise = pairwise
        report.gates.extend(pairwise_gates)
    if baseline is not None:
        compare_with_baseline(report, baseline, settings, rejudge)
    if calibration is not None:
        from .calibration import calibrated_report

        report.calibration = calibrated_report(
            calibration,
            ordered,
            path=str(settings.calibration),
            confidence=settings.confidence,
            judge_served=report.run.judge_served,
        )
    return report


def model_summaries(
    specs: Sequence[str], records: Sequence[QuestionRecord], confidence: float
) -> dict[str, ModelSummary]:
    """Every model's category and overall scores (the table's column per model), by spec."""
    summaries = {}
    for spec in specs:
        mine = [r for r in records if r.model == spec]
        categories, overall = aggregate(mine)
        add_intervals([*categories.values(), overall], mine, confidence)
        summaries[spec] = ModelSummary(categories=categories, overall=overall)
    return summaries


def add_intervals(rows: list[CategorySummary], records: list[QuestionRecord], confidence: float) -> None:
    """Each row's question-clustered bootstrap interval of its score."""
    from .comparison import score_interval

    groups = question_scores(records)
    for row in rows:
        clusters = groups.get(row.name)
        if clusters:
            interval = score_interval(clusters, confidence=confidence)
            row.ci_low, row.ci_high = finite_or_none(interval.low), finite_or_none(interval.high)


def judge_noise(records: list[QuestionRecord]) -> JudgeNoise:
    """The judge's own spread over repeated judgments of the same turn, and its share of the score's."""
    from .comparison import judge_noise as measure

    repeats = {r.question_id: [[float(s) for s in t.scores] for t in r.turns] for r in records if r.turns}
    noise = measure(repeats)
    return JudgeNoise(
        **{k: finite_or_none(v) if isinstance(v, float) else v for k, v in noise.as_dict().items()}
    )


def compare_with_baseline(
    report: RunReport, baseline: RunReport, settings: Settings, rejudge: Rejudge | None = None
) -> None:
    """Add the baseline comparison and its regression gates (refused when judged differently); with
    --mtbench-judge-drift, re-judge a sample of the baseline's turns through `rejudge` first."""
    mismatches = check_compatible(baseline.run, report.run)
    reused = sum(j.call.from_baseline for q in report.questions for t in q.turns for j in t.judgments)
    summary = BaselineSummary(
        path=settings.baseline,  # type: ignore[arg-type]  # set whenever there is a baseline
        margin=settings.margin,
        margins=dict(settings.margins),
        confidence=settings.confidence,
        strict=settings.strict,
        mismatches=mismatches,
        allowed_mismatch=bool(mismatches) and settings.allow_mismatch,
        reused_judgments=reused,
    )
    report.baseline = summary
    if mismatches and not settings.allow_mismatch:
        # Only the served judge model is learnt during the run; the rest was refused at start-up.
        message = f"baseline {settings.baseline} is not comparable: {'; '.join(mismatches)} {ALLOW_HINT}"
        report.gates.append(GateResult("baseline", "regression", False, message))
        return
    options = gate_options(settings)
    summary.comparisons = compare_runs(baseline.questions, report.questions, options)
    if settings.judge_drift:
        if rejudge is None:
            raise ValueError("a judge-drift check needs a judge to call (rejudge)")
        sample = drift_sample(baseline, settings.judge_drift)
        rescored = rejudge([j.prompt for j in sample])
        noise = report.judge_noise.judge_sd if report.judge_noise is not None else None
        summary.judge_drift = judge_drift([float(j.score) for j in sample], rescored, noise)  # type: ignore[arg-type]
        if summary.judge_drift.changed:
            mark_judge_changed(summary.comparisons)
    report.gates.extend(regression_gates(summary.comparisons, options))
