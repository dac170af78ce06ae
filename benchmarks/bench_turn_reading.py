"""How much do the ways a turn's prompts are read and batched save? Side by side in one process.

One SmolLM2 model (the quick start's) generates both turns of the questions (FastChat's temperatures,
128 new tokens, batch 64, no result cache) four times, alternating the current code ("new") with the
three changes off ("old"):

  - turn 2 read from where turn 1's keys and values end (off: every turn 2 read from its start)
  - short prompt reads sharing a forward pass (off: every prompt read in a pass of its own)
  - batches cut where the least padding is attended (off: the longest `batch size` prompts first)

and prints each run's seconds, whether all runs wrote the same answers, and the ratio old / new.

    .venv/bin/python benchmarks/bench_turn_reading.py [--questions 40] [--data DIR]

`--questions N` takes the first N/8 questions of every category.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench_roofline import pick

import pytest_mtbench.backends.hf as hf
from pytest_mtbench.backends.base import BackendOptions
from pytest_mtbench.backends.hf import engine, memory
from pytest_mtbench.cache import ResultCache
from pytest_mtbench.questions import load_questions
from pytest_mtbench.runner import BenchmarkRunner, LazyBackend, RunSettings

REPO_ROOT = Path(__file__).resolve().parent.parent


def longest_first(lengths: list[int], batch_size: int, new_tokens: int) -> list[tuple[int, int]]:
    """The batches before: the prompts sorted longest first, cut every `batch_size`."""
    return [(start, min(start + batch_size, len(lengths))) for start in range(0, len(lengths), batch_size)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "mt_bench")
    parser.add_argument("--questions", type=int, default=40)
    args = parser.parse_args()

    options = BackendOptions(batch_size=64)  # the model in the plugin's own cache directory
    backend = hf.create("smollm2", options)
    questions = pick(load_questions(args.data / "question.jsonl"), args.questions)
    model = LazyBackend("hf/smollm2", options)
    model._backend = backend  # the model loaded above, for every run
    cut, together, keep = engine._batches, memory._READ_TOGETHER, backend._follow_ups.put

    def keep_nothing(*_: Any) -> None:
        return None

    seconds: dict[str, list[float]] = {"new": [], "old": []}
    answers: list[list[str]] = []
    for name in ("new", "old", "old", "new"):
        new = name == "new"
        engine._batches = cut if new else longest_first
        memory._READ_TOGETHER = together if new else 0  # 0: every read is a group of its own
        backend._follow_ups.put = keep if new else keep_nothing  # type: ignore[method-assign]
        # Generation only: no judging mode needed.
        settings = RunSettings(128)
        runner = BenchmarkRunner(model, model, mode=None, cache=ResultCache(None), settings=settings)  # type: ignore[arg-type]
        began = time.perf_counter()
        turns = runner.generate_answers(questions, {})
        seconds[name].append(time.perf_counter() - began)
        answers.append([turn.answer for record in turns.values() for turn in record])
        print(f"{name}: {seconds[name][-1]:.1f} s, {runner.generation.tokens} tokens", flush=True)
    same = all(run == answers[0] for run in answers)
    print(f"the same {len(answers[0])} answers in all four runs: {same}")
    old, new = sum(seconds["old"]), sum(seconds["new"])
    print(f"old {old:.1f} s, new {new:.1f} s: old / new {old / new:.2f}")


if __name__ == "__main__":
    main()
