"""How fast does a state-space model (Mamba v1) decode? The old steps and the new, side by side in one run.

A small random-weight Mamba model built in-process (no downloads) answers the same prompts, greedy,
twice each way, alternating:

  - old: the backend's own decoding loop, which fed every step the batch's whole attention mask (Mamba's
    layers then read the mask's length of positions at every step, and wrote other text than generate())
  - new: such models decode through generate(), which builds each step as the model says (the new token
    only, no mask)

and prints each run's generated tokens/s, whether each way's answers are those of generate() run on each
prompt alone, and the ratio new / old of each way's best run (other load on the machine only slows a run).

    .venv/bin/python benchmarks/bench_state_space.py [--prompts 4] [--new-tokens 64] [--hidden 64] \
        [--repeat 1]

`--repeat N` makes every prompt N times as long: the old steps' cost grows with the prompt's length.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pytest_mtbench.backends import BackendOptions, SamplingParams, load_backend
from pytest_mtbench.testing import tiny_model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1, help="longer prompts: each sentence this many times")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)  # one thread: steadier timings on a machine shared with other work
    with tempfile.TemporaryDirectory() as scratch:
        path = tiny_model.build_tiny_architecture(
            Path(scratch) / "mamba", "mamba", hidden_size=args.hidden, num_hidden_layers=4
        )
        backend = load_backend(f"hf/{path}", BackendOptions(batch_size=args.prompts, num_threads=1))
        conversations = [
            [
                {
                    "role": "user",
                    "content": f"Question {i}: "
                    + "Write about a weekend by the sea. " * ((1 + i % 4) * args.repeat),
                }
            ]
            for i in range(args.prompts)
        ]
        params = SamplingParams(temperature=0.0, max_new_tokens=args.new_tokens)
        expected = []
        for conversation in conversations:  # generate() on each prompt alone
            ids = torch.tensor([backend._encode(backend.render(conversation))])
            out = backend.model.generate(
                input_ids=ids,
                do_sample=False,
                max_new_tokens=args.new_tokens,
                pad_token_id=backend.tokenizer.pad_token_id,
            )
            expected.append(
                backend.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
            )
        own_steps = backend._own_steps
        rates: dict[str, list[float]] = {"old": [], "new": []}
        same: dict[str, bool] = {"old": True, "new": True}
        for name in ("new", "old", "old", "new"):
            backend._own_steps = own_steps if name == "new" else True  # True: the backend's own loop
            began = time.perf_counter()
            completions = backend.chat(conversations, params)
            seconds = time.perf_counter() - began
            tokens = sum(c.n_tokens for c in completions)
            rates[name].append(tokens / seconds)
            same[name] = same[name] and [c.text for c in completions] == expected
            print(f"{name}: {tokens} tokens in {seconds:.2f} s, {tokens / seconds:.1f} tokens/s", flush=True)
        backend.close()
    old, new = (max(rates[n]) for n in ("old", "new"))
    print(f"answers those of generate() alone: old {same['old']}, new {same['new']}")
    print(f"best runs: old {old:.1f} tokens/s, new {new:.1f} tokens/s: new / old {new / old:.1f}")


if __name__ == "__main__":
    main()
