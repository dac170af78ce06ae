"""The local engine against transformers' own generate(), on tiny models of several architectures.

Each model is built in-process (random weights, the tiny chat model's tokenizer). The engine decodes a
batch of conversations of different lengths greedily; generate() decodes the same prompts, left-padded
to one batch as the engine pads them, and alone. The texts must be identical, and a judge's rating
probabilities those of each rating's whole sequence. A model whose steps the engine does not build
itself (what its cache holds decides, never its class name) decodes through generate(): FALLS_BACK
lists those architectures and why, and the test checks that they do fall back. On a GPU the same runs
again in bfloat16.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
NEW_TOKENS = 8


def _devices() -> list[Any]:
    import torch

    gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")
    return ["cpu", pytest.param("cuda", marks=gpu)]


@pytest.fixture(scope="module")
def backend_of(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str, str], Any]]:
    """`backend_of(architecture, device)`: a tiny model of that architecture, built and loaded once."""
    root = tmp_path_factory.mktemp("architectures")
    loaded: dict[tuple[str, str], Any] = {}

    def backend_of(architecture: str, device: str) -> Any:
        if (architecture, device) not in loaded:
            path = build_tiny_architecture(root / architecture, architecture)
            options = BackendOptions(batch_size=len(CONVERSATIONS), device=device)
            loaded[architecture, device] = load_backend(f"hf/{path}", options)
        return loaded[architecture, device]

    yield backend_of
    for backend in loaded.values():
        backend.close()


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


@pytest.mark.slow  # ten tiny models built and run: about a minute on two cores
@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("architecture", sorted(TINY_ARCHITECTURES))
def test_greedy_text_is_that_of_generate(architecture: str, device: str, backend_of) -> None:
    backend = backend_of(architecture, device)
    assert str(backend.model.dtype) == ("torch.float32" if device == "cpu" else "torch.bfloat16")
    # What the model is decides the route, and it is the documented one.
    assert backend._own_steps is (architecture not in FALLS_BACK)
    params = SamplingParams(temperature=0.0, max_new_tokens=NEW_TOKENS)
    batched = [c.text for c in backend.chat(CONVERSATIONS, params)]
    prompts = [backend._encode(backend.render(c)) for c in CONVERSATIONS]
    assert batched == _generated(backend, prompts)
    # One at a time: a long conversation (over the sliding windows) and a short one as generate() answers
    # each alone.
    for conversation, prompt in zip(CONVERSATIONS[1:3], prompts[1:3]):
        assert backend.chat([conversation], params)[0].text == _generated(backend, [prompt])[0]
    # Not a vacuous pass: the model writes text, and different prompts get different texts.
    assert len(set(batched)) > 1 and all(batched)


@pytest.mark.slow  # ten tiny models built and run: about a minute on two cores
@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("architecture", sorted(TINY_ARCHITECTURES))
def test_rating_probabilities_are_those_of_whole_sequences(
    architecture: str, device: str, backend_of
) -> None:
    """A judge's probabilities over the ratings, read after its judgment (on the cache kept from writing
    it) and afresh, are those of each rating's whole sequence read by a plain forward pass."""
    import torch

    backend = backend_of(architecture, device)
    cue = "\nRating: [["
    params = SamplingParams(temperature=0.0, max_new_tokens=NEW_TOKENS)
    conversations = CONVERSATIONS[1:3]
    judgments = [c.text for c in backend.chat(conversations, params, probe_cue=cue)]
    served = backend.rating_probabilities(conversations, judgments, cue)  # worked out while generating
    afresh = backend.rating_probabilities(conversations, judgments, cue)
    for conversation, judgment, *probabilities in zip(conversations, judgments, served, afresh):
        context = backend.render(conversation) + judgment + cue
        n_context = len(backend._encode(context))
        scores = []
        for rating in range(1, 11):
            ids = backend._encode(context + f"{rating}]]")
            with torch.inference_mode():
                logits = backend.model(torch.tensor([ids], device=backend.device)).logits[0]
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            scores.append(sum(float(log_probs[p - 1, ids[p]]) for p in range(n_context, len(ids))))
        expected = torch.softmax(torch.tensor(scores, dtype=torch.float64), dim=0).tolist()
        tolerance = 1e-5 if device == "cpu" else 0.05  # bfloat16 reads the context in other passes
        for found in probabilities:
            assert [found[k] for k in range(1, 11)] == pytest.approx(expected, abs=tolerance)


def test_the_route_is_chosen_by_what_the_cache_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys and values by position (full or sliding attention): the engine's own steps; a recurrent state,
    a hybrid, or no transformers cache at all: generate(). A release without an internal class gets the
    safe answer."""
    import torch
    from transformers import DynamicCache

    from pytest_mtbench.backends.hf import internals

    try:
        from transformers.cache_utils import (
            DynamicLayer,
            DynamicSlidingWindowLayer,
            LinearAttentionAndFullAttentionLayer,
            LinearAttentionLayer,
        )
    except ImportError:
        pytest.skip("this transformers release has no cache layer classes of these kinds")

    def cache_of(*layers: Any) -> Any:
        cache = DynamicCache()
        cache.layers = list(layers)
        return cache

    attention = cache_of(DynamicLayer(), DynamicSlidingWindowLayer(sliding_window=8))
    assert internals.steps_by_position(attention)
    assert not internals.steps_by_position(cache_of(LinearAttentionLayer(), LinearAttentionLayer()))
    assert not internals.steps_by_position(cache_of(DynamicLayer(), LinearAttentionAndFullAttentionLayer()))
    assert not internals.steps_by_position(None)
    assert not internals.steps_by_position(((torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4)),))
    # Only a plain DynamicCache of full-attention layers is cut into rows and laid out by the engine.
    keys = torch.zeros(2, 2, 5, 4)
    full = DynamicCache(ddp_cache_data=[(keys, keys)])
    assert internals.row_slices(full, 1, 2, 3)[0][0].shape == (1, 2, 3, 4)
    assert internals.kv_layout(full, torch.float32) == [(2, 4, 4)]
    assert internals.kv_layout(full, torch.bfloat16) is None  # keys of another dtype than the weights
    assert internals.row_slices(attention, 0, 0, 1) is None
    # A release without cache layer classes: a plain DynamicCache still decodes by position, nothing is cut.
    plain = DynamicCache()
    monkeypatch.delattr("transformers.cache_utils.DynamicLayer")
    assert internals.steps_by_position(plain)
    assert internals.row_slices(full, 1, 2, 3) is None
