"""Tiny local models for tests and demos: a random chat model (and random models of several architectures),
a trained judge and a GGUF file.

Everything is built in-process from a small built-in corpus (no downloads). torch, transformers,
tokenizers and gguf are imported inside the builders so importing this module stays cheap.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD, BOS, EOS, *ROLE_TOKENS)

# A plain Jinja chat template: role tag, content, EOS; the generation prompt opens an assistant turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

_CORPUS = """\
You grade the reply an assistant gave to a user. Weigh whether it is useful, correct, relevant, deep,
inventive and detailed. Explain briefly first, stay neutral, then give a grade from 1 to 10 written as
"[[rating]]", for instance "Rating: [[5]]". Rating: [[1]] Rating: [[2]] Rating: [[3]] Rating: [[4]]
Rating: [[6]] Rating: [[7]] Rating: [[8]] Rating: [[9]] Rating: [[10]] Good answer. The answer is adequate.
[Question] [Reference] [Answer] [End of Answer] [Instruction] ### User: ### Assistant:
Write a short post about a weekend by the sea, with places to eat and things to see. Draft a polite
note asking a colleague to review a budget spreadsheet. Outline a comparison of two laptops for a blog.
Persuade a shy friend to give a talk at the library. Describe a memorable character in vivid language.
Solve 2x + 6 = 4(x - 1) for x. Given g(x) = 2x^2 - 3x + 1, compute g(3).
Write a function that returns the items two lists have in common without extra memory.
def add(a, b):\n    return a + b\nprint(add(1, 2))  # 3
The quick brown fox jumps over the lazy dog. You are a helpful assistant. Thank you for your question!
In summary, the main reasons are economic, social and political. First, second, third, finally.
0 1 2 3 4 5 6 7 8 9 10 100 2024 3.14 {"key": "value"} <html> </html> a, b; c: d! e? (f) [g] 'h' "i"
"""

_WORDS = _CORPUS.split()


def _tokenizer(
    seed: int = 0,
    corpus: str = _CORPUS,
    chat_template: str = CHAT_TEMPLATE,
    added_tokens: tuple[str, ...] = (),
) -> Any:
    """A byte-level BPE tokenizer trained on `corpus`, with specials and the chat template.

    `added_tokens` are whole tokens that are not special: decoding with `skip_special_tokens` keeps them.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=448,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([corpus] * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS),
        chat_template=chat_template,
        model_max_length=4096,
    )
    if added_tokens:
        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in added_tokens])
    return tokenizer


def _model(vocab_size: int, tokenizer: Any, seed: int, init_range: float) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        initializer_range=init_range,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).float()


def _save(model: Any, tokenizer: Any, path: Path) -> Path:
    # Write to a private directory and rename it into place, so concurrent builders (xdist workers
    # sharing a cache dir) never see a half-written model.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(path)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not _is_built(path):
            raise
    return path


def _is_built(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def build_tiny_chat_model(path: str | Path, seed: int = 0) -> Path:
    """Save a tiny random-weight Llama chat model (byte-level BPE, Jinja chat template) to `path`.

    Deterministic for a given seed; reused when `path` already holds a built model.
    """
    path = Path(path)
    if _is_built(path):
        return path
    tokenizer = _tokenizer(seed)
    # A wide init gives peaked logits, so greedy argmax is not decided by float rounding noise.
    model = _model(len(tokenizer), tokenizer, seed, init_range=0.3)
    return _save(model, tokenizer, path)


# Tiny random-weight models of several architectures, for checking the local engine against generate():
# name -> (transformers config class, its settings). Every one has 2 layers, 4 query heads (2 key/value
# heads where the architecture has grouped queries) of 16 numbers, and a sliding window of 8 positions
# where the architecture has one, so that prompts overrun it.
_ATTENTION = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
}
TINY_ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", _ATTENTION),
    "qwen2": ("Qwen2Config", _ATTENTION),
    "qwen3": ("Qwen3Config", {**_ATTENTION, "head_dim": 16}),
    "mistral-sliding": ("MistralConfig", {**_ATTENTION, "sliding_window": 8}),
    "gemma2": ("Gemma2Config", {**_ATTENTION, "head_dim": 16, "sliding_window": 8}),
    "gemma3-text": (
        "Gemma3TextConfig",
        {
            **_ATTENTION,
            "head_dim": 16,
            "sliding_window": 8,
            "layer_types": ["sliding_attention", "full_attention"],
        },
    ),
    "phi3": ("Phi3Config", _ATTENTION),
    "gpt2": ("GPT2Config", {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 4096}),
    "olmo": ("OlmoConfig", _ATTENTION),
    "mamba": (
        "MambaConfig",
        {"hidden_size": 64, "state_size": 8, "num_hidden_layers": 2, "expand": 2, "conv_kernel": 4},
    ),
}


def build_tiny_architecture(path: str | Path, architecture: str, seed: int = 0, **settings: Any) -> Path:
    """Save a tiny random-weight chat model of one of TINY_ARCHITECTURES (the tiny chat model's tokenizer
    and template) to `path`; `settings` override the architecture's config settings (a larger model for a
    benchmark). Deterministic for a seed; reused when `path` already holds a built model."""
    import torch
    import transformers

    path = Path(path)
    if _is_built(path):
        return path
    config_name, defaults = TINY_ARCHITECTURES[architecture]
    tokenizer = _tokenizer(seed)
    config = getattr(transformers, config_name)(
        vocab_size=len(tokenizer),
        # A wide init gives peaked logits, so greedy argmax is not decided by float rounding noise.
        initializer_range=0.3,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **{**defaults, **settings},
    )
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).float()
    return _save(model, tokenizer, path)


def _random_text(rng: random.Random) -> str:
    """Prompt-like text: corpus words, numbers and a few odd characters, of very different lengths."""
    n_words = rng.choice((1, 3, 8, 20, 40, 80))
    words = []
    for _ in range(rng.randint(max(1, n_words // 2), n_words)):
        roll = rng.random()
        if roll < 0.8:
            words.append(rng.choice(_WORDS))
        elif roll < 0.9:
            words.append(str(rng.randint(0, 10_000)))
        else:
            words.append("".join(chr(rng.randint(33, 0x24F)) for _ in range(rng.randint(1, 4))))
    sep = rng.choice((" ", " ", "\n"))
    return sep.join(words)


def _random_conversation(rng: random.Random) -> list[dict[str, str]]:
    messages = []
    if rng.random() < 0.5:
        messages.append({"role": "system", "content": _random_text(rng)})
    for turn in range(rng.choice((1, 1, 2))):
        if turn:
            messages.append({"role": "assistant", "content": _random_text(rng)})
        messages.append({"role": "user", "content": _random_text(rng)})
    return messages


def _train(
    model: Any,
    make_batch: Callable[[], list[tuple[list[int], list[int]]]],
    steps: int,
    pad_id: int,
    lr: float = 3e-3,
    decay: bool = False,
) -> None:
    """AdamW on `make_batch()` lists of (token ids, labels) pairs, labels -100 where nothing is learned.

    With `decay` the learning rate falls linearly to zero, which settles the weights at the end.
    """
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for step in range(steps):
        if decay:
            for group in optimizer.param_groups:
                group["lr"] = lr * (1 - step / steps)
        batch = make_batch()
        batch_size = len(batch)
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((batch_size, width), pad_id)
        labels = torch.full((batch_size, width), -100)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for row, (ids, lab) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, : len(lab)] = torch.tensor(lab)
            mask[row, : len(ids)] = 1
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


JUDGE_CUES = ("\nRating: [[", "Rating: [[", "\n\nRating: [[", " Rating: [[")


def build_tiny_judge(
    path: str | Path,
    seed: int = 0,
    rating: str = "7",
    steps: int = 200,
    with_rating: bool = True,
) -> Path:
    """Train a tiny judge whose greedy reply to any chat prompt is exactly "Rating: [[<rating>]]" + EOS.

    With `with_rating=False` it replies "Good answer." (no rating) instead; both variants are also
    trained so that `<prompt><judgment><cue>` continues with "<rating>]]", which is what
    `RatingProber.rating_probabilities` reads. Reused when `path` already holds a built model.
    """
    import torch

    path = Path(path)
    if _is_built(path):
        return path
    tokenizer = _tokenizer(seed)
    model = _model(len(tokenizer), tokenizer, seed, init_range=0.02)
    reply = f"Rating: [[{rating}]]" if with_rating else "Good answer."
    reply_ids = tokenizer.encode(reply, add_special_tokens=False) + [tokenizer.eos_token_id]
    rating_ids = tokenizer.encode(f"{rating}]]", add_special_tokens=False)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    max_prompt_tokens = 256  # attention cost grows with length; the reply only depends on the prompt's tail

    def example() -> tuple[list[int], list[int]]:
        prompt = tokenizer.apply_chat_template(
            _random_conversation(rng), add_generation_prompt=True, tokenize=False
        )
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)[-max_prompt_tokens:]
        if rng.random() < 0.7:
            return prompt_ids + reply_ids, [-100] * len(prompt_ids) + reply_ids
        # Probe examples: only the rating after the cue is learned, so the reply's EOS stays intact.
        judgment = rng.choice((reply, "", _random_text(rng)[:80]))
        ctx = tokenizer.encode(prompt + judgment + rng.choice(JUDGE_CUES), add_special_tokens=False)
        ctx = ctx[-max_prompt_tokens:]
        return ctx + rating_ids, [-100] * len(ctx) + rating_ids

    _train(model, lambda: [example() for _ in range(8)], steps, tokenizer.pad_token_id)
    return _save(model, tokenizer, path)


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
THINKER_REASONING = "Okay, the user asks something. I weigh it first and then reply."
THINKER_ANSWER = "The answer is adequate."
ENDLESS_WORD = "hmm"
# What ends every thought (and, after an empty one, the thinking-off prompt); the answer follows it.
_THOUGHT_END = f"\n{THINK_CLOSE}\n\n"

# CHAT_TEMPLATE with Qwen3's two habits: a past reply is shown without its reasoning (only the text after
# its last THINK_CLOSE), and `enable_thinking=false` opens the reply with an empty thought.
THINKER_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% set content = message['content'] %}"
    "{% if message['role'] == 'assistant' and '" + THINK_CLOSE + "' in content %}"
    "{% set content = content.split('" + THINK_CLOSE + "')[-1].strip() %}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\n' + content + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}"
    "{{ '" + THINK_OPEN + "\n\n" + THINK_CLOSE + "\n\n' }}"
    "{% endif %}{% endif %}"
)

# The thinker's own words get merges of their own; no blank line in it, so "\n\n" stays two tokens
# whether it ends a prompt or sits inside a longer text.
_THINKER_CORPUS = _CORPUS + f"{THINKER_REASONING}\n" * 4 + f"{' '.join([ENDLESS_WORD] * 8)}\n" * 8


def build_tiny_thinker(path: str | Path, seed: int = 0, endless: bool = False, steps: int = 300) -> Path:
    """Train a tiny "thinking" chat model with a Qwen3-like template (`enable_thinking`, THINK_OPEN/CLOSE).

    Greedy replies: the finite thinker writes "<think>\n" + THINKER_REASONING + "\n</think>\n\n" +
    THINKER_ANSWER + EOS, and only THINKER_ANSWER + EOS after the `enable_thinking=False` prompt. The
    endless thinker writes "<think>\n" and then ENDLESS_WORD over and over, never closing the thought;
    whenever its context ends with "</think>\n\n" (a thought cut short and closed, or thinking off) it
    answers THINKER_ANSWER + EOS. THINK_OPEN and THINK_CLOSE are added tokens that are not special.
    Deterministic for a seed; reused when `path` already holds a built model.
    """
    import torch

    path = Path(path)
    if _is_built(path):
        return path
    tokenizer = _tokenizer(seed, _THINKER_CORPUS, THINKER_CHAT_TEMPLATE, (THINK_OPEN, THINK_CLOSE))
    model = _model(len(tokenizer), tokenizer, seed, init_range=0.02)

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    answer_ids = encode(THINKER_ANSWER) + [tokenizer.eos_token_id]
    finite_reply_ids = encode(f"{THINK_OPEN}\n{THINKER_REASONING}{_THOUGHT_END}") + answer_ids
    reasoning_words = THINKER_REASONING.split(" ")
    past_reply = f"{THINK_OPEN}\n{THINKER_REASONING}{_THOUGHT_END}{THINKER_ANSWER}"
    rng = random.Random(seed)
    torch.manual_seed(seed)
    max_words = 320  # endless thoughts as long as the longest one a test lets it write

    def prompt(enable_thinking: bool, long: bool) -> str:
        messages = _random_conversation(rng)
        for message in messages:
            if message["role"] == "assistant" and rng.random() < 0.5:
                message["content"] = past_reply  # its own earlier reply, shown without the reasoning
        if long:
            messages[-1]["content"] = "\n".join(_random_text(rng) for _ in range(rng.randint(2, 8)))
        return tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False, enable_thinking=enable_thinking
        )

    def endless_thought(at_least: int) -> str:
        # Short thoughts as often as long ones: where a thought starts, or is closed after a few words,
        # is the hardest part to learn.
        return " ".join([ENDLESS_WORD] * rng.randint(at_least, rng.choice((16, max_words))))

    def thought() -> str:
        if endless:
            return endless_thought(0)
        return " ".join(reasoning_words[: rng.randint(0, len(reasoning_words))])

    def example(max_tokens: int) -> tuple[list[int], list[int]]:
        long = max_tokens > 256
        roll = rng.random()
        if roll < 0.4:  # a thinking reply
            reply = encode(f"{THINK_OPEN}\n{endless_thought(1)}") if endless else finite_reply_ids
            # Cut the prompt's head and the thought's tail, never the thought's start.
            ctx = encode(prompt(True, long))[-max(64, max_tokens - len(reply)) :]
            reply = reply[: max_tokens - len(ctx)]
            learned = reply
            if endless:
                # A long run of one word would swamp the mean loss: learn its start and one short stretch.
                start = rng.randint(3, max(3, len(reply) - 8))
                learned = [t if i < 3 or start <= i < start + 8 else -100 for i, t in enumerate(reply)]
            return ctx + reply, [-100] * len(ctx) + learned
        if roll < 0.7:  # thinking off: the prompt already holds an empty thought
            ctx = encode(prompt(False, long))
        else:  # a thought cut short and closed: only the answer after it is learned
            ctx = encode(prompt(True, long) + f"{THINK_OPEN}\n{thought()}{_THOUGHT_END}")
        ctx = ctx[-max_tokens:]
        return ctx + answer_ids, [-100] * len(ctx) + answer_ids

    def make_batch() -> list[tuple[list[int], list[int]]]:
        # Attention cost grows with length and replies depend on the tail, so most contexts are cut to
        # 256 tokens; a batch of long ones now and then keeps replies right after prompts of many hundred.
        if rng.random() < 0.2:
            return [example(1024) for _ in range(4)]
        return [example(256) for _ in range(8)]

    _train(model, make_batch, steps, tokenizer.pad_token_id, lr=5e-3, decay=True)
    return _save(model, tokenizer, path)


def write_tiny_gguf(path: str | Path, seed: int = 0) -> Path:
    """Write the tiny chat model as a float32 llama GGUF file (tokenizer and chat template embedded).

    `path` is the .gguf file to write; transformers loads it with `gguf_file=`.
    """
    import gguf
    import numpy as np

    path = Path(path)
    if path.is_file():
        return path
    tokenizer = _tokenizer(seed)
    model = _model(len(tokenizer), tokenizer, seed, init_range=0.3)
    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads

    tok_state = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab: dict[str, int] = tokenizer.get_vocab()
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok_state["model"]["merges"]]
    special = set(SPECIAL_TOKENS)
    token_types = [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens]

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # renamed into place when complete
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name("tiny-chat")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        array = tensor.detach().float().numpy()
        # llama.cpp stores q/k rows interleaved for its rope; the loader undoes this permutation.
        if hf_name.endswith("q_proj.weight"):
            array = _permute(array, config.num_attention_heads, config.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            array = _permute(array, config.num_attention_heads, config.num_key_value_heads)
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(f"no GGUF name for tensor {hf_name}")
        writer.add_tensor(gguf_name, np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)
    return path


def _permute(weights: Any, n_head: int, n_head_kv: int) -> Any:
    if n_head_kv != n_head:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )
