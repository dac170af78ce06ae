"""Aggregation and threshold gates: pure functions over typed question records (no pytest)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from .questions import CATEGORIES
from .reasoning import UNFINISHED_REASONING
from .records import AnswerTokens, CallInfo, CategorySummary, GateResult, PhaseTotals, QuestionRecord

OVERALL = "overall"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def category_order(names: Iterable[str]) -> list[str]:
    """Official categories in FastChat's order, then custom ones alphabetically."""
    names = set(names)
    return [c for c in CATEGORIES if c in names] + sorted(names - set(CATEGORIES))


def _summary(name: str, records: list[QuestionRecord]) -> CategorySummary:
    by_turn: dict[int, list[float]] = {1: [], 2: []}
    everything: list[float] = []
    unscored = truncated = unfinished = 0
    for record in records:
        for turn in record.turns:
            if turn.answer_call.finish_reason == UNFINISHED_REASONING:
                unfinished += 1  # not judged: its question failed with that reason
                continue
            truncated += turn.answer_call.truncated + sum(j.call.truncated for j in turn.judgments)
            score = turn.score
            if score is None:
                unscored += 1
                continue
            everything.append(float(score))
            by_turn.setdefault(turn.turn, []).append(float(score))
    return CategorySummary(
        name=name,
        n_questions=len(records),
        n_scored=len(everything),
        n_unscored=unscored,
        turn_1=_mean(by_turn[1]),
        turn_2=_mean(by_turn[2]),
        score=_mean(everything),
        n_truncated=truncated,
        n_unfinished_reasoning=unfinished,
    )


def aggregate(
    records: Iterable[QuestionRecord], thresholds: Mapping[str, float] | None = None
) -> tuple[dict[str, CategorySummary], CategorySummary]:
    """Per-category scores and the overall score (mean of all scored turns, not a mean of means)."""
    records = list(records)
    thresholds = thresholds or {}
    by_category: dict[str, list[QuestionRecord]] = {}
    for record in records:
        by_category.setdefault(record.category, []).append(record)
    categories = {
        name: replace(_summary(name, by_category[name]), threshold=thresholds.get(name))
        for name in category_order(by_category)
    }
    return categories, replace(_summary(OVERALL, records), threshold=thresholds.get(OVERALL))


def question_scores(records: Iterable[QuestionRecord]) -> dict[str, dict[int, list[float]]]:
    """Each category's (and overall's) scored turns per question: the clusters of every interval."""
    groups: dict[str, dict[int, list[float]]] = {OVERALL: {}}
    for record in records:
        scores = [float(t.score) for t in record.turns if t.score is not None]
        if scores:
            groups.setdefault(record.category, {})[record.question_id] = scores
            groups[OVERALL][record.question_id] = scores
    return groups


def evaluate_gates(
    categories: Mapping[str, CategorySummary], overall: CategorySummary, thresholds: Mapping[str, float]
) -> list[GateResult]:
    """Check thresholds for the categories that ran (and overall when anything ran)."""
    results: list[GateResult] = []
    available = dict(categories)
    if categories:
        available[OVERALL] = overall
    for name in [*category_order(set(thresholds) - {OVERALL}), OVERALL]:
        if name not in thresholds or name not in available:
            continue
        threshold = float(thresholds[name])
        score = available[name].score
        if score is None:
            passed, message = False, f"{name}: no scored turns, threshold {threshold:g}"
        elif score < threshold:
            passed, message = False, f"{name} scored {score:.3f}, below its threshold {threshold:g}"
        else:
            passed, message = True, f"{name} scored {score:.3f} >= {threshold:g}"
        results.append(GateResult(name, "threshold", passed, message, threshold=threshold, score=score))
    return results


def phase_totals(
    records: Iterable[QuestionRecord], pair_calls: Iterable[CallInfo] = ()
) -> dict[str, PhaseTotals]:
    """Calls, cache hits, generated tokens and backend seconds per phase, summed over all turns (and the
    pairwise judge calls, which belong to no single record). `seconds` sums each call's share of its
    batch; `wall_seconds` is the time during which the phase had calls under way (the union of the calls'
    spans, across xdist workers too), and tokens/s is over it: concurrent API batches and a model
    generating beside the judge would otherwise count their overlap twice or more."""
    totals = {phase: PhaseTotals() for phase in ("generation", "judging")}
    spans: dict[str, list[tuple[float, float]]] = {phase: [] for phase in totals}
    calls = [
        (phase, call)
        for record in records
        for turn in record.turns
        for phase, call in [("generation", turn.answer_call), *(("judging", j.call) for j in turn.judgments)]
    ]
    for phase, call in [*calls, *(("judging", call) for call in pair_calls)]:
        bucket = totals[phase]
        if call.cached:
            bucket.cached += 1
        else:
            bucket.calls += 1
            bucket.tokens += call.tokens
            bucket.seconds += call.seconds
            if call.reasoning_tokens:  # written only in runs of thinking models
                bucket.reasoning_tokens = (bucket.reasoning_tokens or 0) + call.reasoning_tokens
            if call.started is not None and call.finished is not None:
                spans[phase].append((call.started, call.finished))
    for phase, bucket in totals.items():
        seconds = float(bucket.seconds)
        if spans[phase]:
            bucket.wall_seconds = seconds = _covered(spans[phase])
        bucket.tokens_per_second = bucket.tokens / seconds if seconds > 0 else None
    return totals


def _covered(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by the union of (start, end) spans."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def answer_lengths(records: Iterable[QuestionRecord]) -> AnswerTokens | None:
    """A thinking model's answers: mean generated tokens a turn with the reasoning and without it, and
    the share spent reasoning (cached turns included); None when no answer holds reasoning."""
    turns = [t for r in records for t in r.turns]
    thinking = sum(t.answer_call.reasoning_tokens or 0 for t in turns)
    if not turns or not any(t.reasoning is not None for t in turns):
        return None
    total = sum(t.answer_call.tokens for t in turns)
    return AnswerTokens(
        turns=len(turns),
        mean_tokens=total / len(turns),
        mean_answer_tokens=(total - thinking) / len(turns),
        reasoning_share=thinking / total if total else 0.0,
    )


def served_judges(records: Iterable[QuestionRecord]) -> list[str]:
    """The model names the judge endpoint said answered (the run's judge identity), sorted."""
    return sorted(
        {j.call.served_model for r in records for t in r.turns for j in t.judgments if j.call.served_model}
    )
