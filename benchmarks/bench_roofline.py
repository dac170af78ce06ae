"""How close does the plugin's generation get to what the model itself can do on this machine?

In one run, with one loaded model (default: the quick start's SmolLM2-135M, `smollm2`):

  (a) the roofline: the model's own decode throughput, `model(...)` forward passes on a KV cache, with
      no tokenisation, sampling, padding or bookkeeping, at batch sizes 1 to 128, each after a prefill
      of a typical MT-Bench prompt length; the best batch size is the roofline
  (b) the plugin: BenchmarkRunner.generate_answers on the questions (both turns, FastChat's
      temperatures, no cache), generated tokens / seconds in the backend

and prints (b) / (a). Target: at least 0.5.

The roofline is measured twice, before and after the plugin's run, so that both sides see the same
machine (runs on a shared machine vary by 10 to 20%, and one batch size measured 179 tokens/s in a
sweep where the next measured 234). Each batch size's roofline is the mean of its two measurements,
and the best of those means is the roofline. The ratio to the single best measurement of either sweep
is printed too: it is the plugin against the machine at its luckiest moment.

    .venv/bin/python benchmarks/bench_roofline.py [--model smollm2] [--questions 80] [--max-new-tokens 128]
        [--batch-size 64] [--data DIR]

`--questions N` takes the first N/8 questions of every category (80: all of them).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from pytest_mtbench.backends.base import BackendOptions
from pytest_mtbench.backends.hf import create
from pytest_mtbench.cache import ResultCache
from pytest_mtbench.questions import Question, load_questions
from pytest_mtbench.runner import BenchmarkRunner, LazyBackend, RunSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
BATCH_SIZES = (1, 4, 8, 16, 32, 64, 96, 128)


def decode_throughput(backend: Any, batch: int, prompt_tokens: int, steps: int) -> float:
    """Generated tokens/s of bare forward passes: a prefill of `prompt_tokens`, then `steps` decode steps
    of `batch` rows on the KV cache (only the decode steps are timed: that is where generation spends)."""
    torch = backend._torch
    model = backend.model
    ids = torch.randint(10, 1000, (batch, prompt_tokens), device=backend.device)
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True)
        cache = getattr(out, "cache", None) or out.past_key_values
        token = out.logits[:, -1:].argmax(-1)
        began = time.perf_counter()
        for _ in range(steps):
            out = model(input_ids=token, use_cache=True, **{backend._cache_kwarg: cache})
            cache = getattr(out, "cache", None) or out.past_key_values
            token = out.logits[:, -1:].argmax(-1)
        elapsed = time.perf_counter() - began
    return batch * steps / elapsed


def pick(questions: list[Question], count: int) -> list[Question]:
    """The first count/8 questions of every category, in the file's order."""
    per_category = max(1, count // 8)
    seen: dict[str, int] = {}
    chosen = []
    for q in questions:
        if seen.get(q.category, 0) < per_category:
            seen[q.category] = seen.get(q.category, 0) + 1
            chosen.append(q)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "mt_bench")
    parser.add_argument("--questions", type=int, default=80)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64, help="the plugin's (the quick start's: 64)")
    parser.add_argument("--prompt-tokens", type=int, default=150, help="prefill length for the roofline")
    parser.add_argument("--steps", type=int, default=64, help="decode steps timed per batch size")
    args = parser.parse_args()

    options = BackendOptions(batch_size=args.batch_size)  # the model in the plugin's own cache directory
    backend = create(args.model, options)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; device {backend.device}")

    decode_throughput(backend, 1, 16, 4)  # warm-up: first calls pay for allocation

    def sweep(when: str) -> dict[int, float]:
        measured: dict[int, float] = {}
        for batch in BATCH_SIZES:
            measured[batch] = decode_throughput(backend, batch, args.prompt_tokens, args.steps)
            print(f"  forward passes {when}, batch {batch:3d}: {measured[batch]:8.1f} tokens/s", flush=True)
        return measured

    before = sweep("before")

    questions = pick(load_questions(args.data / "question.jsonl"), args.questions)
    model = LazyBackend(f"hf/{args.model}", options)
    model._backend = backend  # the model loaded above: the plugin path pays no second load
    runner = BenchmarkRunner(
        model, model, mode=None, cache=ResultCache(None), settings=RunSettings(args.max_new_tokens)
    )  # type: ignore[arg-type]  # generation only: no judging mode needed
    began = time.perf_counter()
    errors: dict[int, str] = {}
    runner.generate_answers(questions, errors)
    wall = time.perf_counter() - began
    stats = runner.generation
    plugin = stats.tokens / stats.seconds if stats.seconds else 0.0
    print(
        f"plugin: {len(questions)} questions, {stats.calls} turns, {stats.tokens} tokens "
        f"in {stats.seconds:.1f} s in the backend ({wall:.1f} s wall): {plugin:.1f} tokens/s "
        f"(batch size {args.batch_size})"
    )
    after = sweep("after")
    roofline = {batch: (before[batch] + after[batch]) / 2 for batch in BATCH_SIZES}
    best = max(roofline, key=lambda b: roofline[b])
    luckiest = max(max(before.values()), max(after.values()))
    print(f"roofline: {roofline[best]:.1f} tokens/s at batch {best} (mean of the sweeps before and after)")
    print(f"ratio plugin / roofline: {plugin / roofline[best]:.2f} (target >= 0.5)")
    print(f"ratio plugin / the best single measurement ({luckiest:.1f} tokens/s): {plugin / luckiest:.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if errors:
        print(f"errors: {errors}")


if __name__ == "__main__":
    main()
