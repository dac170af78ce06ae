"""The engine's key/value memory: prompt openings and conversations to be continued, kept between
batches within budgets of bytes, and how short prompt reads are grouped into shared passes.

Keys and values travel as `Part`s (per layer, a (keys, values) pair of tensors); what they are cut from
and written into is transformers' business, done in internals.py.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

from .internals import Part

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


def _part_bytes(part: Part) -> int:
    return sum(keys.numel() * keys.element_size() * 2 for keys, _ in part)


class _Openings:
    """Prompt openings' keys and values (per layer) by their tokens, within a budget of bytes.

    Openings that were used again go last when room is needed: a template's opening serves every
    prompt of it, while most openings (a prompt's own question) are never asked for again."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._size = 0
        self._entries: OrderedDict[tuple[int, ...], tuple[Part, int, bool]] = OrderedDict()

    def get(self, key: tuple[int, ...]) -> Part | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries[key] = (entry[0], entry[1], True)
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: tuple[int, ...], part: Part) -> None:
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
        self._entries: OrderedDict[tuple[int, ...], tuple[list[int], Part, int]] = OrderedDict()

    def put(self, prompt: list[int], known: list[int], part: Part) -> None:
        """Keeps `part`, the keys and values of `known` (`prompt`, then the reply's tokens read)."""
        size = _part_bytes(part)
        if size > self._budget:
            return
        self._entries.pop(tuple(prompt), None)
        while self._entries and self._size + size > self._budget:
            self._size -= self._entries.popitem(last=False)[1][2]
        self._entries[tuple(prompt)] = (known, part, size)
        self._size += size

    def take(self, ids: list[int]) -> tuple[int, Part] | None:
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


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
