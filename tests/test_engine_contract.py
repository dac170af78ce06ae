"""The local engine against transformers' own generate(), on tiny models of several architectures.

Each model is built in-process (random weights, the tiny chat model's tokenizer). The engine decodes a
batch of conversations of different lengths greedily; generate() decodes the same prompts, left-padded
to one batch as the engine pads them, and alone. The texts must be identical. A model whose steps the
engine does not build itself (what its cache holds decides, never its class name) decodes through
generate(): FALLS_BACK lists those architectures and why, and the test checks that they do fall back.
On a GPU the same runs again in bfloat16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from pytest_mtbench.backends import BackendOptions, SamplingParams, load_backend  # noqa: E402
from pytest_mtbench.testing.tiny_model import TINY_ARCHITECTURES, build_tiny_architecture  # noqa: E402

# Architectures the engine leaves to generate(), and why.
FALLS_BACK = {
    # Its layers keep a recurrent state, not keys and values by position: each step reads the new token
    # alone, without a mask, as the model's own prepare_inputs_for_generation has it.
    "mamba": "state-space model: a recurrent state per layer",
}

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Explain"}],
    [{"role": "user", "content": "Write a short post about a weekend by the sea, with places to eat. " * 3}],
    [
        {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And doubled?"},
    ],
]
NEW_TOKENS = 10


def _devices() -> list[Any]:
    import torch

    gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")
    return ["cpu", pytest.param("cuda", marks=gpu)]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("architectures")
    return {name: root / name for name in TINY_ARCHITECTURES}


def _generated(backend: Any, prompts: list[list[int]]) -> list[str]:
    """generate()'s greedy texts for `prompts`, left-padded to one batch."""
    import torch

    pad = backend.tokenizer.pad_token_id
    width = max(len(ids) for ids in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=backend.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=backend.device)
    with torch.inference_mode():
        out = backend.model.generate(
            input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=NEW_TOKENS, pad_token_id=pad
        )
    return [backend.tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out.tolist()]


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("architecture", sorted(TINY_ARCHITECTURES))
def test_greedy_text_is_that_of_generate(architecture: str, device: str, models: dict[str, Path]) -> None:
    path = build_tiny_architecture(models[architecture], architecture)
    backend = load_backend(f"hf/{path}", BackendOptions(batch_size=len(CONVERSATIONS), device=device))
    try:
        assert str(backend.model.dtype) == ("torch.float32" if device == "cpu" else "torch.bfloat16")
        # What the model is decides the route, and it is the documented one.
        assert backend._own_steps is (architecture not in FALLS_BACK)
        params = SamplingParams(temperature=0.0, max_new_tokens=NEW_TOKENS)
        batched = [c.text for c in backend.chat(CONVERSATIONS, params)]
        prompts = [backend._encode(backend.render(c)) for c in CONVERSATIONS]
        assert batched == _generated(backend, prompts)
        # One at a time: each conversation as generate() answers it alone.
        alone = [backend.chat([c], params)[0].text for c in CONVERSATIONS]
        assert alone == [_generated(backend, [p])[0] for p in prompts]
        # Not a vacuous pass: the model writes text, and different prompts get different texts.
        assert len(set(batched)) > 1 and all(batched)
    finally:
        backend.close()
