"""One split of a model's reply into its reasoning and its answer, for candidates and judges alike.

Thinking models write their scratch work before the answer a user sees, in one of three forms:

- a separate field of an OpenAI-compatible reply (`reasoning_content`: older vLLM, DeepSeek's API;
  `reasoning`: newer vLLM, OpenRouter), with the answer alone in `content`;
- inline markers, `<think>...</think>answer` (Qwen3, DeepSeek-R1 and its distillations, Phi-4-reasoning;
  other families' markers are configurable). A reply that holds the closing marker without the opening
  one counts too: DeepSeek-R1's template puts the opening marker in the prompt, not the reply;
- the harmony channels of gpt-oss (`<|channel|>analysis<|message|>...<|end|>` then
  `<|channel|>final<|message|>...`).

`split_reply` reads all three and says whether the reasoning ended. Only the answer is judged and only
the answer goes into the next turn's history; the reasoning is kept in the report. Pure, no model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
DEFAULT_MARKERS = (THINK_OPEN, THINK_CLOSE)
# The finish reason of a reply whose reasoning never ended: its budget ran out while it was thinking.
UNFINISHED_REASONING = "unfinished_reasoning"

# gpt-oss's harmony format: each message is `<|channel|>NAME<|message|>TEXT` ended by <|end|>,
# <|return|> or <|call|> (or by nothing, when generation stopped there).
HARMONY_CHANNEL = "<|channel|>"
_HARMONY_MESSAGE = re.compile(
    r"<\|channel\|>(?P<channel>[^<]*?)(?:\s+to=[^<]*)?(?:<\|constrain\|>[^<]*)?<\|message\|>"
    r"(?P<text>.*?)(?P<end><\|end\|>|<\|return\|>|<\|call\|>|$)",
    re.DOTALL,
)
_HARMONY_TOKEN = re.compile(r"<\|[a-z_]+\|>")


@dataclass(frozen=True)
class SplitReply:
    """A reply as a user sees it (`answer`) and the thinking before it (`reasoning`, None if none).

    `finished` is False when the reply was still thinking where it stopped: an opening marker without
    its closing one, or harmony analysis with no final message."""

    answer: str
    reasoning: str | None = None
    finished: bool = True

    @property
    def thought(self) -> bool:
        return self.reasoning is not None


def parse_markers(text: str) -> tuple[str, str]:
    """`--mtbench-think-markers=OPEN,CLOSE` -> (OPEN, CLOSE); ValueError with the fix when malformed."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise ValueError("give two different markers separated by a comma, e.g. <think>,</think>")
    return parts[0], parts[1]


def split_reply(
    text: str,
    reasoning: str | None = None,
    markers: tuple[str, str] = DEFAULT_MARKERS,
) -> SplitReply:
    """Split `text` (the reply's content) into answer and reasoning.

    `reasoning` is what an endpoint gave in a field of its own; inline reasoning found in `text` is
    added after it. A reply with no reasoning anywhere is returned whole and unchanged as the answer,
    so a non-thinking model's text (and every cache key that holds it) is as it always was.
    """
    fields = reasoning.strip() if reasoning and reasoning.strip() else None
    split = _split_harmony(text) if HARMONY_CHANNEL in text else _split_markers(text, markers)
    if fields is None:
        return split
    inline = f"{fields}\n\n{split.reasoning}" if split.reasoning else fields
    return SplitReply(split.answer, inline, split.finished)


def _split_markers(text: str, markers: tuple[str, str]) -> SplitReply:
    opening, closing = markers
    stripped = text.strip()
    head, found, tail = stripped.partition(closing)
    if found:
        # Everything before the first closing marker is reasoning, with or without its opening marker.
        thought = head.strip()
        if thought.startswith(opening):
            thought = thought[len(opening) :].strip()
        return SplitReply(tail.strip(), thought, True)
    if stripped.startswith(opening):
        return SplitReply("", stripped[len(opening) :].strip(), False)
    return SplitReply(text)  # no reasoning: the text exactly as it came (it is in later turns' keys)


def _split_harmony(text: str) -> SplitReply:
    analysis: list[str] = []
    final: list[str] = []
    for match in _HARMONY_MESSAGE.finditer(text):
        channel = match.group("channel").strip()
        body = match.group("text").strip()
        (final if channel == "final" else analysis).append(body)
    if not analysis and not final:  # channel tokens, but no message: treat as plain text
        return SplitReply(_HARMONY_TOKEN.sub("", text).strip())
    reasoning = "\n\n".join(a for a in analysis if a) or None
    if final:
        return SplitReply("\n\n".join(final).strip(), reasoning, True)
    return SplitReply("", reasoning or "", False)


def rendered_opens_thinking(prompt: str, markers: tuple[str, str] = DEFAULT_MARKERS) -> bool:
    """Whether a rendered prompt leaves the model inside its reasoning (it ends with the opening marker,
    as DeepSeek-R1's and some Qwen3 derivatives' generation prompts do)."""
    return prompt.rstrip().endswith(markers[0])
