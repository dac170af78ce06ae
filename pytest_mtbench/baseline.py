"""The baseline gate: this run against a saved report, paired by question (pure, no pytest).

A baseline is any JSON report written by `--mtbench-report`. It is only comparable when the same judge
(spec, and served model where both runs recorded one) graded the same data with the same reference
answers and judge prompts; `check_compatible` lists every difference so the plugin can refuse it (or
record it, with --mtbench-allow-mismatch). Judgments of answers that did not change are reused from the
baseline file (`BaselineJudgments`), so they cost no judge call and contribute a difference of exactly 0.
The statistics are comparison.py's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .cache import canonical_json
from .records import (
    BaselineComparison,
    GateResult,
    JudgeDrift,
    Judgment,
    QuestionRecord,
    RunInfo,
    RunReport,
    finite_or_none,
)
from .stats import OVERALL, category_order, question_scores

VERDICT_REGRESSED = "regressed"
VERDICT_INCONCLUSIVE = "inconclusive"
ALLOW_HINT = "(compare runs judged alike, or pass --mtbench-allow-mismatch to compare anyway)"


def check_compatible(old: RunInfo, new: RunInfo) -> list[str]:
    """Every reason the two runs' scores are not comparable (empty when they are)."""
    problems = []
    if old.judge != new.judge:
        problems.append(f"judge {old.judge!r} in the baseline, {new.judge!r} now")
    if old.judge_served and new.judge_served and old.judge_served != new.judge_served:
        before, after = ", ".join(old.judge_served), ", ".join(new.judge_served)
        problems.append(f"served judge model {before} in the baseline, {after} now")
    if old.data.references != new.data.references:
        problems.append(f"references {old.data.references!r} in the baseline, {new.data.references!r} now")
    before_inputs, after_inputs = old.data.inputs_sha256 or {}, new.data.inputs_sha256 or {}
    hashes = {  # the inputs by content, and the pinned official judge prompts
        "the questions file differs": (before_inputs.get("questions"), after_inputs.get("questions")),
        "the references file differs": (before_inputs.get("references"), after_inputs.get("references")),
        "custom judge prompts differ": (
            before_inputs.get("judge_prompts"),
            after_inputs.get("judge_prompts"),
        ),
        # Equal within a version (pinned); a baseline written under another pin was judged with others.
        "the official judge prompts differ": (
            (old.data.sha256 or {}).get("judge_prompts.jsonl"),
            (new.data.sha256 or {}).get("judge_prompts.jsonl"),
        ),
    }
    for what, (before, after) in hashes.items():
        if before != after:
            problems.append(f"{what} (sha256 {str(before)[:12]} in the baseline, {str(after)[:12]} now)")
    old_call, new_call = old.judge_call, new.judge_call
    if old_call.call_style != new_call.call_style:
        problems.append(f"judge call {old_call.call_style} in the baseline, {new_call.call_style} now")
    else:
        limits = (
            ("judge max tokens", old_call.max_tokens, new_call.max_tokens),
            ("judge max completion tokens", old_call.max_completion_tokens, new_call.max_completion_tokens),
            ("judge reasoning effort", old_call.reasoning_effort, new_call.reasoning_effort),
        )
        for shown, before, after in limits:
            if before != after:
                problems.append(f"{shown} {before} in the baseline, {after} now")
    if old.judge_scoring != new.judge_scoring:
        problems.append(f"judge scoring {old.judge_scoring} in the baseline, {new.judge_scoring} now")
    return problems


class BaselineJudgments:
    """The baseline's judgments, found by the exact prompt sent, for reuse when an answer did not change."""

    source = "baseline"

    def __init__(self, baseline: RunReport) -> None:
        self._by_prompt: dict[str, Judgment] = {}
        for record in baseline.questions:
            for turn in record.turns:
                for judgment in turn.judgments:
                    self._by_prompt[
                        self.key(judgment.prompt.system, judgment.prompt.user, judgment.repeat)
                    ] = judgment

    @staticmethod
    def key(system: str, user: str, repeat: int) -> str:
        return canonical_json([system, user, repeat])

    def find(self, system: str, user: str, repeat: int) -> Judgment | None:
        return self._by_prompt.get(self.key(system, user, repeat))

    def __len__(self) -> int:
        return len(self._by_prompt)


@dataclass(frozen=True)
class GateOptions:
    """How the comparison decides: margins per group, confidence, and whether inconclusive fails."""

    margins: Mapping[str, float]
    default_margin: float = 0.5
    confidence: float = 0.95
    strict: bool = False
    seed: int = 0

    def margin(self, name: str) -> float:
        return float(self.margins.get(name, self.default_margin))


def compare_runs(
    baseline: Iterable[QuestionRecord], current: Iterable[QuestionRecord], options: GateOptions
) -> list[BaselineComparison]:
    """Per category and overall: baseline and new score, paired difference, interval, verdict."""
    from .comparison import compare

    old, new = question_scores(baseline), question_scores(current)
    names = [name for name in category_order(set(new) - {OVERALL}) if name in old] + [OVERALL]
    margins = {name: options.margin(name) for name in names}
    results = compare(
        {n: old[n] for n in names},
        {n: new[n] for n in names},
        margins,
        confidence=options.confidence,
        seed=options.seed,
    )
    return [
        BaselineComparison.from_dict(
            {k: finite_or_none(v) if isinstance(v, float) else v for k, v in result.as_dict().items()}
        )
        for result in results
    ]


def _signed(value: float | None) -> str:
    return f"{value:+.3f}" if value is not None else "unbounded"


def describe(row: BaselineComparison) -> str:
    """One line for a compared group: verdict, difference, interval, margin, both scores."""
    if row.difference is None:
        return f"{row.name}: {row.verdict} (no question scored in both runs)"
    if row.reason:
        return f"{row.name}: {row.verdict} ({row.reason}), difference {row.difference:+.3f}"
    return (
        f"{row.name}: {row.verdict}, difference {row.difference:+.3f} "
        f"(interval {_signed(row.low)} to {_signed(row.high)}, margin {row.margin:g}; "
        f"baseline {row.baseline_score:.3f}, now {row.new_score:.3f}, {row.n_questions} questions)"
    )


def regression_gates(comparisons: list[BaselineComparison], options: GateOptions) -> list[GateResult]:
    """A gate per compared category and overall: regressed fails; inconclusive fails only when strict."""
    gates = []
    for row in comparisons:
        failed = row.verdict == VERDICT_REGRESSED or (options.strict and row.verdict == VERDICT_INCONCLUSIVE)
        gates.append(GateResult(row.name, "regression", not failed, describe(row), score=row.new_score))
    return gates


# Per-turn SD of a judge re-judging the same answer when no repeats measured it: FastChat issue #3018
# saw single GPT-4 turns move by up to a point between judgings at temperature 0 (see the benchmark).
DEFAULT_JUDGE_SD = 0.7
DRIFT_Z = 3.0  # how many standard errors the mean re-judged difference must exceed to call it drift


def drift_sample(baseline: RunReport, n: int, seed: int = 0) -> list[Judgment]:
    """A seeded sample of the baseline's scored first judgments, spread over its questions."""
    import random

    pool = [
        j
        for q in sorted(baseline.questions, key=lambda r: r.question_id)
        for t in q.turns
        for j in t.judgments
        if j.repeat == 0 and j.score is not None
    ]
    return random.Random(seed).sample(pool, min(n, len(pool)))


def judge_drift(before: list[float], after: list[float | None], judge_sd: float | None) -> JudgeDrift:
    """Did the judge change? The mean of (re-judged - baseline) against what the judge's own noise allows.

    Each difference of two judgings of the same prompt has SD sqrt(2) * judge_sd when nothing changed, so
    their mean over n turns has SD sqrt(2/n) * judge_sd; drift is a mean beyond DRIFT_Z of those.
    """
    pairs = [(b, a) for b, a in zip(before, after) if a is not None]
    sd = judge_sd if judge_sd else DEFAULT_JUDGE_SD
    if not pairs:
        return JudgeDrift(n=0, changed=False, reason="no re-judged turn could be scored")
    diffs = [a - b for b, a in pairs]
    mean = sum(diffs) / len(diffs)
    threshold = DRIFT_Z * sd * (2 / len(diffs)) ** 0.5
    return JudgeDrift(
        n=len(diffs),
        unscored=len(after) - len(pairs),
        mean_difference=mean,
        mean_absolute_difference=sum(abs(d) for d in diffs) / len(diffs),
        threshold=threshold,
        judge_sd=sd,
        judge_sd_source="repeats" if judge_sd else "default",
        changed=abs(mean) > threshold,
    )


def mark_judge_changed(comparisons: list[BaselineComparison]) -> None:
    """The judge moved: no verdict can blame the model, so every comparison becomes inconclusive."""
    for row in comparisons:
        row.verdict = VERDICT_INCONCLUSIVE
        row.reason = "judge changed"
