"""A deterministic backend for tests, demos and dry runs; needs no model and no network.

`fake/echo` answers every turn with a fixed sentence quoting the question; `fake/judge-7` (any number)
judges every answer "Rating: [[7]]"; `fake/judge-varied` rates each prompt 1..10 from a hash of its
text (so runs can be told apart by their scores); `fake/silent` writes judgments with no rating at all.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from .base import (
    FINISH_STOP,
    BackendError,
    BackendOptions,
    Capabilities,
    Completion,
    Message,
    ResultCallback,
    SamplingParams,
)

# In-process and deterministic per conversation, so any batching gives the same replies.
CAPABILITIES = Capabilities(batch_scope="all", rating_probes=False, preflight=False, local=True)


_RATING = r"judge-(\d+(?:\.\d+)?)"


def check_name(name: str) -> None:
    """BackendError for a name that is none of the fake models (checked at start-up)."""
    if name not in ("echo", "silent", "judge-varied") and re.fullmatch(_RATING, name) is None:
        raise BackendError(
            f"unknown fake model {name!r}: use fake/echo, fake/silent, fake/judge-N or fake/judge-varied"
        )


class FakeBackend:
    """Canned replies: an echo of the question, a fixed rating, or a judgment without a rating."""

    def __init__(self, name: str) -> None:
        check_name(name)
        self.spec = f"fake/{name}"
        self.name = name
        match = re.fullmatch(_RATING, name)
        self._rating = match.group(1) if match else None
        self.calls = 0

    def identity(self) -> dict[str, Any]:
        return {"backend": "fake", "name": self.name}

    def chat(
        self,
        conversations: list[list[Message]],
        params: SamplingParams,
        on_result: ResultCallback | None = None,
    ) -> list[Completion]:
        out: list[Completion] = []
        for index, conversation in enumerate(conversations):
            self.calls += 1
            last = conversation[-1]["content"]
            if self._rating is not None:
                text = f"The answer is adequate.\n\nRating: [[{self._rating}]]"
            elif self.name == "judge-varied":
                rating = 1 + hashlib.sha256(last.encode("utf-8")).digest()[0] % 10
                text = f"The answer is judged on its merits.\n\nRating: [[{rating}]]"
            elif self.name == "silent":
                text = "I cannot decide on a rating for this answer."
            else:
                text = f"Here is my answer to: {last[:60]}"
            out.append(Completion(text=text, n_tokens=len(text.split()), finish_reason=FINISH_STOP))
            if on_result is not None:
                on_result(index, out[-1])
        return out

    def close(self) -> None:
        pass


def static_identity(name: str, options: BackendOptions) -> dict[str, Any]:
    return FakeBackend(name).identity()


def create(name: str, options: BackendOptions) -> FakeBackend:
    return FakeBackend(name)
