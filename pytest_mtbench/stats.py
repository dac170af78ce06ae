"""Aggregation and gates: pure functions over plain question records (no pytest)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .questions import CATEGORIES

OVERALL = "overall"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class CategoryScore:
    """Scores of one category (or of the whole run for `overall`); None where nothing was scored."""

    name: str
    n_questions: int
    n_scored: int
    n_unscored: int
    turn_1: float | None
    turn_2: float | None
    score: float | None  # mean of all scored turns, FastChat's show_result rule

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def category_order(names: Iterable[str]) -> list[str]:
    """Official categories in FastChat's order, then custom ones alphabetically."""
    names = set(names)
    return [c for c in CATEGORIES if c in names] + sorted(names - set(CATEGORIES))


def _score(name: str, records: list[Mapping[str, Any]]) -> CategoryScore:
    by_turn: dict[int, list[float]] = {1: [], 2: []}
    everything: list[float] = []
    unscored = 0
    for record in records:
        for turn in record.get("turns", []):
            if turn.get("score") is None:
                unscored += 1
                continue
            value = float(turn["score"])
            everything.append(value)
            by_turn.setdefault(int(turn["turn"]), []).append(value)
    return CategoryScore(
        name=name,
        n_questions=len(records),
        n_scored=len(everything),
        n_unscored=unscored,
        turn_1=_mean(by_turn[1]),
        turn_2=_mean(by_turn[2]),
        score=_mean(everything),
    )


def aggregate(records: Iterable[Mapping[str, Any]]) -> tuple[dict[str, CategoryScore], CategoryScore]:
    """Per-category scores and the overall score (mean of all scored turns, not a mean of means)."""
    records = list(records)
    by_category: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        by_category.setdefault(record["category"], []).append(record)
    categories = {name: _score(name, by_category[name]) for name in category_order(by_category)}
    return categories, _score(OVERALL, records)


@dataclass(frozen=True)
class GateResult:
    """One threshold checked against one category (or overall)."""

    name: str
    threshold: float
    score: float | None
    passed: bool
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_gates(
    categories: Mapping[str, CategoryScore], overall: CategoryScore, thresholds: Mapping[str, float]
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
            results.append(
                GateResult(name, threshold, None, False, f"{name}: no scored turns, threshold {threshold:g}")
            )
        elif score < threshold:
            results.append(
                GateResult(
                    name,
                    threshold,
                    score,
                    False,
                    f"{name} scored {score:.3f}, below its threshold {threshold:g}",
                )
            )
        else:
            results.append(
                GateResult(name, threshold, score, True, f"{name} scored {score:.3f} >= {threshold:g}")
            )
    return results


PHASE_FIELDS = {
    "generation": ("answer_cached", "answer_tokens", "generation_seconds"),
    "judging": ("judgment_cached", "judgment_tokens", "judging_seconds"),
}


def phase_totals(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Calls, cache hits, generated tokens and backend seconds per phase, summed over all turns."""
    totals = {phase: {"calls": 0, "cached": 0, "tokens": 0, "seconds": 0.0} for phase in PHASE_FIELDS}
    for record in records:
        for turn in record.get("turns", []):
            for phase, (cached, tokens, seconds) in PHASE_FIELDS.items():
                bucket = totals[phase]
                if turn.get(cached):
                    bucket["cached"] += 1
                else:
                    bucket["calls"] += 1
                    bucket["tokens"] += int(turn.get(tokens) or 0)
                    bucket["seconds"] += float(turn.get(seconds) or 0.0)
    return totals
