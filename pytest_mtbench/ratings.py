"""Pairwise results as numbers: win rates, judge position consistency, length bias, Bradley-Terry ratings.

Pure functions over pair results (modes/pairwise.py's `PairResult`, or anything with the same fields) and
`Battle`s; no pytest. numpy and scipy are imported inside the functions, so importing this module stays
cheap, and everything returned is plain Python (`as_dict()` gives str/int/float/bool/None/list/dict; an
interval end that cannot be bounded, e.g. with a single question, is None).

Win rates (`win_rates`) count as FastChat's show_result.py does: per pair result, a win, a tie or a loss
for the model (unparsable results are counted apart and left out); `win_rate` is wins / (wins + ties +
losses) and `adjusted_win_rate` counts a tie as half a win. Their intervals resample questions (both
turns and every opponent of a question move together), with comparison.score_interval's expanded
percentile bootstrap, which holds its coverage down to the 10 questions of a category.

Ratings (`bradley_terry`) are the Bradley-Terry maximum likelihood fit Chatbot Arena computes
(fastchat/serve/monitor/rating_systems.py, `compute_bt`): P(a beats b) = 1 / (1 + base^((R_b - R_a) /
scale)) with base 10 and scale 400, a tie counted as half a win for each side (a fractional outcome in
the logistic log-likelihood), ratings centred on 1000 (the Arena anchors one model instead; only the
offset differs). The fit is Newton's method on the logistic log-likelihood (numpy, batched over
bootstrap samples), with a ridge of 1e-6 that keeps a model that won (or lost) every battle finite (a
warning says so: its rating is then a bound, not an estimate). Intervals are percentile bootstrap
intervals (as the Arena's, at the 2.5% and 97.5% quantiles for 95%); unlike
the Arena, which resamples battles, the default resamples *questions* (all battles of a question move
together), since battles on one question share its difficulty and style and are not independent.

`length_control=True` adds the answers' length difference as a covariate, as the Arena's and
Arena-Hard's style control do: per battle (len_a - len_b) / (len_a + len_b + 1), divided by its root
mean square over the battles (the Arena z-scores it; centring is left out so that swapping a battle's
sides flips the feature, since here the candidate is always model_a); `length_coefficient` is its
log-odds coefficient per unit of that scale, and the ratings are what remains once length is accounted
for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

OVERALL = "overall"
RESAMPLE_UNITS = ("questions", "battles")

# The Arena's Elo scale.
ELO_SCALE = 400.0
ELO_BASE = 10.0
ELO_INIT = 1000.0

_RIDGE = 1e-6  # fixes the common offset (ratings then sum to 0) and keeps separable fits finite
_MAX_STEP = 1.0  # largest change of any parameter per Newton step, in log-base units (400 Elo)
_CELLS_PER_CHUNK = 2_000_000  # bootstrap weights held at once (~16 MB of float64)


class _Game(Protocol):
    verdict: str | None


class PairOutcome(Protocol):
    """What the statistics read from a pair result (modes.pairwise.PairResult has these fields)."""

    question_id: int
    category: str
    turn: int
    model_a: str
    model_b: str
    winner: str | None  # "model_a", "model_b", "tie"; None when unparsable
    consistent: bool | None
    longer_answer_won: bool | None
    length_a: int
    length_b: int
    g1: _Game
    g2: _Game


@dataclass(frozen=True)
class Battle:
    """One comparison of two models on one question: outcome 1 (model_a won), 0.5 (tie), 0 (model_b won)."""

    question_id: int
    model_a: str
    model_b: str
    outcome: float
    category: str = ""
    length_a: int = 0  # characters of the judged answers (for the length-controlled fit)
    length_b: int = 0


_OUTCOME = {"model_a": 1.0, "tie": 0.5, "model_b": 0.0}


def battles_from_results(results: Iterable[PairOutcome], *, per_order: bool = False) -> list[Battle]:
    """Battles from pair results, unparsable ones left out.

    Default: one battle per result with FastChat's combined verdict (a win only when both orders agree).
    `per_order=True`: one battle per order (game), each with its own verdict, as Arena-Hard counts them.
    """
    battles = []
    for r in results:
        if r.winner is None:
            continue
        verdicts = [r.g1.verdict, r.g2.verdict] if per_order else [r.winner]
        for verdict in verdicts:
            battles.append(
                Battle(
                    r.question_id,
                    r.model_a,
                    r.model_b,
                    _OUTCOME[verdict or ""],
                    r.category,
                    r.length_a,
                    r.length_b,
                )
            )
    return battles


# ---- win rates -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WinRate:
    """One model's record against an opponent (or all others) in one group (a category or overall)."""

    group: str
    model: str
    opponent: str | None  # None: every other model
    wins: int
    ties: int
    losses: int
    unparsable: int  # results with an unparsable order: left out of everything else
    n_questions: int
    win_rate: float | None  # wins / (wins + ties + losses), FastChat's win_rate
    win_rate_low: float | None
    win_rate_high: float | None
    adjusted_win_rate: (
        float | None
    )  # (wins + ties / 2) / (wins + ties + losses), FastChat's win_rate_adjusted
    adjusted_low: float | None
    adjusted_high: float | None
    consistency_rate: float | None  # share of parsed results whose two orders gave the same verdict
    longer_answer_won_rate: float | None  # among decided results with answers of different length
    n_length_decided: int  # how many results that rate is over

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def position_consistency(results: Iterable[PairOutcome]) -> tuple[float | None, int]:
    """(share of parsed results whose two orders agree, number of parsed results)."""
    flags = [r.consistent for r in results if r.consistent is not None]
    return (sum(flags) / len(flags) if flags else None), len(flags)


def longer_answer_won(results: Iterable[PairOutcome]) -> tuple[float | None, int]:
    """(share of decided results won by the longer answer, number of such results)."""
    flags = [r.longer_answer_won for r in results if r.longer_answer_won is not None]
    return (sum(flags) / len(flags) if flags else None), len(flags)


def win_rates(
    results: Iterable[PairOutcome],
    model: str,
    opponent: str | None = None,
    *,
    confidence: float = 0.95,
    seed: int = 0,
    resamples: int = 2000,
) -> list[WinRate]:
    """`model`'s wins, ties and losses against `opponent` (None: all others), per category (official
    order, then custom ones) and overall, with question-clustered bootstrap intervals of the win rates."""
    from .stats import category_order

    mine = [
        r
        for r in results
        if model in (r.model_a, r.model_b)
        and r.model_a != r.model_b
        and (opponent is None or opponent in (r.model_a, r.model_b))
    ]
    groups = category_order({r.category for r in mine})
    rows = [
        _win_rate(g, [r for r in mine if r.category == g], model, opponent, confidence, seed, resamples)
        for g in groups
    ]
    rows.append(_win_rate(OVERALL, mine, model, opponent, confidence, seed, resamples))
    return rows


def _win_rate(
    group: str,
    results: Sequence[PairOutcome],
    model: str,
    opponent: str | None,
    confidence: float,
    seed: int,
    resamples: int,
) -> WinRate:
    from .comparison import score_interval

    parsed = [r for r in results if r.winner is not None]
    wins = ties = losses = 0
    plain: dict[int, list[float]] = {}
    adjusted: dict[int, list[float]] = {}
    for r in parsed:
        side = "model_a" if r.model_a == model else "model_b"
        if r.winner == "tie":
            ties += 1
            value = 0.5
        elif r.winner == side:
            wins += 1
            value = 1.0
        else:
            losses += 1
            value = 0.0
        plain.setdefault(r.question_id, []).append(float(value == 1.0))
        adjusted.setdefault(r.question_id, []).append(value)
    consistency, _ = position_consistency(parsed)
    longer, n_longer = longer_answer_won(parsed)
    interval: dict[str, tuple[float | None, float | None, float | None]] = {}
    for name, clusters in (("plain", plain), ("adjusted", adjusted)):
        if not clusters:
            interval[name] = (None, None, None)
            continue
        result = score_interval(clusters, confidence=confidence, seed=seed, resamples=resamples)
        interval[name] = (result.score, _finite(result.low), _finite(result.high))
    return WinRate(
        group=group,
        model=model,
        opponent=opponent,
        wins=wins,
        ties=ties,
        losses=losses,
        unparsable=len(results) - len(parsed),
        n_questions=len({r.question_id for r in parsed}),
        win_rate=interval["plain"][0],
        win_rate_low=interval["plain"][1],
        win_rate_high=interval["plain"][2],
        adjusted_win_rate=interval["adjusted"][0],
        adjusted_low=interval["adjusted"][1],
        adjusted_high=interval["adjusted"][2],
        consistency_rate=consistency,
        longer_answer_won_rate=longer,
        n_length_decided=n_longer,
    )


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


# ---- Bradley-Terry ratings -----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRating:
    """One model's rating on the Elo scale with its bootstrap percentile interval."""

    model: str
    rating: float
    low: float
    high: float
    n_battles: int


@dataclass(frozen=True)
class Ratings:
    """Bradley-Terry ratings of every model (best first), and how they were obtained."""

    ratings: list[ModelRating]
    n_battles: int
    n_questions: int
    resample: str  # "questions" or "battles"
    resamples: int
    confidence: float
    length_coefficient: float | None = None  # log-odds per RMS of the normalised length difference
    length_low: float | None = None
    length_high: float | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def by_model(self) -> dict[str, ModelRating]:
        return {r.model: r for r in self.ratings}


def bradley_terry(
    battles: Sequence[Battle],
    *,
    length_control: bool = False,
    resample: str = "questions",
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    scale: float = ELO_SCALE,
    base: float = ELO_BASE,
    init_rating: float = ELO_INIT,
) -> Ratings:
    """Bradley-Terry ratings (maximum likelihood, Elo scale) with percentile bootstrap intervals.

    `resample="questions"` (default) resamples questions with all their battles; `"battles"` resamples
    battles one by one, as the Arena does. The models' battles must connect them all (else their
    ratings are not comparable): a ValueError says which models are cut off.
    """
    import numpy as np

    if resample not in RESAMPLE_UNITS:
        raise ValueError(f"resample must be one of {', '.join(RESAMPLE_UNITS)}, got {resample!r}")
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0.5 and 1, got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    battles, models = _checked(battles)
    design, outcomes, rows = _design(battles, models, length_control, base)
    question_ids = sorted({b.question_id for b in battles})
    counts = np.bincount(rows, minlength=len(outcomes)).astype(float)[None, :]
    fitted = _fit(design, outcomes, counts, len(models))[0]
    boot = _bootstrap(design, outcomes, rows, battles, question_ids, len(models), resample, resamples, seed)
    alpha = 1.0 - confidence
    m = len(models)
    elo, elo_boot = fitted[:m] * scale + init_rating, boot[:, :m] * scale + init_rating
    low, high = np.quantile(elo_boot, [alpha / 2, 1 - alpha / 2], axis=0)
    counts = {name: 0 for name in models}
    for b in battles:
        counts[b.model_a] += 1
        counts[b.model_b] += 1
    ratings = sorted(
        (
            ModelRating(name, float(elo[i]), float(low[i]), float(high[i]), counts[name])
            for i, name in enumerate(models)
        ),
        key=lambda r: -r.rating,
    )
    length: tuple[float | None, float | None, float | None] = (None, None, None)
    if length_control:
        coef_low, coef_high = np.quantile(boot[:, m], [alpha / 2, 1 - alpha / 2])
        length = (float(fitted[m]), float(coef_low), float(coef_high))
    return Ratings(
        ratings=ratings,
        n_battles=len(battles),
        n_questions=len(question_ids),
        resample=resample,
        resamples=resamples,
        confidence=confidence,
        length_coefficient=length[0],
        length_low=length[1],
        length_high=length[2],
        warnings=_separation_warnings(models, battles),
    )


def _checked(battles: Sequence[Battle]) -> tuple[list[Battle], list[str]]:
    """The battles between two different models, and the models (sorted); ValueError when unusable."""
    battles = [b for b in battles if b.model_a != b.model_b]
    for b in battles:
        if not 0.0 <= b.outcome <= 1.0:
            raise ValueError(f"battle outcome must lie in [0, 1] (1: model_a won, 0.5: tie), got {b.outcome}")
    models = sorted({b.model_a for b in battles} | {b.model_b for b in battles})
    if len(models) < 2:
        raise ValueError("Bradley-Terry ratings need battles between at least two models")
    _check_connected(models, battles)
    return battles, models


def _check_connected(models: Sequence[str], battles: Sequence[Battle]) -> None:
    parent = {m: m for m in models}

    def root(m: str) -> str:
        while parent[m] != m:
            parent[m] = parent[parent[m]]
            m = parent[m]
        return m

    for b in battles:
        parent[root(b.model_a)] = root(b.model_b)
    groups: dict[str, list[str]] = {}
    for m in models:
        groups.setdefault(root(m), []).append(m)
    if len(groups) > 1:
        parts = "; ".join(", ".join(g) for g in groups.values())
        raise ValueError(
            f"the battles do not connect all models, so their ratings are not comparable: {parts}"
        )


def _separation_warnings(models: Sequence[str], battles: Sequence[Battle]) -> list[str]:
    scores: dict[str, list[float]] = {m: [] for m in models}
    for b in battles:
        scores[b.model_a].append(b.outcome)
        scores[b.model_b].append(1.0 - b.outcome)
    warnings = []
    for m, values in scores.items():
        if all(v == 1.0 for v in values):
            warnings.append(
                f"{m} won every battle: its rating has no finite maximum; the one shown is a lower bound"
            )
        elif all(v == 0.0 for v in values):
            warnings.append(
                f"{m} lost every battle: its rating has no finite minimum; the one shown is an upper bound"
            )
    return warnings


def _design(
    battles: Sequence[Battle], models: Sequence[str], length_control: bool, base: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (design row, outcome) pairs, and which of them each battle is.

    A design row holds +ln(base) for model_a, -ln(base) for model_b (so the parameters are ratings in
    log-base units) and, with length control, the standardised length difference.
    """
    import numpy as np

    index = {m: i for i, m in enumerate(models)}
    n, m = len(battles), len(models)
    full = np.zeros((n, m + length_control + 1))
    rows = np.arange(n)
    full[rows, [index[b.model_a] for b in battles]] = math.log(base)
    full[rows, [index[b.model_b] for b in battles]] = -math.log(base)
    if length_control:
        la = np.array([b.length_a for b in battles], dtype=float)
        lb = np.array([b.length_b for b in battles], dtype=float)
        feature = (la - lb) / (la + lb + 1.0)  # +1 as the Arena's style control: empty answers stay finite
        # Scaled, not centred: swapping a battle's sides must flip the feature. The Arena's sides are
        # random, so its centring removes ~nothing; here the candidate is always model_a, and a centred
        # feature would add an intercept the ratings cannot absorb.
        spread = math.sqrt(float(np.mean(feature**2)))
        full[:, m] = feature / spread if spread > 0 else 0.0
    full[:, -1] = [b.outcome for b in battles]
    distinct, inverse = np.unique(full, axis=0, return_inverse=True)
    return distinct[:, :-1], distinct[:, -1], inverse.reshape(-1)


def _fit(
    design: np.ndarray, outcomes: np.ndarray, weights: np.ndarray, n_models: int, max_iter: int = 100
) -> np.ndarray:
    """Maximum likelihood parameters for each row of `weights` (how often each design row counts).

    Newton's method on the logistic log-likelihood with fractional outcomes, all weight rows at once:
    the Hessians are one matrix product with the rows' outer products, so the bootstrap is a few BLAS
    calls per iteration. The likelihood does not change when every rating moves by the same amount, so
    the ratings are kept centred (sum 0) and that direction is given unit curvature, which keeps the
    Newton systems well conditioned. Steps are capped at `_MAX_STEP` per parameter, which keeps
    near-separable samples from overshooting.
    """
    import numpy as np
    from scipy.special import expit

    n_rows, p = design.shape
    outer = (design[:, :, None] * design[:, None, :]).reshape(n_rows, p * p)
    params = np.zeros((weights.shape[0], p))
    fixed = _RIDGE * np.eye(p)
    fixed[:n_models, :n_models] += 1.0 / n_models  # curvature along the free common offset
    for _ in range(max_iter):
        prob = expit(params @ design.T)
        grad = (weights * (outcomes - prob)) @ design - _RIDGE * params
        hess = ((weights * prob * (1.0 - prob)) @ outer).reshape(-1, p, p) + fixed
        step = np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
        size = np.abs(step).max(axis=1)
        params += step * np.minimum(1.0, _MAX_STEP / np.maximum(size, 1e-300))[:, None]
        params[:, :n_models] -= params[:, :n_models].mean(axis=1, keepdims=True)
        if size.max() < 1e-10:
            break
    return params


def _bootstrap(
    design: np.ndarray,
    outcomes: np.ndarray,
    rows: np.ndarray,
    battles: Sequence[Battle],
    question_ids: Sequence[int],
    n_models: int,
    resample: str,
    resamples: int,
    seed: int,
) -> np.ndarray:
    """Fitted parameters for `resamples` bootstrap samples (one row each)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n_rows = len(outcomes)
    if resample == "questions":
        position = {q: i for i, q in enumerate(question_ids)}
        n_q = len(question_ids)
        per_question = np.zeros((n_q, n_rows))  # how often each design row occurs in each question
        np.add.at(per_question, ([position[b.question_id] for b in battles], rows), 1.0)
    else:
        share = np.bincount(rows, minlength=n_rows) / len(battles)
    chunk = max(1, _CELLS_PER_CHUNK // max(n_rows, 1))
    fitted = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        if resample == "questions":
            picks = rng.integers(0, n_q, size=(size, n_q))
            offsets = (picks + n_q * np.arange(size)[:, None]).ravel()
            multiplicity = np.bincount(offsets, minlength=size * n_q).reshape(size, n_q).astype(float)
            weights = multiplicity @ per_question
        else:
            weights = rng.multinomial(len(battles), share, size=size).astype(float)
        fitted.append(_fit(design, outcomes, weights, n_models))
    return np.concatenate(fitted)


def fit_ratings(
    battles: Sequence[Battle],
    *,
    scale: float = ELO_SCALE,
    base: float = ELO_BASE,
    init_rating: float = ELO_INIT,
) -> dict[str, float]:
    """The maximum likelihood ratings alone (no interval): model -> Elo-scale rating."""
    import numpy as np

    battles, models = _checked(battles)
    design, outcomes, rows = _design(battles, models, False, base)
    counts = np.bincount(rows, minlength=len(outcomes)).astype(float)[None, :]
    fitted = _fit(design, outcomes, counts, len(models))[0]
    return {name: float(fitted[i] * scale + init_rating) for i, name in enumerate(models)}


__all__ = [
    "Battle",
    "ModelRating",
    "PairOutcome",
    "Ratings",
    "WinRate",
    "battles_from_results",
    "bradley_terry",
    "fit_ratings",
    "longer_answer_won",
    "position_consistency",
    "win_rates",
]
