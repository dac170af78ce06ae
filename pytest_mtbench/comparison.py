"""Baseline comparison: did a new run get worse than a saved baseline by more than a margin?

Pure functions over plain numbers (no pytest); numpy and scipy are imported inside the functions, so
importing this module stays cheap. Everything returned is plain Python (float/int/str/bool/None/list/dict,
with ``math.inf`` for an unbounded interval end), safe to send across processes as JSON.

Data model. A *group* (a category, or "overall") of one run is ``{question_id: values}``, the values being
every scored judgment of that question (both turns; K values per turn when the judge is repeated K times;
unscored turns simply absent). A group's score is the pooled mean of its values, as the headline score is.

Method for `compare`: a paired sign-flip (permutation) test over questions, inverted into an interval.
Per paired question i, ``d_i = mean(new_i) - mean(baseline_i)`` with weight ``w_i`` = the question's mean
number of values in the two runs, so ``D = sum(w d) / sum(w)`` is the difference of the pooled scores.
Flipping the sign of a subset F of the shifted differences ``d_i - delta`` tests ``H0: difference = delta``;
that p-value is the share of subsets whose weighted mean of d is >= delta (the empty subset, i.e. the
observed labelling, always counts), so the confidence interval is a pair of order statistics of these
subset means and needs no root search. Why this rather than a bootstrap:

- categories have 10 questions, so all 2**10 sign patterns are enumerated (exact, no Monte Carlo error;
  up to ``EXACT_MAX_QUESTIONS``); with more questions a Monte Carlo p-value counting the observed labelling
  is still a valid test at any number of resamples. A percentile bootstrap on 10 clusters undercovers
  (plug-in variance (n-1)/n, normal instead of t quantiles), and Holm over 9 groups asks for 0.6% tails
  where 2000 resamples of 10 clusters leave a dozen coarse points. Measured on simulated integer scores
  (tests/test_comparison.py), a nominal 95% interval covers 97% at 10 questions (exact on half-point
  differences, so ties make it conservative) and 95-96% at 80; the percentile bootstrap covers 91% at 10.
- the only assumption is that a question's difference is symmetric about the shift, which holds exactly
  when nothing changed (same model, same judge: the two runs' labels are exchangeable within a question);
  no normality, and nothing like BCa's jackknife that degenerates on bounded integer scores with ties.
- unchanged answers give differences of exactly 0: they weigh nothing under either sign. Identical runs
  give a difference of 0.0, p = 1 and the interval [0, 0].

Known limit: with 10 questions and sparse changes (most differences exactly 0, a few large ones of one
sign) the differences are skewed; the bound facing the changes then undercovers (88% for a nominal 97.5%
lower bound when 4 of 10 questions drop by 1 point) and the other overcovers. For drops this makes
"regressed" rarer, never commoner, but "unchanged" can be read too early; the bootstrap does no better
(87% two-sided there). Smallest p at 10 questions is 1/1024, so after Holm over 9 groups a category is
flagged only when nearly all of its questions dropped by more than the margin.

`score_interval` (one run, no null to flip against) is a question-clustered bootstrap with Hesterberg's
expanded percentile (tail ``Phi(-sqrt(n/(n-1)) * t_{n-1, 1-alpha/2})``), which corrects the small-n
undercoverage of the plain percentile interval.

Verdicts, with margin m >= 0 ("a drop of up to m, inclusive, is tolerated") and the closed interval
[low, high]:

- ``regressed``    high < -m            (the whole interval lies below -m; high == -m is not regressed)
- ``improved``     low > m              (the whole interval lies above +m; low == m is not improved)
- ``unchanged``    -m <= low <= m       (no drop beyond m; this includes an interval that straddles +m:
                                          non-inferior but not shown better, which is all the gate asks)
- ``inconclusive`` low < -m <= high     (a drop beyond m is neither shown nor ruled out)

Holm and the interval agree. The family is every group compared (8 categories + overall), and the gate
is one-sided at ``alpha = 1 - confidence``: "regressed" claims, with that confidence after Holm, a drop of
more than m. Each group's p-value is the one-sided sign-flip p for ``H0: difference >= -m``; Holm's
step-down adjusts them across the family. A group's interval is computed at the level Holm tested it at:
each bound is a one-sided ``1 - alpha / (G - r)`` bound, for family size G and r the group's rank among the
sorted p-values (the first rank of a tie), or the rank where Holm stopped when the group was not rejected.
Hence, exactly and through one float expression shared by both paths,
``verdict == "regressed"  <=>  adjusted_p_value < 1 - confidence  <=>  high < -margin``.
Two one-sided bounds make [low, high] a ``1 - 2 alpha / (G - r)`` interval (``interval_confidence``), the
convention of equivalence and non-inferiority tests (a 90% interval for a 5% test), so that "unchanged"
and "improved" are level-alpha claims too. Holm only widens intervals, so those readings get more careful.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

Clusters = Mapping[int, Sequence[float]]
"""One run's group: question id -> every scored value of that question."""

REGRESSED = "regressed"
INCONCLUSIVE = "inconclusive"
UNCHANGED = "unchanged"
IMPROVED = "improved"
VERDICTS: tuple[str, ...] = (REGRESSED, INCONCLUSIVE, UNCHANGED, IMPROVED)

EXACT_MAX_QUESTIONS = 12  # up to 2**12 sign patterns are all enumerated (no Monte Carlo error)
_BATCH_CELLS = 4_000_000  # subset means held at once by `compare_batch` (~32 MB of float64)


@dataclass(frozen=True)
class ScoreInterval:
    """One run's group score with its question-clustered bootstrap interval."""

    score: float
    low: float  # -inf/inf with a single question: nothing to resample
    high: float
    n_questions: int
    n_values: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    """One group of a new run against the same group of the baseline, on the questions both scored."""

    name: str
    n_questions: int  # questions with at least one value in both runs
    baseline_score: float | None  # pooled mean over those questions; None when there are none
    new_score: float | None
    difference: float | None  # new - baseline, weighted mean of per-question differences
    low: float  # one-sided lower bound at 1 - alpha / (G - r), alpha = 1 - confidence; -inf when unbounded
    high: float  # the matching upper bound; the verdict is read from these two
    interval_confidence: float  # 1 - 2 alpha / (G - r): how often [low, high] covers the true difference
    p_value: float  # one-sided, for H0: difference >= -margin
    adjusted_p_value: float  # Holm across the groups compared: < alpha exactly when regressed
    margin: float
    verdict: str  # one of VERDICTS

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class JudgeNoise:
    """How much of a run's score uncertainty is the judge's own (from K repeated judgings per turn)."""

    n_questions: int
    n_turns: int  # turns with at least one score
    n_values: int
    repeats: int  # K, the most judgings of any one turn
    judge_sd: float | None  # pooled within-turn SD of the judge; None when no turn was judged twice
    score_sd_from_judge: float | None  # judge_sd / sqrt(n_values): the score's SD from judge noise alone
    score_sd: float | None  # question-clustered SD of the score (everything); None below 2 questions
    judge_share: float | None  # score_sd_from_judge**2 / score_sd**2, capped at 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def classify(low: float, high: float, margin: float) -> str:
    """The verdict for a closed interval [low, high] of new - baseline (rules in the module docstring)."""
    if math.isnan(low) or math.isnan(high) or low > high:
        raise ValueError(f"not an interval: [{low}, {high}]")
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if high < -margin:
        return REGRESSED
    if low > margin:
        return IMPROVED
    if low >= -margin:
        return UNCHANGED
    return INCONCLUSIVE


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values in the input's order (monotone in sorted order, capped at 1)."""
    import numpy as np

    p = np.asarray(list(p_values), dtype=float)
    if p.size == 0:
        return []
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {list(p_values)}")
    adjusted, _, _ = _holm(p[None, :])
    return [float(x) for x in adjusted[0]]


def score_interval(
    clusters: Clusters, *, confidence: float = 0.95, seed: int = 0, resamples: int = 2000
) -> ScoreInterval:
    """The pooled mean of all values with a bootstrap interval that resamples questions (not turns)."""
    import numpy as np

    alpha = _alpha(confidence)
    sums, counts = [], []
    for values in clusters.values():
        if len(values):
            sums.append(float(sum(values)))
            counts.append(len(values))
    if not counts:
        raise ValueError("no scored values to average")
    n = len(counts)
    score = sum(sums) / sum(counts)
    if n < 2:
        return ScoreInterval(score, -math.inf, math.inf, n, sum(counts))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(_positive(resamples), n))
    boot = np.asarray(sums)[picks].sum(axis=1) / np.asarray(counts)[picks].sum(axis=1)
    tail = _expanded_tail(alpha, n)
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    return ScoreInterval(score, float(low), float(high), n, sum(counts))


def compare(
    baseline_groups: Mapping[str, Clusters],
    new_groups: Mapping[str, Clusters],
    margins: Mapping[str, float] | float,
    *,
    confidence: float = 0.95,
    seed: int = 0,
    resamples: int = 2000,
) -> list[Comparison]:
    """Compare every group present in both runs (in `new_groups`' order), Holm across them.

    `margins` is one margin per group, or one float for all. Only questions with a value in both runs are
    compared. `resamples` random sign patterns are drawn for groups above `EXACT_MAX_QUESTIONS` questions,
    from an RNG seeded by (`seed`, group name): adding or dropping a group never changes another's draw.
    """
    import numpy as np

    alpha = _gate_alpha(confidence)
    paired: list[tuple[str, float, list[tuple[Sequence[float], Sequence[float]]]]] = []
    for name in [name for name in new_groups if name in baseline_groups]:
        base, new = baseline_groups[name], new_groups[name]
        ids = sorted(q for q in base.keys() & new.keys() if len(base[q]) and len(new[q]))
        paired.append((name, _margin(margins, name), [(base[q], new[q]) for q in ids]))
    tested = []
    for name, margin, questions in paired:
        if questions:
            base_mean = np.array([sum(b) / len(b) for b, _ in questions], dtype=float)
            new_mean = np.array([sum(n) / len(n) for _, n in questions], dtype=float)
            weights = np.array([(len(b) + len(n)) / 2.0 for b, n in questions])
            tested.append(_PairedGroup(name, (new_mean - base_mean)[None, :], weights, margin))
    gate = _gate(tested, alpha, seed, resamples)
    results = []
    for name, margin, questions in paired:
        if not questions:
            results.append(_untested(name, margin))
            continue
        baseline_score = sum(sum(b) for b, _ in questions) / sum(len(b) for b, _ in questions)
        new_score = sum(sum(n) for _, n in questions) / sum(len(n) for _, n in questions)
        fields = {key: value[0] for key, value in gate[name].items()}
        results.append(_comparison(name, len(questions), baseline_score, new_score, margin, alpha, fields))
    return results


def compare_batch(
    baseline: Any,
    new: Any,
    groups: Mapping[str, Sequence[int]],
    margins: Mapping[str, float] | float,
    *,
    confidence: float = 0.95,
    seed: int = 0,
    resamples: int = 2000,
) -> list[list[Comparison]]:
    """`compare` for many pairs of complete runs at once (simulations): one list per pair.

    `baseline` and `new` are arrays ``(pairs, questions, values_per_question)`` with every value present;
    `groups` maps a group name to question indices along axis 1 (which serve as question ids). The sign
    patterns are drawn once per group and reused for every pair, so pair i gives exactly what `compare`
    gives for it with the same seed.
    """
    import numpy as np

    alpha = _gate_alpha(confidence)
    base = np.asarray(baseline, dtype=float)
    newer = np.asarray(new, dtype=float)
    if base.ndim != 3 or base.shape != newer.shape:
        raise ValueError(f"expected two arrays (pairs, questions, values): {base.shape}, {newer.shape}")
    n_values = float(base.shape[2])
    names = list(groups)
    indices = {name: sorted(set(int(i) for i in groups[name])) for name in names}
    diffs = newer.mean(axis=2) - base.mean(axis=2)
    tested = [
        _PairedGroup(
            name, diffs[:, indices[name]], np.full(len(indices[name]), n_values), _margin(margins, name)
        )
        for name in names
        if indices[name]
    ]
    gate = _gate(tested, alpha, seed, resamples)
    base_scores = {name: base[:, indices[name], :].mean(axis=(1, 2)) for name in names if indices[name]}
    new_scores = {name: newer[:, indices[name], :].mean(axis=(1, 2)) for name in names if indices[name]}
    out = []
    for pair in range(base.shape[0]):
        row = []
        for name in names:
            margin = _margin(margins, name)
            if not indices[name]:
                row.append(_untested(name, margin))
                continue
            fields = {key: value[pair] for key, value in gate[name].items()}
            row.append(
                _comparison(
                    name,
                    len(indices[name]),
                    float(base_scores[name][pair]),
                    float(new_scores[name][pair]),
                    margin,
                    alpha,
                    fields,
                )
            )
        out.append(row)
    return out


def judge_noise(repeats: Mapping[int, Sequence[Sequence[float]]]) -> JudgeNoise:
    """The judge's own spread from repeated judgings: question id -> per turn, the K scores of that turn.

    Formulas (N values in all, question q holding N_q values summing to S_q, mu = sum(S_q) / N):

    - ``judge_sd**2 = sum over turns of sum_k (x_tk - mean_t)**2 / sum over turns of (K_t - 1)``, over the
      turns judged at least twice (the pooled within-turn variance);
    - ``score_sd_from_judge**2 = judge_sd**2 / N``: the score is sum(x) / N and each value carries its own
      independent judge noise (for K repeats of T turns, judge_sd**2 / (K T));
    - ``score_sd**2 = Q / (Q - 1) * sum_q (S_q - mu N_q)**2 / N**2``: the linearised variance of a pooled
      mean over Q question clusters (answers, question difficulty and the judge together);
    - ``judge_share = min(1, score_sd_from_judge**2 / score_sd**2)``; None when either is unknown or zero.
    """
    within_ss = 0.0
    within_df = 0
    n_turns = 0
    most = 0
    sums: list[float] = []
    counts: list[int] = []
    for turns in repeats.values():
        total, count = 0.0, 0
        for scores in turns:
            values = [float(x) for x in scores]
            if not values:
                continue
            n_turns += 1
            most = max(most, len(values))
            mean = sum(values) / len(values)
            within_ss += sum((x - mean) ** 2 for x in values)
            within_df += len(values) - 1
            total += sum(values)
            count += len(values)
        if count:
            sums.append(total)
            counts.append(count)
    n_values = sum(counts)
    judge_sd = math.sqrt(within_ss / within_df) if within_df else None
    score_sd_from_judge = judge_sd / math.sqrt(n_values) if judge_sd is not None else None
    score_sd = None
    if len(counts) >= 2:
        mu = sum(sums) / n_values
        q = len(counts)
        spread = sum((s - mu * c) ** 2 for s, c in zip(sums, counts))
        score_sd = math.sqrt(q / (q - 1) * spread) / n_values
    share = None
    if score_sd_from_judge is not None and score_sd:
        share = min(1.0, score_sd_from_judge**2 / score_sd**2)
    return JudgeNoise(len(counts), n_turns, n_values, most, judge_sd, score_sd_from_judge, score_sd, share)


# --- internals ------------------------------------------------------------------------------------------


def _alpha(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    return 1.0 - confidence


def _gate_alpha(confidence: float) -> float:
    if not 0.5 < confidence < 1.0:
        raise ValueError(
            f"confidence must lie strictly between 0.5 and 1 (one-sided bounds), got {confidence}"
        )
    return 1.0 - confidence


def _positive(resamples: int) -> int:
    if int(resamples) < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    return int(resamples)


def _margin(margins: Mapping[str, float] | float, name: str) -> float:
    if isinstance(margins, Mapping):
        if name not in margins:
            raise ValueError(f"no margin given for group {name!r}")
        margin = float(margins[name])
    else:
        margin = float(margins)
    if not margin >= 0:
        raise ValueError(f"the margin of {name!r} must be >= 0, got {margin}")
    return margin


def _expanded_tail(alpha: float, n: int) -> float:
    """Hesterberg's expanded-percentile tail for n clusters (alpha / 2 as n grows)."""
    from scipy.special import ndtr, stdtrit

    return float(ndtr(-math.sqrt(n / (n - 1)) * stdtrit(n - 1, 1.0 - alpha / 2.0)))


def _group_rng(seed: int, name: str) -> np.random.Generator:
    import numpy as np

    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return np.random.default_rng(np.random.SeedSequence([int(seed), int.from_bytes(digest, "little")]))


def _sign_patterns(n: int, resamples: int, seed: int, name: str) -> tuple[np.ndarray, int, int]:
    """Flipped subsets as a bool array (patterns, n) without empty rows, the empty count, the total.

    All 2**n subsets when n is small; else the observed labelling (empty) plus `resamples` random ones.
    """
    import numpy as np

    resamples = _positive(resamples)
    if n <= EXACT_MAX_QUESTIONS or 2**n <= resamples + 1:
        codes = np.arange(2**n, dtype=np.int64)
        flips = ((codes[:, None] >> np.arange(n)) & 1).astype(bool)
    else:
        flips = _group_rng(seed, name).random((resamples, n)) < 0.5
        flips = np.vstack([np.zeros((1, n), dtype=bool), flips])
    nonempty = flips.any(axis=1)
    return flips[nonempty], int(flips.shape[0] - nonempty.sum()), int(flips.shape[0])


def _holm(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Holm along axis 1 of (runs, groups): adjusted p-values, the sort order, and per sorted position the
    first position of its tie (equal p-values share one Holm level)."""
    import numpy as np

    n_groups = p.shape[1]
    order = np.argsort(p, axis=1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=1)
    scaled = np.minimum(1.0, (n_groups - np.arange(n_groups)) * ranked)
    adjusted_ranked = np.maximum.accumulate(scaled, axis=1)
    adjusted = np.empty_like(adjusted_ranked)
    np.put_along_axis(adjusted, order, adjusted_ranked, axis=1)
    starts = np.ones(ranked.shape, dtype=bool)
    starts[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
    tie_start = np.maximum.accumulate(np.where(starts, np.arange(n_groups), 0), axis=1)
    return adjusted, order, tie_start


def _order_index(total: int, n_groups: int, alpha: float) -> np.ndarray:
    """Per Holm factor f (the index, 1..n_groups): the least count c of patterns with mean >= delta at which
    delta is kept, ``min(1, f * (c / total)) >= alpha``, written as the p-value and Holm write it."""
    import numpy as np

    counts = np.arange(1, total + 1)
    table = np.zeros(n_groups + 1, dtype=np.int64)
    for factor in range(1, n_groups + 1):
        kept = np.minimum(1.0, factor * (counts / total)) >= alpha
        table[factor] = counts[np.argmax(kept)]  # kept at counts == total, since alpha < 1
    return table


@dataclass(frozen=True)
class _PairedGroup:
    """One group's input to `_gate`: per-question differences for many runs and the question weights."""

    name: str
    diffs: np.ndarray  # (runs, questions): mean(new) - mean(baseline) per question
    weights: np.ndarray  # (questions,): mean number of values per question in the two runs
    margin: float


@dataclass(frozen=True)
class _FlipSet:
    """A group's sign patterns, weighted, ready to turn differences into subset means."""

    weighted: np.ndarray  # (non-empty patterns, questions): flipped questions' weights, 0 elsewhere
    denominators: np.ndarray  # (non-empty patterns,)
    n_empty: int  # patterns that flip nothing (the observed labelling): they count in both tails
    total: int  # all patterns, empty ones included
    order_index: np.ndarray  # per Holm factor, the rank of the interval's bounds (see `_order_index`)


_GATE_FIELDS = ("difference", "low", "high", "p_value", "adjusted", "factor")


def _gate(groups: list[_PairedGroup], alpha: float, seed: int, resamples: int) -> dict[str, dict[str, Any]]:
    """Sign-flip p-values, Holm across the groups, and each group's interval at its Holm level.

    Returns per group name arrays over the runs (axis 0 of `diffs`) for the keys in `_GATE_FIELDS`.
    """
    import numpy as np

    if not groups:
        return {}
    n_runs, n_groups = groups[0].diffs.shape[0], len(groups)
    flip_sets = []
    for group in groups:
        flips, n_empty, total = _sign_patterns(group.diffs.shape[1], resamples, seed, group.name)
        weighted = flips * group.weights
        order_index = _order_index(total, n_groups, alpha)
        flip_sets.append(_FlipSet(weighted, weighted.sum(axis=1), n_empty, total, order_index))
    out = {group.name: {key: np.empty(n_runs) for key in _GATE_FIELDS} for group in groups}
    chunk = max(1, _BATCH_CELLS // max(1, sum(f.weighted.shape[0] for f in flip_sets)))
    for start in range(0, n_runs, chunk):
        part = slice(start, min(n_runs, start + chunk))
        means = [(f.weighted @ g.diffs[part].T) / f.denominators[:, None] for g, f in zip(groups, flip_sets)]
        # one-sided p for H0: difference >= -margin, the share of patterns whose mean is >= -margin
        p = np.stack(
            [
                (f.n_empty + (m >= -g.margin).sum(axis=0)) / f.total
                for g, f, m in zip(groups, flip_sets, means)
            ],
            axis=1,
        )
        adjusted, order, tie_start = _holm(p)
        n_rejected = (np.take_along_axis(adjusted, order, axis=1) < alpha).sum(axis=1)
        factor = np.empty_like(tie_start)
        np.put_along_axis(factor, order, n_groups - np.minimum(tie_start, n_rejected[:, None]), axis=1)
        for index, (group, flip_set, subset_means) in enumerate(zip(groups, flip_sets, means)):
            low, high = _bounds(subset_means, flip_set, factor[:, index])
            record = out[group.name]
            record["difference"][part] = group.diffs[part] @ group.weights / group.weights.sum()
            record["low"][part], record["high"][part] = low, high
            record["p_value"][part], record["adjusted"][part] = p[:, index], adjusted[:, index]
            record["factor"][part] = factor[:, index]
    return out


def _bounds(
    subset_means: np.ndarray, flip_set: _FlipSet, factor: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The k-th smallest and k-th largest subset mean per run (empty patterns ranking beyond both ends)."""
    import numpy as np

    beyond = flip_set.order_index[factor] - flip_set.n_empty  # 1-based rank among the non-empty means
    size = subset_means.shape[0]
    if size == 0:
        return np.full(beyond.shape, -np.inf), np.full(beyond.shape, np.inf)
    low_at = np.clip(beyond - 1, 0, size - 1)
    high_at = np.clip(size - beyond, 0, size - 1)
    ranked = np.partition(subset_means, np.unique(np.concatenate([low_at, high_at])), axis=0)
    bounded = beyond >= 1
    low = np.where(bounded, np.take_along_axis(ranked, low_at[None, :], axis=0)[0], -np.inf)
    high = np.where(bounded, np.take_along_axis(ranked, high_at[None, :], axis=0)[0], np.inf)
    return low, high


def _untested(name: str, margin: float) -> Comparison:
    """A group with no question scored in both runs: nothing to test, so no verdict either way."""
    return Comparison(
        name=name,
        n_questions=0,
        baseline_score=None,
        new_score=None,
        difference=None,
        low=-math.inf,
        high=math.inf,
        interval_confidence=1.0,
        p_value=1.0,
        adjusted_p_value=1.0,
        margin=margin,
        verdict=INCONCLUSIVE,
    )


def _comparison(
    name: str,
    n_questions: int,
    baseline_score: float,
    new_score: float,
    margin: float,
    alpha: float,
    fields: Mapping[str, Any],
) -> Comparison:
    low, high = float(fields["low"]), float(fields["high"])
    return Comparison(
        name=name,
        n_questions=n_questions,
        baseline_score=float(baseline_score),
        new_score=float(new_score),
        difference=float(fields["difference"]),
        low=low,
        high=high,
        interval_confidence=1.0 - 2.0 * alpha / float(fields["factor"]),
        p_value=float(fields["p_value"]),
        adjusted_p_value=float(fields["adjusted"]),
        margin=margin,
        verdict=classify(low, high, margin),
    )
