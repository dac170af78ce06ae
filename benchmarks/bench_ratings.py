"""How long do Bradley-Terry ratings with their bootstrap take for 10 models on full MT-Bench?

Simulated all-pairs battles: 10 models (strengths 50 Elo apart, a question effect of SD 100 Elo per
model and question), 80 questions x 2 turns x 45 pairs x 2 orders = 14,400 judge verdicts, which
FastChat's rule combines into 7,200 battles. Times `pytest_mtbench.ratings.bradley_terry` (1000 bootstrap
samples, batched Newton) on both, resampling questions (the default) and battles, and with the length
covariate; beside it, in the same run, the Arena's way of fitting each bootstrap sample (scipy L-BFGS-B
on the distinct (pair, outcome) rows with their counts, one sample after another, no process pool),
written out here from rating_systems.py's compute_bootstrap_bt. Prints the fastest of 3 runs (the
machine may be shared), wall and CPU seconds, and the ratio of CPU times.

    .venv/bin/python benchmarks/bench_ratings.py [--resamples 1000] [--seed 0] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from pytest_mtbench.ratings import Battle, Ratings, bradley_terry
from pytest_mtbench.testing.battles import simulate_battles

MODELS = 10
QUESTIONS = 80
TURNS = 2
ORDERS = 2


def combine_orders(per_order: list[Battle]) -> list[Battle]:
    """FastChat's rule on consecutive order pairs: a win only when both orders agree, else a tie."""
    combined = []
    for first, second in zip(per_order[::2], per_order[1::2]):
        outcome = first.outcome if first.outcome == second.outcome else 0.5
        combined.append(
            Battle(
                first.question_id,
                first.model_a,
                first.model_b,
                outcome,
                first.category,
                first.length_a,
                first.length_b,
            )
        )
    return combined


def arena_bootstrap(battles: list[Battle], resamples: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """One L-BFGS-B fit per bootstrap sample of battles, as the Arena's compute_bootstrap_bt does."""
    models = sorted({b.model_a for b in battles} | {b.model_b for b in battles})
    index = {m: i for i, m in enumerate(models)}
    schedule = np.array([[index[b.model_a], index[b.model_b], int(2 * b.outcome)] for b in battles])
    rows, counts = np.unique(schedule, axis=0, return_counts=True)
    pairs, outcomes = rows[:, :2], rows[:, 2] / 2.0
    alpha = math.log(10.0)

    def loss_and_grad(r: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray]:
        p = expit(alpha * (r[pairs[:, 0]] - r[pairs[:, 1]]))
        loss = -((np.log(p) * outcomes + np.log(1 - p) * (1 - outcomes)) * weights).sum()
        per_row = -alpha * (outcomes - p) * weights
        grad = np.zeros_like(r)
        np.add.at(grad, pairs[:, 0], per_row)
        np.add.at(grad, pairs[:, 1], -per_row)
        return loss, grad

    rng = np.random.default_rng(seed)
    samples = rng.multinomial(len(battles), counts / counts.sum(), size=resamples) / len(battles)
    fits = [
        minimize(
            loss_and_grad,
            np.zeros(len(models)),
            args=(w,),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 100, "gtol": 1e-6},
        ).x
        for w in samples
    ]
    return np.array(fits) * 400 + 1000, models


def best_of(repeats: int, work):
    """(fewest wall seconds, fewest CPU seconds, the last result) over `repeats` runs: the machine may be
    shared, and the fastest run is the one least disturbed. CPU time counts every BLAS thread."""
    wall = cpu = math.inf
    result = None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = work()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu, result


def timed(label: str, battles: list[Battle], repeats: int, **options) -> tuple[float, Ratings]:
    wall, cpu, result = best_of(repeats, lambda: bradley_terry(battles, **options))
    top = result.ratings[0]
    extra = (
        f", length coefficient {result.length_coefficient:+.3f}"
        if result.length_coefficient is not None
        else ""
    )
    interval = f"[{top.low:.0f}, {top.high:.0f}]"
    print(f"{label:<50} {wall:6.2f} s {cpu:6.2f} s   top {top.model} {top.rating:.0f} {interval}{extra}")
    return cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing; the fastest is shown")
    args = parser.parse_args()

    strengths = {f"model-{i:02d}": 1000.0 + 50.0 * (i - MODELS / 2) for i in range(MODELS)}
    per_order = simulate_battles(
        strengths, n_questions=QUESTIONS, turns=TURNS, orders=ORDERS, question_sd=100.0, seed=args.seed
    )
    combined = combine_orders(per_order)
    print(
        f"{MODELS} models, {QUESTIONS} questions x {TURNS} turns x {MODELS * (MODELS - 1) // 2} pairs: "
        f"{len(per_order)} verdicts ({ORDERS} orders), {len(combined)} combined battles; "
        f"{args.resamples} bootstrap samples; best of {args.repeats} runs, wall and CPU seconds"
    )
    bradley_terry(combined[:50], resamples=2)  # import numpy/scipy before timing

    common = {"resamples": args.resamples, "seed": args.seed, "repeats": args.repeats}
    timed("combined battles, resample questions", combined, **common)
    ours, by_battle = timed("combined battles, resample battles", combined, resample="battles", **common)
    timed("per-order verdicts, resample questions", per_order, **common)
    timed("combined battles, length-controlled", combined, length_control=True, **common)
    timed("per-order verdicts, length-controlled", per_order, length_control=True, **common)

    wall, reference, (arena, models) = best_of(
        args.repeats, lambda: arena_bootstrap(combined, args.resamples, args.seed)
    )
    rows = by_battle.by_model()
    spread = max(abs(np.quantile(arena[:, i], 0.975) - rows[m].high) for i, m in enumerate(models))
    print(f"{'Arena-style L-BFGS-B per sample, resample battles':<50} {wall:6.2f} s {reference:6.2f} s")
    print(
        f"ratio (same data, same resampling unit, CPU time): batched Newton {reference / ours:.1f}x less "
        f"than one L-BFGS-B fit per sample; upper interval ends agree within {spread:.1f} Elo "
        "(independent draws)"
    )


if __name__ == "__main__":
    main()
