"""Aggregation follows FastChat's show_result: the mean of all scored turns, unscored turns dropped."""

from __future__ import annotations

import pytest

from pytest_mtbench.stats import aggregate, evaluate_gates


def _record(qid: int, category: str, *scores: float | None) -> dict:
    return {
        "question_id": qid,
        "category": category,
        "turns": [{"turn": i + 1, "score": s} for i, s in enumerate(scores)],
    }


def test_overall_is_mean_of_scored_turns_not_mean_of_means() -> None:
    records = [
        _record(1, "writing", 10, 10),
        _record(2, "coding", 1, None),  # one unscored turn
        _record(3, "coding", 4, 1),
    ]
    categories, overall = aggregate(records)
    assert list(categories) == ["writing", "coding"]  # FastChat's category order
    assert categories["coding"].score == pytest.approx(2.0)
    assert categories["coding"].turn_1 == pytest.approx(2.5) and categories["coding"].turn_2 == 1
    assert categories["coding"].n_scored == 3 and categories["coding"].n_unscored == 1
    assert overall.score == pytest.approx((10 + 10 + 1 + 4 + 1) / 5)  # not (10 + 2) / 2
    assert overall.n_scored == 5


def test_gates_only_for_categories_that_ran() -> None:
    categories, overall = aggregate([_record(1, "coding", 6, 6)])
    gates = evaluate_gates(categories, overall, {"coding": 6.5, "math": 9, "overall": 5})
    assert [(g.name, g.passed) for g in gates] == [("coding", False), ("overall", True)]
    assert "below its threshold 6.5" in gates[0].message


def test_gate_with_no_scored_turn_fails() -> None:
    categories, overall = aggregate([_record(1, "coding", None, None)])
    (gate,) = evaluate_gates(categories, overall, {"coding": 1})
    assert not gate.passed and gate.score is None and "no scored turns" in gate.message


def test_phase_totals_count_calls_and_cache_hits_separately() -> None:
    from pytest_mtbench.stats import phase_totals

    turn = {"answer_tokens": 10, "generation_seconds": 0.5, "judgment_tokens": 3, "judging_seconds": 0.25}
    records = [
        {
            "turns": [
                {**turn, "answer_cached": False, "judgment_cached": False},
                {**turn, "answer_cached": True},
            ]
        },
        {"turns": [{**turn, "answer_cached": False, "judgment_cached": True}]},
    ]
    totals = phase_totals(records)
    assert totals["generation"] == {"calls": 2, "cached": 1, "tokens": 20, "seconds": 1.0}
    assert totals["judging"] == {"calls": 2, "cached": 1, "tokens": 6, "seconds": 0.5}
