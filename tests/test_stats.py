"""Aggregation follows FastChat's show_result: the mean of all scored turns, unscored turns dropped."""

from __future__ import annotations

import pytest

from pytest_mtbench.records import CallInfo, Judgment, PromptSent, QuestionRecord, TurnRecord
from pytest_mtbench.stats import aggregate, evaluate_gates, phase_totals, question_scores


def _judgment(score: float | None, call: CallInfo | None = None) -> Judgment:
    return Judgment(
        PromptSent("single-v1", "", "u"), "text", score, "official" if score else None, call or CallInfo()
    )


def _turn(
    i: int, *scores: float | None, answer: CallInfo | None = None, judge: CallInfo | None = None
) -> TurnRecord:
    return TurnRecord(i, "q", "a", 0.0, answer or CallInfo(), [_judgment(s, judge) for s in scores])


def _record(qid: int, category: str, *scores: float | None) -> QuestionRecord:
    return QuestionRecord(qid, category, "m", [_turn(i + 1, s) for i, s in enumerate(scores)])


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
    assert question_scores(records) == {
        "overall": {1: [10.0, 10.0], 2: [1.0], 3: [4.0, 1.0]},
        "writing": {1: [10.0, 10.0]},
        "coding": {2: [1.0], 3: [4.0, 1.0]},
    }


def test_repeated_judgments_score_a_turn_by_their_mean() -> None:
    record = QuestionRecord(1, "coding", "m", [_turn(1, 6, 7, None), _turn(2, None, None)])
    categories, overall = aggregate([record])
    assert record.turns[0].score == pytest.approx(6.5) and record.turns[1].score is None
    assert overall.n_scored == 1 and overall.n_unscored == 1 and overall.score == pytest.approx(6.5)


def test_gates_only_for_categories_that_ran() -> None:
    categories, overall = aggregate([_record(1, "coding", 6, 6)])
    gates = evaluate_gates(categories, overall, {"coding": 6.5, "math": 9, "overall": 5})
    assert [(g.name, g.passed) for g in gates] == [("coding", False), ("overall", True)]
    assert "below its threshold 6.5" in gates[0].message


def test_gate_with_no_scored_turn_fails() -> None:
    categories, overall = aggregate([_record(1, "coding", None, None)])
    (gate,) = evaluate_gates(categories, overall, {"coding": 1})
    assert not gate.passed and gate.score is None and "no scored turns" in gate.message


def test_phase_totals_count_calls_and_cache_hits_separately_and_truncation_is_counted() -> None:
    fresh, hit = CallInfo(tokens=10, seconds=0.5), CallInfo(cached=True, tokens=10, seconds=0.5)
    judged = CallInfo(tokens=3, seconds=0.25)
    cut = CallInfo(tokens=10, seconds=0.5, truncated=True, finish_reason="length")
    records = [
        QuestionRecord(
            1, "writing", "m", [_turn(1, 7, answer=fresh, judge=judged), _turn(2, 7, answer=hit, judge=hit)]
        ),
        QuestionRecord(2, "writing", "m", [_turn(1, 5, answer=cut, judge=judged)]),
    ]
    totals = phase_totals(records)
    assert totals["generation"].to_dict() == {
        "calls": 2,
        "cached": 1,
        "tokens": 20,
        "seconds": 1.0,
        "tokens_per_second": 20.0,
    }
    assert totals["judging"].to_dict() == {
        "calls": 2,
        "cached": 1,
        "tokens": 6,
        "seconds": 0.5,
        "tokens_per_second": 12.0,
    }
    categories, overall = aggregate(records)
    assert categories["writing"].n_truncated == 1 and overall.n_truncated == 1


def test_throughput_is_over_the_wall_time_calls_were_under_way_not_their_summed_batches() -> None:
    # Two xdist workers' judge batches (0-10 s and 5-15 s) and a third worker's (20-22 s): each call's
    # share of its batch sums to 22 s, but calls were under way for 17 s of wall time.
    def call(start: float, end: float, tokens: int = 100) -> CallInfo:
        return CallInfo(tokens=tokens, seconds=end - start, started=1000 + start, finished=1000 + end)

    records = [
        QuestionRecord(1, "writing", "m", [_turn(1, 7, answer=call(0, 10), judge=call(0, 10))]),
        QuestionRecord(2, "coding", "m", [_turn(1, 7, answer=call(5, 15), judge=call(5, 15))]),
        QuestionRecord(3, "math", "m", [_turn(1, 7, answer=call(20, 22), judge=call(20, 22))]),
    ]
    judging = phase_totals(records)["judging"]
    assert judging.seconds == 22.0 and judging.wall_seconds == 17.0
    assert judging.tokens_per_second == pytest.approx(300 / 17.0)
