"""The one place the local engine touches transformers' internals: its cache objects and their layers.

Everything else in the engine uses public APIs (AutoModelForCausalLM, forward, generate(), logits
warpers). What is here keeps working across releases or says it cannot: each internal class is imported
inside a `try` and checked by type (never by class name); where it is absent the answer is the safe one
(None or False), and the engine then reads a batch in one pass or decodes through generate().

The interface, in the engine's words:
  - `output_cache`, `cache_argument`, `last_logits_argument`: what a forward pass is given and returns
  - `steps_by_position`: whether the engine can build a model's decoding steps itself
  - `kv_layout`, `slab_cache`, `reading_cache`: a batch's keys and values laid out in memory the engine
    owns, written in place
  - `cache_parts`, `extend_cache`, `row_slices`, `row_cache`, `rows_can_leave`, `keep_rows`: keys and
    values copied out of, into and between caches
  - `compile_chat_template`: a chat template parsed as transformers will run it
  - `save_dequantised`: a model loaded from a .gguf file saved as a standard model directory
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

Part = list[tuple[Any, Any]]  # keys and values, per layer


def output_cache(out: Any) -> Any:
    """The cache a forward pass or generate() returned (None when it returned none). transformers 5.x
    renamed `past_key_values` to `cache`."""
    return getattr(out, "cache", None) or getattr(out, "past_key_values", None)


def cache_argument(model: Any) -> str:
    """The name under which the model's forward takes a cache (`past_key_values` before transformers 5)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def last_logits_argument(model: Any) -> dict[str, int]:
    """The forward argument that asks for the last position's logits only (named `num_logits_to_keep`
    before transformers 4.49), as {name: 1}; empty for a model that always computes every position's."""
    import inspect

    parameters = inspect.signature(model.forward).parameters
    keep = next((name for name in ("logits_to_keep", "num_logits_to_keep") if name in parameters), None)
    return {keep: 1} if keep else {}


def steps_by_position(cache: Any) -> bool:
    """Whether the engine can build a model's decoding steps itself, from the cache the model returns
    after one token: only where every layer keeps keys and values by position (attention, full or in a
    sliding window), which each step extends by one token under a mask one position longer. A model that
    keeps a recurrent state instead (a state-space model such as Mamba, or a hybrid) reads only the new
    token at each step, without the mask (fed the growing mask, Mamba's layers read the whole mask's
    length of positions at every step: other text, about 100 times slower): generate() builds such steps
    as the model's own prepare_inputs_for_generation says, so those models decode through it."""
    try:
        from transformers import Cache, DynamicCache
    except ImportError:  # pragma: no cover - every supported transformers release has both
        return False
    if not isinstance(cache, Cache):
        return False  # no cache, or one of the model's own kind (Mamba's before transformers 5)
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:  # a release before cache layers: its plain DynamicCache holds keys and values only
        return type(cache) is DynamicCache
    try:
        from transformers.cache_utils import LinearAttentionCacheLayerMixin as recurrent
    except ImportError:  # a release before recurrent cache layers
        recurrent = ()
    layers = getattr(cache, "layers", None) or []
    return bool(layers) and all(
        isinstance(layer, DynamicLayer) and not isinstance(layer, recurrent) for layer in layers
    )


def _position_layers(cache: Any) -> list[Any] | None:
    """The layers of a plain DynamicCache whose every layer holds (batch, heads, position, size) keys and
    values from position 0 (full attention: a plain DynamicLayer, or a slab layer), else None."""
    try:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer
    except ImportError:  # a release before cache layers
        return None
    layers = getattr(cache, "layers", None)
    if type(cache) is not DynamicCache or not layers:
        return None
    slab = _slab_layer_class()
    if any(type(layer) is not DynamicLayer and not isinstance(layer, slab) for layer in layers):
        return None
    return list(layers)


def _slab_layers(cache: Any) -> list[Any] | None:
    """The layers of a cache `slab_cache` assembled (rows can leave it), else None."""
    layers = _position_layers(cache)
    slab = _slab_layer_class()
    return layers if layers and all(isinstance(layer, slab) for layer in layers) else None


def kv_layout(cache: Any, dtype: Any) -> list[tuple[int, int, int]] | None:
    """Per layer, (heads, key size, value size) of the keys and values in `cache` (a model's after one
    token); None for a model whose cache layers are not all full attention by position (sliding windows,
    linear attention) or keep another dtype than `dtype` (its weights'), or a transformers release before
    cache layers: the engine then cannot lay out a batch's cache itself."""
    if _slab_layer_class() is None:
        return None
    layers = _position_layers(cache)
    if layers is None or any(layer.keys.dtype != dtype for layer in layers):
        return None
    return [(layer.keys.shape[1], layer.keys.shape[-1], layer.values.shape[-1]) for layer in layers]


def slab_cache(storage: list[tuple[Any, Any]], length: int) -> Any:
    """A cache over per-layer (keys, values) tensors allocated up front (rows, heads, capacity, size) whose
    first `length` positions are filled: an update writes the next positions in place (see
    _slab_layer_class). Only where kv_layout gave a layout."""
    from transformers import DynamicCache

    slab_layer = _slab_layer_class()
    cache = DynamicCache()
    cache.layers = [slab_layer(keys, values, length) for keys, values in storage]
    return cache


def reading_cache(
    storage: list[tuple[Any, Any]], index: Any, spans: list[tuple[int, int]], first: int, start: int
) -> Any:
    """A cache through which one forward pass reads several rows' prompts in place (see
    _reading_layer_class): rows `index` of `storage`, read from position `first` on, the pass's tokens
    at positions `start` on, (row, n) `spans` of each row's own tokens."""
    from transformers import DynamicCache

    reading_layer = _reading_layer_class()
    cache = DynamicCache()
    cache.layers = [reading_layer(keys, values, index, spans, first, start) for keys, values in storage]
    return cache


def cache_parts(cache: Any) -> Part:
    """Copies of the keys and values of each layer of a cache of slab layers."""
    return [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]


def extend_cache(cache: Any, part: Part) -> None:
    """Appends `part` (keys and values per layer) to each layer of `cache`."""
    for layer, (keys, values) in zip(cache.layers, part):
        layer.update(keys, values)


def rows_can_leave(cache: Any) -> bool:
    """Whether rows can leave `cache` (see keep_rows): a cache slab_cache assembled."""
    return _slab_layers(cache) is not None


def keep_rows(cache: Any, rows: list[int]) -> None:
    """Only `rows` (ascending) of a cache slab_cache assembled stay, moved up in place."""
    for layer in _slab_layers(cache) or []:
        layer.keep(rows)


def row_slices(cache: Any, row: int, begin: int, length: int) -> Part | None:
    """Per layer, the keys and values of one row of a generated batch, `length` positions from `begin`
    (that row's tokens without its left padding), as views of the batch's tensors; None for a cache kind
    this does not know how to cut."""
    layers = _position_layers(cache)
    if layers is None:
        return None
    return [
        (
            layer.keys[row : row + 1, :, begin : begin + length],
            layer.values[row : row + 1, :, begin : begin + length],
        )
        for layer in layers
    ]


def row_cache(cache: Any, row: int, begin: int, length: int) -> Any:
    """A KV cache of one row of a generated batch (see row_slices), sharing the batch's tensors; None
    for a cache kind this does not know how to cut (the rating is then worked out from the context's
    text, as without it)."""
    from transformers import DynamicCache

    cut = row_slices(cache, row, begin, length)
    return None if cut is None else DynamicCache(ddp_cache_data=cut)


def compile_chat_template() -> Any:
    """A function that parses a chat template as transformers will run it (its own Jinja environment and
    extensions, e.g. {% generation %}), raising jinja2.TemplateError; a plain sandboxed environment where
    that function is not there."""
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template
    except ImportError:  # pragma: no cover - older/newer transformers
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        return ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols"]).from_string
    return _compile_jinja_template


def save_dequantised(model: Any, config: Any, directory: Path) -> None:
    """`model.save_pretrained(directory)` with `config` written in place of the model's own, for a model
    loaded from a .gguf file. transformers refuses to save a model that still holds its GGUF quantizer,
    though the weights are dequantised; it is set aside for the call, and the model left as it was.
    save_pretrained, not safetensors' save_model: of a tied embedding, save_model kept `lm_head.weight`
    only, where loaders such as vLLM read `model.embed_tokens.weight` (and got random embeddings)."""
    own_config, quantizer = model.config, getattr(model, "hf_quantizer", None)
    model.config, model.hf_quantizer = config, None
    try:
        model.save_pretrained(directory)  # safetensors: the default since transformers 4.35, the only in 5
    finally:
        model.config, model.hf_quantizer = own_config, quantizer


@functools.cache
def _slab_layer_class() -> type | None:
    """transformers' DynamicLayer, over memory allocated up front; None before transformers 5 (whose
    caches have no layer objects)."""
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:
        return None

    class _SlabLayer(DynamicLayer):  # type: ignore[misc, valid-type]
        """Keys and values that are the first `length` positions of tensors allocated up front (rows,
        heads, capacity, size). An update writes in place, where a DynamicLayer concatenates (copying
        the whole layer at every decoding step), and attention reads the positions written so far
        only, where a static cache's rows attend to its whole capacity with the rest masked."""

        def __init__(self, keys: Any, values: Any, length: int) -> None:
            super().__init__()
            self.room = (keys, values)
            self.dtype, self.device = keys.dtype, keys.device
            self.is_initialized = True
            self._fill(length)

        def _fill(self, length: int) -> None:
            self.keys = self.room[0][:, :, :length]
            self.values = self.room[1][:, :, :length]

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            start = self.keys.shape[-2]
            end = start + key_states.shape[-2]
            if end > self.room[0].shape[-2]:
                raise ValueError(f"{end} positions in a cache allocated for {self.room[0].shape[-2]}")
            self.room[0][:, :, start:end].copy_(key_states)
            self.room[1][:, :, start:end].copy_(value_states)
            self._fill(end)
            return self.keys, self.values

        def keep(self, rows: list[int]) -> None:
            """Only `rows` (ascending) stay, moved up in place to be the first len(rows) rows."""
            length = self.keys.shape[-2]
            for room in self.room:
                for target, source in enumerate(rows):
                    if target != source:
                        room[target, :, :length].copy_(room[source, :, :length])
            self.room = (self.room[0][: len(rows)], self.room[1][: len(rows)])
            self._fill(length)

    return _SlabLayer


@functools.cache
def _reading_layer_class() -> type | None:
    """A cache layer through which the engine's _read_rows reads several rows' prompts in place."""
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:
        return None

    class _ReadingLayer(DynamicLayer):  # type: ignore[misc, valid-type]
        """Rows `index` of a batch's keys and values (rows, heads, capacity, size), read from position
        `first` on; the pass reads positions `start` to `start` + its width. `spans` is (row, n) per
        row: only that row's last n tokens are its own (the rest of its width is padding), and only
        theirs are written."""

        def __init__(
            self, keys: Any, values: Any, index: Any, spans: list[tuple[int, int]], first: int, start: int
        ) -> None:
            super().__init__()
            self.room = (keys, values)
            self.index, self.spans, self.first, self.start = index, spans, first, start
            self.dtype, self.device = keys.dtype, keys.device
            self.is_initialized = True

        def get_seq_length(self) -> int:
            return self.start - self.first

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            width = key_states.shape[-2]
            end = self.start + width
            for j, (row, n) in enumerate(self.spans):
                self.room[0][row, :, end - n : end].copy_(key_states[j, :, width - n :])
                self.room[1][row, :, end - n : end].copy_(value_states[j, :, width - n :])
            self.keys = self.room[0][:, :, self.first : end].index_select(0, self.index)
            self.values = self.room[1][:, :, self.first : end].index_select(0, self.index)
            return self.keys, self.values

    return _ReadingLayer
