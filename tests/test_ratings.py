"""Ratings: Bradley-Terry on the Elo scale with question-resampling intervals, and FastChat's win counts."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from pytest_mtbench.modes.pairwise import GameVerdict, PairResult
from pytest_mtbench.ratings import (
    Battle,
    battles_from_results,
    bradley_terry,
    fit_ratings,
    longer_answer_won,
    position_consistency,
    win_rates,
)
from pytest_mtbench.records import CallInfo, PromptSent
from pytest_mtbench.testing.battles import simulate_battles

STRENGTHS = {"a": 1100.0, "b": 1040.0, "c": 1000.0, "d": 960.0, "e": 900.0}


def _centred(strengths: dict[str, float]) -> dict[str, float]:
    mean = sum(strengths.values()) / len(strengths)
    return {m: s - mean + 1000.0 for m, s in strengths.items()}


def test_two_models_closed_form_with_ties_as_half_wins() -> None:
    # 3 wins in 4 battles, or 2 wins and 2 ties: both an expected score of 0.75, so the MLE gap is
    # 400 * log10(0.75 / 0.25) either way.
    wins = [Battle(q, "x", "y", o) for q, o in enumerate([1, 1, 1, 0])]
    ties = [Battle(q, "x", "y", o) for q, o in enumerate([1, 1, 0.5, 0.5])]
    gap = 400 * math.log10(3)
    for battles in (wins, ties):
        ratings = fit_ratings(battles)
        assert ratings["x"] - ratings["y"] == pytest.approx(gap, abs=1e-3)
        assert (ratings["x"] + ratings["y"]) / 2 == pytest.approx(1000.0, abs=1e-6)
    assert fit_ratings([Battle(1, "x", "y", 0.5)] * 3) == pytest.approx({"x": 1000.0, "y": 1000.0})


def test_fit_is_the_minimum_of_the_arenas_loss() -> None:
    """The same maximum as minimising the Arena's compute_bt loss (written out here) with L-BFGS-B."""
    import numpy as np
    from scipy.optimize import minimize
    from scipy.special import expit

    battles = simulate_battles(STRENGTHS, n_questions=30, seed=11)
    models = sorted(STRENGTHS)
    index = {m: i for i, m in enumerate(models)}
    pairs = np.array([[index[b.model_a], index[b.model_b]] for b in battles])
    outcomes = np.array([b.outcome for b in battles])
    alpha = math.log(10.0)

    def loss(r):
        p = expit(alpha * (r[pairs[:, 0]] - r[pairs[:, 1]]))
        return -(outcomes * np.log(p) + (1 - outcomes) * np.log(1 - p)).sum()

    reference = minimize(loss, np.zeros(len(models)), method="L-BFGS-B", options={"gtol": 1e-10}).x
    reference = reference - reference.mean()
    ours = fit_ratings(battles)
    for m in models:
        assert ours[m] == pytest.approx(reference[index[m]] * 400 + 1000, abs=0.05)


def test_recovers_the_order_and_the_ratings_lie_in_their_intervals() -> None:
    battles = simulate_battles(STRENGTHS, n_questions=80, seed=1)
    result = bradley_terry(battles, seed=1)
    assert [r.model for r in result.ratings] == ["a", "b", "c", "d", "e"]
    truth = _centred(STRENGTHS)
    for row in result.ratings:
        assert row.low < truth[row.model] < row.high, row
        assert row.low < row.rating < row.high
        assert row.n_battles == 80 * 2 * 4
    assert (result.n_battles, result.n_questions, result.resample) == (80 * 2 * 10, 80, "questions")
    assert sum(r.rating for r in result.ratings) / 5 == pytest.approx(1000.0, abs=1e-6)
    assert result.length_coefficient is None and result.warnings == []


def test_interval_coverage_over_seeded_simulations_is_near_nominal() -> None:
    truth = _centred(STRENGTHS)
    covered = total = 0
    for seed in range(200):
        battles = simulate_battles(STRENGTHS, n_questions=40, seed=seed)
        for row in bradley_terry(battles, resamples=400, seed=seed).ratings:
            covered += row.low <= truth[row.model] <= row.high
            total += 1
    coverage = covered / total
    # 1000 intervals (200 runs x 5 models, correlated within a run): 95% nominal, +-3 points of slack
    assert 0.92 <= coverage <= 0.98, coverage


def _mean_width(battles: list[Battle], resample: str) -> float:
    ratings = bradley_terry(battles, resample=resample, resamples=1000, seed=5).ratings
    return statistics.mean(r.high - r.low for r in ratings)


def test_resampling_questions_widens_the_interval_when_a_questions_battles_are_correlated() -> None:
    correlated = simulate_battles(STRENGTHS, n_questions=40, question_sd=150.0, seed=3)
    assert _mean_width(correlated, "questions") > 1.2 * _mean_width(correlated, "battles")
    independent = simulate_battles(STRENGTHS, n_questions=40, seed=3)
    ratio = _mean_width(independent, "questions") / _mean_width(independent, "battles")
    assert 0.85 < ratio < 1.15, ratio


def test_length_control_separates_verbosity_from_strength() -> None:
    equal = {"terse": 1000.0, "plain": 1000.0, "verbose": 1000.0}
    verbosity = {"terse": 400.0, "plain": 1000.0, "verbose": 2500.0}
    battles = simulate_battles(equal, n_questions=80, verbosity=verbosity, length_bias=3.0, seed=2)
    plain = bradley_terry(battles, seed=2).by_model()
    assert plain["verbose"].low > plain["terse"].high  # the judge's taste for length reads as strength
    controlled = bradley_terry(battles, length_control=True, seed=2)
    assert controlled.length_coefficient is not None and controlled.length_low > 0
    assert controlled.length_low < controlled.length_coefficient < controlled.length_high
    rows = controlled.by_model()
    for model in equal:
        assert rows[model].low < 1000.0 < rows[model].high, rows[model]
    # a judge without a taste for length: the coefficient's interval holds 0
    neutral = simulate_battles(equal, n_questions=80, seed=2)
    fitted = bradley_terry(neutral, length_control=True, seed=2)
    assert fitted.length_low < 0 < fitted.length_high, fitted


def test_disconnected_models_and_too_few_models_are_errors() -> None:
    with pytest.raises(ValueError, match="do not connect all models.*a, b; c, d"):
        bradley_terry([Battle(1, "a", "b", 1.0), Battle(1, "c", "d", 0.5)])
    with pytest.raises(ValueError, match="at least two models"):
        bradley_terry([Battle(1, "a", "a", 1.0)])
    with pytest.raises(ValueError, match="resample"):
        bradley_terry([Battle(1, "a", "b", 1.0)], resample="turns")


def test_a_model_that_won_everything_is_flagged_and_stays_finite() -> None:
    battles = [Battle(q, "champ", "x", 1.0) for q in range(5)] + [
        Battle(q, "x", "y", o) for q, o in enumerate([1.0, 0.0, 0.5, 1.0])
    ]
    result = bradley_terry(battles, resamples=200)
    assert result.warnings == [
        "champ won every battle: its rating has no finite maximum; the one shown is a lower bound"
    ]
    assert all(math.isfinite(r.rating) and math.isfinite(r.low) for r in result.ratings)
    assert result.ratings[0].model == "champ"


def test_outputs_are_plain_json() -> None:
    battles = simulate_battles(STRENGTHS, n_questions=10, seed=4)
    data = bradley_terry(battles, length_control=True, resamples=50).as_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert all(type(r["rating"]) is float for r in data["ratings"])


# ---- win counts from pair results ----------------------------------------------------------------


def _result(
    qid: int, category: str, turn: int, g1: str | None, g2: str | None, lengths=(10, 20)
) -> PairResult:
    from pytest_mtbench.modes.pairwise import combine

    def game(verdict: str | None) -> GameVerdict:
        return GameVerdict(PromptSent("pair-v2", "", "user"), "text", verdict, CallInfo())

    winner, consistent = combine(g1, g2)
    longer = None
    if winner in ("model_a", "model_b") and lengths[0] != lengths[1]:
        longer = (winner == "model_a") == (lengths[0] > lengths[1])
    return PairResult(
        qid, category, turn, "cand", "base", game(g1), game(g2), winner, consistent, *lengths, longer
    )


def test_win_counts_rates_and_rates_of_the_judge() -> None:
    results = [
        _result(81, "writing", 1, "model_a", "model_a"),  # win (the shorter answer)
        _result(81, "writing", 2, "model_a", "model_b"),  # inconsistent: tie
        _result(82, "writing", 1, "tie", "tie"),  # tie, consistent
        _result(82, "writing", 2, "model_b", "model_b", (30, 20)),  # loss to the shorter answer
        _result(111, "math", 1, "model_a", None),  # unparsable: excluded
        _result(111, "math", 2, "model_a", "model_a", (50, 20)),  # win of the longer answer
    ]
    rows = {r.group: r for r in win_rates(results, "cand", "base", resamples=500)}
    assert list(rows) == ["writing", "math", "overall"]
    overall = rows["overall"]
    assert (overall.wins, overall.ties, overall.losses, overall.unparsable) == (2, 2, 1, 1)
    assert overall.win_rate == pytest.approx(2 / 5) and overall.adjusted_win_rate == pytest.approx(3 / 5)
    assert overall.consistency_rate == pytest.approx(4 / 5)
    assert overall.longer_answer_won_rate == pytest.approx(1 / 3) and overall.n_length_decided == 3
    assert overall.n_questions == 3
    assert overall.win_rate_low <= overall.win_rate <= overall.win_rate_high
    assert (rows["math"].wins, rows["math"].unparsable, rows["math"].n_questions) == (1, 1, 1)
    assert rows["math"].win_rate_low is None  # one question: nothing to resample
    base = {r.group: r for r in win_rates(results, "base")}["overall"]
    assert (base.wins, base.ties, base.losses) == (1, 2, 2)
    assert position_consistency(results) == (pytest.approx(4 / 5), 5)
    assert longer_answer_won(results) == (pytest.approx(1 / 3), 3)
    assert json.loads(json.dumps(overall.as_dict(), allow_nan=False)) == overall.as_dict()


def test_battles_from_results_combined_or_per_order() -> None:
    results = [
        _result(81, "writing", 1, "model_a", "model_a"),
        _result(81, "writing", 2, "model_a", "model_b"),
        _result(82, "writing", 1, "model_a", None),
    ]
    assert [b.outcome for b in battles_from_results(results)] == [1.0, 0.5]
    assert [b.outcome for b in battles_from_results(results, per_order=True)] == [1.0, 1.0, 1.0, 0.0]
    assert {(b.model_a, b.model_b, b.question_id) for b in battles_from_results(results)} == {
        ("cand", "base", 81)
    }
