"""Simulated pairwise battles with known strengths, for the ratings tests and benchmark (numpy, no pytest).

Each question draws, per model, a question effect (SD `question_sd` Elo points) shared by all of that
question's turns and opponents: the correlation that makes battles of one question not independent.
A battle of a and b then has P = 1 / (1 + 10^(-(d + length term) / 400)) with d the difference of
strength plus question effects; a share of the probability mass near 0.5 becomes ties, split so that the
expected outcome (win 1, tie 0.5, loss 0) stays exactly P, the quantity a tie-as-half-win Bradley-Terry
fit estimates. Answer lengths are drawn per model around its `verbosity` (characters); `length_bias` adds
that many log-odds per unit of (len_a - len_b) / (len_a + len_b + 1) to the judge's preference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ..ratings import Battle


def simulate_battles(
    strengths: Mapping[str, float],
    *,
    n_questions: int = 80,
    turns: int = 2,
    orders: int = 1,
    question_sd: float = 0.0,
    tie_share: float = 0.3,
    verbosity: Mapping[str, float] | None = None,
    length_bias: float = 0.0,
    baseline: str | None = None,
    seed: int = 0,
) -> list[Battle]:
    """Battles of every pair of models (or of each model against `baseline`) on every question and turn,
    `orders` battles per (question, turn, pair) (2: one per order, as Arena-Hard counts games)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    models = list(strengths)
    if baseline is not None:
        pairs = [(m, baseline) for m in models if m != baseline]
    else:
        pairs = [(a, b) for i, a in enumerate(models) for b in models[i + 1 :]]
    verbosity = verbosity or {m: 1000.0 for m in models}
    battles = []
    for q in range(n_questions):
        effect = {m: rng.normal(0.0, question_sd) if question_sd else 0.0 for m in models}
        for _turn in range(turns):
            length = {m: max(1.0, rng.normal(verbosity[m], 0.2 * verbosity[m])) for m in models}
            for a, b in pairs:
                la, lb = int(length[a]), int(length[b])
                logit = math.log(10) * (strengths[a] + effect[a] - strengths[b] - effect[b]) / 400.0
                logit += length_bias * (la - lb) / (la + lb + 1)
                p = 1.0 / (1.0 + math.exp(-logit))
                tie = tie_share * 2 * min(p, 1 - p)
                for _ in range(orders):
                    u = rng.random()
                    outcome = 1.0 if u < p - tie / 2 else (0.5 if u < p + tie / 2 else 0.0)
                    battles.append(Battle(1000 + q, a, b, outcome, "sim", la, lb))
    return battles
