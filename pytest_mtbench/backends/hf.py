"""Local transformers models: a model directory, a `.gguf` file, or the `smollm2` alias.

Runs conversations as left-padded, length-sorted batches (HFBackend._decode), and can read a
judge's own probabilities over the ratings 1..10 (RatingProber). torch and transformers are imported
only in `create`, so importing this module is cheap.

A model directory is untrusted input. Python code shipped in it (`auto_map` in config.json) never runs
unless `BackendOptions.trust_remote_code` (--mtbench-trust-remote-code); pickle weights (`*.bin`, `*.pt`,
... without a safetensors copy) are refused unless `BackendOptions.allow_pickle` (--mtbench-allow-pickle),
since unpickling can run code. A chat template that is not valid Jinja, a truncated or corrupt weight file
and missing custom code are one-line BackendErrors, found before generation starts.

Each Completion reports `prompt_tokens`, and `finish_reason` "stop" (the model wrote EOS) or "length"
(`truncated`: it hit its token limit without EOS). Context rule (the window is the config's
max_position_embeddings, or the tokenizer's model_max_length when that is set and smaller): a prompt is
never silently truncated. A prompt that leaves no room to generate in the window is not generated at
all: its Completion has text "", n_tokens 0 and finish_reason "context_overflow", and the runner fails
that question with the reason. A prompt that fits, but not with max_new_tokens more, generates up to the
end of the window (for a batch, the window left by its longest prompt) and is marked truncated when it
reaches that limit without EOS.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from ..reasoning import (
    DEFAULT_MARKERS,
    HARMONY_CHANNEL,
    SplitReply,
    rendered_opens_thinking,
    split_reply,
)
from .base import (
    FINISH_CONTEXT_OVERFLOW,
    FINISH_LENGTH,
    FINISH_STOP,
    BackendError,
    BackendOptions,
    Capabilities,
    Completion,
    Message,
    ResultCallback,
    SamplingParams,
)

# Each row samples from its own seeded generator, so a row's tokens do not depend on what shares its batch:
# batches may span categories. ("all" batches still run one after another: see the runner.)
CAPABILITIES = Capabilities(
    batch_scope="all",
    rating_probes=True,
    preflight=False,
    local=True,
    mixed_sampling=True,
    follow_ups=True,
)

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
# Weight formats loaded by unpickling, which can run arbitrary code.
_PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
# A model_max_length above this is transformers' "not set" placeholder (1e30), not a real limit.
_UNSET_MAX_LENGTH = 10**7
# A dequantised .gguf model is kept in the cache dir up to this size (a 1B-parameter model in float32).
_CONVERTED_LIMIT = 4 << 30
_CONVERTED_MARK = "converted-from-gguf"
# A prompt's first _OPENING tokens are read in a pass of their own and kept for prompts that open the
# same way (see HFBackend._prefill), up to _OPENING_BYTES of keys and values.
_OPENING = 128
_OPENING_BYTES = 256 << 20
# Prompts' rests of up to _OPENING tokens are read several rows a pass (see HFBackend._read_rows), up to
# this many tokens a pass, padding included.
_READ_TOGETHER = 1024
# The keys and values of replies to be followed by another turn (see HFBackend.chat's follow_up) are
# kept in host memory up to this many bytes (the oldest go first): 80 SmolLM2-135M turn-1 prompts and
# replies of 128 tokens take about 0.9 GB.
_FOLLOW_UP_BYTES = 2 << 30
# Where a message parsed by transformers' parse_response holds its reasoning.
PARSED_REASONING = ("thinking", "reasoning_content", "reasoning")


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


def worker_index(environ: dict[str, str] | None = None) -> int:
    """This process's xdist worker number (`gw3` -> 3); 0 in-process."""
    name = (os.environ if environ is None else environ).get("PYTEST_XDIST_WORKER", "")
    digits = name.removeprefix("gw")
    return int(digits) if digits.isdigit() else 0


def select_device(requested: str, worker: int, device_count: int) -> str:
    """The torch device for a --mtbench-device value, an xdist worker index and the visible GPU count.

    `auto` is a GPU when one is visible, else the CPU; `cuda` and `auto` give worker i the GPU i modulo
    the visible GPUs (so -n 8 on an 8-GPU box uses each GPU once); `cuda:N` pins every worker to GPU N.
    A GPU that is not there is a BackendError naming the flag.
    """
    if requested == "cpu" or (requested == "auto" and device_count == 0):
        return "cpu"
    if device_count == 0:
        raise BackendError(
            f"--mtbench-device={requested}: no CUDA GPU is visible to torch here; "
            "use --mtbench-device=cpu (or auto)"
        )
    if requested in ("auto", "cuda"):
        return f"cuda:{worker % device_count}"
    index = int(requested.removeprefix("cuda:"))
    if index >= device_count:
        raise BackendError(
            f"--mtbench-device={requested}: only {device_count} GPU(s) visible (cuda:0 to "
            f"cuda:{device_count - 1}); pick one of those or use --mtbench-device=cuda"
        )
    return requested


def device_for(options: BackendOptions) -> str:
    """The device this process runs a local model on (imports torch only when a GPU may be wanted)."""
    if options.device == "cpu":
        return "cpu"
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return select_device(options.device, worker_index(), count)


def _dtype_name(device: str) -> str:
    # bfloat16 on GPU (fast, the usual serving dtype); float32 on CPU, where half precision is slow and lossy.
    return "float32" if device == "cpu" else "bfloat16"


_IDENTITIES: dict[tuple[Any, ...], dict[str, Any]] = {}
_GENERATE_DEFAULT_TOP_K = 50


def _identity(directory: Path, gguf_file: str | None, options: BackendOptions) -> dict[str, Any]:
    """What determines this model's outputs, from file contents only (no torch, no loading).

    The tokenizer's own chat template lives in the hashed tokenizer files (or inside the .gguf); an
    override given with --mtbench-chat-template is hashed separately.
    """
    files = _model_files(directory, gguf_file)
    # With trust_remote_code the directory's Python files are part of the model, so they are hashed too.
    code = sorted(directory.glob("*.py")) if options.trust_remote_code and gguf_file is None else []
    # Memoised per process on each file's size and mtime, so a rewritten weight file is hashed again.
    stamps = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files + code)
    device = device_for(options)
    key = (
        stamps,
        options.chat_template,
        bool(code),
        device != "cpu",
        options.chat_template_kwargs,
        options.thinking_budget,
        options.think_markers,
    )
    if key not in _IDENTITIES:
        override = options.chat_template
        identity: dict[str, Any] = {
            "backend": "hf",
            "model_sha256": _hash_files(files, directory),
            "chat_template_sha256": _sha256_text(override) if override else None,
            "dtype": _dtype_name(device),
        }
        if code:
            identity["code_sha256"] = _hash_files(code, directory)
        if device != "cpu":
            # GPU kernels give other numbers than the CPU's; the CPU identity stays as it always was, so
            # CPU caches keep hitting. The GPU's index is not part of it: identical GPUs, same outputs.
            identity["device"] = "cuda"
        # Thinking settings, only when set: a plain model's identity (and cache keys) stay as they were.
        if options.chat_template_kwargs:
            identity["chat_template_kwargs"] = dict(options.chat_template_kwargs)
        if options.thinking_budget:
            identity["thinking_budget"] = options.thinking_budget
            if options.think_markers != DEFAULT_MARKERS:
                identity["think_markers"] = list(options.think_markers)
        _IDENTITIES[key] = identity
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
        self.device = device_for(options)
        # Never run code from the model directory unless the user said so (transformers' default may prompt).
        load_kwargs: dict[str, Any] = {
            "local_files_only": True,
            "trust_remote_code": options.trust_remote_code,
        }
        source = directory  # where the tokenizer and weights are read from
        converted = self._converted_dir()
        if converted is not None and (converted / _CONVERTED_MARK).is_file():
            source = converted  # this .gguf file, already dequantised by an earlier run: no conversion
        elif gguf_file is not None:
            load_kwargs["gguf_file"] = gguf_file
        else:
            _refuse_pickle(spec, directory, options)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, **load_kwargs)
        except (OSError, ValueError) as exc:
            hint = _remote_code_hint(exc)
            if not hint and gguf_file is not None:  # the tokenizer is read from the same file as the weights
                hint = " (a truncated or corrupt .gguf file? download or build it again)"
            raise BackendError(f"cannot load the tokenizer of {spec}: {_first_line(exc)}{hint}") from exc
        self.chat_template = options.chat_template or self.tokenizer.chat_template
        if not self.chat_template:
            raise BackendError(
                f"the tokenizer of {spec} has no chat template: pass one with --mtbench-chat-template=FILE"
            )
        check_template(spec, self.chat_template, from_option=options.chat_template is not None)
        # Left padding keeps every prompt's last token at the end, where generation continues.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model_kwargs = dict(load_kwargs)
        if "gguf_file" not in load_kwargs and not options.allow_pickle:
            model_kwargs["use_safetensors"] = True  # a pickle file is never the fallback
        try:
            # float32 on CPU: half-precision matmuls are slow and lossy there; GGUF weights are dequantised.
            dtype = torch.float32 if self.device == "cpu" else torch.bfloat16
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **model_kwargs)
        except _weight_errors() as exc:
            hint = _remote_code_hint(exc)
            if not hint and not isinstance(exc, OSError | ValueError):
                hint = " (a truncated or corrupt weight file? download or build it again)"
            raise BackendError(f"cannot load the model {spec}: {_first_line(exc)}{hint}") from exc
        if converted is not None and source is directory:
            _keep_converted(model, self.tokenizer, converted)
        self.model = _aligned(model.to(self.device).eval())
        # transformers 5.x renamed `past_key_values` to `cache`; older releases only know the old name.
        forward_params = inspect.signature(self.model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in forward_params else "past_key_values"
        # Logits for the last position only, where a forward pass only fills a KV cache or predicts one
        # token: the whole vocabulary's logits at every position of a prompt are a quarter of its prefill
        # on SmolLM2-135M (600 positions: 445 -> 585 a second). Named `num_logits_to_keep` before 4.49.
        keep = next(
            (name for name in ("logits_to_keep", "num_logits_to_keep") if name in forward_params), None
        )
        self._last_logits: dict[str, int] = {keep: 1} if keep else {}
        self._eos_ids = self._collect_eos_ids()
        self.context_window = self._context_window()
        # Rating distributions worked out while a judgment was generated (chat's probe_cue), by context.
        self._probed: dict[str, dict[int, float]] = {}
        # The keys and values of prompt openings read before (see _prefill), on the model's device.
        self._openings = _Openings(_OPENING_BYTES)
        # The keys and values of conversations to be continued, as far as they were read and written
        # (see chat's follow_up), in host memory.
        self._follow_ups = _FollowUps(_FOLLOW_UP_BYTES)
        # What the model keeps between steps, from one token: whether this backend builds each decoding
        # step itself (see _steps_by_position), per layer the shape of its keys and values (see
        # _kv_layout), and the memory every batch's cache is laid out in (see _slab).
        probe_cache = self._one_token_cache()
        self._own_steps = _steps_by_position(probe_cache)
        self._layout = self._kv_layout(probe_cache)
        self._pool: Any = None
        # Logits processors the model's generation config asks generate() for (see _generate).
        self._config_processors = _config_processors(self.model.generation_config)
        # Whether rating probes run their ten continuations as one row (see _tail_scores_tree); None until
        # the first probe has checked it against ten rows.
        self._tree_probes: bool | None = None
        # Thinking models: harmony channels (gpt-oss) are read with their tokens; the closing marker's
        # token, where it is one, counts the reasoning's tokens exactly.
        vocab = self.tokenizer.get_vocab()
        self._harmony = HARMONY_CHANNEL in vocab
        self._close_id: int | None = vocab.get(options.think_markers[1])

    def _converted_dir(self) -> Path | None:
        """Where this .gguf model's dequantised weights and tokenizer are kept between runs (None for a
        model directory). Reading a .gguf file costs 16 s on SmolLM2-135M, mostly parsing its metadata
        and vocabulary in Python, where the same weights as safetensors load in 0.3 s. Keyed by the
        file's content hash (the identity's), the dtype and the transformers release that converted it."""
        if self._gguf_file is None:
            return None
        import transformers

        from pytest_mtbench.data import default_cache_dir

        root = Path(self._options.cache_dir) if self._options.cache_dir else default_cache_dir()
        model_sha256 = self.identity()["model_sha256"]
        name = f"{model_sha256[:32]}-{_dtype_name(self.device)}-transformers-{transformers.__version__}"
        return root / "converted" / name

    def _collect_eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(int(i) for i in source)
        return ids

    def _context_window(self) -> int | None:
        """Tokens the model can attend to (prompt + reply), or None when neither config nor tokenizer says."""
        config = self.model.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        limits: list[int] = []
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(text_config, name, None)
            if isinstance(value, int) and value > 0:
                limits.append(value)
                break
        tokenizer_limit = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < _UNSET_MAX_LENGTH:
            limits.append(tokenizer_limit)
        return min(limits) if limits else None

    def identity(self) -> dict[str, Any]:
        """Content hashes of the weights, tokenizer and chat template (never the path); memoised."""
        if self._identity is None:
            self._identity = _identity(self._directory, self._gguf_file, self._options)
        return dict(self._identity)

    def render(self, conversation: list[Message]) -> str:
        """The prompt text for one conversation, ending with the assistant generation prompt; the chat
        template's own switches (e.g. `enable_thinking`) from --mtbench-chat-template-kwargs."""
        return self.tokenizer.apply_chat_template(
            conversation,
            chat_template=self.chat_template,
            add_generation_prompt=True,
            tokenize=False,
            **dict(self._options.chat_template_kwargs),
        )

    def _split(self, prompt: str, generated: list[int]) -> SplitReply | None:
        """The reasoning/answer split of a reply's generated tokens (EOS excluded), None when it has no
        reasoning. Where the tokenizer declares its reply format (`response_template`), transformers' own
        parse_response splits it; else reasoning.split_reply. A model whose messages go in harmony channels
        (gpt-oss) is read with the channel tokens left in; a prompt that opens the reasoning itself
        (DeepSeek-R1's template ends with the opening marker) has the marker put back before the split."""
        parsed = self._parsed(prompt, generated)
        if parsed is not None:
            return parsed
        markers = self._options.think_markers
        if self._harmony:
            raw = self.tokenizer.decode(generated, skip_special_tokens=False)
        else:
            raw = self.tokenizer.decode(generated, skip_special_tokens=True).strip()
            if rendered_opens_thinking(prompt, markers) and not raw.startswith(markers[0]):
                raw = f"{markers[0]}\n{raw}"
        split = split_reply(raw, markers=markers)
        return split if split.thought else None

    def _parsed(self, prompt: str, generated: list[int]) -> SplitReply | None:
        """The split transformers' own response parsing gives, where the tokenizer declares its format
        (`response_template`); None where it does not, or finds no reasoning (the markers decide then)."""
        if getattr(self.tokenizer, "response_template", None) is None:
            return None
        try:
            message = self.tokenizer.parse_response(generated, prefix=prompt)
        except Exception:  # noqa: BLE001 - a format the parser cannot read: the markers decide
            return None
        if not isinstance(message, dict):
            return None
        thought = next(
            (message[k] for k in PARSED_REASONING if isinstance(message.get(k), str) and message[k].strip()),
            None,
        )
        content = message.get("content")
        if thought is None or not isinstance(content, str | None):
            return None
        return SplitReply((content or "").strip(), thought.strip())

    def _reply(
        self, prompt: str, generated: list[int], written: list[int] | None = None
    ) -> tuple[str, str | None, int | None]:
        """(answer, reasoning, reasoning tokens) of a reply's generated tokens (EOS excluded; `written`:
        the same with the EOS, which a plain model's text has always been decoded from, unchanged)."""
        split = self._split(prompt, generated)
        if split is None:
            text = self.tokenizer.decode(generated if written is None else written, skip_special_tokens=True)
            return text.strip(), None, None
        return split.answer, split.reasoning, self._reasoning_length(generated, split)

    def _reasoning_length(self, generated: list[int], split: SplitReply) -> int:
        """Tokens spent reasoning: up to and including the closing marker's token when the tokenizer has
        it as one token (Qwen3, DeepSeek-R1), else the reasoning text's own count."""
        if split.finished and self._close_id is not None and self._close_id in generated:
            return generated.index(self._close_id) + 1
        if not split.finished:
            return len(generated)
        return len(self._encode(split.reasoning or ""))

    def _encode(self, text: str) -> list[int]:
        # The rendered template already holds BOS; adding specials again would double it.
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def chat(
        self,
        conversations: list[list[Message]],
        params: SamplingParams | Sequence[SamplingParams],
        on_result: ResultCallback | None = None,
        probe_cue: str | None = None,
        probe_if: Callable[[int, str], bool] | None = None,
        follow_up: Callable[[int], bool] | None = None,
    ) -> list[Completion]:
        """Generate one reply per conversation, in input order, batching similar lengths together.

        `params` is one SamplingParams for all, or one per conversation (all with the same
        max_new_tokens): greedy and sampled rows of any temperatures then share batches, each row
        decoded as it would be alone. `on_result(index, completion)` is called as soon as each batch is
        done. With `probe_cue` (a judge whose ratings may be probed next), each reply's rating
        distribution after `probe_cue` is worked out on the prompt's KV cache while it is at hand, and
        `rating_probabilities` then serves it instead of reading the whole prompt again;
        `probe_if(index, text)` limits that to the replies that will be probed.

        `follow_up(index)` says which conversations will be continued (their reply, then another user
        turn): the keys and values of such a conversation's prompt and reply are kept, and the next
        prompt that starts with those tokens (the next turn's) is read from where they end instead of
        from its start. Turn 2's prompt holds turn 1's question and answer, so this is most of its
        reading. The numbers are those of reading it all, to float rounding (a reply's keys and values
        were worked out one token at a time, as it was written); a turn 2 whose turn 1 came from the
        result cache is read in full.

        With a thinking budget (BackendOptions.thinking_budget), see `_chat_with_budget`.
        """
        rows = [params] * len(conversations) if isinstance(params, SamplingParams) else list(params)
        if len(rows) != len(conversations):
            raise ValueError(f"{len(rows)} sampling parameters for {len(conversations)} conversations")
        if len({p.max_new_tokens for p in rows}) > 1:
            raise ValueError("conversations sharing a chat() call must share max_new_tokens")
        if self._options.thinking_budget:
            return self._chat_with_budget(conversations, rows, on_result)
        rendered = [self.render(conversation) for conversation in conversations]
        return self._chat_rows(rendered, rows, on_result, probe_cue, probe_if, follow_up)

    def _chat_with_budget(
        self,
        conversations: list[list[Message]],
        rows: list[SamplingParams],
        on_result: ResultCallback | None,
    ) -> list[Completion]:
        """Budget forcing: each reply first gets `thinking_budget` tokens. One still thinking there has its
        reasoning closed for it (a new line, the closing marker, a blank line, as the templates of these
        models write it) and then writes its answer with its own max_new_tokens; one whose reasoning had
        ended goes on with what is left of max_new_tokens for its answer; one with no reasoning goes on
        to max_new_tokens in all; one that ended is done."""
        budget = self._options.thinking_budget
        answer_limit = rows[0].max_new_tokens if rows else 0
        rendered = [self.render(conversation) for conversation in conversations]
        written: dict[int, tuple[list[int], bool]] = {}
        results = self._chat_rows(
            rendered, [replace(p, max_new_tokens=budget) for p in rows], keep_tokens=written
        )
        forced = self._encode(f"\n{self._options.think_markers[1]}\n\n")
        rooms: dict[int, list[int]] = {}  # room left for the answer -> the replies that go on with it
        before: dict[int, list[int]] = {}  # what each of those reads after its prompt: its reply so far
        for index, completion in enumerate(results):
            if completion.finish_reason != FINISH_LENGTH:
                continue  # ended within the budget, or never generated
            generated = written[index][0]
            split = self._split(rendered[index], generated)
            if split is not None and not split.finished:
                before[index], room = generated + forced, answer_limit
            elif split is not None:
                answer_so_far = len(generated) - self._reasoning_length(generated, split)
                before[index], room = generated, answer_limit - answer_so_far
            else:
                before[index], room = generated, answer_limit - len(generated)
            if room > 0:
                rooms.setdefault(room, []).append(index)
        for room, indices in rooms.items():
            more: dict[int, tuple[list[int], bool]] = {}
            self._chat_rows(
                [rendered[i] for i in indices],
                [replace(rows[i], max_new_tokens=room) for i in indices],
                keep_tokens=more,
                tails=[before[i] for i in indices],
            )
            for position, index in enumerate(indices):
                tokens, ended = more.get(position, ([], False))
                whole = before[index] + tokens
                text, reasoning, reasoning_tokens = self._reply(rendered[index], whole)
                forced = len(before[index]) > len(written[index][0])  # the closing marker was written for it
                if forced:
                    reasoning_tokens = len(written[index][0])  # what it spent thinking: the budget
                results[index] = Completion(
                    text=text,
                    n_tokens=len(written[index][0]) + len(tokens),
                    finish_reason=FINISH_STOP if ended else FINISH_LENGTH,
                    truncated=not ended,
                    prompt_tokens=results[index].prompt_tokens,
                    reasoning=reasoning,
                    reasoning_tokens=reasoning_tokens,
                    extra={"reasoning_forced": True} if forced else {},
                )
        if on_result is not None:
            for index, completion in enumerate(results):
                on_result(index, completion)
        return results

    def _chat_rows(
        self,
        rendered: list[str],
        rows: list[SamplingParams],
        on_result: ResultCallback | None = None,
        probe_cue: str | None = None,
        probe_if: Callable[[int, str], bool] | None = None,
        follow_up: Callable[[int], bool] | None = None,
        keep_tokens: dict[int, tuple[list[int], bool]] | None = None,
        tails: list[list[int]] | None = None,
    ) -> list[Completion]:
        """chat() on rendered prompts. `tails[i]` are token ids read after prompt i's own (a reply begun
        earlier); `keep_tokens` receives each reply's generated ids (without its EOS) and whether it
        ended, by index."""
        torch = self._torch
        encoded = [self._encode(text) for text in rendered]
        if tails is not None:
            encoded = [ids + tail for ids, tail in zip(encoded, tails)]
        results: list[Completion | None] = [None] * len(encoded)
        fits: list[int] = []
        for index, ids in enumerate(encoded):
            if self.context_window is not None and len(ids) >= self.context_window:
                # Never truncated silently: the prompt is reported as not fitting, not generated.
                results[index] = Completion(
                    text="", n_tokens=0, finish_reason=FINISH_CONTEXT_OVERFLOW, prompt_tokens=len(ids)
                )
                if on_result is not None:
                    on_result(index, results[index])
            else:
                fits.append(index)
        # Longest first: similar lengths share a batch (less padding) and memory peaks up front.
        order = sorted(fits, key=lambda i: -len(encoded[i]))
        batch_size = max(1, self._options.batch_size)
        max_new_tokens = rows[0].max_new_tokens if rows else 0
        lengths = [len(encoded[i]) for i in order]
        with torch.inference_mode():
            for start, end in _batches(lengths, batch_size, max_new_tokens):
                indices = order[start:end]
                prompts = [encoded[i] for i in indices]
                width = max(len(ids) for ids in prompts)
                limit = max_new_tokens
                if self.context_window is not None:  # what the window leaves after the longest prompt
                    limit = min(limit, self.context_window - width)

                def leave(
                    rows_leaving: list[tuple[int, int]],
                    tokens: list[list[int]],
                    cache: Any,
                    indices: list[int] = indices,
                    width: int = width,
                    limit: int = limit,
                ) -> None:
                    """Completions of the batch rows leaving generation, (batch row, cache row) each, and
                    their rating distributions while their keys and values are still in `cache`."""
                    # The cache holds each row's prompt and every generated token but the last.
                    fed = int(cache.get_seq_length()) - width if cache is not None else 0
                    for row, cache_row in rows_leaving:
                        index = indices[row]
                        n_tokens, ended = self._count_generated(tokens[row])
                        generated = tokens[row][: n_tokens - int(ended)]
                        if keep_tokens is not None:
                            keep_tokens[index] = (generated, ended)
                        text, reasoning, reasoning_tokens = self._reply(
                            rendered[index], generated, tokens[row][:n_tokens]
                        )
                        cut_off = not ended and n_tokens >= limit
                        results[index] = Completion(
                            text=text,
                            n_tokens=n_tokens,
                            finish_reason=FINISH_LENGTH if cut_off else FINISH_STOP,
                            truncated=cut_off,
                            prompt_tokens=len(encoded[index]),
                            reasoning=reasoning,
                            reasoning_tokens=reasoning_tokens,
                        )
                        # This row's tokens so far (its prompt, then its reply) and their KV cache. Not
                        # the EOS that ended it: _decode reads padding in its place.
                        known = encoded[index] + tokens[row][: min(n_tokens - int(ended), fed)]
                        begin = width - len(encoded[index])
                        if follow_up is not None and follow_up(index) and self._layout is not None:
                            kept = _row_slices(cache, cache_row, begin, len(known))
                            if kept is not None:  # copied out: the next batch reuses the batch's memory
                                host = [(k.to("cpu", copy=True), v.to("cpu", copy=True)) for k, v in kept]
                                self._follow_ups.put(encoded[index], known, host)
                        if probe_cue is None or (probe_if is not None and not probe_if(index, text)):
                            continue
                        context = rendered[index] + text + probe_cue
                        cut = functools.partial(_row_cache, cache, cache_row, begin)
                        self._probed[context] = self._rating_distribution(context, (cut, known))

                cache = self._prefill_rows(prompts, width, limit)
                sampler = self._row_sampler([rows[i] for i in indices])
                decode = self._decode if self._own_steps and not self._config_processors else self._generate
                decode(prompts, width, limit, cache, sampler, leave)
                if on_result is not None:
                    for index in indices:
                        on_result(index, results[index])
        return [r for r in results if r is not None]

    def _decode(
        self,
        prompts: list[list[int]],
        width: int,
        limit: int,
        cache: Any,
        sampler: Callable[[Any, list[int]], Any],
        leave: Callable[[list[tuple[int, int]], list[list[int]], Any], None],
    ) -> None:
        """Up to `limit` new tokens for each of `prompts` (a batch `width` tokens wide, left-padded),
        one forward pass a step, from `cache` (_prefill_rows': every prompt but its last token) or, when
        that is None, from a batched read of the whole prompts.

        A row ends at EOS. Rows that ended leave the batch as soon as that saves more than it costs (the
        remaining rows' keys and values are moved up in place): at batch 64, a tenth of the row-steps went
        to rows that had ended while a longer one went on. `leave(rows, tokens, cache)` hears of each row
        (batch row, row in `cache`) just before it leaves, and of all that remain at the end. Each row's
        numbers are its own: rows never attend to each other, and `sampler(scores, batch rows)` draws
        each sampled row's token from that row's own generator."""
        torch = self._torch
        pad = self.tokenizer.pad_token_id
        count = len(prompts)
        live = list(range(count))  # the batch row of each row of the cache
        tokens: list[list[int]] = [[] for _ in range(count)]
        ended = [False] * count
        padded, mask = self._left_padded(prompts, width)
        if cache is None:
            feed = padded
            positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
            past: dict[str, Any] = {}
        else:
            feed = torch.tensor([[ids[-1]] for ids in prompts], device=self.device)
            positions = torch.tensor([[len(ids) - 1] for ids in prompts], device=self.device)
            past = {self._cache_kwarg: cache}
        # Rows can leave only a cache _prefill_rows laid out; the model keeps extending that same cache.
        layers = _slab_layers(cache)
        for step in range(limit):
            out = self.model(
                input_ids=feed,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **past,
                **self._last_logits,
            )
            cache = getattr(out, "cache", None) or out.past_key_values
            past = {self._cache_kwarg: cache}
            chosen = sampler(out.logits[:, -1, :].float(), live).tolist()
            for token, row in zip(chosen, live):
                if not ended[row]:
                    tokens[row].append(token)
                    ended[row] = token in self._eos_ids
            going = [i for i, row in enumerate(live) if not ended[row]]
            if not going or step == limit - 1:
                break
            done = len(live) - len(going)
            # Moving a row up costs about what a step costs it; an ended row costs a step per step left.
            if done and layers and done * (limit - step - 1) > 2 * len(going):
                leave([(row, i) for i, row in enumerate(live) if ended[row]], tokens, cache)
                for layer in layers:
                    layer.keep(going)
                live, chosen = [live[i] for i in going], [chosen[i] for i in going]
                keep = torch.tensor(going, device=self.device)
                mask, positions = mask[keep], positions[keep]
            # Rows that ended read padding until they leave, as generate() has them do.
            feed = torch.tensor(
                [[pad if ended[row] else token] for token, row in zip(chosen, live)], device=self.device
            )
            mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
            positions = positions[:, -1:] + 1
        leave([(row, i) for i, row in enumerate(live)], tokens, cache)

    def _generate(
        self,
        prompts: list[list[int]],
        width: int,
        limit: int,
        cache: Any,
        sampler: Callable[[Any, list[int]], Any],
        leave: Callable[[list[tuple[int, int]], list[list[int]], Any], None],
    ) -> None:
        """_decode through generate() itself, for a model whose generation config asks for logits
        processors (a repetition penalty, say: see _config_processors), which generate() applies before
        `sampler` picks each token. Every row stays to the end."""
        from transformers import LogitsProcessor

        torch = self._torch
        pad = self.tokenizer.pad_token_id
        everyone = list(range(len(prompts)))

        class Pick(LogitsProcessor):
            def __call__(self, input_ids: Any, scores: Any) -> Any:
                # All but the picked token is ruled out, so generate's greedy step takes that token.
                picked = torch.full_like(scores, -math.inf)
                picked[torch.arange(len(everyone), device=scores.device), sampler(scores, everyone)] = 0.0
                return picked

        padded, mask = self._left_padded(prompts, width)
        output = self.model.generate(
            input_ids=padded,
            attention_mask=mask,
            logits_processor=[Pick()],
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=pad,
            max_new_tokens=limit,
            return_dict_in_generate=True,
            **({self._cache_kwarg: cache} if cache is not None else {}),
        )
        cache = getattr(output, "cache", None) or getattr(output, "past_key_values", None)
        leave([(row, row) for row in everyone], output.sequences[:, width:].tolist(), cache)

    def _left_padded(self, prompts: list[list[int]], width: int) -> tuple[Any, Any]:
        """The batch's token ids, left-padded to `width`, and its attention mask (0 on the padding)."""
        torch = self._torch
        pad = self.tokenizer.pad_token_id
        ids = [[pad] * (width - len(prompt)) + prompt for prompt in prompts]
        mask = [[0] * (width - len(prompt)) + [1] * len(prompt) for prompt in prompts]
        return torch.tensor(ids, device=self.device), torch.tensor(mask, device=self.device)

    def _one_token_cache(self) -> Any:
        """The cache the model returns after reading one token (None when it returns none)."""
        torch = self._torch
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([[0]], device=self.device), use_cache=True)
        return getattr(out, "cache", None) or getattr(out, "past_key_values", None)

    def _kv_layout(self, cache: Any) -> list[tuple[int, int, int]] | None:
        """Per layer, (heads, key size, value size) of the keys and values in `cache` (the model's after
        one token); None for a model whose cache layers are not all full attention by position (sliding
        windows, linear attention) or keep another dtype than its weights, or a transformers release
        before cache layers: _prefill_rows then leaves its batches to a batched read."""
        if _slab_layer_class() is None:
            return None
        layers = _position_layers(cache)
        if layers is None or any(layer.keys.dtype != self.model.dtype for layer in layers):
            return None
        return [(layer.keys.shape[1], layer.keys.shape[-1], layer.values.shape[-1]) for layer in layers]

    def _slab(self, rows: int, capacity: int) -> list[tuple[Any, Any]]:
        """Per layer, key and value tensors (rows, heads, capacity, size) for a batch, laid out in memory
        this backend allocated once and reuses for every batch (grown when a batch needs more): memory
        taken afresh costs a page fault per page when first written, and a batch-64 cache allocated per
        batch measured 0.2 s for a layer's keys (and again for its values) here, more than the writes
        themselves."""
        torch = self._torch
        shapes = [
            (rows, heads, capacity, size) for heads, keys, values in self._layout for size in (keys, values)
        ]
        align = 16  # elements: every tensor starts 64 bytes aligned, as torch allocates them
        spans = [-(-math.prod(shape) // align) * align for shape in shapes]
        if self._pool is None or self._pool.numel() < sum(spans):
            self._pool = None  # released before the larger one is taken
            self._pool = torch.empty(sum(spans), dtype=self.model.dtype, device=self.device)
        tensors, offset = [], 0
        for shape, span in zip(shapes, spans):
            tensors.append(self._pool[offset : offset + math.prod(shape)].view(shape))
            offset += span
        return list(zip(tensors[::2], tensors[1::2]))

    def _prefill_rows(self, prompts: list[list[int]], width: int, room: int) -> Any:
        """The KV cache of a left-padded batch of prompts, all but each prompt's last token. A prompt
        that continues a kept turn (see chat's follow_up) starts from that turn's keys and values. What
        is left to read is read in place, into each row's part of the batch's cache (see _slab), which
        has room for `room` more tokens: a rest of more than _OPENING tokens in passes of its own (see
        _prefill), shorter rests several rows a pass with little padding (see _read_rows), never the
        whole batch at once (a batch of long prompts of mixed lengths is mostly padding). Decoding
        writes in place too and attends to the positions written so far only. The numbers are those of
        a batched read, to float rounding. None (decoding then reads the batch itself) for a prompt of
        one token or a model whose cache this cannot lay out."""
        if min(len(ids) for ids in prompts) < 2 or self._layout is None:
            return None
        from transformers import DynamicCache

        slab_layer = _slab_layer_class()
        storage = self._slab(len(prompts), width - 1 + room)
        short: list[tuple[int, int]] = []  # (row, positions already in its cache) of short reads
        for row, ids in enumerate(prompts):
            begin = width - len(ids)
            for keys, values in storage:  # padding, masked out: zeros, never what a last batch left
                keys[row, :, :begin].zero_()
                values[row, :, :begin].zero_()
            earlier = self._follow_ups.take(ids[:-1])  # the previous turn's, kept by chat's follow_up
            done = 0
            if earlier is not None:
                done, part = earlier
                for (keys, values), (kept_keys, kept_values) in zip(storage, part):
                    keys[row, :, begin : begin + done].copy_(kept_keys[0, :, :done])
                    values[row, :, begin : begin + done].copy_(kept_values[0, :, :done])
            if len(ids) - 1 - done <= _OPENING:
                if done < len(ids) - 1:
                    short.append((row, done))
                continue
            reading = DynamicCache()
            reading.layers = [
                slab_layer(keys[row : row + 1, :, begin:], values[row : row + 1, :, begin:], done)
                for keys, values in storage
            ]
            if done:
                self._read(ids[done:-1], reading)
            else:
                self._prefill(ids[:-1], reading)
        for group in _reading_groups([((row, done), len(prompts[row]) - 1 - done) for row, done in short]):
            self._read_rows(sorted(group), prompts, width, storage)
        cache = DynamicCache()
        cache.layers = [slab_layer(keys, values, width - 1) for keys, values in storage]
        return cache

    def _read_rows(
        self, rows: list[tuple[int, int]], prompts: list[list[int]], width: int, storage: list[Any]
    ) -> None:
        """Reads the rest of each of these rows' prompts (all but its last token), at most _OPENING
        tokens each, in one forward pass over their rests left-padded to the longest: (row, n) each,
        whose first n positions are already in its place in `storage` (a kept turn's, or none). A
        forward pass streams the whole model's weights whatever it reads: a row's 30 to 50 tokens of
        turn 2 read alone went at about 250 tokens/s on SmolLM2, 16 rows together at about 640.

        Every row's rest ends where its prompt's last token will be fed (the batch is left-padded), so
        the rests are read in place: the keys and values each row's tokens make are written to its
        positions only (never padding's over a kept turn's), and attention reads the rows' positions
        as `storage` holds them."""
        from transformers import DynamicCache

        torch = self._torch
        rests = [prompts[row][done:-1] for row, done in rows]
        longest = max(len(rest) for rest in rests)
        first = min(width - len(prompts[row]) for row, _ in rows)  # the earliest position any reads
        ids, _ = self._left_padded(rests, longest)
        # Each row attends to its whole prompt but the last token, kept or read now, from position `first`.
        _, mask = self._left_padded([prompts[row][:-1] for row, _ in rows], width - 1 - first)
        positions = [
            [0] * (longest - len(rest)) + list(range(done, done + len(rest)))
            for rest, (_, done) in zip(rests, rows)
        ]
        reading_layer = _reading_layer_class()
        index = torch.tensor([row for row, _ in rows], device=self.device)
        spans = [(row, len(rest)) for (row, _), rest in zip(rows, rests)]
        cache = DynamicCache()
        cache.layers = [
            reading_layer(keys, values, index, spans, first, width - 1 - longest) for keys, values in storage
        ]
        self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=torch.tensor(positions, device=self.device),
            use_cache=True,
            **{self._cache_kwarg: cache},
            **self._last_logits,
        )

    def _prefill(self, ids: list[int], cache: Any) -> None:
        """Reads `ids` as the start of a prompt into `cache` (an empty one-row cache of slab layers).

        A prompt longer than _OPENING tokens is read in two passes, its first _OPENING tokens, then the
        rest on their cache. The opening's keys and values are kept (self._openings) and serve every
        later prompt that opens with the same tokens instead of its first pass: every judge prompt opens
        with its template's instructions (133-152 of SmolLM2's tokens, for an average judge prompt of
        584), so all but the first prompt of a template skip 128 tokens. Every prompt is read in these
        same two passes whether its opening was kept or not, so its numbers never depend on what was read
        before it, in its batch or any other."""
        if len(ids) <= _OPENING:
            self._read(ids, cache)
            return
        key = tuple(ids[:_OPENING])
        opening = self._openings.get(key)
        if opening is None:
            self._read(ids[:_OPENING], cache)
            self._openings.put(key, [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers])
        else:
            for layer, (keys, values) in zip(cache.layers, opening):
                layer.update(keys, values)
        self._read(ids[_OPENING:], cache)

    def _read(self, ids: list[int], cache: Any) -> None:
        """Adds the keys and values of `ids` (positions after those in `cache`) to `cache`."""
        torch = self._torch
        self.model(
            input_ids=torch.tensor([ids], device=self.device),
            use_cache=True,
            **{self._cache_kwarg: cache},
            **self._last_logits,
        )

    def _row_sampler(self, rows: list[SamplingParams]) -> Callable[[Any, list[int]], Any]:
        """`sampler(scores, batch rows)`: the next token of each row of `scores` (the last position's
        logits, in float32), the row of `rows` each stands for given by `batch rows`. Greedy rows take the
        argmax. Each sampled row is warped as `generate(do_sample=True)` would warp it (its temperature,
        then the model's top_k / top_p / min_p) and draws from its own generator, seeded with its seed: a
        question's draws never depend on the batch it is in, and a question alone in its batch draws
        exactly what `torch.manual_seed(seed)` + `generate(do_sample=True)` drew."""
        from transformers import (
            MinPLogitsWarper,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        torch = self._torch
        config = self.model.generation_config
        warpers: list[Any] = []
        # generate() fills an unset top_k with its documented default, 50; so does this sampler.
        top_k = config.top_k if config.top_k is not None else _GENERATE_DEFAULT_TOP_K
        if top_k:
            warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
        if config.top_p is not None and config.top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=config.top_p, min_tokens_to_keep=1))
        if config.min_p is not None:
            warpers.append(MinPLogitsWarper(min_p=config.min_p, min_tokens_to_keep=1))
        # The default generator lives on the CPU; on a GPU each row gets a CUDA generator instead.
        rngs = {
            row: torch.Generator(device=self.device).manual_seed(p.seed)
            for row, p in enumerate(rows)
            if not p.greedy
        }
        temperature = {p.temperature: TemperatureLogitsWarper(p.temperature) for p in rows if not p.greedy}

        def sampler(scores: Any, present: list[int]) -> Any:
            chosen = scores.argmax(-1)
            # Sampled rows by temperature (each group is warped as one sub-batch; every warper works per row).
            groups: dict[float, list[int]] = {}
            for i, row in enumerate(present):
                if row in rngs:
                    groups.setdefault(rows[row].temperature, []).append(i)
            for t, members in groups.items():
                index = torch.tensor(members, device=scores.device)
                sub = scores[index]
                for warper in [temperature[t]] if t != 1.0 else []:
                    sub = warper(None, sub)
                for warper in warpers:
                    sub = warper(None, sub)
                probs = torch.softmax(sub, dim=-1)
                draws = [
                    torch.multinomial(probs[j : j + 1], 1, generator=rngs[present[i]])
                    for j, i in enumerate(members)
                ]
                chosen[index] = torch.cat(draws)[:, 0]
            return chosen

        return sampler

    def _count_generated(self, tokens: list[int]) -> tuple[int, bool]:
        """(tokens up to and including the first EOS, whether there was one); the rest is padding."""
        for position, token in enumerate(tokens):
            if token in self._eos_ids:
                return position + 1, True
        return len(tokens), False

    def rating_probabilities(
        self, conversations: list[list[Message]], judgments: list[str], cue: str
    ) -> list[dict[int, float]]:
        """Probability of each rating 1..10 following `<prompt><judgment><cue>`, normalised over the ten."""
        if len(conversations) != len(judgments):
            raise ValueError("rating_probabilities needs one judgment per conversation")
        contexts = [self.render(c) + judgment + cue for c, judgment in zip(conversations, judgments)]
        return [self._probed.pop(context, None) or self._rating_distribution(context) for context in contexts]

    def _rating_distribution(
        self, context: str, start: tuple[Callable[[int], Any], list[int]] | None = None
    ) -> dict[int, float]:
        """`start` is (cut, token ids) of what the context's judge has just read and written, when at
        hand: `cut(n)` is the KV cache of the first n of those ids (None for a cache kind it cannot cut).
        Only what follows the longest common start of those ids and the context is then run, on that
        cache (same numbers, to float rounding): the cue and what tokenises differently."""
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
        firsts = [split - prefix for split in splits]  # tail tokens before these belong to the context

        def run(tree: bool) -> list[float]:
            done, past = 0, {}  # type: tuple[int, dict[str, Any]]
            if start is not None:
                cut, ids = start
                # At least one position is left to run: its logits predict each tail's first token.
                reuse = min(_common_prefix(context_ids, ids), prefix - 1)
                cache = cut(reuse) if reuse > 0 else None  # a fresh cache each time: runs extend it
                if cache is not None:
                    done, past = reuse, {self._cache_kwarg: cache}
            torch = self._torch
            with torch.inference_mode():
                # What the cache lacks of the context, with logits for its last position only.
                head_ids = torch.tensor([context_ids[done:prefix]], device=self.device)
                head = self.model(input_ids=head_ids, use_cache=True, **past, **self._last_logits)
                score = self._tail_scores_tree if tree else self._tail_scores_rows
                return score(head, prefix, tails, firsts)

        if self._tree_probes is None:
            # Once per model: the one-row tree needs a model that takes a custom 4D attention mask.
            rows = run(tree=False)
            try:
                tree: list[float] | None = run(tree=True)
            except (TypeError, ValueError, RuntimeError):
                tree = None
            self._tree_probes = tree is not None and max(abs(a - b) for a, b in zip(tree, rows)) < 1e-3
            scores = tree if tree is not None and self._tree_probes else rows
        else:
            scores = run(tree=self._tree_probes)
        top = max(scores)
        weights = [math.exp(score - top) for score in scores]
        total = sum(weights)
        return {rating: weight / total for rating, weight in zip(RATINGS, weights)}

    def _tail_scores_tree(
        self, head: Any, prefix: int, tails: list[list[int]], firsts: list[int]
    ) -> list[float]:
        """Each tail's log-probability after the context, from the head's output (the context's last
        position, on its cache) and one more row: every distinct start of a tail once, each attending
        to the context and to its own earlier tokens only (a 4D mask), at its own position."""
        torch = self._torch
        first = torch.log_softmax(head.logits[0, -1].float(), dim=-1)
        nodes: dict[tuple[int, ...], int] = {}  # a tail's first j tokens, whose logits predict token j
        for tail in tails:
            for j in range(1, len(tail)):
                nodes.setdefault(tuple(tail[:j]), len(nodes))
        if nodes:
            order = list(nodes)
            allowed = torch.zeros((len(order), prefix + len(order)), dtype=torch.bool, device=self.device)
            allowed[:, :prefix] = True
            for row, node in enumerate(order):
                for j in range(1, len(node) + 1):
                    allowed[row, prefix + nodes[node[:j]]] = True
            dtype = self.model.dtype
            mask = torch.zeros(allowed.shape, dtype=dtype, device=self.device)
            mask = mask.masked_fill(~allowed, torch.finfo(dtype).min)[None, None]
            cache = getattr(head, "cache", None) or head.past_key_values
            rest = self.model(
                input_ids=torch.tensor([[node[-1] for node in order]], device=self.device),
                position_ids=torch.tensor([[prefix + len(node) - 1 for node in order]], device=self.device),
                attention_mask=mask,
                use_cache=True,
                **{self._cache_kwarg: cache},
            )
            after = torch.log_softmax(rest.logits[0].float(), dim=-1)
        return [
            sum(
                float(first[tail[0]] if j == 0 else after[nodes[tuple(tail[:j])], tail[j]])
                for j in range(begin, len(tail))
            )
            for tail, begin in zip(tails, firsts)
        ]

    def _tail_scores_rows(
        self, head: Any, prefix: int, tails: list[list[int]], firsts: list[int]
    ) -> list[float]:
        """As _tail_scores_tree, with the tails as right-padded rows of a batch on copies of the head's
        cache: any model runs it, at ten copies of the context's cache."""
        torch = self._torch
        width = max(len(t) for t in tails)
        pad = self.tokenizer.pad_token_id
        cache = getattr(head, "cache", None) or head.past_key_values
        cache.batch_repeat_interleave(len(tails))
        # Right padding: causal attention means padding after a tail never changes its log-probs.
        tail_ids = torch.tensor([t + [pad] * (width - len(t)) for t in tails], device=self.device)
        mask = torch.tensor(
            [[1] * (prefix + len(t)) + [0] * (width - len(t)) for t in tails], device=self.device
        )
        rest = self.model(
            input_ids=tail_ids, attention_mask=mask, use_cache=True, **{self._cache_kwarg: cache}
        )
        # Row r, step j predicts tail token j: step 0 from the prompt's last position, then the tails.
        logits = torch.cat([head.logits[:, -1:].expand(len(tails), -1, -1), rest.logits[:, :-1]], dim=1)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        return [
            sum(float(log_probs[row, j, tail[j]]) for j in range(begin, len(tail)))
            for row, (tail, begin) in enumerate(zip(tails, firsts))
        ]

    def close(self) -> None:
        """Drop the model and its batches' cache memory so they can be reclaimed."""
        self.model = None
        self._pool = None
        self._follow_ups = _FollowUps(_FOLLOW_UP_BYTES)
        import gc

        gc.collect()


_Part = list[tuple[Any, Any]]  # keys and values, per layer


def _part_bytes(part: _Part) -> int:
    return sum(keys.numel() * keys.element_size() * 2 for keys, _ in part)


class _Openings:
    """Prompt openings' keys and values (per layer) by their tokens, within a budget of bytes.

    Openings that were used again go last when room is needed: a template's opening serves every
    prompt of it, while most openings (a prompt's own question) are never asked for again."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._size = 0
        self._entries: OrderedDict[tuple[int, ...], tuple[_Part, int, bool]] = OrderedDict()

    def get(self, key: tuple[int, ...]) -> _Part | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries[key] = (entry[0], entry[1], True)
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: tuple[int, ...], part: _Part) -> None:
        size = _part_bytes(part)
        if size > self._budget or key in self._entries:
            return
        while self._size + size > self._budget:
            # The least recently used opening never used again, else the least recently used of all.
            victim = next(
                (k for k, (_, _, used) in self._entries.items() if not used), next(iter(self._entries))
            )
            self._size -= self._entries.pop(victim)[1]
        self._entries[key] = (part, size, False)
        self._size += size

    def __len__(self) -> int:
        return len(self._entries)


class _FollowUps:
    """The keys and values (per layer) of conversations that will be continued, by the prompt they
    answered, within a budget of bytes (the oldest go first). Each serves one later prompt, the next
    turn's, which starts with that prompt and as much of the reply as tokenises the same way again."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._size = 0
        # prompt -> (its tokens and the reply's, their keys and values per layer, bytes)
        self._entries: OrderedDict[tuple[int, ...], tuple[list[int], _Part, int]] = OrderedDict()

    def put(self, prompt: list[int], known: list[int], part: _Part) -> None:
        """Keeps `part`, the keys and values of `known` (`prompt`, then the reply's tokens read)."""
        size = _part_bytes(part)
        if size > self._budget:
            return
        self._entries.pop(tuple(prompt), None)
        while self._entries and self._size + size > self._budget:
            self._size -= self._entries.popitem(last=False)[1][2]
        self._entries[tuple(prompt)] = (known, part, size)
        self._size += size

    def take(self, ids: list[int]) -> tuple[int, _Part] | None:
        """(n, keys and values) of the kept conversation whose prompt `ids` continues, whose first n
        positions are those of ids[:n], and forgets it; None when `ids` continues none."""
        for prompt in self._entries:
            if len(prompt) < len(ids) and tuple(ids[: len(prompt)]) == prompt:
                known, part, size = self._entries.pop(prompt)
                self._size -= size
                return min(_common_prefix(known, ids), len(ids)), part
        return None

    def __len__(self) -> int:
        return len(self._entries)


# Generation config settings for which generate() adds a logits processor in greedy decoding, with the
# value that means "none" (None means none for every one of them too).
_CONFIG_PROCESSORS = {
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "sequence_bias": None,
    "min_length": 0,
    "min_new_tokens": 0,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "exponential_decay_length_penalty": None,
    "remove_invalid_values": False,
    "guidance_scale": 1.0,
}


def _config_processors(config: Any) -> list[str]:
    """The settings of a generation config for which generate() would process logits before a token
    is picked (HFBackend._decode applies none of them; HFBackend._generate leaves them to generate())."""
    return [
        name
        for name, none in _CONFIG_PROCESSORS.items()
        if getattr(config, name, None) not in (None, none, [], {})
    ]


# The kinds of cache layer that hold (batch, heads, position, head_dim) keys and values from position 0
# (full attention): a plain DynamicCache's, and _prefill_rows' (see _slab_layer_class).
_POSITION_LAYERS = ("DynamicLayer", "_SlabLayer")


def _steps_by_position(cache: Any) -> bool:
    """Whether HFBackend._decode can build a model's decoding steps itself, from the cache the model
    returns after one token: only where every layer keeps keys and values by position (attention, full or
    in a sliding window), which each step extends by one token under a mask one position longer. A model
    that keeps a recurrent state instead (a state-space model such as Mamba, or a hybrid) reads only the
    new token at each step, without the mask (fed the growing mask, Mamba's layers read the whole mask's
    length of positions at every step: other text, about 100 times slower): generate() builds such
    steps as the model's own prepare_inputs_for_generation says, so those models decode through it."""
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
    """The layers of a DynamicCache whose every layer is of one of _POSITION_LAYERS' kinds, else None."""
    layers = getattr(cache, "layers", None)
    if type(cache).__name__ != "DynamicCache" or not layers:
        return None
    if any(type(layer).__name__ not in _POSITION_LAYERS for layer in layers):
        return None
    return list(layers)


def _slab_layers(cache: Any) -> list[Any] | None:
    """The layers of a cache _prefill_rows assembled (rows can leave it), else None."""
    layers = _position_layers(cache)
    return layers if layers and all(type(layer).__name__ == "_SlabLayer" for layer in layers) else None


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
    """A cache layer through which HFBackend._read_rows reads several rows' prompts in place."""
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


T = TypeVar("T")


def _reading_groups(reads: list[tuple[T, int]]) -> list[list[T]]:
    """The reads of `reads` ((read, tokens to read) each) done together, longest first: reads within a
    quarter of the longest of their group in padding, up to _READ_TOGETHER tokens a pass."""
    groups: list[list[T]] = []
    group: list[T] = []
    longest = total = 0
    for read, n in sorted(reads, key=lambda item: -item[1]):
        if group and (
            (len(group) + 1) * longest > 1.25 * (total + n) or (len(group) + 1) * longest > _READ_TOGETHER
        ):
            groups.append(group)
            group, total = [], 0
        if not group:
            longest = n
        group.append(read)
        total += n
    if group:
        groups.append(group)
    return groups


def _row_slices(cache: Any, row: int, begin: int, length: int) -> _Part | None:
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


def _row_cache(cache: Any, row: int, begin: int, length: int) -> Any:
    """A KV cache of one row of a generated batch (see _row_slices), sharing the batch's tensors; None
    for a cache kind this does not know how to cut (the rating is then worked out from the context's
    text, as without it)."""
    from transformers import DynamicCache

    cut = _row_slices(cache, row, begin, length)
    return None if cut is None else DynamicCache(ddp_cache_data=cut)


def _batches(lengths: list[int], batch_size: int, new_tokens: int) -> list[tuple[int, int]]:
    """(start, end) of each batch of prompts of these lengths (longest first): as few batches as
    batches of `batch_size` make, cut where the positions their decoding attends to are fewest.

    Every row of a batch attends to as many positions as its longest prompt has, plus those written
    (about `new_tokens` / 2 on average), padding included; decoding a step reads them all. Cutting 80
    prompts into the first 64 and the last 16 puts a few long prompts' padding on 64 rows: for
    SmolLM2's 80 turn-1 prompts at batch 64, the 16 longest then the 64 others attend to 42% fewer
    positions than the 64 longest then the 16 others (30% fewer for turn 2)."""
    count = len(lengths)
    if count <= batch_size:
        return [(0, count)] if count else []
    batches = -(-count // batch_size)
    inf = float("inf")
    # best[j][i]: the fewest positions for the first i prompts in j batches; cut[j][i]: where its last begins
    best = [[inf] * (count + 1) for _ in range(batches + 1)]
    cut = [[0] * (count + 1) for _ in range(batches + 1)]
    best[0][0] = 0
    for j in range(1, batches + 1):
        # The first i prompts in j batches leave the rest to fill the other batches: few i are possible.
        for i in range(max(j, count - (batches - j) * batch_size), min(count, j * batch_size) + 1):
            for start in range(max(0, i - batch_size), i):
                cost = best[j - 1][start] + (i - start) * (lengths[start] + new_tokens // 2)
                if cost < best[j][i]:
                    best[j][i], cut[j][i] = cost, start
    spans, end = [], count
    for j in range(batches, 0, -1):
        spans.append((cut[j][end], end))
        end = cut[j][end]
    return spans[::-1]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _aligned(model: Any) -> Any:
    """`model` with every weight in memory of its own, aligned as torch allocates it (64 bytes).

    Weights mapped from a safetensors file sit at whatever offset the file gives them, and CPU matmul
    kernels take other paths, with other float rounding, for unaligned data: the same weights read from a
    .gguf file and from its safetensors copy gave rating probabilities that differ at 1e-8. Copied once
    at load, the numbers depend on the weights only, not on the file they came from."""
    for tensor in list(model.parameters()) + list(model.buffers()):  # shared (tied) weights come once
        if tensor.device.type == "cpu" and tensor.data_ptr() % 64:
            tensor.data = tensor.data.clone()
    return model


def _keep_converted(model: Any, tokenizer: Any, target: Path) -> None:
    """Save a model just dequantised from a .gguf file (and its tokenizer) as safetensors at `target`,
    for the next run to load (see HFBackend._converted_dir). Written as `save_pretrained` writes a model,
    so the copy is a standard model directory that other loaders (vLLM) read too: `architectures` in its
    config, a tied weight under the name the model loads it from. Written to a temporary directory and
    renamed into place, the marker file last, so a crash or a concurrent worker never leaves a partial copy
    that is used. Skipped for weights over _CONVERTED_LIMIT bytes (a large GGUF would fill the disk with
    float32), for weights left packed as GGUF blocks, and on any error writing: keeping the copy only saves
    time, so it never fails a run."""
    import copy
    import shutil
    import tempfile

    parameters = list(model.parameters())
    if not all(p.is_floating_point() for p in parameters):
        return  # GGUF blocks kept packed (transformers' GGUF kernels): no plain checkpoint to write
    size = sum(p.numel() * p.element_size() for p in parameters)
    if size > _CONVERTED_LIMIT:
        return
    staging: Path | None = None
    try:
        if (target / _CONVERTED_MARK).is_file():
            return  # another worker's copy, complete: it may be loading from it now
        if target.is_dir():  # a copy without its marker, which was not loaded: replace it
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
        config = copy.deepcopy(model.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the weights are plain tensors now, not a .gguf file's
        if not getattr(config, "architectures", None):  # a config built from a .gguf file names none
            config.architectures = [type(model).__name__]
        _save_dequantised(model, config, staging)
        tokenizer.save_pretrained(staging)
        (staging / _CONVERTED_MARK).write_text("complete\n", encoding="utf-8")
        os.rename(staging, target)
        staging = None
    except Exception:  # noqa: BLE001 - the copy only saves time: whatever failed, convert next time
        pass  # e.g. another worker's copy won the rename, or the cache is not writable
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _save_dequantised(model: Any, config: Any, directory: Path) -> None:
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _refuse_pickle(spec: str, directory: Path, options: BackendOptions) -> None:
    """BackendError when the only weights are pickle files and the user has not allowed them."""
    if options.allow_pickle or any(directory.glob("*.safetensors")):
        return
    pickles = sorted(p.name for pattern in _PICKLE_PATTERNS for p in directory.glob(pattern) if p.is_file())
    if pickles:
        shown = ", ".join(pickles[:3]) + (f" and {len(pickles) - 3} more" if len(pickles) > 3 else "")
        raise BackendError(
            f"{spec} has only pickle weights ({shown}), and loading pickle can run any code: convert them "
            "to safetensors, or pass --mtbench-allow-pickle if you trust where they came from"
        )


def _remote_code_hint(exc: BaseException) -> str:
    """A pointer to --mtbench-trust-remote-code when transformers refused to run the directory's code."""
    if "trust_remote_code" not in str(exc):
        return ""
    return (
        ": the model directory ships its own Python code (auto_map); read it, then pass "
        "--mtbench-trust-remote-code to let it run"
    )


def _weight_errors() -> tuple[type[BaseException], ...]:
    """What loading bad weights raises: OS/format errors, a damaged pickle, safetensors' own errors."""
    import pickle

    errors: list[type[BaseException]] = [OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError]
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:  # pragma: no cover - safetensors comes with the hf extra
        pass
    return tuple(errors)


def check_template(spec: str, template: str | dict[str, str], from_option: bool) -> None:
    """BackendError when the chat template is not valid Jinja (checked before the weights load)."""
    import jinja2

    try:  # transformers' own environment: its extensions (e.g. {% generation %}) parse as they will run
        from transformers.utils.chat_template_utils import _compile_jinja_template as compile_template
    except ImportError:  # pragma: no cover - older/newer transformers
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        compile_template = ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols"]).from_string
    source = "given with --mtbench-chat-template" if from_option else "of the model"
    templates = template.values() if isinstance(template, dict) else [template]
    for text in templates:
        try:
            compile_template(text)
        except jinja2.TemplateError as exc:
            where = f"line {exc.lineno}: " if getattr(exc, "lineno", None) else ""
            raise BackendError(
                f"the chat template {source} ({spec}) is not valid Jinja ({where}{exc.message or exc}): "
                "fix it or pass another with --mtbench-chat-template=FILE"
            ) from None


def create(name: str, options: BackendOptions) -> HFBackend:
    """Build the backend for `hf/<name>`: a model directory, a .gguf file or the `smollm2` alias."""
    directory, gguf_file = _resolve(name, options)
    import torch  # noqa: F401  (an ImportError here becomes the registry's install hint)
    import transformers  # noqa: F401

    return HFBackend(f"hf/{name}", directory, gguf_file, options)
