"""Where the offline quick start spends its time: a profile of one in-process run.

Runs the README's quick-start command (SmolLM2-135M as candidate and judge, constrained scoring, no
cache) in this process, with timers around the local model's work, and prints where the wall time went:

  - loading the model (tokenizer and weights);
  - per kind of request (answers, judgments, rating probes): chat templates and tokenisation, prefill
    forward passes, decode forward passes, generate()'s own work between them (logits processors,
    sampling, stopping checks: "generate()'s own work" names the decoding loop's, whether or not it is
    generate()), detokenisation;
  - padding waste: in prefill, the share of positions that were left padding; in decode, the share of
    row-steps spent on rows that had already finished while a longer row of their batch went on;
  - the rest (pytest, cache, statistics, reports).

    .venv/bin/python benchmarks/profile_offline.py [--questions 80] [--batch-size 64] [--data DIR]

`--questions 80` (all of them) and `--batch-size 64` are the quick start's; `--questions 8` takes the
first question of each category, `--batch-size 16` is the plugin's default. To profile the code as
an older commit had it, run the same script with that checkout first on the path: `git worktree add
/tmp/old COMMIT && PYTHONPATH=/tmp/old .venv/bin/python benchmarks/profile_offline.py`. It only wraps
methods both versions have.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
FIRST_OF_EACH = "81 or 91 or 101 or 111 or 121 or 131 or 141 or 151"
KINDS = {"answer": "answers", "judgment": "judgments", "rating": "rating probes"}


class Profile:
    """Seconds and counts per (kind of request, part), filled by the wrappers below."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.counts: dict[tuple[str, str], int] = defaultdict(int)
        self.local = threading.local()

    @property
    def kind(self) -> str:
        return getattr(self.local, "kind", "other")

    def timed(self, part: str, function: Callable[..., Any], measure: Callable[..., None] | None = None):
        """`function` with its time added to (current kind, part); `measure(result, *args, **kwargs)`
        may count what the call did. The wrapper keeps the signature: generate() reads forward's to
        decide what it passes (position ids for left-padded rows among them)."""

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            result = function(*args, **kwargs)
            self.seconds[self.kind, part] += time.perf_counter() - began
            self.counts[self.kind, part] += 1
            if measure is not None:
                measure(result, *args, **kwargs)
            return result

        return wrapper

    def add(self, part: str, amount: int) -> None:
        self.counts[self.kind, part] += amount


def instrument(profile: Profile) -> None:
    """Wrap the engine and the local backend's methods (the names every version has)."""
    from pytest_mtbench import runner
    from pytest_mtbench.backends import hf

    resolve = runner.Completer.resolve

    def tagged_resolve(self: Any, kind: str, *args: Any, **kwargs: Any) -> Any:
        previous, profile.local.kind = profile.kind, kind
        try:
            return resolve(self, kind, *args, **kwargs)
        finally:
            profile.local.kind = previous

    runner.Completer.resolve = tagged_resolve  # type: ignore[method-assign]

    init = hf.HFBackend.__init__

    def timed_init(self: Any, *args: Any, **kwargs: Any) -> None:
        profile.timed("load", init)(self, *args, **kwargs)
        wrap_backend(self, profile)

    hf.HFBackend.__init__ = timed_init  # type: ignore[method-assign]


def wrap_backend(backend: Any, profile: Profile) -> None:
    model, tokenizer = backend.model, backend.tokenizer

    def count_forward(result: Any, *args: Any, **kwargs: Any) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        rows, width = ids.shape
        if width == 1:
            profile.add("decode row-steps", rows)
            return
        profile.add("prefill positions", rows * width)
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.shape[1] == width:  # a fresh prefill: its padding is the mask's zeros
            profile.add("prefill padding", int((mask == 0).sum()))

    forward = model.forward

    @functools.wraps(forward)
    def split_forward(*args: Any, **kwargs: Any) -> Any:
        ids = kwargs.get("input_ids", args[0] if args else None)
        where = getattr(profile.local, "where", None)
        if where == "probe":
            return profile.timed("probe forward", forward)(*args, **kwargs)
        part = "decode" if ids is not None and ids.shape[1] == 1 else "prefill"
        began = time.perf_counter()
        result = profile.timed(part, forward, count_forward)(*args, **kwargs)
        if where == "generate":
            profile.seconds[profile.kind, "forward in generate"] += time.perf_counter() - began
        return result

    def inside(where: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def marked(*args: Any, **kwargs: Any) -> Any:
            previous, profile.local.where = getattr(profile.local, "where", None), where
            try:
                return function(*args, **kwargs)
            finally:
                profile.local.where = previous

        return marked

    model.forward = split_forward
    if hasattr(backend, "_decode"):  # the decoding loop (and generate() under it, when it is used)
        backend._decode = inside("generate", profile.timed("generate (all)", backend._decode))
        backend._generate = inside("generate", profile.timed("generate (all)", backend._generate))
    else:  # versions that decoded with generate() itself
        model.generate = inside("generate", profile.timed("generate (all)", model.generate))
    probe = profile.timed("probe", backend._rating_distribution)

    @functools.wraps(probe)
    def located_probe(*args: Any, **kwargs: Any) -> Any:
        # Rows that end early are probed from inside the decoding loop: not the loop's own work.
        began, within = time.perf_counter(), getattr(profile.local, "where", None) == "generate"
        try:
            return inside("probe", probe)(*args, **kwargs)
        finally:
            if within:
                profile.seconds[profile.kind, "probe in generate"] += time.perf_counter() - began

    backend._rating_distribution = located_probe
    backend.render = profile.timed("chat template", backend.render)
    backend._encode = profile.timed("tokenise", backend._encode)
    tokenizer.pad = profile.timed("tokenise", tokenizer.pad)
    tokenizer.decode = profile.timed("detokenise", tokenizer.decode)

    def count_tokens(result: Any, *args: Any, **kwargs: Any) -> None:
        profile.add("rows", len(result))
        profile.add("tokens", sum(c.n_tokens for c in result))
        profile.add("useful decode row-steps", sum(max(0, c.n_tokens - 1) for c in result))

    backend.chat = profile.timed("chat (all)", backend.chat, count_tokens)
    backend.rating_probabilities = profile.timed("probes (all)", backend.rating_probabilities)


def report(profile: Profile, wall: float) -> None:
    s, n = profile.seconds, profile.counts
    load = sum(v for (_, part), v in s.items() if part == "load")
    loads = sum(v for (_, part), v in n.items() if part == "load")
    print(f"wall time {wall:.1f} s; loading the model {load:.1f} s ({loads} loads)")
    accounted = load
    for kind, label in KINDS.items():
        total = s[kind, "chat (all)"] + s[kind, "probes (all)"]
        if not total:
            continue
        accounted += total
        prefill, decode, probe = s[kind, "prefill"], s[kind, "decode"], s[kind, "probe"]
        generate_own = (
            s[kind, "generate (all)"] - s[kind, "forward in generate"] - s[kind, "probe in generate"]
        )
        text = s[kind, "chat template"] + s[kind, "tokenise"] + s[kind, "detokenise"]
        other = total - prefill - decode - generate_own - text - probe
        print(f"{label}: {total:.1f} s ({100 * total / wall:.0f}% of the wall time)")
        print(
            f"  prefill {prefill:.1f} s, decode {decode:.1f} s, generate()'s own work {generate_own:.1f} s, "
            f"templates + (de)tokenising {text:.1f} s, rating probes {probe:.1f} s "
            f"({n[kind, 'probe']}, forward passes {s[kind, 'probe forward']:.1f} s), the rest {other:.1f} s"
        )
        positions, padding = n[kind, "prefill positions"], n[kind, "prefill padding"]
        if positions:
            print(
                f"  prefill: {positions} positions, {100 * padding / positions:.0f}% of them padding"
                + (f"; {positions / prefill:.0f} positions/s" if prefill else "")
            )
        steps, useful = n[kind, "decode row-steps"], n[kind, "useful decode row-steps"]
        if steps:
            print(
                f"  decode: {steps} row-steps in {n[kind, 'decode']} forward passes (mean batch "
                f"{steps / max(1, n[kind, 'decode']):.1f}), {100 * (1 - useful / steps):.0f}% of them "
                f"on rows already finished; {n[kind, 'tokens']} tokens for {n[kind, 'rows']} rows"
            )
    print(f"the rest (pytest, cache, statistics, reports): {wall - accounted:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=80, help="80 (all: the quick start's) or 8")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="--mtbench-batch-size (the quick start's: 64)"
    )
    parser.add_argument("--data", default=str(REPO_ROOT.parent / "shared" / "mt_bench"))
    args = parser.parse_args()

    import pytest

    profile = Profile()
    instrument(profile)
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            "-q", "-p", "no:cacheprovider", "--rootdir", tmp, "--mtbench-model=smollm2",
            "--mtbench-judge=smollm2", "--mtbench-judge-scoring=constrained",
            "--mtbench-judge-max-tokens=64", "--mtbench-max-new-tokens=128", f"--mtbench-data={args.data}",
            "--mtbench-no-cache", f"--mtbench-report={Path(tmp) / 'report.json'}",
        ]  # fmt: skip
        if args.questions == 8:
            command += ["-k", FIRST_OF_EACH]
        elif args.questions != 80:
            raise SystemExit("--questions is 80 (all, the quick start's) or 8 (the first of each category)")
        if args.batch_size:
            command.append(f"--mtbench-batch-size={args.batch_size}")
        os.chdir(tmp)
        began = time.perf_counter()
        code = pytest.main(command)
        wall = time.perf_counter() - began
    import pytest_mtbench

    print(f"\n{pytest_mtbench.__file__}: {args.questions} questions, pytest exit code {code}")
    report(profile, wall)


if __name__ == "__main__":
    main()
