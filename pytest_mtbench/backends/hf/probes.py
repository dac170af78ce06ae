"""Rating probes: a local judge's own probabilities over the ratings 1..10 after a judgment and a cue.

RatingProbes is part of HFBackend (the engine): it reads the context on the judge's cache, kept from
the judgment's generation when at hand, and each rating's tokens after it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..base import Message
from . import internals
from .memory import _common_prefix

RATINGS = tuple(range(1, 11))


class RatingProbes:
    """RatingProber for HFBackend, from the model, tokenizer and cache settings the engine holds (see
    HFBackend.__init__ for the attributes below)."""

    model: Any
    tokenizer: Any
    device: str
    _torch: Any
    _cache_kwarg: str
    _last_logits: dict[str, int]
    _own_steps: bool
    _probed: dict[str, dict[int, float]]
    _tree_probes: bool | None

    render: Callable[[list[Message]], str]
    _encode: Callable[[str], list[int]]

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

        if not self._own_steps:
            scores = self._sequence_scores(context_ids[:prefix], tails, firsts)
        elif self._tree_probes is None:
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
            cache = internals.output_cache(head)
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
        cache = internals.output_cache(head)
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

    def _sequence_scores(self, context: list[int], tails: list[list[int]], firsts: list[int]) -> list[float]:
        """As _tail_scores_rows, each tail read after the whole context as a row of its own, with no cache
        and no mask: for a model whose cache the engine does not handle (a state-space model keeps a
        recurrent state, which neither a 4D mask nor copies of keys and values apply to). Right padding
        after a row never changes what its tokens predict in a causal model."""
        torch = self._torch
        width = max(len(t) for t in tails)
        pad = self.tokenizer.pad_token_id
        rows = torch.tensor([context + t + [pad] * (width - len(t)) for t in tails], device=self.device)
        with torch.inference_mode():
            logits = self.model(input_ids=rows).logits
        # Position p predicts token p + 1: a tail's token j, at len(context) + j, from the one before it.
        log_probs = torch.log_softmax(logits[:, len(context) - 1 : -1].float(), dim=-1)
        return [
            sum(float(log_probs[row, j, tail[j]]) for j in range(begin, len(tail)))
            for row, (tail, begin) in enumerate(zip(tails, firsts))
        ]
