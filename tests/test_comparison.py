"""Baseline comparison: paired sign-flip intervals over questions, Holm across groups, margin verdicts."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from pytest_mtbench.comparison import (
    IMPROVED,
    INCONCLUSIVE,
    REGRESSED,
    UNCHANGED,
    classify,
    compare,
    compare_batch,
    holm,
    judge_noise,
    score_interval,
)
from pytest_mtbench.questions import CATEGORIES

Groups = dict[str, dict[int, list[float]]]


def _with_overall(categories: Groups) -> Groups:
    overall = {q: values for clusters in categories.values() for q, values in clusters.items()}
    return {**categories, "overall": overall}


def _full_run(rng: np.random.Generator, low: int = 2, high: int = 10) -> Groups:
    """8 categories of 10 questions, 2 integer scores each, varied across questions."""
    return _with_overall(
        {
            category: {10 * i + q: [float(x) for x in rng.integers(low, high + 1, size=2)] for q in range(10)}
            for i, category in enumerate(CATEGORIES)
        }
    )


def _simulated_pairs(
    rng: np.random.Generator, pairs: int, questions: int, drop: float, changed: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Integer scores 1..10 with true question means in 3..8 (rounding unbiased, clipping negligible), so
    the true mean difference is -drop * changed; `changed` is the share of questions answered anew."""
    truth = rng.uniform(3, 8, size=(pairs, questions, 1))
    base = np.clip(np.rint(truth + rng.normal(0, 1, size=(pairs, questions, 2))), 1, 10)
    new = np.clip(np.rint(truth - drop + rng.normal(0, 1, size=(pairs, questions, 2))), 1, 10)
    same = rng.random((pairs, questions, 1)) >= changed
    return base, np.where(same, base, new)


def test_identical_runs_differ_by_exactly_zero() -> None:
    run = _full_run(np.random.default_rng(3))
    results = compare(run, run, 0.5)
    assert [r.name for r in results] == [*CATEGORIES, "overall"]
    for r in results:
        assert (r.difference, r.low, r.high, r.p_value, r.verdict) == (0.0, 0.0, 0.0, 1.0, UNCHANGED)
        assert r.baseline_score == r.new_score and r.n_questions == (80 if r.name == "overall" else 10)
    assert {round(r.baseline_score, 2) for r in results} != {results[0].baseline_score}  # varied data


def test_two_point_drop_in_one_category_is_regressed_and_reproducible() -> None:
    rng = np.random.default_rng(11)
    base = _full_run(rng, low=4)  # no clipping at 1 after the drop
    new_categories = {}
    for category in CATEGORIES:
        clusters = base[category]
        if category == "math":  # every turn 2 points lower, give or take 1
            new_categories[category] = {
                q: [v - 2 + float(rng.integers(-1, 2)) for v in values] for q, values in clusters.items()
            }
        else:  # the judge moves a few turns by 1
            new_categories[category] = {
                q: [min(10.0, v + float(rng.random() < 0.2)) for v in values]
                for q, values in clusters.items()
            }
    new = _with_overall(new_categories)

    results = {r.name: r for r in compare(base, new, 0.5)}
    math_result = results["math"]
    assert math_result.verdict == REGRESSED
    assert -3 <= math_result.low <= math_result.difference <= math_result.high < -0.5
    assert math_result.p_value == 1 / 1024  # every question dropped by more than the margin
    assert math_result.adjusted_p_value == pytest.approx(9 / 1024) and math_result.interval_confidence == (
        pytest.approx(1 - 2 * 0.05 / 9)
    )
    assert math_result.difference == pytest.approx(math_result.new_score - math_result.baseline_score)
    assert all(results[c].verdict == UNCHANGED for c in CATEGORIES if c != "math")
    assert results["overall"].verdict == UNCHANGED  # a 2-point drop in 1 of 8 categories is 0.25 overall
    assert -0.5 < results["overall"].difference < 0
    # after math is rejected, Holm tests the other 8 groups at 1 - 0.05 / 8 each side
    assert results["writing"].interval_confidence == pytest.approx(1 - 2 * 0.05 / 8)

    assert compare(base, new, 0.5, seed=0) == compare(base, new, 0.5, seed=0)
    reseeded = {r.name: r for r in compare(base, new, 0.5, seed=1)}
    assert reseeded["math"] == math_result  # 10 questions: all 1024 sign patterns, no randomness
    assert reseeded["overall"].low != results["overall"].low  # 80 questions: Monte Carlo patterns
    assert reseeded["overall"].verdict == results["overall"].verdict


def test_margin_boundaries_in_classify() -> None:
    m = 0.5
    assert classify(-0.9, -0.5, m) == INCONCLUSIVE  # an upper bound exactly at -m is not below it
    assert classify(-0.9, -0.5000001, m) == REGRESSED
    assert classify(-0.5, 0.3, m) == UNCHANGED  # a drop of exactly m is tolerated
    assert classify(-0.5000001, 0.3, m) == INCONCLUSIVE
    assert classify(0.5, 0.9, m) == UNCHANGED  # a lower bound exactly at +m is not above it
    assert classify(0.5000001, 0.9, m) == IMPROVED
    assert classify(-0.2, 1.5, m) == UNCHANGED  # straddles +m: no drop beyond m, gain not shown
    assert classify(-math.inf, math.inf, m) == INCONCLUSIVE
    assert classify(0.0, 0.0, 0.0) == UNCHANGED
    with pytest.raises(ValueError):
        classify(1.0, 0.0, m)
    with pytest.raises(ValueError):
        classify(0.0, 1.0, -0.1)


@pytest.mark.parametrize(
    ("shift", "verdict"),
    [(-0.75, REGRESSED), (-0.5, UNCHANGED), (0.5, UNCHANGED), (0.75, IMPROVED)],
)
def test_margin_boundaries_through_compare(shift: float, verdict: str) -> None:
    base = {q: [float(q % 7 + 2), float(q % 5 + 3)] for q in range(10)}
    new = {q: [v + shift for v in values] for q, values in base.items()}
    (result,) = compare({"coding": base}, {"coding": new}, {"coding": 0.5})
    assert result.low == result.high == result.difference == shift
    assert result.verdict == verdict
    assert (result.adjusted_p_value < 0.05) == (verdict == REGRESSED)
    assert result.p_value == (1 / 1024 if shift < -0.5 else 1.0)  # a drop of exactly m: H0 holds


def test_holm_textbook_example() -> None:
    # Holm (1979) as usually taught: p = .01, .04, .03, .005 -> reject H4 and H1 at 0.05
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6, 0.01]) == pytest.approx([1.0, 1.0, 0.03])  # capped at 1, monotone
    assert holm([0.02, 0.02, 0.02]) == pytest.approx([0.06, 0.06, 0.06])
    assert holm([]) == []
    with pytest.raises(ValueError):
        holm([0.5, 1.5])


def test_regressed_exactly_when_adjusted_p_below_alpha() -> None:
    rng = np.random.default_rng(7)
    base = np.clip(np.rint(rng.uniform(3, 9, size=(300, 40, 1)) + rng.normal(0, 1, size=(300, 40, 2))), 1, 10)
    drop = np.repeat(rng.choice([0.0, 1.0, 2.0, 3.0], size=(300, 4)), 10, axis=1)[:, :, None]
    new = np.clip(np.rint(base - drop + rng.normal(0, 1, size=base.shape)), 1, 10)
    groups = {
        "a": range(10),
        "b": range(10, 20),
        "c": range(20, 30),
        "d": range(30, 40),
        "overall": range(40),
    }
    results = compare_batch(base, new, groups, 0.5, resamples=500)
    flags = np.array([[r.verdict == REGRESSED for r in row] for row in results])
    adjusted = np.array([[r.adjusted_p_value for r in row] for row in results])
    high = np.array([[r.high for r in row] for row in results])
    assert 0.2 < flags.mean() < 0.8  # both outcomes are exercised
    assert np.array_equal(flags, adjusted < 0.05)
    assert np.array_equal(flags, high < -0.5)
    for row in results[:20]:
        assert [r.adjusted_p_value for r in row] == pytest.approx(holm([r.p_value for r in row]))
    # the batch path is the single path, pair by pair
    pair = 5
    one = {name: {q: list(base[pair, q]) for q in index} for name, index in groups.items()}
    other = {name: {q: list(new[pair, q]) for q in index} for name, index in groups.items()}
    assert compare(one, other, 0.5, resamples=500) == results[pair]


@pytest.mark.parametrize(
    ("questions", "at_least", "at_most"),
    [
        (80, 0.93, 0.97),  # Monte Carlo sign patterns: nominal (95.0-96.2% over 4 seeds)
        (10, 0.95, 0.98),  # all 1024 patterns, half-point differences: ties make it conservative (97.1-97.4%)
    ],
)
def test_interval_covers_true_difference_at_nominal_rate(
    questions: int, at_least: float, at_most: float
) -> None:
    # confidence 0.975 gives one-sided 97.5% bounds, i.e. a two-sided 95% interval; 4000 pairs: SE 0.35%
    base, new = _simulated_pairs(np.random.default_rng(questions), 4000, questions, drop=1.0)
    results = compare_batch(base, new, {"overall": range(questions)}, 0.5, confidence=0.975, seed=2)
    low = np.array([row[0].low for row in results])
    high = np.array([row[0].high for row in results])
    assert results[0][0].interval_confidence == pytest.approx(0.95)
    coverage = ((low <= -1.0) & (high >= -1.0)).mean()
    assert at_least <= coverage <= at_most
    assert 0.96 <= (high >= -1.0).mean() <= 0.99 and 0.96 <= (low <= -1.0).mean() <= 0.99


def test_sparse_drops_keep_the_regression_side_conservative() -> None:
    # 10 questions, 4 in 10 answered anew and 1 point worse: differences are mostly exactly 0 and skewed.
    # The bound facing the drop (low) undercovers (measured 88% for its nominal 97.5%); the bound the
    # regressed verdict reads (high) overcovers, so false alarms stay rare.
    base, new = _simulated_pairs(np.random.default_rng(5), 2000, 10, drop=1.0, changed=0.4)
    results = compare_batch(base, new, {"overall": range(10)}, 0.5, confidence=0.975)
    low = np.array([row[0].low for row in results])
    high = np.array([row[0].high for row in results])
    assert (high >= -0.4).mean() >= 0.975
    assert 0.85 <= (low <= -0.4).mean() <= 0.92


def test_clustering_by_question_widens_the_interval() -> None:
    rng = np.random.default_rng(21)
    shared = rng.integers(-2, 3, size=30).astype(float)  # a question's change hits both its turns
    base = {q: [float(v) for v in rng.integers(3, 9, size=2)] for q in range(30)}
    new = {q: [v + shared[q] + float(rng.integers(0, 2)) for v in values] for q, values in base.items()}
    clustered = compare({"g": base}, {"g": new}, 0.5, resamples=4000)[0]
    by_turn = compare(
        {"g": {2 * q + t: [v] for q, values in base.items() for t, v in enumerate(values)}},
        {"g": {2 * q + t: [v] for q, values in new.items() for t, v in enumerate(values)}},
        0.5,
        resamples=4000,
    )[0]
    assert clustered.difference == pytest.approx(by_turn.difference)
    assert (clustered.high - clustered.low) > 1.25 * (by_turn.high - by_turn.low)

    # the same for one run's score: questions differ in difficulty, both turns share it
    difficulty = rng.integers(2, 10, size=40)
    run = {q: [float(d), float(min(10, d + rng.integers(0, 2)))] for q, d in enumerate(difficulty)}
    one_per_turn = {2 * q + t: [v] for q, values in run.items() for t, v in enumerate(values)}
    question_level, turn_level = score_interval(run), score_interval(one_per_turn)
    assert question_level.score == turn_level.score
    assert (question_level.high - question_level.low) > 1.25 * (turn_level.high - turn_level.low)


def test_pairing_narrows_the_interval() -> None:
    rng = np.random.default_rng(8)
    base = {q: [float(v)] * 2 for q, v in enumerate(rng.integers(1, 11, size=40))}  # wide question spread
    new = {q: [float(np.clip(v + rng.integers(-1, 2), 1, 10)) for v in values] for q, values in base.items()}
    paired = compare({"g": base}, {"g": new}, 0.5, confidence=0.975)[0]  # a two-sided 95% interval
    base_alone, new_alone = score_interval(base), score_interval(new)
    unpaired_half_width = math.hypot(
        (base_alone.high - base_alone.low) / 2, (new_alone.high - new_alone.low) / 2
    )  # two independent 95% intervals combined, as an unpaired comparison would
    assert (paired.high - paired.low) / 2 < 0.3 * unpaired_half_width


def test_score_interval_pools_values_and_bounds_the_score() -> None:
    clusters = {1: [10.0, 10.0], 2: [1.0], 3: [4.0, 1.0], 4: [], 5: [7.0, 6.0]}
    result = score_interval(clusters, resamples=500)
    assert result.score == pytest.approx(39 / 7)  # pooled, not the mean of question means
    assert (result.n_questions, result.n_values) == (4, 7)
    assert 1.0 <= result.low < result.score < result.high <= 10.0
    assert score_interval(clusters, resamples=500) == result
    constant = score_interval({1: [7.0, 7.0], 2: [7.0]})
    assert (constant.low, constant.score, constant.high) == (7.0, 7.0, 7.0)
    assert score_interval({1: [3.0, 5.0]}).low == -math.inf
    with pytest.raises(ValueError):
        score_interval({1: []})


def test_questions_scored_in_one_run_only_are_left_out() -> None:
    base = {"a": {1: [5.0, 6.0], 2: [7.0], 3: [8.0, 8.0]}, "b": {7: [4.0]}, "only_base": {9: [1.0]}}
    new = {"a": {1: [5.0, 6.0], 2: [7.0, 9.0], 4: [2.0]}, "b": {8: [4.0]}}
    a, b = compare(base, new, {"a": 0.5, "b": 0.5})
    assert (a.n_questions, a.baseline_score, a.new_score) == (2, 6.0, 6.75)
    assert a.difference == pytest.approx((2 * 0.0 + 1.5 * 1.0) / 3.5)  # weight: mean count of both runs
    assert (b.n_questions, b.difference, b.verdict, b.low, b.high) == (
        0,
        None,
        INCONCLUSIVE,
        -math.inf,
        math.inf,
    )
    assert a.interval_confidence == pytest.approx(0.9)  # b tested nothing, so a is a family of one
    with pytest.raises(ValueError, match="no margin given for group 'a'"):
        compare(base, new, {"b": 0.5})


def test_adding_a_group_leaves_another_groups_draw_alone() -> None:
    rng = np.random.default_rng(4)
    base = {"a": {q: [float(v)] for q, v in enumerate(rng.integers(1, 11, size=30))}}
    new = {"a": {q: [v[0] - float(rng.integers(0, 2))] for q, v in base["a"].items()}}
    alone = compare(base, new, 0.5)[0]
    extra = {"b": {q: [5.0] for q in range(20)}}
    together = compare({**base, **extra}, {**new, **extra}, 0.5)[0]
    assert together.p_value == alone.p_value and 0 < alone.p_value < 1


def test_judge_noise_from_known_spread() -> None:
    # each turn judged 3 times as x-1, x, x+1: within-turn SD exactly 1
    turn_means = {1: (5, 7), 2: (6, 6), 3: (8, 8), 4: (3, 5)}
    repeats = {q: [[x - 1.0, float(x), x + 1.0] for x in means] for q, means in turn_means.items()}
    noise = judge_noise(repeats)
    assert (noise.n_questions, noise.n_turns, noise.n_values, noise.repeats) == (4, 8, 24, 3)
    assert noise.judge_sd == pytest.approx(1.0)
    assert noise.score_sd_from_judge == pytest.approx(1 / math.sqrt(24))
    # question sums 36, 36, 48, 24 over 6 values each, mean 6: Q/(Q-1) * (0 + 0 + 144 + 144) / 24**2
    assert noise.score_sd == pytest.approx(math.sqrt(4 / 3 * 288 / 576))
    assert noise.judge_share == pytest.approx((1 / 24) / (2 / 3))

    single = judge_noise({q: [[float(x)] for x in means] for q, means in turn_means.items()})
    assert (single.repeats, single.judge_sd, single.judge_share) == (1, None, None)
    assert single.score_sd == pytest.approx(math.sqrt(4 / 3 * (0 + 0 + 16 + 16) / 64))

    mixed = judge_noise({1: [[4.0, 6.0], [7.0]], 2: [[2.0, 2.0, 2.0], []]})
    assert mixed.judge_sd == pytest.approx(math.sqrt(2.0 / 3))  # (2 + 0) / ((2 - 1) + (3 - 1))
    assert (mixed.n_turns, mixed.n_values) == (3, 6)


def test_results_are_plain_builtins_and_import_is_cheap() -> None:
    rng = np.random.default_rng(1)
    run = _full_run(rng)
    other = _full_run(rng)
    records = [r.as_dict() for r in compare(run, other, 0.5)]
    records.append(score_interval(run["overall"]).as_dict())
    records.append(judge_noise({1: [[5, 6], [7, 7]], 2: [[3, 3], [4, 6]]}).as_dict())
    for record in records:
        for value in record.values():
            assert type(value) in (str, int, float, bool, type(None)), (record, value)
    assert json.loads(json.dumps(records)) == records
    code = "import sys, pytest_mtbench.comparison; print(sorted({'numpy', 'scipy'} & set(sys.modules)))"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        == "[]\n"
    )
