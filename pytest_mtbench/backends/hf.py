"""Local transformers models: a model directory, a `.gguf` file, or the `smollm2` alias.

Runs conversations as left-padded, length-sorted batches through `model.generate`, and can read a
judge's own probabilities over the ratings 1..10 (RatingProber). torch and transformers are imported
only in `create`, so importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from pathlib import Path
from typing import Any

from .base import (
    BackendError,
    BackendOptions,
    Capabilities,
    Completion,
    Message,
    ResultCallback,
    SamplingParams,
)

# Padding and seeded sampling make a row's output depend on its batch: batch within a category only.
CAPABILITIES = Capabilities(batch_scope="category", rating_probes=True, preflight=False, local=True)

SMOLLM2_ALIAS = "smollm2"
RATINGS = tuple(range(1, 11))

# Files that change what a model directory produces (hashed into the identity, by content).
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)
_HASH_CHUNK = 1 << 20


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _hash_files(files: list[Path], root: Path) -> str:
    """sha256 over (relative name, content) of each file in sorted order; the root path never enters."""
    digest = hashlib.sha256()
    for file in sorted(files, key=lambda f: f.relative_to(root).as_posix()):
        digest.update(file.relative_to(root).as_posix().encode("utf-8") + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def _model_files(directory: Path, gguf_file: str | None) -> list[Path]:
    if gguf_file is not None:
        return [directory / gguf_file]
    files = [directory / "config.json"]
    for pattern in _WEIGHT_PATTERNS:
        files.extend(p for p in directory.glob(pattern) if p.is_file())
    files.extend(directory / name for name in _TOKENIZER_FILES if (directory / name).is_file())
    return files


def _resolve(name: str, options: BackendOptions) -> tuple[Path, str | None]:
    """Map a model name to (directory, gguf file name or None), with one-line errors for bad paths."""
    if name == SMOLLM2_ALIAS:
        from pytest_mtbench.data import fetch_smollm2

        path = fetch_smollm2(Path(options.cache_dir) if options.cache_dir else None)
    else:
        path = Path(name).expanduser()
    if not path.exists():
        raise BackendError(f"--mtbench-model/--mtbench-judge path {name} does not exist")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise BackendError(
                f"--mtbench-model/--mtbench-judge path {name} is a file but not a .gguf model; "
                "pass a transformers model directory or a .gguf file"
            )
        return path.resolve().parent, path.name
    if not (path / "config.json").is_file():
        raise BackendError(
            f"--mtbench-model/--mtbench-judge path {name} is not a model directory (no config.json); "
            "pass a transformers model directory or a .gguf file"
        )
    return path.resolve(), None


_IDENTITIES: dict[tuple[Any, ...], dict[str, Any]] = {}


def _identity(directory: Path, gguf_file: str | None, options: BackendOptions) -> dict[str, Any]:
    """What determines this model's outputs, from file contents only (no torch, no loading).

    The tokenizer's own chat template lives in the hashed tokenizer files (or inside the .gguf); an
    override given with --mtbench-chat-template is hashed separately.
    """
    files = _model_files(directory, gguf_file)
    # Memoised per process on each file's size and mtime, so a rewritten weight file is hashed again.
    stamps = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    key = (stamps, options.chat_template)
    if key not in _IDENTITIES:
        override = options.chat_template
        _IDENTITIES[key] = {
            "backend": "hf",
            "model_sha256": _hash_files(files, directory),
            "chat_template_sha256": _sha256_text(override) if override else None,
            "dtype": "float32",
        }
    return dict(_IDENTITIES[key])


def static_identity(name: str, options: BackendOptions) -> dict[str, Any]:
    """The identity of `hf/<name>` without loading it, so a fully cached run never loads the model."""
    directory, gguf_file = _resolve(name, options)
    return _identity(directory, gguf_file, options)


class HFBackend:
    """A local causal LM served through transformers (ChatBackend and RatingProber)."""

    def __init__(self, spec: str, directory: Path, gguf_file: str | None, options: BackendOptions) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.spec = spec
        self._torch = torch
        self._directory = directory
        self._gguf_file = gguf_file
        self._options = options
        self._identity: dict[str, Any] | None = None
        if options.num_threads:
            torch.set_num_threads(options.num_threads)
        load_kwargs: dict[str, Any] = {"local_files_only": True}
        if gguf_file is not None:
            load_kwargs["gguf_file"] = gguf_file
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(directory, **load_kwargs)
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot load the tokenizer of {spec}: {_first_line(exc)}") from exc
        self.chat_template = options.chat_template or self.tokenizer.chat_template
        if not self.chat_template:
            raise BackendError(
                f"the tokenizer of {spec} has no chat template: pass one with --mtbench-chat-template=FILE"
            )
        # Left padding keeps every prompt's last token at the end, where generation continues.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        try:
            # float32: CPU half-precision matmuls are slow and lossy; GGUF weights are dequantised anyway.
            model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, **load_kwargs)
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot load the model {spec}: {_first_line(exc)}") from exc
        self.model = model.eval()
        # transformers 5.x renamed `past_key_values` to `cache`; older releases only know the old name.
        forward_params = inspect.signature(self.model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in forward_params else "past_key_values"
        self._eos_ids = self._collect_eos_ids()

    def _collect_eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(int(i) for i in source)
        return ids

    def identity(self) -> dict[str, Any]:
        """Content hashes of the weights, tokenizer and chat template (never the path); memoised."""
        if self._identity is None:
            self._identity = _identity(self._directory, self._gguf_file, self._options)
        return dict(self._identity)

    def render(self, conversation: list[Message]) -> str:
        """The prompt text for one conversation, ending with the assistant generation prompt."""
        return self.tokenizer.apply_chat_template(
            conversation, chat_template=self.chat_template, add_generation_prompt=True, tokenize=False
        )

    def _encode(self, text: str) -> list[int]:
        # The rendered template already holds BOS; adding specials again would double it.
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def chat(
        self,
        conversations: list[list[Message]],
        params: SamplingParams,
        on_result: ResultCallback | None = None,
    ) -> list[Completion]:
        """Generate one reply per conversation, in input order, batching similar lengths together.

        `on_result(index, completion)` is called as soon as each batch is done.
        """
        torch = self._torch
        encoded = [self._encode(self.render(conversation)) for conversation in conversations]
        # Longest first: similar lengths share a batch (less padding) and memory peaks up front.
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        results: list[Completion | None] = [None] * len(encoded)
        batch_size = max(1, self._options.batch_size)
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if params.greedy:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            gen_kwargs.update(do_sample=True, temperature=params.temperature)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                indices = order[start : start + batch_size]
                batch = self.tokenizer.pad(
                    {"input_ids": [encoded[i] for i in indices]}, padding=True, return_tensors="pt"
                )
                # Seeded per batch so greedy and sampled runs repeat exactly.
                torch.manual_seed(params.seed)
                output = self.model.generate(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **gen_kwargs
                )
                new_tokens = output[:, batch["input_ids"].shape[1] :].tolist()
                for index, tokens in zip(indices, new_tokens):
                    n_tokens = self._count_generated(tokens)
                    text = self.tokenizer.decode(tokens[:n_tokens], skip_special_tokens=True)
                    results[index] = Completion(text=text.strip(), n_tokens=n_tokens)
                    if on_result is not None:
                        on_result(index, results[index])
        return [r for r in results if r is not None]

    def _count_generated(self, tokens: list[int]) -> int:
        """Tokens up to and including the first EOS; the rest is padding after the row finished."""
        for position, token in enumerate(tokens):
            if token in self._eos_ids:
                return position + 1
        return len(tokens)

    def rating_probabilities(
        self, conversations: list[list[Message]], judgments: list[str], cue: str
    ) -> list[dict[int, float]]:
        """Probability of each rating 1..10 following `<prompt><judgment><cue>`, normalised over the ten."""
        if len(conversations) != len(judgments):
            raise ValueError("rating_probabilities needs one judgment per conversation")
        return [
            self._rating_distribution(self.render(conversation) + judgment + cue)
            for conversation, judgment in zip(conversations, judgments)
        ]

    def _rating_distribution(self, context: str) -> dict[int, float]:
        torch = self._torch
        context_ids = self._encode(context)
        sequences: list[list[int]] = []
        splits: list[int] = []
        for rating in RATINGS:
            # Encode context+continuation together (as lm-eval does) so boundary merges match generation.
            whole = self._encode(context + f"{rating}]]")
            # Tokens past the shared prefix are the continuation (at least one, even if BPE merged across).
            splits.append(min(_common_prefix(whole, context_ids), len(whole) - 1))
            sequences.append(whole)
        prefix = min(splits)  # every sequence starts with context_ids[:prefix]
        tails = [sequence[prefix:] for sequence in sequences]
        width = max(len(t) for t in tails)
        pad = self.tokenizer.pad_token_id
        with torch.inference_mode():
            # The long shared prompt runs once; only the short tails run ten times, on its KV cache.
            head = self.model(input_ids=torch.tensor([context_ids[:prefix]]), use_cache=True)
            cache = getattr(head, "cache", None) or head.past_key_values
            cache.batch_repeat_interleave(len(tails))
            # Right padding: causal attention means padding after a tail never changes its log-probs.
            tail_ids = torch.tensor([t + [pad] * (width - len(t)) for t in tails])
            mask = torch.tensor([[1] * (prefix + len(t)) + [0] * (width - len(t)) for t in tails])
            rest = self.model(
                input_ids=tail_ids, attention_mask=mask, use_cache=True, **{self._cache_kwarg: cache}
            )
            # Row r, step j predicts tail token j: step 0 from the prompt's last position, then the tails.
            logits = torch.cat([head.logits[:, -1:].expand(len(tails), -1, -1), rest.logits[:, :-1]], dim=1)
            log_probs = torch.log_softmax(logits.float(), dim=-1)
        scores: list[float] = []
        for row, (tail, split) in enumerate(zip(tails, splits)):
            first = split - prefix  # tail tokens before this index belong to the context
            scores.append(sum(float(log_probs[row, j, tail[j]]) for j in range(first, len(tail))))
        top = max(scores)
        weights = [math.exp(score - top) for score in scores]
        total = sum(weights)
        return {rating: weight / total for rating, weight in zip(RATINGS, weights)}

    def close(self) -> None:
        """Drop the model so its memory can be reclaimed."""
        self.model = None
        import gc

        gc.collect()


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def create(name: str, options: BackendOptions) -> HFBackend:
    """Build the backend for `hf/<name>`: a model directory, a .gguf file or the `smollm2` alias."""
    directory, gguf_file = _resolve(name, options)
    import torch  # noqa: F401  (an ImportError here becomes the registry's install hint)
    import transformers  # noqa: F401

    return HFBackend(f"hf/{name}", directory, gguf_file, options)
