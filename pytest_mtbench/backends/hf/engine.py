"""The decoding engine: HFBackend, a local causal LM served through transformers.

Runs conversations as left-padded, length-sorted batches (HFBackend._decode) and can read a judge's own
probabilities over the ratings 1..10 (probes.RatingProbes). Each batch's keys and values are laid out in
memory the engine owns (HFBackend._slab) and read in place; prompt openings and turns to be continued are
kept between batches (memory.py). Everything that touches transformers' internals is in internals.py; a
model whose decoding steps the engine cannot build itself (a state-space model) decodes through
generate(), and a model whose cache it cannot lay out is read in one batched pass.

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
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ...reasoning import (
    HARMONY_CHANNEL,
    SplitReply,
    rendered_opens_thinking,
    split_reply,
)
from ..base import (
    FINISH_CONTEXT_OVERFLOW,
    FINISH_LENGTH,
    FINISH_STOP,
    BackendOptions,
    Completion,
    Message,
    ResultCallback,
    SamplingParams,
)
from . import internals
from .loading import _identity, device_for, load_model
from .memory import (
    _FOLLOW_UP_BYTES,
    _OPENING,
    _OPENING_BYTES,
    _FollowUps,
    _Openings,
    _reading_groups,
)
from .probes import RatingProbes

# A model_max_length above this is transformers' "not set" placeholder (1e30), not a real limit.
_UNSET_MAX_LENGTH = 10**7
# Where a message parsed by transformers' parse_response holds its reasoning.
PARSED_REASONING = ("thinking", "reasoning_content", "reasoning")
_GENERATE_DEFAULT_TOP_K = 50


class HFBackend(RatingProbes):
    """A local causal LM served through transformers (ChatBackend and RatingProber)."""

    def __init__(self, spec: str, directory: Path, gguf_file: str | None, options: BackendOptions) -> None:
        import torch

        self.spec = spec
        self._torch = torch
        self._directory = directory
        self._gguf_file = gguf_file
        self._options = options
        self._identity: dict[str, Any] | None = None
        if options.num_threads:
            torch.set_num_threads(options.num_threads)
        self.device = device_for(options)
        self.tokenizer, self.chat_template, self.model = load_model(
            spec, directory, gguf_file, options, self.device
        )
        self._cache_kwarg = internals.cache_argument(self.model)
        # Logits for the last position only, where a forward pass only fills a KV cache or predicts one
        # token: the whole vocabulary's logits at every position of a prompt are a quarter of its prefill
        # on SmolLM2-135M (600 positions: 445 -> 585 a second).
        self._last_logits = internals.last_logits_argument(self.model)
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
        # step itself (else generate() does: see internals.steps_by_position), per layer the shape of
        # its keys and values (see internals.kv_layout), and the memory every batch's cache is laid out
        # in (see _slab).
        one_token = self._one_token_cache()
        self._own_steps = internals.steps_by_position(one_token)
        self._layout = internals.kv_layout(one_token, self.model.dtype)
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
                            kept = internals.row_slices(cache, cache_row, begin, len(known))
                            if kept is not None:  # copied out: the next batch reuses the batch's memory
                                host = [(k.to("cpu", copy=True), v.to("cpu", copy=True)) for k, v in kept]
                                self._follow_ups.put(encoded[index], known, host)
                        if probe_cue is None or (probe_if is not None and not probe_if(index, text)):
                            continue
                        context = rendered[index] + text + probe_cue
                        cut = functools.partial(internals.row_cache, cache, cache_row, begin)
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
        can_leave = internals.rows_can_leave(cache)
        for step in range(limit):
            out = self.model(
                input_ids=feed,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **past,
                **self._last_logits,
            )
            cache = internals.output_cache(out)
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
            if done and can_leave and done * (limit - step - 1) > 2 * len(going):
                leave([(row, i) for i, row in enumerate(live) if ended[row]], tokens, cache)
                internals.keep_rows(cache, going)
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
        cache = internals.output_cache(output)
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
        return internals.output_cache(out)

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
            reading = internals.slab_cache(
                [
                    (keys[row : row + 1, :, begin:], values[row : row + 1, :, begin:])
                    for keys, values in storage
                ],
                done,
            )
            if done:
                self._read(ids[done:-1], reading)
            else:
                self._prefill(ids[:-1], reading)
        for group in _reading_groups([((row, done), len(prompts[row]) - 1 - done) for row, done in short]):
            self._read_rows(sorted(group), prompts, width, storage)
        return internals.slab_cache(storage, width - 1)

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
        index = torch.tensor([row for row, _ in rows], device=self.device)
        spans = [(row, len(rest)) for (row, _), rest in zip(rows, rests)]
        cache = internals.reading_cache(storage, index, spans, first, width - 1 - longest)
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
            self._openings.put(key, internals.cache_parts(cache))
        else:
            internals.extend_cache(cache, opening)
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

    def close(self) -> None:
        """Drop the model and its batches' cache memory so they can be reclaimed."""
        self.model = None
        self._pool = None
        self._follow_ups = _FollowUps(_FOLLOW_UP_BYTES)
        import gc

        gc.collect()


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
